/* test_model: every registered model, driven by the model table (model.h).
 *
 * Each model in model_registry must have at least one small configuration in `cases` below (a
 * model without one fails the test), and every case gets, on a batch of random inputs:
 *   - the gradient: the directional derivative g.v against central differences of the loss,
 *     in evaluation mode and in training mode with BatchNorm's batch statistics and dropout's
 *     mask of the step (PASS_TRAIN_FROZEN);
 *   - the exact Hessian-vector product (ops->hvp, evaluation mode): against central
 *     differences of the gradient along v, u.Hv against v.Hu (the Hessian is symmetric), the
 *     contract that it ADDS into hv and leaves weights, gradients and running statistics as
 *     they were, and the sum over two halves of the batch against the whole batch (in
 *     evaluation mode examples are independent).
 * Differences are extrapolated (Richardson, steps h and h/2) and losses summed in double. ReLU
 * and max-pool networks are piecewise smooth: a difference that crosses a kink
 * (cn_fingerprint changes; every model is a convnet.h graph) is discarded and counted. The PyTorch double-backward comparison of the convnets' Hv is
 * experiments/torch-check-resnet/check.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cfg.h"
#include "convnet.h"
#include "measure.h"
#include "model.h"
#include "nn.h"
#include "rng.h"
#include "tap.h"
#include "tune.h"

#define MB 8  /* batch: BatchNorm sees >= 8 values per channel */
#define NOUT 5

struct mcase {
    const char *model, *yaml;
    int c, hw;   /* image shape (c, hw, hw), or c = 0 for tabular inputs of `hw` features */
    bool smooth; /* no ReLU or max pool: no kinks */
};

static const struct mcase cases[] = {
    {"linear", "name: linear\n", 0, 12, true},
    {"mlp", "name: mlp\nhidden: [7, 6]\nactivation: gelu\n", 0, 12, true},
    {"mlp", "name: mlp\nhidden: [9]\nactivation: tanh\nbias: false\n", 0, 10, true},
    {"mlp", "name: mlp\nhidden: [8, 8]\n", 0, 12, false},
    /* MB x weights >= 1e6: the linear layers split into work_blocks() weight-row blocks */
    {"mlp", "name: mlp\nhidden: [400, 300]\nactivation: gelu\n", 0, 12, true},
    {"cnn", "name: cnn\nchannels: [3, 4]\nactivation: gelu\npool: avg\ndropout: 0.3\n", 2, 8,
     true},
    {"cnn", "name: cnn\nchannels: [3, 4]\nbatchnorm: false\npool: avg\nkernel: 5\n"
            "activation: tanh\n", 1, 9, true},
    {"cnn", "name: cnn\nchannels: [3, 4]\n", 2, 8, false},
    {"resnet", "name: resnet\ndepth: 8\nwidth: 4\nactivation: gelu\n", 3, 8, true},
    {"resnet", "name: resnet\ndepth: 8\nwidth: 4\nshortcut: B\nactivation: gelu\n", 3, 8, true},
    {"resnet", "name: resnet\ndepth: 18\nwidth: 4\nactivation: gelu\n", 3, 16, true},
    {"resnet", "name: resnet\ndepth: 8\nwidth: 4\n", 3, 8, false},
    {"wrn", "name: wrn\ndepth: 10\nwiden: 1\ndropout: 0.2\nactivation: gelu\n", 3, 8, true},
    {"wrn", "name: wrn\ndepth: 10\nwiden: 1\n", 3, 8, false},
};
#define N_CASES (sizeof cases / sizeof cases[0])

struct ctx {
    struct model m;
    const struct mcase *mc;
    float *x, *dout;
    int32_t lab[MB];
    double lex[MB];
    uint8_t hit[MB];
};

/* Mean cross entropy (label smoothing 0.1) over examples [lo, lo + nb); with grad the gradient
 * of that mean goes to m->p.g. */
