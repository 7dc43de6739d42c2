/* test_optim: every optimizer on a quadratic, through the real optimizer/closure interface.
 *
 * The model is a struct params with two tensors, "0.weight" (3, 2) and "0.bias" (3), and the loss
 * of example j is l_j(w) = s_j * 1/2 sum_i a_i w_i^2, so the gradient of the mean over a
 * selection S is sbar(S) * a (.) w. With every s_j = 1 this is f(w) = 1/2 sum a_i w_i^2.
 * Checks:
 *   - one step (two for methods with state) against the closed form computed in double;
 *   - gradient evaluations per step (closure_grad's count);
 *   - the reduction identities of algorithms.md 12.7, bit for bit (memcmp) over several steps
 *     with momentum and weight decay on;
 *   - no drift: the base optimizer is always handed exactly the saved weights;
 *   - m-sharpness: m = batch is m = 0 bitwise, m < batch against a closed form, and methods that
 *     reject m > 0 say so; groups dealt out to simulated processes give one process's step;
 *   - over the registry: each method lowers the quadratic, rejects an unknown key with a
 *     suggestion, and reports a scheduled rho/gamma at its scheduled value.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "blas.h"
#include "cfg.h"
#include "optim.h"
#include "params.h"
#include "rng.h"
#include "tap.h"

#define NP 9       /* parameters: 6 weights then 3 biases */
#define NW 19      /* floats in p->w, padding included */
#define MAXB 8     /* largest batch */

/* Where logical parameter i lives in p->w: tensors start on 16-float boundaries (params.h). */
static const size_t OFF[NP] = {0, 1, 2, 3, 4, 5, 16, 17, 18};

static const double A[NP] = {1.0, 0.5, 2.0, 1.5, 0.8, 1.2, 0.6, 1.8, 0.9};
static const float W0[NP] = {0.7f, -1.2f, 0.4f, 0.9f, -0.5f, 1.1f, -0.3f, 0.8f, -1.0f};

struct quad {
    struct closure f;
    float s[MAXB];
    int n_first; /* examples evaluated with PASS_FIRST (the trainer's clean statistics) */
};

static double quad_sbar(const struct quad *q, const int *sel, int n)
{
    double sum = 0;
    if (!sel)
        n = q->f.batch;
    for (int j = 0; j < n; j++)
        sum += q->s[sel ? sel[j] : j];
    return sum / n;
}

static double quad_half(const struct params *p)
{
    double h = 0;
    for (int i = 0; i < NP; i++)
        h += 0.5 * A[i] * (double)p->w[OFF[i]] * p->w[OFF[i]];
    return h;
}

static double quad_grad(struct closure *f, struct params *p, int pass, const int *sel, int n)
{
    struct quad *q = f->ctx;
    if ((pass & ~PASS_LOCAL) == PASS_FIRST)
        q->n_first += sel ? n : f->batch;
    double sb = quad_sbar(q, sel, n);
    vec_zero(p->n, p->g);
    for (int i = 0; i < NP; i++)
        p->g[OFF[i]] = (float)(sb * A[i] * p->w[OFF[i]]);
    return sb * quad_half(p);
}

static void quad_losses(struct closure *f, const struct params *p, int pass, const int *sel,
                        int n, float *out)
{
    (void)pass;
    struct quad *q = f->ctx;
    if (!sel)
        n = f->batch;
    double h = quad_half(p);
    for (int j = 0; j < n; j++)
        out[j] = (float)(q->s[sel ? sel[j] : j] * h);
}

static void quad_init(struct quad *q, int batch)
{
    memset(q, 0, sizeof *q);
    q->f.grad = quad_grad;
    q->f.losses = quad_losses;
    q->f.batch = batch;
    q->f.ctx = q;
    for (int j = 0; j < MAXB; j++)
        q->s[j] = 1.0f;
}

/* When set, params_make marks the bias as a normalization tensor (optimizer.perturb tests). */
static bool bias_is_norm;

static void params_make(struct params *p)
{
    memset(p, 0, sizeof *p);
    params_add(p, "0.weight", 2, (const int[]){3, 2});
    params_add(p, "0.bias", 1, (const int[]){3});
    p->t[1].is_norm = bias_is_norm;
    params_alloc(p);
    SAMX_ASSERT(p->n == NW && OFF[NP - 1] == NW - 1);
    for (int i = 0; i < NP; i++)
        p->w[OFF[i]] = W0[i];
}

/* Build optimizer o from "optimizer: ..." YAML; the config is checked for unused keys. */
static int build(struct optim *o, struct cfg *c, const char *yaml, const struct params *p,
                 struct err *e)
{
    memset(e, 0, sizeof *e);
    memset(o, 0, sizeof *o);
    if (cfg_load_string(c, "t.yaml", yaml, e) < 0)
        return -1;
    struct optim_env env = {.n = p->n, .p = p, .clk = {.steps_per_epoch = 1, .epochs = 50},
                            .max_batch = MAXB, .seed = 7};
    struct cfg_node *on = cfg_map(c->root, "optimizer", e);
    if (!on || optim_init(o, on, &env, e) < 0)
        return -1;
    return cfg_check_unused(c, e);
}

/* One optimizer on the quadratic: weights W0, `batch` examples with every s_j = 1. */
struct fixture {
    struct params p;
    struct optim o;
    struct cfg c;
    struct err e;
    struct quad q;
};

/* (Re)build x's optimizer from yaml on its weights; 0, or -1 with the reason in x->e. */
static int fx_build(struct fixture *x, const char *yaml)
{
    optim_release(&x->o);
    cfg_free(&x->c);
    return build(&x->o, &x->c, yaml, &x->p, &x->e);
}

static int fx_open(struct fixture *x, const char *yaml, int batch)
{
    memset(x, 0, sizeof *x);
    params_make(&x->p);
    quad_init(&x->q, batch);
    return fx_build(x, yaml);
}

static void fx_close(struct fixture *x)
{
    optim_release(&x->o);
    cfg_free(&x->c);
    params_free(&x->p);
}

static void fx_weights(const struct fixture *x, float *w)
{
    for (int i = 0; i < NP; i++)
        w[i] = x->p.w[OFF[i]];
}

static void steps(struct optim *o, struct params *p, struct quad *q, long t0, int n)
{
    for (long t = t0; t < t0 + n; t++) {
        struct step_info info;
        optim_begin_step(o, t);
        optim_step(o, p, &q->f, &info);
    }
}

/* Run `yaml` for n steps from w0 (NULL: W0) on batch `batch`; weights into w, evals per step
 * returned. */
static double run_from(const char *yaml, int n, int batch, const float *w0, float *w)
{
    struct fixture fx;
    double evals = NAN;
    if (fx_open(&fx, yaml, batch) < 0) {
        ok(false, "build '%s': %s", yaml, fx.e.msg);
    } else {
        for (int i = 0; w0 && i < NP; i++)
            fx.p.w[OFF[i]] = w0[i];
        steps(&fx.o, &fx.p, &fx.q, 0, n);
        evals = fx.q.f.evals / n;
        fx_weights(&fx, w);
    }
    fx_close(&fx);
    return evals;
}

static double run(const char *yaml, int n, int batch, float *w)
{
    return run_from(yaml, n, batch, NULL, w);
}

/* ---- closed forms in double ---- */

static double dnorm(const double *x)
{
    double s = 0;
    for (int i = 0; i < NP; i++)
        s += x[i] * x[i];
    return sqrt(s);
}

static void dgrad(double sbar, const double *w, double *g)
{
    for (int i = 0; i < NP; i++)
        g[i] = sbar * A[i] * w[i];
}

/* w + rho g / (||g|| + delta) */
static void dascent(const double *w, const double *g, double rho, double delta, double *out)
{
    double s = rho / (dnorm(g) + delta);
    for (int i = 0; i < NP; i++)
        out[i] = w[i] + s * g[i];
}

/* First SGD step (momentum's first step is d itself): w - lr (d + wd w). */
static void dsgd(double *w, const double *d, double lr, double wd)
{
    for (int i = 0; i < NP; i++)
        w[i] -= lr * (d[i] + wd * w[i]);
}

static void dstart(double *w)
{
    for (int i = 0; i < NP; i++)
        w[i] = W0[i];
}

