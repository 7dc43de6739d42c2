/* measure.c: loss-landscape measurements (eval:), algorithms.md 8-9; contracts in measure.h.
 *
 * Keys (eval.<measurement>.*), every measurement: every [1] (epochs; 0 = off), examples [1024]
 * (probe set size, clamped to the split), split [train | val | test].
 *   hessian_trace: rel_err [0.05] (target relative standard error; 0: a fixed count), probes
 *                  [1000] (the cap; with rel_err 0 the count; at least 4 with rel_err), pilot
 *                  [min(20, probes/2)], tol [0] (with rel_err 0 only: PyHessian's
 *                  relative-change stop, biased), hvp [exact |
 *                  finite_difference; exact when the model has the op], normalize [grad_norm |
 *                  grad_norm_sq | none]
 *   hessian_density: steps [100] (Lanczos), runs [1], bins [10000], sigma2 [1e-5], overhead
 *                  [0.01] (PyHessian's density_generate defaults), hvp; memory: steps P floats
 *   lambda_max:    iters [20], tol [0.001], k [1], hvp
 *   sharpness:     rho [0.05], steps [5], step [1.0] (ascent step in units of rho), m [0],
 *                  adaptive [false], eta [0.01], scale [weights | all] (the ASAM ball)
 *   landscape:     dims [1 | 2], points [21] (per axis), range [1.0] (coordinates in
 *                  [-range, range]), bias [zero | copy] (the directions' bias entries)
 *
 * hessian_trace_normalized: CR-SAM's exact definition is not known (algorithms.md 13.2); the
 * `normalize` key says what the trace is divided by (the probe-set gradient norm, its square)
 * and hessian_grad_norm is recorded, so any other normalisation can be formed offline.
 */
#include "measure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "data.h"
#include "dist.h"
#include "io.h"
#include "nn.h"
#include "rundir.h"
#include "train.h"
#include "tune.h"

#define PAR_MIN 32768 /* elements below which elementwise loops stay serial */

const char *const hvp_kind_names[] = {"exact", "finite_difference", NULL};
static const char *const split_names[] = {"train", "val", "test", NULL};
enum { NORM_GRAD, NORM_GRAD_SQ, NORM_NONE };
static const char *const normalize_names[] = {"grad_norm", "grad_norm_sq", "none", NULL};
static const char *const scale_names[] = {"weights", "all", NULL};
static const char *const bias_names[] = {"zero", "copy", NULL};

/* ---- the output end of the R-operator ---------------------------------------------------- */

void hvp_loss_output(const struct hvp_loss *l, const float *out, const float *rout, int batch,
                     int k, float *dout, float *rdout)
{
    SAMX_ASSERT(batch > 0 && k > 0);
    if (l->mse) {
        SAMX_ASSERT(k == 1);
        for (int i = 0; i < batch; i++) {
            dout[i] = (float)(l->scale * 2.0 * ((double)out[i] - l->y[i]));
            rdout[i] = (float)(l->scale * 2.0 * rout[i]);
        }
        return;
    }
    double s = l->smoothing;
#pragma omp parallel for schedule(static) num_threads(team_size()) if ((size_t)batch * k > PAR_MIN)
    for (int i = 0; i < batch; i++) {
        const float *z = out + (size_t)i * k, *r = rout + (size_t)i * k;
        float *d = dout + (size_t)i * k, *rd = rdout + (size_t)i * k;
        int y = l->label[i];
        SAMX_ASSERT(y >= 0 && y < k);
        double zmax = z[0], se = 0, pr = 0;
        for (int j = 1; j < k; j++)
            zmax = z[j] > zmax ? z[j] : zmax;
        for (int j = 0; j < k; j++)
            se += exp((double)z[j] - zmax);
        for (int j = 0; j < k; j++)
            pr += exp((double)z[j] - zmax) / se * r[j];
        /* Hessian of lse(z) - t.z is diag(p) - p p^T whatever the smoothed target t is. */
        for (int j = 0; j < k; j++) {
            double p = exp((double)z[j] - zmax) / se;
            double t = (j == y ? 1.0 - s : 0.0) + s / k;
            d[j] = (float)(l->scale * (p - t));
            rd[j] = (float)(l->scale * p * (r[j] - pr));
        }
    }
}

/* ---- elementwise helpers over P floats (parallel over the index written) ----------------- */

/* out = a + s * b, each element in double then rounded once. */
static void vec_add_scaled(size_t n, float *out, const float *a, double s, const float *b)
{
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)a[i] + s * b[i]);
}

/* Random directions over the parameters only: tensors start on aligned offsets (params.h) and
 * the gaps between them are not parameters, so they stay 0 and take no draws (the draws are
 * the same for any alignment). kind 0: Rademacher, 1: standard normal. */
static void draw_direction(const struct params *p, struct rng *r, int kind, float *v)
{
    vec_zero(p->n, v);
    for (int i = 0; i < p->nt; i++)
        for (size_t j = p->t[i].off; j < p->t[i].off + p->t[i].n; j++)
            v[j] = kind == 0 ? rng_rademacher(r) : (float)rng_normal(r);
}

/* ---- probe sets --------------------------------------------------------------------------- */

void probe_init(struct probe *pr, struct model *m, const struct dataset *ds, int n,
                uint64_t seed, uint64_t stream_counter, bool mse, float smoothing)
{
    memset(pr, 0, sizeof *pr);
    SAMX_ASSERT(ds->n > 0 && n > 0);
    if (n > ds->n)
        n = ds->n;
    /* A full shuffle, then a prefix: the set for n examples is a prefix of the set for more. */
    int *order = xmalloc((size_t)ds->n * sizeof *order);
    for (int i = 0; i < ds->n; i++)
        order[i] = i;
    struct rng r;
    rng_init(&r, seed, "eval.probe_set", stream_counter);
    rng_shuffle(&r, order, ds->n);
    pr->m = m;
    pr->n = pr->count = n;
    pr->dim = ds->dim;
    /* Balanced chunks of at most max_batch (1024 in chunks of 1000 would leave 24 alone). */
    int n_chunks = (n + m->max_batch - 1) / m->max_batch;
    pr->chunk = (n + n_chunks - 1) / n_chunks;
    pr->x = xfloats((size_t)n * ds->dim);
    if (ds->label)
        pr->label = xmalloc((size_t)n * sizeof *pr->label);
    else
        pr->y = xfloats((size_t)n);
    data_batch(ds, order, n, pr->x, pr->label, pr->y);
    free(order);
    pr->mse = mse;
    pr->smoothing = smoothing;
    pr->dout = xfloats((size_t)pr->chunk * m->n_out);
    pr->loss_ex = xmalloc((size_t)pr->chunk * sizeof *pr->loss_ex);
    pr->hit = xmalloc((size_t)pr->chunk);
    pr->w0 = xfloats(m->p.n);
    pr->gm = xfloats(m->p.n);
}

