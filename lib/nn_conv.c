/* nn_conv.c: convolution (im2col + GEMM), BatchNorm2d, pooling, shortcuts, dropout. See
 * nn_conv.h for the contracts and the threading rule. */

/* OpenBLAS's cblas.h declares affinity functions with cpu_set_t, a GNU extension. */
#define _GNU_SOURCE
#include "nn_conv.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "blas.h"
#include "err.h"
#include "nn.h"
#include "rng.h"
#include "tune.h"

#define PAR_MIN 16384 /* elements below which elementwise loops stay serial (as nn.c) */

bool conv_shape_init(struct conv_shape *s, int c_in, int h, int w, int c_out, int k, int stride,
                     int pad)
{
    SAMX_ASSERT(c_in > 0 && c_out > 0 && k > 0 && stride > 0 && pad >= 0);
    *s = (struct conv_shape){.c_in = c_in, .h = h, .w = w, .c_out = c_out, .k = k,
                             .stride = stride, .pad = pad};
    if (h + 2 * pad < k || w + 2 * pad < k)
        return false;
    s->h_out = (h + 2 * pad - k) / stride + 1;
    s->w_out = (w + 2 * pad - k) / stride + 1;
    return true;
}

/* A 1x1, stride-1, unpadded convolution is a plain matrix product with the input plane. */
static bool conv_is_pointwise(const struct conv_shape *s)
{
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

size_t conv_col_floats(const struct conv_shape *s)
{
    if (conv_is_pointwise(s))
        return 0;
    return (size_t)s->c_in * s->k * s->k * s->h_out * s->w_out;
}

/* Range [lo, hi) of output columns ox whose input column ox*stride + kx - pad is in [0, w). */
static void conv_valid(int kx, int stride, int pad, int w, int w_out, int *lo, int *hi)
{
    int a = pad - kx, l = a > 0 ? (a + stride - 1) / stride : 0;
    int b = w - 1 + pad - kx, h = b >= 0 ? b / stride + 1 : 0;
    *lo = l < w_out ? l : w_out;
    *hi = h < w_out ? h : w_out;
    if (*hi < *lo)
        *hi = *lo;
}

/* A stride-1 convolution whose output has the input's size ("same" padding, 2 pad = k - 1):
 * each im2col row is the input plane shifted by (ky - pad, kx - pad), so it is one contiguous
 * copy, plus zeros for the rows that fall outside the image and for the columns that wrapped
 * around to the neighbouring row. Most convolutions of the CIFAR models are this case. */
static bool conv_is_same(const struct conv_shape *s)
{
    return s->stride == 1 && s->h_out == s->h && s->w_out == s->w;
}

/* For shift (sy, sx) of a same-size plane h x w: output rows [y0, y1) read inside the image,
 * and the flat range [a, b) of the row that a contiguous copy may read (trimmed by the
 * horizontal shift at the plane's two ends, so the source a + sy*w + sx never leaves the
 * plane). */
static void same_span(int sy, int sx, int h, int w, int *y0, int *y1, size_t *a, size_t *b)
{
    *y0 = sy < 0 ? (-sy < h ? -sy : h) : 0;
    *y1 = sy > 0 ? (h - sy > *y0 ? h - sy : *y0) : h;
    long hw = (long)h * w, lo = (long)*y0 * w + (sx < 0 ? -sx : 0);
    long hi = (long)*y1 * w - (sx > 0 ? sx : 0);
    lo = lo < hw ? lo : hw;
    hi = hi > lo ? hi : lo;
    *a = (size_t)lo;
    *b = (size_t)hi;
}

/* Set the columns of rows [y0, y1) of a flat h x w row that a horizontal shift sx wrapped
 * around (ox < -sx or ox >= w - sx) to zero. */
static void zero_wrapped(float *row, int sx, int w, int y0, int y1)
{
    int l = sx < 0 ? (-sx < w ? -sx : w) : 0, r = sx > 0 ? (w - sx > 0 ? w - sx : 0) : w;
    /* Column by column, strided: a per-row loop here becomes a libc memset call of one or
     * two floats, which cost 3% of a ResNet-20 step. */
    for (int ox = 0; ox < l; ox++)
        for (int oy = y0; oy < y1; oy++)
            row[(size_t)oy * w + ox] = 0;
    for (int ox = r; ox < w; ox++)
        for (int oy = y0; oy < y1; oy++)
            row[(size_t)oy * w + ox] = 0;
}

static void im2col_same(float *col, const float *x, const struct conv_shape *s)
{
    int k = s->k, h = s->h, w = s->w;
    size_t hw = (size_t)h * w;
    for (int ci = 0; ci < s->c_in; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(ci * k + ky) * k + kx) * hw;
                int sy = ky - s->pad, sx = kx - s->pad, y0, y1;
                size_t a, b;
                same_span(sy, sx, h, w, &y0, &y1, &a, &b);
                memset(row, 0, a * sizeof *row);
                /* a + sy*w + sx >= 0 and b + sy*w + sx <= hw by same_span's trimming */
                if (b > a)
                    memcpy(row + a, x + ci * hw + (ptrdiff_t)a + (ptrdiff_t)sy * w + sx,
                           (b - a) * sizeof *row);
                memset(row + b, 0, (hw - b) * sizeof *row);
                zero_wrapped(row, sx, w, y0, y1);
            }
}

