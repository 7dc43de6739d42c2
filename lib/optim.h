/* optim.h: optimizers, the gradient closure, and the shared SAM-family machinery.
 *
 * The optimizer drives. Each training step the trainer calls optim_step(), and the optimizer
 * calls the gradient closure as many times as its method needs (SGD once, SAM twice, CR-SAM three
 * times), always on the same batch, then updates the weights. A SAM-family method ("wrapper")
 * owns a base optimizer (sgd or adamw) and hands it the direction to step along; the base's
 * apply() updates w in place at the current, unperturbed weights.
 *
 * Invariants:
 *   - all state is flat: weights p->w, gradient p->g and every optimizer buffer are n floats;
 *     buffers are allocated in init (optim_buf), never in step, and are checkpointed by name;
 *   - a wrapper saves w before perturbing and restores it with a copy (vec_copy), never by
 *     subtracting the perturbation, so w after the step is exactly base_apply(saved w, d);
 *   - every scalar hyperparameter is a schedule (struct hparam); optim_begin_step() evaluates
 *     them for step t before the step, and they are reported in every epoch record;
 *   - norms and dot products are taken in double with deterministic reductions (blas.h).
 *
 * Adding an optimizer:
 *   1. write lib/optim/<name>.c: a comment block (paper, algorithm in a few lines, keys with
 *      defaults), then `const struct optim_ops optim_<name> = {...};`
 *   2. add `&optim_<name>` to optim_registry in optim.c and the file to lib/meson.build;
 *   3. add its closed-form step test and reduction identity to tests/test_optim.c; the
 *      registry-driven tests (decreases a quadratic, counts passes, rejects unknown keys) run on
 *      it automatically; add configs/<name>.yaml.
 */
#ifndef SAMX_OPTIM_H
#define SAMX_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "params.h"
#include "schedule.h"

/* Pass flags for the closure: the clean evaluation at w is PASS_FIRST (once per step, or once
 * per group of m examples with m-sharpness, so that the groups' clean passes together cover the
 * batch exactly once); later ones are PASS_EXTRA. A model with running statistics (BatchNorm)
 * updates them on PASS_FIRST only, unless the run asks otherwise (train.bn_update);
 * PASS_REF_UPDATE marks an extra pass on which a method's reference code also updated them
 * (CR-SAM's pass at w - e). */
enum {
    PASS_FIRST = 0,
    PASS_EXTRA = 1,
    PASS_REF_UPDATE = 2,
    /* Or-ed into one of the above: the call is on an m-sharpness group that this process owns
     * whole (struct closure's procs): it runs here alone, unsplit and with nothing summed over
     * the processes until closure_combine. */
    PASS_LOCAL = 4,
};

struct optim;

/* The gradient closure: evaluates the loss of the CURRENT batch at p->w. */
struct closure {
    /* Overwrite p->g with the gradient of the mean loss over examples sel[0..n) of the batch
     * (sel == NULL: all `batch` examples, n ignored) and return that mean loss. */
    double (*grad)(struct closure *f, struct params *p, int pass, const int *sel, int n);
    /* Forward only: per-example losses of sel[0..n) (NULL: all) into out. */
    void (*losses)(struct closure *f, const struct params *p, int pass, const int *sel, int n,
                   float *out);
    /* After a step's PASS_LOCAL calls: replace each of v[0..nv) (n floats) and d[0..nd)
     * with its sum over the processes, in process order, the same bits on every process, and
     * complete what those calls left local (the clean-pass loss and accuracy sums, evals, the
     * model's running statistics). NULL on a single process. */
    void (*combine)(struct closure *f, float *const *v, int nv, size_t n, double *d, int nd);
    int batch;     /* examples in the current batch */
    double evals;  /* gradient evaluations so far, in units of full batches (a call on k of the
                      batch's examples adds k/batch); updated by closure_grad */
    double evals_local; /* the evaluations of PASS_LOCAL calls, until closure_combine */
    /* Data parallelism (dist.h): the processes sharing every step (0 or 1: a single process)
     * and which one this is. With several, a step of several m-sharpness groups deals them out
     * (optim_groups) and each process evaluates its own groups whole; otherwise every call is
     * split between the processes inside the closure and returns the whole batch's result. */
    int procs, proc;
    int group;     /* the m-sharpness group of the current PASS_LOCAL calls (optim_groups) */
    void *ctx;
};

