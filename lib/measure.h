/* measure.h: per-epoch loss-landscape measurements (the eval: mapping), algorithms.md 8-9.
 *
 * What is measured, each on a FIXED probe set (the first `examples` examples of `split` in the
 * order of the stream (seed, "eval.probe_set", split), chosen once at build time, no
 * augmentation), with the model in evaluation mode, on the training loss as configured (cross
 * entropy with the run's label smoothing, or MSE) WITHOUT weight decay, as PyHessian does:
 *   hessian_trace  Hutchinson, Rademacher probes, to a target relative standard error
 *                  (rel_err, two stages, unbiased; rel_err 0: a fixed number of probes, or
 *                  PyHessian's relative-change stopping rule with tol > 0); records estimate,
 *                  standard error, achieved relative error, probes used, the probe-set
 *                  gradient norm and a normalised trace (definition: `normalize`);
 *   hessian_density  eigenvalue density by stochastic Lanczos quadrature (PyHessian's), the
 *                  grid and density written as CSV under <run dir>/density/, with the nodes;
 *   lambda_max     power iteration (PyHessian), top-k by orthogonalising against the
 *                  eigenvectors already found (deflation by projection);
 *   sharpness      k-step projected normalized-gradient ascent in the rho ball (or the ASAM
 *                  ellipsoid), max over iterates, averaged over disjoint groups of m examples;
 *   landscape      1-D or 2-D loss slices along filter-normalised random directions, written as
 *                  CSV files under <run dir>/landscape/.
 * Hessian-vector products are exact (the model's hvp op, R-operator) or central finite
 * differences of the gradient with the step of measure_fd_step().
 *
 * Isolation contract: measurements draw random numbers only from their own streams
 * ("eval.probe_set", "eval.hutchinson", "eval.power", "eval.landscape",
 * "eval.density"), save the weights and
 * the gradient buffer before they start and restore both by copy, and never touch the training
 * closure, its counters, the optimizer or the data order. Switching any measurement on or off
 * therefore leaves every training record byte-identical (tests/test_measure.c checks it).
 * Their cost is recorded separately: measure_seconds, measure_grad_evals (gradients, an HVP
 * counted as two) and measure_loss_evals (forward-only passes), both in units of `batch_size`
 * examples like grad_evals.
 *
 * Everything is allocated by measure_init (build time). Reductions are taken in double in a
 * fixed order, so results are bitwise reproducible for any thread count.
 */
#ifndef SAMX_MEASURE_H
#define SAMX_MEASURE_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "model.h"
#include "rng.h"

struct dataset;
struct experiment;
struct record;

/* The loss a Hessian-vector product differentiates: sum_i scale * loss_i over a batch. */
struct hvp_loss {
    bool mse;             /* squared error (p - y)^2 (n_out == 1); else softmax cross entropy */
    float smoothing;      /* cross entropy's label smoothing (changes the gradient, not H) */
    const int32_t *label; /* (batch) class labels (cross entropy) */
    const float *y;       /* (batch) targets (mse) */
    double scale;         /* weight of each example's loss: 1/batch for the mean */
};

/* For each row i of out (batch, k): dout_i = scale * d loss_i / d out_i and
 * rdout_i = scale * (d^2 loss_i / d out_i^2) rout_i, the output end of the R-operator.
 * Cross entropy: p - t and (diag p - p p^T) r; mse: 2 (p - y) and 2 r. Computed in double. */
void hvp_loss_output(const struct hvp_loss *l, const float *out, const float *rout, int batch,
                     int k, float *dout, float *rdout);

enum hvp_kind { HVP_EXACT, HVP_FINITE_DIFFERENCE };
extern const char *const hvp_kind_names[]; /* "exact", "finite_difference", NULL */

/* A fixed set of examples and the loss measured on it. The calls work on the window
 * [lo, lo + count) of the set (probe_init: all of it) in model calls of at most `chunk`
 * examples, and leave m->p.w as they found it (restored by copy). */
