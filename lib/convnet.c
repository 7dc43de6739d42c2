/* convnet.c: the layer graph every model is built on; see convnet.h. */
#include "convnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "measure.h"
#include "nn.h"
#include "nn_conv.h"
#include "rng.h"
#include "tune.h"

#define BN_MOMENTUM 0.1f /* torch.nn.BatchNorm2d defaults */
#define BN_EPS 1e-5f
#define MAX_BLOCKS 64    /* batch blocks of the convolutions (nn_conv.h) */
#define PAR_MIN 16384

enum cn_kind { CN_CONV, CN_BN, CN_RELU, CN_MAXPOOL, CN_AVGPOOL, CN_GAP, CN_LINEAR, CN_ADD,
               CN_SHORTCUT_A, CN_DROPOUT };

struct cn_value {
    int c, h, w;
    float *x;       /* (max_batch, c*h*w); not for value 0 (the input) */
    float *dx;      /* its gradient: a buffer of the pool (cn_finish), shared with values whose
                     * gradients are never needed at the same time; value 0 has none */
    int slot;       /* dx's buffer in the pool, -1 for value 0 */
    /* Their tangents R{x}, R{dx} (cn_hvp), allocated by cn_hvp_reserve; value 0's rx is zeros
     * (the input does not depend on the weights) and it has no rdx. */
    float *rx, *rdx;
};

struct cn_node {
    enum cn_kind kind;
    int in, in2, out;
    bool acc, acc2;            /* backward adds into the input's gradient (not the first) */
    bool relu;                 /* CN_BN, CN_ADD: a ReLU fused on the output (cn_relu) */
    bool act;                  /* CN_LINEAR: the graph's activation fused on the output
                                * (cn_relu); the pre-activation goes to `pre` */
    float *pre, *rpre;         /* CN_LINEAR with act: (max_batch, n_out) and its tangent */
    struct conv_shape cs;      /* CN_CONV */
    int k, stride;             /* pooling, shortcut */
    float p;                   /* dropout probability */
    int layer;                 /* dropout: index in the stream address */
    int wt, bt;                /* tensors in m->p (weight, bias), -1 when absent */
    int rm, rv;                /* running mean, var in m->buf (CN_BN) */
    float *save_mean, *save_invstd; /* CN_BN statistics of the last forward: (c), or
                                     * (groups, c) with ghost BatchNorm (cn_set_bn_group) */
    double *bn_sums;           /* (3c) CN_BN: the per-channel sums a shard's phases exchange */
    double *gstats;            /* (groups, 3c) CN_BN with ghost BatchNorm: each group's mean
                                * and deviation sums, for the running statistics */
    int32_t *arg;              /* CN_MAXPOOL argmax (max_batch, output size) */
    float *mask;               /* CN_DROPOUT (max_batch, size) */
    double *moments;           /* CN_CONV read by the next CN_BN: its output planes' moments */
    int moments_of;            /* CN_BN: the node whose `moments` describe the input, or -1 */
    size_t log_off;            /* CN_BN: its entry in each slot of the running-statistics log */
    int log_group, log_j;      /* CN_BN: the group of its last logged update, the next slot */
};

struct convnet {
    struct model *m;
    struct cn_value *v;
    int nv, cap_v;
    struct cn_node *node;
    int nn, cap_n, n_dropout;
    enum cn_init conv_init, linear_init;
    bool zero_linear_bias;
    bool train;                /* mode of the last forward: batch statistics, dropout on */
    bool hvp_ready;            /* cn_hvp_reserve has allocated the tangents */
    int bn_group;              /* ghost BatchNorm: examples per statistics group; 0: the call */
    /* The running-statistics log (model.h struct model_runlog): log_groups * log_per_group
     * slots of log_stride doubles; a BatchNorm's entry in a slot is {count, mean (c),
     * deviation sums (2c)}, count 0 when empty. */
    double *runlog;
    size_t log_stride;
    int log_groups, log_per_group;
    enum act act;              /* nonlinearity of the CN_RELU layers */
    struct conv_ws ws;         /* shared by every convolution: they run one at a time */
    float **pool, **rpool;     /* (n_slot) the gradient buffers and their tangents (cn_hvp) */
    size_t *slot_floats;       /* (n_slot) floats per example of each buffer */
    int n_slot;
    size_t col_floats, dw_floats;
    /* Linear nodes (lin_backward): input-gradient partial products of blocks 1.., each
     * (max_batch, lin_in), shared by every linear node (they run one at a time). */
    float *part[MAX_BLOCKS];
    int lin_in;
    /* Gradient ranges [lo, hi) of m->p that cn_backward zeroes when it does not accumulate:
     * every tensor but the linear nodes', which are overwritten. */
    size_t (*zero)[2];
    int n_zero;
};

static size_t value_size(const struct cn_value *v) { return (size_t)v->c * v->h * v->w; }

/* Workspace, or NULL for a model built only to plan (struct model.plan): a deep, wide network
 * would otherwise allocate gigabytes just to be checked. */
static float *ws_floats(const struct convnet *n, size_t count)
{
    return n->m->plan ? NULL : xfloats(count);
}

static int add_value(struct convnet *n, int c, int h, int w)
{
    SAMX_ASSERT(c > 0 && h > 0 && w > 0);
    if (n->nv == n->cap_v) {
        n->cap_v = n->cap_v ? 2 * n->cap_v : 64;
        n->v = xrealloc(n->v, (size_t)n->cap_v * sizeof *n->v);
    }
    struct cn_value *v = &n->v[n->nv];
    *v = (struct cn_value){.c = c, .h = h, .w = w};
    v->slot = -1;
    if (n->nv > 0)
        v->x = ws_floats(n, (size_t)n->m->max_batch * value_size(v));
    return n->nv++;
}

static struct cn_node *add_node(struct convnet *n, enum cn_kind kind, int in)
{
    SAMX_ASSERT(in >= 0 && in < n->nv);
    if (n->nn == n->cap_n) {
        n->cap_n = n->cap_n ? 2 * n->cap_n : 64;
        n->node = xrealloc(n->node, (size_t)n->cap_n * sizeof *n->node);
    }
    struct cn_node *d = &n->node[n->nn++];
    *d = (struct cn_node){.kind = kind, .in = in, .in2 = -1, .wt = -1, .bt = -1, .rm = -1,
                          .rv = -1, .moments_of = -1};
    return d;
}

static int add_tensor(struct params *p, const char *prefix, const char *what, int ndim,
                      const int *shape)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", prefix, what);
    return params_add(p, name, ndim, shape);
}

struct convnet *cn_new(struct model *m, enum cn_init conv_init, enum cn_init linear_init,
                       bool zero_linear_bias)
{
    SAMX_ASSERT(m->n_in > 0);
    SAMX_ASSERT(m->in_c == 0 ? m->in_h == 0 && m->in_w == 0
                             : m->in_c * m->in_h * m->in_w == m->n_in);
    struct convnet *n = xcalloc(1, sizeof *n);
    n->m = m;
    n->conv_init = conv_init;
    n->linear_init = linear_init;
    n->zero_linear_bias = zero_linear_bias;
    int t = work_blocks();
    n->ws.n_blk = t < 1 ? 1 : t > MAX_BLOCKS ? MAX_BLOCKS : t;
    m->priv = n;
    if (m->in_c > 0)
        add_value(n, m->in_c, m->in_h, m->in_w);
    else
        add_value(n, m->n_in, 1, 1); /* tabular inputs */
    return n;
}