/* col (c_in*k*k, h_out*w_out) from one example x (c_in, h, w); zero outside the image. */
static void im2col(float *col, const float *x, const struct conv_shape *s)
{
    if (conv_is_same(s)) {
        im2col_same(col, x, s);
        return;
    }
    int k = s->k, st = s->stride, hw_out = s->h_out * s->w_out;
    for (int ci = 0; ci < s->c_in; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(ci * k + ky) * k + kx) * hw_out;
                const float *plane = x + (size_t)ci * s->h * s->w;
                int lo, hi;
                conv_valid(kx, st, s->pad, s->w, s->w_out, &lo, &hi);
                for (int oy = 0; oy < s->h_out; oy++) {
                    float *r = row + (size_t)oy * s->w_out;
                    int iy = oy * st + ky - s->pad;
                    if (iy < 0 || iy >= s->h) {
                        memset(r, 0, (size_t)s->w_out * sizeof *r);
                        continue;
                    }
                    const float *src = plane + (size_t)iy * s->w + kx - s->pad;
                    for (int ox = 0; ox < lo; ox++)
                        r[ox] = 0;
                    if (st == 1)
                        for (int ox = lo; ox < hi; ox++) /* rows are short: no memcpy call */
                            r[ox] = src[ox];
                    else
                        for (int ox = lo; ox < hi; ox++)
                            r[ox] = src[ox * st];
                    for (int ox = hi; ox < s->w_out; ox++)
                        r[ox] = 0;
                }
            }
}

/* dx (c_in, h, w) += the scatter of dcol (c_in*k*k, h_out*w_out): the adjoint of im2col.
 * Same-size convolutions add each row as one contiguous span after zeroing the row's wrapped
 * entries in dcol (they belong to no input pixel), so dcol is clobbered. */
static void col2im_add(float *dx, float *dcol, const struct conv_shape *s)
{
    int k = s->k, st = s->stride, hw_out = s->h_out * s->w_out;
    bool same = conv_is_same(s);
    for (int ci = 0; ci < s->c_in; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = dcol + ((size_t)(ci * k + ky) * k + kx) * hw_out;
                float *plane = dx + (size_t)ci * s->h * s->w;
                if (same) {
                    int sy = ky - s->pad, sx = kx - s->pad, y0, y1;
                    size_t a, b;
                    same_span(sy, sx, s->h, s->w, &y0, &y1, &a, &b);
                    if (b == a) /* the shift leaves the plane: no pixel receives anything */
                        continue;
                    zero_wrapped(row, sx, s->w, y0, y1);
                    float *restrict dst = plane + (ptrdiff_t)a + (ptrdiff_t)sy * s->w + sx;
                    const float *restrict r = row + a;
                    for (size_t j = 0; j < b - a; j++)
                        dst[j] += r[j];
                    continue;
                }
                int lo, hi;
                conv_valid(kx, st, s->pad, s->w, s->w_out, &lo, &hi);
                for (int oy = 0; oy < s->h_out; oy++) {
                    int iy = oy * st + ky - s->pad;
                    if (iy < 0 || iy >= s->h)
                        continue;
                    const float *restrict r = row + (size_t)oy * s->w_out;
                    float *restrict dst = plane + (size_t)iy * s->w + kx - s->pad;
                    if (st == 1)
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] += r[ox];
                    else
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox * st] += r[ox];
                }
            }
}

/* Examples [lo, hi) of block b out of n_blk over `batch`. */
static void block_range(int b, int n_blk, int batch, int *lo, int *hi)
{
    *lo = (int)((long)batch * b / n_blk);
    *hi = (int)((long)batch * (b + 1) / n_blk);
}

/* Sum of p[0..n) in double, through 16 float lanes (vectorisable without -ffast-math, a fixed
 * order) whose partials are added in double: BatchNorm's per-plane sums. */
static double plane_sum(const float *p, int n, float shift, bool square)
{
    float lane[16] = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) {
            float d = p[j + l] - shift;
            lane[l] += square ? d * d : d;
        }
    double s = 0;
    for (int l = 0; l < 16; l++)
        s += lane[l];
    for (; j < n; j++) {
        double d = (double)p[j] - shift;
        s += square ? d * d : d;
    }
    return s;
}

/* A plane's sum and sum of squared deviations from its mean: the mean from a first pass, then
 * the squares about its float rounding m', corrected by the shift's error
 * (sum (x - m)^2 = sum (x - m')^2 - (sum (x - m'))^2 / n). The plane is in cache by then. */
