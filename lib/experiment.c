/* experiment.c: from a config file and overrides to a built experiment (data, model,
 * optimizer), every key checked, the resolved config and its run id computed. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "train.h"

/* Run id: the overrides as given, by their last key component ("optimizer.rho=0.1" ->
 * "rho=0.1"), joined by commas, or "default"; then '-' and 8 hex digits of the sha256 of the
 * resolved config. Characters that are awkward in file names become '_'. */
static void make_run_id(struct experiment *x, const struct run_opts *o)
{
    char ids[200] = "";
    size_t len = 0;
    for (int i = 0; i < o->n_overrides && len + 2 < sizeof ids; i++) {
        const char *a = o->overrides[i], *eq = strchr(a, '=');
        const char *k = a;
        for (const char *p = a; p < eq; p++)
            if (*p == '.')
                k = p + 1;
        if (len)
            ids[len++] = ',';
        for (const char *p = k; *p && len + 1 < sizeof ids; p++) {
            char ch = *p;
            ids[len++] = (isalnum((unsigned char)ch) || strchr("=.,-_+", ch)) ? ch : '_';
        }
        ids[len] = 0;
    }
    char sha[65];
    sha256_hex(x->resolved, strlen(x->resolved), sha);
    snprintf(x->run_id, sizeof x->run_id, "%s-%.8s", len ? ids : "default", sha);
}

static const char *const loss_names[] = {"cross_entropy", "mse", NULL};
static const char *const bn_update_names[] = {"first_pass", "all_passes", "reference", NULL};

/* A metric for train.keep_best / train.early_stop.metric (node n): a split's loss or accuracy
 * that the records of this run have; test-set metrics only with train.allow_test. Sets *max. */
static int selection_metric(const struct experiment *x, struct cfg_node *n, const char *key,
                            const char *v, bool allow_test, bool *max, struct err *e)
{
    static const char *const names[] = {"train_loss", "train_acc", "val_loss", "val_acc",
                                        "test_loss", "test_acc", NULL};
    int i = 0;
    while (names[i] && strcmp(names[i], v))
        i++;
    if (!names[i])
        return cfg_err(e, n, "'%s' must be one of train_loss, train_acc, val_loss, val_acc, "
                             "test_loss, test_acc; got '%s'", key, v);
    bool acc = i % 2 == 1;
    if (acc && x->data.train.n_classes == 0)
        return cfg_err(e, n, "'%s': '%s' needs a classification data set", key, v);
    if (i / 2 == 1 && x->data.val.n == 0)
        return cfg_err(e, n, "'%s': '%s' needs a validation split (set data.val_split)", key, v);
    if (i / 2 == 2 && x->data.test.n == 0)
        return cfg_err(e, n, "'%s': '%s' needs a test split", key, v);
    if (i / 2 == 2 && !allow_test)
        return cfg_err(e, n, "'%s': selecting on the test set ('%s') biases the test result; "
                             "use a val_* metric, or set train.allow_test: true", key, v);
    *max = acc;
    return 0;
}

/* train.keep_best, train.early_stop and train.allow_test, read only when one of the first two
 * is given (configs without them keep their run ids). */
static int build_selection(struct experiment *x, struct cfg_node *t, struct err *e)
{
    if (!cfg_child(t, "keep_best") && !cfg_child(t, "early_stop"))
        return 0;
    bool allow_test;
    if (cfg_bool(t, "allow_test", false, &allow_test, e) < 0)
        return -1;
    if (cfg_child(t, "keep_best") &&
        (cfg_str(t, "keep_best", NULL, &x->keep_best, e) < 0 ||
         (x->keep_best && selection_metric(x, cfg_child(t, "keep_best"), "train.keep_best",
                                           x->keep_best, allow_test, &x->keep_best_max, e) < 0)))
        return -1;
    if (cfg_child(t, "early_stop")) {
        struct cfg_node *c = cfg_map(t, "early_stop", e);
        if (!c || cfg_str(c, "metric", NULL, &x->early_stop.metric, e) < 0 ||
            cfg_int(c, "patience", 5, &x->early_stop.patience, e) < 0 ||
            cfg_num(c, "min_delta", 0, &x->early_stop.min_delta, e) < 0)
            return -1;
        if (!x->early_stop.metric)
            return cfg_err(e, c, "'train.early_stop' needs 'metric' (e.g. val_loss)");
        if (selection_metric(x, cfg_child(c, "metric"), "train.early_stop.metric",
                             x->early_stop.metric, allow_test, &x->early_stop.max, e) < 0)
            return -1;
        if (x->early_stop.patience < 1 || x->early_stop.patience > 1000000)
            return cfg_err(e, cfg_child(c, "patience"),
                           "'train.early_stop.patience' must be in [1, 1000000], got %ld",
                           x->early_stop.patience);
        if (!(x->early_stop.min_delta >= 0))
            return cfg_err(e, cfg_child(c, "min_delta"),
                           "'train.early_stop.min_delta' must be >= 0");
    }
    return 0;
}

