/* test_conv: the convolutional layers, models, CIFAR loader and BatchNorm pass policy.
 *
 * Layers: convolution against a direct double-precision convolution; every layer's backward
 * against central differences, directionally (a random unit direction over all inputs and
 * weights) and on sampled coordinates; BatchNorm in training and evaluation modes and its
 * running-statistics update; pooling with inputs spaced apart so no window has near-ties.
 * The convolution's forward with acc adds what it writes without (to rounding), and its
 * backward without dw gives the same dx bits and writes no weight partial.
 * R-operators (Hessian-vector products, evaluation mode): every value of batchnorm_rop,
 * batchnorm_rop_backward (rdx, hgamma, hbeta), maxpool_rop and add_rop, with and without a
 * fused ReLU, against central differences of the plain kernels (batchnorm_forward and
 * batchnorm_backward at the moved forward, maxpool_forward, add_forward) along the tangents of
 * all their inputs, in double, Richardson-extrapolated, on inputs and tangents gridded so
 * every moved value is exact in float (rop_check); ReLU inputs at least 0.25 from the kink
 * and pool inputs spaced apart, with a check that no difference crosses a kink; acc adds
 * exactly, and the backward's dx equals batchnorm_backward's.
 * Models (cnn, resnet A/B, resnet-18, wrn) get the same two checks in PASS_TRAIN_FROZEN and
 * PASS_EVAL, with losses summed in double and the steps extrapolated (Richardson): with a
 * smooth activation (GELU/tanh, model key `activation`), and with ReLU in evaluation mode,
 * discarding differences that cross a kink (cn_fingerprint). The PyTorch comparison of
 * logits and gradients is experiments/torch-check-resnet/check.py. Then the CIFAR binary formats from small files this
 * test writes, augmentation determinism, and whole runs: one SAM step with
 * bn_update: first_pass leaves the running statistics of one plain training-mode forward pass.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "cfg.h"
#include "convnet.h"
#include "data.h"
#include "model.h"
#include "nn.h"
#include "nn_conv.h"
#include "rng.h"
#include "safetensors.h"
#include "tap.h"
#include "train.h"

static bool agree(double a, double n, double rtol, double floor)
{
    return fabs(a - n) <= floor || fabs(a - n) / (fabs(a) + fabs(n)) <= rtol;
}

static void fill_normal(float *x, size_t n, struct rng *r, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_normal(r));
}

static double dot_d(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ---- a generic layer check: f(inputs) = sum(c * layer(inputs)), inputs concatenated ---- */

#define LC_MAX 160
struct lcheck {
    int n_arr;
    float *arr[LC_MAX];  /* the arrays differentiated (x, w, b, ...; a model's tensors) */
    size_t len[LC_MAX];
    const char *what[LC_MAX];
    float *grad[LC_MAX]; /* analytic gradients of sum(c * out) */
    int samples;         /* coordinates sampled per array (0: 16) */
    double (*f)(void *ctx); /* sum(c * out) at the current arrays */
    void *ctx;
    /* optional: fingerprint of the piecewise-linear region of the last f() (convnet.h) */
    uint64_t (*region)(void *ctx);
};

/* The region of f at the current arrays (0 without a region callback). */
static uint64_t region_at(struct lcheck *l)
{
    if (!l->region)
        return 0;
    l->f(l->ctx);
    return l->region(l->ctx);
}

/* Central difference of l->f along (dir, scale s): [f(a + s dir) - f(a - s dir)] / 2s, arrays
 * restored from save afterwards. */
static uint64_t base_region; /* region at the unperturbed arrays */
static bool crossed;         /* a difference since the last reset crossed a kink */

static double central(struct lcheck *l, float **dir, float **save, double s)
{
    for (int a = 0; a < l->n_arr; a++)
        vec_axpy(l->len[a], (float)s, dir[a], l->arr[a]);
    double fp = l->f(l->ctx);
    crossed |= l->region && l->region(l->ctx) != base_region;
    for (int a = 0; a < l->n_arr; a++) {
        memcpy(l->arr[a], save[a], l->len[a] * sizeof(float));
        vec_axpy(l->len[a], (float)-s, dir[a], l->arr[a]);
    }
    double fm = l->f(l->ctx);
    crossed |= l->region && l->region(l->ctx) != base_region;
    for (int a = 0; a < l->n_arr; a++)
        memcpy(l->arr[a], save[a], l->len[a] * sizeof(float));
    return (fp - fm) / (2 * s);
}

/* One coordinate's central difference at step s. */
static double central1(struct lcheck *l, int a, size_t i, double s)
{
    float old = l->arr[a][i];
    l->arr[a][i] = old + (float)s;
    double p = l->f(l->ctx);
    crossed |= l->region && l->region(l->ctx) != base_region;
    l->arr[a][i] = old - (float)s;
    double m = l->f(l->ctx);
    crossed |= l->region && l->region(l->ctx) != base_region;
    l->arr[a][i] = old;
    return (p - m) / (2 * s);
}

/* Directional and sampled-coordinate checks of an lcheck. With `richardson`, the difference is
 * extrapolated from steps eps and eps/2, (4 D(eps/2) - D(eps)) / 3, which cancels the O(eps^2)
 * term: deep networks whose BatchNorm layers see few values per channel are curved enough
 * that a plain central difference at a step above float32 noise is off by several percent. */
static void layer_check_x(struct lcheck *l, const char *label, double eps, double rtol,
                          double floor, bool richardson)
{
    struct rng r;
    rng_init(&r, 11, "test.layer", 0);
    /* directional */
    float *dir[LC_MAX], *save[LC_MAX];
    double norm = 0, analytic = 0;
    for (int a = 0; a < l->n_arr; a++) {
        dir[a] = xfloats(l->len[a]);
        save[a] = xfloats(l->len[a]);
        fill_normal(dir[a], l->len[a], &r, 1);
        memcpy(save[a], l->arr[a], l->len[a] * sizeof(float));
        norm += dot_d(dir[a], dir[a], l->len[a]);
    }
    /* d = unit(random) + unit(gradient), normalised: it still moves every coordinate, and the
     * derivative along it is at least ||g|| / 2, well above the float32 noise of the
     * differences (a purely random direction gives ||g|| / sqrt(n), often below it). */
    double gnorm = 0;
    for (int a = 0; a < l->n_arr; a++)
        gnorm += dot_d(l->grad[a], l->grad[a], l->len[a]);
    gnorm = sqrt(gnorm);
    double dnorm = 0;
    for (int a = 0; a < l->n_arr; a++) {
        vec_scal(l->len[a], (float)(1 / sqrt(norm)), dir[a]);
        if (gnorm > 0)
            vec_axpy(l->len[a], (float)(1 / gnorm), l->grad[a], dir[a]);
        dnorm += dot_d(dir[a], dir[a], l->len[a]);
    }
    for (int a = 0; a < l->n_arr; a++) {
        vec_scal(l->len[a], (float)(1 / sqrt(dnorm)), dir[a]);
        analytic += dot_d(dir[a], l->grad[a], l->len[a]);
    }
    /* A difference that crosses a ReLU or max-pool kink measures the kink, not the gradient:
     * shrink the step until neither side leaves the region (or give up after 4 tries). */
    base_region = region_at(l);
    double numeric = 0, step = eps;
    for (int tries = 0; tries < 4; tries++, step /= 4) {
        crossed = false;
        numeric = central(l, dir, save, step);
        if (richardson)
            numeric = (4 * central(l, dir, save, step / 2) - numeric) / 3;
        if (!crossed)
            break;
    }
    if (crossed)
        diag("%s: directional difference crosses a kink even at step %.2g", label, step);
    ok(agree(analytic, numeric, rtol, floor), "%s: directional derivative %.6g vs %.6g", label,
       analytic, numeric);
    /* sampled coordinates */
    int bad = 0, checked = 0, kinks = 0;
    for (int a = 0; a < l->n_arr; a++) {
        int want = l->samples ? l->samples : 16;
        int k = l->len[a] < (size_t)want ? (int)l->len[a] : want;
        for (int j = 0; j < k; j++) {
            size_t i = l->len[a] <= (size_t)want ? (size_t)j : rng_below(&r, l->len[a]);
            double num = 0, h = eps;
            for (int tries = 0; tries < 3; tries++, h /= 4) {
                crossed = false;
                num = central1(l, a, i, h);
                if (richardson)
                    num = (4 * central1(l, a, i, h / 2) - num) / 3;
                if (!crossed)
                    break;
            }
            if (crossed) { /* a kink within the smallest step: this coordinate says nothing */
                kinks++;
                continue;
            }
            if (!agree(l->grad[a][i], num, rtol, floor)) {
                bad++;
                diag("%s: d/d %s[%zu] analytic %.6g numeric %.6g", label, l->what[a], i,
                     l->grad[a][i], num);
            }
            checked++;
        }
    }
    ok(bad == 0 && checked >= 2 * kinks, "%s: %d sampled coordinates match central differences "
       "(%d more skipped: a kink within the step)", label, checked, kinks);
    for (int a = 0; a < l->n_arr; a++) {
        free(dir[a]);
        free(save[a]);
    }
}

static void layer_check(struct lcheck *l, const char *label, double eps, double rtol,
                        double floor)
{
    layer_check_x(l, label, eps, rtol, floor, false);
}

/* ---- an R-operator check: a kernel's tangent against differences of the plain kernel ---- */

/* For a kernel f of arrays a (inputs, weights, output gradients) with tangents r, the
 * R-operator is R{f} = d/dt f(a + t r) at t = 0. It is compared, output by output, with the
 * central difference of f itself, [f(a + s r) - f(a - s r)] / 2s, taken in double and
 * extrapolated from s and s/2 (Richardson, as layer_check_x). The arrays are multiples of
 * RC_Q and the tangents of RC_QT (rc_quantise), so with steps 2^-7 and 2^-8 every a +- s r is
 * exact in float: the differences see the displacement asked for, and only the outputs'
 * rounding is noise. `region`, when set, fingerprints the side of every kink (ReLU masks,
 * argmaxes) at the last f(); the inputs are built away from kinks, so a difference that
 * crosses one is a fault of the test's setup and fails the check. */