void probe_free(struct probe *pr)
{
    free(pr->x);
    free(pr->label);
    free(pr->y);
    free(pr->dout);
    free(pr->loss_ex);
    free(pr->hit);
    free(pr->w0);
    free(pr->gm);
    memset(pr, 0, sizeof *pr);
}

/* Forward one chunk [lo, lo + n) of the set; loss SUM, hits into *hits; dout when grad. */
static double probe_chunk(struct probe *pr, int lo, int n, double scale, bool grad, double *hits)
{
    struct model *m = pr->m;
    const float *x = pr->x + (size_t)lo * pr->dim;
    m->ops->forward(m, x, n, PASS_EVAL);
    double sum;
    *hits = 0;
    if (pr->mse) {
        sum = mse_forward_backward(grad ? pr->dout : NULL, pr->loss_ex, m->out, pr->y + lo, n,
                                   (float)scale);
    } else {
        sum = xent_forward_backward(grad ? pr->dout : NULL, pr->loss_ex, pr->hit, m->out,
                                    pr->label + lo, n, m->n_out, pr->smoothing, (float)scale);
        for (int i = 0; i < n; i++)
            *hits += pr->hit[i];
    }
    if (grad)
        m->ops->backward(m, x, pr->dout, n, true);
    return sum;
}

/* The rows of the window this process computes: in a job of several processes (dist.h) its
 * shard of the window, whose partial sums the callers add over the processes in rank order;
 * the whole window otherwise. */
static void probe_rows(const struct probe *pr, int *lo, int *hi)
{
    int a, b;
    dist_shard(pr->count, &a, &b);
    *lo = pr->lo + a;
    *hi = pr->lo + b;
}

double probe_loss(struct probe *pr, double *acc)
{
    double v[2] = {0, 0}, h; /* loss sum, hits */
    int first, end;
    probe_rows(pr, &first, &end);
    for (int lo = first; lo < end; lo += pr->chunk) {
        int n = lo + pr->chunk <= end ? pr->chunk : end - lo;
        v[0] += probe_chunk(pr, lo, n, 0, false, &h);
        v[1] += h;
    }
    dist_sum_double(v, 2);
    pr->loss_examples += pr->count;
    if (acc)
        *acc = pr->mse ? NAN : v[1] / pr->count;
    return v[0] / pr->count;
}

double probe_grad(struct probe *pr, float *g)
{
    struct params *p = &pr->m->p;
    double sum = 0, h;
    int first, end;
    probe_rows(pr, &first, &end);
    vec_zero(p->n, p->g);
    for (int lo = first; lo < end; lo += pr->chunk) {
        int n = lo + pr->chunk <= end ? pr->chunk : end - lo;
        sum += probe_chunk(pr, lo, n, 1.0 / pr->count, true, &h);
    }
    dist_sum_double(&sum, 1);
    dist_sum_float(p->g, p->n);
    if (g != p->g)
        vec_copy(p->n, p->g, g);
    pr->grad_examples += pr->count;
    return sum / pr->count;
}

double measure_fd_step(size_t n, const float *w, const float *v)
{
    double wn = vec_nrm2(n, w), vn = vec_nrm2(n, v);
    SAMX_ASSERT(vn > 0);
    return cbrt(0x1p-24) * (wn > 1 ? wn : 1) / vn;
}

void probe_hvp(struct probe *pr, enum hvp_kind kind, const float *v, float *hv)
{
    struct model *m = pr->m;
    size_t n = m->p.n;
    if (kind == HVP_EXACT) {
        SAMX_ASSERT(m->ops->hvp);
        struct hvp_loss l = {.mse = pr->mse, .smoothing = pr->smoothing,
                             .scale = 1.0 / pr->count};
        int first, end;
        probe_rows(pr, &first, &end);
        vec_zero(n, hv);
        for (int lo = first; lo < end; lo += pr->chunk) {
            int nb = lo + pr->chunk <= end ? pr->chunk : end - lo;
            l.label = pr->label ? pr->label + lo : NULL;
            l.y = pr->y ? pr->y + lo : NULL;
            m->ops->hvp(m, pr->x + (size_t)lo * pr->dim, nb, &l, v, hv);
        }
        dist_sum_float(hv, n);
        pr->grad_examples += 2.0 * pr->count;
        return;
    }
    /* Central difference [g(w + h v) - g(w - h v)] / 2h; weights restored by copy. */
    double h = measure_fd_step(n, m->p.w, v);
    vec_copy(n, m->p.w, pr->w0);
    vec_add_scaled(n, m->p.w, pr->w0, h, v);
    probe_grad(pr, hv);
    vec_add_scaled(n, m->p.w, pr->w0, -h, v);
    probe_grad(pr, pr->gm);
    vec_copy(n, pr->w0, m->p.w);
    const float *gm = pr->gm;
    double inv = 0.5 / h;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        hv[i] = (float)(((double)hv[i] - gm[i]) * inv);
}

/* ---- Hutchinson trace --------------------------------------------------------------------- */

void measure_trace(struct probe *pr, enum hvp_kind kind, int max_probes, double tol,
                   struct rng *r, float *v, float *hv, struct trace_result *res)
{
    size_t n = pr->m->p.n;
    double mean = 0, m2 = 0, est = 0, rel = NAN;
    int i;
    SAMX_ASSERT(max_probes >= 1);
    for (i = 1; i <= max_probes; i++) {
        draw_direction(&pr->m->p, r, 0, v);
        probe_hvp(pr, kind, v, hv);
        double s = vec_dot(n, v, hv);
        /* Welford: mean and sum of squared deviations without cancellation. */
        double dlt = s - mean;
        mean += dlt / i;
        m2 += dlt * (s - mean);
        rel = fabs(mean - est) / (fabs(est) + 1e-6);
        if (i > 1 && rel < tol)
            break;
        est = mean;
    }
    res->probes = i > max_probes ? max_probes : i;
    res->trace = mean;
    res->stderr_ = res->probes > 1 ? sqrt(m2 / (res->probes - 1) / res->probes) : NAN;
    res->rel_change = res->probes > 1 ? rel : NAN;
    res->rel_err = res->stderr_ / fabs(mean);
    res->pilot = 0;
}

