/* fsam: Friendly SAM (Li, Zhou, He, Cheng, Huang, CVPR 2024, arXiv:2403.12350).
 * SAM's ascent without the full-gradient component: an exponential moving average m of the clean
 * gradients estimates it, and the perturbation follows the batch's remaining gradient noise:
 *     g = grad L_B(w)                                        (pass 1)
 *     ema: paper (the paper's Algorithm 1, m_{-1} = 0):
 *         m_t = lambda m_{t-1} + (1 - lambda) g;   d = g - sigma m_t
 *     ema: code (nblt/F-SAM utils.py, FriendlySAM.first_step):
 *         first step m_0 = g, d = g;  later d = g - sigma m_{t-1}, then
 *         m_t = lambda m_{t-1} + (1 - lambda) g
 *     e = rho d / (||d|| + 1e-12);  gs = grad L_B(w + e)     (pass 2);  w = saved (copy)
 *     base step along gs
 * m averages the RAW clean gradient g, as the authors' code does (pytorch_optimizer's
 * FriendlySAM averages the corrected gradient instead; samx follows the authors).
 * adaptive: true (the authors' adaptive flag, off in their train.py): e = rho w^2 d / (|| |w| d ||
 * + 1e-12). sigma = 0 is SAM bit for bit (either ema). m > 0 is rejected: the average is of the
 * whole-batch gradient across steps, and the reference has no per-group counterpart.
 * Defaults: rho [0.05], sigma [1], lambda [0.9] (the authors' class defaults; their train.py
 * defaults rho 0.1 and lambda 0.95, their run.sh, CIFAR-100 ResNet-18, rho 0.2, lambda 0.6),
 * ema [paper], adaptive [false], perturb [all], base [sgd]. rho, sigma, lambda are schedulable.
 * State: the average ("fsam_ema") and whether it holds a value, checkpointed.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"
#include "tune.h"

enum { FSAM_PAPER, FSAM_CODE };
static const char *const fsam_emas[] = {"paper", "code", NULL};

struct fsam {
    struct hparam *rho, *sigma, *lambda;
    int ema;
    bool adaptive;
    double started;
    float *m, *d, *e, *saved;
};

static int fsam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct fsam *s = o->priv = xcalloc(1, sizeof *s);
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"),
                       "'fsam' does not support m-sharpness (m > 0): its average is of the "
                       "whole-batch gradient across steps; use m: 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        !(s->sigma = optim_hparam(o, c, "sigma", 1.0, -1e6, 1e6, e)) ||
        !(s->lambda = optim_hparam(o, c, "lambda", 0.9, 0, 1, e)) ||
        cfg_enum(c, "ema", fsam_emas, FSAM_PAPER, &s->ema, e) < 0 ||
        cfg_bool(c, "adaptive", false, &s->adaptive, e) < 0)
        return -1;
    s->m = optim_buf(o, "fsam_ema");
    optim_state(o, "fsam_started", &s->started, 0, 1, true);
    s->d = optim_scratch(o);
    s->e = optim_scratch(o);
    s->saved = optim_scratch(o);
    return 0;
}

static void fsam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct fsam *s = o->priv;
    size_t n = p->n;
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    info->grad_norm = params_nrm2(p, p->g);
    const float *g = p->g;
    float *m = s->m, *d = s->d;
    float lam = (float)s->lambda->v, lam1 = (float)(1 - s->lambda->v), sig = (float)s->sigma->v;
    if (s->ema == FSAM_PAPER) {
        /* m starts at 0, so the first step's m is (1 - lambda) g. */
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
        for (size_t i = 0; i < n; i++) {
            m[i] = m[i] * lam + g[i] * lam1;
            d[i] = g[i] - sig * m[i];
        }
    } else if (s->started == 0) {
        vec_copy(n, g, m);
        vec_copy(n, g, d);
    } else {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
        for (size_t i = 0; i < n; i++) {
            d[i] = g[i] - sig * m[i];
            m[i] = m[i] * lam + g[i] * lam1;
        }
    }
    s->started = 1;
    optim_ascent(o, p, d, s->rho->v, 1e-12, s->adaptive, s->e);
    params_copy(p, p->w, s->saved);
    vec_axpy(n, 1.0f, s->e, p->w);
    info->loss_perturbed = closure_grad(f, p, PASS_EXTRA, NULL, 0);
    params_copy(p, s->saved, p->w);
    o->base->ops->apply(o->base, p, p->g);
}

const struct optim_ops optim_fsam = {
    .name = "fsam",
    .summary = "friendly SAM: the ascent along g minus sigma times an average of past gradients "
               "(the batch's gradient noise)",
    .paper = "Li et al., CVPR 2024, arXiv:2403.12350 (code: github.com/nblt/F-SAM utils.py)",
    .keys = "rho [0.05]: perturbation radius (authors' run.sh: 0.2 on CIFAR-100)\n"
            "sigma [1]: weight of the average removed from g; 0 = SAM\n"
            "lambda [0.9]: decay of the gradient average (authors' class default; run.sh 0.6, "
            "train.py 0.95)\n"
            "ema [paper]: paper = d = g - sigma m_t with m_t including this g (m starts at 0); "
            "code = the authors' code: d = g - sigma m_{t-1}, the first step d = g, m_0 = g\n"
            "adaptive [false]: e = rho w^2 d/|| |w| d || (the authors' adaptive flag)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = fsam_init,
    .step = fsam_step,
};