static double loss_at(struct ctx *c, enum pass_mode mode, bool grad)
{
    struct model *m = &c->m;
    m->ops->forward(m, c->x, MB, mode);
    double s = xent_forward_backward(grad ? c->dout : NULL, c->lex, c->hit, m->out, c->lab, MB,
                                     m->n_out, 0.1f, 1.0f / MB);
    if (grad)
        m->ops->backward(m, c->x, c->dout, MB, false);
    return s / MB;
}

static uint64_t region(struct ctx *c)
{
    return cn_fingerprint(&c->m, MB);
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static double rel_dist(const float *a, const double *b, size_t n)
{
    double d = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        nb += b[i] * b[i];
    }
    return sqrt(d) / (sqrt(nb) + 1e-30);
}

static void random_unit(float *v, size_t n, struct rng *r)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)rng_normal(r);
    double s = 1.0 / vec_nrm2(n, v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(v[i] * s);
}

/* w = w0 + t v */
static void set_w(struct model *m, const float *w0, const float *v, double t)
{
    for (size_t i = 0; i < m->p.n; i++)
        m->p.w[i] = (float)(w0[i] + t * v[i]);
}

/* The directional derivative of the loss in `mode` by central differences (Richardson), or NAN
 * when a difference crossed a kink. */
static double fd_dir(struct ctx *c, enum pass_mode mode, const float *w0, const float *v, double h,
                     uint64_t base)
{
    double d[2];
    for (int k = 0; k < 2; k++) {
        double s = h / (1 << k), lp, lm;
        set_w(&c->m, w0, v, s);
        lp = loss_at(c, mode, false);
        bool crossed = region(c) != base;
        set_w(&c->m, w0, v, -s);
        lm = loss_at(c, mode, false);
        crossed |= region(c) != base;
        if (crossed)
            return NAN;
        d[k] = (lp - lm) / (2 * s);
    }
    return (4 * d[1] - d[0]) / 3;
}

static void check_gradient(struct ctx *c, enum pass_mode mode, const char *label, struct rng *r)
{
    struct model *m = &c->m;
    size_t n = m->p.n;
    float *w0 = xfloats(n), *v = xfloats(n), *buf0 = m->buf.nt ? xfloats(m->buf.n) : NULL;
    vec_copy(n, m->p.w, w0);
    if (buf0)
        vec_copy(m->buf.n, m->buf.w, buf0);
    int crossed = 0, tried = 0;
    double worst = 0;
    /* Along the gradient itself (g.v = |g|: a wrong gradient shows in full), then two random
     * directions. The error is measured against |fd| + 0.1 |g|: the float32 loss's rounding
     * over the step is about 1e-5 |g| absolute, which a random direction's small g.v would
     * turn into a large relative error. Steps: small enough for ReLU networks to stay within
     * one piece most of the time. */
    double h = c->mc->smooth ? 5e-3 : 1e-3;
    loss_at(c, mode, true);
    double gn = vec_nrm2(n, m->p.g);
    for (int k = 0; k < 3; k++) {
        if (k == 0)
            for (size_t i = 0; i < n; i++)
                v[i] = (float)(m->p.g[i] / gn);
        else
            random_unit(v, n, r);
        set_w(m, w0, v, 0);
        loss_at(c, mode, true);
        uint64_t base = region(c);
        double gv = dot(m->p.g, v, n);
        double fd = fd_dir(c, mode, w0, v, h, base);
        tried++;
        if (isnan(fd)) {
            crossed++;
            continue;
        }
        worst = worse(worst, fabs(gv - fd) / (fabs(fd) + 0.1 * gn));
    }
    vec_copy(n, w0, m->p.w);
    if (tried == crossed)
        skip("%s: every gradient difference crossed a kink", label);
    else
        ok(worst < 1e-3, "%s: g.v against central differences, worst relative error %.2e (%d of "
                         "%d directions crossed a kink)", label, worst, crossed, tried);
    if (buf0) {
        ok(mode == PASS_TRAIN_UPDATE || !memcmp(buf0, m->buf.w, m->buf.n * sizeof *buf0),
           "%s: running statistics untouched", label);
        free(buf0);
    }
    free(w0);
    free(v);
}