#define RC_MAX 4
#define RC_Q 0x1p-16  /* grid of the arrays (|a| < 128: a +- s r stays within 24 bits) */
#define RC_QT 0x1p-8  /* grid of the tangents */
#define RC_STEP 0x1p-7
struct rcheck {
    int n_arr, n_out;
    float *arr[RC_MAX];       /* moved along their tangents */
    const float *dir[RC_MAX]; /* the tangents */
    size_t len[RC_MAX];
    const float *out[RC_MAX]; /* what f writes */
    const float *rop[RC_MAX]; /* the R-op's tangent of each output, at the unmoved arrays */
    size_t out_len[RC_MAX];
    const char *what[RC_MAX];
    void (*f)(void *ctx);
    void *ctx;
    uint64_t (*region)(void *ctx);
};

/* Round to the nearest multiple of q. */
static void rc_quantise(float *x, size_t n, double q)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(nearbyint(x[i] / q) * q);
}

/* FNV-1a over the signs of y (y > 0): which side of a ReLU's kink each value lies on. */
static uint64_t mask_print(const float *y, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint64_t)(y[i] > 0)) * 1099511628211ULL;
    return h;
}

/* d[o] = central difference of output o at step s. Returns RC_CROSSED when a side left the
 * base region, RC_INEXACT when a displacement was not exactly s r in float (off the grid). */
enum { RC_CROSSED = 1, RC_INEXACT = 2 };
static int rc_central(struct rcheck *l, float *const *save, double s, double *const *d,
                      uint64_t base)
{
    int fault = 0;
    for (int sign = 1; sign >= -1; sign -= 2) {
        for (int a = 0; a < l->n_arr; a++)
            for (size_t i = 0; i < l->len[a]; i++) {
                double want = sign * s * l->dir[a][i];
                l->arr[a][i] = (float)(save[a][i] + want);
                if ((double)l->arr[a][i] - save[a][i] != want)
                    fault |= RC_INEXACT;
            }
        l->f(l->ctx);
        if (l->region && l->region(l->ctx) != base)
            fault |= RC_CROSSED;
        for (int o = 0; o < l->n_out; o++)
            for (size_t i = 0; i < l->out_len[o]; i++)
                d[o][i] = sign > 0 ? l->out[o][i] : (d[o][i] - l->out[o][i]) / (2 * s);
    }
    for (int a = 0; a < l->n_arr; a++)
        memcpy(l->arr[a], save[a], l->len[a] * sizeof(float));
    return fault;
}

/* One check per output: every value agrees (agree(rtol, floor)) with the extrapolated
 * difference. f runs once more at the end, so its outputs are those at the unmoved arrays. */
static void rop_check(struct rcheck *l, const char *label, double rtol, double floor)
{
    float *save[RC_MAX];
    double *d1[RC_MAX], *d2[RC_MAX];
    for (int a = 0; a < l->n_arr; a++) {
        save[a] = xfloats(l->len[a]);
        memcpy(save[a], l->arr[a], l->len[a] * sizeof(float));
    }
    for (int o = 0; o < l->n_out; o++) {
        d1[o] = xmalloc(l->out_len[o] * sizeof(double));
        d2[o] = xmalloc(l->out_len[o] * sizeof(double));
    }
    l->f(l->ctx);
    uint64_t base = l->region ? l->region(l->ctx) : 0;
    int fault = rc_central(l, save, RC_STEP, d1, base) | rc_central(l, save, RC_STEP / 2, d2, base);
    for (int o = 0; o < l->n_out; o++) {
        int bad = 0;
        double worst = 0, size = 0;
        for (size_t i = 0; i < l->out_len[o]; i++) {
            double num = (4 * d2[o][i] - d1[o][i]) / 3;
            worst = worse(worst, fabs(l->rop[o][i] - num));
            size = worse(size, fabs(num));
            if (!agree(l->rop[o][i], num, rtol, floor) && bad++ < 3)
                diag("%s: %s[%zu] R-op %.7g, difference %.7g", label, l->what[o], i,
                     l->rop[o][i], num);
        }
        /* size > 0.1: a tangent zero everywhere (all masked, say) would pass trivially */
        ok(bad == 0 && !fault && size > 0.1,
           "%s: %s matches central differences of the plain kernel (%zu values up to %.3g, "
           "max error %.2g)%s%s", label, l->what[o], l->out_len[o], size, worst,
           fault & RC_CROSSED ? "; a difference crossed a kink" : "",
           fault & RC_INEXACT ? "; a displacement was inexact" : "");
    }
    l->f(l->ctx);
    for (int a = 0; a < l->n_arr; a++)
        free(save[a]);
    for (int o = 0; o < l->n_out; o++)
        free(d1[o]), free(d2[o]);
}

/* ---- convolution ---- */

struct conv_ctx {
    struct conv_shape s;
    int batch;
    float *x, *w, *b, *c, *out;
};

static double conv_f(void *p)
{
    struct conv_ctx *k = p;
    conv2d_ref(k->out, k->x, k->w, k->b, k->batch, &k->s);
    return dot_d(k->c, k->out, (size_t)k->batch * k->s.c_out * k->s.h_out * k->s.w_out);
}

static struct conv_ws ws_new(int n_blk, const struct conv_shape *s)
{
    struct conv_ws ws = {.n_blk = n_blk};
    ws.col = xcalloc((size_t)n_blk, sizeof *ws.col);
    ws.dw = xcalloc((size_t)n_blk, sizeof *ws.dw);
    /* Exact sizes, filled with NaN: a kernel that reads workspace it did not write first (a
     * block without examples must still contribute a zero weight gradient) fails the checks, as
     * it would in a model, where every layer shares the workspace. */
    size_t nc = conv_col_floats(s), nw = (size_t)s->c_out * s->c_in * s->k * s->k;
    for (int b = 0; b < n_blk; b++) {
        ws.col[b] = xfloats(nc ? nc : 1);
        ws.dw[b] = xfloats(nw);
        for (size_t i = 0; i < nc; i++)
            ws.col[b][i] = NAN;
        for (size_t i = 0; i < nw; i++)
            ws.dw[b][i] = NAN;
    }
    return ws;
}

static void ws_free(struct conv_ws *ws)
{
    for (int b = 0; b < ws->n_blk; b++) {
        free(ws->col[b]);
        free(ws->dw[b]);
    }
    free(ws->col);
    free(ws->dw);
}

static void check_conv(int batch, int c_in, int h, int w, int c_out, int k, int stride, int pad,
                       bool bias)
{
    char label[96];
    snprintf(label, sizeof label, "conv %dx%dx%d -> %d, k%d s%d p%d%s", c_in, h, w, c_out, k,
             stride, pad, bias ? " +bias" : "");
    struct conv_ctx c = {.batch = batch};
    if (!ok(conv_shape_init(&c.s, c_in, h, w, c_out, k, stride, pad), "%s: shape", label))
        return;
    size_t nx = (size_t)batch * c_in * h * w, nw = (size_t)c_out * c_in * k * k;
    size_t no = (size_t)batch * c_out * c.s.h_out * c.s.w_out;
    struct rng r;
    rng_init(&r, 5, "test.conv", (uint64_t)(k * 100 + stride * 10 + pad));
    c.x = xfloats(nx), c.w = xfloats(nw), c.b = bias ? xfloats((size_t)c_out) : NULL;
    c.c = xfloats(no), c.out = xfloats(no);
    float *out = xfloats(no), *out3 = xfloats(no), *dx = xfloats(nx), *dw = xfloats(nw);
    float *db = xfloats((size_t)c_out), *dx2 = xfloats(nx), *dw3 = xfloats(nw);
    fill_normal(c.x, nx, &r, 1);
    fill_normal(c.w, nw, &r, 0.5);
    if (bias)
        fill_normal(c.b, (size_t)c_out, &r, 0.5);
    fill_normal(c.c, no, &r, 1);
    struct conv_ws ws1 = ws_new(1, &c.s), ws3 = ws_new(3, &c.s);
    conv2d_forward(out, NULL, c.x, c.w, c.b, batch, &c.s, &ws1, false);
    conv2d_forward(out3, NULL, c.x, c.w, c.b, batch, &c.s, &ws3, false);
    conv_f(&c);
    double worst = 0;
    for (size_t i = 0; i < no; i++)
        worst = worse(worst, fabs(out[i] - c.out[i]));
    ok(worst < 1e-4 && !memcmp(out, out3, no * sizeof *out),
       "%s: im2col+GEMM equals the direct convolution (max error %.2g), any block count",
       label, worst);
    conv2d_backward(dx, dw, db, c.c, c.x, c.w, batch, &c.s, &ws1, false);
    conv2d_backward(NULL, dw3, NULL, c.c, c.x, c.w, batch, &c.s, &ws3, false);
    worst = 0;
    for (size_t i = 0; i < nw; i++)
        worst = worse(worst, fabs(dw[i] - dw3[i]));
    ok(worst < 1e-4, "%s: weight gradient with 1 and 3 batch blocks agree (%.2g)", label, worst);
    /* acc: a second backward adds its dx on top. */
    memcpy(dx2, dx, nx * sizeof *dx);
    conv2d_backward(dx2, dw3, NULL, c.c, c.x, c.w, batch, &c.s, &ws3, true);
    worst = 0;
    for (size_t i = 0; i < nx; i++)
        worst = worse(worst, fabs(dx2[i] - 2 * dx[i]));
    ok(worst < 1e-4, "%s: acc adds into dx", label);
    /* The forward with acc (a tangent's weight term added onto its input term, cn_hvp) adds
     * onto what out held the values acc = false writes, to float rounding of the sum. */
    float *outa = xfloats(no), *pre = xfloats(no);
    fill_normal(pre, no, &r, 1);
    memcpy(outa, pre, no * sizeof *outa);
    conv2d_forward(outa, NULL, c.x, c.w, c.b, batch, &c.s, &ws3, true);
    /* relative to the terms summed: pre, the bias and the rest of out */
    worst = 0;
    for (size_t i = 0; i < no; i++) {
        double bi = bias ? fabs(c.b[i / ((size_t)c.s.h_out * c.s.w_out) % (size_t)c_out]) : 0;
        worst = worse(worst, fabs(outa[i] - ((double)pre[i] + out[i])) /
                                 (fabs(pre[i]) + fabs(out[i]) + bi));
    }
    ok(worst < 4 * FLT_EPSILON, "%s: forward with acc adds what it writes without (max "
       "relative difference %.2g)", label, worst);
    /* dw == NULL (the input gradient alone, as a tangent's backward needs): the same dx bits,
     * plain and with acc, and no weight partial of the workspace written (they stay NaN). */
    struct conv_ws wsn = ws_new(3, &c.s);
    float *dxn = xfloats(nx), *dbn = xfloats((size_t)c_out);
    conv2d_backward(dxn, NULL, bias ? dbn : NULL, c.c, c.x, c.w, batch, &c.s, &wsn, false);
    bool same = !memcmp(dxn, dx, nx * sizeof *dx) &&
                (!bias || !memcmp(dbn, db, (size_t)c_out * sizeof *db));
    memcpy(dxn, dx, nx * sizeof *dx);
    conv2d_backward(dxn, NULL, NULL, c.c, c.x, c.w, batch, &c.s, &wsn, true);
    same = same && !memcmp(dxn, dx2, nx * sizeof *dx);
    int written = 0;
    for (int bi = 0; bi < wsn.n_blk; bi++)
        for (size_t i = 0; i < nw; i++)
            written += !isnan(wsn.dw[bi][i]);
    ok(same && written == 0, "%s: backward without dw: the same dx (and db) bits, plain and with "
       "acc; %d weight-partial values written", label, written);
    ws_free(&wsn);
    free(outa), free(pre), free(dxn), free(dbn);
    /* The loss is linear in each array, so a large step has no truncation error. */
    struct lcheck l = {.n_arr = bias ? 3 : 2, .arr = {c.x, c.w, c.b},
                       .len = {nx, nw, (size_t)c_out},
                       .what = {"x", "w", "b"}, .grad = {dx, dw, db}, .f = conv_f, .ctx = &c};
    layer_check(&l, label, 1e-2, 1e-3, 1e-4);
    ws_free(&ws1);
    ws_free(&ws3);
    free(c.x), free(c.w), free(c.b), free(c.c), free(c.out);
    free(out), free(out3), free(dx), free(dw), free(db), free(dx2), free(dw3);
}

