/* fuzz_data.h: one data set plugin on files made from the input (fuzz_idx, fuzz_csv,
 * fuzz_cifar): both data_plan (headers only) and data_init (everything) run; errors are one
 * line, and what planning accepts has the shape loading gives. */
#ifndef SAMX_FUZZ_DATA_H
#define SAMX_FUZZ_DATA_H

#include <stdio.h>
#include <stdlib.h>

#include "cfg.h"
#include "data.h"
#include "fuzz.h"

/* Run data_plan and data_init on the config text yaml (a data: mapping's body). */
static inline void fuzz_data(const char *yaml)
{
    struct cfg c;
    struct err e = {0};
    if (cfg_load_string(&c, "data.yaml", yaml, &e) < 0) {
        fprintf(stderr, "fuzz_data: bad harness config: %s\n", e.msg);
        abort();
    }
    struct data plan, d;
    struct err ep = {0}, ed = {0};
    int rp = data_plan(&plan, c.root, 1, &ep);
    fuzz_check_err(rp, &ep);
    cfg_free(&c);
    cfg_load_string(&c, "data.yaml", yaml, &e);
    int rd = data_init(&d, c.root, 1, &ed);
    fuzz_check_err(rd, &ed);
    if (rd == 0 && rp == 0 &&
        (plan.train.n != d.train.n || plan.test.n != d.test.n || plan.val.n != d.val.n ||
         plan.train.dim != d.train.dim || plan.train.n_classes != d.train.n_classes)) {
        fprintf(stderr, "fuzz_data: planning gave other shapes than loading\n");
        abort();
    }
    if (rd == 0 && rp != 0) {
        fprintf(stderr, "fuzz_data: planning refused what loads: %s\n", ep.msg);
        abort();
    }
    if (rd == 0)
        data_free(&d);
    if (rp == 0)
        data_free(&plan);
    cfg_free(&c);
}

#endif
