/* fishersam: Fisher SAM (Kim, Li, Hu, Hospedales, ICML 2022, arXiv:2206.04920). SAM in the ball
 * of the Fisher metric, e^T F e <= rho^2, with the diagonal approximation of the paper from the
 * batch gradient, f = 1 + eta g (.) g (algorithms.md 7.5):
 *     g  = grad L_B(w)
 *     norm: fisher (the paper's ellipsoid):  e = rho (g / f) / (sqrt(sum g^2 / f) + eps)
 *     norm: euclidean (a form some implementations use): e = rho u / (||u|| + eps), u = g / f
 *     gs = grad L_B(w + e);  w = saved (copy);  base step along gs
 * The authors' code is not public (algorithms.md 13.6): the normalization is exposed as `norm`,
 * eps as perturb_eps. eta = 0 is SAM bit for bit (either norm). m > 0 gives each group its own f
 * and e (m-sharpness).
 * Keys: rho [0.1] (the paper's gamma), eta [1], norm [fisher], perturb_eps [1e-12], perturb [all],
 * m [0], base [sgd]; rho, eta, perturb_eps are schedulable.
 */
#include <math.h>

#include "blas.h"
#include "optim.h"
#include "tune.h"

enum { FISHER_NORM, EUCLIDEAN_NORM };
static const char *const fishersam_norms[] = {"fisher", "euclidean", NULL};

struct fishersam {
    struct hparam *rho, *eta, *eps;
    int norm;
    float *saved, *e, *g, *gs;
};

static int fishersam_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct fishersam *s = o->priv = xcalloc(1, sizeof *s);
    if (!(s->rho = optim_hparam(o, c, "rho", 0.1, 0, 1e6, e)) ||
        !(s->eta = optim_hparam(o, c, "eta", 1.0, 0, 1e12, e)) ||
        cfg_enum(c, "norm", fishersam_norms, FISHER_NORM, &s->norm, e) < 0 ||
        !(s->eps = optim_hparam(o, c, "perturb_eps", 1e-12, 0, 1, e)))
        return -1;
    s->saved = optim_scratch(o);
    s->e = optim_scratch(o);
    if (!optim_one_group(o, o->env.max_batch)) {
        s->g = optim_scratch(o);
        s->gs = optim_scratch(o);
    }
    return 0;
}

/* e holds g/sqrt(f) (fisher) or g/f (euclidean) first, so its norm is the ball's; then the
 * ascent rho (g/f) / (norm + eps). With eta = 0, f = 1 and both are g exactly. */
static float fishersam_perturb(struct optim *o, const struct params *p, const float *g,
                               double gnorm, float *e)
{
    struct fishersam *s = o->priv;
    size_t n = p->n;
    float eta = (float)s->eta->v;
    bool fisher = s->norm == FISHER_NORM;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        float f = 1.0f + eta * g[i] * g[i];
        e[i] = fisher ? g[i] / sqrtf(f) : g[i] / f;
    }
    optim_perturb_filter(o, p, e);
    double norm = vec_nrm2(n, e);
    float sc = sam_scale(norm, s->rho->v, s->eps->v);
    if (sc == 0) {
        vec_zero(n, e);
        return PERTURB_IN_E;
    }
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        e[i] = sc * (fisher ? g[i] / (1.0f + eta * g[i] * g[i]) : e[i]);
    optim_perturb_filter(o, p, e);
    return PERTURB_IN_E;
}

static void fishersam_step(struct optim *o, struct params *p, struct closure *f,
                           struct step_info *info)
{
    struct fishersam *s = o->priv;
    static const float plus[] = {1.0f};
    static const int pass[] = {PASS_EXTRA};
    bool one_group = optim_one_group(o, f->batch);
    float *gs = one_group ? p->g : s->gs;
    sam_family_passes(o, p, f, fishersam_perturb, plus, pass, 1, one_group ? NULL : s->g, &gs,
                      s->saved, s->e, info);
    o->base->ops->apply(o->base, p, gs);
}

const struct optim_ops optim_fishersam = {
    .name = "fishersam",
    .summary = "Fisher SAM: SAM in the ball of a diagonal Fisher metric f = 1 + eta g^2",
    .paper = "Kim, Li, Hu, Hospedales, ICML 2022, arXiv:2206.04920 (no public authors' code)",
    .keys = "rho [0.1]: radius of the Fisher ball (the paper's gamma)\n"
            "eta [1]: weight of g^2 in f = 1 + eta g^2; 0 = SAM\n"
            "norm [fisher]: fisher = e^T f e <= rho^2 (e = rho (g/f)/sqrt(g^T g/f)); euclidean "
            "= rho u/||u|| with u = g/f\n"
            "perturb_eps [1e-12]: added to the norm\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm (all "
            "but those)\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = fishersam_init,
    .step = fishersam_step,
};