/* ---- BatchNorm ---- */

struct bn_ctx {
    int batch, c, hw;
    bool train;
    float *x, *gamma, *beta, *rm, *rv, *c_, *y, *sm, *si;
};

static double bn_f(void *p)
{
    struct bn_ctx *k = p;
    /* running statistics are read in eval mode and never updated here (NULL in training) */
    batchnorm_forward(k->y, k->sm, k->si, k->x, NULL, k->gamma, k->beta, k->train ? NULL : k->rm,
                      k->train ? NULL : k->rv, k->batch, k->c, k->hw, k->train, false, 0.1f,
                      1e-5f);
    return dot_d(k->c_, k->y, (size_t)k->batch * k->c * k->hw);
}

static void check_bn(bool train)
{
    const char *label = train ? "batchnorm (training: batch statistics)"
                              : "batchnorm (evaluation: running statistics)";
    struct bn_ctx k = {.batch = 3, .c = 4, .hw = 5, .train = train};
    size_t n = (size_t)k.batch * k.c * k.hw;
    struct rng r;
    rng_init(&r, 6, "test.bn", train);
    k.x = xfloats(n), k.y = xfloats(n), k.c_ = xfloats(n);
    float gamma[4], beta[4], rm[4], rv[4], sm[4], si[4], dg[4] = {0}, dbt[4] = {0};
    k.gamma = gamma, k.beta = beta, k.rm = rm, k.rv = rv, k.sm = sm, k.si = si;
    fill_normal(k.x, n, &r, 2);
    for (size_t i = 0; i < n; i++)
        k.x[i] += (float)(i % 4); /* channel means differ */
    fill_normal(k.c_, n, &r, 1);
    fill_normal(gamma, 4, &r, 1);
    fill_normal(beta, 4, &r, 1);
    for (int i = 0; i < 4; i++) {
        rm[i] = (float)(0.3 * i - 0.2);
        rv[i] = (float)(0.5 + i);
    }
    float *dx = xfloats(n);
    bn_f(&k);
    batchnorm_backward(dx, dg, dbt, k.c_, NULL, k.x, sm, si, gamma, k.batch, k.c, k.hw, train,
                       false);
    struct lcheck l = {.n_arr = 3, .arr = {k.x, gamma, beta}, .len = {n, 4, 4},
                       .what = {"x", "gamma", "beta"}, .grad = {dx, dg, dbt}, .f = bn_f,
                       .ctx = &k};
    layer_check_x(&l, label, 1e-2, 5e-3, 1e-4, true);
    if (train) {
        /* Running statistics: PyTorch's momentum update with the unbiased variance. */
        float rm0[4], rv0[4];
        memcpy(rm0, rm, sizeof rm);
        memcpy(rv0, rv, sizeof rv);
        batchnorm_forward(k.y, sm, si, k.x, NULL, gamma, beta, rm, rv, k.batch, k.c, k.hw, true,
                          false, 0.1f, 1e-5f);
        double worst = 0;
        for (int ch = 0; ch < 4; ch++) {
            double s = 0, v = 0, cnt = k.batch * k.hw;
            for (int b = 0; b < k.batch; b++)
                for (int j = 0; j < k.hw; j++)
                    s += k.x[(b * 4 + ch) * k.hw + j];
            double mean = s / cnt;
            for (int b = 0; b < k.batch; b++)
                for (int j = 0; j < k.hw; j++)
                    v += pow(k.x[(b * 4 + ch) * k.hw + j] - mean, 2);
            worst = worse(worst, fabs(rm[ch] - (0.9 * rm0[ch] + 0.1 * mean)));
            worst = worse(worst, fabs(rv[ch] - (0.9 * rv0[ch] + 0.1 * v / (cnt - 1))));
            /* normalised output has mean beta, biased variance gamma^2 (up to eps) */
            double ym = 0, yv = 0;
            for (int b = 0; b < k.batch; b++)
                for (int j = 0; j < k.hw; j++)
                    ym += k.y[(b * 4 + ch) * k.hw + j];
            ym /= cnt;
            for (int b = 0; b < k.batch; b++)
                for (int j = 0; j < k.hw; j++)
                    yv += pow(k.y[(b * 4 + ch) * k.hw + j] - ym, 2);
            worst = worse(worst, fabs(ym - beta[ch]));
            worst = worse(worst, fabs(yv / cnt - gamma[ch] * gamma[ch]) * 1e-2);
        }
        ok(worst < 1e-5, "batchnorm running mean/var: momentum 0.1, unbiased variance; output "
                         "has mean beta, variance gamma^2 (max error %.2g)", worst);
    }
    free(k.x), free(k.y), free(k.c_), free(dx);
}

/* A convolution's per-plane moments (conv2d_forward) give BatchNorm the same statistics as
 * its own two passes over the output: outputs, saved statistics and running statistics agree,
 * also for a channel whose mean (a bias of 300) dwarfs its spread, where the textbook
 * one-pass E[x^2] - E[x]^2 in float loses every digit. */
static void check_conv_moments(void)
{
    struct conv_shape cs;
    SAMX_ASSERT(conv_shape_init(&cs, 3, 9, 7, 4, 3, 1, 1));
    int batch = 5, c = cs.c_out, hw = cs.h_out * cs.w_out;
    size_t nx = (size_t)batch * cs.c_in * cs.h * cs.w, no = (size_t)batch * c * hw;
    struct rng r;
    rng_init(&r, 8, "test.moments", 0);
    float *x = xfloats(nx), *w = xfloats((size_t)c * 27), b[4] = {0.5f, -1, 300, 0};
    float *out = xfloats(no), *y1 = xfloats(no), *y2 = xfloats(no);
    double *mo = xmalloc(no / hw * 2 * sizeof *mo);
    fill_normal(x, nx, &r, 1);
    fill_normal(w, (size_t)c * 27, &r, 0.3);
    struct conv_ws ws = ws_new(2, &cs);
    conv2d_forward(out, mo, x, w, b, batch, &cs, &ws, false);
    double worst_m = 0;
    for (int i = 0; i < batch * c; i++) {
        double s = 0, m2 = 0;
        for (int j = 0; j < hw; j++)
            s += out[(size_t)i * hw + j];
        for (int j = 0; j < hw; j++)
            m2 += pow(out[(size_t)i * hw + j] - s / hw, 2);
        worst_m = worse(worst_m, fabs(mo[2 * i] - s) / fmax(1, fabs(s)));
        worst_m = worse(worst_m, fabs(mo[2 * i + 1] - m2) / fmax(1, m2));
    }
    ok(worst_m < 1e-6, "conv2d moments: plane sums and squared deviations equal a double "
                       "reference to float rounding (max rel. error %.2g)", worst_m);
    float g[4] = {1, 0.5f, 2, -1}, be[4] = {0, 0.1f, -0.2f, 0.3f};
    float rm1[4] = {0}, rv1[4] = {1, 1, 1, 1}, rm2[4] = {0}, rv2[4] = {1, 1, 1, 1};
    float sm1[4], si1[4], sm2[4], si2[4];
    batchnorm_forward(y1, sm1, si1, out, NULL, g, be, rm1, rv1, batch, c, hw, true, false, 0.1f,
                      1e-5f);
    batchnorm_forward(y2, sm2, si2, out, mo, g, be, rm2, rv2, batch, c, hw, true, false, 0.1f,
                      1e-5f);
    /* Both against the definition in double: the output's error is the float rounding of
     * x - mean with |x| ~ 300, a few 1e-5 after scaling by gamma / std. */
    double err[2] = {0, 0}, stat = 0;
    for (int ch = 0; ch < c; ch++) {
        double s = 0, v = 0, cnt = (double)batch * hw;
        for (int n = 0; n < batch; n++)
            for (int j = 0; j < hw; j++)
                s += out[((size_t)n * c + ch) * hw + j];
        double mean = s / cnt;
        for (int n = 0; n < batch; n++)
            for (int j = 0; j < hw; j++)
                v += pow(out[((size_t)n * c + ch) * hw + j] - mean, 2);
        double is = 1 / sqrt(v / cnt + 1e-5);
        for (int n = 0; n < batch; n++)
            for (int j = 0; j < hw; j++) {
                size_t i = ((size_t)n * c + ch) * hw + j;
                double ref = (out[i] - mean) * is * g[ch] + be[ch];
                err[0] = worse(err[0], fabs(y1[i] - ref));
                err[1] = worse(err[1], fabs(y2[i] - ref));
            }
        stat = worse(stat, fabs(sm2[ch] - mean) / fmax(1, fabs(mean)));
        stat = worse(stat, fabs(si2[ch] - is) / is);
        stat = worse(stat, fabs(rm2[ch] - 0.1 * mean) / fmax(1, fabs(mean)));
        stat = worse(stat, fabs(rv2[ch] - (0.9 + 0.1 * v / (cnt - 1))) / rv2[ch]);
    }
    ok(err[1] < 1e-4 && err[1] <= 2 * err[0] + 1e-6 && stat < 1e-6,
       "batchnorm from conv moments: statistics and running statistics as the definition "
       "(%.2g), output as close as batchnorm's own passes (%.2g vs %.2g; a channel of mean "
       "300)", stat, err[1], err[0]);
    ws_free(&ws);
    free(x), free(w), free(out), free(y1), free(y2), free(mo);
}

