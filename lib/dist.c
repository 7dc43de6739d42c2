/* dist.c: data parallelism over MPI (dist.h); stubs for size 1 when built without MPI. */
#include "dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

#ifdef SAMX_MPI
#include <mpi.h>
#endif

#define HOST_LEN 64

static int g_rank, g_size = 1;
static char *g_hosts;       /* (size, HOST_LEN) */
static int *g_threads;      /* (size) */
static char g_host0[HOST_LEN];
static int g_threads0 = 1;

bool dist_built(void)
{
#ifdef SAMX_MPI
    return true;
#else
    return false;
#endif
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
const char *dist_host(int r) { return g_hosts ? g_hosts + (size_t)r * HOST_LEN : g_host0; }
int dist_threads(int r) { return g_threads ? g_threads[r] : g_threads0; }

void dist_split(int n, int parts, int r, int *lo, int *hi)
{
    SAMX_ASSERT(parts > 0 && r >= 0 && r < parts);
    int base = n / parts, extra = n % parts;
    *lo = r * base + (r < extra ? r : extra);
    *hi = *lo + base + (r < extra ? 1 : 0);
}

void dist_shard_of(int n, int r, int *lo, int *hi) { dist_split(n, g_size, r, lo, hi); }

void dist_shard(int n, int *lo, int *hi) { dist_shard_of(n, g_rank, lo, hi); }

#ifdef SAMX_MPI

static bool g_mpi; /* MPI_Init succeeded and MPI_Finalize is due */

/* Started by a launcher: OpenMPI (mpirun), PMI/PMIx (MPICH's hydra, srun). A process started
 * by hand stays out of MPI, so it is exactly a single-process samx. */
static bool launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                       "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

/* SAMX_DIST_TRACE: the time spent in the sums (their collectives and the rank-ordered
 * additions, waiting for the slowest rank included), their count and the bytes each process
 * sends, reported by dist_finalize. */
static bool g_trace;
static double g_sum_s;
static long g_sum_calls;
static double g_sum_bytes;

static void *g_ws;        /* the sums' workspace: size slices of at most ceil(cap / size) */
static size_t g_ws_cap;   /* elements (doubles) the sums may take */
static int *g_counts, *g_displs, *g_rc, *g_rd; /* (size) each: the collectives' layouts */

int dist_init(int threads)
{
    gethostname(g_host0, sizeof g_host0 - 1);
    g_threads0 = threads;
    if (!launched())
        return 0;
    int provided;
    /* Only the main thread calls MPI (OpenMP regions never do). */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "samx: error: MPI_Init failed\n");
        return -1;
    }
    g_mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_hosts = xmalloc((size_t)g_size * HOST_LEN);
    g_threads = xmalloc((size_t)g_size * sizeof *g_threads);
    g_counts = xmalloc((size_t)g_size * sizeof *g_counts);
    g_displs = xmalloc((size_t)g_size * sizeof *g_displs);
    g_rc = xmalloc((size_t)g_size * sizeof *g_rc);
    g_rd = xmalloc((size_t)g_size * sizeof *g_rd);
    MPI_Allgather(g_host0, HOST_LEN, MPI_CHAR, g_hosts, HOST_LEN, MPI_CHAR, MPI_COMM_WORLD);
    MPI_Allgather(&threads, 1, MPI_INT, g_threads, 1, MPI_INT, MPI_COMM_WORLD);
    g_trace = getenv("SAMX_DIST_TRACE") != NULL;
    return 0;
}