static void hvp_of(struct ctx *c, int lo, int nb, double scale, const float *v, float *hv)
{
    struct hvp_loss l = {.smoothing = 0.1f, .label = c->lab + lo, .scale = scale};
    c->m.ops->hvp(&c->m, c->x + (size_t)lo * c->m.n_in, nb, &l, v, hv);
}

static void check_hvp(struct ctx *c, const char *label, struct rng *r)
{
    struct model *m = &c->m;
    size_t n = m->p.n;
    if (!ok(m->ops->hvp != NULL, "%s: has an exact Hessian-vector product", label))
        return;
    model_hvp_reserve(m);
    float *w0 = xfloats(n), *v = xfloats(n), *u = xfloats(n), *hv = xfloats(n),
          *hu = xfloats(n), *h2 = xfloats(n), *gp = xfloats(n), *g0 = xfloats(n);
    double *fd = xcalloc(n, sizeof *fd);
    float *buf0 = m->buf.nt ? xfloats(m->buf.n) : NULL;
    vec_copy(n, m->p.w, w0);
    if (buf0)
        vec_copy(m->buf.n, m->buf.w, buf0);
    random_unit(v, n, r);
    random_unit(u, n, r);
    loss_at(c, PASS_EVAL, true);
    vec_copy(n, m->p.g, g0);
    uint64_t base = region(c);

    vec_zero(n, hv);
    hvp_of(c, 0, MB, 1.0 / MB, v, hv);
    ok(!memcmp(w0, m->p.w, n * sizeof *w0) && !memcmp(g0, m->p.g, n * sizeof *g0) &&
           (!buf0 || !memcmp(buf0, m->buf.w, m->buf.n * sizeof *buf0)),
       "%s: hvp leaves weights, gradients and running statistics as they were", label);
    ok(vec_nrm2(n, hv) > 1e-4, "%s: Hv is not trivially zero (|Hv| %.3g)", label,
       vec_nrm2(n, hv));

    /* Central differences of the gradient along v, steps h and h/2 extrapolated. */
    bool crossed = false;
    double h = c->mc->smooth ? 1e-2 : 1e-3;
    for (int k = 0; k < 2 && !crossed; k++) {
        double s = h / (1 << k);
        set_w(m, w0, v, s);
        loss_at(c, PASS_EVAL, true);
        crossed |= region(c) != base;
        vec_copy(n, m->p.g, gp);
        set_w(m, w0, v, -s);
        loss_at(c, PASS_EVAL, true);
        crossed |= region(c) != base;
        double wk = k == 0 ? -1.0 / 3 : 4.0 / 3;
        for (size_t i = 0; i < n; i++)
            fd[i] += wk * ((double)gp[i] - m->p.g[i]) / (2 * s);
    }
    vec_copy(n, w0, m->p.w);
    if (crossed)
        skip("%s: the gradient difference crossed a kink", label);
    else {
        /* A ReLU network's curvature is smaller (the ReLUs add none) and its steps shorter
         * (to stay within one piece), so the float32 gradients' rounding weighs more. */
        double rd = rel_dist(hv, fd, n), tol = c->mc->smooth ? 3e-3 : 1e-2;
        ok(rd < tol, "%s: Hv against central differences of the gradient, relative error "
                     "%.2e (< %g)", label, rd, tol);
    }

    vec_zero(n, hu);
    hvp_of(c, 0, MB, 1.0 / MB, u, hu);
    double uhv = dot(u, hv, n), vhu = dot(v, hu, n);
    ok(fabs(uhv - vhu) <= 1e-4 * (fabs(uhv) + fabs(vhu)) + 1e-7,
       "%s: u.Hv = v.Hu (%.8g, %.8g)", label, uhv, vhu);

    /* ADDS into hv: start from v. */
    vec_copy(n, v, h2);
    hvp_of(c, 0, MB, 1.0 / MB, v, h2);
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = worse(worst, fabs((h2[i] - v[i]) - hv[i]));
    ok(worst <= 1e-5 * (1 + vec_nrm2(n, hv)), "%s: hvp adds into hv (max deviation %.2e)", label,
       worst);

    /* Two halves of the batch, each with scale 1/MB, add up to the whole batch. */
    vec_zero(n, h2);
    hvp_of(c, 0, MB / 2, 1.0 / MB, v, h2);
    hvp_of(c, MB / 2, MB - MB / 2, 1.0 / MB, v, h2);
    double hd = 0;
    for (size_t i = 0; i < n; i++)
        hd += ((double)h2[i] - hv[i]) * ((double)h2[i] - hv[i]);
    ok(sqrt(hd) <= 1e-5 * (1 + vec_nrm2(n, hv)),
       "%s: Hv over two half batches = Hv over the batch (|diff| %.2e)", label, sqrt(hd));

    free(w0), free(v), free(u), free(hv), free(hu), free(h2), free(gp), free(g0), free(fd);
    free(buf0);
}