/* ---- pooling, shortcut, dropout ---- */

enum pool_kind { POOL_MAX, POOL_AVG, POOL_GAP };

struct pool_ctx {
    enum pool_kind kind;
    int batch, c, h, w, k, stride;
    float *x, *c_, *out;
    int32_t *arg;
};

static size_t pool_out(const struct pool_ctx *p)
{
    if (p->kind == POOL_GAP)
        return (size_t)p->batch * p->c;
    return (size_t)p->batch * p->c * ((p->h - p->k) / p->stride + 1) *
           ((p->w - p->k) / p->stride + 1);
}

static double pool_f(void *q)
{
    struct pool_ctx *p = q;
    if (p->kind == POOL_MAX)
        maxpool_forward(p->out, p->arg, p->x, p->batch, p->c, p->h, p->w, p->k, p->stride);
    else if (p->kind == POOL_AVG)
        avgpool_forward(p->out, p->x, p->batch, p->c, p->h, p->w, p->k, p->stride);
    else
        gap_forward(p->out, p->x, p->batch, p->c, p->h * p->w);
    return dot_d(p->c_, p->out, pool_out(p));
}

static void check_pool(enum pool_kind kind, int k, int stride)
{
    static const char *const names[] = {"max pool", "average pool", "global average pool"};
    char label[64];
    snprintf(label, sizeof label, "%s k%d s%d", names[kind], k, stride);
    struct pool_ctx p = {.kind = kind, .batch = 2, .c = 3, .h = 7, .w = 6, .k = k,
                         .stride = stride};
    size_t nx = (size_t)p.batch * p.c * p.h * p.w, no = pool_out(&p);
    struct rng r;
    rng_init(&r, 7, "test.pool", (uint64_t)kind);
    p.x = xfloats(nx), p.c_ = xfloats(no), p.out = xfloats(no);
    p.arg = xmalloc(no * sizeof *p.arg);
    /* values spaced 0.05 apart in random order: no two within 2 eps, so no argmax flips */
    int *perm = xmalloc(nx * sizeof *perm);
    for (size_t i = 0; i < nx; i++)
        perm[i] = (int)i;
    rng_shuffle(&r, perm, (int)nx);
    for (size_t i = 0; i < nx; i++)
        p.x[i] = 0.05f * (float)perm[i] - 5.0f;
    fill_normal(p.c_, no, &r, 1);
    pool_f(&p);
    /* forward against the definition */
    int ho = kind == POOL_GAP ? 1 : (p.h - k) / stride + 1;
    int wo = kind == POOL_GAP ? 1 : (p.w - k) / stride + 1;
    int kh = kind == POOL_GAP ? p.h : k, kw = kind == POOL_GAP ? p.w : k;
    double worst = 0;
    for (int pl = 0; pl < p.batch * p.c; pl++)
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                double mx = -1e30, s = 0;
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++) {
                        double v = p.x[(size_t)pl * p.h * p.w + (oy * stride + ky) * p.w +
                                       ox * stride + kx];
                        mx = worse(mx, v);
                        s += v;
                    }
                double want = kind == POOL_MAX ? mx : s / (kh * kw);
                worst = worse(worst, fabs(want - p.out[((size_t)pl * ho + oy) * wo + ox]));
            }
    ok(worst < 1e-6, "%s: forward equals the definition (%.2g)", label, worst);
    float *dx = xfloats(nx);
    for (size_t i = 0; i < nx; i++)
        dx[i] = 1.0f; /* overwritten, not added to */
    if (kind == POOL_MAX)
        maxpool_backward(dx, p.c_, p.arg, p.batch, p.c, p.h, p.w, k, stride, false);
    else if (kind == POOL_AVG)
        avgpool_backward(dx, p.c_, p.batch, p.c, p.h, p.w, k, stride, false);
    else
        gap_backward(dx, p.c_, p.batch, p.c, p.h * p.w, false);
    struct lcheck l = {.n_arr = 1, .arr = {p.x}, .len = {nx}, .what = {"x"}, .grad = {dx},
                       .f = pool_f, .ctx = &p};
    layer_check(&l, label, 1e-2, 1e-3, 1e-4);
    free(p.x), free(p.c_), free(p.out), free(p.arg), free(perm), free(dx);
}

struct sc_ctx {
    int batch, c_in, h, w, c_out, stride;
    float *x, *c_, *out;
};

static double sc_f(void *q)
{
    struct sc_ctx *s = q;
    shortcut_a_forward(s->out, s->x, s->batch, s->c_in, s->h, s->w, s->c_out, s->stride);
    int ho = (s->h + s->stride - 1) / s->stride, wo = (s->w + s->stride - 1) / s->stride;
    return dot_d(s->c_, s->out, (size_t)s->batch * s->c_out * ho * wo);
}

static void check_shortcut(int stride)
{
    struct sc_ctx s = {.batch = 2, .c_in = 2, .h = 5, .w = 6, .c_out = 6, .stride = stride};
    int ho = (s.h + stride - 1) / stride, wo = (s.w + stride - 1) / stride;
    size_t nx = (size_t)s.batch * s.c_in * s.h * s.w, no = (size_t)s.batch * s.c_out * ho * wo;
    struct rng r;
    rng_init(&r, 8, "test.shortcut", (uint64_t)stride);
    s.x = xfloats(nx), s.c_ = xfloats(no), s.out = xfloats(no);
    fill_normal(s.x, nx, &r, 1);
    fill_normal(s.c_, no, &r, 1);
    sc_f(&s);
    /* channel 2 of the output is input channel 0 subsampled; channels 0, 1, 4, 5 are zero */
    bool good = s.out[(size_t)(0 * s.c_out + 2) * ho * wo + 1] == s.x[stride] &&
                s.out[(size_t)(1 * s.c_out + 3) * ho * wo + wo] ==
                    s.x[(size_t)(1 * s.c_in + 1) * s.h * s.w + stride * s.w];
    for (int j = 0; j < ho * wo; j++)
        good = good && s.out[j] == 0 && s.out[(size_t)5 * ho * wo + j] == 0;
    ok(good, "option-A shortcut (stride %d): x[:, :, ::%d, ::%d] with zero channels either side",
       stride, stride, stride);
    float *dx = xfloats(nx);
    shortcut_a_backward(dx, s.c_, s.batch, s.c_in, s.h, s.w, s.c_out, stride, false);
    char label[48];
    snprintf(label, sizeof label, "option-A shortcut (stride %d)", stride);
    struct lcheck l = {.n_arr = 1, .arr = {s.x}, .len = {nx}, .what = {"x"}, .grad = {dx},
                       .f = sc_f, .ctx = &s};
    layer_check(&l, label, 1e-2, 1e-4, 1e-5);
    free(s.x), free(s.c_), free(s.out), free(dx);
}

static void check_dropout(void)
{
    enum { B = 4, N = 500 };
    float *x = xfloats(B * N), *o1 = xfloats(B * N), *o2 = xfloats(B * N), *o3 = xfloats(B * N);
    float *m1 = xfloats(B * N), *m2 = xfloats(B * N), *m3 = xfloats(B * N), *dx = xfloats(B * N);
    for (int i = 0; i < B * N; i++)
        x[i] = 1.0f;
    dropout_forward(o1, m1, x, B, N, 0.3f, 9, 17, 0, 0);
    dropout_forward(o2, m2, x, B, N, 0.3f, 9, 17, 0, 0);
    dropout_forward(o3, m3, x, B, N, 0.3f, 9, 18, 0, 0);
    int dropped = 0;
    for (int i = 0; i < B * N; i++)
        dropped += o1[i] == 0;
    ok(!memcmp(o1, o2, sizeof(float) * B * N) && memcmp(o1, o3, sizeof(float) * B * N),
       "dropout: the same mask for the same (seed, step), another for the next step");
    ok(fabs(dropped / (double)(B * N) - 0.3) < 0.05 && fabsf(o1[0] + o1[1] + o1[2]) > 0,
       "dropout: drops about p = 0.3 (%d of %d), scales the rest by 1/(1-p)", dropped, B * N);
    dropout_backward(dx, x, m1, B * N, false);
    ok(!memcmp(dx, o1, sizeof(float) * B * N), "dropout backward multiplies by the same mask");
    free(x), free(o1), free(o2), free(o3), free(m1), free(m2), free(m3), free(dx);
}

/* ---- R-operators of the nonlinear layers (evaluation mode; cn_hvp) ---- */

/* A random sign times (margin + |N(0, 1)|): a value at least `margin` from a ReLU's kink. */
static double off_kink(struct rng *r, double margin)
{
    return (rng_uniform(r) < 0.5 ? -1 : 1) * (margin + fabs(rng_normal(r)));
}

struct bnr_ctx {
    int batch, c, hw;
    bool relu, backward;
    float *x, *gamma, *beta, *dy;   /* moved */
    float *rm, *rv, *sm, *si;       /* running statistics (constants); what forward saves */
    float *y, *dx, *dgamma, *dbeta; /* written */
};

/* BatchNorm in evaluation mode, then (backward) its gradient at the forward's output. */
static void bnr_f(void *p)
{
    struct bnr_ctx *k = p;
    batchnorm_forward(k->y, k->sm, k->si, k->x, NULL, k->gamma, k->beta, k->rm, k->rv, k->batch,
                      k->c, k->hw, false, k->relu, 0.1f, 1e-5f);
    if (!k->backward)
        return;
    memset(k->dgamma, 0, (size_t)k->c * sizeof(float));
    memset(k->dbeta, 0, (size_t)k->c * sizeof(float));
    batchnorm_backward(k->dx, k->dgamma, k->dbeta, k->dy, k->relu ? k->y : NULL, k->x, k->sm,
                       k->si, k->gamma, k->batch, k->c, k->hw, false, false);
}