struct probe {
    struct model *m;
    int n, dim, chunk;
    int lo, count;         /* the window the calls use */
    float *x;              /* (n, dim) */
    int32_t *label;        /* (n) or NULL */
    float *y;              /* (n) or NULL */
    bool mse;
    float smoothing;
    float *dout;           /* (chunk, n_out) */
    double *loss_ex;       /* (chunk) */
    uint8_t *hit;          /* (chunk) */
    float *w0, *gm;        /* (P) saved weights; the second gradient of a finite difference */
    /* cost counters, in examples: through a gradient (an HVP counts twice), forward only */
    double grad_examples, loss_examples;
};

/* Take the first n (clamped to ds->n) examples of ds in the order of the stream
 * (seed, "eval.probe_set", stream_counter): nested sets for growing n. */
void probe_init(struct probe *pr, struct model *m, const struct dataset *ds, int n,
                uint64_t seed, uint64_t stream_counter, bool mse, float smoothing);
void probe_free(struct probe *pr);
/* Mean loss over the window at m->p.w; *acc (may be NULL) the accuracy, NAN for mse. */
double probe_loss(struct probe *pr, double *acc);
/* Mean loss over the window, its gradient into g (P floats; may be m->p.g, which is
 * overwritten in any case). */
double probe_grad(struct probe *pr, float *g);
/* hv = H v, H the Hessian of the mean loss over the window at m->p.w. Finite differences
 * overwrite m->p.g. */
void probe_hvp(struct probe *pr, enum hvp_kind kind, const float *v, float *hv);
/* The central-difference step for direction v at weights w (P floats):
 *     h = cbrt(u) * max(1, ||w||) / ||v||,   u = 2^-24 (float32 unit round-off),
 * so the perturbation h v has norm u^(1/3) ||w|| (relative to the weights), which balances the
 * O(h^2) truncation error against the O(u/h) rounding error of float32 gradients: both are
 * O(u^(2/3)) ~ 1.5e-5 relative, times problem constants (third derivative, conditioning).
 * Observed ||Hv_fd - Hv_exact|| / ||Hv_exact||: 1-6 u^(2/3) on tiny tanh/gelu MLPs, 1.6 u^(2/3)
 * on the Fashion-MNIST MLP 784-512-512-10 with tanh or gelu. Not for ReLU: a kink inside the
 * step adds O(1/h) to the quotient (relative error ~2 on that MLP with relu), whereas the exact
 * HVP gives the Hessian almost everywhere, as PyTorch's double back-propagation does. */
double measure_fd_step(size_t n, const float *w, const float *v);

/* Hutchinson: up to max_probes Rademacher probes v from r, s_i = v^T H v; stop after probe i
 * when |mean_i - mean_(i-1)| / (|mean_(i-1)| + 1e-6) < tol (PyHessian; never after the first).
 * v, hv: P-float workspaces. stderr_ is the sample std (n-1) / sqrt(probes), NAN for one. */
struct trace_result {
    double trace, stderr_, rel_change;
    int probes;
    double rel_err; /* stderr_ / |trace| (NAN for one probe) */
    int pilot;      /* measure_trace_rel: the pilot probes (not in the estimate); else 0 */
};
void measure_trace(struct probe *pr, enum hvp_kind kind, int max_probes, double tol,
                   struct rng *r, float *v, float *hv, struct trace_result *res);
/* Hutchinson to a target relative standard error (eval.hessian_trace.rel_err, the default), in
 * two stages (Stein's procedure): `pilot` probes from r estimate the per-probe mean m and
 * standard deviation s; then N = ceil(s^2 / (rel_err^2 m^2)), clamped to
 * [pilot, max_probes - pilot], FRESH probes from r give trace, stderr_ (of those N) and rel_err.
 * N depends only on the pilot, which is independent of the N probes averaged, so the estimate is
 * unbiased for every N. PyHessian's relative-change rule (measure_trace with tol > 0) is not:
 * it stops on the path of the very mean it reports. res->probes = N, res->pilot = pilot;
 * the cost is pilot + N HVPs. Needs pilot >= 2 and max_probes >= 2 pilot. */
