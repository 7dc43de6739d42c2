/* samar: SAM with an adaptive sharpness weight lambda, "SAMAR-like".
 * Paper: Zou, Deng, Sun, arXiv:2412.16854 ("SAM with adaptive regularization"). The paper's exact
 * rule (ratio definition, update factors, thresholds, bounds, initial lambda, frequency) is NOT
 * known here (algorithms.md 5.2); this file implements the stand-in of algorithms.md 5.3, with
 * every knob a key. Name runs "SAMAR-like", never "SAMAR".
 *
 * Direction: the WSAM-style weighted objective L + lambda * S (lambda = 1 is SAM):
 *     g = grad L_B(w);  e = rho g / (||g|| + 1e-12);  gs = grad L_B(w + e);  w = saved w (copy)
 *     coupled (decouple: false): base step along (1 - lambda) g + lambda gs
 *     decoupled (decouple: true): base step along g, then w -= lr * lambda * (gs - g)
 * Rule, after each step unless frozen (lambda of step t is used before it is updated):
 *     S_t = L_B(w + e) - L_B(w);  Shat_t = beta_s Shat_{t-1} + (1 - beta_s) S_t  (Shat_0 = S_0);
 *     Lhat_t likewise from L_B(w). Every `period` steps (when (t + 1) % period == 0) form r:
 *       rule trend      r = Shat_t / Shat_{t-tau}  (skipped while t < tau or Shat_{t-tau} <= 0)
 *       rule relative   r = Shat_t / Lhat_t        (sharpness relative to the loss)
 *       rule loss_ratio r = (Lhat_t + Shat_t) / Lhat_t, i.e. L_B(w + e) / L_B(w) smoothed
 *     if r > c_hi: lambda = min(lambda * up, lam_max);  if r < c_lo: lambda = max(lambda * down,
 *     lam_min). The thresholds' defaults suit `trend` (r near 1); set c_lo/c_hi for the others.
 * The history Shat_{t-tau..t} lives in a checkpointed buffer (as floats; the ratio reads them
 * back as stored, so a resumed run is bitwise the same), so tau + 1 <= parameters.
 * Keys: rho [0.05], lambda [1.0: initial], frozen [false: lambda stays at its initial value],
 * decouple [false], rule [trend], lam_min [0.1], lam_max [10], up [1.1], down [0.9],
 * c_lo [0.95], c_hi [1.05], tau [10 steps], beta_s [0.9], period [10 steps], m [0], base [sgd].
 * Defaults other than rho and lambda are samx's choices, not the paper's. lambda is reported
 * as an adaptive hyperparameter; the scalar knobs are schedulable.
 */
#include <float.h>

#include "blas.h"
#include "optim.h"
#include "tune.h"

enum { RULE_TREND, RULE_RELATIVE, RULE_LOSS_RATIO };
static const char *const samar_rules[] = {"trend", "relative", "loss_ratio", NULL};

struct samar {
    struct hparam *rho, *lambda, *lam_min, *lam_max, *up, *down, *c_lo, *c_hi, *beta_s, *lr;
    long tau, period;
    int rule;
    bool frozen, decouple;
    double s_hat, l_hat, started; /* checkpointed */
    float *hist;                  /* (tau + 1) used: Shat ring, indexed by step mod (tau + 1) */
    float *saved, *g, *gs;
};

static int samar_init(struct optim *o, struct cfg_node *c, struct err *e)
{
    struct samar *s = o->priv = xcalloc(1, sizeof *s);
    double lam0;
    if (!(s->rho = optim_hparam(o, c, "rho", 0.05, 0, 1e6, e)) ||
        cfg_num(c, "lambda", 1.0, &lam0, e) < 0 ||
        cfg_bool(c, "frozen", false, &s->frozen, e) < 0 ||
        cfg_bool(c, "decouple", false, &s->decouple, e) < 0 ||
        cfg_enum(c, "rule", samar_rules, RULE_TREND, &s->rule, e) < 0 ||
        !(s->lam_min = optim_hparam(o, c, "lam_min", 0.1, 0, 1e6, e)) ||
        !(s->lam_max = optim_hparam(o, c, "lam_max", 10, 0, 1e6, e)) ||
        !(s->up = optim_hparam(o, c, "up", 1.1, 1, 1e6, e)) ||
        !(s->down = optim_hparam(o, c, "down", 0.9, 0, 1, e)) ||
        !(s->c_lo = optim_hparam(o, c, "c_lo", 0.95, -1e6, 1e6, e)) ||
        !(s->c_hi = optim_hparam(o, c, "c_hi", 1.05, -1e6, 1e6, e)) ||
        cfg_int(c, "tau", 10, &s->tau, e) < 0 ||
        !(s->beta_s = optim_hparam(o, c, "beta_s", 0.9, 0, 1, e)) ||
        cfg_int(c, "period", 10, &s->period, e) < 0)
        return -1;
    if (lam0 < 0)
        return cfg_err(e, cfg_child(c, "lambda"), "'lambda' must be >= 0");
    if (s->tau < 1 || (size_t)s->tau + 1 > o->env.n)
        return cfg_err(e, cfg_child(c, "tau"), "'tau' must be in [1, %zu] (steps)",
                       o->env.n - 1);
    if (s->period < 1)
        return cfg_err(e, cfg_child(c, "period"), "'period' must be >= 1 (steps)");
    s->lambda = optim_adaptive(o, "lambda", lam0);
    s->lr = optim_hparam_find(o->base, "lr");
    SAMX_ASSERT(s->lr);
    optim_state(o, "sharpness_ema", &s->s_hat, -DBL_MAX, DBL_MAX, false);
    optim_state(o, "loss_ema", &s->l_hat, -DBL_MAX, DBL_MAX, false);
    optim_state(o, "ema_started", &s->started, 0, 1, true);
    s->hist = optim_buf(o, "sharpness_history");
    s->saved = optim_scratch(o);
    s->g = optim_scratch(o); /* no e: the perturbation is a scale of g, never formed */
    s->gs = optim_scratch(o);
    return 0;
}

