/* rundir.h: the run directory: records, checkpoint, summary, meta, progress and signals.
 *
 * Files (interface.md section 3): config.yaml, meta.json, metrics.jsonl, summary.json,
 * model.safetensors, checkpoint.safetensors. Everything but metrics.jsonl is replaced
 * atomically; metrics.jsonl is appended one line per epoch and flushed, and trimmed back to
 * the checkpoint's epoch when a run resumes, so the records always match the checkpoint.
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
    FILE *metrics;          /* metrics.jsonl, opened for append */
    struct cJSON *last, *best; /* last record; best by the selection metric */
    const char *best_by;    /* "val_acc", "val_loss", "test_acc", "test_loss" */
    bool best_max;
    double started;         /* rundir_now() at open */
    char start_time[32];    /* ISO 8601 UTC at open, for meta.json */
};

/* Open (creating) the directory for experiment x: start over, resume, or report that the run is
 * already finished (*done = true). Writes config.yaml and meta.json. */
int rundir_open(struct rundir *rd, const char *dir, struct experiment *x, struct train_state *st,
                bool force, const char *command_line, bool *done, struct err *e);
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
/* SIGINT/SIGTERM: install handlers that set a flag; query it; restore default handlers. */
void rundir_catch_signals(void);
bool rundir_interrupted(void);
void rundir_release_signals(void);
/* One-line progress display on stderr. */
void rundir_progress(const struct experiment *x, long epoch, long step, double loss, double sps);

#endif
