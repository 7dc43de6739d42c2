/* looksam: LookSAM, SAM's extra pass only every k steps (Liu et al., CVPR 2022, arXiv:2203.02714).
 * The paper's code is not public; this follows the unofficial rollovd/LookSAM looksam.py
 * (algorithms.md 7.4), which works PER PARAMETER TENSOR, with its delta = 1e-8:
 *   steps t with t % k == 0 (t = the global step, so the first step is one), a SAM step:
 *     g = grad L_B(w);  e = rho g / (||g|| + 1e-8);  gs = grad L_B(w + e);  w = saved (copy)
 *     per tensor:  gv = gs - (<g, gs> / ||g||^2) g    (the part of gs orthogonal to g; kept)
 *     base step along gs
 *   other steps, one pass:
 *     g = grad L_B(w);  per tensor:  d = g + alpha (||g|| / (||gv|| + 1e-8)) gv;  base step along d
 * Cost: 1 + 1/k gradient evaluations per step on average. rollovd counts t per epoch and restores
 * the weights of the last SAM step on the cheap steps; samx uses the global step and does not
 * copy that restore (it would undo every cheap step). gv is checkpointed. The cheap steps measure
 * no perturbed loss and report NaN, so the epoch's sharpness_1step averages the SAM steps only.
 * m > 0 is rejected: gv is reused across steps for the whole-batch gradient, and there is no
 * per-group counterpart in the reference.
 * Keys: rho [0.1], k [10], alpha [0.7] (docstring defaults; the paper's own values are not
 * verified, algorithms.md 13.6), perturb_eps [1e-8], base [sgd]; rho, alpha, perturb_eps are
 * schedulable, k is an integer.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"

struct looksam {
    struct hparam *rho, *alpha, *eps;
    long k;
    float *gv, *saved, *e, *g, *d;
};

static int looksam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct looksam *s = o->priv = xcalloc(1, sizeof *s);
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"),
                       "'looksam' does not support m-sharpness (m > 0): its stored direction gv "
                       "is reused for the whole-batch gradient; use m: 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.1, 0, 1e6, e)) ||
        cfg_int(c, "k", 10, &s->k, e) < 0 ||
        !(s->alpha = optim_hparam(o, c, "alpha", 0.7, -1e6, 1e6, e)) ||
        !(s->eps = optim_hparam(o, c, "perturb_eps", 1e-8, 0, 1, e)))
        return -1;
    if (s->k < 1)
        return cfg_err(e, cfg_child(c, "k"), "'k' must be >= 1 (steps between SAM steps)");
    s->gv = optim_buf(o, "gv");
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    s->g = optim_scratch(o);
    s->d = optim_scratch(o);
    return 0;
}

/* gv = gs - (<g, gs> / ||g||^2) g on each tensor (gv = gs where g is zero). */
static void looksam_orthogonal(const struct params *p, const float *g, const float *gs,
                               float *gv)
{
    for (int k = 0; k < p->nt; k++) {
        size_t off = p->t[k].off, n = p->t[k].n;
        double ng = vec_nrm2(n, g + off);
        float coef = ng > 0 ? (float)(vec_dot(n, g + off, gs + off) / (ng * ng)) : 0.0f;
        for (size_t i = off; i < off + n; i++)
            gv[i] = gs[i] - coef * g[i];
    }
}

static void looksam_step(struct optim *o, struct params *p, struct closure *f,
                         struct step_info *info)
{
    struct looksam *s = o->priv;
    size_t n = p->n;
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    info->grad_norm = vec_nrm2(n, p->g);
    if (o->t % s->k == 0) {
        vec_copy(n, p->w, s->saved);
        vec_copy(n, p->g, s->g);
        optim_ascent(o, p, s->g, s->rho->v, s->eps->v, false, s->e);
        vec_axpy(n, 1.0f, s->e, p->w);
        info->loss_perturbed = closure_grad(f, p, PASS_EXTRA, NULL, 0);
        vec_copy(n, s->saved, p->w);
        looksam_orthogonal(p, s->g, p->g, s->gv);
        o->base->ops->apply(o->base, p, p->g);
        return;
    }
    float alpha = (float)s->alpha->v;
    for (int k = 0; k < p->nt; k++) {
        size_t off = p->t[k].off, tn = p->t[k].n;
        float c = alpha * (float)(vec_nrm2(tn, p->g + off) /
                                  (vec_nrm2(tn, s->gv + off) + s->eps->v));
        for (size_t i = off; i < off + tn; i++)
            s->d[i] = p->g[i] + c * s->gv[i];
    }
    o->base->ops->apply(o->base, p, s->d);
}

const struct optim_ops optim_looksam = {
    .name = "looksam",
    .summary = "LookSAM: a SAM step every k steps, reusing the orthogonal part gv of its "
               "gradient in between (1 + 1/k passes per step)",
    .paper = "Liu et al., CVPR 2022, arXiv:2203.02714 (rule of the unofficial rollovd/LookSAM)",
    .keys = "rho [0.1]: perturbation radius on the SAM steps\n"
            "k [10]: a SAM step every k steps (global step % k == 0)\n"
            "alpha [0.7]: weight of gv on the other steps, per tensor "
            "d = g + alpha ||g||/||gv|| gv\n"
            "perturb_eps [1e-8]: delta in the two denominators (rollovd's)\n"
            "m: must be 0 (m-sharpness is not supported)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = looksam_init,
    .step = looksam_step,
};
