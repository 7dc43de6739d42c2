/* train.h: one experiment, from a resolved config to a complete run directory.
 *
 * Build order (everything allocated here, nothing in the step loop):
 *   config -> data -> model -> optimizer -> check unused keys -> run directory.
 * Then: epoch 0 is measured at initialization; each epoch shuffles with the stream
 * (seed, "shuffle", epoch), steps the optimizer over the batches, evaluates, appends one record
 * to metrics.jsonl and replaces checkpoint.safetensors. A non-finite loss ends the run with
 * status "diverged" (exit 0: a diverged run is a result). SIGINT/SIGTERM finish the current
 * step, write a checkpoint positioned inside the epoch and a summary with status "interrupted",
 * and the run returns -1 with e->status SAMX_EXIT_INTERRUPTED (e->msg says so); running the
 * same config again resumes from the checkpoint and produces the records an uninterrupted run
 * would have (rundir.h: what a resume checks).
 */
#ifndef SAMX_TRAIN_H
#define SAMX_TRAIN_H

#include <stdbool.h>

#include "cfg.h"
#include "data.h"
#include "err.h"
#include "measure.h"
#include "model.h"
#include "optim.h"

struct run_opts {
    const char *config;         /* YAML file */
    const char *config_text;    /* YAML text used instead of reading `config` (its name), or NULL */
    const char *const *overrides; /* "a.b=v" strings */
    int n_overrides;
    const char *out_dir;        /* -o DIR, or NULL for results/<name>/<run-id> */
    const char *results_root;   /* default "results" */
    int threads;                /* > 0 */
    bool force, dry_run, quiet;
    bool progress;              /* draw a progress line on stderr (a terminal) */
    bool plan;                  /* experiment_build only checks: see struct experiment.plan */
    const char *command_line;   /* for meta.json */
};

/* Losses (train.loss). */
enum loss_kind { LOSS_CROSS_ENTROPY, LOSS_MSE };

/* train.bn_update (algorithms.md 1.3): which passes of an optimizer step update
 * BatchNorm running statistics. first_pass: the clean pass at w only (PASS_FIRST; davda54,
 * atorch, GSAM); all_passes: every pass (VaSSO's official code); reference: PASS_FIRST and the
 * passes a method's reference code ran in train mode (PASS_REF_UPDATE: CR-SAM's pass at w - e,
 * ESAM's ranking forward). Other passes use batch statistics and leave the averages alone. */
enum bn_update { BN_UPDATE_FIRST_PASS, BN_UPDATE_ALL_PASSES, BN_UPDATE_REFERENCE };

/* The resolved experiment: every part built, nothing run yet. */
struct experiment {
    struct cfg cfg;
    const char *name;
    long seed;
    struct data data;
    struct model model;
    struct optim optim;
    long epochs, batch_size, eval_batch_size;
    long batch_size_asked;      /* train.batch_size as given (batch_size: at most the set) */
    long accumulate;            /* train.accumulate: micro-batches per step (1: none) */
    /* train.keep_best: the record key whose best epoch (max for *_acc, min for *_loss) is saved
     * as best.safetensors and recorded (NULL: off); train.early_stop: stop when `metric` has not
     * improved by more than min_delta for `patience` epochs (metric NULL: off). */
    const char *keep_best;
    bool keep_best_max;
    struct {
        const char *metric;
        bool max;
        long patience;
        double min_delta;
    } early_stop;
    bool drop_last;
    enum loss_kind loss;
    double label_smoothing;
    enum bn_update bn_update;   /* train.bn_update */
    long bn_group;              /* train.bn_group: ghost BatchNorm's group (model.h); 0: off */
    double l2;                  /* train.l2: lambda of lambda/2 ||w||^2 in the training loss's
                                   gradient (every pass); not in the recorded losses */
    long steps_per_epoch;
    struct measure measure;     /* eval.* landscape measurements (measure.h) */
    char *resolved;             /* cfg_dump of the resolved config */
    char run_id[256];           /* "<overrides or default>-<8 hex>" */
    /* Built for planning (samx check, sweep --dry-run/--emit and its check of every run, table):
     * every key, default and config error, the resolved config and run id exactly as a run
     * gets them, from the data's shapes (data_plan: file headers, no examples) and the model's
     * layout (model_plan: no weights, workspace for one example); optimizer buffers and
     * measurement probe sets are not allocated. Such an experiment cannot be trained. */
    bool plan;
};

/* Load the config, apply overrides, build data, model and optimizer, and check every key.
 * Config errors have status 2, data errors status 1. */
int experiment_build(struct experiment *x, const struct run_opts *o, struct err *e);
void experiment_free(struct experiment *x);

/* Warn (samx_warn, one line each, naming the key) about settings that make a run degenerate:
 * a scheduled hyperparameter that is 0 at every step, a warmup at least as long as the run, a
 * batch larger than the training set, the best record selected on the test set. */
void experiment_warn(const struct experiment *x);

/* samx run: build, then train into the run directory (resuming or skipping as the directory
 * says). Unless samx_quiet, says on stderr what it does: the warnings of experiment_warn, a
 * start (or resume, or skip) line, one line per epoch record, and a last line with the status,
 * the result and the run directory. Returns SAMX_EXIT_OK or SAMX_EXIT_INTERRUPTED, or -1 with e
 * set (status 1, 2, SAMX_EXIT_BUSY, or, with samx_quiet, SAMX_EXIT_INTERRUPTED; the caller
 * prints the error). The caller defers signals first (rundir_signals_defer). */
int train_run(const struct run_opts *o, struct err *e);

/* Mean loss and accuracy (classification; NAN for regression) of the model over a whole split,
 * in evaluation mode, in chunks of eval_batch_size. No gradients. In an MPI job (dist.h) every
 * rank calls it together: each evaluates its shard of the split (dist_shard) and the sums are
 * added over the ranks, so all return the same values. */
void evaluate_split(struct experiment *x, const struct dataset *ds, double *loss, double *acc);

#endif
