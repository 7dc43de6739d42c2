/* mlp: multilayer perceptron, the equivalent of
 *     torch.nn.Sequential(Linear(n_in, h1), Act(), Linear(h1, h2), Act(), ..., Linear(hk, n_out))
 * with state_dict names 0.weight, 0.bias, 2.weight, ... (activations hold no weights but take
 * an index, as in Sequential).
 *
 * Keys: hidden [[512, 512]] (widths, non-empty), activation [relu | tanh | gelu], bias [true].
 * Init: PyTorch's Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
 *
 * `linear` (softmax regression / least squares) is the same stack without hidden layers, so its
 * ops are defined at the end of this file, sharing every function.
 *
 * Exact Hessian-vector products (dense_hvp) use Pearlmutter's R-operator, R{f} = d/dt f(w + t v)
 * at t = 0, pushed through the forward pass and then the backward pass:
 *   forward   Rz_l = Ra_(l-1) W_l^T + a_(l-1) V_l^T + vb_l,   Ra_l = act'(z_l) Rz_l  (Ra_0 = 0)
 *   loss      Rd_L = (d^2 loss / d out^2) Rz_L                          (hvp_loss_output)
 *   backward  R{dW_l} = Rd_l^T a_(l-1) + d_l^T Ra_(l-1),  R{db_l} = column sums of Rd_l,
 *             Rd_(l-1) = act'(z) (Rd_l W_l + d_l V_l) + act''(z) Rz_(l-1) (d_l W_l)
 * where d_l = dloss/dz_l. The R{dW}, R{db} are H v. For 784-512-512-10 this is about 2.1 times
 * the multiply-adds of a gradient (the first layer needs no R{dx}).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "measure.h"
#include "model.h"
#include "nn.h"
#include "rng.h"
#include "tune.h"

#define MAX_LAYERS 32
#define PAR_MIN 16384 /* elements below which elementwise loops stay serial (as nn.c) */

struct dense {
    int n_layer;
    int width[MAX_LAYERS + 1];   /* width[0] = n_in, width[n_layer] = n_out */
    int wt[MAX_LAYERS], bt[MAX_LAYERS]; /* tensor index of each layer's weight, bias (-1) */
    enum act act;
    float *z[MAX_LAYERS];  /* (max_batch, width[l+1]) pre-activations of layer l */
    float *a[MAX_LAYERS];  /* (max_batch, width[l+1]) activations (a[n_layer-1] == m->out) */
    float *d0, *d1;        /* (max_batch, max width) back-propagation ping-pong buffers */
    /* Hessian-vector product workspace (dense_hvp), same shapes as z, a, d0, d1: */
    float *rz[MAX_LAYERS], *ra[MAX_LAYERS]; /* R{z}, R{a} (ra[n_layer-1] == rz[n_layer-1]) */
    float *r0, *r1;        /* R{d} ping-pong buffers */
    /* Training passes, split by output unit (see dense_forward): partial products of dx of
     * threads 1.. (thread 0 writes its own into dx), two sets used alternately by layer, each
     * (max_batch, max width) and written before it is read. */
    int n_part;            /* threads the passes are split over at most */
    float *part[2][SAMX_MAX_THREADS];
};

static int dense_init(struct model *m, const long *hidden, int n_hidden, int act, bool bias)
{
    SAMX_ASSERT(n_hidden >= 0 && n_hidden < MAX_LAYERS);
    struct dense *d = xcalloc(1, sizeof *d);
    m->priv = d;
    d->n_layer = n_hidden + 1;
    d->act = (enum act)act;
    d->width[0] = m->n_in;
    for (int l = 0; l < n_hidden; l++)
        d->width[l + 1] = (int)hidden[l];
    d->width[d->n_layer] = m->n_out;
    int max_w = 0;
    for (int l = 0; l < d->n_layer; l++) {
        char name[32];
        int shape[2] = {d->width[l + 1], d->width[l]};
        snprintf(name, sizeof name, "%d.weight", 2 * l);
        d->wt[l] = params_add(&m->p, name, 2, shape);
        d->bt[l] = -1;
        if (bias) {
            snprintf(name, sizeof name, "%d.bias", 2 * l);
            d->bt[l] = params_add(&m->p, name, 1, shape);
        }
        size_t n = (size_t)m->max_batch * d->width[l + 1];
        d->z[l] = xfloats(n);
        d->a[l] = l + 1 < d->n_layer ? xfloats(n) : d->z[l];
        d->rz[l] = xfloats(n);
        d->ra[l] = l + 1 < d->n_layer ? xfloats(n) : d->rz[l];
    }
    for (int l = 0; l <= d->n_layer; l++)
        max_w = d->width[l] > max_w ? d->width[l] : max_w;
    d->d0 = xfloats((size_t)m->max_batch * max_w);
    d->d1 = xfloats((size_t)m->max_batch * max_w);
    d->r0 = xfloats((size_t)m->max_batch * max_w);
    d->r1 = xfloats((size_t)m->max_batch * max_w);
    d->n_part = work_blocks() < SAMX_MAX_THREADS ? work_blocks() : SAMX_MAX_THREADS;
    for (int k = 0; k < 2; k++)
        for (int t = 1; t < d->n_part; t++)
            d->part[k][t] = xmalloc((size_t)m->max_batch * max_w * sizeof(float));
    m->out = d->a[d->n_layer - 1];
    return 0;
}