static void plane_moments(const float *p, int n, double *sum, double *m2)
{
    double s = plane_sum(p, n, 0.0f, false);
    float m = (float)(s / n);
    double d = plane_sum(p, n, m, false);
    *sum = s;
    *m2 = plane_sum(p, n, m, true) - d * d / n;
}

/* Columns of output per GEMM call. OpenBLAS 0.3.21's SkylakeX-family sgemm (the kernels samx
 * selects on AVX-512 CPUs) takes an unpacked "small matrix" path when M*N*K <= 1e6, and for
 * the thin products of a CIFAR ResNet it is much faster than the packed path.
 * tests/bench/bench_gemm (one core, one example's products) measured 16 x 144 x 1024: W col
 * 91 -> 157 GFLOP/s in 128-column chunks; 32 x 288 x 256: 144 -> 210 in 32-column chunks;
 * 64 x 576 x 64: no chunk qualifies, 171 either way. So a product is cut into the widest
 * power-of-two column chunks (at least 32) whose M*N*K stays <= 2^19, or left whole when there
 * is none. Other cores have no such path and the chunks only add calls (Haswell kernels: 2-12%
 * slower), so there products stay whole. The chunking depends on the shape and the BLAS core
 * only, so results do not depend on threads. */
static bool blas_small_path(void)
{
    const char *c = blas_corename();
    return !strcmp(c, "SkylakeX") || !strcmp(c, "Cooperlake") || !strcmp(c, "SapphireRapids");
}

static int gemm_cols(const struct conv_shape *s)
{
    long mk = (long)s->c_out * s->c_in * s->k * s->k, hw = (long)s->h_out * s->w_out;
    if (!blas_small_path())
        return (int)hw;
    int nc = 0;
    for (long c = 32; c < hw && mk * c <= (1L << 19); c *= 2)
        nc = (int)c;
    return nc ? nc : (int)hw;
}

/* The per-example products run inside our own parallel loop, each as a single-threaded sgemm:
 * the OpenMP build of OpenBLAS does not spawn threads from inside a parallel region (the same
 * arrangement as gemm_par in blas.c), so cores are never oversubscribed. */
void conv2d_forward(float *out, double *moments, const float *x, const float *w, const float *b,
                    int batch, const struct conv_shape *s, const struct conv_ws *ws, bool acc)
{
    SAMX_ASSERT(batch > 0 && ws->n_blk > 0 && !(acc && moments));
    int kk = s->c_in * s->k * s->k, hw_out = s->h_out * s->w_out, nc = gemm_cols(s);
    size_t in_sz = (size_t)s->c_in * s->h * s->w, out_sz = (size_t)s->c_out * hw_out;
    bool pw = conv_is_pointwise(s);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int bi = 0; bi < ws->n_blk; bi++) {
        int lo, hi;
        block_range(bi, ws->n_blk, batch, &lo, &hi);
        for (int n = lo; n < hi; n++) {
            const float *col = x + n * in_sz;
            float *o = out + n * out_sz;
            if (!pw) {
                im2col(ws->col[bi], col, s);
                col = ws->col[bi];
            }
            if (b)
                for (int co = 0; co < s->c_out; co++)
                    for (int j = 0; j < hw_out; j++)
                        o[(size_t)co * hw_out + j] = acc ? o[(size_t)co * hw_out + j] + b[co]
                                                         : b[co];
            for (int j = 0; j < hw_out; j += nc)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->c_out,
                            hw_out - j < nc ? hw_out - j : nc, kk, 1.0f, w, kk, col + j, hw_out,
                            b || acc ? 1.0f : 0.0f, o + j, hw_out);
            if (moments)
                for (int co = 0; co < s->c_out; co++)
                    plane_moments(o + (size_t)co * hw_out, hw_out,
                                  &moments[2 * ((size_t)n * s->c_out + co)],
                                  &moments[2 * ((size_t)n * s->c_out + co) + 1]);
        }
    }
}