int cn_conv(struct convnet *n, int in, int c_out, int k, int stride, int pad, bool bias,
            const char *name)
{
    struct cn_value *iv = &n->v[in];
    struct conv_shape cs;
    SAMX_ASSERT(conv_shape_init(&cs, iv->c, iv->h, iv->w, c_out, k, stride, pad));
    struct cn_node *d = add_node(n, CN_CONV, in);
    d->cs = cs;
    int shape[4] = {c_out, cs.c_in, k, k};
    d->wt = add_tensor(&n->m->p, name, "weight", 4, shape);
    if (bias)
        d->bt = add_tensor(&n->m->p, name, "bias", 1, shape);
    size_t col = conv_col_floats(&cs), dw = (size_t)c_out * cs.c_in * k * k;
    n->col_floats = col > n->col_floats ? col : n->col_floats;
    n->dw_floats = dw > n->dw_floats ? dw : n->dw_floats;
    return d->out = add_value(n, c_out, cs.h_out, cs.w_out);
}

int cn_bn(struct convnet *n, int in, const char *name)
{
    int c = n->v[in].c;
    /* A BatchNorm right after the convolution that wrote its input takes its batch statistics
     * from the per-plane moments the convolution computes while each plane is in cache, one
     * pass over the activations less (two, with the mean's). */
    int prev = n->nn - 1;
    if (prev >= 0 && n->node[prev].kind == CN_CONV && n->node[prev].out == in &&
        !n->node[prev].moments)
        n->node[prev].moments = xmalloc((size_t)n->m->max_batch * c * 2 * sizeof(double));
    else
        prev = -1;
    struct cn_node *d = add_node(n, CN_BN, in);
    d->moments_of = prev;
    d->wt = add_tensor(&n->m->p, name, "weight", 1, &c);
    d->bt = add_tensor(&n->m->p, name, "bias", 1, &c);
    n->m->p.t[d->wt].is_norm = n->m->p.t[d->bt].is_norm = true; /* optimizer.perturb */
    d->rm = add_tensor(&n->m->buf, name, "running_mean", 1, &c);
    d->rv = add_tensor(&n->m->buf, name, "running_var", 1, &c);
    d->save_mean = xfloats((size_t)c);
    d->save_invstd = xfloats((size_t)c);
    d->bn_sums = xmalloc((size_t)c * 3 * sizeof(double));
    return d->out = add_value(n, c, n->v[in].h, n->v[in].w);
}

int cn_relu(struct convnet *n, int in)
{
    /* A ReLU right after the BatchNorm or sum that wrote its input, or any activation right
     * after the linear layer that did, is fused into that layer (one pass over the
     * activations less each way; for a linear layer, each block of output columns is
     * activated while it is in cache, see lin_forward). Safe: that layer was the last one
     * added, so no other layer can have read its output before the activation. */
    struct cn_node *last = n->nn > 0 ? &n->node[n->nn - 1] : NULL;
    if (n->act == ACT_RELU && last && last->out == in && !last->relu &&
        (last->kind == CN_BN || last->kind == CN_ADD)) {
        last->relu = true;
        return in;
    }
    if (last && last->out == in && last->kind == CN_LINEAR && !last->act) {
        last->act = true;
        last->pre = ws_floats(n, (size_t)n->m->max_batch * value_size(&n->v[in]));
        return in;
    }
    struct cn_node *d = add_node(n, CN_RELU, in);
    return d->out = add_value(n, n->v[in].c, n->v[in].h, n->v[in].w);
}

static int pool(struct convnet *n, enum cn_kind kind, int in, int k, int stride)
{
    struct cn_value iv = n->v[in];
    SAMX_ASSERT(k > 0 && stride > 0 && iv.h >= k && iv.w >= k);
    struct cn_node *d = add_node(n, kind, in);
    d->k = k;
    d->stride = stride;
    d->out = add_value(n, iv.c, (iv.h - k) / stride + 1, (iv.w - k) / stride + 1);
    if (kind == CN_MAXPOOL && !n->m->plan)
        d->arg = xmalloc((size_t)n->m->max_batch * value_size(&n->v[d->out]) * sizeof *d->arg);
    return d->out;
}

int cn_maxpool(struct convnet *n, int in, int k, int stride)
{
    return pool(n, CN_MAXPOOL, in, k, stride);
}

int cn_avgpool(struct convnet *n, int in, int k, int stride)
{
    return pool(n, CN_AVGPOOL, in, k, stride);
}

int cn_gap(struct convnet *n, int in)
{
    struct cn_node *d = add_node(n, CN_GAP, in);
    return d->out = add_value(n, n->v[in].c, 1, 1);
}

int cn_linear(struct convnet *n, int in, int n_out, bool bias, const char *name)
{
    int n_in = (int)value_size(&n->v[in]);
    struct cn_node *d = add_node(n, CN_LINEAR, in);
    int shape[2] = {n_out, n_in};
    d->wt = add_tensor(&n->m->p, name, "weight", 2, shape);
    if (bias)
        d->bt = add_tensor(&n->m->p, name, "bias", 1, shape);
    if (in > 0 && n_in > n->lin_in)
        n->lin_in = n_in;
    return d->out = add_value(n, n_out, 1, 1);
}

int cn_add(struct convnet *n, int a, int b)
{
    struct cn_value va = n->v[a], vb = n->v[b];
    SAMX_ASSERT(va.c == vb.c && va.h == vb.h && va.w == vb.w && a != b);
    struct cn_node *d = add_node(n, CN_ADD, a);
    d->in2 = b;
    return d->out = add_value(n, va.c, va.h, va.w);
}

int cn_shortcut_a(struct convnet *n, int in, int c_out, int stride)
{
    struct cn_value iv = n->v[in];
    struct cn_node *d = add_node(n, CN_SHORTCUT_A, in);
    d->stride = stride;
    return d->out = add_value(n, c_out, (iv.h + stride - 1) / stride, (iv.w + stride - 1) / stride);
}

int cn_dropout(struct convnet *n, int in, float p)
{
    if (p <= 0)
        return in;
    struct cn_node *d = add_node(n, CN_DROPOUT, in);
    d->p = p;
    d->layer = n->n_dropout++;
    d->out = add_value(n, n->v[in].c, n->v[in].h, n->v[in].w);
    d->mask = ws_floats(n, (size_t)n->m->max_batch * value_size(&n->v[d->out]));
    return d->out;
}

void cn_set_activation(struct convnet *n, int act)
{
    SAMX_ASSERT(n->nn == 0 && (act == ACT_RELU || act == ACT_TANH || act == ACT_GELU));
    n->act = (enum act)act;
}

void cn_shape(const struct convnet *n, int v, int *c, int *h, int *w)
{
    *c = n->v[v].c;
    *h = n->v[v].h;
    *w = n->v[v].w;
}

/* The gradient buffers. Backward runs the nodes from the last to the first; value v's gradient
 * is live from its last reader (which writes it first, acc false) down to the node that wrote
 * v, which reads it (the model's output: from the loss end, before every node). Values whose
 * live ranges are disjoint share a buffer: greedily, in backward order, a value that comes live
 * takes the free buffer that fits it most tightly (or the largest free one, grown, or a new
 * one), and hands it back once its writer has run. Every backward kernel overwrites its input
 * gradient when acc is false, so a shared buffer is never read before it is written. A
 * ResNet-18 keeps a few buffers instead of one per value: at batch 128, about 650 MB less. */