static void dense_reset(struct model *m, uint64_t seed)
{
    struct dense *d = m->priv;
    struct rng r;
    rng_init(&r, seed, "init", 0);
    for (int l = 0; l < d->n_layer; l++) {
        double bound = 1.0 / sqrt((double)d->width[l]);
        const struct tensor *w = &m->p.t[d->wt[l]];
        for (size_t i = 0; i < w->n; i++)
            m->p.w[w->off + i] = (float)((2 * rng_uniform(&r) - 1) * bound);
        if (d->bt[l] >= 0) {
            const struct tensor *b = &m->p.t[d->bt[l]];
            for (size_t i = 0; i < b->n; i++)
                m->p.w[b->off + i] = (float)((2 * rng_uniform(&r) - 1) * bound);
        }
    }
}

static const float *bias_of(const struct model *m, const struct dense *d, const float *base,
                            int l)
{
    return d->bt[l] >= 0 ? base + m->p.t[d->bt[l]].off : NULL;
}

/* Training passes are split by output unit, one parallel region per pass: block j of nb owns
 * the rows [j0, j1) of every layer's weight (gemm_par_rows, the split gemm_par and the
 * optimizers' chunk loops also use) and computes those output columns in the forward pass,
 * those rows of dW and db, and the partial product dcur[:, j0:j1] W[j0:j1, :] of dx, which are
 * added in block order for the columns each block owns in the layer below. nb is
 * work_blocks() (blas.h), whatever -t is; the team running a pass (tune.h), and team thread t takes blocks
 * t, t + team, ... in every layer and both passes, so every weight-sized array stays in one
 * core's cache, only activations move between cores, and the team size never changes a bit.
 * Each thread calls single-threaded sgemm on its block (OpenBLAS does not spawn threads inside
 * a parallel region). With one block the products are exactly the unsplit ones. */
static int split_of(int n, int blk, int nb, int *j0, int *j1)
{
    int rows = gemm_par_rows(n, nb);
    *j0 = blk * rows < n ? blk * rows : n;
    *j1 = *j0 + rows < n ? *j0 + rows : n;
    return *j1 - *j0;
}

/* Blocks of a pass over `batch` examples: one below about a million multiply-adds, where
 * waking a team costs more than it saves (gemm_par's threshold). */
static int pass_blocks(const struct model *m, const struct dense *d, int batch)
{
    if ((double)batch * (double)m->p.n < 1e6)
        return 1;
    return d->n_part;
}

/* The team for nb blocks. A team of one runs no parallel construct at all. */
static int pass_team(int nb)
{
    int team = team_size();
    return team < nb ? team : nb;
}

/* Team thread t's share of the forward pass (team threads, all calling it; nb blocks). */
static void forward_share(struct model *m, const float *x, int batch, int t, int team, int nb)
{
    struct dense *d = m->priv;
    const float *w = m->p.w;
    const float *in = x;
    for (int l = 0; l < d->n_layer; l++) {
        int n_in = d->width[l], n_out = d->width[l + 1];
        const float *b = bias_of(m, d, w, l);
        float *z = d->z[l], *a = d->a[l];
        for (int blk = t; blk < nb; blk += team) {
            int j0, j1, nj = split_of(n_out, blk, nb, &j0, &j1);
            if (nj == 0)
                continue;
            if (b)
                for (int i = 0; i < batch; i++)
                    memcpy(z + (size_t)i * n_out + j0, b + j0, (size_t)nj * sizeof *z);
            gemm_ld(false, true, batch, nj, n_in, 1.0f, in, n_in,
                    w + m->p.t[d->wt[l]].off + (size_t)j0 * n_in, n_in, b ? 1.0f : 0.0f,
                    z + j0, n_out);
            if (l + 1 < d->n_layer)
                act_forward_block(d->act, a + j0, z + j0, batch, nj, n_out);
        }
        /* The next layer reads every column; after the last one, the region's end waits. */
        if (team > 1 && l + 1 < d->n_layer) {
#pragma omp barrier
        }
        in = a;
    }
}

static void dense_forward(struct model *m, const float *x, int batch, enum pass_mode mode)
{
    struct dense *d = m->priv;
    (void)mode;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch);
    int nb = pass_blocks(m, d, batch), team = pass_team(nb);
    if (team == 1) {
        forward_share(m, x, batch, 0, 1, nb);
        return;
    }
