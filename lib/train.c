/* train.c: the gradient closure, evaluation, and the epoch loop. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "blas.h"
#include "io.h"
#include "nn.h"
#include "rng.h"
#include "rundir.h"
#include "safetensors.h"

/* Sums over the steps of an epoch, reduced to the record's values. */
struct epoch_acc {
    double train_loss, train_acc, loss_perturbed, sharpness, grad_norm;
    bool trained; /* an epoch of steps, not the epoch-0 measurement */
};

/* The closure's context: the current batch, gathered once per step, and workspaces. */
struct batch_ctx {
    struct experiment *x;
    const struct dataset *ds;
    int *order;        /* (n) this epoch's example order */
    int *idx;          /* (max_batch) example indices of the current batch */
    float *xb, *xs;    /* (max_batch, dim) batch inputs; a selection of them */
    int32_t *lb, *ls;  /* (max_batch) labels; of the selection */
    float *yb, *ys;    /* (max_batch) regression targets */
    float *dout;       /* (max_batch, n_out) */
    double *loss_ex;   /* (max_batch) */
    uint8_t *hit;      /* (max_batch) */
    int micro;         /* train.accumulate: rows per micro-batch; 0: no accumulation */
    /* clean-pass accumulators for the epoch record */
    double sum_loss, sum_hit, count;
};

/* Forward (and backward when grad, adding to p->g when acc) on rows [0, n) of (xin, lab, tgt),
 * each example's loss weighted by scale in the gradient; returns the loss SUM. */
static double forward_loss_scaled(struct batch_ctx *b, struct params *p, const float *xin,
                                  const int32_t *lab, const float *tgt, int n, float scale,
                                  enum pass_mode mode, bool grad, bool acc, double *hits)
{
    struct experiment *x = b->x;
    struct model *m = &x->model;
    SAMX_ASSERT(p == &m->p);
    m->ops->forward(m, xin, n, mode);
    double sum;
    if (x->loss == LOSS_CROSS_ENTROPY) {
        sum = xent_forward_backward(grad ? b->dout : NULL, b->loss_ex, b->hit, m->out, lab, n,
                                    m->n_out, (float)x->label_smoothing, scale);
        if (hits) {
            double h = 0;
            for (int i = 0; i < n; i++)
                h += b->hit[i];
            *hits = h;
        }
    } else {
        sum = mse_forward_backward(grad ? b->dout : NULL, b->loss_ex, m->out, tgt, n, scale);
        if (hits)
            *hits = 0;
    }
    if (grad)
        m->ops->backward(m, xin, b->dout, n, acc);
    return sum;
}

/* forward_loss_scaled for the mean over rows [0, n), overwriting p->g. */
static double forward_loss(struct batch_ctx *b, struct params *p, const float *xin,
                           const int32_t *lab, const float *tgt, int n, enum pass_mode mode,
                           bool grad, double *hits)
{
    return forward_loss_scaled(b, p, xin, lab, tgt, n, 1.0f / (float)n, mode, grad, false, hits);
}

/* train.accumulate (gradient accumulation): the rows [0, n) of a closure call in micro-batches
 * of at most b->micro rows, one after the other, so the model's activations are those of one
 * micro-batch. Each micro-batch's examples are weighted 1/n and the backward passes add into
 * p->g, so p->g ends as the gradient of the mean loss over all n rows: the gradient of the
 * unaccumulated call, up to the order of summation. BatchNorm sees each micro-batch's own
 * statistics (and a pass that updates running statistics updates them once per micro-batch);
 * dropout masks come from (seed, "dropout", step * k + j) for micro-batch j of a call (every
 * call goes through here when k > 1, so the addresses never collide across steps), the same in
 * every pass of a step. Returns the loss sum, hits summed into *hits. */