static void same(const float *got, const double *want, const char *what)
{
    double worst = 0;
    bool good = true;
    for (int i = 0; i < NP; i++) {
        double err = fabs(got[i] - want[i]);
        good = good && err <= 1e-7 + 1e-6 * fabs(want[i]);
        double rel = err / (fabs(want[i]) + 1e-12);
        worst = rel > worst ? rel : worst;
    }
    ok(good, "%s: matches the closed form (max rel err %.2g)", what, worst);
}

#define SGD "base: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.01}"

static void test_closed_forms(void)
{
    float w[NP];
    double x[NP], g[NP], gs[NP], gm[NP], pt[NP], d[NP];
    const double lr = 0.1, wd = 0.01;

    run("optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.01}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dsgd(x, g, lr, wd);
    same(w, x, "sgd one step");

    run("optimizer: {name: adamw, lr: 0.01, weight_decay: 0.1}", 1, 4, w);
    dstart(x), dgrad(1, x, g);
    for (int i = 0; i < NP; i++) {
        double m = 0.1 * g[i], v = 0.001 * g[i] * g[i];
        x[i] *= 1 - 0.01 * 0.1;
        x[i] -= 0.01 / 0.1 * m / (sqrt(v) / sqrt(0.001) + 1e-8);
    }
    same(w, x, "adamw one step");

    run("optimizer: {name: sam, rho: 0.2, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.2, 1e-12, pt), dgrad(1, pt, gs), dsgd(x, gs, lr, wd);
    same(w, x, "sam one step");

    /* asam, official scaling: t = |w| + eta on the weight (first 6), 1 on the biases. */
    run("optimizer: {name: asam, rho: 0.5, eta: 0.01, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g);
    {
        double tg[NP], t[NP];
        for (int i = 0; i < NP; i++) {
            t[i] = i < 6 ? fabs(x[i]) + 0.01 : 1;
            tg[i] = t[i] * g[i];
        }
        double s = 0.5 / (dnorm(tg) + 1e-16);
        for (int i = 0; i < NP; i++)
            pt[i] = x[i] + s * t[i] * t[i] * g[i];
    }
    dgrad(1, pt, gs), dsgd(x, gs, lr, wd);
    same(w, x, "asam (scale weights) one step");

    run("optimizer: {name: asam, rho: 0.5, scale: all, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g);
    {
        double tg[NP];
        for (int i = 0; i < NP; i++)
            tg[i] = fabs(x[i]) * g[i];
        double s = 0.5 / (dnorm(tg) + 1e-12);
        for (int i = 0; i < NP; i++)
            pt[i] = x[i] + s * x[i] * x[i] * g[i];
    }
    dgrad(1, pt, gs), dsgd(x, gs, lr, wd);
    same(w, x, "asam (scale all) one step");

    /* wsam coupled, gamma 0.9: alpha = 9, d = -8 g + 9 gs. */
    run("optimizer: {name: wsam, rho: 0.1, gamma: 0.9, decouple: false, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-12, pt), dgrad(1, pt, gs);
    for (int i = 0; i < NP; i++)
        d[i] = -8 * g[i] + 9 * gs[i];
    dsgd(x, d, lr, wd);
    same(w, x, "wsam coupled one step");

    /* wsam decoupled with clipping: both gradients clipped to 0.5, base step along g, then a
     * plain step lr * alpha * (gs - g). */
    run("optimizer: {name: wsam, rho: 0.1, gamma: 0.8, max_norm: 0.5, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-12, pt), dgrad(1, pt, gs);
    {
        double cg = 0.5 / (dnorm(g) + 1e-6), cs = 0.5 / (dnorm(gs) + 1e-6);
        for (int i = 0; i < NP; i++)
            g[i] *= cg < 1 ? cg : 1, gs[i] *= cs < 1 ? cs : 1;
        dsgd(x, g, lr, wd);
        for (int i = 0; i < NP; i++)
            x[i] -= lr * 4 * (gs[i] - g[i]);
    }
    same(w, x, "wsam decoupled, max_norm one step");

    double ev = run("optimizer: {name: crsam, rho: 0.1, gamma: 0.3, beta: 0.2, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-12, pt), dgrad(1, pt, gs);
    dascent(x, g, -0.1, 1e-12, pt), dgrad(1, pt, gm);
    for (int i = 0; i < NP; i++)
        d[i] = gs[i] + 0.3 * (gs[i] + gm[i] - 2 * g[i]) + 0.2 * (gs[i] - gm[i]);
    dsgd(x, d, lr, wd);
    same(w, x, "crsam one step");
    approx(ev, 3, 0, 0, "crsam: 3 gradient evaluations per step");

    run("optimizer: {name: samar, rho: 0.1, lambda: 2.0, frozen: true, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-12, pt), dgrad(1, pt, gs);
    for (int i = 0; i < NP; i++)
        d[i] = -g[i] + 2 * gs[i];
    dsgd(x, d, lr, wd);
    same(w, x, "samar (lambda 2, coupled) one step");

    run("optimizer: {name: gsam, rho: 0.1, alpha: 0.4, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-12, pt), dgrad(1, pt, gs);
    {
        double dot = 0, ng = dnorm(g), ngs = dnorm(gs);
        for (int i = 0; i < NP; i++)
            dot += g[i] * gs[i];
        double cosine = dot / (ng * ngs + 1e-12);
        for (int i = 0; i < NP; i++)
            d[i] = gs[i] - 0.4 * (g[i] - cosine * ng * gs[i] / (ngs + 1e-12));
    }
    dsgd(x, d, lr, wd);
    same(w, x, "gsam one step");

    /* vasso, two steps without momentum: d1 = g1, d2 = (1 - theta) d1 + theta g2. */
    run("optimizer: {name: vasso, rho: 0.1, theta: 0.4, base: {name: sgd, lr: 0.1}}", 2, 4, w);
    {
        double d1[NP];
        dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-7, pt), dgrad(1, pt, gs);
        dsgd(x, gs, lr, 0);
        memcpy(d1, g, sizeof d1);
        dgrad(1, x, g);
        for (int i = 0; i < NP; i++)
            d[i] = 0.6 * d1[i] + 0.4 * g[i];
        dascent(x, d, 0.1, 1e-7, pt), dgrad(1, pt, gs), dsgd(x, gs, lr, 0);
    }
    same(w, x, "vasso two steps");

    /* looksam k = 2: a SAM step keeping gv per tensor, then g + alpha ||g||/||gv|| gv. */
    run("optimizer: {name: looksam, rho: 0.1, k: 2, alpha: 0.7, base: {name: sgd, lr: 0.1}}", 2,
        4, w);
    {
        double gv[NP];
        dstart(x), dgrad(1, x, g), dascent(x, g, 0.1, 1e-8, pt), dgrad(1, pt, gs);
        for (int lo = 0, hi = 6; lo < NP; lo = hi, hi = NP) {
            double gg = 0, ggs = 0;
            for (int i = lo; i < hi; i++)
                gg += g[i] * g[i], ggs += g[i] * gs[i];
            for (int i = lo; i < hi; i++)
                gv[i] = gs[i] - ggs / gg * g[i];
        }
        dsgd(x, gs, lr, 0);
        dgrad(1, x, g);
        for (int lo = 0, hi = 6; lo < NP; lo = hi, hi = NP) {
            double ng = 0, nv = 0;
            for (int i = lo; i < hi; i++)
                ng += g[i] * g[i], nv += gv[i] * gv[i];
            for (int i = lo; i < hi; i++)
                d[i] = g[i] + 0.7 * sqrt(ng) / (sqrt(nv) + 1e-8) * gv[i];
        }
        dsgd(x, d, lr, 0);
    }
    same(w, x, "looksam two steps (k = 2)");
}

/* ESAM on a batch of 8 examples with distinct weights s_j: SDS keeps the examples whose loss
 * rose more than the 4th largest rise, i.e. the 3 largest s_j. */
static void test_esam(void)
{
    static const float s[MAXB] = {1.0f, 1.6f, 0.4f, 1.3f, 0.7f, 1.9f, 0.9f, 1.1f};
    struct fixture fx;
    bool built = fx_open(&fx, "optimizer: {name: esam, rho: 0.1, beta: 1.0, gamma: 0.5, " SGD "}",
                         8) == 0;
    memcpy(fx.q.s, s, sizeof s);
    if (!ok(built, "esam builds: %s", fx.e.msg)) {
        fx_close(&fx);
        return;
    }
    steps(&fx.o, &fx.p, &fx.q, 0, 1);
    double x[NP], g[NP], gs[NP], pt[NP], sbar = 0;
    for (int j = 0; j < 8; j++)
        sbar += s[j] / 8.0;
    dstart(x), dgrad(sbar, x, g), dascent(x, g, 0.1, 1e-7, pt);
    dgrad((1.6 + 1.9 + 1.3) / 3, pt, gs), dsgd(x, gs, 0.1, 0.01);
    float got[NP];
    fx_weights(&fx, got);
    same(got, x, "esam (SDS, gamma 0.5) one step");
    approx(fx.q.f.evals, 1 + 3.0 / 8, 1e-12, 0, "esam: 1 + kept/batch = 1.375 gradient evaluations");
    fx_close(&fx);

    /* SWP: with beta < 1 some steps perturb fewer tensors, so the run differs from beta = 1. */
    float w1[NP], w2[NP];
    run("optimizer: {name: esam, beta: 1.0, gamma: 1.0, " SGD "}", 20, 4, w1);
    run("optimizer: {name: esam, beta: 0.5, gamma: 1.0, " SGD "}", 20, 4, w2);
    ok(memcmp(w1, w2, sizeof w1) != 0, "esam: beta 0.5 (SWP) changes the trajectory");
    double a = run("optimizer: {name: esam, beta: 0.5, gamma: 1.0, " SGD "}", 20, 4, w2);
    approx(a, 2, 0, 0, "esam: gamma >= 0.99 keeps every example (2 evaluations per step)");
}

static void test_evals(void)
{
    float w[NP];
    struct { const char *yaml; double want; } cases[] = {
        {"optimizer: {name: sgd}", 1},
        {"optimizer: {name: adamw}", 1},
        {"optimizer: {name: sam}", 2},
        {"optimizer: {name: asam}", 2},
        {"optimizer: {name: wsam}", 2},
        {"optimizer: {name: crsam}", 3},
        {"optimizer: {name: samar}", 2},
        {"optimizer: {name: gsam}", 2},
        {"optimizer: {name: vasso}", 2},
        {"optimizer: {name: looksam, k: 5}", 1.2},
        {"optimizer: {name: looksam, k: 1}", 2},
        {"optimizer: {name: fsam}", 2},
        {"optimizer: {name: msam, " SGD "}", 1},
        {"optimizer: {name: gam}", 4},
        {"optimizer: {name: lookbehind}", 4},
        {"optimizer: {name: lookbehind, k: 3}", 6},
        {"optimizer: {name: fishersam}", 2},
        {"optimizer: {name: rsam}", 2},
        {"optimizer: {name: rsam, m: 2}", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double ev = run(cases[i].yaml, 10, 4, w);
        approx(ev, cases[i].want, 1e-12, 0, "%s: %g gradient evaluations per step",
               cases[i].yaml, cases[i].want);
    }
}

/* Weights of A and B after `n` steps from W0, compared with memcmp. reset_pm1 sets the weights
 * to +-1 (the signs of W0) before every step, in both runs. */
static void identical(const char *ya, const char *yb, int n, int batch, bool reset_pm1,
                      const char *what)
{
    struct params pa, pb;
    struct optim oa, ob;
    struct cfg ca, cb;
    struct err e;
    struct quad q;
    params_make(&pa);
    params_make(&pb);
    quad_init(&q, batch);
    if (build(&oa, &ca, ya, &pa, &e) < 0 || build(&ob, &cb, yb, &pb, &e) < 0) {
        ok(false, "%s: build: %s", what, e.msg);
        return;
    }
    bool same_w = true;
    for (long t = 0; t < n; t++) {
        if (reset_pm1)
            for (int i = 0; i < NP; i++)
                pa.w[OFF[i]] = pb.w[OFF[i]] = W0[i] < 0 ? -1.0f : 1.0f;
        steps(&oa, &pa, &q, t, 1);
        steps(&ob, &pb, &q, t, 1);
        same_w = same_w && memcmp(pa.w, pb.w, sizeof(float) * pa.n) == 0;
    }
    ok(same_w, "%s: bitwise identical over %d steps", what, n);
    optim_release(&oa);
    optim_release(&ob);
    cfg_free(&ca);
    cfg_free(&cb);
    params_free(&pa);
    params_free(&pb);
}

#define MOM "base: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}"
#define MOMA "base: {name: adamw, lr: 0.01, weight_decay: 0.05}"

static void test_identities(void)
{
    identical("optimizer: {name: sam, rho: 0, " MOM "}",
              "optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}", 6, 4,
              false, "sam rho=0 = sgd");
    identical("optimizer: {name: sam, rho: 0, " MOMA "}",
              "optimizer: {name: adamw, lr: 0.01, weight_decay: 0.05}", 6, 4, false,
              "sam rho=0 = adamw");
    identical("optimizer: {name: wsam, rho: 0.1, gamma: 0.5, decouple: false, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "wsam coupled gamma=0.5 = sam");
    identical("optimizer: {name: wsam, rho: 0.1, gamma: 0, " MOM "}",
              "optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}", 6, 4,
              false, "wsam decoupled gamma=0 = sgd");
    identical("optimizer: {name: wsam, rho: 0.1, gamma: 0, " MOMA "}",
              "optimizer: {name: adamw, lr: 0.01, weight_decay: 0.05}", 6, 4, false,
              "wsam decoupled gamma=0 = adamw");
    identical("optimizer: {name: crsam, rho: 0.1, gamma: 0, beta: 0, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "crsam gamma=beta=0 = sam");
    identical("optimizer: {name: gsam, rho: 0.1, alpha: 0, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false, "gsam alpha=0 = sam");
    identical("optimizer: {name: vasso, rho: 0.1, theta: 1, perturb_eps: 1.0e-12, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "vasso theta=1 (perturb_eps 1e-12) = sam");
    identical("optimizer: {name: asam, rho: 0.1, scale: all, eta: 0, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, true,
              "asam scale=all eta=0 at |w|=1 = sam");
    identical("optimizer: {name: asam, rho: 0.1, eta: 0, perturb_eps: 1.0e-12, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, true,
              "asam scale=weights eta=0 perturb_eps=1e-12 at |w|=1 = sam");
    identical("optimizer: {name: samar, rho: 0.1, lambda: 1, frozen: true, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "samar frozen at lambda=1 = sam");
    identical("optimizer: {name: looksam, rho: 0.1, k: 1, perturb_eps: 1.0e-12, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "looksam k=1 (perturb_eps 1e-12) = sam");
    identical("optimizer: {name: esam, rho: 0.1, beta: 1, gamma: 1, perturb_eps: 1.0e-12, " MOM
              "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "esam beta=gamma=1 (perturb_eps 1e-12) = sam");
    identical("optimizer: {name: fsam, rho: 0.1, sigma: 0, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false, "fsam sigma=0 = sam");
    identical("optimizer: {name: fsam, rho: 0.1, sigma: 0, ema: code, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "fsam sigma=0 (ema: code) = sam");
    identical("optimizer: {name: msam, rho: 0, " MOM "}",
              "optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}", 6, 4,
              false, "msam rho=0 = sgd");
    identical("optimizer: {name: gam, rho: 0.1, alpha: 1, gamma: 0, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "gam alpha=1 gamma=0 = sam");
    identical("optimizer: {name: gam, rho: 0.1, alpha: 1, gamma: 0, " MOMA "}",
              "optimizer: {name: sam, rho: 0.1, " MOMA "}", 6, 4, false,
              "gam alpha=1 gamma=0 = sam (adamw)");
    identical("optimizer: {name: lookbehind, rho: 0.1, k: 1, alpha: 1.0, perturb_eps: 1.0e-12, "
              MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "lookbehind k=1 alpha=1 (perturb_eps 1e-12) = sam");
    identical("optimizer: {name: fishersam, rho: 0.1, eta: 0, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false, "fishersam eta=0 = sam");
    identical("optimizer: {name: fishersam, rho: 0.1, eta: 0, norm: euclidean, m: 2, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, m: 2, " MOM "}", 6, 8, false,
              "fishersam eta=0 (euclidean, m=2) = sam m=2");
    identical("optimizer: {name: rsam, rho: 0.1, sigma: 0, lambda: 1, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false,
              "rsam sigma=0 lambda=1 = sam");
    identical("optimizer: {name: rsam, rho: 0.1, sigma: 0, lambda: 1, " MOMA "}",
              "optimizer: {name: sam, rho: 0.1, " MOMA "}", 6, 4, false,
              "rsam sigma=0 lambda=1 = sam (adamw)");
    identical("optimizer: {name: rsam, rho: 0.1, sigma: 0, lambda: 1, m: 3, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, m: 3, " MOM "}", 6, 8, false,
              "rsam sigma=0 lambda=1 m=3 = sam m=3");
    identical("optimizer: {name: gsam, rho: 0.1, adaptive: true, " MOM "}",
              "optimizer: {name: gsam, rho: 0.1, " MOM "}", 6, 4, true,
              "gsam adaptive at |w|=1 = gsam");
    identical("optimizer: {name: wsam, rho: 0.1, adaptive: true, " MOM "}",
              "optimizer: {name: wsam, rho: 0.1, " MOM "}", 6, 4, true,
              "wsam adaptive at |w|=1 = wsam");
    /* m-sharpness: m = batch is the same computation as m = 0. */
    static const char *const msharp[] = {"sam",  "asam", "wsam",      "crsam",
                                         "samar", "gsam", "fishersam", "rsam"};
    for (int i = 0; i < 8; i++) {
        char a[256], b[256];
        snprintf(a, sizeof a, "optimizer: {name: %s, m: 4, " MOM "}", msharp[i]);
        snprintf(b, sizeof b, "optimizer: {name: %s, m: 0, " MOM "}", msharp[i]);
        char what[64];
        snprintf(what, sizeof what, "%s m=batch = m=0", msharp[i]);
        identical(a, b, 6, 4, false, what);
    }
    identical("optimizer: {name: gsam, rho: 0.1, alpha: 0, m: 2, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, m: 2, " MOM "}", 6, 8, false,
              "gsam alpha=0 m=2 = sam m=2");
    identical("optimizer: {name: crsam, rho: 0.1, gamma: 0, beta: 0, m: 3, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, m: 3, " MOM "}", 6, 8, false,
              "crsam gamma=beta=0 m=3 = sam m=3");
}

/* w + rho t^2 g / (||t g|| + 1e-12), t = |w| (davda54 / GSAM / atorch adaptive=True). */
static void dascent_adaptive(const double *w, const double *g, double rho, double *out)
{
    double tg[NP];
    for (int i = 0; i < NP; i++)
        tg[i] = fabs(w[i]) * g[i];
    double s = rho / (dnorm(tg) + 1e-12);
    for (int i = 0; i < NP; i++)
        out[i] = w[i] + s * g[i] * w[i] * w[i];
}

/* The settings and methods of the SAM family's second round: un-normalized SAM clipped to the
 * ball, adaptive GSAM and WSAM, F-SAM, Momentum-SAM, GAM. */
static void test_closed_forms_2(void)
{
    float w[NP], w0[NP];
    double x[NP], g[NP], gs[NP], pt[NP], d[NP];
    const double lr = 0.1, wd = 0.01;

    /* clip: ||g|| = 2.85 > 1 at W0, so e = rho g/||g|| (no denominator term) ... */
    run("optimizer: {name: sam, rho: 0.2, normalize: false, clip: true, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent(x, g, 0.2, 0, pt), dgrad(1, pt, gs), dsgd(x, gs, lr, wd);
    same(w, x, "sam normalize: false, clip: true, ||g|| > 1 one step");
    /* ... and at 0.2 W0 (||g|| = 0.57) e = rho g, un-normalized SAM's. */
    for (int i = 0; i < NP; i++)
        w0[i] = 0.2f * W0[i];
    run_from("optimizer: {name: sam, rho: 0.2, normalize: false, clip: true, " SGD "}", 1, 4, w0,
             w);
    for (int i = 0; i < NP; i++)
        x[i] = w0[i];
    dgrad(1, x, g);
    ok(dnorm(g) < 1, "clip fixture: ||g|| = %.3g < 1", dnorm(g));
    for (int i = 0; i < NP; i++)
        pt[i] = x[i] + 0.2 * g[i];
    dgrad(1, pt, gs), dsgd(x, gs, lr, wd);
    same(w, x, "sam normalize: false, clip: true, ||g|| < 1 one step");

    run("optimizer: {name: gsam, rho: 0.1, alpha: 0.4, adaptive: true, " SGD "}", 1, 4, w);
    dstart(x), dgrad(1, x, g), dascent_adaptive(x, g, 0.1, pt), dgrad(1, pt, gs);
    {
        double dot = 0, ng = dnorm(g), ngs = dnorm(gs);
        for (int i = 0; i < NP; i++)
            dot += g[i] * gs[i];
        double cosine = dot / (ng * ngs + 1e-12);
        for (int i = 0; i < NP; i++)
            d[i] = gs[i] - 0.4 * (g[i] - cosine * ng * gs[i] / (ngs + 1e-12));
    }
    dsgd(x, d, lr, wd);
    same(w, x, "gsam adaptive one step");

    run("optimizer: {name: wsam, rho: 0.1, gamma: 0.9, decouple: false, adaptive: true, " SGD "}",
        1, 4, w);
    dstart(x), dgrad(1, x, g), dascent_adaptive(x, g, 0.1, pt), dgrad(1, pt, gs);
    for (int i = 0; i < NP; i++)
        d[i] = -8 * g[i] + 9 * gs[i];
    dsgd(x, d, lr, wd);
    same(w, x, "wsam coupled adaptive one step");

    /* fsam, two steps of plain SGD: the paper's average (m includes this step's g) and the
     * authors' code (d = g - sigma m_{t-1}; the first step is SAM, m_0 = g). */
    for (int code = 0; code < 2; code++) {
        double m[NP] = {0}, dd[NP];
        run(code ? "optimizer: {name: fsam, rho: 0.1, sigma: 0.8, lambda: 0.6, ema: code, "
                   "base: {name: sgd, lr: 0.1}}"
                 : "optimizer: {name: fsam, rho: 0.1, sigma: 0.8, lambda: 0.6, "
                   "base: {name: sgd, lr: 0.1}}",
            2, 4, w);
        dstart(x);
        for (int t = 0; t < 2; t++) {
            dgrad(1, x, g);
            for (int i = 0; i < NP; i++) {
                if (!code) {
                    m[i] = 0.6 * m[i] + 0.4 * g[i];
                    dd[i] = g[i] - 0.8 * m[i];
                } else if (t == 0) {
                    m[i] = dd[i] = g[i];
                } else {
                    dd[i] = g[i] - 0.8 * m[i];
                    m[i] = 0.6 * m[i] + 0.4 * g[i];
                }
            }
            double sc = 0.1 / (dnorm(dd) + 1e-12);
            for (int i = 0; i < NP; i++)
                pt[i] = x[i] + sc * dd[i];
            dgrad(1, pt, gs), dsgd(x, gs, lr, 0);
        }
        same(w, x, code ? "fsam (ema: code) two steps" : "fsam (ema: paper) two steps");
    }

    /* msam, two steps: the first has no momentum yet (no perturbation); the second takes the
     * gradient at w1 - rho v/||v|| and weight decay there (decay_at: perturbed). */
    for (int at_w = 0; at_w < 2; at_w++) {
        double v[NP];
        double ev = run(at_w ? "optimizer: {name: msam, rho: 0.3, decay_at: w, " SGD "}"
                             : "optimizer: {name: msam, rho: 0.3, " SGD "}",
                        2, 4, w);
        dstart(x), dgrad(1, x, g);
        for (int i = 0; i < NP; i++) {
            v[i] = g[i] + wd * x[i];
            x[i] -= lr * v[i];
        }
        double sc = 0.3 / (dnorm(v) + 1e-12);
        for (int i = 0; i < NP; i++)
            pt[i] = x[i] - sc * v[i];
        dgrad(1, pt, gs);
        for (int i = 0; i < NP; i++) {
            v[i] = 0.9 * v[i] + gs[i] + wd * (at_w ? x[i] : pt[i]);
            x[i] -= lr * v[i];
        }
        same(w, x, at_w ? "msam (decay_at: w) two steps" : "msam (decay at the perturbed "
                                                           "weights) two steps");
        approx(ev, 1, 0, 0, "msam: 1 gradient evaluation per step");
    }

    double ev = run("optimizer: {name: gam, rho: 0.05, rho_norm: 0.2, alpha: 0.6, beta: 0.3, "
                    "gamma: 0.1, " SGD "}", 1, 4, w);
    {
        double g0[NP], g1[NP], g2[NP], g3[NP], u[NP], w2[NP], r[NP];
        dstart(x), dgrad(1, x, g0), dascent(x, g0, 0.05, 1e-12, pt), dgrad(1, pt, g1);
        for (int i = 0; i < NP; i++)
            u[i] = g1[i] - g0[i];
        dascent(x, u, 0.2, 1e-12, w2), dgrad(1, w2, g2);
        dascent(w2, g2, 0.05, 1e-12, pt), dgrad(1, pt, g3);
        double dot = 0;
        for (int i = 0; i < NP; i++) {
            r[i] = g0[i] + 0.7 * g2[i];
            d[i] = 0.6 * g1[i] + 0.4 * g3[i];
            dot += r[i] * d[i];
        }
        double nd = dnorm(d), nr = dnorm(r), cosine = dot / (nd * nr + 1e-12);
        for (int i = 0; i < NP; i++)
            d[i] -= 0.1 * (r[i] - cosine * nr * d[i] / (nd + 1e-12));
        dsgd(x, d, lr, wd);
    }
    same(w, x, "gam one step");

    /* fishersam: f = 1 + eta g^2; fisher: e = rho (g/f)/sqrt(sum g^2/f); euclidean: rho u/||u||,
     * u = g/f (eta 2 so that f is far from 1 at W0). */
    for (int euclid = 0; euclid < 2; euclid++) {
        run(euclid ? "optimizer: {name: fishersam, rho: 0.1, eta: 2, norm: euclidean, " SGD "}"
                   : "optimizer: {name: fishersam, rho: 0.1, eta: 2, " SGD "}",
            1, 4, w);
        double u[NP], q = 0;
        dstart(x), dgrad(1, x, g);
        for (int i = 0; i < NP; i++) {
            u[i] = g[i] / (1 + 2 * g[i] * g[i]);
            q += euclid ? u[i] * u[i] : g[i] * g[i] / (1 + 2 * g[i] * g[i]);
        }
        for (int i = 0; i < NP; i++)
            pt[i] = x[i] + 0.1 * u[i] / (sqrt(q) + 1e-12);
        dgrad(1, pt, gs), dsgd(x, gs, lr, wd);
        same(w, x, euclid ? "fishersam (norm: euclidean) one step"
                          : "fishersam (fisher ball) one step");
    }

    /* lookbehind k = 2 over plain SGD: a1 = w + e(g(w)), theta1 = w - lr g(a1); a2 = a1 +
     * e(g(a1)), theta2 = theta1 - lr g(a2); then w = alpha theta2 + (1 - alpha) w (fixed 0.3), or
     * per tensor alpha = (cos(theta1 - w, theta2 - w) + 1)/2 (adaptive). */
    for (int adaptive = 0; adaptive < 2; adaptive++) {
        double a[NP], th[NP], th1[NP], phi[NP];
        ev = run(adaptive ? "optimizer: {name: lookbehind, rho: 0.1, k: 2, base: {name: sgd, "
                            "lr: 0.1}}"
                          : "optimizer: {name: lookbehind, rho: 0.1, k: 2, alpha: 0.3, "
                            "base: {name: sgd, lr: 0.1}}",
                 1, 4, w);
        dstart(phi), dstart(a), dstart(th);
        for (int k = 0; k < 2; k++) {
            dgrad(1, a, g), dascent(a, g, 0.1, 1e-16, pt);
            memcpy(a, pt, sizeof a);
            dgrad(1, a, gs), dsgd(th, gs, lr, 0);
            if (k == 0)
                memcpy(th1, th, sizeof th1);
        }
        for (int lo = 0, hi = 6; lo < NP; lo = hi, hi = NP) {
            double xy = 0, xx = 0, yy = 0;
            for (int i = lo; i < hi; i++) {
                xy += (th1[i] - phi[i]) * (th[i] - phi[i]);
                xx += (th1[i] - phi[i]) * (th1[i] - phi[i]);
                yy += (th[i] - phi[i]) * (th[i] - phi[i]);
            }
            double al = adaptive ? (xy / sqrt(xx * yy) + 1) / 2 : 0.3;
            for (int i = lo; i < hi; i++)
                x[i] = al * th[i] + (1 - al) * phi[i];
        }
        same(w, x, adaptive ? "lookbehind (k 2, adaptive alpha) one step"
                            : "lookbehind (k 2, alpha 0.3) one step");
        approx(ev, 4, 0, 0, "lookbehind k=2: 4 gradient evaluations per step");
    }
    approx(ev, 4, 0, 0, "gam: 4 gradient evaluations per step");
}

/* optimizer.perturb (SAM-ON): with the bias marked as a normalization tensor, `norm` perturbs
 * the bias only, with the norm of its gradient; `no_norm` the weight only. */
static void test_perturb_filter(void)
{
    float w[NP];
    double x[NP], g[NP], gs[NP], pt[NP];
    bias_is_norm = true;
    for (int only_norm = 0; only_norm < 2; only_norm++) {
        run(only_norm ? "optimizer: {name: sam, rho: 0.2, perturb: norm, " SGD "}"
                      : "optimizer: {name: sam, rho: 0.2, perturb: no_norm, " SGD "}",
            1, 4, w);
        dstart(x), dgrad(1, x, g);
        double gsel[NP];
        for (int i = 0; i < NP; i++)
            gsel[i] = (i >= 6) == only_norm ? g[i] : 0;
        dascent(x, gsel, 0.2, 1e-12, pt), dgrad(1, pt, gs), dsgd(x, gs, 0.1, 0.01);
        same(w, x, only_norm ? "sam perturb: norm one step" : "sam perturb: no_norm one step");
    }
    /* every method with a perturbation takes the filter; its ascent moves only the selection */
    run("optimizer: {name: gsam, rho: 0.1, alpha: 0, perturb: norm, " SGD "}", 1, 4, w);
    {
        float ws[NP];
        run("optimizer: {name: sam, rho: 0.1, perturb: norm, " SGD "}", 1, 4, ws);
        ok(memcmp(w, ws, sizeof w) == 0, "gsam alpha=0 perturb: norm = sam perturb: norm");
    }
    identical("optimizer: {name: asam, rho: 0.1, scale: all, eta: 0, perturb: norm, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, perturb: norm, " MOM "}", 6, 4, true,
              "asam scale=all eta=0 at |w|=1, perturb: norm = sam perturb: norm");
    identical("optimizer: {name: sam, rho: 0.1, m: 2, perturb: no_norm, " MOM "}",
              "optimizer: {name: crsam, rho: 0.1, gamma: 0, beta: 0, m: 2, perturb: no_norm, "
              MOM "}", 6, 8, false, "crsam gamma=beta=0 m=2 perturb: no_norm = sam");
    identical("optimizer: {name: sam, rho: 0.1, perturb: all, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, " MOM "}", 6, 4, false, "perturb: all = default");
    /* rho on the normalization tensors only moves the run off plain SAM's */
    {
        float wa[NP], wb[NP];
        static const char *const names[] = {"wsam", "crsam",      "samar", "vasso", "looksam",
                                            "esam", "fsam",       "msam",  "gam",
                                            "lookbehind", "fishersam", "rsam"};
        for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
            char ya[256], yb[256];
            snprintf(ya, sizeof ya, "optimizer: {name: %s, rho: 0.5, perturb: norm, " MOM "}",
                     names[k]);
            snprintf(yb, sizeof yb, "optimizer: {name: %s, rho: 0.5, perturb: no_norm, " MOM "}",
                     names[k]);
            run(ya, 4, 4, wa);
            run(yb, 4, 4, wb);
            ok(memcmp(wa, wb, sizeof wa) != 0, "%s: perturb norm and no_norm differ", names[k]);
        }
    }
    bias_is_norm = false;
    struct fixture fx;
    int rc = fx_open(&fx, "optimizer: {name: sam, perturb: norm}", 4);
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "t.yaml:1:") &&
           strstr(fx.e.msg, "selects no parameter"),
       "perturb: norm without normalization tensors is a config error: %s", fx.e.msg);
    rc = fx_build(&fx, "optimizer: {name: sam, perturb: bn}");
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "no_norm"),
       "perturb: an unknown filter lists the choices: %s", fx.e.msg);
    rc = fx_build(&fx, "optimizer: {name: sam, clip: true}");
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "normalize: false"),
       "clip without normalize: false is a config error: %s", fx.e.msg);
    rc = fx_build(&fx, "optimizer: {name: msam, base: {name: adamw}}");
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "momentum"),
       "msam over adamw is a config error: %s", fx.e.msg);
    static const char *const rejects[] = {"fsam", "msam", "gam", "lookbehind"};
    for (int i = 0; i < 4; i++) {
        char y[128];
        snprintf(y, sizeof y, "optimizer: {name: %s, m: 2, %s}", rejects[i], MOM);
        rc = fx_build(&fx, y);
        ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "m-sharpness"),
           "%s rejects m > 0: %s", rejects[i], fx.e.msg);
    }
    fx_close(&fx);
}

/* rsam's noise for one group, in double, from samx's stream as rsam.c documents it: tensor by
 * tensor ("0.weight" (3, 2) then "0.bias" (3)), one normal per element; filter: scaled by the norm
 * of the element's row of the weight, or by the bias's norm + 1e-16. */
static void drsam_noise(struct rng *r, const double *x, double sigma, bool filter, double *delta)
{
    for (int i = 0; i < NP; i++) {
        double scale = 1;
        if (filter && i < 6) {
            int row = i / 2;
            scale = sqrt(x[2 * row] * x[2 * row] + x[2 * row + 1] * x[2 * row + 1]);
        } else if (filter) {
            scale = sqrt(x[6] * x[6] + x[7] * x[7] + x[8] * x[8]) + 1e-16;
        }
        delta[i] = sigma * scale * rng_normal(r);
    }
}

/* rsam: one R-SAM ascent in double: gt at x + delta, d = lambda gt + delta, the gradient at
 * x + rho d/(||d|| + 1e-12) into gs. only_bias zeroes delta and d off the bias (perturb: norm). */
static void drsam(double sbar, const double *x, const double *delta_in, double rho, double lam,
                  bool only_bias, double *gs)
{
    double delta[NP], pt[NP], gt[NP], d[NP];
    for (int i = 0; i < NP; i++) {
        delta[i] = only_bias && i < 6 ? 0 : delta_in[i];
        pt[i] = x[i] + delta[i];
    }
    dgrad(sbar, pt, gt);
    for (int i = 0; i < NP; i++)
        d[i] = only_bias && i < 6 ? 0 : lam * gt[i] + delta[i];
    dascent(x, d, rho, 1e-12, pt), dgrad(sbar, pt, gs);
}

#define PLAIN_SGD "base: {name: sgd, lr: 0.1, weight_decay: 0.01}"

static void test_rsam(void)
{
    float w[NP], w2[NP];
    double x[NP], delta[NP], gs[NP];
    struct rng r;

    /* two steps of plain SGD (the rule has no state; the second step draws from t = 1) */
    for (int filter = 0; filter < 2; filter++) {
        double ev = run(filter ? "optimizer: {name: rsam, rho: 0.2, sigma: 0.3, lambda: 2, "
                                 PLAIN_SGD "}"
                               : "optimizer: {name: rsam, rho: 0.2, sigma: 0.3, lambda: 2, "
                                 "noise: plain, " PLAIN_SGD "}",
                        2, 4, w);
        dstart(x);
        for (int t = 0; t < 2; t++) {
            rng_init(&r, 7, "optim.rsam", (uint64_t)t);
            drsam_noise(&r, x, 0.3, filter, delta);
            drsam(1, x, delta, 0.2, 2, false, gs), dsgd(x, gs, 0.1, 0.01);
        }
        same(w, x, filter ? "rsam (noise: filter) two steps" : "rsam (noise: plain) two steps");
        approx(ev, 2, 0, 0, "rsam: 2 gradient evaluations per step");
    }
    /* the noise matters: the same settings without it are another trajectory */
    run("optimizer: {name: rsam, rho: 0.2, sigma: 0, lambda: 2, " PLAIN_SGD "}", 2, 4, w2);
    ok(memcmp(w, w2, sizeof w) != 0, "rsam: sigma 0.3 and sigma 0 differ");

    /* m = 2 on a batch of 4: each group draws the next normals of the step's stream */
    {
        static const float s[4] = {0.5f, 1.5f, 1.0f, 3.0f};
        struct fixture fx;
        bool built = fx_open(&fx, "optimizer: {name: rsam, rho: 0.2, sigma: 0.3, lambda: 1.5, "
                                  "m: 2, " SGD "}", 4) == 0;
        memcpy(fx.q.s, s, sizeof s);
        if (ok(built, "rsam m=2 builds: %s", fx.e.msg)) {
            steps(&fx.o, &fx.p, &fx.q, 0, 1);
            double d[NP] = {0};
            dstart(x);
            rng_init(&r, 7, "optim.rsam", 0);
            for (int c = 0; c < 2; c++) {
                drsam_noise(&r, x, 0.3, true, delta);
                drsam((s[2 * c] + s[2 * c + 1]) / 2.0, x, delta, 0.2, 1.5, false, gs);
                for (int i = 0; i < NP; i++)
                    d[i] += 0.5 * gs[i];
            }
            dsgd(x, d, 0.1, 0.01);
            float got[NP];
            fx_weights(&fx, got);
            same(got, x, "rsam m=2 on a batch of 4 one step");
            approx(fx.q.f.evals, 2, 1e-12, 0, "rsam m=2: 2 gradient evaluations per step");
            ok(fx.q.n_first == 4, "rsam m=2: the first passes cover the batch once (%d of 4)",
               fx.q.n_first);
        }
        fx_close(&fx);
    }

    /* perturb: norm: delta and d on the bias only (the weight's normals are still drawn) */
    bias_is_norm = true;
    run("optimizer: {name: rsam, rho: 0.2, sigma: 0.3, perturb: norm, " SGD "}", 1, 4, w);
    dstart(x);
    rng_init(&r, 7, "optim.rsam", 0);
    drsam_noise(&r, x, 0.3, true, delta);
    drsam(1, x, delta, 0.2, 2, true, gs), dsgd(x, gs, 0.1, 0.01);
    same(w, x, "rsam perturb: norm one step");
    identical("optimizer: {name: rsam, rho: 0.1, sigma: 0, lambda: 1, perturb: norm, " MOM "}",
              "optimizer: {name: sam, rho: 0.1, perturb: norm, " MOM "}", 6, 4, false,
              "rsam sigma=0 lambda=1 perturb: norm = sam perturb: norm");
    bias_is_norm = false;

    /* nothing random is state: steps 2 and 3 from a rebuilt optimizer are the same steps */
    {
        struct fixture a, b;
        const char *y = "optimizer: {name: rsam, rho: 0.2, sigma: 0.3, " PLAIN_SGD "}";
        bool built = fx_open(&a, y, 4) == 0 && fx_open(&b, y, 4) == 0;
        if (ok(built, "rsam builds twice: %s", a.e.msg)) {
            steps(&a.o, &a.p, &a.q, 0, 4);
            steps(&b.o, &b.p, &b.q, 0, 2);
            struct fixture c;
            if (fx_open(&c, y, 4) == 0) {
                memcpy(c.p.w, b.p.w, sizeof(float) * NW);
                steps(&c.o, &c.p, &c.q, 2, 2);
                ok(memcmp(a.p.w, c.p.w, sizeof(float) * NW) == 0,
                   "rsam: a rebuilt optimizer continues bit for bit (noise from (seed, t))");
            } else {
                ok(false, "rsam rebuild: %s", c.e.msg);
            }
            fx_close(&c);
        }
        fx_close(&a);
        fx_close(&b);
    }

    struct fixture fx;
    int rc = fx_open(&fx, "optimizer: {name: rsam, lambda: -1}", 4);
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "t.yaml:1:") &&
           strstr(fx.e.msg, "lambda"),
       "rsam lambda < 0 is a config error: %s", fx.e.msg);
    rc = fx_build(&fx, "optimizer: {name: rsam, sigma: -0.1}");
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "sigma"),
       "rsam sigma < 0 is a config error: %s", fx.e.msg);
    rc = fx_build(&fx, "optimizer: {name: rsam, noise: layer}");
    ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, "plain"),
       "rsam: an unknown noise lists the choices: %s", fx.e.msg);
    fx_close(&fx);
}

/* m < batch: each group of m examples has its own e from its own gradient. */
static void test_msharp(void)
{
    static const float s[4] = {0.5f, 1.5f, 1.0f, 3.0f};
    struct fixture fx;
    bool built = fx_open(&fx, "optimizer: {name: sam, rho: 0.2, m: 2, " SGD "}", 4) == 0;
    memcpy(fx.q.s, s, sizeof s);
    if (!ok(built, "sam m=2 builds: %s", fx.e.msg)) {
        fx_close(&fx);
        return;
    }
    steps(&fx.o, &fx.p, &fx.q, 0, 1);
    double x[NP], g[NP], gs[NP], pt[NP], d[NP] = {0};
    dstart(x);
    for (int c2 = 0; c2 < 2; c2++) {
        double sb = (s[2 * c2] + s[2 * c2 + 1]) / 2.0;
        dgrad(sb, x, g), dascent(x, g, 0.2, 1e-12, pt), dgrad(sb, pt, gs);
        for (int i = 0; i < NP; i++)
            d[i] += 0.5 * gs[i];
    }
    dsgd(x, d, 0.1, 0.01);
    float got[NP];
    fx_weights(&fx, got);
    same(got, x, "sam m=2 on a batch of 4 one step");
    approx(fx.q.f.evals, 2, 1e-12, 0, "sam m=2: still 2 gradient evaluations per step");
    ok(fx.q.n_first == 4, "sam m=2: the clean passes cover the batch once (%d of 4)",
       fx.q.n_first);
    static const char *const rejects[] = {"vasso", "looksam", "esam"};
    for (int i = 0; i < 3; i++) {
        char y[128];
        snprintf(y, sizeof y, "optimizer: {name: %s, m: 2}", rejects[i]);
        int rc = fx_build(&fx, y);
        ok(rc < 0 && fx.e.status == SAMX_EXIT_CONFIG && strstr(fx.e.msg, rejects[i]) &&
               strstr(fx.e.msg, "m-sharpness"),
           "%s rejects m > 0: %s", rejects[i], fx.e.msg);
    }
    fx_close(&fx);
}

/* m-sharpness groups dealt out to processes (optim_groups), without MPI: processes 1..P-1 run
 * the step first and their combine records their partial sums; process 0 then runs it with a
 * combine that adds those, in process order in double as dist_sum_float does. Its step must
 * equal one process's to float rounding (every group perturbed with its own gradient, rsam's
 * noise skipped to the group's place in the stream), with the same evaluation count. */
#define SIM_PROCS 3
static float sim_v[SIM_PROCS][1 + SAM_MAX_SIGNS][NW];
static double sim_d[SIM_PROCS][4], sim_evals[SIM_PROCS];
static int sim_procs;

static void sim_combine(struct closure *f, float *const *v, int nv, size_t n, double *d, int nd)
{
    SAMX_ASSERT(nv <= 1 + SAM_MAX_SIGNS && nd <= 4 && n == NW);
    int r = f->proc;
    for (int i = 0; i < nv; i++)
        memcpy(sim_v[r][i], v[i], sizeof sim_v[r][i]);
    memcpy(sim_d[r], d, (size_t)nd * sizeof *d);
    sim_evals[r] = f->evals_local;
    if (r > 0)
        return;
    for (int i = 0; i < nv; i++)
        for (size_t j = 0; j < n; j++) {
            double x = 0;
            for (int k = 0; k < sim_procs; k++)
                x += sim_v[k][i][j];
            v[i][j] = (float)x;
        }
    double ev = 0;
    for (int k = 0; k < sim_procs; k++)
        ev += sim_evals[k];
    for (int i = 0; i < nd; i++) {
        double x = 0;
        for (int k = 0; k < sim_procs; k++)
            x += sim_d[k][i];
        d[i] = x;
    }
    f->evals += ev;
    f->evals_local = 0;
}

static void test_groups_dealt(void)
{
    static const char *const methods[] = {
        "sam, rho: 0.2", "asam, rho: 0.5", "wsam, rho: 0.1, gamma: 0.8",
        "crsam, rho: 0.1, gamma: 0.1, beta: 0.05", "gsam, rho: 0.1, alpha: 0.4",
        "rsam, rho: 0.1, sigma: 0.01", "fishersam, rho: 0.1", "samar, rho: 0.1"};
    static const float s[MAXB] = {0.5f, 1.5f, 1.0f, 3.0f, 0.7f, 2.0f, 1.2f, 0.9f};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
        for (int procs = 2; procs <= SIM_PROCS; procs++) {
            char y[160];
            snprintf(y, sizeof y, "optimizer: {name: %s, m: 2, " SGD "}", methods[i]);
            struct fixture one, part[SIM_PROCS];
            int rc = fx_open(&one, y, MAXB);
            memcpy(one.q.s, s, sizeof s);
            steps(&one.o, &one.p, &one.q, 0, 1);
            sim_procs = procs;
            int first = 0;
            for (int r = procs - 1; r >= 0; r--) {
                rc |= fx_open(&part[r], y, MAXB);
                memcpy(part[r].q.s, s, sizeof s);
                part[r].q.f.procs = procs, part[r].q.f.proc = r;
                part[r].q.f.combine = sim_combine;
                steps(&part[r].o, &part[r].p, &part[r].q, 0, 1);
                first += part[r].q.n_first;
            }
            float a[NP], b[NP];
            fx_weights(&one, a);
            fx_weights(&part[0], b);
            double worst = 0;
            for (int k = 0; k < NP; k++)
                worst = fmax(worst, fabs(a[k] - b[k]) / fmax(fabs(a[k]), 1e-6));
            ok(rc == 0 && worst <= 1e-6 && one.q.f.evals == part[0].q.f.evals && first == MAXB,
               "%.5s m=2 over %d simulated processes: one process's step (worst %.1e), %g "
               "evaluations (%g), the clean passes cover the batch once (%d of %d)",
               methods[i], procs, worst, part[0].q.f.evals, one.q.f.evals, first, MAXB);
            fx_close(&one);
            for (int r = 0; r < procs; r++)
                fx_close(&part[r]);
        }
}

/* The base optimizer must see exactly the weights from before the step (copy-back, no drift). */
static const struct optim_ops *spy_real;
static float spy_w[NW];
static int spy_calls;

static void spy_apply(struct optim *o, struct params *p, const float *d)
{
    memcpy(spy_w, p->w, sizeof spy_w);
    spy_calls++;
    spy_real->apply(o, p, d);
}

static void test_no_drift(void)
{
    for (int i = 0; optim_registry[i]; i++) {
        const struct optim_ops *op = optim_registry[i];
        if (!op->wrapper)
            continue;
        char y[256];
        /* A large rho, so subtracting e instead of copying back would show. */
        /* lookbehind's later base steps start from its fast weights; its first from w. */
        snprintf(y, sizeof y, "optimizer: {name: %s, rho: 0.7, %s}", op->name,
                 !strcmp(op->name, "looksam")      ? "k: 2, " MOM
                 : !strcmp(op->name, "lookbehind") ? "k: 1, alpha: 1.0, " MOM
                                                   : MOM);
        struct fixture fx;
        bool good = fx_open(&fx, y, 4) == 0;
        if (good) {
            struct optim_ops spy = *fx.o.base->ops;
            spy_real = fx.o.base->ops;
            spy.apply = spy_apply;
            fx.o.base->ops = &spy;
            for (long t = 0; t < 4 && good; t++) {
                float before[NW];
                memcpy(before, fx.p.w, sizeof before);
                spy_calls = 0;
                steps(&fx.o, &fx.p, &fx.q, t, 1);
                good = spy_calls == 1 && memcmp(before, spy_w, sizeof before) == 0;
            }
            fx.o.base->ops = spy_real;
        }
        ok(good, "%s: the base step starts from exactly the saved weights (%s)", op->name,
           fx.e.msg);
        fx_close(&fx);
    }
}

static void test_samar_rule(void)
{
    struct fixture fx;
    /* rule relative: r = Shat/Lhat > 0 > c_hi on a convex quadratic, so lambda doubles each
     * step up to lam_max. */
    if (!ok(fx_open(&fx,
                    "optimizer: {name: samar, rule: relative, c_hi: 0, c_lo: -1, up: 2, "
                    "lam_max: 3, period: 1, " SGD "}",
                    4) == 0, "samar builds: %s", fx.e.msg)) {
        fx_close(&fx);
        return;
    }
    static const double want[] = {2, 3, 3};
    struct hparam *lam = optim_hparam_find(&fx.o, "lambda");
    for (int t = 0; t < 3; t++) {
        steps(&fx.o, &fx.p, &fx.q, t, 1);
        approx(lam->v, want[t], 0, 0, "samar: lambda after step %d is %g", t, want[t]);
    }
    ok(lam->adaptive, "samar: lambda is an adaptive hyperparameter");
    /* trend with a falling sharpness (gradient descent on a quadratic): lambda goes down. */
    fx_build(&fx, "optimizer: {name: samar, tau: 2, period: 2, beta_s: 0, " SGD "}");
    lam = optim_hparam_find(&fx.o, "lambda");
    steps(&fx.o, &fx.p, &fx.q, 0, 8);
    ok(lam->v < 1 && lam->v >= 0.1, "samar trend: lambda decreased to %g as sharpness fell",
       lam->v);
    fx_close(&fx);
}

static void test_gsam_rho_t(void)
{
    struct fixture fx;
    if (ok(fx_open(&fx,
                   "optimizer: {name: gsam, rho: 0.1, rho_min: 0.02, base: {name: sgd, "
                   "lr: {schedule: cosine, start: 0.2, end: 0.0}}}",
                   4) == 0, "gsam builds: %s", fx.e.msg)) {
        struct hparam *rt = optim_hparam_find(&fx.o, "rho_t");
        for (long t = 0; t <= 50; t += 25) {
            steps(&fx.o, &fx.p, &fx.q, t, 1);
            double lr = 0.1 * (1 + cos(M_PI * t / 50.0));
            approx(rt->v, 0.02 + 0.08 * lr / 0.2, 1e-12, 1e-15, "gsam: rho_t at step %ld", t);
        }
    }
    fx_close(&fx);
}

/* Over the registry: lowers the quadratic, rejects a misspelt key, schedules show in hp. */
static void test_registry(void)
{
    for (int i = 0; optim_registry[i]; i++) {
        const struct optim_ops *op = optim_registry[i];
        bool wr = op->wrapper;
        char y[512];
        if (wr)
            snprintf(y, sizeof y, "optimizer: {name: %s, " MOM "}", op->name);
        else
            snprintf(y, sizeof y, "optimizer: {name: %s, lr: 0.05}", op->name);
        struct fixture fx;
        if (fx_open(&fx, y, 4) == 0) {
            double f0 = quad_half(&fx.p);
            steps(&fx.o, &fx.p, &fx.q, 0, 50);
            double f1 = quad_half(&fx.p);
            ok(f1 < 0.5 * f0, "%s: 50 steps lower the quadratic %.4g -> %.4g", op->name, f0, f1);
        } else {
            ok(false, "%s builds: %s", op->name, fx.e.msg);
        }

        /* msam needs a base with momentum (its perturbation is the momentum buffer). */
        const char *extra = !strcmp(op->name, "msam") ? ", base: {name: sgd, momentum: 0.9}" : "";
        snprintf(y, sizeof y, "optimizer: {name: %s, %s: 0.1%s}", op->name, wr ? "rhoo" : "lrr",
                 extra);
        int rc = fx_build(&fx, y);
        ok(rc < 0 && strstr(fx.e.msg, "unknown key") && strstr(fx.e.msg, wr ? "'rho'" : "'lr'"),
           "%s: a misspelt key is rejected with a suggestion: %s", op->name, fx.e.msg);

        if (wr) {
            bool has_gamma = !strcmp(op->name, "wsam") || !strcmp(op->name, "crsam") ||
                             !strcmp(op->name, "gam") ||
                             !strcmp(op->name, "esam");
            const char *gamma = ", gamma: {schedule: linear, start: 0.5, end: 0.1}";
            snprintf(y, sizeof y,
                     "optimizer: {name: %s, rho: {schedule: linear, start: 0.1, end: 0}%s%s}",
                     op->name, has_gamma ? gamma : "", extra);
            if (fx_build(&fx, y) == 0) {
                optim_begin_step(&fx.o, 25);
                approx(optim_hparam_find(&fx.o, "rho")->v, 0.05, 1e-12, 0,
                       "%s: scheduled rho is 0.05 at step 25 of 50", op->name);
                if (has_gamma)
                    approx(optim_hparam_find(&fx.o, "gamma")->v, 0.3, 1e-12, 0,
                           "%s: scheduled gamma is 0.3 at step 25 of 50", op->name);
            } else {
                ok(false, "%s with schedules builds: %s", op->name, fx.e.msg);
            }
        }
        fx_close(&fx);
    }
}

/* A base optimizer's apply_norm is its apply plus vec_nrm2 of the direction, in one pass: the
 * weights, the state and the norm must match the separate calls bit for bit, on a vector long
 * enough for many chunks and both threads. */
static void test_fused_norm(void)
{
    const char *yamls[] = {
        "optimizer: {name: sgd, lr: 0.1, weight_decay: 0.01}",
        "optimizer: {name: sgd, lr: 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 0.01}",
        "optimizer: {name: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01}",
    };
    enum { N = 300007 };
    int nt0 = threads_get();
    threads_set(2);
    for (size_t y = 0; y < sizeof yamls / sizeof *yamls; y++) {
        struct params p[2];
        struct optim o[2];
        struct cfg c[2];
        struct err e;
        bool built = true;
        for (int k = 0; k < 2; k++) {
            memset(&p[k], 0, sizeof p[k]);
            params_add(&p[k], "w", 1, (const int[]){N});
            params_alloc(&p[k]);
            for (size_t i = 0; i < N; i++)
                p[k].w[i] = (float)sin(0.37 * (double)i);
            built = built && build(&o[k], &c[k], yamls[y], &p[k], &e) == 0;
        }
        if (!built || !o[0].ops->apply_norm) {
            ok(false, "%s: builds, with apply_norm", yamls[y]);
            continue;
        }
        bool same = true;
        for (long t = 0; t < 3; t++) {
            for (int k = 0; k < 2; k++) {
                optim_begin_step(&o[k], t);
                for (size_t i = 0; i < N; i++)
                    p[k].g[i] = (float)cos(1.3 * (double)i + (double)t);
            }
            double n0 = vec_nrm2(N, p[0].g);
            o[0].ops->apply(&o[0], &p[0], p[0].g);
            double n1 = o[1].ops->apply_norm(&o[1], &p[1], p[1].g);
            same = same && n0 == n1 && memcmp(p[0].w, p[1].w, N * sizeof(float)) == 0 &&
                   memcmp(o[0].buf[0] ? o[0].buf[0] : p[0].w, o[1].buf[0] ? o[1].buf[0] : p[1].w,
                          N * sizeof(float)) == 0;
        }
        ok(same, "%s: apply_norm equals apply and vec_nrm2 bit for bit over 3 steps", yamls[y]);
        for (int k = 0; k < 2; k++) {
            optim_release(&o[k]);
            cfg_free(&c[k]);
            params_free(&p[k]);
        }
    }
    threads_set(nt0);
}

/* A non-finite gradient makes ||g|| NaN, and SAM's e = rho g / ||g|| NaN in every coordinate, as
 * in the reference code: the whole step diverges (and the trainer records it). */
static void test_nan_gradient(void)
{
    const char *yamls[] = {"optimizer: {name: sam, rho: 0.05, " SGD "}",
                           "optimizer: {name: crsam, rho: 0.05, " SGD "}",
                           "optimizer: {name: crsam, rho: 0.05, m: 2, " SGD "}"};
    float w0[NP], w[NP];
    memcpy(w0, W0, sizeof w0);
    w0[0] = NAN;
    for (size_t y = 0; y < sizeof yamls / sizeof *yamls; y++) {
        run_from(yamls[y], 1, 4, w0, w);
        int nan = 0;
        for (int i = 0; i < NP; i++)
            nan += isnan(w[i]) != 0;
        ok(nan == NP, "%s: a NaN gradient makes every weight NaN (%d of %d)", yamls[y], nan, NP);
    }
}

int main(void)
{
    test_closed_forms();
    test_closed_forms_2();
    test_perturb_filter();
    test_esam();
    test_rsam();
    test_evals();
    test_identities();
    test_msharp();
    test_groups_dealt();
    test_no_drift();
    test_fused_norm();
    test_nan_gradient();
    test_samar_rule();
    test_gsam_rho_t();
    test_registry();
    return done();
}