#pragma omp parallel num_threads(team)
    forward_share(m, x, batch, thread_id(), thread_count(), nb);
}

/* Team thread t's share of the backward pass (team threads, all calling it; nb blocks). */
static void backward_share(struct model *m, const float *x, const float *dout, int batch,
                           bool acc, int t, int team, int nb)
{
    struct dense *d = m->priv;
    const float *w = m->p.w;
    float *g = m->p.g;
    const float *dcur = dout;
    for (int l = d->n_layer - 1; l >= 0; l--) {
        int n_in = d->width[l], n_out = d->width[l + 1];
        const float *in = l > 0 ? d->a[l - 1] : x;
        float *dx = l > 0 ? (dcur == d->d0 ? d->d1 : d->d0) : NULL;
        for (int blk = t; blk < nb; blk += team) {
            int j0, j1, nj = split_of(n_out, blk, nb, &j0, &j1);
            if (nj == 0)
                continue;
            const float *wl = w + m->p.t[d->wt[l]].off + (size_t)j0 * n_in;
            /* Block 0's product goes straight to dx. */
            float *pt = blk == 0 ? dx : d->part[l & 1][blk];
            gemm_ld(true, false, nj, n_in, batch, 1.0f, dcur + j0, n_out, in, n_in,
                    acc ? 1.0f : 0.0f, g + m->p.t[d->wt[l]].off + (size_t)j0 * n_in, n_in);
            if (d->bt[l] >= 0)
                col_sums(g + m->p.t[d->bt[l]].off + j0, dcur + j0, batch, nj, n_out, acc);
            if (dx)
                gemm_ld(false, false, batch, n_in, nj, 1.0f, dcur + j0, n_out, wl, n_in, 0.0f,
                        pt, n_in);
        }
        if (!dx)
            break;
        if (team > 1) {
            /* Every partial (block 0's: dx itself) is complete; the buffers alternate by
             * layer, so the next layer's products never overwrite a set still being read. */
#pragma omp barrier
        }
        /* Blocks 0 .. np-1 own rows of this layer and wrote partials. */
        int rows = gemm_par_rows(n_out, nb), np = (n_out + rows - 1) / rows;
        float *const *pp = d->part[l & 1];
        /* The columns each block owns in the layer below: their partials are added in block
         * order, then the activation's gradient applied; the same thread reads them next. */
        for (int blk = t; blk < nb; blk += team) {
            int c0, c1;
            if (split_of(n_in, blk, nb, &c0, &c1) == 0)
                continue;
            if (np > 1)
                for (int i = 0; i < batch; i++) {
                    size_t o = (size_t)i * n_in;
                    for (int c = c0; c < c1; c++) {
                        float s = dx[o + c];
                        for (int k = 1; k < np; k++)
                            s += pp[k][o + c];
                        dx[o + c] = s;
                    }
                }
            act_backward_block(d->act, dx + c0, d->z[l - 1] + c0, d->a[l - 1] + c0, batch,
                               c1 - c0, n_in);
        }
        dcur = dx;
    }
}

static void dense_backward(struct model *m, const float *x, const float *dout, int batch,
                           bool acc)
{
    struct dense *d = m->priv;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch);
    int nb = pass_blocks(m, d, batch), team = pass_team(nb);
    if (team == 1) {
        backward_share(m, x, dout, batch, acc, 0, 1, nb);
        return;
    }
#pragma omp parallel num_threads(team)
    backward_share(m, x, dout, batch, acc, thread_id(), thread_count(), nb);
}

