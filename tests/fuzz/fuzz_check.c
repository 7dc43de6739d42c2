/* fuzz_check: what `samx check CONFIG OVERRIDE...` does, planning included (experiment_build
 * with run_opts.plan: data headers, model layout, no data loaded and no weights allocated).
 * Input: a config file, then overrides, separated by FUZZ_SEP. Run with -timeout=10: a config
 * that makes planning slow is a finding. Errors are one line. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_part part[FUZZ_MAX_PARTS];
    int np = fuzz_split(data, size, part, FUZZ_MAX_PARTS);
    char *cfg = fuzz_write("check.yaml", part[0].p, part[0].n);
    char *ov[FUZZ_MAX_PARTS];
    for (int i = 1; i < np; i++) {
        ov[i - 1] = xmalloc(part[i].n + 1);
        memcpy(ov[i - 1], part[i].p, part[i].n);
        ov[i - 1][part[i].n] = 0;
    }
    struct run_opts o = {.config = cfg, .overrides = (const char *const *)ov,
                         .n_overrides = np - 1, .threads = 1, .plan = true};
    struct experiment x;
    struct err e = {0};
    int rc = experiment_build(&x, &o, &e);
    fuzz_check_err(rc, &e);
    experiment_free(&x);
    for (int i = 1; i < np; i++)
        free(ov[i - 1]);
    free(cfg);
    return 0;
}