static void plan_gradients(struct convnet *n)
{
    int nv = n->nv, nn = n->nn;
    int *start = xmalloc((size_t)nv * sizeof *start), *end = xmalloc((size_t)nv * sizeof *end);
    for (int v = 0; v < nv; v++)
        start[v] = end[v] = -1;
    for (int i = 0; i < nn; i++) {
        const struct cn_node *d = &n->node[i];
        end[d->out] = i;
        start[d->in] = start[d->in] > i ? start[d->in] : i;
        if (d->in2 >= 0)
            start[d->in2] = start[d->in2] > i ? start[d->in2] : i;
    }
    start[nv - 1] = nn;
    int cap = 0;
    bool *busy = NULL;
    for (int t = nn; t >= 0; t--) {
        for (int v = 1; v < nv; v++) {
            if (start[v] != t)
                continue;
            SAMX_ASSERT(end[v] >= 0 && end[v] <= t);
            size_t need = value_size(&n->v[v]);
            int best = -1;
            for (int k = 0; k < n->n_slot; k++) {
                if (busy[k])
                    continue;
                bool fits = n->slot_floats[k] >= need;
                if (best < 0)
                    best = k;
                else if (fits && (n->slot_floats[best] < need ||
                                  n->slot_floats[k] < n->slot_floats[best]))
                    best = k;
                else if (!fits && n->slot_floats[best] < need &&
                         n->slot_floats[k] > n->slot_floats[best])
                    best = k;
            }
            if (best < 0) {
                if (n->n_slot == cap) {
                    cap = cap ? 2 * cap : 16;
                    n->slot_floats = xrealloc(n->slot_floats, (size_t)cap * sizeof(size_t));
                    busy = xrealloc(busy, (size_t)cap);
                }
                best = n->n_slot++;
                n->slot_floats[best] = 0;
            }
            if (n->slot_floats[best] < need)
                n->slot_floats[best] = need;
            busy[best] = true;
            n->v[v].slot = best;
        }
        for (int v = 1; v < nv && t < nn; v++)
            if (end[v] == t)
                busy[n->v[v].slot] = false;
    }
    n->pool = xcalloc((size_t)n->n_slot + 1, sizeof *n->pool);
    for (int k = 0; k < n->n_slot; k++)
        n->pool[k] = ws_floats(n, (size_t)n->m->max_batch * n->slot_floats[k]);
    for (int v = 1; v < nv; v++)
        n->v[v].dx = n->pool[n->v[v].slot];
    free(busy);
    free(start);
    free(end);
}

int cn_finish(struct convnet *n, struct err *e)
{
    struct cn_value *last = &n->v[n->nv - 1];
    if (value_size(last) != (size_t)n->m->n_out)
        return err_set(e, "model '%s': the network ends with %zu outputs, expected %d",
                       n->m->ops->name, value_size(last), n->m->n_out);
    if (n->n_dropout > 256)
        return err_set(e, "model '%s': more than 256 dropout layers", n->m->ops->name);
    /* Which backward contribution comes first for each value (nodes in reverse order). */
    bool *seen = xcalloc((size_t)n->nv, 1);
    for (int i = n->nn - 1; i >= 0; i--) {
        struct cn_node *d = &n->node[i];
        if (d->in2 >= 0) {
            d->acc2 = seen[d->in2];
            seen[d->in2] = true;
        }
        d->acc = seen[d->in];
        seen[d->in] = true;
        SAMX_ASSERT(!(d->kind == CN_LINEAR && d->acc));
    }
    free(seen);
    /* The gradient ranges to zero: runs of consecutive tensors that no linear node owns. */
    const struct params *p = &n->m->p;
    bool *lin = xcalloc((size_t)p->nt + 1, 1);
    for (int i = 0; i < n->nn; i++)
        if (n->node[i].kind == CN_LINEAR) {
            lin[n->node[i].wt] = true;
            if (n->node[i].bt >= 0)
                lin[n->node[i].bt] = true;
        }
    n->zero = xcalloc((size_t)p->nt + 1, sizeof *n->zero);
    for (int t = 0; t < p->nt; t++) {
        if (lin[t])
            continue;
        size_t lo = p->t[t].off, hi = lo + p->t[t].n;
        if (t > 0 && !lin[t - 1])
            n->zero[n->n_zero - 1][1] = hi;
        else {
            n->zero[n->n_zero][0] = lo;
            n->zero[n->n_zero++][1] = hi;
        }
    }
    free(lin);
    SAMX_ASSERT(work_blocks() <= MAX_BLOCKS);
    for (int b = 1; b < work_blocks() && n->lin_in > 0; b++)
        n->part[b] = ws_floats(n, (size_t)n->m->max_batch * n->lin_in);
    plan_gradients(n);
    n->ws.col = xcalloc((size_t)n->ws.n_blk, sizeof *n->ws.col);
    n->ws.dw = xcalloc((size_t)n->ws.n_blk, sizeof *n->ws.dw);
    for (int b = 0; b < n->ws.n_blk; b++) {
        n->ws.col[b] = n->col_floats ? ws_floats(n, n->col_floats) : NULL;
        n->ws.dw[b] = n->dw_floats ? ws_floats(n, n->dw_floats) : NULL;
    }
    n->m->out = last->x;
    return 0;
}

/* ---- init ---- */

static void init_tensor(struct model *m, struct rng *r, int t, enum cn_init how, int fan_in,
                        int fan_out)
{
    const struct tensor *tv = &m->p.t[t];
    float *w = m->p.w + tv->off;
    double bound = 1.0 / sqrt((double)fan_in);
    double sd = how == CN_INIT_KAIMING_IN ? sqrt(2.0 / fan_in) : sqrt(2.0 / fan_out);
    for (size_t i = 0; i < tv->n; i++)
        w[i] = how == CN_INIT_TORCH ? (float)((2 * rng_uniform(r) - 1) * bound)
                                    : (float)(sd * rng_normal(r));
}

