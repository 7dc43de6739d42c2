/* test_nn: finite-difference gradient checks of every layer, loss and registered model.
 *
 * Two checks per function (style.md 6.7): the directional derivative along a random unit
 * direction against a central difference (covers every parameter at once), and up to 16 sampled
 * coordinates per tensor with the asymmetry metric |a - n| / (|a| + |n|) and an absolute floor.
 * Losses are summed in double to keep finite-difference noise low; ReLU is checked on inputs
 * kept away from its kink.
 * The activations' R-operator (act_rop, relu/tanh/gelu): its dz equals act_backward's, its rdz
 * matches central differences of act_backward (y recomputed) along (rdy, rz), in double and
 * Richardson-extrapolated, on gridded values so every moved value is exact in float; acc adds
 * exactly, and in place (dz == dy, rdz == rdy) gives the same as out of place.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cfg.h"
#include "model.h"
#include "nn.h"
#include "rng.h"
#include "tap.h"

#define EPS 1e-3
#define BATCH 3
#define N_IN 5
#define N_OUT 4

/* Agreement of analytic a and numeric n: relative asymmetry, or both tiny. */
static bool agree(double a, double n, double rtol, double floor)
{
    return fabs(a - n) <= floor || fabs(a - n) / (fabs(a) + fabs(n)) <= rtol;
}

static void fill_normal(float *x, size_t n, struct rng *r, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_normal(r));
}

/* ---- activations: y = act(z), loss = sum(c * y) for fixed random c ---- */

static double act_loss(enum act a, const float *z, const float *c, size_t n)
{
    float y[64];
    act_forward(a, y, z, n);
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)c[i] * y[i];
    return s;
}

static void check_activation(enum act a)
{
    struct rng r;
    rng_init(&r, 1, "test.act", (uint64_t)a);
    enum { N = 24 };
    float z[N], c[N], y[N], dz[N];
    fill_normal(z, N, &r, 1.5);
    fill_normal(c, N, &r, 1.0);
    if (a == ACT_RELU) /* away from the kink by more than 10 eps */
        for (int i = 0; i < N; i++)
            z[i] += z[i] >= 0 ? 0.05f : -0.05f;
    act_forward(a, y, z, N);
    act_backward(a, dz, c, z, y, N, false);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float zp[N], zm[N];
        memcpy(zp, z, sizeof z);
        memcpy(zm, z, sizeof z);
        zp[i] += (float)EPS;
        zm[i] -= (float)EPS;
        double num = (act_loss(a, zp, c, N) - act_loss(a, zm, c, N)) / (2 * EPS);
        bad += !agree(dz[i], num, 1e-2, 2e-4);
    }
    ok(bad == 0, "%s backward matches central differences (%d of %d off)", act_names[a], bad, N);
}


/* ---- the activations' R-operator (Hessian-vector products) ---- */

/* act_backward's dz at (dy, z), with y = act(z) recomputed: the function act_rop
 * differentiates. */
static void act_dz(enum act a, float *dz, const float *dy, const float *z, size_t n)
{
    float y[64];
    act_forward(a, y, z, n);
    act_backward(a, dz, dy, z, y, n, false);
}

/* Round to the nearest multiple of q. */
static void quantise(float *x, size_t n, double q)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(nearbyint(x[i] / q) * q);
}

/* rdz = d/dt dz(dy + t rdy, z + t rz) at t = 0 against central differences of act_backward,
 * in double, extrapolated from steps 2^-7 and 2^-8 (Richardson). z and dy are multiples of
 * 2^-16 and the tangents of 2^-8, so every moved value is exact in float. */
