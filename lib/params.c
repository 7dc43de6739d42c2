#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "err.h"
#include "tune.h"

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

/* Owner of float i: its row's block when each tensor's rows (first dimension) are split over nt
 * threads as gemm_par splits them; padding goes with the tensor before it. */
static int owner_of(const struct params *p, size_t i, int nt)
{
    int owner = 0;
    for (int k = 0; k < p->nt && p->t[k].off <= i; k++) {
        const struct tensor *t = &p->t[k];
        size_t rows = (size_t)t->shape[0], row_len = t->n / rows;
        size_t r = i < t->off + t->n ? (i - t->off) / row_len : rows - 1;
        owner = (int)(r / (size_t)gemm_par_rows((int)rows, nt));
    }
    return owner;
}

void params_alloc(struct params *p)
{
    SAMX_ASSERT(!p->w);
    p->w = xfloats(p->n);
    p->g = xfloats(p->n);
    size_t chunk;
    long nc = vec_chunks(p->n, &chunk);
    int nt = work_blocks();
    p->own_nt = nt < 256 ? nt : 1;
    p->own = xcalloc((size_t)nc, 1);
    for (long c = 0; c < nc; c++) {
        size_t mid = (size_t)c * chunk + chunk / 2;
        p->own[c] = (unsigned char)owner_of(p, mid < p->n ? mid : p->n - 1, p->own_nt);
    }
}

int params_chunk_thread(const struct params *p, long c, long nc, int nt)
{
    /* Chunks of block b run on team thread b % nt, as the linear layers' passes place block b. */
    return nt <= p->own_nt ? p->own[c] % nt : (int)(c * nt / nc);
}

void params_for_chunks(const struct params *p, chunk_fn fn, void *ctx)
{
    size_t chunk, n = p->n;
    long nc = vec_chunks(n, &chunk);
#pragma omp parallel num_threads(team_size()) if (n > 32768)
    {
        int t = thread_id(), nt = thread_count();
        for (long c = 0; c < nc; c++)
            if (params_chunk_thread(p, c, nc, nt) == t) {
                size_t lo = (size_t)c * chunk;
                fn(ctx, c, lo, lo + chunk < n ? lo + chunk : n);
            }
    }
}

struct vec_args {
    const float *x;
    float *y;
    double *part;
};

static void sumsq_chunk(void *ctx, long c, size_t lo, size_t hi)
{
    struct vec_args *a = ctx;
    a->part[c] = vec_sumsq_part(a->x, lo, hi);
}

static void copy_chunk(void *ctx, long c, size_t lo, size_t hi)
{
    struct vec_args *a = ctx;
    memcpy(a->y + lo, a->x + lo, (hi - lo) * sizeof *a->x);
}

double params_nrm2(const struct params *p, const float *x)
{
    double part[VEC_MAX_CHUNKS];
    size_t chunk;
    params_for_chunks(p, sumsq_chunk, &(struct vec_args){.x = x, .part = part});
    return sqrt(vec_parts_sum(part, vec_chunks(p->n, &chunk)));
}

void params_copy(const struct params *p, const float *x, float *y)
{
    if (x != y)
        params_for_chunks(p, copy_chunk, &(struct vec_args){.x = x, .y = y});
}

void params_free(struct params *p)
{
    free(p->w);
    free(p->g);
    free(p->own);
    memset(p, 0, sizeof *p);
}

int params_find(const struct params *p, const char *name)
{
    for (int i = 0; i < p->nt; i++)
        if (strcmp(p->t[i].name, name) == 0)
            return i;
    return -1;
}
