/* blas.h: the one GEMM entry point and the vector operations over flat float buffers.
 *
 * gemm() wraps cblas_sgemm (the OpenMP build of OpenBLAS, run single-threaded: threads_set);
 * gemm_ref() is a plain triple loop in double that tests check it against.
 *
 * Reductions (dot, nrm2, sum) are deterministic for any thread count: the vector is cut into
 * fixed chunks of VEC_CHUNK elements, each chunk is summed in double by one thread in index
 * order, and the chunk partials are added serially. So the same inputs give the same bits with
 * 1 or 16 threads. Elementwise operations parallelise over the index they write.
 */
#ifndef SAMX_BLAS_H
#define SAMX_BLAS_H

#include <stdbool.h>
#include <stddef.h>

/* C (m, n) = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X^T when trans_X.
 * A is (m, k) or (k, m), B is (k, n) or (n, k); leading dimensions are the row lengths. */
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
          const float *b, float beta, float *c);
/* The same product with C's rows split into one block per thread of -t (threads_get), the
 * blocks run by the team (tune.h), each block a single-threaded sgemm. For the small products
 * of a mini-batch step (128 x 512 x 784) this keeps every core busy. Each element of C is
 * computed by one block, so results depend on -t only. Falls back to gemm() (one thread) for
 * -t 1 or small products (under 32 rows or a million multiply-adds), where waking the team
 * costs more than it saves. Call it outside parallel regions. */
void gemm_par(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              const float *b, float beta, float *c);
/* gemm with explicit leading dimensions (row lengths of the stored A, B, C), for blocks of
 * larger matrices. */
void gemm_ld(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
             int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* Rows of each thread's block when m rows are split over nt threads: ceil(m / nt) rounded up to
 * a multiple of 16 so blocks align with the kernels' register tiles. Thread t owns rows
 * [t * rows, min(m, (t + 1) * rows)), possibly none. Every split of weight rows across
 * threads (gemm_par, the graph's linear layers, params_chunk_thread) uses it, so a row stays
 * with one core. */
int gemm_par_rows(int m, int nt);
void gemm_ref(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              const float *b, float beta, float *c);

/* Reductions, accumulated in double. */
double vec_dot(size_t n, const float *x, const float *y);
double vec_nrm2(size_t n, const float *x);
/* The chunking behind the reductions, for loops that fuse a norm into an elementwise pass:
 * vec_chunks(n, &chunk) gives the number of chunks (at most VEC_MAX_CHUNKS); chunk c covers
 * [c * chunk, min(n, (c + 1) * chunk)). sqrt(vec_parts_sum(part, nc)) over part[c] =
 * vec_sumsq_part(x, lo_c, hi_c) is vec_nrm2(n, x), bit for bit, for any thread count. */
#define VEC_MAX_CHUNKS 4096
long vec_chunks(size_t n, size_t *chunk);
double vec_sumsq_part(const float *x, size_t lo, size_t hi);
double vec_parts_sum(const double *part, long nc);
/* Elementwise: y += a*x; y = x; y = a*x + b*y; x = 0; x *= a. */
void vec_axpy(size_t n, float a, const float *x, float *y);
void vec_copy(size_t n, const float *x, float *y);
void vec_axpby(size_t n, float a, const float *x, float b, float *y);
void vec_zero(size_t n, float *x);
void vec_scal(size_t n, float a, float *x);
/* true when every element is finite. */
bool vec_finite(size_t n, const float *x);

/* Inside a parallel region: this thread's number and the team size (0 and 1 outside). */
#define SAMX_MAX_THREADS 64
int thread_id(void);
int thread_count(void);

/* The work split: every parallel pass cuts its work into work_blocks() blocks (SAMX_BLOCKS)
 * whose bounds depend on the shapes alone, never on -t or the team: the linear layers' weight
 * rows, the convolutions' example blocks, gemm_par's row blocks, the optimizers' chunk owners.
 * Partial sums are combined in block order. So no result depends on the thread count; more than
 * SAMX_BLOCKS threads add nothing to these passes (elementwise and per-channel loops still use
 * every thread). 4, because each block is a separate, smaller GEMM and the partial sums of the
 * linear layers' input gradients grow with the count: against a split by the thread count,
 * measured on the Fashion-MNIST MLP epoch (2 cores, best of 3 interleaved rounds), 4 blocks
 * cost 0-6% on 2 threads and 6-10% on 1, 8 blocks 12% and 8% (tests/bench/README.md). */
#define SAMX_BLOCKS 4
int work_blocks(void);

/* Threads: -t N (n >= 1), the most threads a region runs; the threads that run a region
 * are the team (tune.h). threads_get() before any threads_set() takes OpenMP's default
 * (OMP_NUM_THREADS or the cores). threads_set leaves OpenBLAS single-threaded.
 * blas_set_threads sets OpenBLAS's (and OpenMP's default) thread count: for benchmarks of
 * OpenBLAS itself only, never inside samx's passes. */
void threads_set(int n);
int threads_get(void);
void blas_set_threads(int n);
/* What OpenBLAS reports about itself: core name (e.g. "SkylakeX"), config string, whether it
 * is the OpenMP build (openblas_get_parallel() == 2). Empty strings if unavailable. */
const char *blas_corename(void);
const char *blas_config(void);
int blas_parallel(void);
int blas_threads(void);

#endif