static float samar_perturb(struct optim *o, const struct params *p, const float *g,
                         double gnorm, float *e)
{
    struct samar *s = o->priv;
    return sam_scale(gnorm, s->rho->v, 1e-12);
}

/* The lambda rule, after the step's update; S and L are this step's sharpness and clean loss. */
static void samar_adapt(struct optim *o, double S, double L)
{
    struct samar *s = o->priv;
    double b = s->beta_s->v;
    if (s->started == 0) {
        s->s_hat = S;
        s->l_hat = L;
        s->started = 1;
    } else {
        s->s_hat = b * s->s_hat + (1 - b) * S;
        s->l_hat = b * s->l_hat + (1 - b) * L;
    }
    long t = o->t, ring = s->tau + 1;
    s->hist[t % ring] = (float)s->s_hat;
    if ((t + 1) % s->period != 0)
        return;
    double r;
    if (s->rule == RULE_TREND) {
        if (t < s->tau)
            return;
        double prev = s->hist[(t - s->tau) % ring];
        if (!(prev > 0))
            return;
        r = s->s_hat / prev;
    } else {
        if (!(s->l_hat > 0))
            return;
        r = s->rule == RULE_RELATIVE ? s->s_hat / s->l_hat : (s->l_hat + s->s_hat) / s->l_hat;
    }
    double lam = s->lambda->v;
    if (r > s->c_hi->v) {
        lam *= s->up->v;
        lam = lam < s->lam_max->v ? lam : s->lam_max->v;
    } else if (r < s->c_lo->v) {
        lam *= s->down->v;
        lam = lam > s->lam_min->v ? lam : s->lam_min->v;
    }
    s->lambda->v = lam;
}

static void samar_step(struct optim *o, struct params *p, struct closure *f,
                       struct step_info *info)
{
    struct samar *s = o->priv;
    static const float plus[] = {1.0f};
    static const int pass[] = {PASS_EXTRA};
    size_t n = p->n;
    sam_family_passes(o, p, f, samar_perturb, plus, pass, 1, s->g, &s->gs, s->saved, NULL, info);
    double lam = s->lambda->v;
    if (!s->decouple) {
        vec_axpby(n, (float)(1 - lam), s->g, (float)lam, s->gs);
        o->base->ops->apply(o->base, p, s->gs);
    } else {
        o->base->ops->apply(o->base, p, s->g);
        float c = (float)(s->lr->v * lam);
        float *w = p->w;
        const float *g = s->g, *gs = s->gs;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
        for (size_t i = 0; i < n; i++)
            w[i] -= c * (gs[i] - g[i]);
    }
    if (!s->frozen)
        samar_adapt(o, info->loss_perturbed - info->loss, info->loss);
}

const struct optim_ops optim_samar = {
    .name = "samar",
    .summary = "SAMAR-like: SAM with a sharpness weight lambda adapted by a sharpness-ratio rule "
               "(a stand-in: the paper's exact rule is not known; algorithms.md 5.3)",
    .paper = "Zou, Deng, Sun, arXiv:2412.16854 (rule here is samx's stand-in, not the paper's)",
    .keys = "rho [0.05]: perturbation radius\n"
            "lambda [1.0]: initial sharpness weight (1 = SAM); reported per epoch as adapted\n"
            "frozen [false]: keep lambda at its initial value\n"
            "decouple [false]: false = base step along (1-lambda) g + lambda gs; true = base step "
            "along g, then w -= lr*lambda*(gs-g)\n"
            "rule [trend]: ratio r: trend = Shat_t/Shat_{t-tau}; relative = Shat/Lhat; "
            "loss_ratio = (Lhat+Shat)/Lhat (S = L(w+e)-L(w), hats = EMAs)\n"
            "lam_min [0.1], lam_max [10]: bounds on lambda\n"
            "up [1.1], down [0.9]: lambda *= up when r > c_hi, *= down when r < c_lo\n"
            "c_lo [0.95], c_hi [1.05]: thresholds on r\n"
            "tau [10]: steps between the two sharpness values of the trend ratio\n"
            "beta_s [0.9]: EMA factor of the sharpness and loss\n"
            "period [10]: steps between lambda updates\n"
            "m [0]: examples per perturbation (m-sharpness); 0 = the whole batch\n"
            "perturb [all]: all | norm (only normalization-layer tensors, SAM-ON) | no_norm "
            "(all but those)\n"
            "base [sgd]: the base optimizer (sgd or adamw) and its keys\n",
    .wrapper = true,
    .init = samar_init,
    .step = samar_step,
};