void conv2d_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int batch, const struct conv_shape *s,
                     const struct conv_ws *ws, bool acc)
{
    SAMX_ASSERT(batch > 0 && ws->n_blk > 0);
    int kk = s->c_in * s->k * s->k, hw_out = s->h_out * s->w_out, nc = gemm_cols(s);
    size_t in_sz = (size_t)s->c_in * s->h * s->w, out_sz = (size_t)s->c_out * hw_out;
    size_t nw = (size_t)s->c_out * kk;
    bool pw = conv_is_pointwise(s);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int bi = 0; bi < ws->n_blk; bi++) {
        int lo, hi;
        block_range(bi, ws->n_blk, batch, &lo, &hi);
        if (lo == hi && dw)
            memset(ws->dw[bi], 0, nw * sizeof(float));
        for (int n = lo; n < hi; n++) {
            const float *xn = x + n * in_sz, *dn = dout + n * out_sz;
            const float *col = xn;
            if (!pw && dw) {
                im2col(ws->col[bi], xn, s);
                col = ws->col[bi];
            }
            /* The block's partial is kept transposed, dW_b^T (kk, c_out) (+)= col dout_n^T:
             * that orientation is faster (bench_gemm, 16 x 144 x 1024: 70 -> 127 GFLOP/s;
             * 64 x 576 x 64: 158 -> 186). The first example of a block overwrites it. */
            if (dw)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kk, s->c_out, hw_out, 1.0f,
                            col, hw_out, dn, hw_out, n == lo ? 0.0f : 1.0f, ws->dw[bi], s->c_out);
            if (!dx)
                continue;
            float *dxn = dx + n * in_sz;
            if (pw) {
                for (int j = 0; j < hw_out; j += nc)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk,
                                hw_out - j < nc ? hw_out - j : nc, s->c_out, 1.0f, w, kk, dn + j,
                                hw_out, acc ? 1.0f : 0.0f, dxn + j, hw_out);
                continue;
            }
            /* dcol (kk, hw_out) = W^T dout_n, reusing the col buffer, then scattered. */
            for (int j = 0; j < hw_out; j += nc)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk,
                            hw_out - j < nc ? hw_out - j : nc, s->c_out, 1.0f, w, kk, dn + j,
                            hw_out, 0.0f, ws->col[bi] + j, hw_out);
            if (!acc)
                memset(dxn, 0, in_sz * sizeof *dxn);
            col2im_add(dxn, ws->col[bi], s);
        }
    }
    /* Block partials (transposed) added in block order: the same bits for any number of
     * running threads. Row r of every partial is read contiguously (c_out floats) and summed
     * into a row of sums that vectorizes; only the final scatter into dw is strided. */
    int c_out = s->c_out;
#pragma omp parallel for schedule(static) num_threads(team_size()) \
    if (dw && nw * ws->n_blk > PAR_MIN)
    for (int r = 0; r < (dw ? kk : 0); r++)
        for (int c0 = 0; c0 < c_out; c0 += 256) {
            int ncol = c_out - c0 < 256 ? c_out - c0 : 256;
            float sum[256];
            for (int co = 0; co < ncol; co++)
                sum[co] = 0;
            for (int bi = 0; bi < ws->n_blk; bi++) {
                const float *p = ws->dw[bi] + (size_t)r * c_out + c0;
                for (int co = 0; co < ncol; co++)
                    sum[co] += p[co];
            }
            for (int co = 0; co < ncol; co++)
                dw[(size_t)(c0 + co) * kk + r] += sum[co];
        }
    if (db) {
#pragma omp parallel for schedule(static) num_threads(team_size())
        for (int co = 0; co < s->c_out; co++) {
            double sum = 0;
            for (int n = 0; n < batch; n++) {
                const float *d = dout + n * out_sz + (size_t)co * hw_out;
                for (int j = 0; j < hw_out; j++)
                    sum += d[j];
            }
            db[co] += (float)sum;
        }
    }
}

void conv2d_ref(float *out, const float *x, const float *w, const float *b, int batch,
                const struct conv_shape *s)
{
    int k = s->k;
    for (int n = 0; n < batch; n++)
        for (int co = 0; co < s->c_out; co++)
            for (int oy = 0; oy < s->h_out; oy++)
                for (int ox = 0; ox < s->w_out; ox++) {
                    double sum = b ? b[co] : 0;
                    for (int ci = 0; ci < s->c_in; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * s->stride + ky - s->pad;
                                int ix = ox * s->stride + kx - s->pad;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w)
                                    continue;
                                sum += (double)x[(((size_t)n * s->c_in + ci) * s->h + iy) * s->w +
                                                 ix] *
                                       w[(((size_t)co * s->c_in + ci) * k + ky) * k + kx];
                            }
                    out[(((size_t)n * s->c_out + co) * s->h_out + oy) * s->w_out + ox] =
                        (float)sum;
                }
}

/* ---- BatchNorm2d ---- */

/* The per-channel pieces of BatchNorm, shared by the one-process kernels and their phases
 * (nn_conv.h), so the two compute the same bits. */

/* Sum of channel ch's values over (batch, hw), from the planes' moments when given. */
static inline double bn_sum(const float *x, const double *moments, int batch, int c, int hw,
                            int ch)
{
    double s = 0;
    if (moments)
        for (int n = 0; n < batch; n++)
            s += moments[2 * ((size_t)n * c + ch)];
    else
        for (int n = 0; n < batch; n++)
            s += plane_sum(x + ((size_t)n * c + ch) * hw, hw, 0.0f, false);
    return s;
}

/* Channel ch's squared deviations from mean into dev[0] and deviations into dev[1]. With
 * moments, each plane's own squared deviation plus hw (plane mean - mean)^2, planes merged in
 * example order (Chan et al.), and 0 deviations; without, two float passes about the float
 * mean, whose rounding the sum of deviations corrects. */
