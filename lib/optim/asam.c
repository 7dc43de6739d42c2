/* asam: adaptive sharpness-aware minimization (Kwon et al., ICML 2021, arXiv:2102.11600).
 * SAM in the ball ||T_w^-1 e|| <= rho of a weight-scaled norm, T_w = diag(t), so the radius is
 * relative to the size of each weight (algorithms.md 2.2):
 *     g = grad L_B(w);   e = rho * t^2 g / (||t g|| + delta);   gs = grad L_B(w + e)
 *     w = saved w (copy), then the base optimizer steps along gs
 * Two scalings, both as their reference code computes them:
 *   scale: weights (official ASAM asam.py): t = |w| + eta on tensors whose name contains
 *          "weight", t = 1 on biases; delta = 1e-16 (added after the norm); eta [0.01];
 *   scale: all (davda54 sam.py adaptive=True, also atorch WSAM and GSAM): t = |w| + eta on every
 *          tensor with eta [0], delta = 1e-12 (SAM's). With |w| = 1 and eta = 0 this is SAM
 *          bit for bit.
 * perturb_eps overrides delta. m > 0 gives each group of m examples its own e (m-sharpness).
 * Keys: rho [0.5], scale [weights], eta [0.01 for weights, 0 for all], perturb_eps [1e-16 for
 * weights, 1e-12 for all], m [0], base [sgd]. rho, eta, perturb_eps are schedulable.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"

enum { ASAM_WEIGHTS, ASAM_ALL };
static const char *const asam_scales[] = {"weights", "all", NULL};

struct asam {
    struct hparam *rho, *eta, *eps;
    int scale;
    float *saved, *e, *g, *gs;
};

static int asam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct asam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.5, 0, 1e6, e)) ||
        cfg_enum(c, "scale", asam_scales, ASAM_WEIGHTS, &s->scale, e) < 0)
        return -1;
    bool all = s->scale == ASAM_ALL;
    if (!(s->eta = optim_hparam(o, c, "eta", all ? 0.0 : 0.01, 0, 1e6, e)) ||
        !(s->eps = optim_hparam(o, c, "perturb_eps", all ? 1e-12 : 1e-16, 0, 1, e)))
        return -1;
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    /* the clean and perturbed gradient sums only with m-sharpness (as SAM) */
    if (!optim_one_group(o, o->env.max_batch)) {
        s->g = optim_scratch(o);
        s->gs = optim_scratch(o);
    }
    return 0;
}

/* e = rho t^2 g / (||t g|| + delta), with t per tensor as the scale mode says. e holds t g
 * first, so the norm needs no extra buffer. */
static float asam_perturb(struct optim *o, const struct params *p, const float *g, double gnorm,
                          float *e)
{
    struct asam *s = o->priv;
    float eta = (float)s->eta->v;
    const float *w = p->w;
    vec_zero(p->n, e); /* the padding between tensors stays 0 */
    for (int k = 0; k < p->nt; k++) {
        const struct tensor *t = &p->t[k];
        bool scaled = s->scale == ASAM_ALL || t->is_weight;
        for (size_t i = t->off; i < t->off + t->n; i++)
            e[i] = scaled ? (fabsf(w[i]) + eta) * g[i] : g[i];
    }
    optim_perturb_filter(o, p, e); /* optimizer.perturb: the ball of the selected tensors */
    double norm = vec_nrm2(p->n, e);
    if (norm == 0 || s->rho->v == 0) {
        vec_zero(p->n, e);
        return PERTURB_IN_E;
    }
    float f = (float)(s->rho->v / (norm + s->eps->v));
    for (int k = 0; k < p->nt; k++) {
        const struct tensor *t = &p->t[k];
        bool scaled = s->scale == ASAM_ALL || t->is_weight;
        /* f * (t * (t g)) rather than f * t^2 * g: with t = 1 it is f * g exactly, as in SAM. */
        for (size_t i = t->off; i < t->off + t->n; i++)
            e[i] = scaled ? f * ((fabsf(w[i]) + eta) * e[i]) : f * e[i];
    }
    return PERTURB_IN_E;
}

static void asam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct asam *s = o->priv;
    static const float plus[] = {1.0f};
    static const int pass[] = {PASS_EXTRA};
    /* One group: only ||g|| is needed and gs is applied where the closure left it. */
    bool one_group = optim_one_group(o, f->batch);
    float *gs = one_group ? p->g : s->gs;
    sam_family_passes(o, p, f, asam_perturb, plus, pass, 1, one_group ? NULL : s->g, &gs,
                      s->saved, s->e, info);
    o->base->ops->apply(o->base, p, gs);
}

const struct optim_ops optim_asam = {
    .name = "asam",
    .summary = "adaptive SAM: the perturbation ball is scaled by |w| (+eta), e = rho t^2 g/||t g||",
    .paper = "Kwon et al., ICML 2021, arXiv:2102.11600",
    .keys = "rho [0.5]: radius of the scaled ball (ASAM's rho is ~10x SAM's)\n"
            "scale [weights]: weights = official ASAM, t = |w|+eta on weight tensors, 1 on "
            "biases; all = |w|+eta on every tensor (davda54 adaptive SAM when eta = 0)\n"
            "eta [0.01 for weights, 0 for all]: added to |w| in t\n"
            "perturb_eps [1e-16 for weights, 1e-12 for all]: delta in ||t g|| + delta\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = asam_init,
    .step = asam_step,
};
