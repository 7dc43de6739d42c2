/* model.h: the model plugin interface and registry.
 *
 * A model maps a batch of inputs x (batch, n_in) to outputs m->out (batch, n_out) and
 * back-propagates d(loss)/d(out) into the flat gradient m->p.g. It does not compute the loss:
 * the training closure does (loss.c). All workspace is sized for max_batch in init() and
 * allocated once; forward/backward never allocate.
 *
 * Pass modes say what a forward pass may do to running statistics (BatchNorm): the first pass
 * of an optimizer step updates them, later passes of the same step use batch statistics but
 * leave the running averages alone, evaluation uses the running averages. Models without such
 * state ignore the mode.
 *
 * Adding a model:
 *   1. write lib/model/<name>.c: a comment block (architecture, keys with defaults), a builder
 *      of the layer graph (convnet.h; every model here is one, so forward, backward and the
 *      exact HVP come with it), then `const struct model_ops model_<name> = {...};`
 *   2. add `&model_<name>` to model_registry in model.c and the file to lib/meson.build;
 *   3. add a small configuration to `cases` in tests/test_model.c, which runs the gradient
 *      and Hessian-vector checks on every registered model (one without a case fails it).
 */
#ifndef SAMX_MODEL_H
#define SAMX_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "params.h"

enum pass_mode {
    PASS_TRAIN_UPDATE, /* batch statistics; running statistics updated */
    PASS_TRAIN_FROZEN, /* batch statistics; running statistics left unchanged */
    PASS_EVAL,         /* running statistics */
};

struct model;
struct hvp_loss; /* measure.h */

/* Data parallelism (dist.h): a forward/backward on rows [row0, row0 + batch) of a batch of
 * `rows` rows that several processes share, one shard each. BatchNorm in training mode takes
 * the statistics of all `rows` (sum() replaces n per-channel doubles with their sum over the
 * processes, the same on each), and dropout draws the masks of the batch's rows, so the shards
 * together compute what one process computes on the whole batch. */
struct model_shard {
    void (*sum)(double *x, size_t n);
    int rows, row0;
};

/* Data parallelism over m-sharpness groups (optim.h optim_groups): each process evaluates its
 * own groups whole, so each updates the running statistics (BatchNorm) with its groups only.
 * While m->runlog is set, a pass that would update them writes each update (the statistics it
 * would apply) into a log instead, at the j-th slot of group `group` for its j-th update in that
 * group; ops->runlog_apply then sums the log over the processes (the other processes' slots are
 * zeros here) and applies the updates in slot order: group by group, as one process applies
 * them, the same bits on every process. */
struct model_runlog {
    int group;
};

struct model_ops {
    const char *name;
    const char *summary; /* one line for `samx list models` */
    const char *keys;    /* "key [default]: meaning" lines */
    /* Read the model's keys from c (the model: mapping), declare tensors with params_add, and
     * allocate priv and the workspace for m->max_batch examples. m->n_in, m->n_out and
     * m->max_batch are set before the call. */
    int (*init)(struct model *m, struct cfg_node *c, struct err *e);
    /* Initialise the weights as PyTorch's default does for the equivalent modules. */
    void (*reset)(struct model *m, uint64_t seed);
    /* x (batch, n_in) -> m->out (batch, n_out); batch <= max_batch. */
    void (*forward)(struct model *m, const float *x, int batch, enum pass_mode mode);
    /* After forward on the same x: dout (batch, n_out) -> d(loss)/dw into m->p.g, added to
     * what is there when acc, else overwriting every tensor's view (the graph's linear layers
     * write theirs once with no zeroing pass, convnet.h; the alignment padding between views
     * stays zero). */
    void (*backward)(struct model *m, const float *x, const float *dout, int batch, bool acc);
    /* Optional (NULL: measurements fall back to finite differences of the gradient). Exact
     * Hessian-vector product of the loss `l` (struct hvp_loss, measure.h: the loss kind, the
     * targets of these `batch` examples and the per-example weight l->scale, 1/batch for the
     * mean) at the current weights, in evaluation mode: ADDS l->scale * sum_i H_i v into hv
     * (n floats; v is n floats, laid out like p.w). Overwrites m->out and the forward
     * workspace; leaves m->p.w and m->p.g untouched. Costs about two gradient evaluations. */
    void (*hvp)(struct model *m, const float *x, int batch, const struct hvp_loss *l,
                const float *v, float *hv);
    /* Optional: allocate the workspace of hvp (model_hvp_reserve, at build time, before the
     * first hvp call). NULL when init allocates it. */
    void (*hvp_reserve)(struct model *m);
    void (*release)(struct model *m);
    /* Optional (NULL: no BatchNorm to group). Ghost BatchNorm (train.bn_group): in training
     * mode every BatchNorm takes its statistics over groups of k consecutive examples of each
     * model call (the last group of a call may be smaller; in a job of several processes the
     * rows are numbered from shard->row0, which must be a multiple of k) and updates its
     * running statistics once per group, in group order; 0: over the whole call. Build time
     * (allocates per-group statistics for max_batch examples). */
    void (*set_bn_group)(struct model *m, int k);
    /* Optional (NULL: no running statistics). Allocate the log of struct model_runlog for
     * `groups` groups of at most `per_group` updates each (build time); returns its size in
     * doubles, the size of the sums runlog_apply asks of `sum`. */
    size_t (*runlog_reserve)(struct model *m, int groups, int per_group);
    /* sum the log over the processes (sum: x := the sum over processes of x, the same bits on
     * each), apply its updates in slot order, and clear it. */
    void (*runlog_apply)(struct model *m, void (*sum)(double *x, size_t n));
};

