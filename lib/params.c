#include "params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

int params_add(struct params *p, const char *name, int ndim, const int *shape)
{
    SAMX_ASSERT(!p->w && p->nt < SAMX_MAX_TENSORS && ndim >= 1 && ndim <= SAMX_MAX_DIMS);
    SAMX_ASSERT(strlen(name) < sizeof p->t[0].name);
    struct tensor *t = &p->t[p->nt];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) {
        SAMX_ASSERT(shape[i] > 0);
        t->shape[i] = shape[i];
        t->n *= (size_t)shape[i];
    }
    /* Tensors start on 16-float boundaries so each view is 64-byte aligned for the kernels. */
    t->off = (p->n + 15) / 16 * 16;
    p->n = t->off + t->n;
    size_t len = strlen(name);
    t->is_weight = len >= 6 && strcmp(name + len - 6, "weight") == 0;
    return p->nt++;
}

void params_alloc(struct params *p)
{
    SAMX_ASSERT(!p->w);
    p->w = xfloats(p->n);
    p->g = xfloats(p->n);
}

void params_free(struct params *p)
{
    free(p->w);
    free(p->g);
    memset(p, 0, sizeof *p);
}

int params_find(const struct params *p, const char *name)
{
    for (int i = 0; i < p->nt; i++)
        if (strcmp(p->t[i].name, name) == 0)
            return i;
    return -1;
}