/* One Rademacher probe: v^T H v. */
static double trace_probe(struct probe *pr, enum hvp_kind kind, struct rng *r, float *v,
                          float *hv)
{
    draw_direction(&pr->m->p, r, 0, v);
    probe_hvp(pr, kind, v, hv);
    return vec_dot(pr->m->p.n, v, hv);
}

void measure_trace_rel(struct probe *pr, enum hvp_kind kind, double rel_err, int pilot,
                       int max_probes, struct rng *r, float *v, float *hv,
                       struct trace_result *res)
{
    SAMX_ASSERT(rel_err > 0 && pilot >= 2 && max_probes >= 2 * pilot);
    /* Welford in both stages: mean and sum of squared deviations without cancellation. */
    double mean = 0, m2 = 0;
    for (int i = 1; i <= pilot; i++) {
        double s = trace_probe(pr, kind, r, v, hv), d = s - mean;
        mean += d / i;
        m2 += d * (s - mean);
    }
    double var = m2 / (pilot - 1), want = var / (rel_err * rel_err * mean * mean);
    int n = max_probes - pilot;
    if (isfinite(want) && want < n)
        n = want > pilot ? (int)ceil(want) : pilot;
    /* The estimate: n fresh probes; the pilot's values are not reused. */
    mean = m2 = 0;
    for (int i = 1; i <= n; i++) {
        double s = trace_probe(pr, kind, r, v, hv), d = s - mean;
        mean += d / i;
        m2 += d * (s - mean);
    }
    res->trace = mean;
    res->probes = n;
    res->pilot = pilot;
    res->stderr_ = sqrt(m2 / (n - 1) / n);
    res->rel_err = res->stderr_ / fabs(mean);
    res->rel_change = NAN;
}

/* ---- stochastic Lanczos quadrature -------------------------------------------------------- */

/* LAPACK (in OpenBLAS): eigenvalues and eigenvectors of a symmetric tridiagonal matrix. The
 * trailing argument is the Fortran length of the character argument. */
extern void dstev_(const char *jobz, const int *n, double *d, double *e, double *z,
                   const int *ldz, double *work, int *info, size_t jobz_len);

int measure_slq(struct probe *pr, enum hvp_kind kind, int steps, struct rng *r, float *const *q,
                float *hv, double *work, double *node, double *weight)
{
    size_t n = pr->m->p.n;
    SAMX_ASSERT(steps >= 1);
    double *alpha = work, *beta = alpha + steps, *z = beta + steps, *lw = z + (size_t)steps * steps;
    draw_direction(&pr->m->p, r, 0, q[0]);
    vec_scal(n, (float)(1.0 / vec_nrm2(n, q[0])), q[0]);
    int m = 0;
    double big = 0;
    for (int j = 0; j < steps; j++) {
        probe_hvp(pr, kind, q[j], hv);
        alpha[j] = vec_dot(n, q[j], hv);
        m = j + 1;
        big = fmax(big, fabs(alpha[j]));
        if (j + 1 == steps)
            break;
        /* hv -= alpha q_j + beta q_(j-1), then twice against every basis vector (in exact
         * arithmetic those projections are 0; in float32 they are what keeps T's nodes from
         * repeating, "ghost" eigenvalues). */
        vec_axpy(n, (float)-alpha[j], q[j], hv);
        if (j > 0)
            vec_axpy(n, (float)-beta[j - 1], q[j - 1], hv);
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i <= j; i++)
                vec_axpy(n, (float)-vec_dot(n, hv, q[i]), q[i], hv);
        beta[j] = vec_nrm2(n, hv);
        if (!(beta[j] > 1e-7 * big))
            break; /* invariant Krylov space: the quadrature is already exact */
        big = fmax(big, beta[j]);
        vec_copy(n, hv, q[j + 1]);
        vec_scal(n, (float)(1.0 / beta[j]), q[j + 1]);
    }
    int info = 0;
    dstev_("V", &m, alpha, beta, z, &m, lw, &info, 1);
    SAMX_ASSERT(info == 0);
    for (int k = 0; k < m; k++) {
        node[k] = alpha[k];
        weight[k] = z[(size_t)k * m] * z[(size_t)k * m]; /* column k, row 0 (column-major) */
    }
    return m;
}

void measure_density(int runs, const int *m, const double *node, const double *weight,
                     int stride, int bins, double sigma2, double overhead, double *grid,
                     double *dens)
{
    SAMX_ASSERT(runs >= 1 && bins >= 2);
    double lo = node[0], hi = node[0];
    for (int j = 0; j < runs; j++)
        for (int k = 0; k < m[j]; k++)
            lo = fmin(lo, node[(size_t)j * stride + k]), hi = fmax(hi, node[(size_t)j * stride + k]);
    lo -= overhead;
    hi += overhead;
    double var = sigma2 * fmax(1.0, hi - lo), step = (hi - lo) / (bins - 1), sum = 0;
    double c = 1.0 / sqrt(2 * 3.14159265358979323846 * var);
    for (int i = 0; i < bins; i++) {
        double x = lo + step * i, d = 0;
        for (int j = 0; j < runs; j++)
            for (int k = 0; k < m[j]; k++) {
                double u = x - node[(size_t)j * stride + k];
                d += weight[(size_t)j * stride + k] * c * exp(-u * u / (2 * var));
            }
        grid[i] = x;
        dens[i] = d / runs;
        sum += dens[i];
    }
    /* A grid of zero width (one node, no overhead) has no Riemann sum; leave the values. */
    if (sum > 0 && step > 0)
        for (int i = 0; i < bins; i++)
            dens[i] /= sum * step;
}

/* ---- power iteration ---------------------------------------------------------------------- */

/* v <- v - sum_q (v.q) q over the found eigenvectors, then v / (||v|| + 1e-6) (PyHessian). */
static void orthonormalize(size_t n, float *v, float *const *q, int nq)
{
    for (int j = 0; j < nq; j++)
        vec_axpy(n, (float)-vec_dot(n, v, q[j]), q[j], v);
    vec_scal(n, (float)(1.0 / (vec_nrm2(n, v) + 1e-6)), v);
}