static double micro_batches(struct batch_ctx *b, struct params *p, const float *xin,
                            const int32_t *lab, const float *tgt, int n, enum pass_mode mode,
                            bool grad, double *hits, float *losses)
{
    struct experiment *x = b->x;
    int dim = b->ds->dim, micro = b->micro > 0 ? b->micro : n;
    long step = x->model.step;
    double sum = 0, h = 0;
    for (int lo = 0, j = 0; lo < n; lo += micro, j++) {
        int nb = lo + micro <= n ? micro : n - lo;
        double hj;
        if (b->micro > 0)
            x->model.step = step * x->accumulate + j;
        sum += forward_loss_scaled(b, p, xin + (size_t)lo * dim, lab ? lab + lo : NULL,
                                   tgt ? tgt + lo : NULL, nb, 1.0f / (float)n, mode, grad,
                                   lo > 0, &hj);
        h += hj;
        if (losses)
            for (int i = 0; i < nb; i++)
                losses[lo + i] = (float)b->loss_ex[i];
    }
    x->model.step = step;
    if (hits)
        *hits = h;
    return sum;
}

/* Rows sel[0..n) of the batch, copied contiguously (the model reads contiguous inputs). */
static void gather(struct batch_ctx *b, const int *sel, int n)
{
    int dim = b->ds->dim;
    for (int i = 0; i < n; i++) {
        memcpy(b->xs + (size_t)i * dim, b->xb + (size_t)sel[i] * dim, (size_t)dim * sizeof(float));
        if (b->lb)
            b->ls[i] = b->lb[sel[i]];
        if (b->yb)
            b->ys[i] = b->yb[sel[i]];
    }
}

/* BatchNorm mode of a pass under train.bn_update (issue 7, train.h enum bn_update). */
static enum pass_mode pass_mode_of(const struct experiment *x, int pass)
{
    switch (x->bn_update) {
    case BN_UPDATE_ALL_PASSES:
        return PASS_TRAIN_UPDATE;
    case BN_UPDATE_REFERENCE:
        return pass == PASS_FIRST || pass == PASS_REF_UPDATE ? PASS_TRAIN_UPDATE
                                                             : PASS_TRAIN_FROZEN;
    case BN_UPDATE_FIRST_PASS:
        break;
    }
    return pass == PASS_FIRST ? PASS_TRAIN_UPDATE : PASS_TRAIN_FROZEN;
}

/* The rows a closure call works on: sel[0..n) of the batch gathered contiguously, or (sel NULL)
 * the whole batch. Returns the number of rows. */
static int select_rows(struct batch_ctx *b, int batch, const int *sel, int n, const float **xin,
                       const int32_t **lab, const float **tgt)
{
    if (!sel) {
        *xin = b->xb, *lab = b->lb, *tgt = b->yb;
        return batch;
    }
    gather(b, sel, n);
    *xin = b->xs, *lab = b->ls, *tgt = b->ys;
    return n;
}

static double closure_grad_fn(struct closure *f, struct params *p, int pass, const int *sel,
                              int n)
{
    struct batch_ctx *b = f->ctx;
    const float *xin, *tgt;
    const int32_t *lab;
    n = select_rows(b, f->batch, sel, n, &xin, &lab, &tgt);
    double hits;
    double sum = b->micro > 0
                     ? micro_batches(b, p, xin, lab, tgt, n, pass_mode_of(b->x, pass), true,
                                     &hits, NULL)
                     : forward_loss(b, p, xin, lab, tgt, n, pass_mode_of(b->x, pass), true,
                                    &hits);
    if (pass == PASS_FIRST) {
        b->sum_loss += sum;
        b->sum_hit += hits;
        b->count += n;
    }
    return sum / n;
}

static void closure_losses_fn(struct closure *f, const struct params *p, int pass,
                              const int *sel, int n, float *out)
{
    struct batch_ctx *b = f->ctx;
    const float *xin, *tgt;
    const int32_t *lab;
    n = select_rows(b, f->batch, sel, n, &xin, &lab, &tgt);
    if (b->micro > 0) {
        micro_batches(b, (struct params *)p, xin, lab, tgt, n, pass_mode_of(b->x, pass), false,
                      NULL, out);
        return;
    }
    forward_loss(b, (struct params *)p, xin, lab, tgt, n, pass_mode_of(b->x, pass), false, NULL);
    for (int i = 0; i < n; i++)
        out[i] = (float)b->loss_ex[i];
}