struct model {
    const struct model_ops *ops;
    struct params p;
    int n_in, n_out, max_batch;
    float *out;  /* (max_batch, n_out), owned by the plugin */
    void *priv;
    /* Convolutional models. The image shape of the input, NCHW with
     * n_in == in_c * in_h * in_w, or all 0 for tabular inputs; set before ops->init. */
    int in_c, in_h, in_w;
    /* Model state that is not trained but saved with the weights: BatchNorm running statistics,
     * named as PyTorch buffers ("bn1.running_mean"). Declared in init with params_add, allocated
     * by model_init when non-empty; buf.g is unused. Written to model.safetensors and
     * checkpoint.safetensors after the weights, read back by init_from and on resume. */
    struct params buf;
    uint64_t seed;  /* the run's seed: dropout masks come from (seed, "dropout", step) */
    bool plan;      /* built by model_plan: init may leave its workspace unallocated */
    long step;      /* the optimizer step being computed, set by the training loop */
    const struct model_shard *shard; /* NULL: this process has the whole batch (dist.h) */
    const struct model_runlog *runlog; /* NULL: running statistics are updated in place */
};

extern const struct model_ops model_linear, model_mlp;
extern const struct model_ops model_cnn, model_resnet, model_wrn; /* convnets */
extern const struct model_ops *const model_registry[]; /* NULL-terminated */
const struct model_ops *model_find(const char *name);

/* Read model.name, build the model for inputs of n_in features and n_out outputs, allocate its
 * parameters, and initialise them: from model.init_from (a safetensors file, names and shapes
 * must match exactly) or by ops->reset with the "init" stream of seed. */
int model_init(struct model *m, struct cfg_node *c, int n_in, int n_out, int max_batch,
               uint64_t seed, struct err *e);
/* model_init for image inputs (channels, height, width; n_in = their product), which
 * convolutional models need; tabular models accept it too. */
int model_init_image(struct model *m, struct cfg_node *c, int channels, int height, int width,
                     int n_out, int max_batch, uint64_t seed, struct err *e);
/* Planning (samx check, sweep --dry-run): the keys, defaults, config errors and tensor layout
 * (m->p.n, m->p.t) of model_init (chw NULL) or model_init_image (chw the image shape), with a
 * workspace for one example and no weights (m->p.w NULL); model.init_from is checked from its
 * safetensors header (names, dtypes, shapes, file size), not read. */
int model_plan(struct model *m, struct cfg_node *c, int n_in, const int *chw, int n_out,
               uint64_t seed, struct err *e);
/* Prepare m for ops->hvp calls (allocates its workspace when the model keeps it separate);
 * idempotent, a no-op for a planned model. Whoever calls hvp calls this once at build time. */
void model_hvp_reserve(struct model *m);
void model_release(struct model *m);

#endif
