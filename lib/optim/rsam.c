/* rsam: random sharpness-aware minimization (Liu, Mai, Cheng, Chen, Hsieh, You, NeurIPS 2022,
 * "Random Sharpness-Aware Minimization"). SAM's one-step ascent taken on a randomly smoothed
 * loss: the ascent gradient is evaluated at Gaussian-noised weights, and the noise itself is part
 * of the ascent direction. The rule is the one of the authors' released code
 * (RSAM-Optimizer/R-SAM, vit_jax/train.py, sam_gradient and random_vector):
 *     delta = sigma z (.) s,  z ~ N(0, I)                     (noise: filter scales it, below)
 *     gt = grad L_B(w + delta)                                (pass 1, running stats updated)
 *     d  = lambda gt + delta
 *     e  = rho d / (||d|| + 1e-12);  gs = grad L_B(w + e)     (pass 2, from w: delta enters the
 *                                                              second point only through d)
 *     w  = saved w (copy); base step along gs
 * noise: filter (the code's): s is the norm of the tensor's row (its output unit or filter: all
 * but the first dimension of a PyTorch-layout tensor) for tensors of two or more dimensions, and
 * the whole tensor's norm + 1e-16 for one-dimensional ones (biases, BatchNorm), both at the
 * current w; noise: plain: s = 1, delta ~ N(0, sigma^2 I).
 * The draws come from the stream (seed, "optim.rsam", t): tensor by tensor, element by element,
 * one normal each (every tensor draws, whatever optimizer.perturb selects), so a resumed run
 * draws the same and no state is checkpointed. The code uses one key for every tensor (equal
 * draws for tensors of one shape); samx draws every element independently.
 * optimizer.perturb restricts delta and e to the selected tensors (||d|| over them).
 * m > 0: each group of m examples draws its own delta (the next normals of the same stream, in
 * group order) and forms its own e from its own gt, as each device of the code's pmap does with
 * its local batch; the gs are averaged.
 * The step never evaluates at w: the recorded training loss is the loss at w + delta and the
 * gradient norm ||gt|| (no train_loss_perturbed or sharpness_1step).
 * sigma = 0 and lambda = 1 is SAM bit for bit (with any m and perturb); sigma = 0 alone is SAM's
 * direction.
 * Defaults: rho [0.05] (samx's SAM default; the code ties rho to the lr, from 2.5 at the peak lr
 * 3e-3 down to 1.5, for ViT-B/16 on ImageNet with Adam), sigma [0.0005] (the code's starting
 * value: it raises sigma along a cosine to 5x over the run, i.e. sigma: {schedule: cosine,
 * start: 0.0005, end: 0.0025}), lambda [2] (the code's weight of gt), noise [filter],
 * perturb [all], base [sgd]. rho, sigma and lambda are schedulable.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"
#include "rng.h"
#include "tune.h"

enum { RSAM_FILTER, RSAM_PLAIN };
static const char *const rsam_noises[] = {"filter", "plain", NULL};

struct rsam {
    struct hparam *rho, *sigma, *lambda;
    int noise;
    float *saved, *d, *e, *g, *gs;
};

static int rsam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct rsam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        !(s->sigma = optim_hparam(o, c, "sigma", 0.0005, 0, 1e6, e)) ||
        !(s->lambda = optim_hparam(o, c, "lambda", 2.0, 0, 1e6, e)) ||
        cfg_enum(c, "noise", rsam_noises, RSAM_FILTER, &s->noise, e) < 0)
        return -1;
    s->saved = optim_scratch(o);
    s->d = optim_scratch(o);
    s->e = optim_scratch(o);
    /* The group averages of gt (for the recorded norm) and of gs, only where groups can occur. */
    if (!optim_one_group(o, o->env.max_batch)) {
        s->g = optim_scratch(o);
        s->gs = optim_scratch(o);
    }
    return 0;
}

/* delta (n floats, 0 in the padding) for one group: the next normals of r, scaled by the norms
 * of w (the step's unperturbed weights, laid out as p). */
static void rsam_noise(const struct optim *o, const struct rsam *s, const struct params *p,
                       const float *w, struct rng *r, float *delta)
{
    double sigma = s->sigma->v;
    vec_zero(p->n, delta);
    if (sigma == 0)
        return;
    for (int k = 0; k < p->nt; k++) {
        const struct tensor *t = &p->t[k];
        float *dk = delta + t->off;
        const float *wk = w + t->off;
        size_t rows = s->noise == RSAM_FILTER && t->ndim >= 2 ? (size_t)t->shape[0] : 1;
        size_t len = t->n / rows;
        for (size_t row = 0; row < rows; row++) {
            double scale = 1;
            if (s->noise == RSAM_FILTER) {
                double ss = 0;
                for (size_t i = row * len; i < (row + 1) * len; i++)
                    ss += (double)wk[i] * wk[i];
                /* The code adds 1e-16 to the norms of one-dimensional tensors only. */
                scale = sqrt(ss) + (t->ndim >= 2 ? 0 : 1e-16);
            }
            for (size_t i = row * len; i < (row + 1) * len; i++)
                dk[i] = (float)(sigma * scale * rng_normal(r));
        }
    }
    optim_perturb_filter(o, p, delta);
}

