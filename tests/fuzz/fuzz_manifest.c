/* fuzz_manifest: the sweep manifest reader, through runset_load (samx table / plot) on a
 * results folder whose manifest.jsonl is the input. Runs it names that are not there become
 * "missing" runs, resolved from the manifest's config and overrides (a tiny synthetic config
 * written beside it, which the seeds name). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "io.h"
#include "table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    struct err e = {0};
    char *dir = xasprintf("%s/results/f", fuzz_dir());
    if (!once) {
        const char *yaml = "name: f\n"
                           "data: {name: synthetic-linear, n_train: 8, n_test: 4, features: 3}\n"
                           "model: {name: linear}\n"
                           "train: {epochs: 1, batch_size: 4, loss: mse}\n"
                           "optimizer: {name: sgd, lr: 0.1}\n";
        free(fuzz_write("f.yaml", yaml, strlen(yaml)));
        if (io_mkdir_p(dir, &e) < 0 || chdir(fuzz_dir()) < 0) /* seeds say config: f.yaml */
            abort();
        once = true;
    }
    free(fuzz_write("results/f/manifest.jsonl", data, size));
    struct runset rs;
    const char *dirs[1] = {dir};
    int rc = runset_load(&rs, dirs, 1, "optimizer.lr", &e);
    fuzz_check_err(rc, &e);
    runset_free(&rs); /* also after an error, as table_main does */
    free(dir);
    return 0;
}