static void fill(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

void cn_reset(struct model *m, uint64_t seed)
{
    struct convnet *n = m->priv;
    struct rng r;
    rng_init(&r, seed, "init", 0);
    for (int i = 0; i < n->nn; i++) {
        struct cn_node *d = &n->node[i];
        if (d->kind == CN_CONV) {
            int kk = d->cs.k * d->cs.k;
            int fan_in = d->cs.c_in * kk, fan_out = d->cs.c_out * kk;
            init_tensor(m, &r, d->wt, n->conv_init, fan_in, fan_out);
            if (d->bt >= 0)
                init_tensor(m, &r, d->bt, CN_INIT_TORCH, fan_in, fan_out);
        } else if (d->kind == CN_LINEAR) {
            const struct tensor *w = &m->p.t[d->wt];
            init_tensor(m, &r, d->wt, n->linear_init, w->shape[1], w->shape[0]);
            if (d->bt < 0)
                continue;
            const struct tensor *b = &m->p.t[d->bt];
            if (n->zero_linear_bias)
                fill(m->p.w + b->off, b->n, 0.0f);
            else
                init_tensor(m, &r, d->bt, CN_INIT_TORCH, w->shape[1], w->shape[0]);
        } else if (d->kind == CN_BN) {
            const struct tensor *g = &m->p.t[d->wt], *b = &m->p.t[d->bt];
            fill(m->p.w + g->off, g->n, 1.0f);
            fill(m->p.w + b->off, b->n, 0.0f);
            fill(m->buf.w + m->buf.t[d->rm].off, (size_t)n->v[d->in].c, 0.0f);
            fill(m->buf.w + m->buf.t[d->rv].off, (size_t)n->v[d->in].c, 1.0f);
        }
    }
}

/* ---- forward / backward ---- */

static const float *tensor_of(const struct params *p, const float *base, int t)
{
    return t >= 0 ? base + p->t[t].off : NULL;
}

/* ---- linear nodes: the split by weight rows ----
 *
 * A linear node's training passes are split by output unit: block j of nb owns the rows
 * [j0, j1) of the weight (gemm_par_rows, the split gemm_par and the optimizers' chunk loops
 * also use) and computes those output columns in the forward pass (with the fused activation,
 * cn_relu), those rows of dW and db, and the partial product gy[:, j0:j1] W[j0:j1, :] of the
 * input gradient; the partials are added in block order, each block adding the columns it owns
 * in the layer below. nb is work_blocks() (blas.h), whatever -t is; team thread t takes blocks
 * t, t + team, ... (tune.h), so in a stack of linear layers every weight-sized array stays in
 * one core's cache, only activations move between cores, and the team size never changes a
 * bit. Each thread calls single-threaded sgemm on its block (OpenBLAS does not spawn threads
 * inside a parallel region). With one block the products are exactly the unsplit ones. A node
 * is one parallel region; a stack of them pays one region start per layer where a single region
 * with a barrier between layers would pay a barrier (the same cost, measured:
 * tests/bench/README.md). */
static int split_of(int n, int blk, int nb, int *j0, int *j1)
{
    int rows = gemm_par_rows(n, nb);
    *j0 = blk * rows < n ? blk * rows : n;
    *j1 = *j0 + rows < n ? *j0 + rows : n;
    return *j1 - *j0;
}

/* Blocks of a pass over `batch` examples: one when the whole pass is below about a million
 * multiply-adds per example weight (gemm_par's threshold), where waking a team costs more than
 * it saves. The shapes alone decide. */
static int lin_blocks(const struct model *m, int batch)
{
    return (double)batch * (double)m->p.n < 1e6 ? 1 : work_blocks();
}

/* The team for a node with n_out outputs split into nb blocks: no more threads than non-empty
 * blocks; a team of one runs no parallel construct at all. */
static int lin_team(int n_out, int nb)
{
    int rows = gemm_par_rows(n_out, nb), busy = (n_out + rows - 1) / rows;
    int team = team_size();
    return team < busy ? team : busy;
}

/* Team thread t's share of a linear node's forward pass. */
static void lin_forward_share(struct convnet *n, const struct cn_node *d, int batch, int t,
                              int team, int nb)
{
    const struct model *m = n->m;
    const struct cn_value *iv = &n->v[d->in], *ov = &n->v[d->out];
    int n_in = (int)value_size(iv), n_out = ov->c;
    const float *w = m->p.w + m->p.t[d->wt].off;
    const float *b = tensor_of(&m->p, m->p.w, d->bt);
    float *z = d->act ? d->pre : ov->x;
    for (int blk = t; blk < nb; blk += team) {
        int j0, j1, nj = split_of(n_out, blk, nb, &j0, &j1);
        if (nj == 0)
            continue;
        if (b)
            for (int i = 0; i < batch; i++)
                memcpy(z + (size_t)i * n_out + j0, b + j0, (size_t)nj * sizeof *z);
        gemm_ld(false, true, batch, nj, n_in, 1.0f, iv->x, n_in, w + (size_t)j0 * n_in, n_in,
                b ? 1.0f : 0.0f, z + j0, n_out);
        if (d->act)
            act_forward_block(n->act, ov->x + j0, z + j0, batch, nj, n_out);
    }
}

static void lin_forward(struct convnet *n, const struct cn_node *d, int batch)
{
    int nb = lin_blocks(n->m, batch), team = lin_team(n->v[d->out].c, nb);
    if (team == 1) {
        lin_forward_share(n, d, batch, 0, 1, nb);
        return;
    }
#pragma omp parallel num_threads(team)
    lin_forward_share(n, d, batch, thread_id(), thread_count(), nb);
}

/* Team thread t's share of a linear node's backward pass: gy the output's gradient (with a
 * fused activation: of the activation's output; its gradient through the activation is taken
 * block by block into ov->dx, the node's own buffer), gx the input's or NULL. */
static void lin_backward_share(struct convnet *n, const struct cn_node *d, const float *gy,
                               float *gx, int batch, bool acc, int t, int team, int nb)
{
    const struct model *m = n->m;
    const struct cn_value *iv = &n->v[d->in], *ov = &n->v[d->out];
    int n_in = (int)value_size(iv), n_out = ov->c;
    const float *w = m->p.w + m->p.t[d->wt].off;
    float *gw = m->p.g + m->p.t[d->wt].off;
    float *gb = d->bt >= 0 ? m->p.g + m->p.t[d->bt].off : NULL;
    /* The gradient of the linear output: gy, or with a fused activation gy taken through it
     * into the node's own buffer. */
    float *gact = d->act ? ov->dx : NULL;
    const float *gz = d->act ? gact : gy;
    for (int blk = t; blk < nb; blk += team) {
        int j0, j1, nj = split_of(n_out, blk, nb, &j0, &j1);
        if (nj == 0)
            continue;
        if (gact) {
            if (gy != gact) /* the model's last value: dout is the caller's */
                for (int i = 0; i < batch; i++)
                    memcpy(gact + (size_t)i * n_out + j0, gy + (size_t)i * n_out + j0,
                           (size_t)nj * sizeof *gact);
            act_backward_block(n->act, gact + j0, d->pre + j0, ov->x + j0, batch, nj, n_out);
        }
        gemm_ld(true, false, nj, n_in, batch, 1.0f, gz + j0, n_out, iv->x, n_in,
                acc ? 1.0f : 0.0f, gw + (size_t)j0 * n_in, n_in);
        if (gb)
            col_sums(gb + j0, gz + j0, batch, nj, n_out, acc);
        if (gx) /* block 0's product goes straight to gx */
            gemm_ld(false, false, batch, n_in, nj, 1.0f, gz + j0, n_out, w + (size_t)j0 * n_in,
                    n_in, 0.0f, blk == 0 ? gx : n->part[blk], n_in);
    }
    int rows = gemm_par_rows(n_out, nb), np = (n_out + rows - 1) / rows;
    if (!gx || np == 1)
        return;
    if (team > 1) {
#pragma omp barrier
    }
    /* The columns each block owns in the layer below: the partials of blocks 1 .. np-1 are
     * added to block 0's in block order; the same thread reads them next (the layer below).
     * Partial by partial along each row segment, so the loop vectorizes; every element still
     * gets ((p0 + p1) + p2) + ... */
    for (int blk = t; blk < nb; blk += team) {
        int c0, c1, nc = split_of(n_in, blk, nb, &c0, &c1);
        if (nc == 0)
            continue;
        for (int i = 0; i < batch; i++) {
            size_t o = (size_t)i * n_in + c0;
            float *restrict dst = gx + o;
            for (int k = 1; k < np; k++) {
                const float *restrict src = n->part[k] + o;
                for (int c = 0; c < nc; c++)
                    dst[c] += src[c];
            }
        }
    }
}

static void lin_backward(struct convnet *n, const struct cn_node *d, const float *gy, float *gx,
                         int batch, bool acc)
{
    SAMX_ASSERT(!d->acc); /* the input's gradient is overwritten */
    int nb = lin_blocks(n->m, batch), team = lin_team(n->v[d->out].c, nb);
    if (team == 1) {
        lin_backward_share(n, d, gy, gx, batch, acc, 0, 1, nb);
        return;
    }
#pragma omp parallel num_threads(team)
    lin_backward_share(n, d, gy, gx, batch, acc, thread_id(), thread_count(), nb);
}

void cn_set_bn_group(struct model *m, int k)
{
    struct convnet *n = m->priv;
    SAMX_ASSERT(k >= 0);
    n->bn_group = k;
    int groups = k > 0 ? (m->max_batch + k - 1) / k : 1;
    for (int i = 0; i < n->nn; i++) {
        struct cn_node *d = &n->node[i];
        if (d->kind != CN_BN)
            continue;
        size_t c = (size_t)n->v[d->in].c;
        free(d->save_mean);
        free(d->save_invstd);
        free(d->gstats);
        d->save_mean = xfloats(groups * c);
        d->save_invstd = xfloats(groups * c);
        d->gstats = k > 0 ? xmalloc(groups * 3 * c * sizeof(double)) : NULL;
    }
}

/* Ghost BatchNorm in training mode (cn_set_bn_group): the rows of the call, numbered from
 * shard->row0 in a job of several processes, in groups of k, each normalised with its own
 * statistics (the phases of nn_conv.h on the group's rows, the same bits as batchnorm_forward
 * on them). The running statistics (rm, rv, when not NULL) take one update per group, in group
 * order, as a BatchNorm applied to each group in turn does; a job's ranks exchange the groups'
 * sums first (zeros outside a rank's own groups), so every rank updates with every group. */
static void bn_forward_groups(struct model *m, struct cn_node *d, int k, float *y,
                              const struct cn_value *iv, const double *mo, float *rm, float *rv,
                              int batch)
{
    int c = iv->c, hw = iv->h * iv->w;
    size_t plane = (size_t)c * hw;
    int row0 = m->shard ? m->shard->row0 : 0, rows = m->shard ? m->shard->rows : batch;
    SAMX_ASSERT(row0 % k == 0);
    int g0 = row0 / k, ng = (rows + k - 1) / k;
    if (rm && m->shard)
        memset(d->gstats, 0, (size_t)ng * 3 * c * sizeof(double));
    for (int lo = 0, gi = 0; lo < batch; lo += k, gi++) {
        int nr = lo + k <= batch ? k : batch - lo;
        double cnt = (double)nr * hw, *mean = d->gstats + (size_t)(g0 + gi) * 3 * c,
               *dev = mean + c;
        const float *x = iv->x + (size_t)lo * plane;
        const double *gm = mo ? mo + (size_t)lo * c * 2 : NULL;
        batchnorm_sums(mean, x, gm, nr, c, hw);
        for (int ch = 0; ch < c; ch++)
            mean[ch] /= cnt;
        batchnorm_devs(dev, x, gm, mean, nr, c, hw);
        batchnorm_normalize(y + (size_t)lo * plane, d->save_mean + (size_t)gi * c,
                            d->save_invstd + (size_t)gi * c, x, mean, dev, cnt,
                            tensor_of(&m->p, m->p.w, d->wt), tensor_of(&m->p, m->p.w, d->bt), NULL,
                            NULL, nr, c, hw, d->relu, BN_MOMENTUM, BN_EPS);
    }
    if (!rm)
        return;
    if (m->shard)
        m->shard->sum(d->gstats, (size_t)ng * 3 * c);
    for (int g = 0; g < ng; g++) {
        int nr = (g + 1) * k <= rows ? k : rows - g * k;
        const double *mean = d->gstats + (size_t)g * 3 * c;
        batchnorm_update_running(rm, rv, mean, mean + c, (double)nr * hw, c, BN_MOMENTUM);
    }
}

/* Its backward: each group's gradient from its own statistics; dgamma and dbeta added over the
 * groups (and over the processes afterwards, with the rest of the gradient). */
static void bn_backward_groups(struct model *m, struct cn_node *d, int k, float *gx,
                               const float *gy, const float *y_relu, const struct cn_value *iv,
                               int batch)
{
    int c = iv->c, hw = iv->h * iv->w;
    size_t plane = (size_t)c * hw;
    float *g = m->p.g;
    for (int lo = 0, gi = 0; lo < batch; lo += k, gi++) {
        int nr = lo + k <= batch ? k : batch - lo;
        size_t off = (size_t)lo * plane;
        batchnorm_backward(gx ? gx + off : NULL, g + m->p.t[d->wt].off, g + m->p.t[d->bt].off,
                           gy + off, y_relu ? y_relu + off : NULL, iv->x + off,
                           d->save_mean + (size_t)gi * c, d->save_invstd + (size_t)gi * c,
                           tensor_of(&m->p, m->p.w, d->wt), nr, c, hw, true, d->acc);
    }
}

/* BatchNorm in training mode on a shard of a batch (model.h struct model_shard): the phases
 * of nn_conv.h with the per-channel sums of every shard added between them, so the statistics
 * are the whole batch's. Running statistics (rm, rv, when not NULL) are updated from those, the
 * same on every process. */
static void bn_forward_shard(struct model *m, struct cn_node *d, float *y,
                             const struct cn_value *iv, const double *mo, float *rm, float *rv,
                             int batch)
{
    int c = iv->c, hw = iv->h * iv->w;
    double cnt = (double)m->shard->rows * hw, *mean = d->bn_sums, *dev = d->bn_sums + c;
    batchnorm_sums(mean, iv->x, mo, batch, c, hw);
    m->shard->sum(mean, (size_t)c);
    for (int ch = 0; ch < c; ch++)
        mean[ch] /= cnt;
    batchnorm_devs(dev, iv->x, mo, mean, batch, c, hw);
    m->shard->sum(dev, 2 * (size_t)c);
    batchnorm_normalize(y, d->save_mean, d->save_invstd, iv->x, mean, dev, cnt,
                        tensor_of(&m->p, m->p.w, d->wt), tensor_of(&m->p, m->p.w, d->bt), rm, rv,
                        batch, c, hw, d->relu, BN_MOMENTUM, BN_EPS);
}

/* Its backward: the shard's dgamma and dbeta (the gradient is summed over the processes
 * afterwards), dx from the whole batch's sums. */
static void bn_backward_shard(struct model *m, struct cn_node *d, float *gx, const float *gy,
                              const float *y_relu, const struct cn_value *iv, int batch)
{
    int c = iv->c, hw = iv->h * iv->w;
    float *g = m->p.g;
    batchnorm_backward_sums(d->bn_sums, g + m->p.t[d->wt].off, g + m->p.t[d->bt].off, gy, y_relu,
                            iv->x, d->save_mean, d->save_invstd, batch, c, hw);
    if (!gx) /* the same on every process: the layer reads the model's input */
        return;
    m->shard->sum(d->bn_sums, 2 * (size_t)c);
    batchnorm_backward_dx(gx, d->bn_sums, (double)m->shard->rows * hw, gy, y_relu, iv->x,
                          d->save_mean, d->save_invstd, tensor_of(&m->p, m->p.w, d->wt), batch,
                          c, hw, d->acc);
}

size_t cn_runlog_reserve(struct model *m, int groups, int per_group)
{
    struct convnet *n = m->priv;
    SAMX_ASSERT(groups > 0 && per_group > 0 && !n->runlog);
    n->log_stride = 0;
    for (int i = 0; i < n->nn; i++) {
        struct cn_node *d = &n->node[i];
        if (d->kind != CN_BN)
            continue;
        d->log_off = n->log_stride;
        d->log_group = -1;
        n->log_stride += 1 + 3 * (size_t)n->v[d->in].c;
    }
    n->log_groups = groups, n->log_per_group = per_group;
    size_t size = (size_t)groups * per_group * n->log_stride;
    n->runlog = xcalloc(size ? size : 1, sizeof(double));
    return size;
}

/* Log node d's update from the statistics {mean (c), dev (2c)} of cnt values as the next of
 * the current group's (struct model_runlog). */
static void runlog_put(struct convnet *n, struct cn_node *d, int c, const double *stats,
                       double cnt)
{
    int g = n->m->runlog->group;
    SAMX_ASSERT(g >= 0 && g < n->log_groups);
    if (d->log_group != g)
        d->log_group = g, d->log_j = 0;
    SAMX_ASSERT(d->log_j < n->log_per_group);
    size_t slot = (size_t)g * n->log_per_group + (size_t)d->log_j++;
    double *x = n->runlog + slot * n->log_stride + d->log_off;
    x[0] = cnt;
    memcpy(x + 1, stats, 3 * (size_t)c * sizeof(double));
}

void cn_runlog_apply(struct model *m, void (*sum)(double *x, size_t n))
{
    struct convnet *n = m->priv;
    SAMX_ASSERT(n->runlog != NULL);
    size_t slots = (size_t)n->log_groups * n->log_per_group;
    sum(n->runlog, slots * n->log_stride);
    for (size_t s = 0; s < slots; s++)
        for (int i = 0; i < n->nn; i++) {
            struct cn_node *d = &n->node[i];
            if (d->kind != CN_BN)
                continue;
            const double *x = n->runlog + s * n->log_stride + d->log_off;
            int c = n->v[d->in].c;
            if (x[0] > 0)
                batchnorm_update_running(m->buf.w + m->buf.t[d->rm].off,
                                         m->buf.w + m->buf.t[d->rv].off, x + 1, x + 1 + c, x[0],
                                         c, BN_MOMENTUM);
            d->log_group = -1;
        }
    memset(n->runlog, 0, slots * n->log_stride * sizeof(double));
}

/* BatchNorm in training mode whose running-statistics update goes to the log: the phases of
 * nn_conv.h (the same bits as batchnorm_forward), the statistics kept for runlog_put. */
static void bn_forward_logged(struct convnet *n, struct cn_node *d, float *y,
                              const struct cn_value *iv, const double *mo, int batch)
{
    struct model *m = n->m;
    int c = iv->c, hw = iv->h * iv->w;
    double cnt = (double)batch * hw, *mean = d->bn_sums, *dev = d->bn_sums + c;
    batchnorm_sums(mean, iv->x, mo, batch, c, hw);
    for (int ch = 0; ch < c; ch++)
        mean[ch] /= cnt;
    batchnorm_devs(dev, iv->x, mo, mean, batch, c, hw);
    batchnorm_normalize(y, d->save_mean, d->save_invstd, iv->x, mean, dev, cnt,
                        tensor_of(&m->p, m->p.w, d->wt), tensor_of(&m->p, m->p.w, d->bt), NULL,
                        NULL, batch, c, hw, d->relu, BN_MOMENTUM, BN_EPS);
    runlog_put(n, d, c, d->bn_sums, cnt);
}

void cn_forward(struct model *m, const float *x, int batch, enum pass_mode mode)
{
    struct convnet *n = m->priv;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch);
    n->train = mode != PASS_EVAL;
    n->v[0].x = (float *)x; /* read only: no layer writes its input */
    const float *w = m->p.w;
    for (int i = 0; i < n->nn; i++) {
        struct cn_node *d = &n->node[i];
        struct cn_value *iv = &n->v[d->in], *ov = &n->v[d->out];
        size_t total = (size_t)batch * value_size(ov);
        switch (d->kind) {
        case CN_CONV:
            /* the moments only serve batch statistics: not in evaluation mode */
            conv2d_forward(ov->x, n->train ? d->moments : NULL, iv->x,
                           tensor_of(&m->p, w, d->wt), tensor_of(&m->p, w, d->bt), batch, &d->cs,
                           &n->ws, false);
            break;
        case CN_BN: {
            bool update = mode == PASS_TRAIN_UPDATE || mode == PASS_EVAL;
            float *rm = update ? m->buf.w + m->buf.t[d->rm].off : NULL;
            float *rv = update ? m->buf.w + m->buf.t[d->rv].off : NULL;
            const double *mo = d->moments_of >= 0 ? n->node[d->moments_of].moments : NULL;
            bool logged = n->train && rm && m->runlog;
            SAMX_ASSERT(!logged || !m->shard); /* a logged call is one process's alone */
            if (logged && n->bn_group > 0) {
                int k = n->bn_group, c = iv->c, hw = iv->h * iv->w;
                bn_forward_groups(m, d, k, ov->x, iv, mo, NULL, NULL, batch);
                for (int lo = 0, gi = 0; lo < batch; lo += k, gi++)
                    runlog_put(n, d, c, d->gstats + (size_t)gi * 3 * c,
                               (double)(lo + k <= batch ? k : batch - lo) * hw);
                break;
            }
            if (logged) {
                bn_forward_logged(n, d, ov->x, iv, mo, batch);
                break;
            }
            if (n->train && n->bn_group > 0) {
                bn_forward_groups(m, d, n->bn_group, ov->x, iv, mo, rm, rv, batch);
                break;
            }
            if (n->train && m->shard) {
                bn_forward_shard(m, d, ov->x, iv, mo, rm, rv, batch);
                break;
            }
            batchnorm_forward(ov->x, d->save_mean, d->save_invstd, iv->x, n->train ? mo : NULL,
                              tensor_of(&m->p, w, d->wt), tensor_of(&m->p, w, d->bt), rm, rv,
                              batch, iv->c, iv->h * iv->w, n->train, d->relu, BN_MOMENTUM,
                              BN_EPS);
            break;
        }
        case CN_RELU:
            act_forward(n->act, ov->x, iv->x, total);
            break;
        case CN_MAXPOOL:
            maxpool_forward(ov->x, d->arg, iv->x, batch, iv->c, iv->h, iv->w, d->k, d->stride);
            break;
        case CN_AVGPOOL:
            avgpool_forward(ov->x, iv->x, batch, iv->c, iv->h, iv->w, d->k, d->stride);
            break;
        case CN_GAP:
            gap_forward(ov->x, iv->x, batch, iv->c, iv->h * iv->w);
            break;
        case CN_LINEAR:
            lin_forward(n, d, batch);
            break;
        case CN_ADD:
            add_forward(ov->x, iv->x, n->v[d->in2].x, total, d->relu);
            break;
        case CN_SHORTCUT_A:
            shortcut_a_forward(ov->x, iv->x, batch, iv->c, iv->h, iv->w, ov->c, d->stride);
            break;
        case CN_DROPOUT:
            if (n->train)
                dropout_forward(ov->x, d->mask, iv->x, batch, value_size(iv), d->p, m->seed,
                                (uint64_t)m->step, d->layer, m->shard ? m->shard->row0 : 0);
            else
                vec_copy(total, iv->x, ov->x);
            break;
        }
    }
}

