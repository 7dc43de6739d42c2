/* crsam: curvature-regularized SAM (Wu, Luo, Wunsch, AAAI 2024, arXiv:2312.13555).
 * Three gradient evaluations on the same batch, as the authors' utils/crsam.py computes them
 * (algorithms.md 4.2):
 *     g  = grad L_B(w);  e = rho g / (||g|| + 1e-12)
 *     gp = grad L_B(w + e)   (running statistics frozen)
 *     gm = grad L_B(w - e)   (PASS_REF_UPDATE: the reference updated running statistics here)
 *     w = saved w (copy);  base step along d = gp + gamma (gp + gm - 2 g) + beta (gp - gm)
 * Meaning (algorithms.md 4.3, derived): gp + gm - 2g ~ rho^2 grad(v^T H v) with the probe
 * v = g/||g|| frozen, and gp - gm ~ 2 rho H v = 2 rho grad ||grad L||, so d is to leading order
 * the gradient of L_SAM + gamma rho^2 v^T H v + 2 beta rho ||grad L||: SAM plus a curvature
 * penalty along the gradient plus a gradient-norm penalty. gamma = beta = 0 is SAM. The paper's
 * own "normalized Hessian trace" definition is not known here (algorithms.md 13.2); this is the
 * code's rule. m > 0: each group of m examples gets its own e and its own three passes.
 * Keys: rho [0.1], gamma [0.1], beta [0.01] (crsam_train.py; the class default is 0.1), m [0],
 * base [sgd]. All three scalars are schedulable.
 */
#include "blas.h"
#include "optim.h"

struct crsam {
    struct hparam *rho, *gamma, *beta;
    float *saved, *e, *g, *gp, *gm;
};

static int crsam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct crsam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.1, 0, 1e6, e)) ||
        !(s->gamma = optim_hparam(o, c, "gamma", 0.1, -1e6, 1e6, e)) ||
        !(s->beta = optim_hparam(o, c, "beta", 0.01, -1e6, 1e6, e)))
        return -1;
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    s->g = optim_scratch(o);
    s->gp = optim_scratch(o);
    /* With one group (every batch, as a plain run) the gradient at w - e stays in p->g. */
    if (!optim_one_group(o, o->env.max_batch))
        s->gm = optim_scratch(o);
    return 0;
}

static float crsam_perturb(struct optim *o, const struct params *p, const float *g,
                         double gnorm, float *e)
{
    struct crsam *s = o->priv;
    return sam_scale(gnorm, s->rho->v, 1e-12);
}

struct combine_args {
    float gamma, beta;
    float *gp;
    const float *gm, *g;
};

/* gp = gp + gamma (gp + gm - 2 g) + beta (gp - gm) on one chunk, in the reference's order. */
static void combine_chunk(void *ctx, long c, size_t lo, size_t hi)
{
    const struct combine_args *a = ctx;
    float gamma = a->gamma, beta = a->beta;
    float *restrict gp = a->gp;
    const float *restrict gm = a->gm, *restrict g = a->g;
    for (size_t i = lo; i < hi; i++)
        gp[i] = gp[i] + gamma * (gp[i] + gm[i] - 2 * g[i]) + beta * (gp[i] - gm[i]);
}

static void crsam_step(struct optim *o, struct params *p, struct closure *f,
                       struct step_info *info)
{
    struct crsam *s = o->priv;
    static const float signs[] = {1.0f, -1.0f};
    static const int pass[] = {PASS_EXTRA, PASS_REF_UPDATE};
    /* One group: the gradient at w - e stays in p->g, where the closure wrote it. */
    bool one_group = optim_one_group(o, f->batch);
    float *gs[] = {s->gp, one_group ? p->g : s->gm};
    sam_family_passes(o, p, f, crsam_perturb, signs, pass, 2, s->g, gs, s->saved, s->e, info);
    struct combine_args a = {.gamma = (float)s->gamma->v, .beta = (float)s->beta->v,
                             .gp = s->gp, .gm = gs[1], .g = s->g};
    params_for_chunks(p, combine_chunk, &a);
    o->base->ops->apply(o->base, p, s->gp);
}

const struct optim_ops optim_crsam = {
    .name = "crsam",
    .summary = "curvature-regularized SAM: three passes at w, w+e, w-e; SAM + finite-difference "
               "curvature and gradient-norm terms",
    .paper = "Wu, Luo, Wunsch, AAAI 2024, arXiv:2312.13555 (rule of the authors' utils/crsam.py)",
    .keys = "rho [0.1]: step along g/||g|| for the three points\n"
            "gamma [0.1]: weight of gp + gm - 2g (curvature along g, ~ rho^2 grad v^T H v)\n"
            "beta [0.01]: weight of gp - gm (~ 2 rho grad ||grad L||); crsam_train.py's value\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = crsam_init,
    .step = crsam_step,
};