void measure_eigs(struct probe *pr, enum hvp_kind kind, int k, int iters, double tol,
                  struct rng *r, float *const *vec, float *hv, struct eig_result *res)
{
    size_t n = pr->m->p.n;
    SAMX_ASSERT(k >= 1 && iters >= 1);
    for (int e = 0; e < k; e++) {
        float *v = vec[e];
        draw_direction(&pr->m->p, r, 1, v);
        vec_scal(n, (float)(1.0 / (vec_nrm2(n, v) + 1e-6)), v);
        double lam = NAN, rel = NAN;
        int it;
        for (it = 1; it <= iters; it++) {
            orthonormalize(n, v, vec, e);
            probe_hvp(pr, kind, v, hv);
            double lam_new = vec_dot(n, hv, v);
            vec_copy(n, hv, v);
            vec_scal(n, (float)(1.0 / (vec_nrm2(n, v) + 1e-6)), v);
            rel = isnan(lam) ? NAN : fabs(lam - lam_new) / (fabs(lam) + 1e-6);
            lam = lam_new;
            if (rel < tol)
                break;
        }
        /* The stored vector is used to deflate the next ones: keep it orthonormal to them. */
        orthonormalize(n, v, vec, e);
        res[e].lambda = lam;
        res[e].rel_change = rel;
        res[e].iters = it > iters ? iters : it;
    }
}

/* ---- k-step sharpness --------------------------------------------------------------------- */

/* The ASAM scale T (official: |w| + eta on weight tensors, 1 on biases; all: |w|). */
static void asam_scale(const struct params *p, const float *w, const struct sharp_opts *o,
                       float *t)
{
    vec_zero(p->n, t);
    for (int i = 0; i < p->nt; i++) {
        const struct tensor *ti = &p->t[i];
        for (size_t j = ti->off; j < ti->off + ti->n; j++)
            t[j] = o->scale_all ? fabsf(w[j])
                   : ti->is_weight ? (float)(fabs((double)w[j]) + o->eta) : 1.0f;
    }
}

/* One group: the k-step ascent of measure.h from w0 = pr->w0 (m->p.w on entry); m->p.w is
 * w0 again on return. Returns S_k; *s1 the first iterate's sharpness, *l0 = L(w0). The gradient
 * at iterate s-1 also gives the loss there, so k steps cost k gradients and one forward. */
static double sharp_group(struct probe *pr, const struct sharp_opts *o, float *delta,
                          float *g, const float *t, float *u, double *s1, double *l0)
{
    struct params *p = &pr->m->p;
    size_t n = p->n;
    double best = -INFINITY;
    *l0 = *s1 = NAN;
    vec_zero(n, u);
    for (int s = 1; s <= o->steps; s++) {
        double loss = probe_grad(pr, g); /* at w0 + delta_(s-1) */
        if (s == 1) {
            *l0 = loss;
        } else {
            best = fmax(best, loss - *l0);
            if (s == 2)
                *s1 = loss - *l0;
        }
        if (t) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++)
                g[i] *= t[i];
        }
        double gn = vec_nrm2(n, g);
        if (gn > 0) /* a zero gradient gives no ascent direction: the iterate stays */
            vec_axpy(n, (float)(o->step * o->rho / gn), g, u);
        double un = vec_nrm2(n, u);
        if (un > o->rho)
            vec_scal(n, (float)(o->rho / un), u);
        if (t) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
            for (size_t i = 0; i < n; i++)
                delta[i] = t[i] * u[i];
        } else {
            vec_copy(n, u, delta);
        }
        vec_add_scaled(n, p->w, pr->w0, 1.0, delta);
    }
    double last = probe_loss(pr, NULL) - *l0;
    if (o->steps == 1)
        *s1 = last;
    best = fmax(best, last);
    vec_copy(n, pr->w0, p->w);
    return best;
}

void measure_sharpness(struct probe *pr, const struct sharp_opts *o, float *delta, float *g,
                       float *t, float *u, struct sharp_result *res)
{
    struct params *p = &pr->m->p;
    int n_all = pr->n, m = o->m > 0 && o->m < n_all ? (int)o->m : n_all;
    vec_copy(p->n, p->w, pr->w0);
    if (o->adaptive)
        asam_scale(p, p->w, o, t);
    double sk = 0, s1 = 0, l0 = 0;
    int groups = 0;
    for (int lo = 0; lo < n_all; lo += m) {
        pr->lo = lo;
        pr->count = lo + m <= n_all ? m : n_all - lo;
        double b, c, a = sharp_group(pr, o, delta, g, o->adaptive ? t : NULL, u, &b, &c);
        double wgt = (double)pr->count / n_all;
        sk += wgt * a;
        s1 += wgt * b;
        l0 += wgt * c;
        groups++;
    }
    pr->lo = 0;
    pr->count = n_all;
    res->sharpness = sk;
    res->step1 = s1;
    res->loss = l0;
    res->groups = groups;
}

/* ---- landscape slices --------------------------------------------------------------------- */

void measure_filter_normalize(const struct params *p, const float *w, float *d, bool bias_copy)
{
    for (int i = 0; i < p->nt; i++) {
        const struct tensor *t = &p->t[i];
        if (t->ndim <= 1) {
            for (size_t j = t->off; j < t->off + t->n; j++)
                d[j] = bias_copy ? w[j] : 0.0f;
            continue;
        }
        /* One filter per leading index: a Linear weight's row, a conv's output channel. */
        size_t rows = (size_t)t->shape[0], len = t->n / rows;
        for (size_t r = 0; r < rows; r++) {
            size_t o = t->off + r * len;
            double dn = 0, wn = 0;
            for (size_t j = 0; j < len; j++) {
                dn += (double)d[o + j] * d[o + j];
                wn += (double)w[o + j] * w[o + j];
            }
            double s = sqrt(wn) / (sqrt(dn) + 1e-10);
            for (size_t j = 0; j < len; j++)
                d[o + j] = (float)(d[o + j] * s);
        }
    }
}

/* Losses on the grid alpha_i = -range + 2 range i / (points - 1) (and beta_j likewise) around
 * the current weights along filter-normalised directions drawn from (seed, "eval.landscape",
 * 0 and 1), the same raw draws every epoch; written as CSV to path (NULL: computed only, a
 * job's follower ranks). d1, d2: P-float workspaces. Weights restored by copy. */