/* Call f->grad and count the evaluation. */
double closure_grad(struct closure *f, struct params *p, int pass, const int *sel, int n);

/* The m-sharpness groups of a step: consecutive groups of m examples of the batch (the last
 * may be smaller), n of them. On a single process, or with one group, this process evaluates
 * all of them (lo = 0, hi = n, local false). With several processes and several groups the
 * groups are dealt out whole, contiguous ranges in process order, the first n % procs
 * processes taking one group more (dist_shard_of's rule on groups): this process evaluates
 * groups [lo, hi) with PASS_LOCAL calls (setting f->group to each before its calls), adds their
 * weighted results into its accumulators (zeros when it has none) and calls closure_combine
 * once, so the step needs no communication for the ascent and the groups' sum equals one
 * process's up to the order of the sums over processes. */
struct optim_groups {
    int m, n, lo, hi;
    bool local;
};
void optim_groups(const struct optim *o, const struct closure *f, struct optim_groups *g);
/* f->combine (see there) where the groups were local; nothing otherwise. */
void closure_combine(struct closure *f, const struct optim_groups *g, float *const *v, int nv,
                     size_t n, double *d, int nd);

/* A scheduled scalar hyperparameter; `v` is its value for the current step. Adaptive ones (set by
 * the method itself, like SAMAR's lambda) have adaptive = true and keep v across steps. */
struct hparam {
    const char *name;
    struct sched s;
    double v;
    bool adaptive;
};

#define OPTIM_MAX_HP 16
#define OPTIM_MAX_BUF 8
#define OPTIM_MAX_STATE 8

/* What a step reports for the epoch record. */
struct step_info {
    double loss;           /* clean mean loss at w (first pass) */
    double loss_perturbed; /* mean loss at the perturbed weights, or NAN (no perturbed pass) */
    double grad_norm;      /* ||g|| of the clean gradient */
};

/* Everything a run tells its optimizer at build time. */
struct optim_env {
    size_t n;                     /* parameters */
    const struct params *p;       /* tensor layout (ASAM, per-tensor methods); not the values */
    struct sched_clock clk;       /* time base for schedules */
    int max_batch;
    uint64_t seed;                /* for methods that draw random numbers (stream "optim.*") */
    bool plan;                    /* only checking the config: optim_buf/optim_scratch give NULL */
};

struct optim_ops {
    const char *name;
    const char *summary;  /* one line */
    const char *paper;    /* reference, e.g. "Foret et al., ICLR 2021, arXiv:2010.01412" */
    const char *keys;     /* "key [default]: meaning" lines for `samx list optimizers` */
    bool wrapper;         /* SAM-family: has base: and m: */
    bool no_clean_pass;   /* wrappers that evaluate only at a perturbed point (msam): the step's
                             loss is the perturbed one, and there is no train_loss_perturbed or
                             sharpness_1step to record */
    /* Read keys (optim_hparam, cfg getters), allocate buffers (optim_buf) and state. */
    int (*init)(struct optim *o, struct cfg_node *c, struct err *e);
    /* One step on the closure's batch. NULL for base optimizers: optim_step evaluates once and
     * calls apply(p->g). */
    void (*step)(struct optim *o, struct params *p, struct closure *f, struct step_info *info);
    /* Base optimizers: update p->w along direction d (n floats) at the current hyperparameter
     * values; d may be p->g and may be read after w changes only where the method says so. */
    void (*apply)(struct optim *o, struct params *p, const float *d);
    /* Optional: apply(d), returning ||d||_2 as vec_nrm2 computes it (the same bits), summed in
     * the same pass over d. optim_step uses it for the gradient norm it records. */
    double (*apply_norm)(struct optim *o, struct params *p, const float *d);
    void (*release)(struct optim *o); /* frees priv extras; may be NULL */
};

