/* sam: sharpness-aware minimization (Foret et al., ICLR 2021, arXiv:2010.01412).
 *     g  = grad L_B(w)                                   (pass 1, running stats updated)
 *     e  = rho * g / (||g|| + 1e-12)   or, normalize: false, e = rho * g   (un-normalized SAM)
 *          un-normalized with clip: true, e = rho g projected onto the ball ||e|| <= rho, i.e.
 *          rho g / ||g|| when ||g|| > 1 (tml-epfl/understanding-sam's weight_ascent_step with
 *          --sam_no_grad_norm: no denominator term)
 *     gs = grad L_B(w + e)                               (pass 2, same batch)
 *     w  = saved w (copy), then the base optimizer steps along gs at w
 * With m > 0 each group of m examples gets its own e from its own gradient and the perturbed
 * gradients are averaged (m-sharpness).
 * Keys: rho [0.05] (schedulable), normalize [true], clip [false] (with normalize: false only),
 * m [0], base [sgd].
 */
#include <math.h>

#include "blas.h"
#include "optim.h"

struct sam {
    struct hparam *rho;
    bool normalize, clip;
    float *saved, *g, *gs;
};

static int sam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct sam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        cfg_bool(c, "normalize", true, &s->normalize, e) < 0)
        return -1;
    /* clip is read when given, so the configs (and run ids) of earlier runs are unchanged. */
    if (cfg_child(c, "clip")) {
        if (cfg_bool(c, "clip", false, &s->clip, e) < 0)
            return -1;
        if (s->clip && s->normalize)
            return cfg_err(e, cfg_child(c, "clip"),
                           "'optimizer.clip' projects the un-normalized ascent rho g onto the "
                           "rho ball; it needs normalize: false");
    }
    s->saved = optim_scratch(o);
    /* e is never formed (the perturbation is a scale of g); g and gs only with m-sharpness. */
    if (!optim_one_group(o, o->env.max_batch)) {
        s->g = optim_scratch(o);
        s->gs = optim_scratch(o);
    }
    return 0;
}

static float sam_perturb(struct optim *o, const struct params *p, const float *g, double gnorm,
                         float *e)
{
    struct sam *s = o->priv;
    if (s->normalize)
        return sam_scale(gnorm, s->rho->v, 1e-12);
    /* ||rho g|| > rho exactly when ||g|| > 1; NaN (not finite g) stays NaN. */
    if (s->clip && (gnorm > 1 || isnan(gnorm)))
        return sam_scale(gnorm, s->rho->v, 0);
    return (float)s->rho->v;
}

static void sam_step(struct optim *o, struct params *p, struct closure *f, struct step_info *info)
{
    struct sam *s = o->priv;
    static const float plus[] = {1.0f};
    static const int pass[] = {PASS_EXTRA};
    /* One group: SAM needs only ||g|| and applies gs where the closure left it. */
    bool one_group = optim_one_group(o, f->batch);
    float *gs = one_group ? p->g : s->gs;
    sam_family_passes(o, p, f, sam_perturb, plus, pass, 1, one_group ? NULL : s->g, &gs,
                      s->saved, NULL, info);
    o->base->ops->apply(o->base, p, gs);
}

const struct optim_ops optim_sam = {
    .name = "sam",
    .summary = "sharpness-aware minimization: base step along the gradient at w + rho g/||g||",
    .paper = "Foret et al., ICLR 2021, arXiv:2010.01412",
    .keys = "rho [0.05]: perturbation radius\n"
            "normalize [true]: e = rho g/||g||; false: un-normalized SAM, e = rho g\n"
            "clip [false]: with normalize: false, project rho g onto ||e|| <= rho (rho g/||g|| "
            "when ||g|| > 1), as tml-epfl/understanding-sam\n"
            "perturb [all]: all | norm | no_norm: perturb every tensor, only the normalization "
            "layers' (SAM-ON), or all but those\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = sam_init,
    .step = sam_step,
};
