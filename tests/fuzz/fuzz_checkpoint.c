/* fuzz_checkpoint: the checkpoint reader, through rundir_open resuming a run directory whose
 * checkpoint.safetensors is the input's first part and metrics.jsonl its second (FUZZ_SEP).
 * The experiment is built once: a tiny synthetic regression with an SGD-momentum MLP, so the
 * checkpoint holds weights, an optimizer buffer and scalar state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "io.h"
#include "rundir.h"
#include "train.h"

static struct experiment x;

static void build_once(void)
{
    static bool built;
    if (built)
        return;
    const char *yaml = "name: f\n"
                       "data: {name: synthetic-linear, n_train: 8, n_test: 4, features: 3}\n"
                       "model: {name: mlp, hidden: [2]}\n"
                       "train: {epochs: 1, batch_size: 4, loss: mse}\n"
                       "optimizer: {name: sgd, lr: 0.1, momentum: 0.9}\n";
    char *cfg = fuzz_write("f.yaml", yaml, strlen(yaml));
    struct run_opts o = {.config = cfg, .threads = 1};
    struct err e = {0};
    if (experiment_build(&x, &o, &e) < 0) {
        fprintf(stderr, "fuzz_checkpoint: %s\n", e.msg);
        abort();
    }
    free(cfg);
    built = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    build_once();
    struct fuzz_part part[2];
    int np = fuzz_split(data, size, part, 2);
    char *dir = xasprintf("%s/run", fuzz_dir());
    struct err e = {0};
    if (io_mkdir_p(dir, &e) < 0)
        abort();
    char *sum = xasprintf("%s/summary.json", dir);
    remove(sum);
    free(sum);
    free(fuzz_write("run/config.yaml", x.resolved, strlen(x.resolved)));
    free(fuzz_write("run/checkpoint.safetensors", part[0].p, part[0].n));
    free(fuzz_write("run/metrics.jsonl", np > 1 ? part[1].p : (const uint8_t *)"",
                    np > 1 ? part[1].n : 0));
    struct rundir rd;
    struct train_state st;
    bool done;
    int rc = rundir_open(&rd, dir, &x, &st, false, "fuzz", &done, &e);
    fuzz_check_err(rc, &e);
    rundir_close(&rd); /* also after an error, as train_run does */
    free(dir);
    return 0;
}