struct optim {
    const struct optim_ops *ops;
    struct optim *base;               /* wrappers: the base optimizer; NULL for bases */
    struct optim_env env;
    long m;                           /* wrappers: examples per perturbation group, 0 = batch */
    struct hparam hp[OPTIM_MAX_HP];
    int n_hp;
    float *buf[OPTIM_MAX_BUF];        /* n floats each, checkpointed */
    const char *buf_name[OPTIM_MAX_BUF];
    int n_buf;
    float *scratch[OPTIM_MAX_BUF];    /* n floats each, not state: not checkpointed */
    int n_scratch;
    int *ramp;                        /* wrappers: 0, 1, ..., max_batch-1 (group selections) */
    double *state[OPTIM_MAX_STATE];   /* scalar state, checkpointed (points into priv) */
    const char *state_name[OPTIM_MAX_STATE];
    double state_lo[OPTIM_MAX_STATE], state_hi[OPTIM_MAX_STATE]; /* its valid range */
    bool state_int[OPTIM_MAX_STATE];  /* integral (a count or a 0/1 flag) */
    int n_state;
    long t;                           /* step index of the current / next step */
    unsigned char *psel;              /* wrappers: per tensor, 1 when optimizer.perturb selects it
                                         for the perturbation; NULL = every tensor */
    float *pe;                        /* wrappers with psel: n floats, the filtered perturbation */
    void *priv;
};

extern const struct optim_ops optim_sgd, optim_adamw, optim_sam, optim_asam, optim_wsam,
    optim_crsam, optim_samar, optim_gsam, optim_vasso, optim_looksam, optim_esam, optim_fsam,
    optim_msam, optim_gam, optim_lookbehind, optim_fishersam, optim_rsam;
extern const struct optim_ops *const optim_registry[]; /* NULL-terminated */
const struct optim_ops *optim_find(const char *name);

/* Build an optimizer from the optimizer: mapping: read name, build the base (wrappers), read m
 * and perturb (wrappers), call init. `perturb: all | norm | no_norm` (SAM-ON, Mueller et al.,
 * NeurIPS 2023, arXiv:2306.04226) restricts every perturbation of a SAM-family method to the
 * normalization-layer tensors (tensor.is_norm) or to the others: the perturbation and its norm
 * are taken over the selected tensors only; the descent direction is unchanged. The key is read
 * (and written to the resolved config) when it is given, so earlier configs keep their run ids;
 * a filter that selects no tensor is a config error. */
int optim_init(struct optim *o, struct cfg_node *c, const struct optim_env *env, struct err *e);
void optim_release(struct optim *o);

/* Evaluate every hyperparameter (this optimizer's and its base's) for step t. */
void optim_begin_step(struct optim *o, long t);
/* One step: ops->step, or for a base optimizer one evaluation and apply(p->g). */
void optim_step(struct optim *o, struct params *p, struct closure *f, struct step_info *info);

/* For plugins, in init: */
/* Declare a scheduled hyperparameter read from c[key] with default def, valid in [lo, hi];
 * returns a pointer to its struct (stable until release). */
struct hparam *optim_hparam(struct optim *o, struct cfg_node *c, const char *key, double def,
                            double lo, double hi, struct err *e);
/* An adaptive hyperparameter the method sets itself (reported, checkpointed), initial value v. */
struct hparam *optim_adaptive(struct optim *o, const char *name, double v);
/* A zeroed, checkpointed buffer of n floats (state that carries across steps). */
float *optim_buf(struct optim *o, const char *name);
/* A zeroed buffer of n floats for use within one step (not checkpointed). */
float *optim_scratch(struct optim *o);
/* Register a double in priv as checkpointed scalar state, valid when finite, in [lo, hi] and,
 * with integral, an integer: a checkpoint holding anything else is refused as damaged. */
void optim_state(struct optim *o, const char *name, double *v, double lo, double hi,
                 bool integral);
/* Visit every hyperparameter of o and its base (wrapper's first), e.g. to report them. */
void optim_each_hparam(const struct optim *o, void (*fn)(void *ctx, const struct hparam *h),
                       void *ctx);

/* Shared SAM-family helpers, for wrappers. */

/* Perturbation rule: given the group's clean gradient g (n floats) and its norm gnorm, either
 * write e (n floats) and return PERTURB_IN_E, or return a scale s meaning e = s * g elementwise,
 * without writing e (SAM's ascent: no buffer and no pass over the weights to form it). s >= 0,
 * or NaN when the gradient is not finite (the step then diverges, as it would with e formed). */