static inline void bn_dev(double dev[2], const float *x, const double *moments, double mean,
                          int batch, int c, int hw, int ch)
{
    double v = 0, dm = 0;
    if (moments) {
        for (int n = 0; n < batch; n++) {
            const double *mo = &moments[2 * ((size_t)n * c + ch)];
            double d = mo[0] / hw - mean;
            v += mo[1] + hw * d * d;
        }
    } else {
        for (int n = 0; n < batch; n++) {
            const float *p = x + ((size_t)n * c + ch) * hw;
            v += plane_sum(p, hw, (float)mean, true);
            dm += plane_sum(p, hw, (float)mean, false);
        }
    }
    dev[0] = v;
    dev[1] = dm;
}

/* Normalise channel ch: batch statistics (mean, dev of bn_dev over cnt values) when train, else
 * the running ones. */
/* The running statistics' update from a batch's mean and biased variance over cnt values. */
static inline void bn_running(float *run_mean, float *run_var, double mu, double var_b,
                              double cnt, float momentum, int ch)
{
    run_mean[ch] = (float)((1.0 - momentum) * run_mean[ch] + momentum * mu);
    run_var[ch] = (float)((1.0 - momentum) * run_var[ch] + momentum * var_b * cnt / (cnt - 1));
}

static inline void bn_normalize(float *y, float *save_mean, float *save_invstd, const float *x,
                                double mean, const double dev[2], double cnt,
                                const float *gamma, const float *beta, float *run_mean,
                                float *run_var, int batch, int c, int hw, bool train, bool relu,
                                float momentum, float eps, int ch)
{
    double mu, var_b;
    if (train) {
        /* the float shift's rounding: sum (x - m')^2 = sum (x - m)^2 + cnt (m - m')^2 */
        mu = mean;
        var_b = (dev[0] - dev[1] * dev[1] / cnt) / cnt;
    } else {
        mu = run_mean[ch];
        var_b = run_var[ch];
    }
    if (train && run_mean)
        bn_running(run_mean, run_var, mu, var_b, cnt, momentum, ch);
    float m = (float)mu, is = (float)(1.0 / sqrt(var_b + eps));
    save_mean[ch] = m;
    save_invstd[ch] = is;
    float a = gamma[ch] * is, sh = beta[ch] - m * a;
    for (int n = 0; n < batch; n++) {
        const float *p = x + ((size_t)n * c + ch) * hw;
        float *q = y + ((size_t)n * c + ch) * hw;
        if (relu)
            for (int j = 0; j < hw; j++) {
                float v = p[j] * a + sh;
                q[j] = v > 0 ? v : 0.0f;
            }
        else
            for (int j = 0; j < hw; j++)
                q[j] = p[j] * a + sh;
    }
}

void batchnorm_forward(float *y, float *save_mean, float *save_invstd, const float *x,
                       const double *moments, const float *gamma, const float *beta,
                       float *run_mean, float *run_var, int batch, int c, int hw, bool train,
                       bool relu, float momentum, float eps)
{
    SAMX_ASSERT(batch > 0 && c > 0 && hw > 0);
    SAMX_ASSERT(!train || (size_t)batch * hw > 1); /* PyTorch refuses one value per channel */
    double cnt = (double)batch * hw;
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++) {
        double mean = 0, dev[2] = {0, 0};
        if (train) {
            mean = bn_sum(x, moments, batch, c, hw, ch) / cnt;
            bn_dev(dev, x, moments, mean, batch, c, hw, ch);
        }
        bn_normalize(y, save_mean, save_invstd, x, mean, dev, cnt, gamma, beta, run_mean,
                     run_var, batch, c, hw, train, relu, momentum, eps, ch);
    }
}

void batchnorm_sums(double *sum, const float *x, const double *moments, int batch, int c, int hw)
{
    SAMX_ASSERT(batch > 0 && c > 0 && hw > 0);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++)
        sum[ch] = bn_sum(x, moments, batch, c, hw, ch);
}

void batchnorm_devs(double *dev, const float *x, const double *moments, const double *mean,
                    int batch, int c, int hw)
{
    SAMX_ASSERT(batch > 0 && c > 0 && hw > 0);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++)
        bn_dev(dev + 2 * ch, x, moments, mean[ch], batch, c, hw, ch);
}

void batchnorm_normalize(float *y, float *save_mean, float *save_invstd, const float *x,
                         const double *mean, const double *dev, double cnt, const float *gamma,
                         const float *beta, float *run_mean, float *run_var, int batch, int c,
                         int hw, bool relu, float momentum, float eps)
{
    SAMX_ASSERT(batch > 0 && c > 0 && hw > 0 && cnt > 1);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++)
        bn_normalize(y, save_mean, save_invstd, x, mean[ch], dev + 2 * ch, cnt, gamma, beta,
                     run_mean, run_var, batch, c, hw, true, relu, momentum, eps, ch);
}

void batchnorm_update_running(float *run_mean, float *run_var, const double *mean,
                              const double *dev, double cnt, int c, float momentum)
{
    SAMX_ASSERT(c > 0 && cnt > 1);
    for (int ch = 0; ch < c; ch++) {
        const double *dv = dev + 2 * ch;
        bn_running(run_mean, run_var, mean[ch], (dv[0] - dv[1] * dv[1] / cnt) / cnt, cnt,
                   momentum, ch);
    }
}