static void check_act_rop(enum act a)
{
    struct rng r;
    rng_init(&r, 2, "test.act_rop", (uint64_t)a);
    enum { N = 40 };
    float z[N], y[N], dy[N], rdy[N], rz[N], dz[N], rdz[N], dzb[N];
    fill_normal(z, N, &r, 1.5);
    if (a == ACT_RELU) /* 0.25 away from the kink; no step moves z by more than 0.04 */
        for (int i = 0; i < N; i++)
            z[i] += z[i] >= 0 ? 0.25f : -0.25f;
    fill_normal(dy, N, &r, 1);
    fill_normal(rdy, N, &r, 1);
    for (int i = 0; i < N; i++)
        rz[i] = (float)fmin(4, fmax(-4, rng_normal(&r)));
    quantise(z, N, 0x1p-16);
    quantise(dy, N, 0x1p-16);
    quantise(rdy, N, 0x1p-8);
    quantise(rz, N, 0x1p-8);
    act_forward(a, y, z, N);
    act_rop(a, dz, rdz, dy, rdy, z, y, rz, N, false);
    act_backward(a, dzb, dy, z, y, N, false);
    ok(!memcmp(dz, dzb, sizeof dz), "%s act_rop: dz equals act_backward's", act_names[a]);
    double d[2][N];
    int crossed = 0;
    for (int k = 0; k < 2; k++) {
        double s = 0x1p-7 / (1 << k);
        float zp[N], zm[N], dyp[N], dym[N], gp[N], gm[N];
        for (int i = 0; i < N; i++) {
            zp[i] = (float)(z[i] + s * rz[i]), zm[i] = (float)(z[i] - s * rz[i]);
            dyp[i] = (float)(dy[i] + s * rdy[i]), dym[i] = (float)(dy[i] - s * rdy[i]);
            crossed += (zp[i] > 0) != (z[i] > 0) || (zm[i] > 0) != (z[i] > 0);
        }
        act_dz(a, gp, dyp, zp, N);
        act_dz(a, gm, dym, zm, N);
        for (int i = 0; i < N; i++)
            d[k][i] = ((double)gp[i] - gm[i]) / (2 * s);
    }
    int bad = 0;
    double worst = 0, size = 0;
    for (int i = 0; i < N; i++) {
        double num = (4 * d[1][i] - d[0][i]) / 3;
        worst = fmax(worst, fabs(rdz[i] - num));
        size = fmax(size, fabs(num));
        /* floor: dz's float rounding (1.2e-7 at |dz| ~ 2) over 2s = 2^-7, times 5/3 for the
         * extrapolation: 3e-5 */
        if (!agree(rdz[i], num, 1e-4, 1e-4) && bad++ < 3)
            diag("%s: rdz[%d] act_rop %.7g, difference %.7g", act_names[a], i, rdz[i], num);
    }
    ok(bad == 0 && size > 0.1 && (a != ACT_RELU || crossed == 0),
       "%s act_rop: rdz matches central differences of act_backward along (rdy, rz) "
       "(%d values up to %.3g, max error %.2g)", act_names[a], N, size, worst);
    /* acc: each value the float sum of what was there and what acc = false writes */
    float dza[N], rdza[N], pre[2 * N];
    fill_normal(pre, 2 * N, &r, 1);
    memcpy(dza, pre, sizeof dza);
    memcpy(rdza, pre + N, sizeof rdza);
    act_rop(a, dza, rdza, dy, rdy, z, y, rz, N, true);
    int differ = 0;
    for (int i = 0; i < N; i++)
        differ += dza[i] != pre[i] + dz[i] || rdza[i] != pre[N + i] + rdz[i];
    ok(differ == 0, "%s act_rop with acc: adds into dz and rdz (%d differ)", act_names[a],
       differ);
    /* in place: dz over dy, rdz over rdy */
    float g[N], rg[N];
    memcpy(g, dy, sizeof g);
    memcpy(rg, rdy, sizeof rg);
    act_rop(a, g, rg, g, rg, z, y, rz, N, false);
    ok(!memcmp(g, dz, sizeof g) && !memcmp(rg, rdz, sizeof rg),
       "%s act_rop in place (dz == dy, rdz == rdy): the same as out of place", act_names[a]);
}
/* ---- losses on logits ---- */

static void check_xent(float smoothing)
{
    struct rng r;
    rng_init(&r, 2, "test.xent", (uint64_t)(smoothing * 100));
    enum { B = 5, K = 7 };
    float z[B * K], d[B * K];
    int32_t lab[B];
    double lex[B];
    uint8_t hit[B];
    fill_normal(z, B * K, &r, 2.0);
    for (int i = 0; i < B; i++)
        lab[i] = (int32_t)rng_below(&r, K);
    xent_forward_backward(d, lex, hit, z, lab, B, K, smoothing, 1.0f / B);
    int bad = 0;
    for (int i = 0; i < B * K; i++) {
        float zp[B * K], zm[B * K];
        memcpy(zp, z, sizeof z);
        memcpy(zm, z, sizeof z);
        zp[i] += (float)EPS;
        zm[i] -= (float)EPS;
        double lp = xent_forward_backward(NULL, lex, hit, zp, lab, B, K, smoothing, 0) / B;
        double lm = xent_forward_backward(NULL, lex, hit, zm, lab, B, K, smoothing, 0) / B;
        bad += !agree(d[i], (lp - lm) / (2 * EPS), 1e-2, 1e-5);
    }
    ok(bad == 0, "cross-entropy (smoothing %.1f) gradient matches central differences", smoothing);

    /* Closed form at uniform logits: loss = log K whatever the smoothing. */
    float u[K] = {0};
    int32_t y0 = 3;
    double l = xent_forward_backward(NULL, lex, hit, u, &y0, 1, K, smoothing, 0);
    approx(l, log(K), 1e-12, 0, "cross-entropy of uniform logits is log K (smoothing %.1f)",
           smoothing);
}

