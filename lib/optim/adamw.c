/* adamw: Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019, arXiv:1711.05101),
 * exactly as torch.optim.AdamW (amsgrad off):
 *     w = w * (1 - lr * weight_decay)
 *     m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2;   t = t + 1
 *     w = w - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * Keys (all schedulable): lr [0.001], beta1 [0.9], beta2 [0.999], eps [1e-8],
 * weight_decay [0.01].
 */
#include <math.h>

#include "optim.h"
#include "tune.h"

struct adamw {
    struct hparam *lr, *beta1, *beta2, *eps, *wd;
    double t; /* steps taken (checkpointed) */
    float *m, *v;
};

static int adamw_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct adamw *a = o->priv = xcalloc(1, sizeof *a);
    if (!(a->lr = optim_hparam(o, c, "lr", 0.001, 0, 1e6, e)) ||
        !(a->beta1 = optim_hparam(o, c, "beta1", 0.9, 0, 0.999999, e)) ||
        !(a->beta2 = optim_hparam(o, c, "beta2", 0.999, 0, 0.999999999, e)) ||
        !(a->eps = optim_hparam(o, c, "eps", 1e-8, 0, 1, e)) ||
        !(a->wd = optim_hparam(o, c, "weight_decay", 0.01, 0, 1e6, e)))
        return -1;
    a->m = optim_buf(o, "exp_avg");
    a->v = optim_buf(o, "exp_avg_sq");
    optim_state(o, "step", &a->t, 0, 0x1p53, true); /* steps taken */
    return 0;
}

static void adamw_apply(struct optim *o, struct params *p, const float *d)
{
    struct adamw *a = o->priv;
    size_t n = p->n;
    a->t += 1;
    double b1 = a->beta1->v, b2 = a->beta2->v;
    float lr = (float)a->lr->v, decay = (float)(1.0 - a->lr->v * a->wd->v);
    float step = (float)(a->lr->v / (1.0 - pow(b1, a->t)));
    float bc2 = (float)sqrt(1.0 - pow(b2, a->t)), eps = (float)a->eps->v;
    float fb1 = (float)b1, fb2 = (float)b2;
    float *w = p->w, *m = a->m, *v = a->v;
    (void)lr;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float g = d[i];
        w[i] *= decay;
        m[i] = fb1 * m[i] + (1 - fb1) * g;
        v[i] = fb2 * v[i] + (1 - fb2) * g * g;
        w[i] -= step * m[i] / (sqrtf(v[i]) / bc2 + eps);
    }
}

const struct optim_ops optim_adamw = {
    .name = "adamw",
    .summary = "Adam with decoupled weight decay (torch.optim.AdamW)",
    .paper = "Loshchilov & Hutter, ICLR 2019, arXiv:1711.05101",
    .keys = "lr [0.001]: learning rate\n"
            "beta1 [0.9]: first-moment decay\n"
            "beta2 [0.999]: second-moment decay\n"
            "eps [1e-8]: denominator term\n"
            "weight_decay [0.01]: decoupled decay, w *= 1 - lr * weight_decay\n",
    .init = adamw_init,
    .apply = adamw_apply,
};