static int build_train(struct experiment *x, struct cfg_node *t, struct err *e)
{
    bool classify = x->data.train.n_classes > 0;
    int loss;
    if (cfg_int(t, "epochs", 10, &x->epochs, e) < 0 ||
        cfg_int(t, "batch_size", 128, &x->batch_size, e) < 0 ||
        cfg_int(t, "eval_batch_size", 1000, &x->eval_batch_size, e) < 0 ||
        cfg_bool(t, "drop_last", false, &x->drop_last, e) < 0 ||
        cfg_enum(t, "loss", loss_names, classify ? LOSS_CROSS_ENTROPY : LOSS_MSE, &loss, e) < 0 ||
        cfg_num(t, "label_smoothing", 0, &x->label_smoothing, e) < 0)
        return -1;
    x->loss = (enum loss_kind)loss;
    /* train.l2, read when given, so the configs (and run ids) of runs without it are unchanged. */
    if (cfg_child(t, "l2")) {
        if (cfg_num(t, "l2", 0, &x->l2, e) < 0)
            return -1;
        if (!(x->l2 >= 0 && x->l2 <= 1e6))
            return cfg_err(e, cfg_child(t, "l2"), "'train.l2' must be in [0, 1e6], got %g",
                           x->l2);
    }
    if (x->epochs < 0 || x->epochs > 1000000)
        return cfg_err(e, cfg_child(t, "epochs"), "'train.epochs' must be in [0, 1000000], "
                                                  "got %ld", x->epochs);
    if (x->batch_size < 1 || x->batch_size > 65536)
        return cfg_err(e, cfg_child(t, "batch_size"), "'train.batch_size' must be in [1, 65536], "
                                                      "got %ld", x->batch_size);
    if (x->eval_batch_size < 1 || x->eval_batch_size > 65536)
        return cfg_err(e, cfg_child(t, "eval_batch_size"),
                       "'train.eval_batch_size' must be in [1, 65536], got %ld",
                       x->eval_batch_size);
    if (x->label_smoothing < 0 || x->label_smoothing >= 1)
        return cfg_err(e, cfg_child(t, "label_smoothing"),
                       "'train.label_smoothing' must be in [0, 1)");
    if (x->loss == LOSS_CROSS_ENTROPY && !classify)
        return cfg_err(e, cfg_child(t, "loss"), "'cross_entropy' needs a classification data set; "
                                                "this one is regression (use mse)");
    if (x->loss == LOSS_MSE && classify)
        return cfg_err(e, cfg_child(t, "loss"), "'mse' needs a regression data set; this one "
                                                "has class labels (use cross_entropy)");
    if (x->loss == LOSS_MSE && x->label_smoothing != 0)
        return cfg_err(e, cfg_child(t, "label_smoothing"), "label smoothing applies to "
                                                           "cross_entropy only");
    long n = x->data.train.n;
    SAMX_ASSERT(n > 0); /* data_init reports an empty training set, naming its file */
    x->batch_size_asked = x->batch_size;
    if (x->batch_size > n)
        x->batch_size = n; /* a batch larger than the data set is the whole data set */
    /* train.accumulate, read only when given, so configs without it keep their run ids. */
    x->accumulate = 1;
    if (cfg_child(t, "accumulate")) {
        if (cfg_int(t, "accumulate", 1, &x->accumulate, e) < 0)
            return -1;
        if (x->accumulate < 1 || x->accumulate > x->batch_size ||
            x->batch_size % x->accumulate != 0)
            return cfg_err(e, cfg_child(t, "accumulate"),
                           "'train.accumulate' (%ld) must divide train.batch_size (%ld%s)",
                           x->accumulate, x->batch_size,
                           x->batch_size == n ? ", the training set's size" : "");
    }
    x->steps_per_epoch = x->drop_last ? n / x->batch_size : (n + x->batch_size - 1) / x->batch_size;
    return build_selection(x, t, e);
}