static uint64_t bnr_region(void *p)
{
    struct bnr_ctx *k = p;
    return mask_print(k->y, (size_t)k->batch * k->c * k->hw);
}

/* batchnorm_rop against differences of batchnorm_forward (x, gamma, beta moved), and
 * batchnorm_rop_backward against differences of batchnorm_backward at the moved forward
 * (dy, x, gamma, beta moved; beta enters only through the ReLU's mask, constant here). */
static void check_bn_rop(bool relu)
{
    const char *label = relu ? "batchnorm+relu R-op (evaluation)" : "batchnorm R-op (evaluation)";
    enum { B = 3, C = 4, HW = 20 }; /* hw 20: batchnorm_backward's 16-lane loop and its tail */
    size_t n = (size_t)B * C * HW;
    struct rng r;
    rng_init(&r, 12, "test.bn_rop", relu);
    float gamma[C], beta[C], rm[C], rv[C], sm[C], si[C], dg[C], db[C], vg[C], vb[C];
    struct bnr_ctx k = {.batch = B, .c = C, .hw = HW, .relu = relu, .gamma = gamma, .beta = beta,
                        .rm = rm, .rv = rv, .sm = sm, .si = si, .dgamma = dg, .dbeta = db};
    k.x = xfloats(n), k.dy = xfloats(n), k.y = xfloats(n), k.dx = xfloats(n);
    float *rx = xfloats(n), *rdy = xfloats(n), *ry = xfloats(n), *dx = xfloats(n);
    float *rdx = xfloats(n);
    for (int ch = 0; ch < C; ch++) {
        gamma[ch] = (float)((rng_uniform(&r) < 0.5 ? -1 : 1) * (0.5 + rng_uniform(&r)));
        beta[ch] = (float)(0.5 * rng_normal(&r));
        rm[ch] = (float)(0.5 * rng_normal(&r));
        rv[ch] = (float)(0.5 + 1.5 * rng_uniform(&r));
    }
    rc_quantise(gamma, C, RC_Q);
    rc_quantise(beta, C, RC_Q);
    /* Pre-activations gamma is (x - mean) + beta at least 0.25 from the kink, of either sign;
     * no step moves them by more than 0.05. */
    for (size_t i = 0; i < n; i++) {
        int ch = (int)(i / HW % C);
        double is = 1 / sqrt(rv[ch] + 1e-5);
        k.x[i] = (float)(rm[ch] + (off_kink(&r, 0.25) - beta[ch]) / (gamma[ch] * is));
    }
    rc_quantise(k.x, n, RC_Q);
    fill_normal(k.dy, n, &r, 1);
    rc_quantise(k.dy, n, RC_Q);
    fill_normal(rx, n, &r, 0.5);
    fill_normal(rdy, n, &r, 0.5);
    fill_normal(vg, C, &r, 0.5);
    fill_normal(vb, C, &r, 0.5);
    rc_quantise(rx, n, RC_QT);
    rc_quantise(rdy, n, RC_QT);
    rc_quantise(vg, C, RC_QT);
    rc_quantise(vb, C, RC_QT);

    bnr_f(&k);
    int zeros = 0;
    for (size_t i = 0; i < n; i++)
        zeros += k.y[i] == 0;
    batchnorm_rop(ry, relu ? k.y : NULL, rx, k.x, gamma, vg, vb, sm, si, B, C, HW);
    struct rcheck l = {.n_arr = 3, .arr = {k.x, gamma, beta}, .dir = {rx, vg, vb},
                       .len = {n, C, C}, .n_out = 1, .out = {k.y}, .rop = {ry}, .out_len = {n},
                       .what = {"ry"}, .f = bnr_f, .ctx = &k,
                       .region = relu ? bnr_region : NULL};
    /* The floor is the float rounding of the outputs over the step: y = x gamma is + (beta -
     * mean gamma is) sums terms up to ~30 here (2e-6 rounding, over 2s = 2^-7: 2.5e-4), dgamma
     * sums up to ~12. */
    rop_check(&l, label, 1e-4, 3e-4);
    if (relu)
        ok(zeros > (int)n / 4 && zeros < (int)n * 3 / 4,
           "%s: the ReLU cuts %d of %zu values (both sides of the mask checked)", label, zeros, n);

    k.backward = true;
    bnr_f(&k);
    float hg[C] = {0}, hb[C] = {0};
    batchnorm_rop_backward(dx, rdx, hg, hb, k.dy, rdy, relu ? k.y : NULL, k.x, rx, sm, si, gamma,
                           vg, B, C, HW, false);
    int differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += dx[i] != k.dx[i];
    ok(differ == 0, "%s backward: dx equals batchnorm_backward's (%d of %zu differ)", label,
       differ, n);
    struct rcheck lb = {.n_arr = 4, .arr = {k.dy, k.x, gamma, beta},
                        .dir = {rdy, rx, vg, vb}, .len = {n, n, C, C}, .n_out = 3,
                        .out = {k.dx, dg, db}, .rop = {rdx, hg, hb}, .out_len = {n, C, C},
                        .what = {"rdx", "hgamma", "hbeta"}, .f = bnr_f, .ctx = &k,
                        .region = relu ? bnr_region : NULL};
    char lab2[64];
    snprintf(lab2, sizeof lab2, "%s backward", label);
    rop_check(&lb, lab2, 1e-4, 3e-4);

    /* acc: dx and rdx added to; hgamma and hbeta always are. Each value is the float sum of
     * what was there and what acc = false writes, so equality is exact. */
    float *dxa = xfloats(n), *rdxa = xfloats(n), *pre = xfloats(2 * n);
    float hga[C], hba[C], hpre[2 * C];
    fill_normal(pre, 2 * n, &r, 1);
    fill_normal(hpre, 2 * C, &r, 1);
    memcpy(dxa, pre, n * sizeof *dxa);
    memcpy(rdxa, pre + n, n * sizeof *rdxa);
    memcpy(hga, hpre, sizeof hga);
    memcpy(hba, hpre + C, sizeof hba);
    batchnorm_rop_backward(dxa, rdxa, hga, hba, k.dy, rdy, relu ? k.y : NULL, k.x, rx, sm, si,
                           gamma, vg, B, C, HW, true);
    differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += dxa[i] != pre[i] + dx[i] || rdxa[i] != pre[n + i] + rdx[i];
    for (int ch = 0; ch < C; ch++)
        differ += hga[ch] != hpre[ch] + hg[ch] || hba[ch] != hpre[C + ch] + hb[ch];
    ok(differ == 0, "%s backward with acc: adds into dx, rdx, hgamma, hbeta (%d differ)", label,
       differ);
    /* without dx and rdx: the same hgamma and hbeta */
    float hg0[C] = {0}, hb0[C] = {0};
    batchnorm_rop_backward(NULL, NULL, hg0, hb0, k.dy, rdy, relu ? k.y : NULL, k.x, rx, sm, si,
                           gamma, vg, B, C, HW, false);
    ok(!memcmp(hg0, hg, sizeof hg) && !memcmp(hb0, hb, sizeof hb),
       "%s backward without dx, rdx: the same hgamma, hbeta", label);
    free(k.x), free(k.dy), free(k.y), free(k.dx);
    free(rx), free(rdy), free(ry), free(dx), free(rdx), free(dxa), free(rdxa), free(pre);
}

struct mpr_ctx {
    int batch, c, h, w, k, stride;
    size_t no;
    float *x, *out;
    int32_t *arg;
};

static void mpr_f(void *p)
{
    struct mpr_ctx *m = p;
    maxpool_forward(m->out, m->arg, m->x, m->batch, m->c, m->h, m->w, m->k, m->stride);
}

static uint64_t mpr_region(void *p)
{
    struct mpr_ctx *m = p;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < m->no; i++)
        h = (h ^ (uint32_t)m->arg[i]) * 1099511628211ULL;
    return h;
}

static void check_maxpool_rop(int k, int stride)
{
    char label[48];
    snprintf(label, sizeof label, "max pool k%d s%d R-op", k, stride);
    struct mpr_ctx m = {.batch = 2, .c = 3, .h = 7, .w = 6, .k = k, .stride = stride};
    size_t nx = (size_t)m.batch * m.c * m.h * m.w;
    m.no = (size_t)m.batch * m.c * ((m.h - k) / stride + 1) * ((m.w - k) / stride + 1);
    struct rng r;
    rng_init(&r, 13, "test.pool_rop", (uint64_t)k);
    m.x = xfloats(nx), m.out = xfloats(m.no), m.arg = xmalloc(m.no * sizeof *m.arg);
    float *rx = xfloats(nx), *rout = xfloats(m.no);
    /* values 0.1 apart in random order, tangents below 2.5 in size: no step (< 0.02) brings
     * two within reach of each other, so no argmax flips */
    int *perm = xmalloc(nx * sizeof *perm);
    for (size_t i = 0; i < nx; i++)
        perm[i] = (int)i;
    rng_shuffle(&r, perm, (int)nx);
    for (size_t i = 0; i < nx; i++) {
        m.x[i] = 0.1f * (float)perm[i] - 12.0f;
        rx[i] = (float)fmin(2.4, fmax(-2.4, rng_normal(&r)));
    }
    rc_quantise(m.x, nx, RC_Q);
    rc_quantise(rx, nx, RC_QT);
    mpr_f(&m);
    maxpool_rop(rout, m.arg, rx, m.batch, m.c, m.h, m.w, k, stride);
    struct rcheck l = {.n_arr = 1, .arr = {m.x}, .dir = {rx}, .len = {nx}, .n_out = 1,
                       .out = {m.out}, .rop = {rout}, .out_len = {m.no}, .what = {"rout"},
                       .f = mpr_f, .ctx = &m, .region = mpr_region};
    rop_check(&l, label, 1e-6, 1e-6);
    free(m.x), free(m.out), free(m.arg), free(rx), free(rout), free(perm);
}

struct addr_ctx {
    size_t n;
    bool relu;
    float *a, *b, *out;
};

static void addr_f(void *p)
{
    struct addr_ctx *k = p;
    add_forward(k->out, k->a, k->b, k->n, k->relu);
}

