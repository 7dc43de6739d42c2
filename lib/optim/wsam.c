/* wsam: weighted sharpness as a regularizer (Yue et al., KDD 2023, arXiv:2305.15817).
 * Minimizes L + alpha * S_rho with alpha = gamma / (1 - gamma), S_rho = max L(w + e) - L(w), whose
 * gradient is approximately g + alpha (gs - g). As atorch's wsam.py computes it (algorithms.md
 * 3.2):
 *     g  = grad L_B(w);  e = rho g / (||g|| + 1e-12)  (from g BEFORE clipping)
 *     gs = grad L_B(w + e);  w = saved w (copy)
 *     if max_norm: clip g and gs SEPARATELY to global norm max_norm (torch clip_grad_norm_)
 *     coupled   (decouple: false): base step along (1 - alpha) g + alpha gs
 *     decoupled (decouple: true, "as used in the paper"): base step along g, then
 *               w -= lr * alpha * (gs - g), a plain step that bypasses momentum and weight
 *               decay and uses the base's lr of this step (after the schedule)
 * gamma = 0.5 coupled is SAM; gamma = 0 decoupled is the base optimizer; decoupled gamma = 0.5
 * is NOT SAM when the base has momentum. m > 0: each group of m examples gets its own e, and g,
 * gs are the averages over groups before clipping (atorch all-reduces g after forming e).
 * adaptive: true (atorch's adaptive=True): e = rho w^2 g / (|| |w| g || + 1e-12), every tensor.
 * Keys: rho [0.05], gamma [0.9] (in [0, 1)), decouple [true], max_norm [none], adaptive
 * [false], perturb [all], m [0],
 * base [sgd]. rho, gamma and max_norm (when given) are schedulable. Defaults: the final atorch
 * version (gamma 0.9, no clipping); older mirrors carry gamma 0.88 and max_norm 1.0.
 */
#include "blas.h"
#include "optim.h"
#include "tune.h"

struct wsam {
    struct hparam *rho, *gamma, *max_norm, *lr;
    bool decouple, adaptive;
    float *saved, *g, *gs, *e;
};

static int wsam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct wsam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        !(s->gamma = optim_hparam(o, c, "gamma", 0.9, 0, 0.999999, e)) ||
        cfg_bool(c, "decouple", true, &s->decouple, e) < 0)
        return -1;
    /* Read when given, so the configs (and run ids) of earlier runs are unchanged. */
    if (cfg_child(c, "adaptive") && cfg_bool(c, "adaptive", false, &s->adaptive, e) < 0)
        return -1;
    /* max_norm is optional: absent or null means no clipping; a number or schedule clips. */
    struct cfg_node *mn = cfg_child(c, "max_norm");
    if (mn && mn->type != CFG_NULL) {
        if (!(s->max_norm = optim_hparam(o, c, "max_norm", 1.0, 1e-12, 1e12, e)))
            return -1;
    } else {
        double unused;
        bool present;
        if (cfg_num_opt(c, "max_norm", &unused, &present, e) < 0)
            return -1;
    }
    s->lr = optim_hparam_find(o->base, "lr");
    SAMX_ASSERT(s->lr);
    s->saved = optim_scratch(o);
    s->g = optim_scratch(o); /* e only when adaptive; otherwise a scale of g, never formed */
    s->gs = optim_scratch(o);
    if (s->adaptive)
        s->e = optim_scratch(o);
    return 0;
}

static float wsam_perturb(struct optim *o, const struct params *p, const float *g,
                         double gnorm, float *e)
{
    struct wsam *s = o->priv;
    if (s->adaptive) {
        optim_ascent(o, p, g, s->rho->v, 1e-12, true, e);
        return PERTURB_IN_E;
    }
    return sam_scale(gnorm, s->rho->v, 1e-12);
}

/* torch.nn.utils.clip_grad_norm_: x *= max_norm / (||x|| + 1e-6) when that is below 1. */
static void wsam_clip(size_t n, float *x, double max_norm)
{
    double coef = max_norm / (vec_nrm2(n, x) + 1e-6);
    if (coef < 1)
        vec_scal(n, (float)coef, x);
}

static void wsam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct wsam *s = o->priv;
    static const float plus[] = {1.0f};
    static const int pass[] = {PASS_EXTRA};
    size_t n = p->n;
    sam_family_passes(o, p, f, wsam_perturb, plus, pass, 1, s->g, &s->gs, s->saved, s->e, info);
    if (s->max_norm) {
        wsam_clip(n, s->g, s->max_norm->v);
        wsam_clip(n, s->gs, s->max_norm->v);
    }
    double gamma = s->gamma->v, alpha = gamma / (1 - gamma);
    if (!s->decouple) {
        /* gs <- alpha gs + (1 - alpha) g: the one direction the base sees. */
        vec_axpby(n, (float)(1 - alpha), s->g, (float)alpha, s->gs);
        o->base->ops->apply(o->base, p, s->gs);
        return;
    }
    o->base->ops->apply(o->base, p, s->g);
    if (alpha == 0)
        return;
    /* The sharpness correction bypasses the base's momentum and weight decay. */
    float c = (float)(s->lr->v * alpha);
    float *w = p->w;
    const float *g = s->g, *gs = s->gs;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        w[i] -= c * (gs[i] - g[i]);
}

const struct optim_ops optim_wsam = {
    .name = "wsam",
    .summary = "weighted SAM: L + gamma/(1-gamma) * sharpness, coupled or decoupled from the base",
    .paper = "Yue et al., KDD 2023, arXiv:2305.15817 (rule of atorch optimizers/wsam.py)",
    .keys = "rho [0.05]: perturbation radius\n"
            "gamma [0.9]: sharpness weight, alpha = gamma/(1-gamma); 0.5 coupled = SAM\n"
            "decouple [true]: true = base step along g, then w -= lr*alpha*(gs-g) outside "
            "momentum and weight decay; false = base step along (1-alpha) g + alpha gs\n"
            "max_norm [none]: clip g and gs separately to this global norm (e uses unclipped g)\n"
            "adaptive [false]: e = rho w^2 g/|| |w| g || (atorch's adaptive=True)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = wsam_init,
    .step = wsam_step,
};