/* An MPI job (dist.h) splits every model call of a step between its processes, one example
 * each at least: the batch (its micro-batches with train.accumulate, the last batch unless
 * drop_last) must not be smaller than the job. m-sharpness groups (optimizer.m) are dealt out
 * whole instead (optim.h optim_groups): a full batch must have a group for every process.
 * Calls on a method's own subsets (ESAM's selection) are checked when they happen. */
static int check_shards(const struct experiment *x, struct cfg_node *t, struct cfg_node *o,
                        struct err *e)
{
    long np = dist_size(), rows = x->batch_size / x->accumulate, n = x->data.train.n;
    long last = x->drop_last ? 0 : n % x->batch_size;
    if (rows < np || (x->accumulate == 1 && last > 0 && last < np))
        return cfg_err(e, cfg_child(t, "batch_size"),
                       "'train.batch_size' %ld%s gives model calls of %ld examples, fewer than "
                       "the %ld processes of the MPI job (each computes a share of every call)",
                       x->batch_size, x->accumulate > 1 ? " with train.accumulate" : "",
                       rows < np ? rows : last, np);
    long gm = x->optim.m, groups = gm > 0 ? (x->batch_size + gm - 1) / gm : 1;
    if (groups > 1 && groups < np)
        return cfg_err(e, cfg_child(o, "m"),
                       "'optimizer.m' %ld makes %ld perturbation groups of a batch of %ld, fewer "
                       "than the %ld processes of the MPI job (each process evaluates whole "
                       "groups: m at most %ld)",
                       gm, groups, x->batch_size, np, x->batch_size / np);
    /* Ghost BatchNorm groups stay within a process: every share of every split call starts at
     * a multiple of the group (a process's own m-sharpness groups are not split). */
    long calls[2] = {rows, x->accumulate == 1 ? last : 0};
    for (int i = 0; x->bn_group > 0 && i < 2; i++)
        for (int r = 0; calls[i] > 0 && r < np; r++) {
            int lo, hi;
            dist_shard_of((int)calls[i], r, &lo, &hi);
            if (lo % x->bn_group)
                return cfg_err(e, cfg_child(t, "bn_group"),
                               "'train.bn_group' %ld splits the model calls of %ld examples "
                               "across the %ld processes of the MPI job (process %d's share "
                               "starts at example %d): each process's share must be whole "
                               "groups",
                               x->bn_group, calls[i], np, r, lo);
        }
    return 0;
}

