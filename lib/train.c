/* train.c: the gradient closure, evaluation, and the epoch loop. */
#include "train.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "dist.h"
#include "io.h"
#include "nn.h"
#include "rng.h"
#include "rundir.h"
#include "safetensors.h"
#include "schedule.h"
#include "sweep.h"
#include "tune.h"

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
    /* Data parallelism (dist.h): while true (the closure calls of a training step in a job of
     * several processes) each model call computes this rank's shard of its rows. */
    bool shard;
    struct model_shard ms;
    /* clean-pass accumulators for the epoch record */
    double sum_loss, sum_hit, count;
    /* PASS_LOCAL calls (m-sharpness groups dealt out to the processes, optim.h): their clean
     * passes' sums until closure_combine_fn, and the model's running-statistics log when it has
     * running statistics (model.h struct model_runlog). */
    double loc_loss, loc_hit, loc_count;
    bool runlog;
    struct model_runlog rl;
};

/* Forward (and backward when grad, adding to p->g when acc) on rows [0, n) of (xin, lab, tgt),
 * each example's loss weighted by scale in the gradient; returns the loss SUM.
 * With b->shard, on this rank's shard of the rows only (dist_shard; BatchNorm statistics and
 * dropout masks those of all n rows, model.h struct model_shard): the loss sum, *hits and the
 * gradient are the shard's, for the caller to sum over the ranks; b->loss_ex holds all n
 * per-example losses after a pass without grad (gathered from the ranks), the shard's after
 * one with grad. */
static double forward_loss_scaled(struct batch_ctx *b, struct params *p, const float *xin,
                                  const int32_t *lab, const float *tgt, int n, float scale,
                                  enum pass_mode mode, bool grad, bool acc, double *hits)
{
    struct experiment *x = b->x;
    struct model *m = &x->model;
    SAMX_ASSERT(p == &m->p);
    int rows = n, lo = 0;
    if (b->shard) {
        int hi;
        dist_shard(n, &lo, &hi);
        if (hi == lo) {
            /* every rank gets here together: rank 0 speaks for the job */
            if (dist_rank() == 0)
                fprintf(stderr, "samx: error: a model call on %d examples cannot be split over "
                                "%d processes (one example each at least): use fewer "
                                "processes or larger batches (train.batch_size, "
                                "train.accumulate, optimizer.m)\n",
                        n, dist_size());
            dist_abort(SAMX_EXIT_CONFIG);
        }
        /* experiment.c checks the calls of a step it knows; a method's own subset (ESAM's
         * selection) is checked here */
        if (x->bn_group > 0 && lo % x->bn_group) {
            fprintf(stderr, "samx: error (rank %d of %d): a model call on %d examples would "
                            "split the groups of 'train.bn_group' %ld between processes\n",
                    dist_rank(), dist_size(), n, x->bn_group);
            dist_abort(SAMX_EXIT_CONFIG);
        }
        b->ms = (struct model_shard){.sum = dist_sum_double, .rows = n, .row0 = lo};
        m->shard = &b->ms;
        xin += (size_t)lo * b->ds->dim;
        lab = lab ? lab + lo : NULL;
        tgt = tgt ? tgt + lo : NULL;
        n = hi - lo;
    }
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
    m->shard = NULL;
    if (b->shard && !grad) {
        memmove(b->loss_ex + lo, b->loss_ex, (size_t)n * sizeof *b->loss_ex);
        dist_gather_double(b->loss_ex, rows);
    }
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

/* BatchNorm mode of a pass under train.bn_update (train.h enum bn_update). */
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
    struct model *m = &b->x->model;
    const float *xin, *tgt;
    const int32_t *lab;
    bool local = pass & PASS_LOCAL, shard = b->shard;
    pass &= ~PASS_LOCAL;
    n = select_rows(b, f->batch, sel, n, &xin, &lab, &tgt);
    if (local) { /* this process's own group: computed here alone, summed at closure_combine */
        SAMX_ASSERT(shard);
        b->shard = false;
        b->rl.group = f->group;
        m->runlog = b->runlog ? &b->rl : NULL;
    }
    double hits;
    double sum = b->micro > 0
                     ? micro_batches(b, p, xin, lab, tgt, n, pass_mode_of(b->x, pass), true,
                                     &hits, NULL)
                     : forward_loss(b, p, xin, lab, tgt, n, pass_mode_of(b->x, pass), true,
                                    &hits);
    b->shard = shard;
    m->runlog = NULL;
    if (local) {
        if (pass == PASS_FIRST)
            b->loc_loss += sum, b->loc_hit += hits, b->loc_count += n;
    } else if (b->shard) { /* the ranks' shards summed: the whole batch's loss and gradient */
        double v[2] = {sum, hits};
        dist_sum_double(v, 2);
        sum = v[0], hits = v[1];
        dist_sum_float(p->g, p->n);
    }
    /* train.l2: lambda/2 ||w||^2 is part of the loss every pass differentiates, so a SAM-family
     * ascent includes lambda w and the descent gradient lambda (w + e). The returned and recorded
     * losses are the data loss alone, comparable across lambda. */
    if (b->x->l2 > 0)
        vec_axpy(p->n, (float)b->x->l2, p->w, p->g);
    if (pass == PASS_FIRST && !local) {
        b->sum_loss += sum;
        b->sum_hit += hits;
        b->count += n;
    }
    return sum / n;
}