static void batch_ctx_init(struct batch_ctx *b, struct experiment *x)
{
    memset(b, 0, sizeof *b);
    b->x = x;
    b->ds = &x->data.train;
    /* Batch rows (inputs, labels) for a whole batch; model-side rows (dout, losses) for what
     * one model call takes, a micro-batch with train.accumulate. */
    int mb = x->model.max_batch, dim = b->ds->dim;
    int rows = x->batch_size > mb ? (int)x->batch_size : mb;
    b->micro = x->accumulate > 1 ? (int)(x->batch_size / x->accumulate) : 0;
    b->order = xmalloc((size_t)b->ds->n * sizeof *b->order);
    b->idx = xmalloc((size_t)rows * sizeof *b->idx);
    b->xb = xfloats((size_t)rows * dim);
    b->xs = xfloats((size_t)rows * dim);
    if (b->ds->label) {
        b->lb = xmalloc((size_t)rows * sizeof *b->lb);
        b->ls = xmalloc((size_t)rows * sizeof *b->ls);
    } else {
        b->yb = xfloats((size_t)rows);
        b->ys = xfloats((size_t)rows);
    }
    b->dout = xfloats((size_t)mb * x->model.n_out);
    b->loss_ex = xmalloc((size_t)mb * sizeof *b->loss_ex);
    b->hit = xmalloc((size_t)mb);
}

static void batch_ctx_free(struct batch_ctx *b)
{
    free(b->order);
    free(b->idx);
    free(b->xb);
    free(b->xs);
    free(b->lb);
    free(b->ls);
    free(b->yb);
    free(b->ys);
    free(b->dout);
    free(b->loss_ex);
    free(b->hit);
}

void evaluate_split(struct experiment *x, const struct dataset *ds, double *loss, double *acc)
{
    struct batch_ctx b;
    batch_ctx_init(&b, x);
    b.ds = ds;
    double sum = 0, hits = 0;
    int eb = (int)x->eval_batch_size;
    for (int lo = 0; lo < ds->n; lo += eb) {
        int n = lo + eb <= ds->n ? eb : ds->n - lo;
        for (int i = 0; i < n; i++)
            b.idx[i] = lo + i;
        data_batch(ds, b.idx, n, b.xb, b.lb, b.yb);
        double h;
        sum += forward_loss(&b, &x->model.p, b.xb, b.lb, b.yb, n, PASS_EVAL, false, &h);
        hits += h;
    }
    *loss = ds->n ? sum / ds->n : NAN;
    *acc = ds->n && ds->n_classes > 0 ? hits / ds->n : NAN;
    batch_ctx_free(&b);
}

/* The epoch's example order: a pure function of (seed, epoch), so a resumed run sees the same
 * batches. Without shuffling, file order. */
static void epoch_order(struct experiment *x, int *order, long epoch)
{
    int n = x->data.train.n;
    for (int i = 0; i < n; i++)
        order[i] = i;
    if (x->data.shuffle) {
        struct rng r;
        rng_init(&r, (uint64_t)x->seed, "shuffle", (uint64_t)epoch);
        rng_shuffle(&r, order, n);
    }
}

/* Epoch-0 gradient norm: one gradient of the first batch of epoch 1, at the initial weights.
 * Not counted in grad_evals (it is a measurement, not training). */
static double initial_grad_norm(struct experiment *x, struct batch_ctx *b)
{
    epoch_order(x, b->order, 1);
    int n = (int)x->batch_size;
    data_batch(b->ds, b->order, n, b->xb, b->lb, b->yb);
    if (b->micro > 0)
        micro_batches(b, &x->model.p, b->xb, b->lb, b->yb, n, PASS_EVAL, true, NULL, NULL);
    else
        forward_loss(b, &x->model.p, b->xb, b->lb, b->yb, n, PASS_EVAL, true, NULL);
    double norm = vec_nrm2(x->model.p.n, x->model.p.g);
    vec_zero(x->model.p.n, x->model.p.g);
    return norm;
}

static void record_hparam(void *ctx, const struct hparam *h)
{
    record_num(ctx, h->name, h->v);
}