static uint64_t addr_region(void *p)
{
    struct addr_ctx *k = p;
    return mask_print(k->out, k->n);
}

static void check_add_rop(bool relu)
{
    const char *label = relu ? "sum+relu R-op" : "sum R-op";
    enum { N = 60 };
    struct rng r;
    rng_init(&r, 14, "test.add_rop", relu);
    float a[N], b[N], out[N], ra[N], rb[N], rout[N];
    struct addr_ctx k = {.n = N, .relu = relu, .a = a, .b = b, .out = out};
    /* a + b at least 0.25 from the kink; steps move it by less than 0.05 */
    for (int i = 0; i < N; i++) {
        a[i] = (float)rng_normal(&r);
        b[i] = (float)(off_kink(&r, 0.25) - a[i]);
    }
    fill_normal(ra, N, &r, 0.5);
    fill_normal(rb, N, &r, 0.5);
    rc_quantise(a, N, RC_Q);
    rc_quantise(b, N, RC_Q);
    rc_quantise(ra, N, RC_QT);
    rc_quantise(rb, N, RC_QT);
    addr_f(&k);
    add_rop(rout, ra, rb, relu ? out : NULL, N);
    struct rcheck l = {.n_arr = 2, .arr = {a, b}, .dir = {ra, rb}, .len = {N, N}, .n_out = 1,
                       .out = {out}, .rop = {rout}, .out_len = {N}, .what = {"rout"},
                       .f = addr_f, .ctx = &k, .region = relu ? addr_region : NULL};
    rop_check(&l, label, 1e-6, 1e-6);
}

/* ---- whole models ---- */

#define MB 8 /* batch of the model checks: BatchNorm sees >= 8 values per channel */

struct mctx {
    struct model m;
    enum pass_mode mode;
    float *x, *dout;
    int32_t lab[MB];
    double lex[MB];
    uint8_t hit[MB];
};

static double model_loss(struct mctx *c, bool grad)
{
    struct model *m = &c->m;
    m->ops->forward(m, c->x, MB, c->mode);
    double s = xent_forward_backward(grad ? c->dout : NULL, c->lex, c->hit, m->out, c->lab, MB,
                                     m->n_out, 0.0f, 1.0f / MB);
    if (grad) {
        /* backward without acc overwrites every tensor's gradient: NaNs left would show. */
        for (int t = 0; t < m->p.nt; t++)
            for (size_t i = 0; i < m->p.t[t].n; i++)
                m->p.g[m->p.t[t].off + i] = NAN;
        m->ops->backward(m, c->x, c->dout, MB, false);
    }
    return s / MB;
}

static double model_f(void *p) { return model_loss(p, false); }

static uint64_t model_region(void *p)
{
    struct mctx *c = p;
    return cn_fingerprint(&c->m, MB);
}

static void check_model(const char *yaml, int ch, int hw, enum pass_mode mode, const char *label)
{
    struct cfg cfg;
    struct err e = {0};
    struct mctx *c = xcalloc(1, sizeof *c);
    c->mode = mode;
    if (!ok(cfg_load_string(&cfg, "model.yaml", yaml, &e) == 0 &&
                model_init_image(&c->m, cfg.root, ch, hw, hw, 5, MB, 7, &e) == 0,
            "%s: builds (%s)", label, e.msg)) {
        free(c);
        return;
    }
    struct model *m = &c->m;
    m->step = 3;
    struct rng r;
    rng_init(&r, 4, "test.model", 0);
    size_t nx = (size_t)MB * m->n_in;
    c->x = xfloats(nx);
    c->dout = xfloats((size_t)MB * m->n_out);
    fill_normal(c->x, nx, &r, 1.0);
    for (int i = 0; i < MB; i++)
        c->lab[i] = (int32_t)rng_below(&r, (uint64_t)m->n_out);
    /* Non-trivial BatchNorm weights and running statistics, so every path is exercised. */
    for (int t = 0; t < m->p.nt; t++)
        if (m->p.t[t].ndim == 1 && strstr(m->p.t[t].name, "bn"))
            for (size_t i = 0; i < m->p.t[t].n; i++)
                m->p.w[m->p.t[t].off + i] += (float)(0.2 * rng_normal(&r));
    for (int t = 0; t < m->buf.nt; t++)
        for (size_t i = 0; i < m->buf.t[t].n; i++)
            m->buf.w[m->buf.t[t].off + i] =
                strstr(m->buf.t[t].name, "var") ? (float)(0.5 + rng_uniform(&r))
                                                : (float)(0.2 * rng_normal(&r));
    /* In evaluation mode, running statistics near the batch's own (40 updating passes), so
     * activations stay normalised: with arbitrary ones they grow layer by layer until the
     * float32 loss is too coarse for finite differences. */
    if (mode == PASS_EVAL)
        for (int i = 0; i < 40 && m->buf.nt; i++)
            m->ops->forward(m, c->x, MB, PASS_TRAIN_UPDATE);
    float *buf0 = m->buf.nt ? xfloats(m->buf.n) : NULL;
    if (buf0)
        memcpy(buf0, m->buf.w, m->buf.n * sizeof *buf0);
    model_loss(c, true);
    float *g = xfloats(m->p.n);
    memcpy(g, m->p.g, m->p.n * sizeof *g);
    ok(vec_nrm2(m->p.n, g) > 1e-3, "%s: gradient is not trivially zero", label);
    /* Every tensor is an array of the check, so each gets sampled coordinates (4 each, 2 for
     * the 62 tensors of ResNet-18: the unit suite must stay fast with Haswell kernels). */
    struct lcheck *l = xcalloc(1, sizeof *l);
    *l = (struct lcheck){.n_arr = m->p.nt, .f = model_f, .ctx = c, .region = model_region,
                         .samples = m->p.nt > 40 ? 2 : 4};
    SAMX_ASSERT(m->p.nt <= LC_MAX);
    for (int t = 0; t < m->p.nt; t++) {
        l->arr[t] = m->p.w + m->p.t[t].off;
        l->grad[t] = g + m->p.t[t].off;
        l->len[t] = m->p.t[t].n;
        l->what[t] = m->p.t[t].name;
    }
    /* Float32 forward passes through deep networks: a looser floor than the single layers;
     * looser again for ReLU networks, whose differences may pass close to a kink. */
    bool relu = !strstr(yaml, "activation");
    layer_check_x(l, label, 2e-3, 3e-2, relu ? 1e-3 : 3e-4, true);
    free(l);
    if (buf0)
        ok(!memcmp(buf0, m->buf.w, m->buf.n * sizeof *buf0),
           "%s: running statistics untouched in this mode", label);
    free(buf0);
    free(g);
    free(c->x);
    free(c->dout);
    model_release(m);
    cfg_free(&cfg);
    free(c);
}

/* Tensor names and counts as the PyTorch modules' state_dicts. */
static void check_resnet_layout(void)
{
    struct cfg cfg;
    struct err e = {0};
    struct model m;
    cfg_load_string(&cfg, "m.yaml", "name: resnet\ndepth: 20\n", &e);
    if (!ok(model_init_image(&m, cfg.root, 3, 32, 32, 10, 2, 0, &e) == 0, "resnet20 builds"))
        return;
    ok(m.p.n >= 269722 && params_find(&m.p, "layer3.2.bn2.bias") >= 0 &&
           params_find(&m.p, "linear.weight") >= 0 && params_find(&m.p, "conv1.weight") == 0 &&
           params_find(&m.buf, "layer2.0.bn1.running_var") >= 0 && m.p.nt == 2 + 19 + 2 * 19,
       "resnet20: akamaster names (conv1, layer1.0.bn1, ..., linear), %d tensors, buffers "
       "bn.running_mean/var", m.p.nt);
    size_t count = 0;
    for (int t = 0; t < m.p.nt; t++)
        count += m.p.t[t].n;
    ok(count == 269722, "resnet20 has 269,722 weights for 10 classes (%zu)", count);
    model_release(&m);
    cfg_free(&cfg);
}

/* ---- CIFAR files ---- */

static char tmpdir[256];

/* A CIFAR-format file of n records: label bytes then a recognisable pixel pattern. */
static void write_cifar(const char *name, int n, int label_bytes, int first, int classes)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < n; i++) {
        int y = (first + i) % classes;
        if (label_bytes == 2)
            fputc(y / 5, f); /* coarse */
        fputc(y, f);
        for (int p = 0; p < 3072; p++)
            fputc((first + i + p * 7) & 255, f);
    }
    fclose(f);
}

static int load_data(struct data *d, const char *yaml, struct err *e)
{
    struct cfg cfg;
    int rc = cfg_load_string(&cfg, "data.yaml", yaml, e);
    if (rc == 0)
        rc = data_init(d, cfg.root, 1, e);
    cfg_free(&cfg);
    return rc;
}

static void check_cifar(void)
{
    static const char *const tr[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                     "data_batch_4.bin", "data_batch_5.bin"};
    for (int i = 0; i < 5; i++)
        write_cifar(tr[i], 8, 1, 8 * i, 10);
    write_cifar("test_batch.bin", 6, 1, 100, 10);
    write_cifar("train.bin", 12, 2, 0, 100);
    write_cifar("test.bin", 4, 2, 50, 100);
    char yaml[1024];
    struct data d;
    struct err e = {0};
    snprintf(yaml, sizeof yaml, "name: cifar10\ndir: %s\naugment: {crop: 0, flip: false}\n",
             tmpdir);
    if (ok(load_data(&d, yaml, &e) == 0, "cifar10 loads small files (%s)", e.msg)) {
        ok(d.train.n == 40 && d.test.n == 6 && d.train.channels == 3 && d.train.height == 32 &&
               d.train.dim == 3072 && d.train.label[9] == 9 && d.train.label[12] == 2 &&
               d.test.label[0] == 0,
           "cifar10: 5 x 8 train records in file order, 6 test, 3x32x32, labels");
        float x[3072];
        int idx = 9;
        data_batch(&d.train, &idx, 1, x, NULL, NULL);
        /* pixel p of channel c: ((9 + p*7) & 255) / 255 normalised by the channel's mean, std */
        int p = 1024 + 5;
        double want = (((9 + p * 7) & 255) / 255.0 - 0.4822) / 0.2435;
        approx(x[p], want, 1e-5, 1e-5, "cifar10: per-channel normalisation (channel 1)");
        data_free(&d);
    }
    snprintf(yaml, sizeof yaml, "name: cifar100\ndir: %s\n", tmpdir);
    if (ok(load_data(&d, yaml, &e) == 0, "cifar100 loads (%s)", e.msg)) {
        ok(d.train.n == 12 && d.test.n == 4 && d.train.n_classes == 100 &&
               d.train.label[11] == 11 && d.test.label[1] == 51,
           "cifar100: fine labels (the second byte of each record)");
        data_free(&d);
    }
    /* truncated file: an error naming it */
    char path[512];
    snprintf(path, sizeof path, "%s/data_batch_3.bin", tmpdir);
    if (truncate(path, 3073 * 8 - 5) == 0) {
        snprintf(yaml, sizeof yaml, "name: cifar10\ndir: %s\n", tmpdir);
        e = (struct err){0};
        ok(load_data(&d, yaml, &e) != 0 && strstr(e.msg, "data_batch_3.bin") &&
               strstr(e.msg, "truncated"),
           "a truncated cifar10 file is an error naming it (%s)", e.msg);
    }
    write_cifar("data_batch_3.bin", 8, 1, 16, 10);
    snprintf(yaml, sizeof yaml, "name: cifar10\n");
    e = (struct err){0};
    ok(load_data(&d, yaml, &e) != 0 && strstr(e.msg, "dir"), "cifar10 without dir: %s", e.msg);
}