void cn_backward(struct model *m, const float *x, const float *dout, int batch, bool acc)
{
    struct convnet *n = m->priv;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch && n->v[0].x == x);
    const float *w = m->p.w;
    float *g = m->p.g;
    /* The layer kernels add into their weights' gradients, but for the linear nodes', which
     * are overwritten unless acc. */
    if (!acc)
        for (int k = 0; k < n->n_zero; k++)
            vec_zero(n->zero[k][1] - n->zero[k][0], g + n->zero[k][0]);
    for (int i = n->nn - 1; i >= 0; i--) {
        struct cn_node *d = &n->node[i];
        struct cn_value *iv = &n->v[d->in], *ov = &n->v[d->out];
        const float *gy = d->out == n->nv - 1 ? dout : ov->dx;
        float *gx = d->in > 0 ? iv->dx : NULL; /* no gradient for the model's input */
        size_t total = (size_t)batch * value_size(ov);
        switch (d->kind) {
        case CN_CONV:
            conv2d_backward(gx, g + m->p.t[d->wt].off, d->bt >= 0 ? g + m->p.t[d->bt].off : NULL,
                            gy, iv->x, tensor_of(&m->p, w, d->wt), batch, &d->cs, &n->ws,
                            d->acc);
            break;
        case CN_BN:
            if (n->train && n->bn_group > 0) {
                bn_backward_groups(m, d, n->bn_group, gx, gy, d->relu ? ov->x : NULL, iv, batch);
                break;
            }
            if (n->train && m->shard) {
                bn_backward_shard(m, d, gx, gy, d->relu ? ov->x : NULL, iv, batch);
                break;
            }
            batchnorm_backward(gx, g + m->p.t[d->wt].off, g + m->p.t[d->bt].off, gy,
                               d->relu ? ov->x : NULL, iv->x,
                               d->save_mean, d->save_invstd, tensor_of(&m->p, w, d->wt), batch,
                               iv->c, iv->h * iv->w, n->train, d->acc);
            break;
        case CN_RELU:
            if (gx)
                act_backward(n->act, gx, gy, iv->x, ov->x, total, d->acc);
            break;
        case CN_MAXPOOL:
            if (gx)
                maxpool_backward(gx, gy, d->arg, batch, iv->c, iv->h, iv->w, d->k, d->stride,
                                 d->acc);
            break;
        case CN_AVGPOOL:
            if (gx)
                avgpool_backward(gx, gy, batch, iv->c, iv->h, iv->w, d->k, d->stride, d->acc);
            break;
        case CN_GAP:
            if (gx)
                gap_backward(gx, gy, batch, iv->c, iv->h * iv->w, d->acc);
            break;
        case CN_LINEAR:
            lin_backward(n, d, gy, gx, batch, acc);
            break;
        case CN_ADD:
            if (gx)
                grad_pass(gx, gy, d->relu ? ov->x : NULL, total, d->acc);
            if (d->in2 > 0)
                grad_pass(n->v[d->in2].dx, gy, d->relu ? ov->x : NULL, total, d->acc2);
            break;
        case CN_SHORTCUT_A:
            if (gx)
                shortcut_a_backward(gx, gy, batch, iv->c, iv->h, iv->w, ov->c, d->stride,
                                    d->acc);
            break;
        case CN_DROPOUT:
            if (gx) {
                if (n->train)
                    dropout_backward(gx, gy, d->mask, total, d->acc);
                else
                    grad_pass(gx, gy, NULL, total, d->acc);
            }
            break;
        }
    }
}