/* dy where the fused ReLU was active (y_relu > 0), else 0; dy when there is no ReLU. */
static inline float masked(const float *dy, const float *y, size_t i)
{
    return y ? relu_grad(y[i], dy[i]) : dy[i];
}

/* Channel ch's sum dy into s[0] and sum dy xhat into s[1] (dy masked by the fused ReLU). */
static inline void bn_grad_sums(double s[2], const float *dy, const float *y_relu,
                                const float *x, float m, float is, int batch, int c, int hw,
                                int ch)
{
    double sdy = 0, sdyx = 0;
    for (int n = 0; n < batch; n++) {
        size_t o = ((size_t)n * c + ch) * hw;
        const float *p = x + o;
        /* per plane in 16 float lanes (vectorisable), planes added in double */
        float l1[16] = {0}, l2[16] = {0};
        int j = 0;
        const float *restrict dp = dy + o, *restrict yp = y_relu ? y_relu + o : NULL;
        if (yp)
            for (; j + 16 <= hw; j += 16)
                for (int l = 0; l < 16; l++) {
                    float d = relu_grad(yp[j + l], dp[j + l]);
                    l1[l] += d;
                    l2[l] += d * ((p[j + l] - m) * is);
                }
        else
            for (; j + 16 <= hw; j += 16)
                for (int l = 0; l < 16; l++) {
                    float d = dp[j + l];
                    l1[l] += d;
                    l2[l] += d * ((p[j + l] - m) * is);
                }
        for (int l = 0; l < 16; l++) {
            sdy += l1[l];
            sdyx += l2[l];
        }
        for (; j < hw; j++) {
            float d = masked(dy, y_relu, o + j);
            sdy += d;
            sdyx += (double)d * ((p[j] - m) * is);
        }
    }
    s[0] = sdy;
    s[1] = sdyx;
}

/* Channel ch's dx from the sums of bn_grad_sums over cnt values. */
static inline void bn_grad_dx(float *dx, const double s[2], double cnt, const float *dy,
                              const float *y_relu, const float *x, float m, float is,
                              const float *gamma, int batch, int c, int hw, bool train, bool acc,
                              int ch)
{
    double sdy = s[0], sdyx = s[1];
    /* Training: dx = gamma*is * (dy - mean(dy) - xhat * mean(dy*xhat)); evaluation: the
     * statistics are constants, dx = gamma*is * dy. */
    float g = gamma[ch] * is;
    float k1 = train ? (float)(sdy / cnt) : 0, k2 = train ? (float)(sdyx / cnt) : 0;
    for (int n = 0; n < batch; n++) {
        size_t o = ((size_t)n * c + ch) * hw;
        const float *restrict p = x + o, *restrict dp = dy + o;
        const float *restrict yp = y_relu ? y_relu + o : NULL;
        float *restrict q = dx + o;
        /* One loop per case, so each vectorizes. */
        if (yp && acc)
            for (int j = 0; j < hw; j++)
                q[j] = q[j] + g * (relu_grad(yp[j], dp[j]) - k1 - (p[j] - m) * is * k2);
        else if (yp)
            for (int j = 0; j < hw; j++)
                q[j] = g * (relu_grad(yp[j], dp[j]) - k1 - (p[j] - m) * is * k2);
        else if (acc)
            for (int j = 0; j < hw; j++)
                q[j] = q[j] + g * (dp[j] - k1 - (p[j] - m) * is * k2);
        else
            for (int j = 0; j < hw; j++)
                q[j] = g * (dp[j] - k1 - (p[j] - m) * is * k2);
    }
}

void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                        const float *y_relu, const float *x, const float *save_mean,
                        const float *save_invstd, const float *gamma, int batch, int c, int hw,
                        bool train, bool acc)
{
    double cnt = (double)batch * hw;
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++) {
        float m = save_mean[ch], is = save_invstd[ch];
        double s[2];
        bn_grad_sums(s, dy, y_relu, x, m, is, batch, c, hw, ch);
        dgamma[ch] += (float)s[1];
        dbeta[ch] += (float)s[0];
        if (dx)
            bn_grad_dx(dx, s, cnt, dy, y_relu, x, m, is, gamma, batch, c, hw, train, acc, ch);
    }
}

void batchnorm_backward_sums(double *sums, float *dgamma, float *dbeta, const float *dy,
                             const float *y_relu, const float *x, const float *save_mean,
                             const float *save_invstd, int batch, int c, int hw)
{
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++) {
        bn_grad_sums(sums + 2 * ch, dy, y_relu, x, save_mean[ch], save_invstd[ch], batch, c, hw,
                     ch);
        dgamma[ch] += (float)sums[2 * ch + 1];
        dbeta[ch] += (float)sums[2 * ch];
    }
}