static void check_augment(void)
{
    char yaml[1024];
    struct data d, plain;
    struct err e = {0};
    snprintf(yaml, sizeof yaml,
             "name: cifar10\ndir: %s\naugment: {crop: 4, flip: true, cutout: 8, cutout_p: 0.5}\n",
             tmpdir);
    if (!ok(load_data(&d, yaml, &e) == 0, "cifar10 with augmentation loads (%s)", e.msg))
        return;
    snprintf(yaml, sizeof yaml, "name: cifar10\ndir: %s\naugment: {crop: 0, flip: false}\n",
             tmpdir);
    load_data(&plain, yaml, &e);
    enum { N = 16 };
    int idx[N];
    for (int i = 0; i < N; i++)
        idx[i] = (i * 7) % 40;
    float *a = xfloats(N * 3072), *b = xfloats(N * 3072), *c = xfloats(N * 3072);
    float *p = xfloats(N * 3072);
    data_batch_train(&d, idx, N, 5, 100, a, NULL, NULL);
    data_batch_train(&d, idx, N, 5, 100, b, NULL, NULL);
    data_batch_train(&d, idx, N, 5, 101, c, NULL, NULL);
    ok(!memcmp(a, b, sizeof(float) * N * 3072) && memcmp(a, c, sizeof(float) * N * 3072),
       "augmentation: a pure function of (seed, step): same batch twice, another next step");
    data_batch_train(&plain, idx, N, 5, 100, p, NULL, NULL);
    int same = 0, zeros = 0;
    for (int i = 0; i < N; i++) {
        same += !memcmp(a + i * 3072, p + i * 3072, 3072 * sizeof(float));
        for (int j = 0; j < 3072; j++)
            zeros += a[i * 3072 + j] == 0.0f;
    }
    ok(same < N && zeros > 0, "augmentation changes images (%d of %d unchanged; %d cutout zeros)",
       same, N, zeros);
    /* flip only: each image is the original or its mirror */
    struct data f;
    snprintf(yaml, sizeof yaml, "name: cifar10\ndir: %s\naugment: {crop: 0, flip: true}\n",
             tmpdir);
    load_data(&f, yaml, &e);
    data_batch_train(&f, idx, N, 5, 7, a, NULL, NULL);
    int flipped = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        bool id = !memcmp(a + i * 3072, p + i * 3072, 3072 * sizeof(float)), mir = true;
        for (int j = 0; j < 3072 && mir; j++)
            mir = a[i * 3072 + j] == p[i * 3072 + j - j % 32 + 31 - j % 32];
        flipped += mir && !id;
        bad += !id && !mir;
    }
    ok(bad == 0 && flipped > 0 && flipped < N, "flip: %d of %d mirrored, the rest unchanged",
       flipped, N);
    /* crop only: a shifted copy with normalised zero padding */
    data_free(&f);
    snprintf(yaml, sizeof yaml, "name: cifar10\ndir: %s\naugment: {crop: 4, flip: false}\n",
             tmpdir);
    load_data(&f, yaml, &e);
    data_batch_train(&f, idx, N, 5, 7, a, NULL, NULL);
    int found = 0;
    for (int i = 0; i < N; i++)
        for (int dy = -4; dy <= 4; dy++)
            for (int dx = -4; dx <= 4; dx++) {
                bool match = true;
                for (int ch = 0; ch < 3 && match; ch++)
                    for (int y = 0; y < 32 && match; y++)
                        for (int x = 0; x < 32 && match; x++) {
                            int sy = y + dy, sx = x + dx;
                            float want = sy < 0 || sy > 31 || sx < 0 || sx > 31
                                             ? f.train.chan_shift[ch]
                                             : p[i * 3072 + ch * 1024 + sy * 32 + sx];
                            match = a[i * 3072 + ch * 1024 + y * 32 + x] == want;
                        }
                found += match;
            }
    ok(found >= N, "crop: every image is a shift within +-4 of the original, padded with pixel 0");
    free(a), free(b), free(c), free(p);
    data_free(&d), data_free(&plain), data_free(&f);
}

/* ---- BatchNorm across the passes of a SAM step, through the training loop ---- */

static int read_buffers(const char *path, struct model *m, struct err *e)
{
    struct st_file f;
    if (st_open(&f, path, e) < 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < m->buf.nt && rc == 0; i++)
        rc = st_read_f32(&f, &m->buf.t[i], m->buf.w + m->buf.t[i].off, e);
    st_close(&f);
    return rc;
}

/* One step of `optim` over all 40 training examples; returns the run's running statistics in
 * `got` (a model of the same config). */
static int run_one_step(const char *optim, const char *bn_update, struct model *got,
                        const char *tag)
{
    char cfgp[512], out[512], yaml[2048];
    snprintf(cfgp, sizeof cfgp, "%s/%s.yaml", tmpdir, tag);
    snprintf(out, sizeof out, "%s/run-%s", tmpdir, tag);
    snprintf(yaml, sizeof yaml,
             "name: bn\nseed: 3\ndata: {name: cifar10, dir: %s, shuffle: false,\n"
             "       augment: {crop: 0, flip: false}}\n"
             "model: {name: cnn, channels: [4, 6]}\n"
             "train: {epochs: 1, batch_size: 40, eval_batch_size: 40, bn_update: %s}\n"
             "optimizer: {name: %s, base: {name: sgd, lr: 0.1}}\n",
             tmpdir, bn_update, optim);
    FILE *f = fopen(cfgp, "w");
    fputs(yaml, f);
    fclose(f);
    struct run_opts o = {.config = cfgp, .out_dir = out, .threads = 2, .quiet = true,
                         .force = true, .command_line = "test_conv"};
    struct err e = {0};
    if (train_run(&o, &e) != 0) {
        diag("run failed: %s", e.msg);
        return -1;
    }
    char mp[600];
    snprintf(mp, sizeof mp, "%s/model.safetensors", out);
    if (read_buffers(mp, got, &e) < 0) {
        diag("%s", e.msg);
        return -1;
    }
    /* the checkpoint holds them too */
    struct model ck = *got;
    ck.buf.w = xfloats(got->buf.n);
    snprintf(mp, sizeof mp, "%s/checkpoint.safetensors", out);
    int rc = read_buffers(mp, &ck, &e);
    if (rc == 0 && memcmp(ck.buf.w, got->buf.w, got->buf.n * sizeof(float)))
        rc = -1;
    free(ck.buf.w);
    if (rc)
        diag("checkpoint buffers differ or are missing (%s)", e.msg);
    return rc;
}

static void check_bn_passes(void)
{
    struct cfg cfg;
    struct err e = {0};
    struct model ref, got;
    cfg_load_string(&cfg, "m.yaml", "name: cnn\nchannels: [4, 6]\n", &e);
    model_init_image(&ref, cfg.root, 3, 32, 32, 10, 40, 3, &e);
    /* The reference: one plain forward in training mode on the same 40 examples, file order. */
    struct data d;
    char yaml[512];
    snprintf(yaml, sizeof yaml, "name: cifar10\ndir: %s\n", tmpdir);
    load_data(&d, yaml, &e);
    int idx[40];
    for (int i = 0; i < 40; i++)
        idx[i] = i;
    float *x = xfloats(40 * 3072);
    data_batch(&d.train, idx, 40, x, NULL, NULL);
    ref.ops->forward(&ref, x, 40, PASS_TRAIN_UPDATE);
    float *init = xfloats(ref.buf.n);
    model_init_image(&got, cfg.root, 3, 32, 32, 10, 40, 3, &e);
    memcpy(init, got.buf.w, ref.buf.n * sizeof *init);
    bool differs = memcmp(init, ref.buf.w, ref.buf.n * sizeof *init) != 0;

    if (run_one_step("sam", "first_pass", &got, "sam-first") == 0)
        ok(differs && !memcmp(got.buf.w, ref.buf.w, ref.buf.n * sizeof(float)),
           "one SAM step with bn_update: first_pass leaves the running statistics of one "
           "plain training-mode forward pass (saved in model and checkpoint)");
    if (run_one_step("sam", "all_passes", &got, "sam-all") == 0)
        ok(memcmp(got.buf.w, ref.buf.w, ref.buf.n * sizeof(float)) != 0,
           "bn_update: all_passes updates them again at w + e");
    if (run_one_step("crsam", "first_pass", &got, "crsam-first") == 0)
        ok(!memcmp(got.buf.w, ref.buf.w, ref.buf.n * sizeof(float)),
           "CR-SAM with bn_update: first_pass updates on the clean pass only");
    if (run_one_step("crsam", "reference", &got, "crsam-ref") == 0)
        ok(memcmp(got.buf.w, ref.buf.w, ref.buf.n * sizeof(float)) != 0,
           "CR-SAM with bn_update: reference also updates at w - e, as its code");
    /* init_from reads the buffers back */
    char m2[1024];
    snprintf(m2, sizeof m2, "name: cnn\nchannels: [4, 6]\ninit_from: %s/run-crsam-ref/"
                            "model.safetensors\n", tmpdir);
    struct cfg c2;
    struct model back;
    cfg_load_string(&c2, "m2.yaml", m2, &e);
    if (ok(model_init_image(&back, c2.root, 3, 32, 32, 10, 4, 0, &e) == 0,
           "init_from a run's model.safetensors (%s)", e.msg)) {
        ok(!memcmp(back.buf.w, got.buf.w, got.buf.n * sizeof(float)),
           "init_from restores the running statistics");
        model_release(&back);
    }
    cfg_free(&c2);
    free(x);
    free(init);
    data_free(&d);
    model_release(&ref);
    model_release(&got);
    cfg_free(&cfg);
}

