/* table.h: samx table, and the run collection it shares with samx plot (interface.md 1 and 6).
 *
 * Collecting runs: each DIR is a run directory (it holds summary.json or config.yaml) or a root
 * searched recursively for them. A run's status is its summary's (completed, diverged,
 * interrupted, failed), or "interrupted" when it has a config but no summary (killed, or still
 * running). Every manifest.jsonl found under a root (each sweep's NAME/sweeps/HASH/, sweep.h,
 * or an older NAME/manifest.jsonl) adds the runs it plans that have no directory yet, as
 * "missing", once however many sweeps planned them.
 *
 * Grouping: runs are grouped by the values of the --group keys (dotted config keys, read from
 * each run's resolved config.yaml; a key a run lacks reads "-"; a schedule is one value, shown
 * as text: "cosine 0.05→0 warmup 1", its default keys left out). Within a group, runs must
 * agree on every other key but `seed`: pooling runs that differ in, say, optimizer.rho would
 * average two experiments into one number, so that is a config error naming the key and two
 * of its values. Groups are sorted by their values (numbers numerically).
 *
 * Aggregation: over the completed runs of a group, the metric at the final record (summary.json
 * "final") or at the record where NAME is best (--at best:NAME; max for *_acc, min for *_loss;
 * the first such record on ties), as mean and sample standard deviation (n - 1; none for
 * n = 1), for each of the --metric names. A completed run whose first metric is null
 * (non-finite) counts as diverged; a metric a run does not record (a measurement it did not
 * make) leaves it out of that cell, and is an error (with a did-you-mean) only when no run
 * records it. Markdown and LaTeX show a count column only when some group's count is non-zero
 * (or with --counts); CSV and JSON always carry them.
 */
#ifndef SAMX_TABLE_H
#define SAMX_TABLE_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "err.h"

struct table_run {
    char *dir;
    const char *status;  /* completed | diverged | interrupted | failed | missing */
    char **key, **val;   /* the resolved config flattened to dotted keys and flow text */
    char **show;         /* each value as a table shows it (schedules as text) */
    int n_kv;            /* 0 for missing runs */
    char **gval, **gshow; /* the group keys' values, and as shown */
    int threads;         /* meta.json omp_threads, 0 if unknown */
    int blocks;          /* meta.json work_blocks; 0: an older samx, split by its threads */
    char *core;          /* meta.json openblas_core, NULL if unknown */
    int world;           /* meta.json world_size: the MPI processes that trained it (1 if absent) */
};

struct table_group {
    char **gval, **gshow; /* borrowed from its first run */
    int *run;            /* indices into runset.run, sorted by directory */
    int n_run;
};

struct runset {
    char **keys;         /* group keys */
    int n_keys;
    struct table_run *run;
    int n_run;
    struct table_group *grp;
    int n_grp;
};

/* Collect the runs under dirs, group them by the comma-separated keys in `group` (NULL or ""
 * for one group) and check that each group may be pooled. Config errors (exit 2): a DIR that
 * does not exist, no runs found, runs that differ in an ungrouped key. */
int runset_load(struct runset *rs, const char *const *dirs, int n_dirs, const char *group,
                struct err *e);
void runset_free(struct runset *rs);

struct table_opts {
    const char *const *dirs;
    int n_dirs;
    const char *group;   /* "a.b,c" or NULL */
    const char *metric;  /* "a,b": one column each [test_acc] */
    const char *at;      /* final | best:NAME [final] */
    const char *format;  /* md | latex | csv | json [md] */
    int precision;       /* decimals of md and latex cells [4] */
    bool precision_set;  /* precision given (0 is a precision) */
    bool counts;         /* md/latex: every count column, not only those with a non-zero count */
};

/* The record lines of a metrics.jsonl, each parsed (empty lines skipped). A line that is not a
 * JSON object, holds a value that is neither a number nor null (a non-finite value), or an
 * epoch that is not a non-negative integer, is an error naming PATH:LINE (status 1): a corrupt
 * record is never skipped. */
int table_read_records(const char *path, cJSON ***recs, int *n, struct err *e);
void table_free_records(cJSON **recs, int n);

/* The closest of cand to word (at most 2 edits, or a third of its length; or a candidate
 * ending in ".word"), for "did you mean"; NULL when none is close. */
const char *table_suggest(const char *word, const char *const *cand, int n);

/* One warning line on stderr naming each group whose runs ran with different OpenBLAS cores or
 * work splits (meta.json; an older samx's runs split by their thread count), with how many of
 * each; nothing when none does. */
void table_warn_mixed(const struct runset *rs);

/* samx table: print the table on stdout. 0, or -1 with e set. */
int table_main(const struct table_opts *o, struct err *e);

#endif