void measure_trace_rel(struct probe *pr, enum hvp_kind kind, double rel_err, int pilot,
                       int max_probes, struct rng *r, float *v, float *hv,
                       struct trace_result *res);

/* Stochastic Lanczos quadrature, one run (PyHessian's density): from a Rademacher start v
 * drawn from r (parameters only), normalised, `steps` Lanczos steps with full
 * reorthogonalisation (each new vector is orthogonalised twice against all earlier ones) build
 * the tridiagonal T (alpha, beta); its eigenvalues are the nodes theta_k and the squared first
 * components of its eigenvectors the weights w_k (summing to 1), so that
 * sum_k w_k f(theta_k) = q^T f(H) q (q = v / ||v||) for every polynomial f of degree < 2 steps,
 * and E over v of that is tr f(H) / P. The run ends early, with fewer nodes, when the Krylov
 * space is invariant (beta <= 1e-7 times the largest |alpha|, beta seen). q[0..steps): P-float
 * workspaces (the Lanczos basis); hv: a P-float workspace; work: MEASURE_SLQ_WORK(steps)
 * doubles; node, weight: `steps` doubles. Returns the number of nodes. */
#define MEASURE_SLQ_WORK(steps) ((size_t)(steps) * ((size_t)(steps) + 4))
int measure_slq(struct probe *pr, enum hvp_kind kind, int steps, struct rng *r, float *const *q,
                float *hv, double *work, double *node, double *weight);
/* The density of `runs` SLQ runs (run j: m[j] nodes at node[j * stride], weights likewise), as
 * PyHessian's density_generate: `bins` grid points evenly on [lo - overhead, hi + overhead],
 * lo and hi the smallest and largest node of all runs (PyHessian takes the means over runs of
 * each run's extremes, which cuts off the nodes outside when runs > 1); at each point the
 * mean over runs of sum_k w_k N(x; theta_k, var), var = sigma2 * max(1, width of the grid),
 * divided by its Riemann sum times the grid step (so it sums to 1 on the grid). */
void measure_density(int runs, const int *m, const double *node, const double *weight,
                     int stride, int bins, double sigma2, double overhead, double *grid,
                     double *dens);

/* Power iteration for the k eigenvalues of largest magnitude (PyHessian's eig): v ~ N(0, I)
 * from r, each iteration orthonormalises v against the eigenvectors already found, takes
 * lambda = v^T H v and v = Hv / (||Hv|| + 1e-6), and stops when the relative change of lambda is
 * below tol or after iters iterations. vec[0..k): P-float workspaces that end up holding the
 * eigenvectors; hv a P-float workspace. res[j].lambda is the latest Rayleigh quotient (PyHessian
 * returns the one before it; they differ by less than tol relative). */
struct eig_result {
    double lambda, rel_change;
    int iters;
};
void measure_eigs(struct probe *pr, enum hvp_kind kind, int k, int iters, double tol,
                  struct rng *r, float *const *vec, float *hv, struct eig_result *res);

/* k-step worst-case sharpness, algorithms.md 8.2-8.4. Per group of m consecutive probe
 * examples (m = 0: one group of all), from delta = 0, `steps` times:
 *     u += step * rho * T g / ||T g||,  u *= rho / ||u|| if ||u|| > rho,  delta = T u,
 * with g the gradient at w + delta, T = I (plain ball) or the ASAM scale (adaptive: the ball
 * ||delta / T|| <= rho is Euclidean in u), and S = max over iterates of L(w + delta) - L(w).
 * The first iterate is exactly SAM's (ASAM's) 1-step perturbation, so S >= step1. Results are
 * averaged over groups weighted by their size. delta, g, t, u: P-float workspaces. */
struct sharp_opts {
    double rho, step;
    int steps;
    long m;
    bool adaptive, scale_all; /* ASAM: T = |w| + eta on weights, 1 on biases; or |w| on all */
    double eta;
};
struct sharp_result {
    double sharpness, step1, loss; /* S_k, S_1 and L(w), group averages */
    int groups;
};
void measure_sharpness(struct probe *pr, const struct sharp_opts *o, float *delta, float *g,
                       float *t, float *u, struct sharp_result *res);