/* ---- Hessian-vector products ---- */

void cn_hvp_reserve(struct model *m)
{
    struct convnet *n = m->priv;
    if (n->hvp_ready || m->plan)
        return;
    n->rpool = xcalloc((size_t)n->n_slot + 1, sizeof *n->rpool);
    for (int k = 0; k < n->n_slot; k++)
        n->rpool[k] = xfloats((size_t)m->max_batch * n->slot_floats[k]);
    for (int i = 0; i < n->nv; i++) {
        size_t sz = (size_t)m->max_batch * value_size(&n->v[i]);
        n->v[i].rx = i == 0 ? xcalloc(sz, sizeof(float)) : xfloats(sz);
        n->v[i].rdx = i == 0 ? NULL : n->rpool[n->v[i].slot];
    }
    for (int i = 0; i < n->nn; i++)
        if (n->node[i].act)
            n->node[i].rpre = xfloats((size_t)m->max_batch * value_size(&n->v[n->node[i].out]));
    n->hvp_ready = true;
}

/* Forward-over-reverse (the R-operator) through the graph in evaluation mode: the forward pass,
 * its tangent along v (rx of every value), the loss end (hvp_loss_output), then the backward
 * pass and its tangent together, node by node from the top. Weight terms go into hv: the
 * kernels that add weight gradients add R{dw} = (tangent of the output gradient) x (input) +
 * (output gradient) x (tangent of the input). */