void batchnorm_backward_dx(float *dx, const double *sums, double cnt, const float *dy,
                           const float *y_relu, const float *x, const float *save_mean,
                           const float *save_invstd, const float *gamma, int batch, int c,
                           int hw, bool acc)
{
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++)
        bn_grad_dx(dx, sums + 2 * ch, cnt, dy, y_relu, x, save_mean[ch], save_invstd[ch], gamma,
                   batch, c, hw, true, acc, ch);
}

/* Evaluation mode, where y = gamma is (x - mean) + beta with constant statistics, so the
 * tangent and the second-order terms are those of an affine map per channel. */
void batchnorm_rop(float *ry, const float *y_relu, const float *rx, const float *x,
                   const float *gamma, const float *vgamma, const float *vbeta,
                   const float *save_mean, const float *save_invstd, int batch, int c, int hw)
{
    SAMX_ASSERT(batch > 0 && c > 0 && hw > 0);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++) {
        float m = save_mean[ch], is = save_invstd[ch], a = gamma[ch] * is;
        float va = vgamma[ch] * is, vb = vbeta[ch];
        for (int n = 0; n < batch; n++) {
            size_t o = ((size_t)n * c + ch) * hw;
            for (int j = 0; j < hw; j++) {
                float r = a * rx[o + j] + va * (x[o + j] - m) + vb;
                ry[o + j] = y_relu ? relu_grad(y_relu[o + j], r) : r;
            }
        }
    }
}

void batchnorm_rop_backward(float *dx, float *rdx, float *hgamma, float *hbeta, const float *dy,
                            const float *rdy, const float *y_relu, const float *x,
                            const float *rx, const float *save_mean, const float *save_invstd,
                            const float *gamma, const float *vgamma, int batch, int c, int hw,
                            bool acc)
{
    SAMX_ASSERT(batch > 0 && c > 0 && hw > 0);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int ch = 0; ch < c; ch++) {
        float m = save_mean[ch], is = save_invstd[ch], a = gamma[ch] * is;
        float va = vgamma[ch] * is;
        double sg = 0, sb = 0;
        for (int n = 0; n < batch; n++) {
            size_t o = ((size_t)n * c + ch) * hw;
            float lg = 0, lb = 0; /* one plane in float, planes added in double */
            for (int j = 0; j < hw; j++) {
                float g = masked(dy, y_relu, o + j), rg = masked(rdy, y_relu, o + j);
                lg += rg * ((x[o + j] - m) * is) + g * (rx[o + j] * is);
                lb += rg;
                if (dx) {
                    float d = a * g, rd = a * rg + va * g;
                    dx[o + j] = acc ? dx[o + j] + d : d;
                    rdx[o + j] = acc ? rdx[o + j] + rd : rd;
                }
            }
            sg += lg;
            sb += lb;
        }
        hgamma[ch] += (float)sg;
        hbeta[ch] += (float)sb;
    }
}

/* ---- pooling ---- */

void maxpool_forward(float *out, int32_t *arg, const float *x, int batch, int c, int h, int w,
                     int k, int stride)
{
    int ho = (h - k) / stride + 1, wo = (w - k) / stride + 1;
    long planes = (long)batch * c;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * h * w > PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float *p = x + pl * h * w;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                int best = (oy * stride) * w + ox * stride;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int i = (oy * stride + ky) * w + ox * stride + kx;
                        if (p[i] > p[best] || isnan(p[i]))
                            best = i;
                    }
                out[pl * ho * wo + oy * wo + ox] = p[best];
                arg[pl * ho * wo + oy * wo + ox] = best;
            }
    }
}

void maxpool_backward(float *dx, const float *dout, const int32_t *arg, int batch, int c, int h,
                      int w, int k, int stride, bool acc)
{
    int ho = (h - k) / stride + 1, wo = (w - k) / stride + 1;
    long planes = (long)batch * c;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * h * w > PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float *d = dx + pl * h * w;
        if (!acc)
            memset(d, 0, (size_t)h * w * sizeof *d);
        for (int j = 0; j < ho * wo; j++)
            d[arg[pl * ho * wo + j]] += dout[pl * ho * wo + j];
    }
}

void maxpool_rop(float *rout, const int32_t *arg, const float *rx, int batch, int c, int h,
                 int w, int k, int stride)
{
    size_t per = (size_t)((h - k) / stride + 1) * ((w - k) / stride + 1);
    long planes = (long)batch * c;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * per > PAR_MIN)
    for (long pl = 0; pl < planes; pl++)
        for (size_t j = 0; j < per; j++)
            rout[pl * per + j] = rx[pl * h * w + arg[pl * per + j]];
}

void avgpool_forward(float *out, const float *x, int batch, int c, int h, int w, int k,
                     int stride)
{
    int ho = (h - k) / stride + 1, wo = (w - k) / stride + 1;
    long planes = (long)batch * c;
    float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * h * w > PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float *p = x + pl * h * w;
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float s = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        s += p[(oy * stride + ky) * w + ox * stride + kx];
                out[pl * ho * wo + oy * wo + ox] = s * inv;
            }
    }
}

