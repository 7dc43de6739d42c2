/* rundir.h: the run directory: identity, lock, records, checkpoint, summary, meta, signals.
 *
 * Files (interface.md section 3): config.yaml, meta.json, metrics.jsonl, summary.json,
 * model.safetensors, checkpoint.safetensors, and .lock. Everything but metrics.jsonl is
 * replaced atomically; metrics.jsonl is appended one line per epoch and flushed.
 *
 * Identity: a run is its resolved config. Under results/<name>/ the directory of a config is
 * any "<label>-<8 hex of its sha256>" whose config.yaml is that config byte for byte, however
 * the label (the overrides as spelled) reads; rundir_find looks it up.
 *
 * Lock: the process that trains holds an exclusive flock on .lock for as long as it has the
 * directory open; a second one gets SAMX_EXIT_BUSY. The kernel drops the lock with the process.
 *
 * Checkpoint: weights, model buffers, optimizer buffers and scalars, the training position, the
 * work split (blas.h work_blocks; the thread count is recorded, not checked) and OpenBLAS core,
 * and the exact bytes of the metrics.jsonl records it covers
 * (tensor "records"); metadata "checksum" is the sha256 of the rest of the metadata (printed
 * as unformatted JSON) followed by every tensor's bytes in file order. A resume range-checks
 * every field, verifies the checksum, and then trusts the checkpoint's records over
 * metrics.jsonl: a file that does not begin with them is restored from them (with a warning
 * naming its first differing line), and records after them (an epoch written just before a
 * kill, and computed again) are dropped. A checkpoint whose status is completed or diverged
 * is finished without training.
 *
 * Order of the final files: model.safetensors, meta.json, summary.json. summary.json is written
 * last and is the run's result: a directory without it is unfinished, whatever meta.json says,
 * and running it again finishes it. A resume deletes the previous summary before training.
 */
#ifndef SAMX_RUNDIR_H
#define SAMX_RUNDIR_H

#include <stdbool.h>
#include <stdio.h>

#include "err.h"

struct experiment;
struct cJSON;

/* RUN_STOPPED: ended by train.early_stop, a finished run like RUN_COMPLETED. */
enum run_status { RUN_RUNNING, RUN_COMPLETED, RUN_DIVERGED, RUN_INTERRUPTED, RUN_FAILED,
                  RUN_STOPPED };
extern const char *const run_status_names[];

/* Where training stands; all of it goes into the checkpoint. */
struct train_state {
    long epoch;            /* last completed epoch (0: none yet) */
    long step;             /* optimizer steps taken */
    long step_in_epoch;    /* steps taken in epoch `epoch + 1` (a mid-epoch checkpoint) */
    double grad_evals;     /* cumulative, in full-batch units */
    bool have_epoch0;      /* the epoch-0 record is written */
    /* partial-epoch accumulators */
    double acc_loss, acc_hit, acc_count, acc_grad_norm, acc_perturbed, acc_sharp;
    double acc_perturbed_count; /* examples of the steps that had a perturbed pass */
    long acc_steps;
    double epoch_seconds;  /* time already spent in the partial epoch */
    double wall_seconds;   /* time spent by earlier invocations */
    enum run_status status;
};

/* One metrics.jsonl record under construction (a cJSON object). */
struct record {
    struct cJSON *obj;
    struct cJSON *nonfinite;
};
void record_begin(struct record *r, long epoch, long step, double seconds, double sps,
                  double grad_evals);
/* Add key: v; a non-finite v is written as null and its key listed in "nonfinite". */
void record_num(struct record *r, const char *key, double v);

struct rundir {
    char *dir;
    int lock_fd;            /* holds the flock on .lock; -1 when not open */
    char *records;          /* metrics.jsonl as it should be: every record written, in order */
    size_t records_len, records_cap;
    FILE *metrics;          /* metrics.jsonl, opened for append */
    struct cJSON *last, *best; /* last record; best by the selection metric */
    const char *best_by;    /* "val_acc", "val_loss", "test_acc", "test_loss" */
    bool best_max;
    bool follower;          /* a rank > 0 of an MPI job (dist.h): keeps the records in memory
                               and writes nothing */
    double started;         /* rundir_now() at open */
    char start_time[32];    /* ISO 8601 UTC at open, for meta.json */
};

/* The existing run directory of x under parent (results/<name>), or NULL: parent/<x's run id>
 * when its config.yaml is x's resolved config, else the first (by name) "*-<hash>" whose
 * config.yaml is. malloc'd. */
char *rundir_find(const char *parent, const struct experiment *x);
/* dir is a run directory (meta.json) whose config.yaml is x's resolved config. */
bool rundir_holds(const char *dir, const struct experiment *x);

/* Open (creating) the directory for experiment x and lock it: start over, resume, or report
 * that the run is already finished (*done = true). Writes config.yaml and meta.json. Errors:
 * SAMX_EXIT_BUSY when another process holds the lock; a checkpoint of another config, thread
 * count or OpenBLAS core: SAMX_EXIT_CONFIG; a damaged checkpoint (a field out of range, a
 * checksum that does not match): SAMX_EXIT_RUNTIME naming the file. On resume st->status is
 * the checkpoint's (RUN_RUNNING for a run to continue). */
int rundir_open(struct rundir *rd, const char *dir, struct experiment *x, struct train_state *st,
                bool force, const char *command_line, bool *done, struct err *e);
/* The rundir of a rank > 0 of an MPI job, which rank 0's rundir_open has opened: no lock and no
 * file; records (len bytes, rank 0's rd->records) rebuild last and best. The append, checkpoint
 * and finish functions below keep its records and write nothing. Resuming with another number
 * of processes than the checkpoint's (metadata world_size, written by jobs of more than one) is
 * a config error of rundir_open. */
void rundir_follow(struct rundir *rd, const char *dir, const struct experiment *x,
                   const char *records, size_t len);
/* Append a record (takes ownership of r->obj) and flush. */
int rundir_append_record(struct rundir *rd, struct record *r, struct err *e);
/* Replace checkpoint.safetensors with the current state. */
int rundir_checkpoint(struct rundir *rd, struct experiment *x, const struct train_state *st,
                      struct err *e);
/* Final files: model.safetensors, summary.json, meta.json (end time and status). */
int rundir_finish(struct rundir *rd, struct experiment *x, const struct train_state *st,
                  const char *command_line, struct err *e);
void rundir_close(struct rundir *rd);

/* Monotonic seconds. */
double rundir_now(void);
/* SIGINT/SIGTERM from the start of the process. rundir_signals_init installs handlers that
 * print "samx: interrupted by SIGxxx" and _exit(SAMX_EXIT_INTERRUPTED) (commands that write
 * nothing half-way); rundir_signals_defer switches them to setting a flag that the training
 * loop polls after each step (samx run, from before its data is loaded). rundir_signals_init
 * also unblocks SIGINT/SIGTERM, which samx blocks across its own re-exec (main.c), so that a
 * signal in between is handled rather than killing the process. */
void rundir_signals_init(void);
void rundir_signals_defer(void);
bool rundir_interrupted(void);
/* "SIGINT" or "SIGTERM": the signal that set the flag. */
const char *rundir_signal_name(void);
/* One-line progress display on stderr. */
void rundir_progress(const struct experiment *x, long epoch, long step, double loss, double sps);

#endif
