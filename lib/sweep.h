/* sweep.h: samx sweep, a grid or random set of `samx run` invocations (interface.md sections 1
 * and 6).
 *
 * A sweep is a base config plus parameters, each a key with a list of values:
 *   - a sweep file (YAML, strict like a config):
 *         config: ../configs/fmnist-mlp.yaml   # relative to the sweep file
 *         method: grid                         # grid [default] | random
 *         samples: 20                          # random only: distinct combinations to draw
 *         seed: 0                              # random only: which draw [0]
 *         parameters:
 *           optimizer.rho: [0.02, 0.05, 0.1]   # each item one value, in YAML flow syntax
 *           seed: 0..4                         # an integer range, both ends included
 *   - or a config and `key=v1,v2,v3` / `seed=0..4` arguments (commas inside brackets, braces or
 *     quotes do not split). Arguments also extend or replace a sweep file's parameters.
 * Named alternatives: a parameter given as a mapping instead of a list names its values,
 *         parameters:
 *           optimizer:
 *             _shared: {base: {name: sgd, lr: 0.1}, rho: 0.05}  # merged under each one
 *             sam: {name: sam}
 *             sgd: {name: sgd, lr: 0.1, base: null, rho: null}  # null drops a shared key
 * Each value is the whole subtree at the key (the run gets `optimizer={...}`), with _shared
 * deep-merged under it; the run id carries the name instead (`optimizer=sam,seed=0-<hash>`,
 * the hash samx run gives the same resolved config), and `optimizer=sam,sgd` on the command
 * line picks alternatives by name.
 * The grid varies the last parameter fastest. Each run is exactly `samx run CONFIG k=v ...` with
 * the parameters in the order written, so it has the run id and directory samx run gives it
 * (named alternatives aside: their commands pass -o the directory).
 *
 * Every run's config is resolved (data, model and optimizer built) before anything runs, so a
 * key that one combination does not accept (optimizer.rho under optimizer.name=sgd) is a config
 * error naming the run, not a failure halfway through the sweep. samx does not drop such keys:
 * a key that is silently ignored for some runs is how a table ends up comparing the wrong
 * things. Use named alternatives, or give each method its own config (and sweep).
 *
 * Files: the runs in ROOT/<name>/<run_id>/ (ROOT is "results" or -o ROOT); each sweep's own
 * files in ROOT/<name>/sweeps/<12 hex of the sha256 of commands.txt>/:
 *   manifest.jsonl  one object per run: run_id, overrides (["a.b=v", ...]), labels (the same,
 *                   a named alternative as "key=name"), command (a shell command line: the
 *                   absolute samx binary, the absolute config, -o the absolute run directory),
 *                   config (the absolute base config). The plan only: a run's status is in
 *                   its directory;
 *   commands.txt    the commands alone, one per line, for GNU parallel and Slurm array tasks;
 *   logs/RUN_ID.log each run's stderr when run here (appended across resumes); joblog (GNU
 *                   parallel), slurm-JOB_TASK.out (Slurm).
 * Both files are written once and never rewritten (an emitted job may be reading them while
 * another sweep of the same name is planned): the same sweep again finds identical files and
 * uses them; differing content is an error. A sweep's runs must share one name.
 *
 * Running here, stderr has a line per run started and per run done, with its final test_acc
 * (or test_loss, train_loss), or the reason it did not complete (its error's last line, or the
 * signal that killed it), and a closing count; with progress off only the failures and the
 * count (when not every run completed) are written.
 */
#ifndef SAMX_SWEEP_H
#define SAMX_SWEEP_H

#include <stdbool.h>

#include "cfg.h"
#include "err.h"

struct sweep_opts {
    const char *spec;             /* sweep file or config */
    const char *const *args;      /* "key=v1,v2" / "key=a..b" */
    int n_args;
    const char *results_root;     /* -o ROOT; NULL for "results" */
    int jobs;                     /* -j: runs at once (>= 1) */
    int cores;                    /* threads to share out: each run gets max(1, cores / jobs) */
    const char *emit;             /* NULL (run here), "sh", "parallel" or "slurm" */
    int ntasks;                   /* slurm: MPI processes per run (srun); 0 or 1: one process */
    bool dry_run;                 /* print the commands, write and run nothing */
    bool progress;                /* a line per run started and done on stderr; else errors only */
};

/* samx sweep. Returns the exit status: 0 when every run is completed or diverged (or a script
 * or listing was printed), 1 when a run failed or was interrupted by something else (killed),
 * 75 when the only runs not done were held by another samx process, 130 when
 * the sweep itself was interrupted (SIGINT/SIGTERM are forwarded to the runs, which checkpoint);
 * -1 with e set on a usage, config or file error before any run started. */
int sweep_main(const struct sweep_opts *o, struct err *e);

/* A config value as YAML flow text that cfg_override reads back to the same value: scalars as
 * written (quoted ones quoted), "[16,32]", "{schedule: cosine, start: 0.1}". malloc'd. */
char *sweep_value_text(const struct cfg_node *n);

/* The status of the run in directory dir, from its files: summary.json's status; else
 * "interrupted" when it was started (config.yaml or a checkpoint is there; a kill -9 leaves
 * this); else "planned". */
const char *sweep_run_status(const char *dir);

#endif
