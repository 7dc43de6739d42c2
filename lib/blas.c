/* OpenBLAS's cblas.h declares affinity functions with cpu_set_t, a GNU extension. */
#define _GNU_SOURCE
#include "blas.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "err.h"
#include "tune.h"

/* OpenBLAS extensions, declared here because Debian's cblas.h does not always expose them. */
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);
extern int openblas_get_parallel(void);
extern int openblas_get_num_threads(void);
extern void openblas_set_num_threads(int);

#define VEC_CHUNK 4096
#define PAR_MIN 32768

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
          const float *b, float beta, float *c)
{
    SAMX_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0)
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, trans_a ? m : k, b,
                trans_b ? k : n, beta, c, n);
}

void gemm_ld(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
             int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    SAMX_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0)
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int gemm_par_rows(int m, int nt)
{
    SAMX_ASSERT(m >= 0 && nt >= 1);
    return ((m + nt - 1) / nt + 15) / 16 * 16;
}

int work_blocks(void)
{
    return SAMX_BLOCKS;
}

void gemm_par(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              const float *b, float beta, float *c)
{
    if (m < 32 || (double)m * n * k < 1e6) {
        gemm(trans_a, trans_b, m, n, k, alpha, a, b, beta, c);
        return;
    }
    int lda = trans_a ? m : k, ldb = trans_b ? k : n;
    int rows = gemm_par_rows(m, work_blocks());
    int blocks = (m + rows - 1) / rows;
#pragma omp parallel for schedule(static) num_threads(team_size())
    for (int bi = 0; bi < blocks; bi++) {
        int i0 = bi * rows, mi = i0 + rows <= m ? rows : m - i0;
        /* A's block: rows i0.. of A, or columns i0.. of A^T; same leading dimension. */
        const float *ab = trans_a ? a + i0 : a + (size_t)i0 * lda;
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, mi, n, k, alpha, ab, lda, b, ldb, beta,
                    c + (size_t)i0 * n, n);
    }
}

void gemm_ref(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              const float *b, float beta, float *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int l = 0; l < k; l++) {
                double av = trans_a ? a[(size_t)l * m + i] : a[(size_t)i * k + l];
                double bv = trans_b ? b[(size_t)j * k + l] : b[(size_t)l * n + j];
                s += av * bv;
            }
            double old = beta == 0 ? 0 : (double)beta * c[(size_t)i * n + j];
            c[(size_t)i * n + j] = (float)(alpha * s + old);
        }
}

long vec_chunks(size_t n, size_t *chunk)
{
    size_t c = VEC_CHUNK;
    while ((n + c - 1) / c > VEC_MAX_CHUNKS)
        c *= 2;
    *chunk = c;
    return (long)((n + c - 1) / c);
}

/* Eight independent lanes (element i goes to lane i % 8), added in a fixed order at the end:
 * the compiler can vectorize them without reassociating anything, so the result is the same
 * bits every time, and the sum runs at memory speed instead of at one dependent add per
 * element. y NULL: the sum of squares of x. */
static double lanes_sum(const float *restrict x, const float *restrict y, size_t lo, size_t hi)
{
    double lane[8] = {0};
    size_t i = lo;
    if (y)
        for (; i + 8 <= hi; i += 8)
            for (int j = 0; j < 8; j++)
                lane[j] += (double)x[i + j] * y[i + j];
    else
        for (; i + 8 <= hi; i += 8)
            for (int j = 0; j < 8; j++)
                lane[j] += (double)x[i + j] * x[i + j];
    for (int j = 0; i < hi; i++, j++)
        lane[j] += (double)x[i] * (y ? y[i] : x[i]);
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

double vec_sumsq_part(const float *x, size_t lo, size_t hi) { return lanes_sum(x, NULL, lo, hi); }

double vec_parts_sum(const double *part, long nc)
{
    double s = 0;
    for (long c = 0; c < nc; c++)
        s += part[c];
    return s;
}

/* Sum over the fixed chunks; y NULL: the sum of squares of x. */
static double chunked_sum(size_t n, const float *x, const float *y)
{
    double part[VEC_MAX_CHUNKS];
    size_t chunk;
    long nc = vec_chunks(n, &chunk);
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        part[c] = lanes_sum(x, y, lo, hi);
    }
    return vec_parts_sum(part, nc);
}

double vec_dot(size_t n, const float *x, const float *y) { return chunked_sum(n, x, y); }
double vec_nrm2(size_t n, const float *x) { return sqrt(chunked_sum(n, x, NULL)); }

void vec_axpy(size_t n, float a, const float *x, float *y)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* Copies and zeroing go chunk by chunk: small memcpy/memset calls use ordinary stores, where one
 * call over a whole weight vector takes glibc's non-temporal path and leaves the destination out
 * of cache just before the next kernel reads it. */
void vec_copy(size_t n, const float *x, float *y)
{
    if (x == y)
        return;
    long nc = (long)((n + VEC_CHUNK - 1) / VEC_CHUNK);
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * VEC_CHUNK, hi = lo + VEC_CHUNK < n ? lo + VEC_CHUNK : n;
        memcpy(y + lo, x + lo, (hi - lo) * sizeof *x);
    }
}

void vec_axpby(size_t n, float a, const float *x, float b, float *y)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = a * x[i] + b * y[i];
}

void vec_zero(size_t n, float *x)
{
    long nc = (long)((n + VEC_CHUNK - 1) / VEC_CHUNK);
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (long c = 0; c < nc; c++) {
        size_t lo = (size_t)c * VEC_CHUNK, hi = lo + VEC_CHUNK < n ? lo + VEC_CHUNK : n;
        memset(x + lo, 0, (hi - lo) * sizeof *x);
    }
}

void vec_scal(size_t n, float a, float *x)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] *= a;
}

bool vec_finite(size_t n, const float *x)
{
    /* A NaN or Inf anywhere makes the sum non-finite; 0*x keeps finite values from overflowing. */
    float acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += 0.0f * x[i];
    return acc == 0.0f;
}

/* -t N as set by threads_set; 0 until then (threads_get then takes OpenMP's default). */
static int n_threads;

void threads_set(int n)
{
    SAMX_ASSERT(n >= 1);
    n_threads = n;
    /* OpenBLAS's OpenMP build follows omp_get_max_threads() at every call and rounds
     * differently on different thread counts, so both stay at 1: every parallel region of samx
     * names its team (num_threads(team_size())), and each BLAS call runs single-threaded,
     * inside a region or not. Then no result depends on the team (tune.h). */
    blas_set_threads(1);
    team_init(n);
}

void blas_set_threads(int n)
{
    SAMX_ASSERT(n >= 1);
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int thread_count(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

int threads_get(void)
{
    if (!n_threads) {
#ifdef _OPENMP
        threads_set(omp_get_max_threads());
#else
        threads_set(1);
#endif
    }
    return n_threads;
}

const char *blas_corename(void)
{
    const char *s = openblas_get_corename();
    return s ? s : "";
}

const char *blas_config(void)
{
    const char *s = openblas_get_config();
    return s ? s : "";
}

int blas_parallel(void) { return openblas_get_parallel(); }
int blas_threads(void) { return openblas_get_num_threads(); }