static int landscape_write(struct measure *ms, const char *path, float *d1, float *d2,
                           struct err *e)
{
    struct measure_landscape_cfg *c = &ms->land;
    struct probe *pr = &c->pr;
    struct params *p = &pr->m->p;
    size_t n = p->n;
    struct rng r;
    float *dir[2] = {d1, d2};
    for (int k = 0; k < c->dims; k++) {
        rng_init(&r, ms->seed, "eval.landscape", (uint64_t)k);
        draw_direction(p, &r, 1, dir[k]);
        measure_filter_normalize(p, p->w, dir[k], c->bias_copy);
    }
    vec_copy(n, p->w, pr->w0);
    int pts = (int)c->points, nb = c->dims == 2 ? pts : 1;
    size_t len = 0, cap = ms->csv_cap;
    char *buf = ms->csv;
    bool acc = !pr->mse;
    len += (size_t)snprintf(buf + len, cap - len, "%s%s\n", c->dims == 2 ? "alpha,beta" : "alpha",
                            acc ? ",loss,acc" : ",loss");
    for (int i = 0; i < pts; i++) {
        double a = -c->range + 2.0 * c->range * i / (pts - 1);
        for (int j = 0; j < nb; j++) {
            double b = c->dims == 2 ? -c->range + 2.0 * c->range * j / (pts - 1) : 0;
            const float *w0 = pr->w0;
            float *w = p->w;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > PAR_MIN)
            for (size_t q = 0; q < n; q++)
                w[q] = (float)((double)w0[q] + a * d1[q] + (b != 0 ? b * d2[q] : 0.0));
            double ac, l = probe_loss(pr, &ac);
            char nb1[32], nb2[32], nb3[32], nb4[32];
            if (c->dims == 2)
                len += (size_t)snprintf(buf + len, cap - len, "%s,%s,", cfg_fmt_num(nb1, a),
                                        cfg_fmt_num(nb2, b));
            else
                len += (size_t)snprintf(buf + len, cap - len, "%s,", cfg_fmt_num(nb1, a));
            if (acc)
                len += (size_t)snprintf(buf + len, cap - len, "%s,%s\n", cfg_fmt_num(nb3, l),
                                        cfg_fmt_num(nb4, ac));
            else
                len += (size_t)snprintf(buf + len, cap - len, "%s\n", cfg_fmt_num(nb3, l));
            SAMX_ASSERT(len < cap);
        }
    }
    vec_copy(n, pr->w0, p->w);
    return path ? io_write_atomic(path, buf, len, e) : 0;
}

/* ---- configuration ------------------------------------------------------------------------ */

/* Keys every measurement has; resolves the split to its data set. */
static int read_common(struct cfg_node *c, struct experiment *x, long *every, long *examples,
                       int *split, const struct dataset **ds, struct err *e)
{
    if (cfg_int(c, "every", 1, every, e) < 0 || cfg_int(c, "examples", 1024, examples, e) < 0 ||
        cfg_enum(c, "split", split_names, 0, split, e) < 0)
        return -1;
    char *path = cfg_path(c);
    int rc = 0;
    const struct dataset *sets[] = {&x->data.train, &x->data.val, &x->data.test};
    *ds = sets[*split];
    if (*every < 0)
        rc = cfg_err(e, cfg_child(c, "every"), "'%s.every' must be >= 0 (0: off)", path);
    else if (*examples < 1 || *examples > 10000000)
        rc = cfg_err(e, cfg_child(c, "examples"), "'%s.examples' must be in [1, 10000000]",
                     path);
    else if ((*ds)->n == 0)
        rc = cfg_err(e, cfg_child(c, "split"), "'%s.split': the %s split is empty%s", path,
                     split_names[*split], *split == 1 ? " (set data.val_split)" : "");
    free(path);
    return rc;
}

/* hvp key: exact is the default where the model has the op, and an error where it has not.
 * An exact one gets its workspace here, at build time. */
static int read_hvp(struct cfg_node *c, struct model *m, int *hvp, struct err *e)
{
    if (cfg_enum(c, "hvp", hvp_kind_names, m->ops->hvp ? HVP_EXACT : HVP_FINITE_DIFFERENCE, hvp,
                 e) < 0)
        return -1;
    if (*hvp == HVP_EXACT && !m->ops->hvp)
        return cfg_err(e, cfg_child(c, "hvp"), "model '%s' has no exact Hessian-vector product "
                                               "(use finite_difference)", m->ops->name);
    if (*hvp == HVP_EXACT)
        model_hvp_reserve(m);
    return 0;
}

static int range_err(struct err *e, struct cfg_node *c, const char *key, const char *what)
{
    char *path = cfg_path(c);
    cfg_err(e, cfg_child(c, key), "'%s.%s' must be %s", path, key, what);
    free(path);
    return -1;
}