#define COMBINE_MAX 4 /* doubles of a closure_combine: the methods' two losses, with room */

static void closure_combine_fn(struct closure *f, float *const *v, int nv, size_t n, double *d,
                               int nd)
{
    struct batch_ctx *b = f->ctx;
    SAMX_ASSERT(nd >= 0 && nd <= COMBINE_MAX);
    for (int i = 0; i < nv; i++)
        dist_sum_float(v[i], n);
    double s[COMBINE_MAX + 4];
    memcpy(s, d, (size_t)nd * sizeof *d);
    s[nd] = b->loc_loss, s[nd + 1] = b->loc_hit, s[nd + 2] = b->loc_count;
    s[nd + 3] = f->evals_local;
    dist_sum_double(s, (size_t)nd + 4);
    memcpy(d, s, (size_t)nd * sizeof *d);
    b->sum_loss += s[nd], b->sum_hit += s[nd + 1], b->count += s[nd + 2];
    f->evals += s[nd + 3];
    b->loc_loss = b->loc_hit = b->loc_count = f->evals_local = 0;
    if (b->runlog)
        b->x->model.ops->runlog_apply(&b->x->model, dist_sum_double);
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
    int eb = (int)x->eval_batch_size, first, end;
    dist_shard(ds->n, &first, &end); /* the whole split on one process */
    for (int lo = first; lo < end; lo += eb) {
        int n = lo + eb <= end ? eb : end - lo;
        for (int i = 0; i < n; i++)
            b.idx[i] = lo + i;
        data_batch(ds, b.idx, n, b.xb, b.lb, b.yb);
        double h;
        sum += forward_loss(&b, &x->model.p, b.xb, b.lb, b.yb, n, PASS_EVAL, false, &h);
        hits += h;
    }
    if (dist_size() > 1) { /* the ranks' shards of the split */
        double v[2] = {sum, hits};
        dist_sum_double(v, 2);
        sum = v[0], hits = v[1];
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
    if (x->l2 > 0) /* the training gradient's norm, as the trained epochs record it */
        vec_axpy(x->model.p.n, (float)x->l2, x->model.p.w, x->model.p.g);
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
    bool sam_family = x->optim.ops->wrapper && !x->optim.ops->no_clean_pass && a->trained;
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

/* ---- what a run tells the user: one stderr line per epoch and per event (samx_say) ---- */

/* " NAME VALUE" for a record key, if the record has it ("nan" for a recorded null). */
static size_t say_key(char *buf, size_t cap, size_t len, const cJSON *r, const char *key,
                      const char *label, const char *fmt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, key);
    if (!v || len >= cap)
        return len;
    if (cJSON_IsNumber(v))
    {
        len += (size_t)snprintf(buf + len, cap - len, " %s ", label);
        if (len < cap)
            len += (size_t)snprintf(buf + len, cap - len, fmt, v->valuedouble);
    }
    else
        len += (size_t)snprintf(buf + len, cap - len, " %s nan", label);
    return len < cap ? len : cap;
}

/* "train loss L acc A  val loss L acc A  test loss L acc A": the splits a record has. */
static size_t say_splits(char *buf, size_t cap, size_t len, const cJSON *r)
{
    static const char *const splits[] = {"train", "val", "test"};
    for (int i = 0; i < 3; i++) {
        char lk[16], ak[16];
        snprintf(lk, sizeof lk, "%s_loss", splits[i]);
        snprintf(ak, sizeof ak, "%s_acc", splits[i]);
        if (!cJSON_GetObjectItemCaseSensitive(r, lk) || len >= cap)
            continue;
        len += (size_t)snprintf(buf + len, cap - len, "  %s", splits[i]);
        len = say_key(buf, cap, len, r, lk, "loss", "%.4f");
        len = say_key(buf, cap, len, r, ak, "acc", "%.4f");
    }
    return len < cap ? len : cap;
}

/* One line per epoch record, terminal or not; the progress line, if any, is erased first. */
static void say_epoch(const struct experiment *x, const struct run_opts *o, const cJSON *r,
                      long epoch)
{
    if (samx_quiet)
        return;
    char buf[512];
    size_t len = (size_t)snprintf(buf, sizeof buf, "epoch %ld/%ld%s", epoch, x->epochs,
                                  epoch == 0 ? " (initial weights)" : "");
    len = say_splits(buf, sizeof buf, len, r);
    /* the landscape measurements, when eval.* switches them on */
    static const char *const measured[] = {"hessian_trace", "lambda_max", "sharpness", NULL};
    for (int i = 0; measured[i] && len + 2 < sizeof buf; i++)
        if (cJSON_GetObjectItemCaseSensitive(r, measured[i])) {
            len += (size_t)snprintf(buf + len, sizeof buf - len, " ");
            len = say_key(buf, sizeof buf, len, r, measured[i], measured[i], "%.4g");
        }
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(r, "seconds");
    if (cJSON_IsNumber(sec) && len < sizeof buf)
        snprintf(buf + len, sizeof buf - len, "  %.1f s", sec->valuedouble);
    if (o->progress)
        fputs("\r\033[K", stderr);
    samx_say("%s", buf);
}

/* The closing line of a run: its status, final result, best record and directory. */
static void say_end(const struct experiment *x, const struct rundir *rd,
                    const struct train_state *st, double wall)
{
    const char *dir = rd->dir;
    char buf[512] = "";
    size_t len = 0;
    static const char *const result[] = {"test_acc", "test_loss", "val_acc", "val_loss", NULL};
    for (int i = 0; rd->last && result[i]; i++)
        len = say_key(buf, sizeof buf, len, rd->last, result[i], result[i], "%.4f");
    const cJSON *bv = rd->best ? cJSON_GetObjectItemCaseSensitive(rd->best, rd->best_by) : NULL;
    const cJSON *be = rd->best ? cJSON_GetObjectItemCaseSensitive(rd->best, "epoch") : NULL;
    if (cJSON_IsNumber(bv) && cJSON_IsNumber(be) && len < sizeof buf)
        snprintf(buf + len, sizeof buf - len, "; best %s %.4f at epoch %d%s", rd->best_by,
                 bv->valuedouble, be->valueint,
                 x->data.val.n == 0 ? " (selected on the test set)" : "");
    switch (st->status) {
    case RUN_COMPLETED:
        samx_say("completed %ld epochs in %.1f s:%s; run directory '%s'", st->epoch, wall, buf,
                 dir);
        break;
    case RUN_DIVERGED:
        samx_say("diverged: a non-finite loss or gradient at step %ld (epoch %ld of %ld); "
                 "status 'diverged' (a result, exit 0); run directory '%s'",
                 st->step, st->epoch, x->epochs, dir);
        break;
    case RUN_STOPPED:
        samx_say("stopped early after epoch %ld of %ld (train.early_stop on %s):%s; run "
                 "directory '%s'", st->epoch, x->epochs, x->early_stop.metric, buf, dir);
        break;
    case RUN_INTERRUPTED:
        if (st->step_in_epoch > 0)
            samx_say("interrupted in epoch %ld at step %ld of %ld: checkpoint saved; run the "
                     "same command again to resume; run directory '%s'",
                     st->epoch + 1, st->step_in_epoch, x->steps_per_epoch, dir);
        else
            samx_say("interrupted after epoch %ld of %ld: checkpoint saved; run the same "
                     "command again to resume; run directory '%s'", st->epoch, x->epochs, dir);
        break;
    default:
        break;
    }
}

/* Scheduled hyperparameters of the optimizer and its base, named by their config keys
 * (optimizer.rho, optimizer.base.lr). */
static void warn_schedules(const struct experiment *x)
{
    long total = x->epochs * x->steps_per_epoch;
    char prefix[64] = "optimizer";
    for (const struct optim *op = &x->optim; op; op = op->base) {
        for (int i = 0; i < op->n_hp; i++) {
            const struct hparam *h = &op->hp[i];
            const struct sched *sc = &h->s;
            if (h->adaptive || (sc->kind == SCHED_CONSTANT && sc->warmup == 0))
                continue;
            if (sc->warmup > 0 && sc->warmup >= (double)x->epochs && x->epochs > 0) {
                char w[32];
                samx_warn("'%s.%s': warmup %s is at least the whole run (train.epochs=%ld), "
                          "so the run never reaches the scheduled values",
                          prefix, h->name, cfg_fmt_num(w, sc->warmup), x->epochs);
            }
            /* Every step of a short run; for a long one, a million steps spread over it. */
            long stride = total > 1000000 ? total / 1000000 : 1;
            bool zero = total > 0;
            for (long t = 0; t < total && zero; t += stride)
                zero = sched_at(sc, t) == 0;
            if (zero)
                samx_warn("'%s.%s' is 0 at every step of the run (%ld step%s over "
                          "train.epochs=%ld)",
                          prefix, h->name, total, total == 1 ? "" : "s", x->epochs);
        }
        size_t len = strlen(prefix);
        snprintf(prefix + len, sizeof prefix - len, ".base");
    }
}

void experiment_warn(const struct experiment *x)
{
    if (samx_quiet)
        return;
    warn_schedules(x);
    if (x->batch_size_asked > x->data.train.n)
        samx_warn("'train.batch_size' %ld is larger than the training set (%d examples): every "
                  "step is one full batch of the whole set",
                  x->batch_size_asked, x->data.train.n);
    if (x->data.val.n == 0 && x->data.test.n > 0)
        samx_warn("no validation split ('data.val_split' is 0): the best record in summary.json "
                  "is selected on the test set (\"best_on\": \"test\")");
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

/* Rebuild the early-stopping state from the records the checkpoint has seen (rd->records:
 * rundir_open trimmed metrics.jsonl to them; a follower rank has them from rank 0). */
static void early_stop_replay(const struct experiment *x, const struct rundir *rd,
                              struct early_stop *es)
{
    char *buf = xmalloc(rd->records_len + 1);
    memcpy(buf, rd->records, rd->records_len);
    buf[rd->records_len] = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        if (rec)
            early_stop_note(x, es, (long)record_value(rec, "epoch"),
                            record_value(rec, x->early_stop.metric));
        cJSON_Delete(rec);
    }
    free(buf);
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

/* Over several processes with m-sharpness groups, the model's running-statistics log
 * (model.h struct model_runlog) for the groups of the largest batch, each with at most: a
 * running update per pass that makes one (the first, or with train.bn_update every one of a
 * method's at most 1 + SAM_MAX_SIGNS), per micro-batch (train.accumulate), per ghost
 * BatchNorm group (train.bn_group). Returns the larger of n and the log's size in doubles. */
static size_t runlog_reserve(struct experiment *x, size_t n, struct batch_ctx *b)
{
    struct model *m = &x->model;
    long gm = x->optim.m;
    if (gm <= 0 || gm >= x->batch_size || m->buf.nt == 0 || !m->ops->runlog_reserve)
        return n;
    long micro = b->micro > 0 && b->micro < gm ? b->micro : gm;
    long chunks = (gm + micro - 1) / micro;
    long ghost = x->bn_group > 0 ? (micro + x->bn_group - 1) / x->bn_group : 1;
    long passes = x->bn_update == BN_UPDATE_FIRST_PASS ? 1 : 1 + SAM_MAX_SIGNS;
    int groups = (int)((x->batch_size + gm - 1) / gm);
    size_t size = m->ops->runlog_reserve(m, groups, (int)(passes * chunks * ghost));
    b->runlog = true;
    return size > n ? size : n;
}

static int train_loop(struct experiment *x, struct rundir *rd, struct train_state *st,
               const struct run_opts *o, struct err *e)
{
    struct batch_ctx b;
    batch_ctx_init(&b, x);
    struct closure f = {.grad = closure_grad_fn, .losses = closure_losses_fn, .ctx = &b,
                        .evals = st->grad_evals, .procs = dist_size(), .proc = dist_rank()};
    struct params *p = &x->model.p;
    int rc = 0;
    struct early_stop es = {.best = NAN};
    size_t sums = p->n; /* the largest sum over the processes, for its workspace */
    if (f.procs > 1) {
        f.combine = closure_combine_fn;
        sums = runlog_reserve(x, sums, &b);
    }
    dist_reserve(sums); /* a no-op on one process */
    /* Only rank 0 writes: the others measure without writing files (dist.h). */
    const char *mdir = rd->follower ? NULL : rd->dir;

    /* The ranks agree on every stop (a signal may reach one of them only), so they stop at
     * the same step. */
    if (dist_any(rundir_interrupted())) { /* a signal while loading or opening the directory */
        st->status = RUN_INTERRUPTED;
        goto out;
    }
    if (st->epoch == 0 && st->step_in_epoch == 0 && !st->have_epoch0) {
        double t0 = rundir_now();
        struct epoch_acc a = {.loss_perturbed = NAN, .sharpness = NAN};
        optim_begin_step(&x->optim, 0);
        evaluate_split(x, &x->data.train, &a.train_loss, &a.train_acc);
        a.grad_norm = initial_grad_norm(x, &b);
        struct record r;
        record_begin(&r, 0, 0, rundir_now() - t0, 0, f.evals);
        epoch_record(x, &r, &a);
        if (measure_epoch(&x->measure, x, 0, mdir, &r, e) < 0) /* eval.* */
            goto out;
        bool best = selection_epoch(x, rd, &es, 0, &r);
        say_epoch(x, o, r.obj, 0);
        if (rundir_append_record(rd, &r, e) < 0 ||
            (best && !rd->follower && save_best(x, rd->dir, e) < 0))
            goto out;
        st->have_epoch0 = true;
    } else if (x->early_stop.metric) {
        early_stop_replay(x, rd, &es);
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
            team_step_begin(); /* the team size follows the step time (tune.h) */
            /* augmentation drawn from (seed, "augment", step), once per step */
            data_batch_train(&x->data, b.order + lo, n, (uint64_t)x->seed, st->step, b.xb, b.lb,
                             b.yb);
            x->model.step = st->step; /* dropout masks: the same for every pass of the step */
            f.batch = n;
            optim_begin_step(&x->optim, st->step);
            struct step_info info;
            b.shard = dist_size() > 1;
            optim_step(&x->optim, p, &f, &info);
            b.shard = false;
            team_step_end();
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
            if (dist_any(rundir_interrupted()) && s + 1 < x->steps_per_epoch) {
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
        if (measure_epoch(&x->measure, x, ep, mdir, &r, e) < 0) /* eval.* */
            goto out;
        say_epoch(x, o, r.obj, ep);
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
        if (rundir_append_record(rd, &r, e) < 0 ||
            (best && !rd->follower && save_best(x, rd->dir, e) < 0) ||
            rundir_checkpoint(rd, x, st, e) < 0)
            goto out;
        if (dist_any(rundir_interrupted()) && ep < x->epochs && st->status == RUN_RUNNING) {
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

/* A job of several processes (dist.h): rank 0 has opened the run directory (rundir_open
 * returned rc, *done); the others get that outcome and, when there is a run to train, the
 * training position, the records and the weights, model buffers and optimizer state, so that
 * every rank starts or resumes from rank 0's state. Followers' rd becomes rundir_follow's. */
static int share_open(struct rundir *rd, const char *dir, struct experiment *x,
                      struct train_state *st, bool *done, int rc, struct err *e)
{
    bool lead = dist_rank() == 0;
    struct {
        int rc, status, done;
        char msg[sizeof e->msg];
    } h = {rc, e->status, *done, {0}};
    memcpy(h.msg, e->msg, sizeof h.msg);
    dist_bcast(&h, sizeof h);
    if (!lead) {
        memset(rd, 0, sizeof *rd);
        rd->lock_fd = -1;
        e->status = h.status;
        memcpy(e->msg, h.msg, sizeof e->msg);
        *done = h.done;
    }
    if (h.rc < 0 || h.done)
        return h.rc;
    dist_bcast(st, sizeof *st);
    size_t len = lead ? rd->records_len : 0;
    dist_bcast(&len, sizeof len);
    char *rec = lead ? rd->records : xmalloc(len + 1);
    dist_bcast(rec, len);
    if (!lead) {
        rundir_follow(rd, dir, x, rec, len);
        free(rec);
    }
    struct model *m = &x->model;
    dist_bcast(m->p.w, m->p.n * sizeof(float));
    if (m->buf.nt > 0)
        dist_bcast(m->buf.w, m->buf.n * sizeof(float));
    for (struct optim *op = &x->optim; op; op = op->base) {
        for (int i = 0; i < op->n_buf; i++)
            dist_bcast(op->buf[i], m->p.n * sizeof(float));
        for (int i = 0; i < op->n_state; i++)
            dist_bcast(op->state[i], sizeof(double));
    }
    return 0;
}

/* SAMX_DIST_WEIGHTS=DIR (a test hook, dist.h): every rank writes its final weights and model
 * buffers to DIR/rank-<r>.f32, so a test can check that the ranks end with the same bits. */
static int dump_weights(const struct experiment *x, const char *dir, struct err *e)
{
    const struct model *m = &x->model;
    size_t nw = m->p.n * sizeof(float), nb = m->buf.nt > 0 ? m->buf.n * sizeof(float) : 0;
    char *buf = xmalloc(nw + nb + 1);
    memcpy(buf, m->p.w, nw);
    if (nb)
        memcpy(buf + nw, m->buf.w, nb);
    char *path = xasprintf("%s/rank-%d.f32", dir, dist_rank());
    int rc = io_write_atomic(path, buf, nw + nb, e);
    free(path);
    free(buf);
    return rc;
}

/* The directory that holds path (a file or a directory): "." for a bare name. malloc'd. */
static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    char *d = xstrdup(path);
    d[slash == path ? 1 : slash - path] = 0;
    return d;
}

static void say_found(const char *dir, const char *run_id, bool quiet)
{
    if (!quiet && strcmp(strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir, run_id) != 0)
        fprintf(stderr, "samx: '%s' holds this config's run (found by its hash; this "
                        "invocation's label would be '%s')\n",
                dir, run_id);
}

/* The run directory for '-o dir'. An emitted sweep job names its directory LABEL-<hash>; when
 * that directory has no run yet and a sibling "*-<hash>" already holds this config's run (a
 * 'samx run' of the same config after the job was emitted), the sibling is the run. Any other
 * -o is taken as given. malloc'd. */
static char *find_labelled(const char *dir, const struct experiment *x, bool quiet)
{
    const char *hash = strrchr(x->run_id, '-'), *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    size_t bl = strlen(base), hl = hash ? strlen(hash) : 0;
    char *cfg = xasprintf("%s/config.yaml", dir);
    bool fresh = !io_exists(cfg);
    free(cfg);
    if (!hash || bl <= hl || strcmp(base + bl - hl, hash) != 0 || !fresh)
        return xstrdup(dir);
    char *parent = parent_dir(dir), *found = rundir_find(parent, x);
    free(parent);
    if (!found)
        return xstrdup(dir);
    say_found(found, base, quiet);
    return found;
}

int train_run(const struct run_opts *o, struct err *e)
{
    struct experiment x;
    int rc = experiment_build(&x, o, e);
    char *dir = NULL;
    /* A signal breaks a read that blocks (a FIFO's open, a slow network file) with EINTR:
     * the run was interrupted, not failed, and says so like any signal while loading. */
    if (rc < 0 && rundir_interrupted()) {
        rc = err_set(e, "interrupted by %s while loading '%s'; nothing was written",
                     rundir_signal_name(), o->config);
        e->status = SAMX_EXIT_INTERRUPTED;
    }
    if (dist_size() > 1) {
        /* The ranks build the same experiment; one that fails alone (a file it cannot read)
         * says why, and the others stop with it. */
        int r0 = rc < 0;
        dist_bcast(&r0, sizeof r0);
        bool any = dist_any(rc < 0);
        if (rc < 0 && dist_rank() > 0 && !r0)
            fprintf(stderr, "samx: error (rank %d of %d): %s\n", dist_rank(), dist_size(),
                    e->msg);
        if (any && rc == 0)
            rc = err_set(e, "a process of the MPI job could not build the experiment (its "
                            "error above)");
        else if (any && r0 && dist_rank() > 0)
            e->status = e->status ? e->status : SAMX_EXIT_RUNTIME;
    }
    if (rc < 0)
        goto out;
    if (o->out_dir) {
        dir = find_labelled(o->out_dir, &x, o->quiet);
    } else {
        /* The run is its config: the run directory its config.yaml came from ('samx run
         * DIR/config.yaml', wherever DIR is), else an existing directory of it under the
         * results root, whatever its label says. */
        char *cdir = parent_dir(o->config);
        if (rundir_holds(cdir, &x)) {
            dir = cdir;
        } else {
            free(cdir);
            char *parent =
                xasprintf("%s/%s", o->results_root ? o->results_root : "results", x.name);
            dir = rundir_find(parent, &x);
            if (!dir)
                dir = xasprintf("%s/%s", parent, x.run_id);
            else
                say_found(dir, x.run_id, o->quiet);
            free(parent);
        }
    }
    if (o->dry_run) {
        experiment_warn(&x);
        if (dist_rank() == 0)
            printf("would run '%s' (%ld epochs of %ld steps, %zu parameters) into '%s'\n",
                   o->config, x.epochs, x.steps_per_epoch, x.model.p.n, dir);
        goto out;
    }
    if (dist_any(rundir_interrupted())) {
        rc = err_set(e, "interrupted by %s while loading '%s'; nothing was written",
                     rundir_signal_name(), o->config);
        e->status = SAMX_EXIT_INTERRUPTED;
        goto out;
    }
    struct rundir rd;
    struct train_state st;
    bool done;
    int orc = 0;
    if (dist_rank() == 0)
        orc = rundir_open(&rd, dir, &x, &st, o->force, o->command_line, &done, e);
    if (dist_size() > 1)
        orc = share_open(&rd, dir, &x, &st, &done, orc, e);
    if (orc < 0) {
        rc = -1;
    } else if (done) {
        /* what its summary.json says: completed, diverged or stopped (early stopping) */
        const char *how = sweep_run_status(dir);
        if (!strcmp(how, "completed"))
            samx_say("skipped: '%s' is already complete (use --force to run it again)", dir);
        else
            samx_say("skipped: '%s' is already finished: %s (use --force to run it again)", dir,
                     !strcmp(how, "stopped") ? "stopped early" : how);
    } else if (st.status == RUN_COMPLETED || st.status == RUN_DIVERGED ||
               st.status == RUN_STOPPED) {
        /* Killed after its final checkpoint: the run is over, only its final files are due. */
        samx_say("finishing '%s' from its final checkpoint (nothing left to train)", dir);
        if (rundir_finish(&rd, &x, &st, o->command_line, e) < 0)
            rc = -1;
        else
            say_end(&x, &rd, &st, st.wall_seconds);
    } else {
        experiment_warn(&x);
        if (st.step_in_epoch > 0)
            samx_say("resuming '%s' in epoch %ld at step %ld of %ld (%d thread%s)", dir,
                     st.epoch + 1, st.step_in_epoch, x.steps_per_epoch, threads_get(),
                     threads_get() == 1 ? "" : "s");
        else if (st.epoch > 0 || st.have_epoch0)
            samx_say("resuming '%s' after epoch %ld of %ld (%d thread%s)", dir, st.epoch,
                     x.epochs, threads_get(), threads_get() == 1 ? "" : "s");
        else
            samx_say("training '%s' into '%s': %ld epochs of %ld steps, %zu parameters, %d "
                     "thread%s", o->config, dir, x.epochs, x.steps_per_epoch, x.model.p.n,
                     threads_get(), threads_get() == 1 ? "" : "s");
        rc = train_loop(&x, &rd, &st, o, e);
        double wall = st.wall_seconds + rundir_now() - rd.started;
        if (rc < 0) {
            st.status = RUN_FAILED;
            struct err ignored = {0};
            rundir_finish(&rd, &x, &st, o->command_line, &ignored);
            /* A rank that fails alone would leave the others waiting: the job ends. */
            if (dist_size() > 1) {
                fprintf(stderr, "samx: error (rank %d of %d): %s\n", dist_rank(), dist_size(),
                        e->msg);
                dist_abort(e->status ? e->status : SAMX_EXIT_RUNTIME);
            }
        } else if ((st.have_epoch0 && rundir_checkpoint(&rd, &x, &st, e) < 0) ||
                   rundir_finish(&rd, &x, &st, o->command_line, e) < 0) {
            rc = -1;
        } else {
            say_end(&x, &rd, &st, wall);
            /* Every non-zero exit says why: with -q the error line is the only line. */
            if (st.status == RUN_INTERRUPTED && samx_quiet) {
                rc = err_set(e, "interrupted by %s: %s '%s'; run the same command to resume",
                             rundir_signal_name(),
                             st.have_epoch0 ? "checkpoint saved in" : "nothing trained yet in",
                             dir);
                e->status = SAMX_EXIT_INTERRUPTED;
            } else if (st.status == RUN_INTERRUPTED) {
                rc = SAMX_EXIT_INTERRUPTED;
            }
        }
    }
    rundir_close(&rd);
    if (rc >= 0 && getenv("SAMX_DIST_WEIGHTS"))
        rc = dump_weights(&x, getenv("SAMX_DIST_WEIGHTS"), e);
out:
    free(dir);
    experiment_free(&x);
    return rc;
}