static void check_mse(void)
{
    float p[4] = {0.5f, -1.0f, 2.0f, 0.0f}, y[4] = {1.0f, -1.0f, 0.0f, 0.25f}, d[4];
    double lex[4];
    double s = mse_forward_backward(d, lex, p, y, 4, 0.25f);
    approx(s / 4, (0.25 + 0 + 4 + 0.0625) / 4, 1e-12, 0, "mse is the mean of squared errors");
    approx(d[2], 0.25 * 2 * 2.0, 1e-7, 0, "mse gradient is 2 (p - y) / n");
}

/* ---- linear layer against a double-precision reference ---- */

static void check_linear(void)
{
    struct rng r;
    rng_init(&r, 3, "test.linear", 0);
    enum { B = 3, I = 5, O = 7 };
    float x[B * I], w[O * I], b[O], out[B * O], dout[B * O], dx[B * I], dw[O * I] = {0},
                                                                         db[O] = {0};
    fill_normal(x, B * I, &r, 1);
    fill_normal(w, O * I, &r, 1);
    fill_normal(b, O, &r, 1);
    fill_normal(dout, B * O, &r, 1);
    linear_forward(out, x, w, b, B, I, O);
    double worst = 0;
    for (int i = 0; i < B; i++)
        for (int o = 0; o < O; o++) {
            double s = b[o];
            for (int k = 0; k < I; k++)
                s += (double)x[i * I + k] * w[o * I + k];
            worst = worse(worst, fabs(s - out[i * O + o]));
        }
    ok(worst < 1e-5, "linear forward equals x w^T + b (max error %.2g)", worst);
    /* Without acc the gradients are overwritten: stale NaNs must not survive. */
    for (int i = 0; i < O * I; i++)
        dw[i] = NAN;
    for (int o = 0; o < O; o++)
        db[o] = NAN;
    linear_backward(dx, dw, db, dout, x, w, B, I, O, false);
    worst = 0;
    for (int o = 0; o < O; o++) {
        double sb = 0;
        for (int i = 0; i < B; i++)
            sb += dout[i * O + o];
        worst = worse(worst, fabs(sb - db[o]));
        for (int k = 0; k < I; k++) {
            double s = 0;
            for (int i = 0; i < B; i++)
                s += (double)dout[i * O + o] * x[i * I + k];
            worst = worse(worst, fabs(s - dw[o * I + k]));
        }
    }
    for (int i = 0; i < B; i++)
        for (int k = 0; k < I; k++) {
            double s = 0;
            for (int o = 0; o < O; o++)
                s += (double)dout[i * O + o] * w[o * I + k];
            worst = worse(worst, fabs(s - dx[i * I + k]));
        }
    ok(worst < 1e-5, "linear backward gives dout^T x, column sums and dout w (max error %.2g)",
       worst);
    /* With acc, backward adds into the weight gradients. */
    float dw1 = dw[0], db1 = db[0];
    linear_backward(NULL, dw, db, dout, x, w, B, I, O, true);
    approx(dw[0], 2.0 * dw1, 1e-6, 1e-7, "linear backward with acc adds into dw");
    approx(db[0], 2.0 * db1, 1e-6, 1e-7, "linear backward with acc adds into db");
}

/* ---- whole models from the registry ---- */

struct mcheck {
    struct model m;
    float x[BATCH * N_IN];
    int32_t lab[BATCH];
    float dout[BATCH * N_OUT];
    double lex[BATCH];
    uint8_t hit[BATCH];
};

/* Mean cross-entropy at the current weights; with grad, also fills m.p.g. */
static double model_loss(struct mcheck *c, bool grad)
{
    struct model *m = &c->m;
    m->ops->forward(m, c->x, BATCH, PASS_EVAL);
    double s = xent_forward_backward(grad ? c->dout : NULL, c->lex, c->hit, m->out, c->lab, BATCH,
                                     N_OUT, 0.0f, 1.0f / BATCH);
    if (grad) {
        /* backward without acc overwrites every tensor's gradient: NaNs left would show. */
        for (int t = 0; t < m->p.nt; t++)
            for (size_t i = 0; i < m->p.t[t].n; i++)
                m->p.g[m->p.t[t].off + i] = NAN;
        m->ops->backward(m, c->x, c->dout, BATCH, false);
    }
    return s / BATCH;
}

