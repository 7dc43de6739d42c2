/* bench_gemm: sgemm throughput of this machine's OpenBLAS, the denominator of the "fraction of
 * peak" figure. Prints GFLOP/s for a large square product (the machine's peak) and for the
 * shapes of one MLP 784-512-512-10 step at batch 128, with 1 and 2 threads, OpenBLAS's own
 * threading versus samx's row split (gemm_par). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "blas.h"
#include "err.h"

static double now(void)
{
    return omp_get_wtime();
}

static double rate(bool par, bool ta, bool tb, int m, int n, int k, int reps)
{
    float *a = xfloats((size_t)m * k), *b = xfloats((size_t)k * n), *c = xfloats((size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        b[i] = (float)(i % 5) * 0.1f;
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

int main(void)
{
    printf("openblas core %s\n", blas_corename());
    for (int t = 1; t <= 2; t++) {
        threads_set(t);
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
    return 0;
}