int measure_init(struct measure *ms, struct cfg_node *root, struct experiment *x,
                 bool force_landscape, struct err *e)
{
    memset(ms, 0, sizeof *ms);
    ms->seed = (uint64_t)x->seed;
    ms->batch_size = x->batch_size;
    if (!cfg_child(root, "eval") && !force_landscape)
        return 0;
    struct cfg_node *ev = cfg_map(root, "eval", e), *c;
    if (!ev)
        return -1;
    struct model *m = &x->model;
    bool mse = x->loss == LOSS_MSE;
    float ls = (float)x->label_smoothing;
    const struct dataset *ds;
    int k;

    if (cfg_child(ev, "hessian_trace")) {
        struct measure_trace_cfg *t = &ms->trace;
        if (!(c = cfg_map(ev, "hessian_trace", e)) ||
            read_common(c, x, &t->every, &t->examples, &t->split, &ds, e) < 0 ||
            cfg_num(c, "rel_err", 0.05, &t->rel_err, e) < 0 ||
            cfg_int(c, "probes", 1000, &t->probes, e) < 0 ||
            /* the pilot fits under a cap given as the old fixed count (probes: 20 -> 10) */
            cfg_int(c, "pilot", t->probes / 2 < 20 ? t->probes / 2 : 20, &t->pilot, e) < 0 ||
            cfg_num(c, "tol", 0, &t->tol, e) < 0 ||
            read_hvp(c, m, &t->hvp, e) < 0 ||
            cfg_enum(c, "normalize", normalize_names, NORM_GRAD, &t->normalize, e) < 0)
            return -1;
        if (!(t->rel_err >= 0 && t->rel_err < 1))
            return range_err(e, c, "rel_err", "in [0, 1) (0: a fixed number of probes)");
        if (t->probes < 1 || t->probes > 100000)
            return range_err(e, c, "probes", "in [1, 100000]");
        if (t->tol < 0)
            return range_err(e, c, "tol", ">= 0");
        if (t->rel_err > 0 && t->probes < 4)
            return range_err(e, c, "probes", "at least 4 with rel_err > 0 (the cap: a pilot of "
                                             "2 or more and as many fresh probes; rel_err: 0 "
                                             "for a fixed count)");
        if (t->rel_err > 0 && (t->pilot < 2 || 2 * t->pilot > t->probes))
            return range_err(e, c, "pilot", "at least 2 and at most half of 'probes' (the cap)");
        if (t->rel_err > 0 && t->tol > 0)
            return range_err(e, c, "tol", "0 with rel_err > 0 (PyHessian's stopping rule, tol, "
                                          "applies with rel_err: 0 only)");
        if ((t->on = t->every > 0 && !x->plan))
            probe_init(&t->pr, m, ds, (int)t->examples, ms->seed, (uint64_t)t->split, mse, ls);
    }
    if (cfg_child(ev, "lambda_max")) {
        struct measure_lambda_cfg *l = &ms->lambda;
        if (!(c = cfg_map(ev, "lambda_max", e)) ||
            read_common(c, x, &l->every, &l->examples, &l->split, &ds, e) < 0 ||
            cfg_int(c, "iters", 20, &l->iters, e) < 0 || cfg_num(c, "tol", 1e-3, &l->tol, e) < 0 ||
            cfg_int(c, "k", 1, &l->k, e) < 0 || read_hvp(c, m, &l->hvp, e) < 0)
            return -1;
        if (l->iters < 1 || l->iters > 100000)
            return range_err(e, c, "iters", "in [1, 100000]");
        if (l->tol < 0)
            return range_err(e, c, "tol", ">= 0");
        size_t n_real = 0;
        for (k = 0; k < m->p.nt; k++)
            n_real += m->p.t[k].n;
        if (l->k < 1 || l->k > 64 || (size_t)l->k > n_real)
            return range_err(e, c, "k", "in [1, 64] and at most the number of parameters");
        if ((l->on = l->every > 0 && !x->plan)) {
            probe_init(&l->pr, m, ds, (int)l->examples, ms->seed, (uint64_t)l->split, mse, ls);
            l->vec = xmalloc((size_t)l->k * sizeof *l->vec);
            for (k = 0; k < l->k; k++)
                l->vec[k] = xfloats(m->p.n);
        }
    }
    if (cfg_child(ev, "sharpness")) {
        struct measure_sharp_cfg *s = &ms->sharp;
        struct sharp_opts *o = &s->o;
        long steps;
        int scale;
        if (!(c = cfg_map(ev, "sharpness", e)) ||
            read_common(c, x, &s->every, &s->examples, &s->split, &ds, e) < 0 ||
            cfg_num(c, "rho", 0.05, &o->rho, e) < 0 || cfg_int(c, "steps", 5, &steps, e) < 0 ||
            cfg_num(c, "step", 1.0, &o->step, e) < 0 || cfg_int(c, "m", 0, &o->m, e) < 0 ||
            cfg_bool(c, "adaptive", false, &o->adaptive, e) < 0 ||
            cfg_num(c, "eta", 0.01, &o->eta, e) < 0 ||
            cfg_enum(c, "scale", scale_names, 0, &scale, e) < 0)
            return -1;
        o->steps = (int)steps;
        o->scale_all = scale == 1;
        if (!(o->rho > 0))
            return range_err(e, c, "rho", "> 0");
        if (steps < 1 || steps > 100000)
            return range_err(e, c, "steps", "in [1, 100000]");
        if (!(o->step > 0))
            return range_err(e, c, "step", "> 0");
        if (o->m < 0)
            return range_err(e, c, "m", ">= 0 (0: one group of all examples)");
        if (o->eta < 0)
            return range_err(e, c, "eta", ">= 0");
        if ((s->on = s->every > 0 && !x->plan))
            probe_init(&s->pr, m, ds, (int)s->examples, ms->seed, (uint64_t)s->split, mse, ls);
    }
    if (cfg_child(ev, "hessian_density")) {
        struct measure_density_cfg *d = &ms->density;
        if (!(c = cfg_map(ev, "hessian_density", e)) ||
            read_common(c, x, &d->every, &d->examples, &d->split, &ds, e) < 0 ||
            cfg_int(c, "steps", 100, &d->steps, e) < 0 ||
            cfg_int(c, "runs", 1, &d->runs, e) < 0 ||
            cfg_int(c, "bins", 10000, &d->bins, e) < 0 ||
            cfg_num(c, "sigma2", 1e-5, &d->sigma2, e) < 0 ||
            cfg_num(c, "overhead", 0.01, &d->overhead, e) < 0 || read_hvp(c, m, &d->hvp, e) < 0)
            return -1;
        size_t n_real = 0;
        for (k = 0; k < m->p.nt; k++)
            n_real += m->p.t[k].n;
        if (d->steps < 1 || d->steps > 1000 || (size_t)d->steps > n_real)
            return range_err(e, c, "steps", "in [1, 1000] and at most the number of parameters");
        if (d->runs < 1 || d->runs > 1000)
            return range_err(e, c, "runs", "in [1, 1000]");
        if (d->bins < 2 || d->bins > 1000000)
            return range_err(e, c, "bins", "in [2, 1000000]");
        if (!(d->sigma2 > 0))
            return range_err(e, c, "sigma2", "> 0");
        if (!(d->overhead >= 0))
            return range_err(e, c, "overhead", ">= 0");
        if ((d->on = d->every > 0 && !x->plan)) {
            probe_init(&d->pr, m, ds, (int)d->examples, ms->seed, (uint64_t)d->split, mse, ls);
            d->q = xmalloc((size_t)d->steps * sizeof *d->q);
            for (k = 0; k < d->steps; k++)
                d->q[k] = xfloats(m->p.n);
            d->node = xmalloc((size_t)(d->runs * d->steps) * sizeof *d->node);
            d->weight = xmalloc((size_t)(d->runs * d->steps) * sizeof *d->weight);
            d->work = xmalloc(MEASURE_SLQ_WORK(d->steps) * sizeof *d->work);
            d->m = xmalloc((size_t)d->runs * sizeof *d->m);
            d->grid = xmalloc((size_t)d->bins * sizeof *d->grid);
            d->dens = xmalloc((size_t)d->bins * sizeof *d->dens);
            size_t lines = (size_t)d->bins > (size_t)(d->runs * d->steps) ? (size_t)d->bins
                                                                          : (size_t)(d->runs * d->steps);
            d->csv_cap = 64 + lines * 80;
            d->csv = xmalloc(d->csv_cap);
        }
    }
    if (cfg_child(ev, "landscape") || force_landscape) {
        struct measure_landscape_cfg *l = &ms->land;
        int bias;
        if (!(c = cfg_map(ev, "landscape", e)) ||
            read_common(c, x, &l->every, &l->examples, &l->split, &ds, e) < 0 ||
            cfg_int(c, "dims", 1, &l->dims, e) < 0 || cfg_int(c, "points", 21, &l->points, e) < 0 ||
            cfg_num(c, "range", 1.0, &l->range, e) < 0 ||
            cfg_enum(c, "bias", bias_names, 0, &bias, e) < 0)
            return -1;
        l->bias_copy = bias == 1;
        if (l->dims != 1 && l->dims != 2)
            return range_err(e, c, "dims", "1 or 2");
        if (l->points < 2 || l->points > 1001)
            return range_err(e, c, "points", "in [2, 1001]");
        if (!(l->range > 0))
            return range_err(e, c, "range", "> 0");
        if ((l->on = (l->every > 0 || force_landscape) && !x->plan)) {
            probe_init(&l->pr, m, ds, (int)l->examples, ms->seed, (uint64_t)l->split, mse, ls);
            size_t cells = (size_t)l->points * (l->dims == 2 ? (size_t)l->points : 1);
            ms->csv_cap = 64 + cells * 4 * 32;
            ms->csv = xmalloc(ms->csv_cap);
        }
    }
    ms->any = ms->trace.on || ms->lambda.on || ms->sharp.on || ms->land.on || ms->density.on;
    if (ms->any) {
        ms->w_save = xfloats(m->p.n);
        ms->g_save = xfloats(m->p.n);
        for (k = 0; k < 4; k++)
            ms->ws[k] = xfloats(m->p.n);
    }
    return 0;
}