void avgpool_backward(float *dx, const float *dout, int batch, int c, int h, int w, int k,
                      int stride, bool acc)
{
    int ho = (h - k) / stride + 1, wo = (w - k) / stride + 1;
    long planes = (long)batch * c;
    float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * h * w > PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float *d = dx + pl * h * w;
        if (!acc)
            memset(d, 0, (size_t)h * w * sizeof *d);
        for (int oy = 0; oy < ho; oy++)
            for (int ox = 0; ox < wo; ox++) {
                float g = dout[pl * ho * wo + oy * wo + ox] * inv;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        d[(oy * stride + ky) * w + ox * stride + kx] += g;
            }
    }
}

void gap_forward(float *out, const float *x, int batch, int c, int hw)
{
    long planes = (long)batch * c;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * hw > PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        double s = 0;
        for (int j = 0; j < hw; j++)
            s += x[pl * hw + j];
        out[pl] = (float)(s / hw);
    }
}

void gap_backward(float *dx, const float *dout, int batch, int c, int hw, bool acc)
{
    long planes = (long)batch * c;
    float inv = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (planes * hw > PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float g = dout[pl] * inv;
        for (int j = 0; j < hw; j++)
            dx[pl * hw + j] = acc ? dx[pl * hw + j] + g : g;
    }
}

/* ---- shortcuts, dropout, sums ---- */

void shortcut_a_forward(float *out, const float *x, int batch, int c_in, int h, int w,
                        int c_out, int stride)
{
    int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride, lo = (c_out - c_in) / 2;
    SAMX_ASSERT(c_out >= c_in && (c_out - c_in) % 2 == 0);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int n = 0; n < batch; n++)
        for (int co = 0; co < c_out; co++) {
            float *o = out + ((size_t)n * c_out + co) * ho * wo;
            int ci = co - lo;
            if (ci < 0 || ci >= c_in) {
                memset(o, 0, (size_t)ho * wo * sizeof *o);
                continue;
            }
            const float *p = x + ((size_t)n * c_in + ci) * h * w;
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++)
                    o[oy * wo + ox] = p[(oy * stride) * w + ox * stride];
        }
}

void shortcut_a_backward(float *dx, const float *dout, int batch, int c_in, int h, int w,
                         int c_out, int stride, bool acc)
{
    int ho = (h + stride - 1) / stride, wo = (w + stride - 1) / stride, lo = (c_out - c_in) / 2;
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int n = 0; n < batch; n++)
        for (int ci = 0; ci < c_in; ci++) {
            float *d = dx + ((size_t)n * c_in + ci) * h * w;
            const float *g = dout + ((size_t)n * c_out + ci + lo) * ho * wo;
            if (!acc && stride != 1)
                memset(d, 0, (size_t)h * w * sizeof *d);
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    float *t = &d[(oy * stride) * w + ox * stride];
                    *t = acc || stride != 1 ? *t + g[oy * wo + ox] : g[oy * wo + ox];
                }
        }
}

void dropout_forward(float *out, float *mask, const float *x, int batch, size_t per_example,
                     float p, uint64_t seed, uint64_t step, int layer, int row0)
{
    SAMX_ASSERT(p >= 0 && p < 1 && row0 >= 0 && row0 + batch < 65536 && layer >= 0 &&
                layer < 256);
    float keep = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int i = 0; i < batch; i++) {
        struct rng r;
        rng_init(&r, seed, "dropout", step << 24 | (uint64_t)layer << 16 | (uint64_t)(row0 + i));
        for (size_t j = 0; j < per_example; j++) {
            size_t t = (size_t)i * per_example + j;
            mask[t] = rng_uniform(&r) < p ? 0.0f : keep;
            out[t] = x[t] * mask[t];
        }
    }
}

void dropout_backward(float *dx, const float *dout, const float *mask, size_t n, bool acc)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        dx[i] = acc ? dx[i] + dout[i] * mask[i] : dout[i] * mask[i];
}

void add_forward(float *out, const float *a, const float *b, size_t n, bool relu)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float v = a[i] + b[i];
        out[i] = relu && v <= 0 ? 0.0f : v;
    }
}

void grad_pass(float *dx, const float *dout, const float *y_relu, size_t n, bool acc)
{
    if (!acc && !y_relu) {
        vec_copy(n, dout, dx);
        return;
    }
    /* One loop per case, so each vectorizes (dx never aliases dout or y). */
    float *restrict o = dx;
    const float *restrict d = dout, *restrict y = y_relu;
    if (acc && !y) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            o[i] = o[i] + d[i];
    } else if (acc) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            o[i] = o[i] + relu_grad(y[i], d[i]);
    } else {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            o[i] = relu_grad(y[i], d[i]);
    }
}

void add_rop(float *rout, const float *ra, const float *rb, const float *y_relu, size_t n)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        rout[i] = y_relu ? relu_grad(y_relu[i], ra[i] + rb[i]) : ra[i] + rb[i];
}
