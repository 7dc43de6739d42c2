/* bench_gemm: sgemm throughput of this machine's OpenBLAS, the denominator of the "fraction of
 * peak" figure. Prints GFLOP/s for a large square product (the machine's peak) and for the
 * shapes of one MLP 784-512-512-10 step at batch 128, with 1 and 2 threads, OpenBLAS's own
 * threading versus samx's row split (gemm_par); and, on one thread, the per-example products
 * of a ResNet-20's three stages as one call against the column chunks conv2d uses (nn_conv.c
 * gemm_cols: OpenBLAS's small-matrix path), and its weight gradient in both orientations. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "blas.h"
#include "err.h"

static double now(void)
{
    return omp_get_wtime();
}

/* Operands with a short repeating pattern (the values do not matter for speed). */
static void fill(float *x, size_t n, int period)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(i % period) * 0.1f;
}

static double rate(bool par, bool ta, bool tb, int m, int n, int k, int reps)
{
    float *a = xfloats((size_t)m * k), *b = xfloats((size_t)k * n), *c = xfloats((size_t)m * n);
    fill(a, (size_t)m * k, 7);
    fill(b, (size_t)k * n, 5);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int i = 0; i < reps; i++)
            (par ? gemm_par : gemm)(ta, tb, m, n, k, 1.0f, a, b, 0.0f, c);
        double t = (now() - t0) / reps;
        best = t < best ? t : best;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * k / best * 1e-9;
}

/* One example of a conv stage: c_out x kk weights, kk x hw columns. kind 0: out = W col
 * (in chunks of nc columns); 1: W^T dout (chunks); 2: dW = dout col^T; 3: dW^T = col dout^T. */
static double conv_rate(int kind, int c_out, int kk, int hw, int nc)
{
    float *w = xfloats((size_t)c_out * kk), *col = xfloats((size_t)kk * hw);
    float *out = xfloats((size_t)c_out * hw), *dw = xfloats((size_t)c_out * kk);
    fill(col, (size_t)kk * hw, 5);
    fill(out, (size_t)c_out * hw, 3);
    fill(w, (size_t)c_out * kk, 7);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int it = 0; it < 100; it++)
            for (int j = 0; j < hw; j += nc) {
                int n = hw - j < nc ? hw - j : nc;
                if (kind == 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c_out, n, kk, 1.0f, w,
                                kk, col + j, hw, 0.0f, out + j, hw);
                else if (kind == 1)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, n, c_out, 1.0f, w,
                                kk, out + j, hw, 0.0f, col + j, hw);
                else if (kind == 2)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c_out, kk, hw, 1.0f,
                                out, hw, col, hw, 0.0f, dw, kk);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kk, c_out, hw, 1.0f,
                                col, hw, out, hw, 0.0f, dw, c_out);
            }
        double t = (now() - t0) / 100;
        best = t < best ? t : best;
    }
    free(w);
    free(col);
    free(out);
    free(dw);
    return 2.0 * c_out * kk * hw / best * 1e-9;
}

static void conv_products(void)
{
    static const struct {
        int c_out, kk, hw, nc; /* nc: gemm_cols's chunk for this shape on SkylakeX cores */
    } st[] = {{16, 144, 1024, 128}, {32, 288, 256, 32}, {64, 576, 64, 64}};
    threads_set(1);
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
        int c = st[i].c_out, kk = st[i].kk, hw = st[i].hw, nc = st[i].nc;
        double f1 = conv_rate(0, c, kk, hw, hw), f2 = conv_rate(0, c, kk, hw, nc);
        double b1 = conv_rate(1, c, kk, hw, hw), b2 = conv_rate(1, c, kk, hw, nc);
        double w1 = conv_rate(2, c, kk, hw, hw), w2 = conv_rate(3, c, kk, hw, hw);
        printf("conv %2dx%3dx%4d (1 thread): W col %6.1f -> %6.1f (chunks of %d), W^T dout "
               "%6.1f -> %6.1f, dW %6.1f -> dW^T %6.1f GFLOP/s\n",
               c, kk, hw, f1, f2, nc, b1, b2, w1, w2);
    }
}

int main(void)
{
    printf("openblas core %s\n", blas_corename());
    for (int t = 1; t <= 2; t++) {
        /* OpenBLAS's own threads for its rows (samx runs it single-threaded), samx's team of
         * t for the row-split ones: threads_set last, since it sets OpenBLAS to one thread. */
        threads_set(t);
        blas_set_threads(t);
        printf("threads %d: peak sgemm 2048^3 %.1f GFLOP/s\n", t,
               rate(false, false, false, 2048, 2048, 2048, 2));
        static const struct {
            const char *what;
            bool ta, tb;
            int m, n, k;
        } s[] = {{"fwd  x W1^T 128x512x784", false, true, 128, 512, 784},
                 {"fwd  h W2^T 128x512x512", false, true, 128, 512, 512},
                 {"dW1 dout^T x 512x784x128", true, false, 512, 784, 128},
                 {"dx  dout W2 128x512x512", false, false, 128, 512, 512}};
        for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
            printf("threads %d: %-26s openblas %6.1f  row-split %6.1f GFLOP/s\n", t, s[i].what,
                   rate(false, s[i].ta, s[i].tb, s[i].m, s[i].n, s[i].k, 50),
                   rate(true, s[i].ta, s[i].tb, s[i].m, s[i].n, s[i].k, 50));
    }
    conv_products();
    return 0;
}