int experiment_build(struct experiment *x, const struct run_opts *o, struct err *e)
{
    memset(x, 0, sizeof *x);
    x->plan = o->plan;
    if ((o->config_text ? cfg_load_string(&x->cfg, o->config, o->config_text, e)
                        : cfg_load(&x->cfg, o->config, e)) < 0)
        return -1;
    for (int i = 0; i < o->n_overrides; i++)
        if (cfg_override(&x->cfg, o->overrides[i], e) < 0)
            return -1;
    struct cfg_node *root = x->cfg.root;
    /* The default name is the config file's stem: results/<stem>/... */
    const char *base = strrchr(o->config, '/');
    char stem[128];
    snprintf(stem, sizeof stem, "%s", base ? base + 1 : o->config);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem)
        *dot = 0;
    struct cfg_node *dn, *mn, *tn, *on;
    if (cfg_str(root, "name", stem, &x->name, e) < 0 || cfg_int(root, "seed", 0, &x->seed, e) < 0)
        return -1;
    if (!x->name[0] || strchr(x->name, '/') || !strcmp(x->name, ".") || !strcmp(x->name, ".."))
        return cfg_err(e, cfg_child(root, "name"), "'name' must be a plain directory name");
    if (!(dn = cfg_map(root, "data", e)) ||
        (x->plan ? data_plan(&x->data, dn, (uint64_t)x->seed, e)
                 : data_init(&x->data, dn, (uint64_t)x->seed, e)) < 0)
        return -1;
    if (!(tn = cfg_map(root, "train", e)) || build_train(x, tn, e) < 0)
        return -1;
    int n_out = x->data.train.n_classes > 0 ? x->data.train.n_classes : 1;
    /* The model's workspace holds one model call: a micro-batch with train.accumulate. */
    long step_rows = x->batch_size / x->accumulate;
    int max_batch = (int)(step_rows > x->eval_batch_size ? step_rows : x->eval_batch_size);
    int chw[3] = {x->data.train.channels, x->data.train.height, x->data.train.width};
    if (!(mn = cfg_map(root, "model", e)))
        return -1;
    if (x->plan) {
        if (model_plan(&x->model, mn, x->data.train.dim, chw[0] > 0 ? chw : NULL, n_out,
                       (uint64_t)x->seed, e) < 0)
            return -1;
    } else if ((x->data.train.channels > 0 /* image shape for convolutional models */
             ? model_init_image(&x->model, mn, x->data.train.channels, x->data.train.height,
                                x->data.train.width, n_out, max_batch, (uint64_t)x->seed, e)
             : model_init(&x->model, mn, x->data.train.dim, n_out, max_batch,
                          (uint64_t)x->seed, e)) < 0) {
        return -1;
    }
    /* train.bn_update, read when the model has running statistics (or the key is
     * given), so the resolved config of a BatchNorm model says what was done and the configs
     * (and run ids) of models without such state are unchanged. */
    if (x->model.buf.nt > 0 || cfg_child(tn, "bn_update")) {
        int bnu;
        if (cfg_enum(tn, "bn_update", bn_update_names, BN_UPDATE_FIRST_PASS, &bnu, e) < 0)
            return -1;
        x->bn_update = (enum bn_update)bnu;
    }
    /* train.bn_group (ghost BatchNorm), read only where given: runs without it keep their
     * resolved configs, and so their ids. */
    if (cfg_child(tn, "bn_group")) {
        if (cfg_int(tn, "bn_group", 0, &x->bn_group, e) < 0)
            return -1;
        if (x->bn_group < 0 || x->bn_group > 1000000)
            return cfg_err(e, cfg_child(tn, "bn_group"),
                           "'train.bn_group' must be in [0, 1000000] (examples per BatchNorm "
                           "statistics group; 0: the whole model call)");
        if (x->bn_group > 0 && (x->model.buf.nt == 0 || !x->model.ops->set_bn_group))
            return cfg_err(e, cfg_child(tn, "bn_group"),
                           "'train.bn_group': model '%s' has no BatchNorm", x->model.ops->name);
        if (x->bn_group > 0 && !x->plan)
            x->model.ops->set_bn_group(&x->model, (int)x->bn_group);
    }
    struct optim_env env = {
        .n = x->model.p.n,
        .p = &x->model.p,
        .clk = {.steps_per_epoch = x->steps_per_epoch, .epochs = (double)x->epochs},
        .max_batch = (int)x->batch_size,
        .seed = (uint64_t)x->seed,
        .plan = x->plan,
    };
    if (!(on = cfg_map(root, "optimizer", e)) || optim_init(&x->optim, on, &env, e) < 0)
        return -1;
    if (!x->plan && dist_size() > 1 && check_shards(x, tn, on, e) < 0)
        return -1;
    /* eval.* measurements, after data and model (they copy their probe sets) */
    if (measure_init(&x->measure, root, x, false, e) < 0)
        return -1;
    if (cfg_check_unused(&x->cfg, e) < 0)
        return -1;
    x->resolved = cfg_dump(&x->cfg);
    make_run_id(x, o);
    return 0;
}

void experiment_free(struct experiment *x)
{
    measure_free(&x->measure);
    optim_release(&x->optim);
    model_release(&x->model);
    data_free(&x->data);
    cfg_free(&x->cfg);
    free(x->resolved);
    memset(x, 0, sizeof *x);
}
