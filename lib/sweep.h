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
 * The grid varies the last parameter fastest. Each run is exactly `samx run CONFIG k=v ...` with
 * the parameters in the order written, so it has the run id and directory samx run gives it.
 *
 * Every run's config is resolved (data, model and optimizer built) before anything runs, so a
 * key that one combination does not accept (optimizer.rho under optimizer.name=sgd) is a config
 * error naming the run, not a failure halfway through the sweep. samx does not drop such keys:
 * a key that is silently ignored for some runs is how a table ends up comparing the wrong
 * things. Give each method its own config (and sweep), or sweep a whole subtree
 * (`optimizer: [{name: sgd, lr: 0.1}, {name: sam, rho: 0.05, base: {name: sgd, lr: 0.1}}]`).
 *
 * Files, in ROOT/<name>/ (ROOT is "results" or -o ROOT), replaced atomically:
 *   manifest.jsonl  one object per run: run_id, overrides (["a.b=v", ...]), command (a shell
 *                   command line: the absolute samx binary, the absolute config, -o the
 *                   absolute run directory), status (planned | completed | diverged |
 *                   interrupted | failed), config (the absolute base config);
 *   commands.txt    the commands alone, one per line, for GNU parallel and Slurm array tasks.
 * A sweep's runs must share one name; the manifest describes the latest sweep of that name.
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
    bool dry_run;                 /* print the commands, write and run nothing */
    bool progress;                /* one line per finished run on stderr (a terminal) */
};

/* samx sweep. Returns the exit status: 0 when every run is completed or diverged (or a script
 * or listing was printed), 1 when a run failed or was interrupted by something else, 130 when
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
