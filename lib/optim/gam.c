/* gam: gradient norm aware minimization (Zhang, Xu, Yu, Zou, Cui, CVPR 2023, arXiv:2303.03108),
 * the first-order ("accelerated") form the authors release (xxgege/GAM gam/gam.py, algorithms.md
 * 7.6), four gradient evaluations per step, every point formed from the saved w:
 *     g0 = grad L_B(w)                                        (pass 1, running stats updated)
 *     g1 = grad L_B(w + rho g0/(||g0|| + eps))                (pass 2)
 *     u  = g1 - g0  (~ rho H g0/||g0||, the ascent direction of ||grad L||)
 *     w2 = w + rho_norm u/(||u|| + eps);  g2 = grad L_B(w2)    (pass 3)
 *     g3 = grad L_B(w2 + rho g2/(||g2|| + eps))               (pass 4)
 *     r  = g0 + |1 - beta| g2;  d = alpha g1 + (1 - alpha) g3
 *     c  = <r, d> / (||d|| ||r|| + eps)
 *     d  = d - gamma (r - c ||r|| d/(||d|| + eps))            (GSAM-style correction)
 *     w  = saved w (copy); base step along d
 * Names: rho = the code's grad_rho (the paper's rho'), rho_norm = grad_norm_rho (rho),
 * alpha = grad_beta_1 (g3 weight grad_beta_3 = 1 - alpha), beta = grad_beta_0 (the g2 weight in r
 * is the code's abs(grad_beta_2), grad_beta_2 = 1 - beta), gamma = grad_gamma, eps = perturb_eps
 * 1e-12. The code subtracts perturbations to go back; samx copies w back.
 * adaptive: true (the code's adaptive flag): every ascent is rho t^2 x/(||t x|| + eps) with t = |w|
 * at the point it starts from (w for the first two, w2 for the last).
 * gamma = 0 and alpha = 1 is SAM with radius rho, bit for bit (at four evaluations a step).
 * m > 0 is rejected (the reference has no per-group form).
 * Defaults: the code's CIFAR-100 ResNet values, rho_norm [0.2], rho [0.02], beta [0.5],
 * alpha [0.6], gamma [0.03] (CIFAR-10 ResNet: 0.2, 0.03, 0.1, 0.1, 0.05); adaptive [false],
 * perturb [all], base [sgd]. All scalars but adaptive are schedulable.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"
#include "tune.h"

struct gam {
    struct hparam *rho, *rho_norm, *alpha, *beta, *gamma;
    bool adaptive;
    float *saved, *e, *g0, *g1, *g2, *d;
};

static int gam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct gam *s = o->priv = xcalloc(1, sizeof *s);
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"),
                       "'gam' does not support m-sharpness (m > 0); use m: 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.02, 0, 1e6, e)) ||
        !(s->rho_norm = optim_hparam(o, c, "rho_norm", 0.2, 0, 1e6, e)) ||
        !(s->beta = optim_hparam(o, c, "beta", 0.5, -1e6, 1e6, e)) ||
        !(s->alpha = optim_hparam(o, c, "alpha", 0.6, -1e6, 1e6, e)) ||
        !(s->gamma = optim_hparam(o, c, "gamma", 0.03, -1e6, 1e6, e)) ||
        cfg_bool(c, "adaptive", false, &s->adaptive, e) < 0)
        return -1;
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    s->g0 = optim_scratch(o);
    s->g1 = optim_scratch(o);
    s->g2 = optim_scratch(o);
    s->d = optim_scratch(o);
    return 0;
}

static void gam_step(struct optim *o, struct params *p, struct closure *f, struct step_info *info)
{
    struct gam *s = o->priv;
    size_t n = p->n;
    const double eps = 1e-12;
    params_copy(p, p->w, s->saved);
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    info->grad_norm = params_nrm2(p, p->g);
    params_copy(p, p->g, s->g0);
    /* pass 2 at w + rho g0/||g0|| */
    optim_ascent(o, p, s->g0, s->rho->v, eps, s->adaptive, s->e);
    vec_axpy(n, 1.0f, s->e, p->w);
    info->loss_perturbed = closure_grad(f, p, PASS_EXTRA, NULL, 0);
    params_copy(p, p->g, s->g1);
    params_copy(p, s->saved, p->w);
    /* pass 3 at w2 = w + rho_norm u/||u||, u = g1 - g0 (d holds u) */
    vec_copy(n, s->g1, s->d);
    vec_axpy(n, -1.0f, s->g0, s->d);
    optim_ascent(o, p, s->d, s->rho_norm->v, eps, s->adaptive, s->e);
    vec_axpy(n, 1.0f, s->e, p->w);
    closure_grad(f, p, PASS_EXTRA, NULL, 0);
    params_copy(p, p->g, s->g2);
    /* pass 4 at w2 + rho g2/||g2|| (adaptive: scaled by |w2|) */
    optim_ascent(o, p, s->g2, s->rho->v, eps, s->adaptive, s->e);
    vec_axpy(n, 1.0f, s->e, p->w);
    closure_grad(f, p, PASS_EXTRA, NULL, 0);
    params_copy(p, s->saved, p->w);
    /* r = g0 + |1 - beta| g2 (in g0);  d = alpha g1 + (1 - alpha) g3 */
    float b2 = (float)fabs(1 - s->beta->v), a1 = (float)s->alpha->v,
          a3 = (float)(1 - s->alpha->v), gamma = (float)s->gamma->v;
    float *r = s->g0, *d = s->d;
    const float *g1 = s->g1, *g2 = s->g2, *g3 = p->g;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        r[i] = r[i] + b2 * g2[i];
        d[i] = a1 * g1[i] + a3 * g3[i];
    }
    double nd = vec_nrm2(n, d), nr = vec_nrm2(n, r);
    double cosine = vec_dot(n, r, d) / (nd * nr + eps);
    float k = (float)(cosine * nr / (nd + eps));
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        d[i] = d[i] - gamma * (r[i] - k * d[i]);
    o->base->ops->apply(o->base, p, d);
}

const struct optim_ops optim_gam = {
    .name = "gam",
    .summary = "gradient-norm aware minimization: SAM gradients at w and at a point up the "
               "gradient norm, with a GSAM-style correction; 4 passes per step",
    .paper = "Zhang et al., CVPR 2023, arXiv:2303.03108 (rule of the authors' xxgege/GAM "
             "gam/gam.py)",
    .keys = "rho [0.02]: SAM radius of passes 2 and 4 (the code's grad_rho, the paper's rho')\n"
            "rho_norm [0.2]: step up the gradient norm to w2 (grad_norm_rho)\n"
            "alpha [0.6]: weight of g1, 1 - alpha of g3 (grad_beta_1)\n"
            "beta [0.5]: the reference r = g0 + |1 - beta| g2 (grad_beta_0)\n"
            "gamma [0.03]: weight of the correction orthogonal to d (grad_gamma)\n"
            "adaptive [false]: every ascent scaled by w^2 (norm of |w| x)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = gam_init,
    .step = gam_step,
};