/* Fill the record's measured fields for the end of an epoch (or epoch 0). */
static void epoch_record(struct experiment *x, struct record *r, const struct epoch_acc *a)
{
    bool classify = x->data.train.n_classes > 0;
    /* Perturbed-pass statistics exist once SAM-family steps have run (not at epoch 0); a
     * diverged epoch records them as null. */
    bool sam_family = x->optim.ops->wrapper && a->trained;
    optim_each_hparam(&x->optim, record_hparam, r);
    record_num(r, "train_loss", a->train_loss);
    if (classify)
        record_num(r, "train_acc", a->train_acc);
    if (sam_family) {
        record_num(r, "train_loss_perturbed", a->loss_perturbed);
        record_num(r, "sharpness_1step", a->sharpness);
    }
    record_num(r, "grad_norm", a->grad_norm);
    double loss, acc;
    if (x->data.val.n > 0) {
        evaluate_split(x, &x->data.val, &loss, &acc);
        record_num(r, "val_loss", loss);
        if (classify)
            record_num(r, "val_acc", acc);
    }
    if (x->data.test.n > 0) {
        evaluate_split(x, &x->data.test, &loss, &acc);
        record_num(r, "test_loss", loss);
        if (classify)
            record_num(r, "test_acc", acc);
    }
}

/* ---- train.keep_best and train.early_stop ---- */

/* Whether v improves on best (NaN never does; any finite value improves on none). */
static bool improves(double v, double best, bool max, double delta)
{
    if (!isfinite(v))
        return false;
    return isnan(best) || (max ? v > best + delta : v < best - delta);
}

/* Early stopping's state: the best value so far and the epochs since it. A pure function of the
 * records, so a resumed run rebuilds it from metrics.jsonl (early_stop_replay). */
struct early_stop {
    double best;
    long best_epoch, wait;
};

static void early_stop_note(const struct experiment *x, struct early_stop *es, long epoch,
                            double v)
{
    if (improves(v, es->best, x->early_stop.max, x->early_stop.min_delta)) {
        es->best = v;
        es->best_epoch = epoch;
        es->wait = 0;
    } else if (epoch > 0) {
        es->wait++;
    }
}

/* The run stops after `epoch` when the metric has not improved (by more than min_delta on the
 * best so far, epoch 0 included) in the last `patience` epochs, unless that epoch is the last
 * one anyway. */
static bool early_stop_due(const struct experiment *x, const struct early_stop *es, long epoch)
{
    return x->early_stop.metric && epoch > 0 && epoch < x->epochs &&
           es->wait >= x->early_stop.patience;
}