void cn_hvp(struct model *m, const float *x, int batch, const struct hvp_loss *l, const float *v,
            float *hv)
{
    struct convnet *n = m->priv;
    SAMX_ASSERT(n->hvp_ready && batch > 0 && batch <= m->max_batch);
    cn_forward(m, x, batch, PASS_EVAL);
    const float *w = m->p.w;
    for (int i = 0; i < n->nn; i++) {
        struct cn_node *d = &n->node[i];
        struct cn_value *iv = &n->v[d->in], *ov = &n->v[d->out];
        const float *rin = iv->rx;
        float *r = ov->rx;
        size_t total = (size_t)batch * value_size(ov);
        switch (d->kind) {
        case CN_CONV:
            conv2d_forward(r, NULL, iv->x, tensor_of(&m->p, v, d->wt), tensor_of(&m->p, v, d->bt),
                           batch, &d->cs, &n->ws, false);
            if (d->in > 0)
                conv2d_forward(r, NULL, rin, tensor_of(&m->p, w, d->wt), NULL, batch, &d->cs,
                               &n->ws, true);
            break;
        case CN_BN:
            batchnorm_rop(r, d->relu ? ov->x : NULL, rin, iv->x, tensor_of(&m->p, w, d->wt),
                          tensor_of(&m->p, v, d->wt), tensor_of(&m->p, v, d->bt), d->save_mean,
                          d->save_invstd, batch, iv->c, iv->h * iv->w);
            break;
        case CN_RELU:
            act_backward(n->act, r, rin, iv->x, ov->x, total, false);
            break;
        case CN_MAXPOOL:
            maxpool_rop(r, d->arg, rin, batch, iv->c, iv->h, iv->w, d->k, d->stride);
            break;
        case CN_AVGPOOL:
            avgpool_forward(r, rin, batch, iv->c, iv->h, iv->w, d->k, d->stride);
            break;
        case CN_GAP:
            gap_forward(r, rin, batch, iv->c, iv->h * iv->w);
            break;
        case CN_LINEAR: {
            /* R{z} = x V^T + vb + R{x} W^T; with a fused activation R{y} = act'(z) R{z} */
            int n_in = (int)value_size(iv);
            float *rz = d->act ? d->rpre : r;
            linear_forward(rz, iv->x, tensor_of(&m->p, v, d->wt), tensor_of(&m->p, v, d->bt),
                           batch, n_in, ov->c);
            if (d->in > 0)
                gemm_par(false, true, batch, ov->c, n_in, 1.0f, rin, tensor_of(&m->p, w, d->wt),
                         1.0f, rz);
            if (d->act)
                act_backward(n->act, r, rz, d->pre, ov->x, total, false);
            break;
        }
        case CN_ADD:
            add_rop(r, rin, n->v[d->in2].rx, d->relu ? ov->x : NULL, total);
            break;
        case CN_SHORTCUT_A:
            shortcut_a_forward(r, rin, batch, iv->c, iv->h, iv->w, ov->c, d->stride);
            break;
        case CN_DROPOUT: /* identity in evaluation mode */
            vec_copy(total, rin, r);
            break;
        }
    }
    struct cn_value *last = &n->v[n->nv - 1];
    hvp_loss_output(l, m->out, last->rx, batch, m->n_out, last->dx, last->rdx);
    for (int i = n->nn - 1; i >= 0; i--) {
        struct cn_node *d = &n->node[i];
        struct cn_value *iv = &n->v[d->in], *ov = &n->v[d->out];
        const float *gy = ov->dx, *rgy = ov->rdx;
        /* no gradient for the model's input, and its tangent is zero */
        float *gx = d->in > 0 ? iv->dx : NULL, *rgx = d->in > 0 ? iv->rdx : NULL;
        size_t total = (size_t)batch * value_size(ov);
        float *hw = d->wt >= 0 ? hv + m->p.t[d->wt].off : NULL;
        float *hb = d->bt >= 0 ? hv + m->p.t[d->bt].off : NULL;
        const float *wt = tensor_of(&m->p, w, d->wt), *vt = tensor_of(&m->p, v, d->wt);
        switch (d->kind) {
        case CN_CONV:
            /* rgx = conv^T(rgy, W) + conv^T(gy, V); hw += rgy * x + gy * rx; gx = conv^T(gy, W) */
            conv2d_backward(rgx, hw, hb, rgy, iv->x, wt, batch, &d->cs, &n->ws, d->acc);
            if (d->in > 0) {
                conv2d_backward(rgx, hw, NULL, gy, iv->rx, vt, batch, &d->cs, &n->ws, true);
                conv2d_backward(gx, NULL, NULL, gy, iv->x, wt, batch, &d->cs, &n->ws, d->acc);
            }
            break;
        case CN_BN:
            batchnorm_rop_backward(gx, rgx, hw, hb, gy, rgy, d->relu ? ov->x : NULL, iv->x,
                                   iv->rx, d->save_mean, d->save_invstd, wt, vt, batch, iv->c,
                                   iv->h * iv->w, d->acc);
            break;
        case CN_RELU:
            if (gx)
                act_rop(n->act, gx, rgx, gy, rgy, iv->x, ov->x, iv->rx, total, d->acc);
            break;
        case CN_MAXPOOL:
            if (gx) {
                maxpool_backward(gx, gy, d->arg, batch, iv->c, iv->h, iv->w, d->k, d->stride,
                                 d->acc);
                maxpool_backward(rgx, rgy, d->arg, batch, iv->c, iv->h, iv->w, d->k, d->stride,
                                 d->acc);
            }
            break;
        case CN_AVGPOOL:
            if (gx) {
                avgpool_backward(gx, gy, batch, iv->c, iv->h, iv->w, d->k, d->stride, d->acc);
                avgpool_backward(rgx, rgy, batch, iv->c, iv->h, iv->w, d->k, d->stride, d->acc);
            }
            break;
        case CN_GAP:
            if (gx) {
                gap_backward(gx, gy, batch, iv->c, iv->h * iv->w, d->acc);
                gap_backward(rgx, rgy, batch, iv->c, iv->h * iv->w, d->acc);
            }
            break;
        case CN_LINEAR: {
            /* hw += rgy^T x + gy^T rx, hb += sums of rgy; rgx = rgy W + gy V, gx = gy W, where
             * with a fused activation gy, rgy are first taken through it (in place: the node's
             * own buffers) */
            int n_in = (int)value_size(iv);
            if (d->act)
                act_rop(n->act, ov->dx, ov->rdx, ov->dx, ov->rdx, d->pre, ov->x, d->rpre, total,
                        false);
            linear_backward(NULL, hw, hb, rgy, iv->x, wt, batch, n_in, ov->c, true);
            if (d->in > 0) {
                gemm_par(true, false, ov->c, n_in, batch, 1.0f, gy, iv->rx, 1.0f, hw);
                gemm_par(false, false, batch, n_in, ov->c, 1.0f, rgy, wt, 0.0f, rgx);
                gemm_par(false, false, batch, n_in, ov->c, 1.0f, gy, vt, 1.0f, rgx);
                gemm_par(false, false, batch, n_in, ov->c, 1.0f, gy, wt, 0.0f, gx);
            }
            break;
        }
        case CN_ADD: {
            const float *y = d->relu ? ov->x : NULL;
            if (gx) {
                grad_pass(gx, gy, y, total, d->acc);
                grad_pass(rgx, rgy, y, total, d->acc);
            }
            if (d->in2 > 0) {
                grad_pass(n->v[d->in2].dx, gy, y, total, d->acc2);
                grad_pass(n->v[d->in2].rdx, rgy, y, total, d->acc2);
            }
            break;
        }
        case CN_SHORTCUT_A:
            if (gx) {
                shortcut_a_backward(gx, gy, batch, iv->c, iv->h, iv->w, ov->c, d->stride,
                                    d->acc);
                shortcut_a_backward(rgx, rgy, batch, iv->c, iv->h, iv->w, ov->c, d->stride,
                                    d->acc);
            }
            break;
        case CN_DROPOUT:
            if (gx) {
                grad_pass(gx, gy, NULL, total, d->acc);
                grad_pass(rgx, rgy, NULL, total, d->acc);
            }
            break;
        }
    }
}