/* The normals rsam_noise draws for one group (rng_normal takes two draws each). */
static uint64_t rsam_normals(const struct params *p)
{
    uint64_t k = 0;
    for (int i = 0; i < p->nt; i++)
        k += p->t[i].n;
    return k;
}

/* w = saved + x, elementwise. */
static void rsam_move(size_t n, const float *saved, const float *x, float *w)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        w[i] = saved[i] + x[i];
}

static void rsam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct rsam *s = o->priv;
    size_t n = p->n;
    int batch = f->batch;
    struct optim_groups gr;
    optim_groups(o, f, &gr);
    int m = gr.m, n_group = gr.n, local = gr.local ? PASS_LOCAL : 0;
    SAMX_ASSERT(batch <= o->env.max_batch && (n_group == 1 || (s->g && s->gs)));
    float lam = (float)s->lambda->v;
    struct rng r;
    rng_init(&r, o->env.seed, "optim.rsam", (uint64_t)o->t);
    params_copy(p, p->w, s->saved);
    double loss = 0, loss_p = 0, gnorm = 0;
    /* The groups before this process's own draw from the stream first (one process's noise). */
    if (s->sigma->v != 0)
        rng_skip(&r, 2 * rsam_normals(p) * (uint64_t)gr.lo);
    for (int c = gr.lo; c < gr.hi; c++) {
        int lo = c * m, cnt = lo + m <= batch ? m : batch - lo;
        const int *sel = n_group == 1 ? NULL : o->ramp + lo;
        float wgt = (float)cnt / (float)batch;
        /* The filter scales are norms of the saved w (p->w is a perturbed point after the
         * first group). */
        rsam_noise(o, s, p, s->saved, &r, s->d);
        rsam_move(n, s->saved, s->d, p->w);
        f->group = c;
        loss += closure_grad(f, p, PASS_FIRST | local, sel, cnt) * cnt / batch;
        const float *gt = p->g;
        if (n_group == 1)
            gnorm = params_nrm2(p, gt);
        else if (c == gr.lo)
            vec_axpby(n, wgt, gt, 0.0f, s->g);
        else
            vec_axpy(n, wgt, gt, s->g);
        float *d = s->d;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
        for (size_t i = 0; i < n; i++)
            d[i] = lam * gt[i] + d[i];
        /* optim_ascent's adaptive form is not offered: |w| would be read at w + delta. */
        optim_ascent(o, p, d, s->rho->v, 1e-12, false, s->e);
        rsam_move(n, s->saved, s->e, p->w);
        loss_p += closure_grad(f, p, PASS_EXTRA | local, sel, cnt) * cnt / batch;
        /* One group: gs stays in p->g. */
        if (n_group > 1 && c == gr.lo)
            vec_axpby(n, wgt, p->g, 0.0f, s->gs);
        else if (n_group > 1)
            vec_axpy(n, wgt, p->g, s->gs);
    }
    params_copy(p, s->saved, p->w);
    double dl[2] = {loss, loss_p};
    closure_combine(f, &gr, (float *[]){s->g, s->gs}, 2, n, dl, 2);
    loss = dl[0], loss_p = dl[1];
    info->loss = loss;
    info->loss_perturbed = loss_p;
    info->grad_norm = n_group == 1 ? gnorm : vec_nrm2(n, s->g);
    o->base->ops->apply(o->base, p, n_group == 1 ? p->g : s->gs);
}

const struct optim_ops optim_rsam = {
    .name = "rsam",
    .summary = "random SAM: the ascent from the gradient at Gaussian-noised weights, the noise "
               "included in its direction",
    .paper = "Liu et al., NeurIPS 2022, \"Random Sharpness-Aware Minimization\" (code: "
             "github.com/RSAM-Optimizer/R-SAM vit_jax/train.py)",
    .keys = "rho [0.05]: perturbation radius of e = rho d/||d||, d = lambda gt + delta (the "
            "authors' ViT runs: 1.5 to 2.5, following the lr)\n"
            "sigma [0.0005]: noise scale, delta = sigma z s (the authors' code: a cosine from "
            "0.0005 up to 0.0025); 0 = no noise\n"
            "lambda [2]: weight of the gradient at w + delta in d (the authors' code: 2); "
            "sigma 0 and lambda 1 = SAM\n"
            "noise [filter]: filter = s is the norm of each row (output unit, filter) of a "
            "tensor, of the whole tensor + 1e-16 when one-dimensional (the authors' code); "
            "plain = s = 1\n"
            "m [0]: examples per perturbation group, each with its own noise (0: whole batch)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those); delta and e both\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .no_clean_pass = true,
    .init = rsam_init,
    .step = rsam_step,
};
