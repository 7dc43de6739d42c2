/* gsam: surrogate gap guided SAM (Zhuang et al., ICLR 2022, arXiv:2203.08065).
 * As the authors' gsam/gsam.py computes it (algorithms.md 7.1), delta = 1e-12 throughout:
 *     rho_t = rho_min + (rho - rho_min) (lr_t - lr_min) / (lr_max - lr_min)   (rho_t = rho when
 *             lr_max == lr_min), lr_t = the base optimizer's lr of this step
 *     g  = grad L_B(w);  e = rho_t g / (||g|| + 1e-12);  gp = grad L_B(w + e);  w = saved (copy)
 *     c  = <g, gp> / (||g|| ||gp|| + 1e-12)
 *     v  = g - c ||g|| gp / (||gp|| + 1e-12)        (the part of g orthogonal to gp)
 *     base step along d = gp - alpha v
 * lr_max and lr_min are the largest and smallest values the base lr schedule takes over the run,
 * steps 0 .. epochs * steps_per_epoch inclusive; for a linear or cosine schedule without warmup
 * they are its `start` and `end`, as in GSAM's ProportionScheduler(max_lr=start, min_lr=end).
 * The realised rho_t is reported each epoch as the adaptive hyperparameter `rho_t`.
 * m > 0: each group of m examples gets its own e and its own decomposition, and the d's are
 * averaged, as GSAM under DDP decomposes each worker's gradients before synchronizing them.
 * adaptive: true (the authors' adaptive=True, their example script's setting): e = rho_t w^2 g /
 * (|| |w| g || + 1e-12) over every tensor; the decomposition is unchanged.
 * alpha = 0 (with constant lr or rho_min = rho) is SAM.
 * Keys: rho [0.05] (rho_max), rho_min [= rho at step 0], alpha [0.4], adaptive [false],
 * perturb [all], m [0], base [sgd]; rho,
 * rho_min and alpha are schedulable.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"
#include "tune.h"

struct gsam {
    struct hparam *rho, *rho_min, *alpha, *rho_t, *lr;
    double lr_max, lr_min;
    bool adaptive;
    float *saved, *e, *g, *gc, *d;
};

static double gsam_rho_t(const struct gsam *s)
{
    if (!(s->lr_max > s->lr_min))
        return s->rho->v;
    return s->rho_min->v +
           (s->rho->v - s->rho_min->v) * (s->lr->v - s->lr_min) / (s->lr_max - s->lr_min);
}

static int gsam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct gsam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        !(s->rho_min = optim_hparam(o, c, "rho_min", sched_at(&s->rho->s, 0), 0, 1e6, e)) ||
        !(s->alpha = optim_hparam(o, c, "alpha", 0.4, -1e6, 1e6, e)))
        return -1;
    /* Read when given, so the configs (and run ids) of earlier runs are unchanged. */
    if (cfg_child(c, "adaptive") && cfg_bool(c, "adaptive", false, &s->adaptive, e) < 0)
        return -1;
    s->lr = optim_hparam_find(o->base, "lr");
    SAMX_ASSERT(s->lr);
    long steps = (long)ceil((double)o->env.clk.steps_per_epoch * o->env.clk.epochs);
    s->lr_max = s->lr_min = sched_at(&s->lr->s, 0);
    for (long t = 1; t <= steps; t++) {
        double v = sched_at(&s->lr->s, t);
        s->lr_max = v > s->lr_max ? v : s->lr_max;
        s->lr_min = v < s->lr_min ? v : s->lr_min;
    }
    s->rho_t = optim_adaptive(o, "rho_t", gsam_rho_t(s));
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    s->g = optim_scratch(o);
    s->gc = optim_scratch(o);
    s->d = optim_scratch(o);
    return 0;
}

/* d (+)= wgt * (gp - alpha v) for one group, gp in p->g and its clean gradient in gc. */
static void gsam_decompose(const struct gsam *s, size_t n, const float *gc, const float *gp,
                           float wgt, bool first, float *d)
{
    double ng = vec_nrm2(n, gc), ngp = vec_nrm2(n, gp);
    double cosine = vec_dot(n, gc, gp) / (ng * ngp + 1e-12);
    float k = (float)(cosine * ng / (ngp + 1e-12)), alpha = (float)s->alpha->v;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float di = gp[i] - alpha * (gc[i] - k * gp[i]);
        d[i] = first ? wgt * di : d[i] + wgt * di;
    }
}

static void gsam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct gsam *s = o->priv;
    size_t n = p->n;
    int batch = f->batch;
    struct optim_groups gr;
    optim_groups(o, f, &gr);
    int m = gr.m, n_group = gr.n, local = gr.local ? PASS_LOCAL : 0;
    SAMX_ASSERT(batch <= o->env.max_batch);
    double rho_t = s->rho_t->v = gsam_rho_t(s);
    double loss = 0, loss_p = 0;
    vec_copy(n, p->w, s->saved);
    for (int c = gr.lo; c < gr.hi; c++) {
        int lo = c * m, cnt = lo + m <= batch ? m : batch - lo;
        const int *sel = n_group == 1 ? NULL : o->ramp + lo;
        float wgt = n_group == 1 ? 1.0f : (float)cnt / (float)batch;
        f->group = c;
        loss += closure_grad(f, p, PASS_FIRST | local, sel, cnt) * cnt / batch;
        vec_copy(n, p->g, s->gc);
        if (c == gr.lo) {
            vec_copy(n, p->g, s->g);
            if (wgt != 1)
                vec_scal(n, wgt, s->g);
        } else {
            vec_axpy(n, wgt, p->g, s->g);
        }
        optim_ascent(o, p, s->gc, rho_t, 1e-12, s->adaptive, s->e);
        vec_axpy(n, 1.0f, s->e, p->w);
        loss_p += closure_grad(f, p, PASS_EXTRA | local, sel, cnt) * cnt / batch;
        vec_copy(n, s->saved, p->w);
        gsam_decompose(s, n, s->gc, p->g, wgt, c == gr.lo, s->d);
    }
    double d[2] = {loss, loss_p};
    closure_combine(f, &gr, (float *[]){s->g, s->d}, 2, n, d, 2);
    loss = d[0], loss_p = d[1];
    info->loss = loss;
    info->loss_perturbed = loss_p;
    info->grad_norm = vec_nrm2(n, s->g);
    o->base->ops->apply(o->base, p, s->d);
}

const struct optim_ops optim_gsam = {
    .name = "gsam",
    .summary = "surrogate-gap guided SAM: SAM gradient minus alpha times the part of g orthogonal "
               "to it; rho decays with the lr",
    .paper = "Zhuang et al., ICLR 2022, arXiv:2203.08065 (rule of the authors' gsam/gsam.py)",
    .keys = "rho [0.05]: rho_max, the radius when the base lr is at its largest\n"
            "rho_min [= rho]: the radius when the base lr is at its smallest (rho_t is linear in "
            "lr between the lr schedule's max and min over the run; reported as rho_t)\n"
            "alpha [0.4]: weight of the surrogate-gap correction\n"
            "adaptive [false]: e = rho_t w^2 g/|| |w| g || (the authors' adaptive=True)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = gsam_init,
    .step = gsam_step,
};