uint64_t cn_fingerprint(const struct model *m, int batch)
{
    const struct convnet *n = m->priv;
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the active bits and argmaxes */
    for (int i = 0; i < n->nn; i++) {
        const struct cn_node *d = &n->node[i];
        size_t total = (size_t)batch * value_size(&n->v[d->out]);
        /* smooth activations have no kinks: only ReLU and max-pool layers count */
        bool relu = ((d->kind == CN_RELU || d->act) && n->act == ACT_RELU) || d->relu;
        if (!relu && d->kind != CN_MAXPOOL)
            continue;
        for (size_t j = 0; j < total; j++) {
            uint64_t v = relu ? n->v[d->out].x[j] > 0 : (uint64_t)d->arg[j];
            h = (h ^ v) * 1099511628211ull;
        }
    }
    return h;
}

void cn_release(struct model *m)
{
    struct convnet *n = m->priv;
    if (!n)
        return;
    for (int i = 0; i < n->nv; i++) {
        if (i > 0)
            free(n->v[i].x);
        free(n->v[i].rx);
    }
    for (int k = 0; k < n->n_slot; k++) {
        free(n->pool[k]);
        if (n->rpool)
            free(n->rpool[k]);
    }
    free(n->pool);
    free(n->rpool);
    free(n->slot_floats);
    for (int i = 0; i < n->nn; i++) {
        free(n->node[i].save_mean);
        free(n->node[i].save_invstd);
        free(n->node[i].bn_sums);
        free(n->node[i].gstats);
        free(n->node[i].arg);
        free(n->node[i].mask);
        free(n->node[i].moments);
        free(n->node[i].pre);
        free(n->node[i].rpre);
    }
    for (int b = 0; b < n->ws.n_blk && n->ws.col; b++) {
        free(n->ws.col[b]);
        free(n->ws.dw[b]);
    }
    for (int b = 0; b < MAX_BLOCKS; b++)
        free(n->part[b]);
    free(n->zero);
    free(n->runlog);
    free(n->ws.col);
    free(n->ws.dw);
    free(n->v);
    free(n->node);
    free(n);
    m->priv = NULL;
}