static void check_model(const char *yaml, const char *label)
{
    struct cfg cfg;
    struct err e = {0};
    struct mcheck c;
    memset(&c, 0, sizeof c);
    if (!ok(cfg_load_string(&cfg, "model.yaml", yaml, &e) == 0 &&
                model_init(&c.m, cfg.root, N_IN, N_OUT, BATCH, 7, &e) == 0,
            "%s: builds (%s)", label, e.msg))
        return;
    struct rng r;
    rng_init(&r, 4, "test.model", 0);
    fill_normal(c.x, BATCH * N_IN, &r, 1.0);
    for (int i = 0; i < BATCH; i++)
        c.lab[i] = (int32_t)rng_below(&r, N_OUT);
    struct params *p = &c.m.p;
    model_loss(&c, true);
    float *g = xfloats(p->n);
    memcpy(g, p->g, p->n * sizeof *g);
    double gnorm = vec_nrm2(p->n, g);
    ok(gnorm > 1e-3, "%s: gradient is not trivially zero (||g|| = %.3g)", label, gnorm);

    /* Directional: g . d against [f(w + eps d) - f(w - eps d)] / 2 eps. */
    float *d = xfloats(p->n), *w0 = xfloats(p->n);
    memcpy(w0, p->w, p->n * sizeof *w0);
    fill_normal(d, p->n, &r, 1.0);
    vec_scal(p->n, (float)(1.0 / vec_nrm2(p->n, d)), d);
    double analytic = vec_dot(p->n, g, d);
    vec_axpy(p->n, (float)EPS, d, p->w);
    double fp = model_loss(&c, false);
    memcpy(p->w, w0, p->n * sizeof *w0);
    vec_axpy(p->n, (float)-EPS, d, p->w);
    double fm = model_loss(&c, false);
    memcpy(p->w, w0, p->n * sizeof *w0);
    double numeric = (fp - fm) / (2 * EPS);
    ok(agree(analytic, numeric, 5e-3, 1e-5), "%s: directional derivative %.6g vs %.6g", label,
       analytic, numeric);

    /* Sampled coordinates: up to 16 per tensor, fixed seed. */
    int bad = 0, checked = 0;
    for (int t = 0; t < p->nt; t++) {
        const struct tensor *tt = &p->t[t];
        int k = tt->n < 16 ? (int)tt->n : 16;
        for (int j = 0; j < k; j++) {
            size_t i = tt->off + (tt->n <= 16 ? (size_t)j : rng_below(&r, tt->n));
            float old = p->w[i];
            p->w[i] = old + (float)EPS;
            double lp = model_loss(&c, false);
            p->w[i] = old - (float)EPS;
            double lm = model_loss(&c, false);
            p->w[i] = old;
            double num = (lp - lm) / (2 * EPS);
            if (!agree(g[i], num, 1e-2, 3e-5)) {
                bad++;
                diag("%s: %s[%zu] analytic %.6g numeric %.6g", label, tt->name, i - tt->off,
                     g[i], num);
            }
            checked++;
        }
    }
    ok(bad == 0, "%s: %d sampled coordinates match central differences", label, checked);
    free(g);
    free(d);
    free(w0);
    model_release(&c.m);
    cfg_free(&cfg);
}

/* Weights are named and shaped as torch.nn.Sequential's state_dict. */
static void check_names(void)
{
    struct cfg cfg;
    struct err e = {0};
    struct model m;
    cfg_load_string(&cfg, "m.yaml", "name: mlp\nhidden: [6, 5]\n", &e);
    if (!ok(model_init(&m, cfg.root, 3, 2, 4, 0, &e) == 0, "mlp builds"))
        return;
    static const char *const names[] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight",
                                        "4.bias"};
    static const int rows[] = {6, 6, 5, 5, 2, 2}, cols[] = {3, 0, 6, 0, 5, 0};
    bool good = m.p.nt == 6;
    for (int i = 0; good && i < 6; i++)
        good = !strcmp(m.p.t[i].name, names[i]) && m.p.t[i].shape[0] == rows[i] &&
               (cols[i] == 0 ? m.p.t[i].ndim == 1 : m.p.t[i].shape[1] == cols[i]);
    ok(good, "mlp tensors are 0.weight [6, 3], 0.bias [6], 2.weight [5, 6], ... as in PyTorch");
    /* PyTorch's default init bound for Linear(3, 6) is 1/sqrt(3). */
    float mx = 0;
    for (size_t i = 0; i < m.p.t[0].n; i++)
        mx = fmaxf(mx, fabsf(m.p.w[m.p.t[0].off + i]));
    ok(mx > 0 && mx <= 1 / sqrtf(3.0f), "first layer init within U(-1/sqrt(3), 1/sqrt(3))");
    model_release(&m);
    cfg_free(&cfg);
}