/* Filter normalisation (Li et al. 2018): d (P floats, random) is rescaled row by row so that
 * each row of each weight tensor (one output unit's incoming weights) has the norm of the same
 * row of w; bias tensors get 0 (bias_copy false) or a copy of the bias (true, Li et al.'s code
 * without --xignore biasbn). */
void measure_filter_normalize(const struct params *p, const float *w, float *d, bool bias_copy);

/* The eval: measurements of one run. */
struct measure_trace_cfg {
    bool on;
    long every, examples;
    int split, hvp, normalize;
    long probes, pilot;
    double tol, rel_err;
    struct probe pr;
};
struct measure_density_cfg {
    bool on;
    long every, examples;
    int split, hvp;
    long steps, runs, bins;
    double sigma2, overhead;
    struct probe pr;
    float **q;                  /* (steps) P-float Lanczos vectors */
    double *node, *weight;      /* (runs, steps) */
    double *work;               /* MEASURE_SLQ_WORK(steps) */
    int *m;                     /* (runs) nodes of each run */
    double *grid, *dens;        /* (bins) */
    char *csv;                  /* CSV text, csv_cap bytes */
    size_t csv_cap;
};
struct measure_lambda_cfg {
    bool on;
    long every, examples;
    int split, hvp;
    long iters, k;
    double tol;
    struct probe pr;
    float **vec;
};
struct measure_sharp_cfg {
    bool on;
    long every, examples;
    int split;
    struct sharp_opts o;
    struct probe pr;
};
struct measure_landscape_cfg {
    bool on;
    long every, examples;
    int split;
    long dims, points;
    double range;
    bool bias_copy;
    struct probe pr;
};
struct measure {
    bool any;
    uint64_t seed;
    long batch_size;            /* the unit of the cost counters */
    struct measure_trace_cfg trace;
    struct measure_lambda_cfg lambda;
    struct measure_sharp_cfg sharp;
    struct measure_landscape_cfg land;
    struct measure_density_cfg density;
    float *w_save, *g_save;     /* the training state, restored by copy after measuring */
    float *ws[4];               /* P-float workspaces */
    char *csv;                  /* landscape CSV text, csv_cap bytes */
    size_t csv_cap;
};

/* Read the eval: mapping of the run's config (root: the config's root mapping). Absent eval:
 * every measurement off and nothing is written into the resolved config. Each measurement is on
 * when its key is present (`hessian_trace: {}` takes every default) and `every` > 0; its
 * defaults are written by the getters. Call after data and model are built, before
 * cfg_check_unused. force_landscape turns landscape on even when absent (measure_landscape_run).
 * Config errors have status 2. */
int measure_init(struct measure *ms, struct cfg_node *root, struct experiment *x,
                 bool force_landscape, struct err *e);
void measure_free(struct measure *ms);

/* The measurements due at `epoch` (epoch % every == 0, epoch 0 included): add their keys and
 * the cost keys to r; landscape CSV files go to <dir>/landscape/epoch_<epoch>.csv. Adds nothing
 * when none is due. Weights and gradient buffer are restored exactly. -1 with e set when a CSV
 * file cannot be written. dir NULL (a rank > 0 of an MPI job, dist.h): no files, and no
 * landscape slice, which only goes to a file. */
int measure_epoch(struct measure *ms, struct experiment *x, long epoch, const char *dir,
                  struct record *r, struct err *e);

/* `samx landscape RUN_DIR [KEY=VALUE ...]`: rebuild the run from RUN_DIR/config.yaml with the
 * overrides (e.g. "eval.landscape.points=41"), load RUN_DIR/model.safetensors and write the
 * landscape slice (eval.landscape settings, defaults if absent) to RUN_DIR/landscape/final.csv.
 * Returns 0, or -1 with e set (status 2 for config errors, 1 otherwise). */
int measure_landscape_run(const char *run_dir, const char *const *overrides, int n_overrides,
                          struct err *e);

#endif