static double record_value(const cJSON *rec, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Rebuild the early-stopping state from the records already in <dir>/metrics.jsonl (those the
 * checkpoint has seen: rundir_open trimmed the file to them). */
static int early_stop_replay(const struct experiment *x, const char *dir, struct early_stop *es,
                             struct err *e)
{
    char *path = xasprintf("%s/metrics.jsonl", dir), *buf = NULL;
    int rc = io_exists(path) ? io_read_all(path, &buf, NULL, e) : 0;
    free(path);
    char *save = NULL;
    for (char *line = buf ? strtok_r(buf, "\n", &save) : NULL; line && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        if (rec)
            early_stop_note(x, es, (long)record_value(rec, "epoch"),
                            record_value(rec, x->early_stop.metric));
        cJSON_Delete(rec);
    }
    free(buf);
    return rc;
}

/* best.safetensors: the weights (and model buffers) in model.safetensors' format. */
static int save_best(const struct experiment *x, const char *dir, struct err *e)
{
    const struct model *m = &x->model;
    struct st_entry ent[2 * SAMX_MAX_TENSORS];
    st_entries_params(&m->p, m->p.w, ent);
    int n = m->p.nt;
    if (m->buf.nt > 0) {
        st_entries_params(&m->buf, m->buf.w, ent + n);
        n += m->buf.nt;
    }
    char *path = xasprintf("%s/best.safetensors", dir);
    int rc = st_save(path, ent, n, NULL, true, e);
    free(path);
    return rc;
}

/* Before appending epoch's record r: with keep_best, whether it is a new best (the rule of
 * rundir's best record: strictly better, so the first of equal values stays) and the
 * best_epoch key; with early stopping, the state update. */
static bool selection_epoch(const struct experiment *x, const struct rundir *rd,
                            struct early_stop *es, long epoch, struct record *r)
{
    bool new_best = false;
    if (x->keep_best) {
        double v = record_value(r->obj, x->keep_best);
        double b = rd->best ? record_value(rd->best, x->keep_best) : NAN;
        new_best = improves(v, b, x->keep_best_max, 0);
        double be = new_best ? (double)epoch : rd->best ? record_value(rd->best, "epoch") : NAN;
        record_num(r, "best_epoch", be);
    }
    if (x->early_stop.metric)
        early_stop_note(x, es, epoch, record_value(r->obj, x->early_stop.metric));
    return new_best;
}

static int train_loop(struct experiment *x, struct rundir *rd, struct train_state *st,
               const struct run_opts *o, struct err *e)
{
    struct batch_ctx b;
    batch_ctx_init(&b, x);
    struct closure f = {.grad = closure_grad_fn, .losses = closure_losses_fn, .ctx = &b,
                        .evals = st->grad_evals};
    struct params *p = &x->model.p;
    int rc = 0;
    struct early_stop es = {.best = NAN};

    if (st->epoch == 0 && st->step_in_epoch == 0 && !st->have_epoch0) {
        double t0 = rundir_now();
        struct epoch_acc a = {.loss_perturbed = NAN, .sharpness = NAN};
        optim_begin_step(&x->optim, 0);
        evaluate_split(x, &x->data.train, &a.train_loss, &a.train_acc);
        a.grad_norm = initial_grad_norm(x, &b);
        struct record r;
        record_begin(&r, 0, 0, rundir_now() - t0, 0, f.evals);
        epoch_record(x, &r, &a);
        if (measure_epoch(&x->measure, x, 0, rd->dir, &r, e) < 0) /* issue 4: eval.* */
            goto out;
        bool best = selection_epoch(x, rd, &es, 0, &r);
        if (rundir_append_record(rd, &r, e) < 0 || (best && save_best(x, rd->dir, e) < 0))
            goto out;
        st->have_epoch0 = true;
    } else if (x->early_stop.metric && early_stop_replay(x, rd->dir, &es, e) < 0) {
        goto out;
    }
    /* A resumed run that had already stopped early (its summary not yet written) stays so. */
    if (early_stop_due(x, &es, st->epoch) && st->step_in_epoch == 0)
        st->status = RUN_STOPPED;

    for (long ep = st->epoch + 1; ep <= x->epochs && st->status == RUN_RUNNING; ep++) {
        double t0 = rundir_now() - st->epoch_seconds;
        epoch_order(x, b.order, ep);
        b.sum_loss = st->acc_loss, b.sum_hit = st->acc_hit, b.count = st->acc_count;
        for (long s = st->step_in_epoch; s < x->steps_per_epoch; s++) {
            int lo = (int)(s * x->batch_size);
            int n = lo + x->batch_size <= x->data.train.n ? (int)x->batch_size
                                                           : x->data.train.n - lo;
            /* issue 7: augmentation drawn from (seed, "augment", step), once per step */
            data_batch_train(&x->data, b.order + lo, n, (uint64_t)x->seed, st->step, b.xb, b.lb,
                             b.yb);
            x->model.step = st->step; /* dropout masks: the same for every pass of the step */
            f.batch = n;
            optim_begin_step(&x->optim, st->step);
            struct step_info info;
            optim_step(&x->optim, p, &f, &info);
            st->step++;
            st->step_in_epoch = s + 1;
            st->acc_grad_norm += info.grad_norm;
            /* NaN: this step made no perturbed pass (LookSAM's cheap steps, plain bases). */
            if (!isnan(info.loss_perturbed)) {
                st->acc_perturbed += info.loss_perturbed * n;
                st->acc_sharp += (info.loss_perturbed - info.loss) * n;
                st->acc_perturbed_count += n;
            }
            st->acc_steps++;
            if (!isfinite(info.loss) || !isfinite(info.grad_norm) ||
                isinf(info.loss_perturbed)) {
                st->status = RUN_DIVERGED;
                break;
            }
            if (o->progress)
                rundir_progress(x, ep, s + 1, b.sum_loss / b.count,
                                (double)(st->step_in_epoch * x->batch_size) /
                                    (rundir_now() - t0 + 1e-9));
            if (rundir_interrupted() && s + 1 < x->steps_per_epoch) {
                st->acc_loss = b.sum_loss, st->acc_hit = b.sum_hit, st->acc_count = b.count;
                st->epoch_seconds = rundir_now() - t0;
                st->grad_evals = f.evals;
                st->status = RUN_INTERRUPTED;
                goto out;
            }
        }
        double secs = rundir_now() - t0;
        struct epoch_acc a = {
            .train_loss = b.count ? b.sum_loss / b.count : NAN,
            .train_acc = b.count ? b.sum_hit / b.count : NAN,
            .loss_perturbed = st->acc_perturbed_count ? st->acc_perturbed / st->acc_perturbed_count
                                                      : NAN,
            .sharpness = st->acc_perturbed_count ? st->acc_sharp / st->acc_perturbed_count : NAN,
            .grad_norm = st->acc_grad_norm / st->acc_steps,
            .trained = true,
        };
        struct record r;
        record_begin(&r, ep, st->step, secs, b.count / (secs > 0 ? secs : 1e-9), f.evals);
        epoch_record(x, &r, &a);
        if (measure_epoch(&x->measure, x, ep, rd->dir, &r, e) < 0) /* issue 4: eval.* */
            goto out;
        st->epoch = ep;
        st->step_in_epoch = 0;
        st->acc_loss = st->acc_hit = st->acc_count = 0;
        st->acc_grad_norm = st->acc_perturbed = st->acc_sharp = st->acc_perturbed_count = 0;
        st->acc_steps = 0;
        st->epoch_seconds = 0;
        st->grad_evals = f.evals;
        bool best = selection_epoch(x, rd, &es, ep, &r);
        if (early_stop_due(x, &es, ep))
            st->status = RUN_STOPPED; /* in the checkpoint too: a resume knows */
        if (rundir_append_record(rd, &r, e) < 0 || (best && save_best(x, rd->dir, e) < 0) ||
            rundir_checkpoint(rd, x, st, e) < 0)
            goto out;
        if (rundir_interrupted() && ep < x->epochs && st->status == RUN_RUNNING) {
            st->status = RUN_INTERRUPTED;
            goto out;
        }
    }
    if (st->status == RUN_RUNNING)
        st->status = RUN_COMPLETED;
out:
    if (e->status)
        rc = -1;
    st->grad_evals = f.evals;
    if (o->progress)
        fputs("\r\033[K", stderr);
    batch_ctx_free(&b);
    return rc;
}

int train_run(const struct run_opts *o, struct err *e)
{
    struct experiment x;
    int rc = experiment_build(&x, o, e);
    char *dir = NULL;
    if (rc < 0)
        goto out;
    dir = o->out_dir ? xstrdup(o->out_dir)
                     : xasprintf("%s/%s/%s", o->results_root ? o->results_root : "results",
                                 x.name, x.run_id);
    if (o->dry_run) {
        printf("would run '%s' (%ld epochs of %ld steps, %zu parameters) into '%s'\n", o->config,
               x.epochs, x.steps_per_epoch, x.model.p.n, dir);
        goto out;
    }
    struct rundir rd;
    struct train_state st;
    bool done;
    if (rundir_open(&rd, dir, &x, &st, o->force, o->command_line, &done, e) < 0) {
        rc = -1;
    } else if (done) {
        if (!o->quiet)
            fprintf(stderr, "samx: '%s' is already complete (use --force to run it again)\n",
                    dir);
    } else {
        rundir_catch_signals();
        rc = train_loop(&x, &rd, &st, o, e);
        rundir_release_signals();
        if (rc < 0) {
            st.status = RUN_FAILED;
            struct err ignored = {0};
            rundir_finish(&rd, &x, &st, o->command_line, &ignored);
        } else if (rundir_checkpoint(&rd, &x, &st, e) < 0 ||
                   rundir_finish(&rd, &x, &st, o->command_line, e) < 0) {
            rc = -1;
        } else if (st.status == RUN_INTERRUPTED) {
            rc = SAMX_EXIT_INTERRUPTED;
        }
    }
    if (!o->dry_run)
        rundir_close(&rd);
out:
    free(dir);
    experiment_free(&x);
    return rc;
}