#define PERTURB_IN_E (-1.0f)
typedef float (*perturb_fn)(struct optim *o, const struct params *p, const float *g,
                            double gnorm, float *e);

/* The common SAM-family evaluation. For each perturbation group (the whole batch when o->m == 0,
 * else consecutive groups of m examples): evaluate g_c at w (PASS_FIRST for every group),
 * form e_c = perturb(g_c), and for each k < n_signs evaluate the gradient at w + sign[k] * e_c,
 * each point formed from the saved w (w is copied back, never un-perturbed by subtraction).
 * Returns the batch-weighted averages: g (n floats) of the clean gradients and gs[k] of the
 * gradients at the perturbed points; losses in info (loss_perturbed is the loss at sign[0]) and
 * ||g|| in info->grad_norm. `saved` (n floats) holds w meanwhile and `e` (n floats) is scratch,
 * written only when perturb writes it or (several groups and signs) to hold a scaled e; a
 * method whose perturbation is a scale with one sign may pass e = NULL. Saving w
 * and stepping to the first point, and stepping from the saved w to the next point, are one pass
 * each. pass_of[k] gives the pass flag of each perturbed evaluation.
 * With optimizer.perturb filtering, a scale s applies to the filtered g (formed in o->pe) and
 * perturb receives the norm of the filtered g; a method that writes e filters it itself
 * (optim_perturb_filter) and takes its norm over the selected tensors.
 * With a single group (o->m == 0 or >= the batch) a method that needs neither copy may pass
 * g = NULL (only ||g|| is reported) and gs[n_signs-1] = p->g (the gradient stays in place).
 * Over several processes the groups are dealt out (optim_groups): g, gs and the losses are
 * this process's groups' sums until one closure_combine at the end makes them the batch's. */
#define SAM_MAX_SIGNS 2 /* n_signs of sam_family_passes: at most CR-SAM's two points */
void sam_family_passes(struct optim *o, struct params *p, struct closure *f, perturb_fn perturb,
                       const float *signs, const int *pass_of, int n_signs, float *g,
                       float *const *gs, float *saved, float *e, struct step_info *info);

/* True when a step on `batch` examples is a single perturbation group (m == 0 or m >= batch):
 * wrappers may then pass g = NULL and gs[last] = p->g to sam_family_passes. With batch =
 * o->env.max_batch at init, whether a run can ever need the group buffers. */
bool optim_one_group(const struct optim *o, int batch);
/* SAM's normalized ascent as a scale of g: rho / (gnorm + eps), 0 when gnorm or rho is 0, NaN
 * when gnorm is NaN. */
float sam_scale(double gnorm, double rho, double eps);
/* e = rho * g / (||g|| + 1e-12) (SAM's normalized ascent); e = 0 when ||g|| == 0. Returns ||g||.*/
double sam_ascent(size_t n, const float *g, double rho, float *e);
/* sam_ascent with the denominator term eps instead of 1e-12, for methods whose reference code
 * uses another one (VaSSO and ESAM 1e-7, LookSAM 1e-8). With eps = 1e-12 it is bitwise
 * sam_ascent. Returns ||g||. */
double sam_ascent_eps(size_t n, const float *g, double rho, double eps, float *e);

/* Zero x (n floats) on the tensors optimizer.perturb leaves out; nothing without a filter. */
void optim_perturb_filter(const struct optim *o, const struct params *p, float *x);
/* The ascent of SAM and its adaptive form, over the tensors optimizer.perturb selects:
 *     e = rho t^2 g / (||t g|| + eps) on selected tensors, 0 elsewhere, t = |w| when adaptive
 *     (davda54's and GSAM's adaptive=True), else 1.
 * Without adaptive and without a filter it is sam_ascent_eps bit for bit. e = 0 when ||t g|| or
 * rho is 0. Returns ||t g|| over the selected tensors. */
double optim_ascent(const struct optim *o, const struct params *p, const float *g, double rho,
                    double eps, bool adaptive, float *e);

/* The hyperparameter of o itself (not of its base) named `name`, or NULL. Wrappers use it to
 * read the base's learning rate: o->base's "lr" (WSAM's decoupled step, GSAM's rho_t). */
struct hparam *optim_hparam_find(struct optim *o, const char *name);

#endif
