/* esam: efficient SAM (Du et al., ICLR 2022, arXiv:2110.03141). Two savings on SAM, as the
 * authors' utils/Esam.py computes them (algorithms.md 7.2), with its delta = 1e-7:
 *   SWP, stochastic weight perturbation, per tensor: on step t >= 1 each parameter tensor is
 *     excluded with probability 1 - beta (uniform draw u > beta; the reference draws after step
 *     t-1, samx draws from the stream (seed, "optim.esam", t), so a resumed run draws the same).
 *     Excluded tensors get no clean gradient, hence no perturbation; the rest is scaled by 1/beta:
 *       e = rho g_kept / (||g_kept|| + 1e-7) / beta
 *   SDS, sharpness-sensitive data selection: per-example losses l0 at w and l1 at w + e (a
 *     forward-only pass; PASS_REF_UPDATE because the reference ran it in train mode); with
 *     q = floor(gamma |B|), keep the examples whose l1 - l0 is STRICTLY greater than the q-th
 *     largest (so q - 1 of them without ties); gamma >= 0.99 keeps all.
 *   gs = grad of the mean loss over the kept examples at w + e (every tensor);  w = saved (copy);
 *   base step along gs.
 * Guards where the reference would fail: q is at least 1, and when the strict rule keeps no
 * example (q = 1, or ties at the cutoff) the examples AT the cutoff are kept.
 * Cost in grad_evals: 1 + |kept|/|B| per step (plus two forward passes not counted; samx computes
 * the clean per-example losses with one extra forward, and its backward is not pruned for excluded
 * tensors, so SWP changes the update here, not the time).
 * m > 0 is rejected: the selection and the tensor draws are made over the whole batch.
 * Keys: rho [0.05], beta [0.6] (SWP keep probability), gamma [0.5] (SDS fraction; run.sh's
 * ResNet-18 values; the class defaults 1.0/1.0 switch both off), perturb_eps [1e-7], base [sgd];
 * rho, beta, gamma, perturb_eps are schedulable.
 */
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "optim.h"
#include "rng.h"

struct esam {
    struct hparam *rho, *beta, *gamma, *eps;
    float *saved, *e, *gk;
    float *l0, *l1, *sorted; /* (max_batch) per-example losses, sharpness sorted */
    int *sel;                /* (max_batch) kept examples */
};

static int esam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct esam *s = o->priv = xcalloc(1, sizeof *s);
    if (o->m > 0)
        return cfg_err(e, cfg_child(c, "m"),
                       "'esam' does not support m-sharpness (m > 0): its data selection ranks "
                       "the whole batch; use m: 0");
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        !(s->beta = optim_hparam(o, c, "beta", 0.6, 1e-6, 1, e)) ||
        !(s->gamma = optim_hparam(o, c, "gamma", 0.5, 0, 1, e)) ||
        !(s->eps = optim_hparam(o, c, "perturb_eps", 1e-7, 0, 1, e)))
        return -1;
    size_t mb = (size_t)o->env.max_batch;
    s->l0 = xfloats(mb);
    s->l1 = xfloats(mb);
    s->sorted = xfloats(mb);
    s->sel = xmalloc(mb * sizeof *s->sel);
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    s->gk = optim_scratch(o);
    return 0;
}

static void esam_release(struct optim *o)
{
    struct esam *s = o->priv;
    if (!s)
        return;
    free(s->l0);
    free(s->l1);
    free(s->sorted);
    free(s->sel);
}

static int esam_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* SDS: fill s->sel with the kept examples of a batch of `batch`; returns how many. */
static int esam_select(struct esam *s, int batch)
{
    float *sh = s->l1;
    for (int j = 0; j < batch; j++)
        sh[j] -= s->l0[j];
    int q = (int)(batch * s->gamma->v);
    q = q < 1 ? 1 : q > batch ? batch : q;
    memcpy(s->sorted, sh, (size_t)batch * sizeof *sh);
    qsort(s->sorted, (size_t)batch, sizeof *sh, esam_desc);
    float cut = s->sorted[q - 1];
    int k = 0;
    for (int j = 0; j < batch; j++)
        if (sh[j] > cut)
            s->sel[k++] = j;
    if (k == 0)
        for (int j = 0; j < batch; j++)
            if (sh[j] >= cut)
                s->sel[k++] = j;
    return k;
}

static void esam_step(struct optim *o, struct params *p, struct closure *f,
                      struct step_info *info)
{
    struct esam *s = o->priv;
    size_t n = p->n;
    int batch = f->batch;
    double beta = s->beta->v;
    SAMX_ASSERT(batch <= o->env.max_batch && f->losses);
    vec_copy(n, p->w, s->saved);
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    info->grad_norm = vec_nrm2(n, p->g);
    f->losses(f, p, PASS_EXTRA, NULL, 0, s->l0);
    /* SWP: the clean gradient of the kept tensors only. */
    vec_copy(n, p->g, s->gk);
    if (o->t >= 1 && beta < 1) {
        struct rng r;
        rng_init(&r, o->env.seed, "optim.esam", (uint64_t)o->t);
        for (int k = 0; k < p->nt; k++)
            if (rng_uniform(&r) > beta)
                vec_zero(p->t[k].n, s->gk + p->t[k].off);
    }
    optim_perturb_filter(o, p, s->gk); /* optimizer.perturb */
    double norm = vec_nrm2(n, s->gk);
    if (norm > 0 && s->rho->v > 0)
        vec_axpby(n, (float)(s->rho->v / (norm + s->eps->v) / beta), s->gk, 0.0f, s->e);
    else
        vec_zero(n, s->e);
    vec_axpy(n, 1.0f, s->e, p->w);
    f->losses(f, p, PASS_REF_UPDATE, NULL, 0, s->l1);
    double lp = 0;
    for (int j = 0; j < batch; j++)
        lp += s->l1[j];
    info->loss_perturbed = lp / batch;
    bool all = s->gamma->v >= 0.99;
    int kept = all ? batch : esam_select(s, batch);
    closure_grad(f, p, PASS_EXTRA, all ? NULL : s->sel, kept);
    vec_copy(n, s->saved, p->w);
    o->base->ops->apply(o->base, p, p->g);
}

const struct optim_ops optim_esam = {
    .name = "esam",
    .summary = "efficient SAM: random per-tensor perturbation (SWP) and the pass at w+e on the "
               "examples whose loss rose most (SDS)",
    .paper = "Du et al., ICLR 2022, arXiv:2110.03141 (rule of the authors' utils/Esam.py)",
    .keys = "rho [0.05]: perturbation radius (before the 1/beta scaling)\n"
            "beta [0.6]: SWP, probability that a tensor is perturbed; e is scaled by 1/beta\n"
            "gamma [0.5]: SDS, fraction q = floor(gamma |B|) ranking cutoff; >= 0.99 keeps all\n"
            "perturb_eps [1e-7]: delta in ||g|| + delta (ESAM's)\n"
            "m: must be 0 (m-sharpness is not supported)\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = esam_init,
    .step = esam_step,
    .release = esam_release,
};
