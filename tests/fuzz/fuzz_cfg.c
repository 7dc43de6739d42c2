/* fuzz_cfg: the config parser with overrides. Input: YAML, then override lines "a.b=v", the
 * parts separated by FUZZ_SEP. Properties: errors are one line; a loaded config dumps to text
 * that loads back to the same dump (cfg.h's round-trip contract). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "fuzz.h"

static char *dup_part(const struct fuzz_part *p)
{
    char *s = xmalloc(p->n + 1);
    memcpy(s, p->p, p->n);
    s[p->n] = 0;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_part part[FUZZ_MAX_PARTS];
    int np = fuzz_split(data, size, part, FUZZ_MAX_PARTS);
    char *yaml = dup_part(&part[0]);
    struct cfg c;
    struct err e = {0};
    int rc = cfg_load_string(&c, "fuzz.yaml", yaml, &e);
    fuzz_check_err(rc, &e);
    free(yaml);
    if (rc < 0)
        return 0;
    for (int i = 1; i < np && rc == 0; i++) {
        char *ov = dup_part(&part[i]);
        rc = cfg_override(&c, ov, &e);
        fuzz_check_err(rc, &e);
        free(ov);
    }
    struct err e2 = {0};
    fuzz_check_err(cfg_check_unused(&c, &e2), &e2);
    char *dump = cfg_dump(&c);
    struct cfg back;
    struct err e3 = {0};
    if (cfg_load_string(&back, "dump.yaml", dump, &e3) < 0) {
        fprintf(stderr, "fuzz_cfg: the dump does not load back: %s\n---\n%s---\n", e3.msg, dump);
        abort();
    }
    char *again = cfg_dump(&back);
    if (strcmp(dump, again) != 0) {
        fprintf(stderr, "fuzz_cfg: the dump reloads differently\n---\n%s---\n%s---\n", dump, again);
        abort();
    }
    free(again);
    free(dump);
    cfg_free(&back);
    cfg_free(&c);
    return 0;
}
