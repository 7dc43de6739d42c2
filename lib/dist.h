/* dist.h: data parallelism over MPI processes, the only module that talks to MPI.
 *
 * `mpirun -np N samx run cfg.yaml` trains ONE run over N processes ("ranks"). Every rank
 * builds the same experiment, draws the same example order, augmentation and random streams,
 * and gathers the whole batch; each closure call (optim.h) then computes the model on a
 * contiguous shard of its rows (dist_shard) and the shards' gradients, loss sums and BatchNorm
 * statistics are summed over the ranks in rank order (dist_sum_*), so every rank takes the same
 * step with the same bits, and a result differs from the single-process one only by the order
 * of those sums. Evaluation (train.h evaluate_split) shards each split the same way. Rank 0
 * alone writes the run directory (rundir.h). m-sharpness groups are the exception: they are
 * dealt out whole (optim.h optim_groups), each process evaluates its own unsplit, and the
 * step's sums are taken once at its end (closure_combine), with the BatchNorm running
 * statistics replayed from every process's log (model.h struct model_runlog).
 *
 * Determinism: MPI_Allreduce does not promise a summation order, so nothing here uses it for
 * floating point. A sum is an all-to-all of slices (rank r receives slice r of every rank's
 * vector), each slice summed in double in rank order 0, 1, ..., N-1 and rounded once, then an
 * all-gather of the slices: the same bits on every rank and in every run with the same N.
 *
 * Size 1 (samx built without MPI, or built with it and not started by an MPI launcher): every
 * function here is a no-op or the identity and the callers take exactly their single-process
 * paths, so such a run is bit for bit the run of a samx without MPI.
 */
#ifndef SAMX_DIST_H
#define SAMX_DIST_H

#include <stdbool.h>
#include <stddef.h>

/* Whether this samx was built with MPI (meson option mpi). */
bool dist_built(void);

/* Join the MPI job when an MPI launcher (mpirun, mpiexec, srun) started the process; otherwise
 * stay a single process without touching MPI. Gathers every rank's host name and `threads`
 * for meta.json. Call once, after the process has re-executed itself (tune.h) and before
 * anything else here. Returns -1 (message on stderr) when MPI fails to start. */
int dist_init(int threads);
/* Leave the job (MPI_Finalize); a no-op at size 1 or before dist_init. */
void dist_finalize(void);
/* End every process of the job with status (MPI_Abort): the way a rank that fails alone makes
 * the job fail instead of leaving the others waiting in a collective; with xmalloc's, the only
 * exit in lib/ (train.c calls it for such a failure, and for a model call too small to split).
 * exit(status) at size 1. */
void dist_abort(int status) __attribute__((noreturn));

int dist_rank(void);
int dist_size(void);
/* Host name and thread count of rank r (r < dist_size()). */
const char *dist_host(int r);
int dist_threads(int r);

/* The rows [*lo, *hi) of n that rank r works on: the first n % N ranks take n / N + 1 rows,
 * the others n / N, in rank order. */
void dist_shard_of(int n, int r, int *lo, int *hi);
/* The same rule for `parts` parts: part r of n, the first n % parts taking one more. */
void dist_split(int n, int parts, int r, int *lo, int *hi);
/* dist_shard_of for this rank. */
void dist_shard(int n, int *lo, int *hi);

/* Allocate the workspace for sums of up to n floats or doubles (at build time, so that no
 * step allocates); the sums assert that it is large enough. */
void dist_reserve(size_t n);
/* x (n values, the same n on every rank) := the sum over ranks of x, in rank order in double,
 * identical on every rank. */
void dist_sum_float(float *x, size_t n);
void dist_sum_double(double *x, size_t n);
/* x (n doubles): on entry this rank's shard rows [lo, hi) of dist_shard(n) hold its values;
 * on return every rank's shard is filled in, the same n values on every rank. */
void dist_gather_double(double *x, int n);
/* Whether flag is true on any rank (an integer reduction: exact). */
bool dist_any(bool flag);
/* Copy `bytes` bytes from rank 0's buf into every rank's buf. */
void dist_bcast(void *buf, size_t bytes);

#endif
