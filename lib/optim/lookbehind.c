/* lookbehind: Lookbehind-SAM, k ascent steps behind, one step forward (Mordido, Malviya, Baratin,
 * Chandar, ICML 2024, arXiv:2307.16704), as the authors' lookbehind.py (LookbehindSAM) and
 * example_cifar.py run it: one samx step is one batch, on which k SAM steps run with the
 * perturbations accumulating from the slow weights phi = w while the descent steps move fast
 * weights theta (starting at phi), then the slow weights interpolate:
 *     theta = a = phi = w
 *     for i = 1..k (same batch):
 *         g_i  = grad L_B(a);   a = a + rho g_i / (||g_i|| + eps)    (the ascent point moves on)
 *         gs_i = grad L_B(a);   theta = base step along gs_i at theta    (momentum carries over)
 *     alpha: adaptive (README's --alpha -1): per tensor,
 *         alpha_T = (cos(theta_1 - phi, theta_k - phi) + 1) / 2 (torch CosineSimilarity: each
 *         norm clamped to 1e-8)
 *     w = alpha theta_k + (1 - alpha) phi
 * 2k gradient evaluations per step. The authors' code does not protect BatchNorm's running
 * statistics in any pass (every pass is PASS_REF_UPDATE: train.bn_update: reference updates
 * them each pass). The recorded training loss is the clean loss at phi (the code's printed loss is
 * the last ascent start's). eps = 1e-16 is ADDED to the norm as in the code. With k = 1, a fixed
 * alpha = 1 and perturb_eps 1e-12 it is SAM bit for bit. m > 0 is rejected.
 * Defaults: rho [0.05], k [2] (README's runs; the class default is 5), alpha [adaptive] (or a
 * number in [0, 1], schedulable; the paper's static values 0.2, 0.5, 0.8), perturb_eps [1e-16],
 * perturb [all], base [sgd].
 */
#include <math.h>
#include <string.h>

#include "blas.h"
#include "optim.h"
#include "tune.h"

struct lookbehind {
    struct hparam *rho, *alpha, *eps; /* alpha NULL: adaptive */
    long k;
    float *phi, *theta, *theta1, *a, *e;
};

static int lookbehind_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct lookbehind *s = o->priv = xcalloc(1, sizeof *s);
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"),
                       "'lookbehind' does not support m-sharpness (m > 0); use m: 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        cfg_int(c, "k", 2, &s->k, e) < 0 ||
        !(s->eps = optim_hparam(o, c, "perturb_eps", 1e-16, 0, 1, e)))
        return -1;
    if (s->k < 1 || s->k > 1000)
        return cfg_err(e, cfg_child(c, "k"), "'optimizer.k' must be in [1, 1000], got %ld", s->k);
    struct cfg_node *an = cfg_child(c, "alpha");
    if (!an || (an->type == CFG_SCALAR && !strcmp(an->str, "adaptive"))) {
        const char *unused;
        if (cfg_str(c, "alpha", "adaptive", &unused, e) < 0)
            return -1;
    } else if (!(s->alpha = optim_hparam(o, c, "alpha", 0.5, 0, 1, e))) {
        return -1;
    }
    s->phi = optim_scratch(o);
    s->theta = optim_scratch(o);
    s->a = optim_scratch(o);
    s->e = optim_scratch(o);
    if (!s->alpha)
        s->theta1 = optim_scratch(o);
    return 0;
}

/* Per tensor: alpha = (cos(theta1 - phi, theta - phi) + 1) / 2, w = alpha theta + (1-alpha) phi,
 * with torch.nn.CosineSimilarity's x.y / (max(|x|, eps) max(|y|, eps)), eps = 1e-8 (each norm
 * clamped, as torch 1.13 and the authors' torch 2.1 compute it; this matters once the lr is small
 * and a tensor's steps are shorter than eps). */
static void lookbehind_adaptive_mix(const struct params *p, const struct lookbehind *s)
{
    float *w = p->w;
    for (int k = 0; k < p->nt; k++) {
        const struct tensor *t = &p->t[k];
        double xy = 0, xx = 0, yy = 0;
        for (size_t i = t->off; i < t->off + t->n; i++) {
            double x = (double)(s->theta1[i] - s->phi[i]), y = (double)(s->theta[i] - s->phi[i]);
            xy += x * y, xx += x * x, yy += y * y;
        }
        double den = fmax(sqrt(xx), 1e-8) * fmax(sqrt(yy), 1e-8);
        float alpha = (float)((xy / den + 1) / 2), beta = (float)(1 - (xy / den + 1) / 2);
        for (size_t i = t->off; i < t->off + t->n; i++)
            w[i] = s->theta[i] * alpha + s->phi[i] * beta;
    }
}

static void lookbehind_step(struct optim *o, struct params *p, struct closure *f,
                            struct step_info *info)
{
    struct lookbehind *s = o->priv;
    size_t n = p->n;
    params_copy(p, p->w, s->phi);
    params_copy(p, p->w, s->theta);
    double loss_p = 0;
    for (long i = 0; i < s->k; i++) {
        /* p->w is the ascent point a here */
        double l = closure_grad(f, p, i == 0 ? PASS_FIRST : PASS_REF_UPDATE, NULL, 0);
        if (i == 0) {
            info->loss = l;
            info->grad_norm = params_nrm2(p, p->g);
        }
        optim_ascent(o, p, p->g, s->rho->v, s->eps->v, false, s->e);
        vec_axpy(n, 1.0f, s->e, p->w);
        loss_p += closure_grad(f, p, PASS_REF_UPDATE, NULL, 0) / (double)s->k;
        /* the descent at theta, keeping the ascent point */
        params_copy(p, p->w, s->a);
        params_copy(p, s->theta, p->w);
        o->base->ops->apply(o->base, p, p->g);
        params_copy(p, p->w, s->theta);
        if (i == 0 && s->theta1)
            params_copy(p, p->w, s->theta1);
        if (i + 1 < s->k)
            params_copy(p, s->a, p->w);
    }
    info->loss_perturbed = loss_p;
    if (s->theta1) {
        lookbehind_adaptive_mix(p, s);
        return;
    }
    float alpha = (float)s->alpha->v, beta = (float)(1 - s->alpha->v);
    const float *theta = s->theta, *phi = s->phi;
    float *w = p->w;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        w[i] = theta[i] * alpha + phi[i] * beta;
}

const struct optim_ops optim_lookbehind = {
    .name = "lookbehind",
    .summary = "lookbehind-SAM: k accumulating SAM ascents per batch, each followed by a descent "
               "of fast weights, then slow weights interpolate; 2k passes per step",
    .paper = "Mordido et al., ICML 2024, arXiv:2307.16704 (code: github.com/chandar-lab/"
             "Lookbehind-SAM lookbehind.py)",
    .keys = "rho [0.05]: radius of each ascent step (they accumulate)\n"
            "k [2]: ascent/descent pairs per batch (the authors' README; class default 5)\n"
            "alpha [adaptive]: slow-weight step; adaptive = per tensor (cos(theta_1 - phi, "
            "theta_k - phi) + 1)/2 (README's --alpha -1), or a number in [0, 1]\n"
            "perturb_eps [1e-16]: added to ||g|| in each ascent, as the code\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm (all "
            "but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = lookbehind_init,
    .step = lookbehind_step,
};
