/* msam: Momentum-SAM (Becker, Altrock, Risse, arXiv:2401.12033; code: MarlonBecker/MSAM,
 * optimizer/msam.py). SAM without the extra pass: the perturbation follows the base SGD's
 * momentum buffer v (PyTorch's convention, w -= lr v), i.e. the negative of the direction the
 * weights are moving, so the step costs one gradient evaluation:
 *     v  = the base's momentum buffer before this step (the first step: none, no perturbation)
 *     e  = -rho v / (||v|| + 1e-12)
 *     g  = grad L_B(w + e)                 (the only pass: its loss is the step's training loss,
 *                                           so records have no train_loss_perturbed / sharpness)
 *     w  = saved w (copy), then the base SGD steps along g (v = mu v + g + wd ..., w -= lr v)
 * The authors' code keeps the perturbed weights between steps and moves by +rho v_t/||v_t||,
 * -lr v_{t+1} and -rho v_{t+1}/||v_{t+1}|| in place; samx keeps w and perturbs from a copy, the
 * same points without the rounding drift. Their weight decay term is wd times the PERTURBED
 * weights (msam.py adds it to the gradient before moving back): decay_at: perturbed (the code)
 * reproduces it as g - wd e; decay_at: w (the base's own rule) applies it at w. rho = 0 is the
 * base SGD bit for bit.
 * The base must be sgd with momentum > 0 (the perturbation is its buffer); the authors' AdamW
 * variant (adamW_msam.py) is not offered. m > 0 is rejected (one perturbation for the batch).
 * Defaults: rho [0.3] (msam.py's class default; the README's CIFAR-100 and ImageNet runs use
 * rho 3 with lr 0.5, batch 256), decay_at [perturbed], perturb [all], base [sgd]; rho is
 * schedulable and is read at each step (the code's move back uses the new step's rho).
 */
#include <math.h>
#include <string.h>

#include "blas.h"
#include "optim.h"

enum { MSAM_DECAY_PERTURBED, MSAM_DECAY_W };
static const char *const msam_decays[] = {"perturbed", "w", NULL};

struct msam {
    struct hparam *rho, *wd;
    int decay_at;
    const float *v;
    const double *started;
    float *saved, *e;
};

static int msam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct msam *s = o->priv = xcalloc(1, sizeof *s);
    struct optim *b = o->base;
    struct hparam *mu = optim_hparam_find(b, "momentum");
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"), "'msam' does not support m-sharpness (m > 0): it "
                                             "perturbs along one momentum buffer; use m: 0");
    if (b->ops != &optim_sgd || !mu || mu->s.start <= 0)
        return cfg_err(e, cfg_child(c, "base"),
                       "'msam' perturbs along the base SGD's momentum buffer: the base must be "
                       "sgd with momentum > 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.3, 0, 1e6, e)) ||
        cfg_enum(c, "decay_at", msam_decays, MSAM_DECAY_PERTURBED, &s->decay_at, e) < 0)
        return -1;
    s->wd = optim_hparam_find(b, "weight_decay");
    for (int i = 0; i < b->n_buf; i++)
        if (!strcmp(b->buf_name[i], "momentum_buffer"))
            s->v = b->buf[i];
    for (int i = 0; i < b->n_state; i++)
        if (!strcmp(b->state_name[i], "momentum_started"))
            s->started = b->state[i];
    SAMX_ASSERT(s->wd && ((s->v && s->started) || o->env.plan)); /* planning: no buffers */
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    return 0;
}

static void msam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct msam *s = o->priv;
    size_t n = p->n;
    /* e = -rho v/||v||, from the copy of w, over the tensors optimizer.perturb selects. */
    bool perturbed = *s->started != 0 && s->rho->v != 0;
    if (perturbed) {
        optim_ascent(o, p, s->v, -s->rho->v, 1e-12, false, s->e);
        params_copy(p, p->w, s->saved);
        vec_axpy(n, 1.0f, s->e, p->w);
    }
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    info->grad_norm = params_nrm2(p, p->g);
    if (perturbed) {
        params_copy(p, s->saved, p->w);
        /* The base adds wd w; the code's term is wd (w + e). */
        if (s->decay_at == MSAM_DECAY_PERTURBED && s->wd->v != 0)
            vec_axpy(n, (float)s->wd->v, s->e, p->g);
    }
    o->base->ops->apply(o->base, p, p->g);
}

const struct optim_ops optim_msam = {
    .name = "msam",
    .summary = "momentum-SAM: the gradient at w - rho v/||v|| (v the SGD momentum), one pass "
               "per step",
    .paper = "Becker, Altrock, Risse, arXiv:2401.12033 (code: github.com/MarlonBecker/MSAM "
             "optimizer/msam.py)",
    .keys = "rho [0.3]: perturbation radius along -v (the authors' runs: 3, with lr 0.5)\n"
            "decay_at [perturbed]: perturbed = weight decay on the perturbed weights, as the "
            "authors' code; w = at w, as the base SGD alone\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: sgd with momentum > 0 (the perturbation is its buffer)\n",
    .wrapper = true,
    .no_clean_pass = true,
    .init = msam_init,
    .step = msam_step,
};