/* Above about a million multiply-adds per pass the MLP splits its passes by output unit across
 * threads (mlp.c); the split forward and backward must agree with the one-thread passes. */
static void check_split(const char *act)
{
    enum { SI = 100, SO = 10, SB = 64 };
    char yaml[128];
    snprintf(yaml, sizeof yaml, "name: mlp\nhidden: [300, 200]\nactivation: %s\n", act);
    int nt0 = threads_get();
    threads_set(2);
    struct cfg cfg;
    struct err e = {0};
    struct model m;
    memset(&m, 0, sizeof m);
    if (!ok(cfg_load_string(&cfg, "model.yaml", yaml, &e) == 0 &&
                model_init(&m, cfg.root, SI, SO, SB, 7, &e) == 0,
            "split %s: builds (%s)", act, e.msg)) {
        threads_set(nt0);
        return;
    }
    struct rng r;
    rng_init(&r, 5, "test.split", 0);
    float *x = xfloats(SB * SI), *dout = xfloats(SB * SO), *out[2], *g[2];
    fill_normal(x, SB * SI, &r, 1.0);
    fill_normal(dout, SB * SO, &r, 0.1);
    size_t n = m.p.n;
    for (int k = 0; k < 2; k++) {
        threads_set(2 - k); /* k = 0: two threads, k = 1: one */
        for (int t = 0; t < m.p.nt; t++)
            for (size_t i = 0; i < m.p.t[t].n; i++)
                m.p.g[m.p.t[t].off + i] = NAN;
        m.ops->forward(&m, x, SB, PASS_TRAIN_UPDATE);
        m.ops->backward(&m, x, dout, SB, false);
        out[k] = xfloats(SB * SO);
        g[k] = xfloats(n);
        memcpy(out[k], m.out, SB * SO * sizeof(float));
        memcpy(g[k], m.p.g, n * sizeof(float));
    }
    double dout_max = 0, dg_max = 0, g_max = 0, o_max = 0;
    for (int i = 0; i < SB * SO; i++) {
        dout_max = worse(dout_max, fabs((double)out[0][i] - out[1][i]));
        o_max = worse(o_max, fabs(out[1][i]));
    }
    for (size_t i = 0; i < n; i++) {
        dg_max = worse(dg_max, fabs((double)g[0][i] - g[1][i]));
        g_max = worse(g_max, fabs(g[1][i]));
    }
    ok(dout_max <= 1e-6 * o_max, "split %s: 2-thread forward equals 1-thread (max diff %.2g)",
       act, dout_max);
    ok(g_max > 0 && dg_max <= 1e-5 * g_max,
       "split %s: 2-thread gradient equals 1-thread (max diff %.2g of %.2g)", act, dg_max, g_max);
    /* acc adds the split gradient onto what is there. */
    threads_set(2);
    m.ops->backward(&m, x, dout, SB, true);
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = worse(worst, fabs((double)m.p.g[i] - 2.0 * g[0][i]));
    ok(worst <= 1e-5 * g_max, "split %s: backward with acc adds (max diff %.2g)", act, worst);
    for (int k = 0; k < 2; k++) {
        free(out[k]);
        free(g[k]);
    }
    free(x);
    free(dout);
    model_release(&m);
    cfg_free(&cfg);
    threads_set(nt0);
}

int main(void)
{
    check_activation(ACT_RELU);
    check_activation(ACT_TANH);
    check_activation(ACT_GELU);
    check_act_rop(ACT_RELU);
    check_act_rop(ACT_TANH);
    check_act_rop(ACT_GELU);
    check_xent(0.0f);
    check_xent(0.1f);
    check_mse();
    check_linear();
    check_names();
    check_model("name: linear\n", "linear");
    check_model("name: linear\nbias: false\n", "linear without bias");
    check_model("name: mlp\nhidden: [7, 6]\nactivation: tanh\n", "mlp tanh");
    check_model("name: mlp\nhidden: [7, 6]\nactivation: gelu\n", "mlp gelu");
    check_model("name: mlp\nhidden: [9]\nactivation: relu\n", "mlp relu");
    check_split("relu");
    check_split("tanh");
    check_split("gelu");
    for (int i = 0; model_registry[i]; i++)
        diag("registered model '%s' covered above", model_registry[i]->name);
    return done();
}
