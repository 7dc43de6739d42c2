#include "nn.h"

#include <math.h>
#include <stddef.h>

#include "blas.h"
#include "err.h"
#include "tune.h"

#define PAR_MIN 16384

const char *const act_names[] = {"relu", "tanh", "gelu", NULL};

void linear_forward(float *out, const float *x, const float *w, const float *b, int batch,
                    int n_in, int n_out)
{
    SAMX_ASSERT(batch > 0 && n_in > 0 && n_out > 0);
    if (b) {
#pragma omp parallel for schedule(static) num_threads(team_size()) \
    if ((size_t)batch * n_out > PAR_MIN)
        for (int i = 0; i < batch; i++)
            for (int j = 0; j < n_out; j++)
                out[(size_t)i * n_out + j] = b[j];
    }
    gemm_par(false, true, batch, n_out, n_in, 1.0f, x, w, b ? 1.0f : 0.0f, out);
}

void col_sums(float *out, const float *x, int rows, int cols, int ld, bool acc)
{
    enum { COLS = 64 };
    for (int j0 = 0; j0 < cols; j0 += COLS) {
        int nj = j0 + COLS <= cols ? COLS : cols - j0;
        float s[COLS] = {0};
        for (int i = 0; i < rows; i++) {
            const float *row = x + (size_t)i * ld + j0;
            for (int j = 0; j < nj; j++)
                s[j] += row[j];
        }
        for (int j = 0; j < nj; j++)
            out[j0 + j] = acc ? out[j0 + j] + s[j] : s[j];
    }
}

void linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int batch, int n_in, int n_out, bool acc)
{
    SAMX_ASSERT(batch > 0 && n_in > 0 && n_out > 0);
    gemm_par(true, false, n_out, n_in, batch, 1.0f, dout, x, acc ? 1.0f : 0.0f, dw);
    if (db) {
        /* Column sums, each over the rows in index order (deterministic for any thread count),
         * computed a block of columns at a time so the inner loop runs along rows of dout. */
        enum { COLS = 64 };
        int nblk = (n_out + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) num_threads(team_size()) \
    if ((size_t)batch * n_out > PAR_MIN)
        for (int blk = 0; blk < nblk; blk++) {
            int j0 = blk * COLS, nj = j0 + COLS <= n_out ? COLS : n_out - j0;
            col_sums(db + j0, dout + j0, batch, nj, n_out, acc);
        }
    }
    if (dx)
        gemm_par(false, false, batch, n_in, n_out, 1.0f, dout, w, 0.0f, dx);
}

static float gelu(float z) { return 0.5f * z * (1.0f + erff(z * (float)M_SQRT1_2)); }

#define INV_SQRT_2PI 0.3989422804014327f

static inline float gelu_grad(float z)
{
    return 0.5f * (1.0f + erff(z * (float)M_SQRT1_2)) + z * INV_SQRT_2PI * expf(-0.5f * z * z);
}

/* Serial loops over one row segment, with the same expressions as the parallel kernels. */
static void act_fwd_seg(enum act a, float *restrict y, const float *restrict z, size_t n)
{
    switch (a) {
    case ACT_RELU:
        for (size_t i = 0; i < n; i++)
            y[i] = z[i] > 0 ? z[i] : 0;
        break;
    case ACT_TANH:
        for (size_t i = 0; i < n; i++)
            y[i] = tanhf(z[i]);
        break;
    case ACT_GELU:
        for (size_t i = 0; i < n; i++)
            y[i] = gelu(z[i]);
        break;
    }
}

/* In place: dz == dy. */
static void act_bwd_seg(enum act a, float *dz, const float *restrict z, const float *restrict y,
                        size_t n)
{
    switch (a) {
    case ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dz[i] = relu_grad(z[i], dz[i]);
        break;
    case ACT_TANH:
        for (size_t i = 0; i < n; i++)
            dz[i] = dz[i] * (1.0f - y[i] * y[i]);
        break;
    case ACT_GELU:
        for (size_t i = 0; i < n; i++)
            dz[i] = dz[i] * gelu_grad(z[i]);
        break;
    }
}

void act_forward_block(enum act a, float *y, const float *z, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++)
        act_fwd_seg(a, y + (size_t)r * ld, z + (size_t)r * ld, (size_t)cols);
}

void act_backward_block(enum act a, float *dz, const float *z, const float *y, int rows,
                        int cols, int ld)
{
    for (int r = 0; r < rows; r++)
        act_bwd_seg(a, dz + (size_t)r * ld, z + (size_t)r * ld, y + (size_t)r * ld, (size_t)cols);
}

