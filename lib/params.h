/* params.h: model parameters as one flat float array, with named tensor views.
 *
 * A model declares its tensors with params_add() (name and shape, PyTorch conventions: a linear
 * layer's weight is (out, in)), then params_alloc() allocates w and g, n floats each, once.
 * A tensor is an offset into them. Invariants:
 *   - w and g are never reallocated after params_alloc; views stay valid until params_free;
 *   - g is zeroed only by the gradient closure; backward passes only add into g;
 *   - every optimizer, checkpoint and measurement treats w, g and its own state as n floats.
 */
#ifndef SAMX_PARAMS_H
#define SAMX_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

/* 512: ResNet-56 has 167 trainable tensors and 110 BatchNorm buffers, ResNet-110 329. */
#define SAMX_MAX_TENSORS 512
#define SAMX_MAX_DIMS 4

struct tensor {
    char name[64];             /* PyTorch state_dict name, e.g. "2.weight" */
    int ndim;
    int shape[SAMX_MAX_DIMS];
    size_t off, n;             /* view: w[off .. off+n) */
    bool is_weight;            /* a "weight" tensor (ASAM scales these), not a bias */
    bool is_norm;              /* a normalization layer's scale or shift (BatchNorm weight and
                                  bias), set by the model: PyTorch names ("1.weight") do not say */
};

struct params {
    size_t n;                  /* total floats */
    float *w, *g;              /* (n) weights and gradient */
    struct tensor t[SAMX_MAX_TENSORS];
    int nt;
    unsigned char *own;        /* params_chunk_thread's owners, for a team of own_nt */
    int own_nt;
};

/* Declare a tensor; returns its index. Before params_alloc only. */
int params_add(struct params *p, const char *name, int ndim, const int *shape);
void params_alloc(struct params *p);
void params_free(struct params *p);
/* Placement of elementwise passes over the n floats: the thread that runs chunk c (of nc =
 * vec_chunks(p->n), blas.h) in a team of nt. For a team of work_blocks() (blas.h) it is the
 * owner of the chunk's middle element when each tensor's rows are split by gemm_par_rows: for
 * the linear layers' split passes (convnet.h), the thread that wrote that gradient, so weights,
 * gradients and optimizer state stay in one core's cache from the backward pass to the update;
 * for other team sizes, a contiguous split. Only placement depends on it: chunk boundaries, and
 * the order reductions add chunk partials, are fixed. */
int params_chunk_thread(const struct params *p, long c, long nc, int nt);
/* Run fn(ctx, c, lo, hi) for every chunk c = [lo, hi) of the n floats, each on the thread
 * params_chunk_thread gives, in one parallel region (serial for small n). fn must touch only
 * [lo, hi) of the vectors it writes, and chunk-indexed slots of anything else. */
typedef void (*chunk_fn)(void *ctx, long c, size_t lo, size_t hi);
void params_for_chunks(const struct params *p, chunk_fn fn, void *ctx);
/* vec_nrm2 (the same bits) and vec_copy over n floats laid out as p, placed as above. */
double params_nrm2(const struct params *p, const float *x);
void params_copy(const struct params *p, const float *x, float *y);
/* Index of the tensor named `name`, or -1. */
int params_find(const struct params *p, const char *name);

#endif