void dist_finalize(void)
{
    if (!g_mpi)
        return;
    if (g_trace && g_size > 1) {
        double mine[2] = {g_sum_s, g_sum_s}, all[2];
        MPI_Reduce(&mine[0], &all[0], 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        MPI_Reduce(&mine[1], &all[1], 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
        if (g_rank == 0)
            fprintf(stderr,
                    "samx: dist: %ld sums, %.1f MB sent by each of %d processes, %.3f s in "
                    "sums on rank 0 (%.3f-%.3f s over the ranks)\n",
                    g_sum_calls, g_sum_bytes / 1e6, g_size, g_sum_s, all[1], all[0]);
    }
    MPI_Finalize();
    g_mpi = false;
}

void dist_abort(int status)
{
    fflush(stdout);
    fflush(stderr);
    if (g_mpi && g_size > 1)
        MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

void dist_reserve(size_t n)
{
    if (g_size == 1 || n <= g_ws_cap)
        return;
    size_t slice = (n + (size_t)g_size - 1) / (size_t)g_size;
    free(g_ws);
    g_ws = xmalloc(slice * (size_t)g_size * sizeof(double));
    g_ws_cap = n;
}

/* Slice r of an n-vector: the shard rule, so the slices tile it in rank order. */
static void slices(size_t n)
{
    SAMX_ASSERT(n <= (size_t)INT_MAX);
    for (int r = 0; r < g_size; r++) {
        int lo, hi;
        dist_shard_of((int)n, r, &lo, &hi);
        g_counts[r] = hi - lo;
        g_displs[r] = lo;
    }
}

/* The all-to-all sum of dist.h for float or double x. */
static void sum(void *x, size_t n, bool dbl)
{
    if (g_size == 1 || n == 0)
        return;
    SAMX_ASSERT(n <= g_ws_cap);
    double t0 = g_trace ? MPI_Wtime() : 0;
    slices(n);
    MPI_Datatype t = dbl ? MPI_DOUBLE : MPI_FLOAT;
    int mine = g_counts[g_rank], lo = g_displs[g_rank];
    /* recv: every rank's slice `g_rank`, one after the other in rank order */
    for (int r = 0; r < g_size; r++)
        g_rc[r] = mine, g_rd[r] = r * mine;
    MPI_Alltoallv(x, g_counts, g_displs, t, g_ws, g_rc, g_rd, t, MPI_COMM_WORLD);
    for (int i = 0; i < mine; i++) {
        double s = 0;
        for (int r = 0; r < g_size; r++)
            s += dbl ? ((const double *)g_ws)[(size_t)r * mine + i]
                     : (double)((const float *)g_ws)[(size_t)r * mine + i];
        if (dbl)
            ((double *)x)[lo + i] = s;
        else
            ((float *)x)[lo + i] = (float)s;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, t, x, g_counts, g_displs, t, MPI_COMM_WORLD);
    if (g_trace) {
        g_sum_s += MPI_Wtime() - t0;
        g_sum_calls++;
        /* all but its own slice out in the all-to-all, its slice to the N - 1 others in the
         * gather: for equal slices, twice (N - 1) / N of the vector */
        g_sum_bytes += (double)(n - (size_t)mine + (size_t)mine * (g_size - 1)) *
                       (dbl ? sizeof(double) : sizeof(float));
    }
}

void dist_sum_float(float *x, size_t n) { sum(x, n, false); }
void dist_sum_double(double *x, size_t n) { sum(x, n, true); }

void dist_gather_double(double *x, int n)
{
    if (g_size == 1 || n == 0)
        return;
    slices((size_t)n);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DOUBLE, x, g_counts, g_displs, MPI_DOUBLE,
                   MPI_COMM_WORLD);
}

bool dist_any(bool flag)
{
    if (g_size == 1)
        return flag;
    int v = flag, any = 0;
    MPI_Allreduce(&v, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any != 0;
}

void dist_bcast(void *buf, size_t bytes)
{
    if (g_size == 1)
        return;
    for (size_t off = 0; off < bytes; off += (size_t)INT_MAX / 2) {
        size_t k = bytes - off < (size_t)INT_MAX / 2 ? bytes - off : (size_t)INT_MAX / 2;
        MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
}

#else /* without MPI: one process */

int dist_init(int threads)
{
    gethostname(g_host0, sizeof g_host0 - 1);
    g_threads0 = threads;
    return 0;
}
void dist_finalize(void) {}
void dist_abort(int status)
{
    fflush(stdout);
    fflush(stderr);
    exit(status);
}
void dist_reserve(size_t n) { (void)n; }
void dist_sum_float(float *x, size_t n) { (void)x, (void)n; }
void dist_sum_double(double *x, size_t n) { (void)x, (void)n; }
void dist_gather_double(double *x, int n) { (void)x, (void)n; }
bool dist_any(bool flag) { return flag; }
void dist_bcast(void *buf, size_t bytes) { (void)buf, (void)bytes; }

#endif