/* H v of sum_i loss->scale * loss_i, added into hv; see the R-operator equations at the top. */
static void dense_hvp(struct model *m, const float *x, int batch, const struct hvp_loss *loss,
                      const float *v, float *hv)
{
    struct dense *d = m->priv;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch);
    const float *w = m->p.w;
    dense_forward(m, x, batch, PASS_EVAL);
    /* Tangent forward pass: R{x} = 0, so the first layer has no Ra W^T term. */
    const float *in = x, *rin = NULL;
    for (int l = 0; l < d->n_layer; l++) {
        size_t wo = m->p.t[d->wt[l]].off;
        int n_in = d->width[l], n_out = d->width[l + 1];
        linear_forward(d->rz[l], in, v + wo, bias_of(m, d, v, l), batch, n_in, n_out);
        if (rin)
            gemm_par(false, true, batch, n_out, n_in, 1.0f, rin, w + wo, 1.0f, d->rz[l]);
        if (l + 1 < d->n_layer)
            act_backward(d->act, d->ra[l], d->rz[l], d->z[l], d->a[l], (size_t)batch * n_out,
                             false);
        in = d->a[l];
        rin = d->ra[l];
    }
    float *dcur = d->d0, *rcur = d->r0;
    hvp_loss_output(loss, m->out, d->rz[d->n_layer - 1], batch, m->n_out, dcur, rcur);
    /* Backward pass and its tangent, layer by layer from the top. */
    for (int l = d->n_layer - 1; l >= 0; l--) {
        size_t wo = m->p.t[d->wt[l]].off;
        int n_in = d->width[l], n_out = d->width[l + 1];
        const float *a_in = l > 0 ? d->a[l - 1] : x;
        float *hb = d->bt[l] >= 0 ? hv + m->p.t[d->bt[l]].off : NULL;
        /* R{dW} = Rd^T a_in (+ d^T Ra_in below), R{db} = column sums of Rd. */
        linear_backward(NULL, hv + wo, hb, rcur, a_in, w + wo, batch, n_in, n_out, true);
        if (l == 0)
            break;
        gemm_par(true, false, n_out, n_in, batch, 1.0f, dcur, d->ra[l - 1], 1.0f, hv + wo);
        float *dnext = dcur == d->d0 ? d->d1 : d->d0;
        float *rnext = rcur == d->r0 ? d->r1 : d->r0;
        gemm_par(false, false, batch, n_in, n_out, 1.0f, dcur, w + wo, 0.0f, dnext);
        gemm_par(false, false, batch, n_in, n_out, 1.0f, rcur, w + wo, 0.0f, rnext);
        gemm_par(false, false, batch, n_in, n_out, 1.0f, dcur, v + wo, 1.0f, rnext);
        act_rop(d->act, dnext, rnext, dnext, rnext, d->z[l - 1], d->a[l - 1], d->rz[l - 1],
                (size_t)batch * n_in, false);
        dcur = dnext;
        rcur = rnext;
    }
}

static void dense_release(struct model *m)
{
    struct dense *d = m->priv;
    if (!d)
        return;
    for (int l = 0; l < d->n_layer; l++) {
        if (d->a[l] != d->z[l])
            free(d->a[l]);
        free(d->z[l]);
        if (d->ra[l] != d->rz[l])
            free(d->ra[l]);
        free(d->rz[l]);
    }
    free(d->d0);
    free(d->d1);
    free(d->r0);
    free(d->r1);
    for (int k = 0; k < 2; k++)
        for (int t = 1; t < d->n_part; t++)
            free(d->part[k][t]);
    free(d);
    m->priv = NULL;
}

static int mlp_init(struct model *m, struct cfg_node *c, struct err *e)
{
    static const long def_hidden[] = {512, 512};
    long hidden[MAX_LAYERS];
    int n_hidden, act;
    bool bias;
    if (cfg_int_list(c, "hidden", def_hidden, 2, hidden, MAX_LAYERS - 1, &n_hidden, e) < 0 ||
        cfg_enum(c, "activation", act_names, ACT_RELU, &act, e) < 0 ||
        cfg_bool(c, "bias", true, &bias, e) < 0)
        return -1;
    struct cfg_node *hn = cfg_child(c, "hidden");
    if (n_hidden == 0)
        return cfg_err(e, hn, "'model.hidden' must list at least one width (use model 'linear' "
                              "for none)");
    for (int i = 0; i < n_hidden; i++)
        if (hidden[i] < 1 || hidden[i] > 1000000)
            return cfg_err(e, hn, "'model.hidden' widths must be between 1 and 1000000, got %ld",
                           hidden[i]);
    return dense_init(m, hidden, n_hidden, act, bias);
}

const struct model_ops model_mlp = {
    .name = "mlp",
    .summary = "multilayer perceptron, torch.nn.Sequential(Linear, Act, ..., Linear)",
    .keys = "hidden [[512, 512]]: widths of the hidden layers\n"
            "activation [relu]: relu | tanh | gelu (exact erf form)\n"
            "bias [true]: biases in every Linear layer\n",
    .init = mlp_init,
    .reset = dense_reset,
    .forward = dense_forward,
    .backward = dense_backward,
    .hvp = dense_hvp,
    .release = dense_release,
};

/* The linear model is the same stack with no hidden layer; its ops live here with the code. */
static int linear_init(struct model *m, struct cfg_node *c, struct err *e)
{
    bool bias;
    if (cfg_bool(c, "bias", true, &bias, e) < 0)
        return -1;
    return dense_init(m, NULL, 0, ACT_RELU, bias);
}

const struct model_ops model_linear = {
    .name = "linear",
    .summary = "softmax regression or least squares, torch.nn.Sequential(Linear)",
    .keys = "bias [true]: a bias term\n",
    .init = linear_init,
    .reset = dense_reset,
    .forward = dense_forward,
    .backward = dense_backward,
    .hvp = dense_hvp,
    .release = dense_release,
};