void measure_free(struct measure *ms)
{
    probe_free(&ms->trace.pr);
    probe_free(&ms->lambda.pr);
    probe_free(&ms->sharp.pr);
    probe_free(&ms->land.pr);
    struct measure_density_cfg *d = &ms->density;
    probe_free(&d->pr);
    if (d->q)
        for (long k = 0; k < d->steps; k++)
            free(d->q[k]);
    free(d->q);
    free(d->node);
    free(d->weight);
    free(d->work);
    free(d->m);
    free(d->grid);
    free(d->dens);
    free(d->csv);
    if (ms->lambda.vec)
        for (long k = 0; k < ms->lambda.k; k++)
            free(ms->lambda.vec[k]);
    free(ms->lambda.vec);
    free(ms->w_save);
    free(ms->g_save);
    for (int k = 0; k < 4; k++)
        free(ms->ws[k]);
    free(ms->csv);
    memset(ms, 0, sizeof *ms);
}

/* ---- per epoch ---------------------------------------------------------------------------- */

/* The SLQ runs of an epoch from (seed, "eval.density", epoch): records the extreme nodes (over
 * all runs), the SLQ trace estimate P * mean_j sum_k w_jk theta_jk and the Lanczos steps taken,
 * and writes <dir>/density/epoch_<epoch>.csv (eigenvalue,density) and
 * epoch_<epoch>_nodes.csv (run,node,weight). */
static int density_epoch(struct measure *ms, long epoch, const char *dir, struct record *r,
                         struct err *e)
{
    struct measure_density_cfg *d = &ms->density;
    const struct params *p = &d->pr.m->p;
    size_t n_real = 0;
    for (int k = 0; k < p->nt; k++)
        n_real += p->t[k].n;
    struct rng rg;
    rng_init(&rg, ms->seed, "eval.density", (uint64_t)epoch);
    int runs = (int)d->runs, steps = (int)d->steps, min_m = steps;
    double lo = 0, hi = 0, tr = 0;
    for (int j = 0; j < runs; j++) {
        double *t = d->node + (size_t)j * steps, *w = d->weight + (size_t)j * steps;
        d->m[j] = measure_slq(&d->pr, (enum hvp_kind)d->hvp, steps, &rg, d->q, ms->ws[1],
                              d->work, t, w);
        min_m = d->m[j] < min_m ? d->m[j] : min_m;
        double s = 0;
        if (j == 0)
            lo = hi = t[0];
        for (int k = 0; k < d->m[j]; k++) {
            lo = fmin(lo, t[k]), hi = fmax(hi, t[k]);
            s += w[k] * t[k];
        }
        tr += s * (double)n_real / runs;
    }
    measure_density(runs, d->m, d->node, d->weight, steps, (int)d->bins, d->sigma2, d->overhead,
                    d->grid, d->dens);
    record_num(r, "hessian_density_lambda_min", lo);
    record_num(r, "hessian_density_lambda_max", hi);
    record_num(r, "hessian_density_trace", tr);
    record_num(r, "hessian_density_steps", min_m);
    if (!dir)
        return 0;
    char *sub = xasprintf("%s/density", dir);
    char *path = xasprintf("%s/epoch_%04ld.csv", sub, epoch);
    char *npath = xasprintf("%s/epoch_%04ld_nodes.csv", sub, epoch);
    int rc = io_mkdir_p(sub, e);
    size_t len = 0, cap = d->csv_cap;
    char *buf = d->csv;
    char b1[32], b2[32];
    if (rc == 0) {
        len = (size_t)snprintf(buf, cap, "eigenvalue,density\n");
        for (long i = 0; i < d->bins; i++)
            len += (size_t)snprintf(buf + len, cap - len, "%s,%s\n", cfg_fmt_num(b1, d->grid[i]),
                                    cfg_fmt_num(b2, d->dens[i]));
        SAMX_ASSERT(len < cap);
        rc = io_write_atomic(path, buf, len, e);
    }
    if (rc == 0) {
        len = (size_t)snprintf(buf, cap, "run,node,weight\n");
        for (int j = 0; j < runs; j++)
            for (int k = 0; k < d->m[j]; k++)
                len += (size_t)snprintf(buf + len, cap - len, "%d,%s,%s\n", j,
                                        cfg_fmt_num(b1, d->node[(size_t)j * steps + k]),
                                        cfg_fmt_num(b2, d->weight[(size_t)j * steps + k]));
        SAMX_ASSERT(len < cap);
        rc = io_write_atomic(npath, buf, len, e);
    }
    free(sub);
    free(path);
    free(npath);
    return rc;
}

static bool due(bool on, long every, long epoch) { return on && every > 0 && epoch % every == 0; }

