/* tune.h: the process-wide performance settings, decided in one place before any OpenMP or
 * OpenBLAS code runs, and recorded in meta.json.
 *
 * Two settings can only be chosen through the environment before the runtimes load (libgomp
 * and OpenBLAS read it in their constructors, before main): OpenBLAS's kernel set and the
 * OpenMP wait policy. tune_env() decides both from the CPU and the user's environment and
 * returns true when it changed the environment, in which case the caller (cmd/, the only place
 * that may replace the process) re-executes samx once so the runtimes load with it.
 *
 * - Kernels: OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs and falls back to its
 *   Haswell (AVX2) kernels at about half the speed; on such a CPU samx sets
 *   OPENBLAS_CORETYPE=SkylakeX. OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU only restates what
 *   0.3.21 detects by itself, so it is upgraded too; any other value is the user's and is kept;
 *   SAMX_BLAS_CORE=keep keeps whatever OpenBLAS loads.
 * - Waiting: a step of the step loop has a dozen synchronisation points (region ends,
 *   barriers between layers), each a few hundred microseconds apart. libgomp's default
 *   (OMP_WAIT_POLICY unset) busy-waits up to 300,000 spins at each of them. On a quiet machine
 *   that is harmless, but when another process shares a core, the spinning thread holds its
 *   core (and its scheduling-group share) while the thread it waits for is queued behind the
 *   other process, and every synchronisation point costs a scheduler time slice: measured on 2
 *   cores with one busy process, a 100-step MLP run took 5.2 s on 2 threads against 0.31 s on
 *   one. samx sets GOMP_SPINCOUNT=SAMX_SPINCOUNT (a few microseconds of spinning, then the
 *   thread sleeps), which keeps the quiet-machine speed and lets a waiting thread give its
 *   core away. OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user is kept, and
 *   SAMX_OMP_WAIT=keep keeps libgomp's default.
 *
 * Neither setting changes a result: kernels are chosen per core type for speed only (results
 * may differ in the last bits between kernel sets, which is why meta.json records the core),
 * and waiting never changes what is computed.
 */
#ifndef SAMX_TUNE_H
#define SAMX_TUNE_H

#include <stdbool.h>

#define SAMX_SPINCOUNT "1000"

/* Set the environment variables above that the user left to samx; true when any changed.
 * Idempotent: after a re-execution it returns false (SAMX_TUNED marks the tuned process). */
bool tune_env(void);
/* The wait policy in effect, for meta.json: e.g. "GOMP_SPINCOUNT=1000 (samx)",
 * "OMP_WAIT_POLICY=passive (user)", "libgomp default". */
const char *tune_wait_policy(void);

/* ---- The team ----
 *
 * Every pass is split into the same work_blocks() blocks (blas.h) whatever the threads: the
 * linear layers' weight-row blocks (convnet.h), the convolutions' example blocks, gemm_par's
 * row blocks and the optimizers' chunk owners, so the shapes alone decide the arithmetic. `-t
 * N` (threads_set, blas.h) caps the threads; how many run a parallel region is the team size,
 * team_size() <= N: each region runs with num_threads(team_size()) and hands the blocks to its
 * team round-robin (block b on thread b % team), so neither N nor the team size changes a bit.
 * That lets samx drop threads when the machine is busy without changing a result: when another
 * process holds a core, a region that waits at every barrier for a thread queued behind it runs
 * slower on N threads than on fewer.
 *
 * The controller: the training loop brackets each step with team_step_begin/end. Steps are
 * timed in windows of TEAM_WINDOW; the team size with the lower median step time wins. The
 * controller starts at N, and tries the next size down (N/2 rounded up, ..., 1) and back up
 * (doubling, capped at N) now and then: after every TEAM_PERIOD steps, doubled after each probe
 * that loses (up to TEAM_PERIOD_MAX, so probing costs under 1% on a quiet machine), and at once
 * when the current size's median gets TEAM_SLOWER times slower than it was (a load appeared).
 * SAMX_TEAM=K pins the team to K (clamped to 1..N); SAMX_TEAM=cycle makes it 1, 2, ..., N, 1,
 * ... from step to step: the tests use both to check that the team size, and changing it
 * between steps, leaves records and weights unchanged. SAMX_TEAM_TRACE=1 prints each probe's
 * verdict on stderr. OpenBLAS always runs single-threaded
 * (threads_set), so no BLAS result depends on the team either. */
#define TEAM_WINDOW 5
#define TEAM_PERIOD 64
#define TEAM_PERIOD_MAX 4096
#define TEAM_SLOWER 1.3

/* Called by threads_set: N threads, team N (or SAMX_TEAM), controller reset. */
void team_init(int n);
/* Threads that run the next parallel region: 1 <= team_size() <= threads_get(). */
int team_size(void);
/* Bracket one training step (outside parallel regions). */
void team_step_begin(void);
void team_step_end(void);
/* How the team is chosen, for meta.json: "adaptive" or "pinned K (SAMX_TEAM)". */
const char *team_policy(void);

#endif