void act_forward(enum act a, float *y, const float *z, size_t n)
{
    switch (a) {
    case ACT_RELU:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            y[i] = z[i] > 0 ? z[i] : 0;
        break;
    case ACT_TANH:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            y[i] = tanhf(z[i]);
        break;
    case ACT_GELU:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            y[i] = gelu(z[i]);
        break;
    }
}

void act_backward(enum act a, float *dz, const float *dy, const float *z, const float *y,
                  size_t n, bool acc)
{
    SAMX_ASSERT(!acc || dz != dy);
    switch (a) {
    case ACT_RELU:
        /* One loop per case: with dz == dy the compiler's overlap check would send a shared
         * loop down its scalar path. */
        if (acc) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++)
                dz[i] = dz[i] + relu_grad(y[i], dy[i]);
        } else if (dz == dy) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++)
                dz[i] = relu_grad(y[i], dz[i]);
        } else {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++)
                dz[i] = relu_grad(y[i], dy[i]);
        }
        break;
    case ACT_TANH:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float g = dy[i] * (1.0f - y[i] * y[i]);
            dz[i] = acc ? dz[i] + g : g;
        }
        break;
    case ACT_GELU:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float g = dy[i] * gelu_grad(z[i]);
            dz[i] = acc ? dz[i] + g : g;
        }
        break;
    }
}

void act_rop(enum act a, float *dz, float *rdz, const float *dy, const float *rdy,
             const float *z, const float *y, const float *rz, size_t n, bool acc)
{
    SAMX_ASSERT(!acc || (dz != dy && rdz != rdy));
    switch (a) {
    case ACT_RELU:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float g = relu_grad(y[i], dy[i]), rg = relu_grad(y[i], rdy[i]);
            dz[i] = acc ? dz[i] + g : g;
            rdz[i] = acc ? rdz[i] + rg : rg;
        }
        break;
    case ACT_TANH:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float d1 = 1.0f - y[i] * y[i], d2 = -2.0f * y[i] * d1;
            float g = dy[i] * d1, rg = rdy[i] * d1 + d2 * rz[i] * dy[i];
            dz[i] = acc ? dz[i] + g : g;
            rdz[i] = acc ? rdz[i] + rg : rg;
        }
        break;
    case ACT_GELU:
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float d1 = gelu_grad(z[i]);
            float d2 = INV_SQRT_2PI * expf(-0.5f * z[i] * z[i]) * (2.0f - z[i] * z[i]);
            float g = dy[i] * d1, rg = rdy[i] * d1 + d2 * rz[i] * dy[i];
            dz[i] = acc ? dz[i] + g : g;
            rdz[i] = acc ? rdz[i] + rg : rg;
        }
        break;
    }
}

double xent_forward_backward(float *dlogits, double *loss_ex, uint8_t *hit, const float *logits,
                             const int32_t *label, int batch, int k, float smoothing,
                             float scale)
{
    SAMX_ASSERT(batch > 0 && k > 1 && smoothing >= 0 && smoothing < 1);
#pragma omp parallel for schedule(static) num_threads(team_size()) if ((size_t)batch * k > PAR_MIN)
    for (int i = 0; i < batch; i++) {
        const float *z = logits + (size_t)i * k;
        int y = label[i];
        SAMX_ASSERT(y >= 0 && y < k);
        float zmax = z[0];
        int arg = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > zmax) {
                zmax = z[j];
                arg = j;
            }
        double se = 0, zsum = 0;
        for (int j = 0; j < k; j++) {
            se += exp((double)z[j] - zmax);
            zsum += (double)z[j] - zmax;
        }
        double lse = log(se);
        /* -log p_y = lse - (z_y - max); smoothing adds the mean over classes of -log p_j. */
        double nll = lse - ((double)z[y] - zmax);
        double smooth = lse - zsum / k;
        loss_ex[i] = (1.0 - smoothing) * nll + smoothing * smooth;
        hit[i] = arg == y;
        if (dlogits) {
            float *d = dlogits + (size_t)i * k;
            for (int j = 0; j < k; j++) {
                double p = exp((double)z[j] - zmax) / se;
                double t = (j == y ? 1.0 - smoothing : 0.0) + smoothing / k;
                d[j] = (float)(scale * (p - t));
            }
        }
    }
    double total = 0;
    for (int i = 0; i < batch; i++)
        total += loss_ex[i];
    return total;
}

double mse_forward_backward(float *dpred, double *loss_ex, const float *pred, const float *y,
                            int batch, float scale)
{
    SAMX_ASSERT(batch > 0);
    double total = 0;
    for (int i = 0; i < batch; i++) {
        double r = (double)pred[i] - y[i];
        loss_ex[i] = r * r;
        total += r * r;
        if (dpred)
            dpred[i] = (float)(scale * 2.0 * r);
    }
    return total;
}