int measure_epoch(struct measure *ms, struct experiment *x, long epoch, const char *dir,
                  struct record *r, struct err *e)
{
    bool d_trace = due(ms->trace.on, ms->trace.every, epoch);
    bool d_lambda = due(ms->lambda.on, ms->lambda.every, epoch);
    bool d_sharp = due(ms->sharp.on, ms->sharp.every, epoch);
    bool d_land = due(ms->land.on, ms->land.every, epoch);
    bool d_density = due(ms->density.on, ms->density.every, epoch);
    if (!(d_trace || d_lambda || d_sharp || d_land || d_density))
        return 0;
    double t0 = rundir_now();
    struct params *p = &x->model.p;
    struct probe *prs[] = {&ms->trace.pr, &ms->lambda.pr, &ms->sharp.pr, &ms->land.pr,
                           &ms->density.pr};
    for (int i = 0; i < 5; i++)
        prs[i]->grad_examples = prs[i]->loss_examples = 0;
    /* The training state: whatever a measurement does to w and g, both come back bit for bit. */
    vec_copy(p->n, p->w, ms->w_save);
    vec_copy(p->n, p->g, ms->g_save);
    int rc = 0;
    struct rng rg;
    if (d_trace) {
        struct measure_trace_cfg *t = &ms->trace;
        struct trace_result res;
        probe_grad(&t->pr, ms->ws[0]);
        double gn = vec_nrm2(p->n, ms->ws[0]);
        rng_init(&rg, ms->seed, "eval.hutchinson", (uint64_t)epoch);
        if (t->rel_err > 0)
            measure_trace_rel(&t->pr, (enum hvp_kind)t->hvp, t->rel_err, (int)t->pilot,
                              (int)t->probes, &rg, ms->ws[0], ms->ws[1], &res);
        else
            measure_trace(&t->pr, (enum hvp_kind)t->hvp, (int)t->probes, t->tol, &rg,
                          ms->ws[0], ms->ws[1], &res);
        record_num(r, "hessian_trace", res.trace);
        record_num(r, "hessian_trace_stderr", res.stderr_);
        record_num(r, "hessian_trace_rel_err", res.rel_err);
        record_num(r, "hessian_trace_probes", res.probes);
        if (t->rel_err > 0)
            record_num(r, "hessian_trace_pilot_probes", res.pilot);
        else
            record_num(r, "hessian_trace_rel_change", res.rel_change);
        record_num(r, "hessian_grad_norm", gn);
        if (t->normalize != NORM_NONE)
            record_num(r, "hessian_trace_normalized",
                       res.trace / (t->normalize == NORM_GRAD ? gn : gn * gn));
    }
    if (d_lambda) {
        struct measure_lambda_cfg *l = &ms->lambda;
        struct eig_result res[64];
        rng_init(&rg, ms->seed, "eval.power", (uint64_t)epoch);
        measure_eigs(&l->pr, (enum hvp_kind)l->hvp, (int)l->k, (int)l->iters, l->tol, &rg, l->vec,
                     ms->ws[1], res);
        record_num(r, "lambda_max", res[0].lambda);
        record_num(r, "lambda_max_iters", res[0].iters);
        record_num(r, "lambda_max_rel_change", res[0].rel_change);
        for (long k = 1; k < l->k; k++) {
            char key[48];
            snprintf(key, sizeof key, "lambda_%ld", k + 1);
            record_num(r, key, res[k].lambda);
            snprintf(key, sizeof key, "lambda_%ld_iters", k + 1);
            record_num(r, key, res[k].iters);
        }
    }
    if (d_sharp) {
        struct sharp_result res;
        measure_sharpness(&ms->sharp.pr, &ms->sharp.o, ms->ws[0], ms->ws[1], ms->ws[2],
                          ms->ws[3], &res);
        record_num(r, "sharpness", res.sharpness);
        record_num(r, "sharpness_step1", res.step1);
        record_num(r, "sharpness_loss", res.loss);
    }
    if (d_density && rc == 0)
        rc = density_epoch(ms, epoch, dir, r, e);
    /* Slices are only written, never recorded: without a directory a lone process skips them,
     * but a job's other ranks compute their shares of rank 0's losses with it. */
    if (d_land && rc == 0 && !dir && dist_size() > 1) {
        rc = landscape_write(ms, NULL, ms->ws[0], ms->ws[1], e);
    } else if (d_land && rc == 0 && dir) {
        char *sub = xasprintf("%s/landscape", dir);
        char *path = xasprintf("%s/epoch_%04ld.csv", sub, epoch);
        rc = io_mkdir_p(sub, e) < 0 ? -1 : landscape_write(ms, path, ms->ws[0], ms->ws[1], e);
        free(sub);
        free(path);
    }
    vec_copy(p->n, ms->w_save, p->w);
    vec_copy(p->n, ms->g_save, p->g);
    double ge = 0, le = 0;
    for (int i = 0; i < 5; i++) {
        ge += prs[i]->grad_examples;
        le += prs[i]->loss_examples;
    }
    record_num(r, "measure_seconds", rundir_now() - t0);
    record_num(r, "measure_grad_evals", ge / ms->batch_size);
    record_num(r, "measure_loss_evals", le / ms->batch_size);
    return rc;
}

/* ---- samx landscape RUN_DIR --------------------------------------------------------------- */

int measure_landscape_run(const char *run_dir, const char *const *overrides, int n_overrides,
                          struct err *e)
{
    char *cfg_file = xasprintf("%s/config.yaml", run_dir);
    char *sub = xasprintf("%s/landscape", run_dir);
    char *out = xasprintf("%s/final.csv", sub);
    /* The final weights (and any BatchNorm buffers) come in through model.init_from, which
     * checks every name and shape; the path is single-quoted YAML ('' for a quote). */
    size_t len = strlen(run_dir);
    char *quoted = xmalloc(2 * len + 1), *q = quoted;
    for (const char *c = run_dir; *c; c++) {
        if (*c == '\'')
            *q++ = '\'';
        *q++ = *c;
    }
    *q = 0;
    char *init = xasprintf("model.init_from='%s/model.safetensors'", quoted);
    const char **ov = xmalloc(((size_t)n_overrides + 1) * sizeof *ov);
    for (int i = 0; i < n_overrides; i++)
        ov[i] = overrides[i];
    ov[n_overrides] = init;
    struct run_opts o = {.config = cfg_file, .overrides = ov, .n_overrides = n_overrides + 1,
                         .quiet = true};
    struct experiment x;
    int rc = experiment_build(&x, &o, e);
    if (rc == 0) {
        /* Rebuild the measurements with landscape forced on (defaults if the run had none). */
        measure_free(&x.measure);
        rc = measure_init(&x.measure, x.cfg.root, &x, true, e);
    }
    if (rc == 0)
        rc = io_mkdir_p(sub, e) < 0 ? -1
                                     : landscape_write(&x.measure, out, x.measure.ws[0],
                                                       x.measure.ws[1], e);
    experiment_free(&x);
    free(ov);
    free(init);
    free(quoted);
    free(cfg_file);
    free(sub);
    free(out);
    return rc;
}