/* test_conv [layers | models]: the layer checks and file formats (the quick part, default), or
 * the whole-model checks (the slow suite). */
/* The BatchNorm phases of a batch split between processes (nn_conv.h, dist.h): shards of 2
 * and 3 rows (an uneven split, hw = 20 so both the 16-lane and the scalar tails run), their
 * per-channel sums added between the phases, give what the whole batch gives: the output,
 * saved statistics and running statistics of every shard, and dx, dgamma + dbeta summed over
 * the shards, within float rounding of the different summation order. */
static void check_bn_split(bool relu)
{
    enum { B = 5, C = 3, HW = 20 };
    const int lo[2] = {0, 2}, rows[2] = {2, 3};
    size_t n = (size_t)B * C * HW, per = (size_t)C * HW;
    struct rng r;
    rng_init(&r, 12, "test.bn-split", relu);
    float *x = xfloats(n), *dy = xfloats(n), *y = xfloats(n), *ys = xfloats(n);
    float *dx = xfloats(n), *dxs = xfloats(n);
    fill_normal(x, n, &r, 2);
    for (size_t i = 0; i < n; i++)
        x[i] += 3.0f * (float)((i / HW) % C); /* channel means differ */
    fill_normal(dy, n, &r, 1);
    float gamma[C], beta[C], rm[C], rv[C], sm[C], si[C], dg[C] = {0}, db[C] = {0};
    fill_normal(gamma, C, &r, 1);
    fill_normal(beta, C, &r, 1);
    for (int i = 0; i < C; i++)
        rm[i] = 0.1f * (float)i, rv[i] = 1.0f + (float)i;
    float rms[2][C], rvs[2][C], sms[2][C], sis[2][C], dgs[2][C] = {{0}}, dbs[2][C] = {{0}};
    for (int k = 0; k < 2; k++)
        memcpy(rms[k], rm, sizeof rm), memcpy(rvs[k], rv, sizeof rv);
    batchnorm_forward(y, sm, si, x, NULL, gamma, beta, rm, rv, B, C, HW, true, relu, 0.1f, 1e-5f);
    batchnorm_backward(dx, dg, db, dy, relu ? y : NULL, x, sm, si, gamma, B, C, HW, true, false);
    /* the shards: phase, sum over the shards (what dist_sum_double does), next phase */
    double part[2][2 * C], mean[C], dev[2 * C], gs[2 * C], cnt = (double)B * HW;
    for (int k = 0; k < 2; k++)
        batchnorm_sums(part[k], x + lo[k] * per, NULL, rows[k], C, HW);
    for (int ch = 0; ch < C; ch++)
        mean[ch] = (part[0][ch] + part[1][ch]) / cnt;
    for (int k = 0; k < 2; k++)
        batchnorm_devs(part[k], x + lo[k] * per, NULL, mean, rows[k], C, HW);
    for (int i = 0; i < 2 * C; i++)
        dev[i] = part[0][i] + part[1][i];
    for (int k = 0; k < 2; k++)
        batchnorm_normalize(ys + lo[k] * per, sms[k], sis[k], x + lo[k] * per, mean, dev, cnt,
                            gamma, beta, rms[k], rvs[k], rows[k], C, HW, relu, 0.1f, 1e-5f);
    for (int k = 0; k < 2; k++)
        batchnorm_backward_sums(part[k], dgs[k], dbs[k], dy + lo[k] * per,
                                relu ? ys + lo[k] * per : NULL, x + lo[k] * per, sms[k], sis[k],
                                rows[k], C, HW);
    for (int i = 0; i < 2 * C; i++)
        gs[i] = part[0][i] + part[1][i];
    for (int k = 0; k < 2; k++)
        batchnorm_backward_dx(dxs + lo[k] * per, gs, cnt, dy + lo[k] * per,
                              relu ? ys + lo[k] * per : NULL, x + lo[k] * per, sms[k], sis[k],
                              gamma, rows[k], C, HW, false);
    double ey = 0, es = 0, ex = 0, eg = 0;
    for (size_t i = 0; i < n; i++) {
        ey = worse(ey, fabs(ys[i] - y[i]) / fmax(1, fabs(y[i])));
        ex = worse(ex, fabs(dxs[i] - dx[i]) / fmax(1, fabs(dx[i])));
    }
    for (int k = 0; k < 2; k++)
        for (int ch = 0; ch < C; ch++) {
            es = worse(es, fabs(sms[k][ch] - sm[ch]) / fmax(1, fabs(sm[ch])));
            es = worse(es, fabs(sis[k][ch] - si[ch]) / si[ch]);
            es = worse(es, fabs(rms[k][ch] - rm[ch]) / fmax(1, fabs(rm[ch])));
            es = worse(es, fabs(rvs[k][ch] - rv[ch]) / rv[ch]);
        }
    for (int ch = 0; ch < C; ch++) {
        eg = worse(eg, fabs(dgs[0][ch] + dgs[1][ch] - dg[ch]) / fmax(1, fabs(dg[ch])));
        eg = worse(eg, fabs(dbs[0][ch] + dbs[1][ch] - db[ch]) / fmax(1, fabs(db[ch])));
    }
    ok(ey < 1e-5 && es < 1e-6 && ex < 1e-5 && eg < 1e-5,
       "batchnorm%s over shards of 2 and 3 rows with summed statistics equals the whole batch: "
       "y %.1g, statistics %.1g, dx %.1g, dgamma and dbeta %.1g (max rel. errors)",
       relu ? " + relu" : "", ey, es, ex, eg);
    free(x), free(dy), free(y), free(ys), free(dx), free(dxs);
}

int main(int argc, char **argv)
{
    bool models = argc > 1 && !strcmp(argv[1], "models");
    threads_set(2);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/samx-test-conv-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        ok(false, "cannot create a temporary directory");
        return done();
    }
    if (!models) {
        check_conv(2, 3, 7, 6, 4, 3, 1, 1, true);
        check_conv(3, 2, 8, 9, 5, 3, 2, 1, false);
        check_conv(2, 4, 5, 5, 3, 1, 1, 0, true);  /* pointwise: no im2col */
        check_conv(2, 4, 6, 7, 3, 1, 2, 0, false); /* 1x1 stride 2 (option-B shortcut) */
        check_conv(2, 2, 9, 8, 3, 5, 2, 2, true);
        /* same-size stride-1 convolutions take the shifted-copy im2col: wider kernels, and planes
         * no wider than the shift */
        check_conv(2, 3, 6, 7, 2, 5, 1, 2, false);
        check_conv(3, 2, 2, 3, 3, 3, 1, 1, true);
        check_conv(2, 2, 1, 1, 2, 3, 1, 1, false);
        check_conv(2, 2, 3, 2, 2, 5, 1, 2, true);
        check_bn(true);
        check_bn(false);
        check_conv_moments();
        check_bn_split(false);
        check_bn_split(true);
        check_pool(POOL_MAX, 2, 2);
        check_pool(POOL_MAX, 3, 2);
        check_pool(POOL_AVG, 2, 2);
        check_pool(POOL_GAP, 0, 1);
        check_shortcut(1);
        check_shortcut(2);
        check_dropout();
        check_bn_rop(false);
        check_bn_rop(true);
        check_maxpool_rop(2, 2);
        check_maxpool_rop(3, 2);
        check_add_rop(false);
        check_add_rop(true);
        check_resnet_layout();
        check_cifar();
        check_augment();
        check_bn_passes();
        return done();
    }
    /* Whole models with a smooth activation (GELU; ReLU networks have kinks everywhere at the
     * scale of a float32 difference), then the ReLU versions in evaluation mode, where the
     * checks skip differences that cross a kink (cn_fingerprint). */
    check_model("name: cnn\nchannels: [3, 4]\ndropout: 0.3\nactivation: gelu\npool: avg\n", 2,
                8, PASS_TRAIN_FROZEN, "cnn (BN, dropout, gelu) training mode");
    check_model("name: cnn\nchannels: [3, 4]\nactivation: gelu\npool: avg\n", 2, 8, PASS_EVAL,
                "cnn (BN, gelu) eval mode");
    check_model("name: cnn\nchannels: [3, 4]\nbatchnorm: false\npool: avg\nkernel: 5\n"
                "activation: tanh\n", 1, 9, PASS_TRAIN_FROZEN, "cnn (bias, 5x5, tanh)");
    check_model("name: cnn\nchannels: [3, 4]\n", 2, 8, PASS_EVAL, "cnn (relu, max pool) eval");
    check_model("name: resnet\ndepth: 8\nwidth: 4\nactivation: gelu\n", 3, 8,
                PASS_TRAIN_FROZEN, "resnet-8 option A training mode");
    check_model("name: resnet\ndepth: 8\nwidth: 4\nactivation: gelu\n", 3, 8, PASS_EVAL,
                "resnet-8 option A eval mode");
    check_model("name: resnet\ndepth: 8\nwidth: 4\nshortcut: B\nactivation: gelu\n", 3, 8,
                PASS_TRAIN_FROZEN, "resnet-8 option B training mode");
    check_model("name: resnet\ndepth: 18\nwidth: 4\nactivation: gelu\n", 3, 16,
                PASS_TRAIN_FROZEN, "resnet-18 (width 4) training mode");
    check_model("name: resnet\ndepth: 8\nwidth: 4\n", 3, 8, PASS_EVAL, "resnet-8 (relu) eval");
    check_model("name: wrn\ndepth: 10\nwiden: 1\ndropout: 0.2\nactivation: gelu\n", 3, 8,
                PASS_TRAIN_FROZEN, "wrn-10-1 (dropout) training mode");
    check_model("name: wrn\ndepth: 10\nwiden: 1\nactivation: gelu\n", 3, 8, PASS_EVAL,
                "wrn-10-1 eval mode");
    return done();
}
