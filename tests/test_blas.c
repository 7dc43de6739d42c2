/* test_blas: gemm against the double-precision reference for every transpose combination and
 * odd shapes; reductions bit-identical across thread counts. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "err.h"
#include "rng.h"
#include "tap.h"

static void check_gemm(bool ta, bool tb, int m, int n, int k)
{
    struct rng r;
    rng_init(&r, 9, "test.gemm", (uint64_t)(m * 1000 + n * 10 + k));
    float *a = xfloats((size_t)m * k), *b = xfloats((size_t)k * n);
    float *c = xfloats((size_t)m * n), *cr = xfloats((size_t)m * n);
    for (int i = 0; i < m * k; i++)
        a[i] = (float)rng_normal(&r);
    for (int i = 0; i < k * n; i++)
        b[i] = (float)rng_normal(&r);
    for (int i = 0; i < m * n; i++)
        c[i] = cr[i] = (float)rng_normal(&r);
    gemm(ta, tb, m, n, k, 0.5f, a, b, 2.0f, c);
    gemm_ref(ta, tb, m, n, k, 0.5f, a, b, 2.0f, cr);
    double worst = 0;
    for (int i = 0; i < m * n; i++)
        worst = worse(worst, fabs((double)c[i] - cr[i]) / (1 + fabs((double)cr[i])));
    ok(worst < 1e-5, "gemm %c%c %dx%dx%d matches the reference (max rel error %.2g)",
       ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, worst);
    free(a);
    free(b);
    free(c);
    free(cr);
}

int main(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 7, 5, 3);
            check_gemm(ta, tb, 129, 67, 33);
        }
    size_t n = 1000003;
    float *x = xfloats(n), *y = xfloats(n);
    struct rng r;
    rng_init(&r, 1, "test.vec", 0);
    double ref = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)rng_normal(&r);
        y[i] = (float)rng_normal(&r);
        ref += (double)x[i] * y[i];
    }
    threads_set(1);
    double d1 = vec_dot(n, x, y), n1 = vec_nrm2(n, x);
    threads_set(2);
    double d2 = vec_dot(n, x, y), n2 = vec_nrm2(n, x);
    threads_set(7);
    double d7 = vec_dot(n, x, y);
    ok(memcmp(&d1, &d2, sizeof d1) == 0 && memcmp(&d1, &d7, sizeof d1) == 0 &&
           memcmp(&n1, &n2, sizeof n1) == 0,
       "dot and norm are bit-identical with 1, 2 and 7 threads");
    approx(d1, ref, 1e-12, 1e-9, "chunked dot equals a serial double sum");
    ok(vec_finite(n, x), "finite vector is finite");
    x[n / 2] = NAN;
    ok(!vec_finite(n, x), "a NaN is found");
    x[n / 2] = INFINITY;
    ok(!vec_finite(n, x), "an Inf is found");
    free(x);
    free(y);
    return done();
}
