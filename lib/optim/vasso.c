/* vasso: variance-suppressed sharpness-aware optimization (Li & Giannakis, NeurIPS 2023,
 * arXiv:2309.14097). The ascent direction is a running average of the gradients, which
 * suppresses the variance of the stochastic perturbation. As the authors' solver/vasso.py
 * computes it (algorithms.md 7.3), with its own delta = 1e-7:
 *     g = grad L_B(w)
 *     d = g on the first step, else (1 - theta) d + theta g    (theta weights the NEW gradient)
 *     e = rho d / (||d|| + 1e-7);  gs = grad L_B(w + e);  w = saved w (copy)
 *     base step along gs
 * d persists across steps (checkpointed as "ema"). theta = 1 is SAM apart from delta; with
 * perturb_eps = 1e-12 it is SAM bit for bit.
 * m > 0 is rejected: d is one running average of whole-batch gradients across steps, and the
 * reference has no per-group counterpart of it.
 * Keys: rho [0.05], theta [0.9], perturb_eps [1e-7], base [sgd]; all three are schedulable.
 */
#include "blas.h"
#include "optim.h"

struct vasso {
    struct hparam *rho, *theta, *eps;
    double started; /* 1 once d holds a gradient (checkpointed) */
    float *d, *saved, *e;
};

static int vasso_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct vasso *s = o->priv = xcalloc(1, sizeof *s);
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"),
                       "'vasso' does not support m-sharpness (m > 0): its ascent direction is "
                       "one running average of whole-batch gradients; use m: 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        !(s->theta = optim_hparam(o, c, "theta", 0.9, 0, 1, e)) ||
        !(s->eps = optim_hparam(o, c, "perturb_eps", 1e-7, 0, 1, e)))
        return -1;
    s->d = optim_buf(o, "ema");
    optim_state(o, "ema_started", &s->started, 0, 1, true);
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    return 0;
}

static void vasso_step(struct optim *o, struct params *p, struct closure *f,
                       struct step_info *info)
{
    struct vasso *s = o->priv;
    size_t n = p->n;
    vec_copy(n, p->w, s->saved);
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    info->grad_norm = vec_nrm2(n, p->g);
    if (s->started == 0)
        vec_copy(n, p->g, s->d);
    else
        vec_axpby(n, (float)s->theta->v, p->g, (float)(1 - s->theta->v), s->d);
    s->started = 1;
    optim_ascent(o, p, s->d, s->rho->v, s->eps->v, false, s->e);
    vec_axpy(n, 1.0f, s->e, p->w);
    info->loss_perturbed = closure_grad(f, p, PASS_EXTRA, NULL, 0);
    vec_copy(n, s->saved, p->w);
    o->base->ops->apply(o->base, p, p->g);
}

const struct optim_ops optim_vasso = {
    .name = "vasso",
    .summary = "variance-suppressed SAM: perturb along a running average of gradients",
    .paper = "Li & Giannakis, NeurIPS 2023, arXiv:2309.14097 (rule of solver/vasso.py)",
    .keys = "rho [0.05]: perturbation radius\n"
            "theta [0.9]: weight of the new gradient in d = (1-theta) d + theta g; 1 = SAM\n"
            "perturb_eps [1e-7]: delta in ||d|| + delta (VaSSO's; SAM uses 1e-12)\n"
            "m: must be 0 (m-sharpness is not supported)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = vasso_init,
    .step = vasso_step,
};
