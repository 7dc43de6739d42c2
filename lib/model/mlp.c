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
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "blas.h"
#include "model.h"
#include "nn.h"
#include "rng.h"

#define MAX_LAYERS 32

struct dense {
    int n_layer;
    int width[MAX_LAYERS + 1];   /* width[0] = n_in, width[n_layer] = n_out */
    int wt[MAX_LAYERS], bt[MAX_LAYERS]; /* tensor index of each layer's weight, bias (-1) */
    enum act act;
    float *z[MAX_LAYERS];  /* (max_batch, width[l+1]) pre-activations of layer l */
    float *a[MAX_LAYERS];  /* (max_batch, width[l+1]) activations (a[n_layer-1] == m->out) */
    float *d0, *d1;        /* (max_batch, max width) back-propagation ping-pong buffers */
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
    }
    for (int l = 0; l <= d->n_layer; l++)
        max_w = d->width[l] > max_w ? d->width[l] : max_w;
    d->d0 = xfloats((size_t)m->max_batch * max_w);
    d->d1 = xfloats((size_t)m->max_batch * max_w);
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

static void dense_forward(struct model *m, const float *x, int batch, enum pass_mode mode)
{
    struct dense *d = m->priv;
    (void)mode;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch);
    const float *in = x;
    for (int l = 0; l < d->n_layer; l++) {
        linear_forward(d->z[l], in, m->p.w + m->p.t[d->wt[l]].off, bias_of(m, d, m->p.w, l),
                       batch, d->width[l], d->width[l + 1]);
        if (l + 1 < d->n_layer)
            act_forward(d->act, d->a[l], d->z[l], (size_t)batch * d->width[l + 1]);
        in = d->a[l];
    }
}

static void dense_backward(struct model *m, const float *x, const float *dout, int batch)
{
    struct dense *d = m->priv;
    SAMX_ASSERT(batch > 0 && batch <= m->max_batch);
    const float *dcur = dout;
    for (int l = d->n_layer - 1; l >= 0; l--) {
        const float *in = l > 0 ? d->a[l - 1] : x;
        float *dx = l > 0 ? (dcur == d->d0 ? d->d1 : d->d0) : NULL;
        float *db = d->bt[l] >= 0 ? m->p.g + m->p.t[d->bt[l]].off : NULL;
        linear_backward(dx, m->p.g + m->p.t[d->wt[l]].off, db, dcur, in,
                        m->p.w + m->p.t[d->wt[l]].off, batch, d->width[l], d->width[l + 1]);
        if (l > 0) {
            act_backward(d->act, dx, dx, d->z[l - 1], d->a[l - 1],
                         (size_t)batch * d->width[l]);
            dcur = dx;
        }
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
    }
    free(d->d0);
    free(d->d1);
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
    .release = dense_release,
};
