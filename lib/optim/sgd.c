/* sgd: stochastic gradient descent with momentum, dampening, Nesterov and coupled weight decay,
 * exactly as torch.optim.SGD:
 *     d = g + weight_decay * w
 *     buf = d on the first step with momentum, else momentum * buf + (1 - dampening) * d
 *     d = nesterov ? d + momentum * buf : buf          (only when momentum != 0)
 *     w = w - lr * d
 * Keys (all schedulable): lr [0.1], momentum [0], dampening [0], weight_decay [0];
 * nesterov [false].
 */
#include <stdlib.h>

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
    optim_state(o, "momentum_started", &s->started);
    return 0;
}

static void sgd_apply(struct optim *o, struct params *p, const float *d)
{
    struct sgd *s = o->priv;
    size_t n = p->n;
    float lr = (float)s->lr->v, mu = (float)s->momentum->v, damp = (float)s->dampening->v;
    float wd = (float)s->wd->v;
    /* d is a gradient buffer, never w or the momentum buffer: restrict lets the loops vectorize,
     * and one loop per case keeps the branches out of them. */
    float *restrict w = p->w, *restrict buf = s->buf;
    const float *restrict g = d;
    SAMX_ASSERT(d != p->w && d != s->buf);
    if (mu == 0) {
#pragma omp parallel for schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++)
            w[i] -= lr * (g[i] + wd * w[i]);
        return;
    }
    bool first = s->started == 0, nesterov = s->nesterov;
    s->started = 1;
    if (first) {
#pragma omp parallel for schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) {
            float di = g[i] + wd * w[i];
            buf[i] = di;
            w[i] -= lr * (nesterov ? di + mu * di : di);
        }
    } else if (nesterov) {
#pragma omp parallel for schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) {
            float di = g[i] + wd * w[i];
            float b = mu * buf[i] + (1 - damp) * di;
            buf[i] = b;
            w[i] -= lr * (di + mu * b);
        }
    } else {
#pragma omp parallel for schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) {
            float b = mu * buf[i] + (1 - damp) * (g[i] + wd * w[i]);
            buf[i] = b;
            w[i] -= lr * b;
        }
    }
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
};
