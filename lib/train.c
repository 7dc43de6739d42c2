/* train.c: the gradient closure, evaluation, and the epoch loop. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "nn.h"
#include "rng.h"
#include "rundir.h"

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
    /* clean-pass accumulators for the epoch record */
    double sum_loss, sum_hit, count;
};

/* Forward (and backward when grad) on rows [0, n) of (xin, lab, tgt); returns the loss SUM. */
static double forward_loss(struct batch_ctx *b, struct params *p, const float *xin,
                           const int32_t *lab, const float *tgt, int n, enum pass_mode mode,
                           bool grad, double *hits)
{
    struct experiment *x = b->x;
    struct model *m = &x->model;
    SAMX_ASSERT(p == &m->p);
    m->ops->forward(m, xin, n, mode);
    float scale = 1.0f / (float)n;
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
        m->ops->backward(m, xin, b->dout, n, false);
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
    double sum = forward_loss(b, p, xin, lab, tgt, n, pass_mode_of(b->x, pass), true, &hits);
    /* train.l2: lambda/2 ||w||^2 is part of the loss every pass differentiates, so a SAM-family
     * ascent includes lambda w and the descent gradient lambda (w + e). The returned and recorded
     * losses are the data loss alone, comparable across lambda. */
    if (b->x->l2 > 0)
        vec_axpy(p->n, (float)b->x->l2, p->w, p->g);
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
    forward_loss(b, (struct params *)p, xin, lab, tgt, n, pass_mode_of(b->x, pass), false, NULL);
    for (int i = 0; i < n; i++)
        out[i] = (float)b->loss_ex[i];
}

static void batch_ctx_init(struct batch_ctx *b, struct experiment *x)
{
    memset(b, 0, sizeof *b);
    b->x = x;
    b->ds = &x->data.train;
    int mb = x->model.max_batch, dim = b->ds->dim;
    b->order = xmalloc((size_t)b->ds->n * sizeof *b->order);
    b->idx = xmalloc((size_t)mb * sizeof *b->idx);
    b->xb = xfloats((size_t)mb * dim);
    b->xs = xfloats((size_t)mb * dim);
    if (b->ds->label) {
        b->lb = xmalloc((size_t)mb * sizeof *b->lb);
        b->ls = xmalloc((size_t)mb * sizeof *b->ls);
    } else {
        b->yb = xfloats((size_t)mb);
        b->ys = xfloats((size_t)mb);
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

static int train_loop(struct experiment *x, struct rundir *rd, struct train_state *st,
               const struct run_opts *o, struct err *e)
{
    struct batch_ctx b;
    batch_ctx_init(&b, x);
    struct closure f = {.grad = closure_grad_fn, .losses = closure_losses_fn, .ctx = &b,
                        .evals = st->grad_evals};
    struct params *p = &x->model.p;
    int rc = 0;

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
        if (rundir_append_record(rd, &r, e) < 0)
            goto out;
        st->have_epoch0 = true;
    }

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
        if (rundir_append_record(rd, &r, e) < 0 || rundir_checkpoint(rd, x, st, e) < 0)
            goto out;
        if (rundir_interrupted() && ep < x->epochs) {
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