static void run_case(const struct mcase *mc)
{
    struct cfg cfg;
    struct err e = {0};
    struct ctx *c = xcalloc(1, sizeof *c);
    c->mc = mc;
    char label[96];
    snprintf(label, sizeof label, "%s", mc->yaml);
    for (char *p = label; *p; p++)
        if (*p == '\n')
            *p = ' ';
    int built = cfg_load_string(&cfg, "model.yaml", mc->yaml, &e) == 0 &&
                (mc->c > 0 ? model_init_image(&c->m, cfg.root, mc->c, mc->hw, mc->hw, NOUT, MB,
                                              7, &e)
                           : model_init(&c->m, cfg.root, mc->hw, NOUT, MB, 7, &e)) == 0;
    if (!ok(built, "%s: builds (%s)", label, e.msg)) {
        free(c);
        return;
    }
    struct model *m = &c->m;
    m->step = 3;
    struct rng r;
    rng_init(&r, 11, "test.model", 0);
    size_t nx = (size_t)MB * m->n_in;
    c->x = xfloats(nx);
    c->dout = xfloats((size_t)MB * m->n_out);
    for (size_t i = 0; i < nx; i++)
        c->x[i] = (float)rng_normal(&r);
    for (int i = 0; i < MB; i++)
        c->lab[i] = (int32_t)rng_below(&r, NOUT);
    /* BatchNorm weights away from (1, 0) and running statistics near the batch's own (updating
     * passes), so every term of BatchNorm's rules is exercised and activations stay normalised
     * in evaluation mode. */
    for (int t = 0; t < m->p.nt; t++)
        if (m->p.t[t].is_norm)
            for (size_t i = 0; i < m->p.t[t].n; i++)
                m->p.w[m->p.t[t].off + i] += (float)(0.2 * rng_normal(&r));
    for (int i = 0; i < 20 && m->buf.nt; i++)
        m->ops->forward(m, c->x, MB, PASS_TRAIN_UPDATE);

    char what[140];
    snprintf(what, sizeof what, "%s eval", label);
    check_gradient(c, PASS_EVAL, what, &r);
    snprintf(what, sizeof what, "%s training", label);
    check_gradient(c, PASS_TRAIN_FROZEN, what, &r);
    check_hvp(c, label, &r);

    free(c->x);
    free(c->dout);
    model_release(m);
    cfg_free(&cfg);
    free(c);
}

int main(void)
{
    threads_set(2);
    for (const struct model_ops *const *o = model_registry; *o; o++) {
        int k = 0;
        for (size_t i = 0; i < N_CASES; i++)
            k += !strcmp(cases[i].model, (*o)->name);
        ok(k > 0, "model '%s' has a case in test_model.c (%d)", (*o)->name, k);
    }
    for (size_t i = 0; i < N_CASES; i++)
        run_case(&cases[i]);
    return done();
}
