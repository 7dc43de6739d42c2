/* sgd: stochastic gradient descent with momentum, dampening, Nesterov and coupled weight decay,
 * exactly as torch.optim.SGD:
 *     d = g + weight_decay * w
 *     buf = d on the first step with momentum, else momentum * buf + (1 - dampening) * d
 *     d = nesterov ? d + momentum * buf : buf          (only when momentum != 0)
 *     w = w - lr * d
 * Keys (all schedulable): lr [0.1], momentum [0], dampening [0], weight_decay [0];
 * nesterov [false].
 */
#include <math.h>
#include <stdlib.h>

#include "blas.h"

#include "optim.h"

struct sgd {
    struct hparam *lr, *momentum, *dampening, *wd;
    bool nesterov;
    double started; /* 1 once the momentum buffer holds a value (checkpointed) */
    float *buf;
};

static int sgd_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct sgd *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->lr = optim_hparam(o, c, "lr", 0.1, 0, 1e6, e)) ||
        !(s->momentum = optim_hparam(o, c, "momentum", 0, 0, 1, e)) ||
        !(s->dampening = optim_hparam(o, c, "dampening", 0, 0, 1, e)) ||
        !(s->wd = optim_hparam(o, c, "weight_decay", 0, 0, 1e6, e)) ||
        cfg_bool(c, "nesterov", false, &s->nesterov, e) < 0)
        return -1;
    if (s->nesterov && (s->momentum->s.start <= 0 || s->dampening->s.start != 0))
        return cfg_err(e, cfg_child(c, "nesterov"),
                       "nesterov momentum requires momentum > 0 and zero dampening");
    s->buf = optim_buf(o, "momentum_buffer");
    optim_state(o, "momentum_started", &s->started, 0, 1, true);
    return 0;
}

/* One update: its case (one loop each, so no branch runs per element) and operands; with part,
 * also the chunk partials of ||d||^2 (d read once, chunk by chunk while it is in cache). */
enum sgd_kind { PLAIN, FIRST, FIRST_NESTEROV, NESTEROV, MOMENTUM };

struct sgd_args {
    enum sgd_kind kind;
    float lr, mu, damp, wd;
    float *w, *buf;
    const float *d;
    double *part;
};

/* restrict (d is a gradient buffer, never w or the momentum buffer) lets each loop vectorize. */
static void sgd_chunk(void *ctx, long c, size_t lo, size_t hi)
{
    const struct sgd_args *a = ctx;
    float lr = a->lr, mu = a->mu, damp = a->damp, wd = a->wd;
    float *restrict w = a->w, *restrict buf = a->buf;
    const float *restrict g = a->d;
    if (a->part)
        a->part[c] = vec_sumsq_part(g, lo, hi);
    switch (a->kind) {
    case PLAIN:
        for (size_t i = lo; i < hi; i++)
            w[i] -= lr * (g[i] + wd * w[i]);
        break;
    case FIRST:
        for (size_t i = lo; i < hi; i++) {
            float di = g[i] + wd * w[i];
            buf[i] = di;
            w[i] -= lr * di;
        }
        break;
    case FIRST_NESTEROV: /* buf = d, so d + mu * buf is d + mu * d */
        for (size_t i = lo; i < hi; i++) {
            float di = g[i] + wd * w[i];
            buf[i] = di;
            w[i] -= lr * (di + mu * di);
        }
        break;
    case NESTEROV:
        for (size_t i = lo; i < hi; i++) {
            float di = g[i] + wd * w[i];
            float b = mu * buf[i] + (1 - damp) * di;
            buf[i] = b;
            w[i] -= lr * (di + mu * b);
        }
        break;
    case MOMENTUM:
        for (size_t i = lo; i < hi; i++) {
            float b = mu * buf[i] + (1 - damp) * (g[i] + wd * w[i]);
            buf[i] = b;
            w[i] -= lr * b;
        }
        break;
    }
}

static void sgd_update(struct optim *o, struct params *p, const float *d, double *part)
{
    struct sgd *s = o->priv;
    SAMX_ASSERT(d != p->w && d != s->buf);
    struct sgd_args a = {.kind = PLAIN, .lr = (float)s->lr->v, .mu = (float)s->momentum->v,
                         .damp = (float)s->dampening->v, .wd = (float)s->wd->v, .w = p->w,
                         .buf = s->buf, .d = d, .part = part};
    if (a.mu != 0) {
        if (s->started == 0)
            a.kind = s->nesterov ? FIRST_NESTEROV : FIRST;
        else
            a.kind = s->nesterov ? NESTEROV : MOMENTUM;
        s->started = 1;
    }
    params_for_chunks(p, sgd_chunk, &a);
}

static void sgd_apply(struct optim *o, struct params *p, const float *d)
{
    sgd_update(o, p, d, NULL);
}

static double sgd_apply_norm(struct optim *o, struct params *p, const float *d)
{
    double part[VEC_MAX_CHUNKS];
    sgd_update(o, p, d, part);
    return sqrt(vec_parts_sum(part, vec_chunks(p->n, &(size_t){0})));
}

const struct optim_ops optim_sgd = {
    .name = "sgd",
    .summary = "SGD with momentum, dampening, Nesterov and coupled weight decay (torch.optim.SGD)",
    .paper = "Robbins & Monro 1951; Polyak 1964; Sutskever et al., ICML 2013 (PyTorch semantics)",
    .keys = "lr [0.1]: learning rate\n"
            "momentum [0]: momentum factor\n"
            "dampening [0]: dampening of the momentum buffer\n"
            "nesterov [false]: Nesterov momentum\n"
            "weight_decay [0]: coupled L2, added to the gradient at the unperturbed weights\n",
    .init = sgd_init,
    .apply = sgd_apply,
    .apply_norm = sgd_apply_norm,
};
