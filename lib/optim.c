#include "optim.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "dist.h"
#include "tune.h"

const struct optim_ops *const optim_registry[] = {
    &optim_sgd,   &optim_adamw, &optim_sam,   &optim_asam,    &optim_wsam, &optim_crsam,
    &optim_samar, &optim_gsam,  &optim_vasso, &optim_looksam, &optim_esam, &optim_fsam,
    &optim_msam,  &optim_gam,   &optim_lookbehind, &optim_fishersam, &optim_rsam, NULL,
};

const struct optim_ops *optim_find(const char *name)
{
    for (int i = 0; optim_registry[i]; i++)
        if (strcmp(optim_registry[i]->name, name) == 0)
            return optim_registry[i];
    return NULL;
}

double closure_grad(struct closure *f, struct params *p, int pass, const int *sel, int n)
{
    double loss = f->grad(f, p, pass, sel, n);
    *(pass & PASS_LOCAL ? &f->evals_local : &f->evals) += sel ? (double)n / f->batch : 1.0;
    return loss;
}

void optim_groups(const struct optim *o, const struct closure *f, struct optim_groups *g)
{
    int batch = f->batch;
    g->m = o->m > 0 && o->m < batch ? (int)o->m : batch;
    g->n = (batch + g->m - 1) / g->m;
    g->local = f->procs > 1 && g->n > 1;
    g->lo = 0, g->hi = g->n;
    if (g->local)
        dist_split(g->n, f->procs, f->proc, &g->lo, &g->hi);
}

void closure_combine(struct closure *f, const struct optim_groups *g, float *const *v, int nv,
                     size_t n, double *d, int nd)
{
    if (!g->local)
        return;
    SAMX_ASSERT(f->combine != NULL);
    if (g->lo == g->hi) /* no group here: this process adds nothing */
        for (int i = 0; i < nv; i++)
            vec_zero(n, v[i]);
    f->combine(f, v, nv, n, d, nd);
}

enum { PERTURB_ALL, PERTURB_NORM, PERTURB_NO_NORM };
static const char *const perturb_names[] = {"all", "norm", "no_norm", NULL};

/* optimizer.perturb (optim.h): the per-tensor selection, or none for `all`. */
static int perturb_build(struct optim *o, struct cfg_node *c, struct err *e)
{
    const struct params *p = o->env.p;
    /* Read when given, so the configs (and run ids) of runs without it are unchanged. */
    if (!cfg_child(c, "perturb"))
        return 0;
    int kind;
    if (cfg_enum(c, "perturb", perturb_names, PERTURB_ALL, &kind, e) < 0)
        return -1;
    if (kind == PERTURB_ALL)
        return 0;
    SAMX_ASSERT(p);
    o->psel = xcalloc((size_t)p->nt, 1);
    int n_sel = 0;
    for (int k = 0; k < p->nt; k++) {
        o->psel[k] = (unsigned char)(p->t[k].is_norm == (kind == PERTURB_NORM));
        n_sel += o->psel[k];
    }
    if (n_sel == 0)
        return cfg_err(e, cfg_child(c, "perturb"),
                       kind == PERTURB_NORM
                           ? "'optimizer.perturb: norm' selects no parameter: the model has no "
                             "normalization layers (BatchNorm)"
                           : "'optimizer.perturb: no_norm' selects no parameter: every tensor "
                             "of the model is a normalization parameter");
    o->pe = optim_scratch(o);
    return 0;
}

static int optim_build(struct optim *o, struct cfg_node *c, const struct optim_env *env,
                       const char *def_name, bool want_base, struct err *e)
{
    const char *name;
    memset(o, 0, sizeof *o);
    o->env = *env;
    if (cfg_str(c, "name", def_name, &name, e) < 0)
        return -1;
    o->ops = optim_find(name);
    struct cfg_node *nn = cfg_child(c, "name");
    if (!o->ops)
        return cfg_err(e, nn, "unknown optimizer '%s' (see 'samx list optimizers')", name);
    if (want_base && o->ops->wrapper)
        return cfg_err(e, nn, "'%s' is a SAM-family method; the base optimizer must be sgd or "
                              "adamw", name);
    if (o->ops->wrapper) {
        struct cfg_node *bc = cfg_map(c, "base", e);
        if (!bc)
            return -1;
        o->base = xcalloc(1, sizeof *o->base);
        if (optim_build(o->base, bc, env, "sgd", true, e) < 0)
            return -1;
        if (cfg_int(c, "m", 0, &o->m, e) < 0)
            return -1;
        if (o->m < 0)
            return cfg_err(e, cfg_child(c, "m"), "'optimizer.m' must be >= 0 (0: whole batch)");
        o->ramp = xmalloc((size_t)env->max_batch * sizeof *o->ramp);
        for (int i = 0; i < env->max_batch; i++)
            o->ramp[i] = i;
        if (perturb_build(o, c, e) < 0)
            return -1;
    }
    return o->ops->init(o, c, e);
}

int optim_init(struct optim *o, struct cfg_node *c, const struct optim_env *env, struct err *e)
{
    return optim_build(o, c, env, "sgd", false, e);
}

void optim_release(struct optim *o)
{
    if (o->base) {
        optim_release(o->base);
        free(o->base);
    }
    if (o->ops && o->ops->release)
        o->ops->release(o);
    for (int i = 0; i < o->n_buf; i++)
        free(o->buf[i]);
    for (int i = 0; i < o->n_scratch; i++)
        free(o->scratch[i]);
    free(o->ramp);
    free(o->psel);
    free(o->priv);
    memset(o, 0, sizeof *o);
}

void optim_begin_step(struct optim *o, long t)
{
    for (struct optim *x = o; x; x = x->base) {
        x->t = t;
        for (int i = 0; i < x->n_hp; i++)
            if (!x->hp[i].adaptive)
                x->hp[i].v = sched_at(&x->hp[i].s, t);
    }
}

void optim_step(struct optim *o, struct params *p, struct closure *f, struct step_info *info)
{
    info->loss_perturbed = NAN;
    if (o->ops->step) {
        o->ops->step(o, p, f, info);
        return;
    }
    info->loss = closure_grad(f, p, PASS_FIRST, NULL, 0);
    if (o->ops->apply_norm) {
        info->grad_norm = o->ops->apply_norm(o, p, p->g);
        return;
    }
    info->grad_norm = vec_nrm2(p->n, p->g);
    o->ops->apply(o, p, p->g);
}

struct hparam *optim_hparam(struct optim *o, struct cfg_node *c, const char *key, double def,
                            double lo, double hi, struct err *e)
{
    SAMX_ASSERT(o->n_hp < OPTIM_MAX_HP);
    struct hparam *h = &o->hp[o->n_hp];
    h->name = key;
    if (sched_parse(&h->s, c, key, def, lo, hi, &o->env.clk, e) < 0)
        return NULL;
    h->v = sched_at(&h->s, 0);
    o->n_hp++;
    return h;
}

struct hparam *optim_adaptive(struct optim *o, const char *name, double v)
{
    SAMX_ASSERT(o->n_hp < OPTIM_MAX_HP);
    struct hparam *h = &o->hp[o->n_hp++];
    h->name = name;
    sched_constant(&h->s, v);
    h->v = v;
    h->adaptive = true;
    optim_state(o, name, &h->v, -DBL_MAX, DBL_MAX, false);
    return h;
}

float *optim_buf(struct optim *o, const char *name)
{
    SAMX_ASSERT(o->n_buf < OPTIM_MAX_BUF);
    o->buf_name[o->n_buf] = name;
    return o->buf[o->n_buf++] = o->env.plan ? NULL : xfloats(o->env.n);
}

float *optim_scratch(struct optim *o)
{
    SAMX_ASSERT(o->n_scratch < OPTIM_MAX_BUF);
    return o->scratch[o->n_scratch++] = o->env.plan ? NULL : xfloats(o->env.n);
}

void optim_state(struct optim *o, const char *name, double *v, double lo, double hi,
                 bool integral)
{
    SAMX_ASSERT(o->n_state < OPTIM_MAX_STATE && lo <= hi);
    o->state_name[o->n_state] = name;
    o->state_lo[o->n_state] = lo;
    o->state_hi[o->n_state] = hi;
    o->state_int[o->n_state] = integral;
    o->state[o->n_state++] = v;
}

void optim_each_hparam(const struct optim *o, void (*fn)(void *ctx, const struct hparam *h),
                       void *ctx)
{
    for (const struct optim *x = o; x; x = x->base)
        for (int i = 0; i < x->n_hp; i++)
            fn(ctx, &x->hp[i]);
}

struct hparam *optim_hparam_find(struct optim *o, const char *name)
{
    for (int i = 0; i < o->n_hp; i++)
        if (strcmp(o->hp[i].name, name) == 0)
            return &o->hp[i];
    return NULL;
}

double sam_ascent(size_t n, const float *g, double rho, float *e)
{
    return sam_ascent_eps(n, g, rho, 1e-12, e);
}

bool optim_one_group(const struct optim *o, int batch) { return o->m == 0 || o->m >= batch; }

float sam_scale(double gnorm, double rho, double eps)
{
    return gnorm == 0 || rho == 0 ? 0.0f : (float)(rho / (gnorm + eps));
}

double sam_ascent_eps(size_t n, const float *g, double rho, double eps, float *e)
{
    double norm = vec_nrm2(n, g);
    float s = sam_scale(norm, rho, eps);
    if (s == 0) {
        vec_zero(n, e);
        return norm;
    }
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        e[i] = s * g[i];
    return norm;
}

void optim_perturb_filter(const struct optim *o, const struct params *p, float *x)
{
    if (!o->psel)
        return;
    for (int k = 0; k < p->nt; k++)
        if (!o->psel[k])
            vec_zero(p->t[k].n, x + p->t[k].off);
}

double optim_ascent(const struct optim *o, const struct params *p, const float *g, double rho,
                    double eps, bool adaptive, float *e)
{
    size_t n = p->n;
    if (!adaptive && !o->psel)
        return sam_ascent_eps(n, g, rho, eps, e);
    const float *w = p->w;
    /* e holds t g first (padding: g is 0 there), so the norm needs no extra buffer. */
    if (adaptive) {
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
        for (size_t i = 0; i < n; i++)
            e[i] = fabsf(w[i]) * g[i];
    } else {
        vec_copy(n, g, e);
    }
    optim_perturb_filter(o, p, e);
    double norm = vec_nrm2(n, e);
    float s = sam_scale(norm, rho, eps);
    if (s == 0) {
        vec_zero(n, e);
        return norm;
    }
    /* (s g) w^2, as the reference codes order it; the filter's zeros stay zero. */
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
    for (size_t i = 0; i < n; i++)
        e[i] = adaptive ? (e[i] == 0 ? 0.0f : s * g[i] * (w[i] * w[i])) : s * e[i];
    return norm;
}

struct perturb_args {
    float *w, *saved;
    bool save, scaled;
    float sign, s;
    const float *src;
};

/* One chunk of perturb_to. */
static void perturb_chunk(void *ctx, long c, size_t lo, size_t hi)
{
    const struct perturb_args *a = ctx;
    float *restrict w = a->w, *restrict saved = a->saved;
    const float *restrict src = a->src;
    bool save = a->save, scaled = a->scaled;
    float sign = a->sign, s = a->s;
    for (size_t i = lo; i < hi; i++) {
        float from = save ? w[i] : saved[i];
        float ei = scaled ? s * src[i] : src[i];
        if (save)
            saved[i] = from;
        w[i] = from + sign * ei;
    }
}

/* w = from + sign * e_i, where e_i = s * src[i] when scaled and src[i] itself otherwise (the
 * same float operations as forming e and adding it). With save, from is w and saved receives it
 * in the same pass; otherwise from is saved (restoring w and stepping to the next point in one
 * pass). */
static void perturb_to(const struct params *p, float *w, float *saved, bool save, float sign,
                       bool scaled, float s, const float *src)
{
    struct perturb_args a = {.w = w, .saved = saved, .save = save, .scaled = scaled,
                             .sign = sign, .s = s, .src = src};
    params_for_chunks(p, perturb_chunk, &a);
}

void sam_family_passes(struct optim *o, struct params *p, struct closure *f, perturb_fn perturb,
                       const float *signs, const int *pass_of, int n_signs, float *g,
                       float *const *gs, float *saved, float *e, struct step_info *info)
{
    size_t n = p->n;
    int batch = f->batch;
    struct optim_groups gr;
    optim_groups(o, f, &gr);
    int m = gr.m, n_group = gr.n, local = gr.local ? PASS_LOCAL : 0;
    SAMX_ASSERT(batch <= o->env.max_batch);
    /* Single group only: g == NULL keeps no copy of the clean gradient, and gs[last] == p->g
     * leaves the last perturbed gradient where the closure wrote it (two fewer passes over n
     * floats per step for methods that need neither copy). */
    SAMX_ASSERT(n_group == 1 || g != NULL);
    SAMX_ASSERT(g != NULL || n_signs == 1);
    SAMX_ASSERT(n_signs >= 1 && n_signs <= SAM_MAX_SIGNS);
    for (int k = 0; k < n_signs; k++)
        SAMX_ASSERT(gs[k] != p->g || (n_group == 1 && k == n_signs - 1));
    double loss = 0, loss_p = 0, gnorm = 0;
    for (int c = gr.lo; c < gr.hi; c++) {
        int lo = c * m, cnt = lo + m <= batch ? m : batch - lo;
        /* Groups are consecutive examples of the (already shuffled) batch. */
        const int *sel = n_group == 1 ? NULL : o->ramp + lo;
        float wgt = (float)cnt / (float)batch;
        /* Every group's clean pass is a PASS_FIRST: running statistics update per group, as on
         * a multi-device run (algorithms.md 1.4), and the trainer's clean loss and accuracy
         * cover the whole batch. */
        f->group = c;
        double l0 = closure_grad(f, p, PASS_FIRST | local, sel, cnt);
        loss += l0 * cnt / batch;
        double gn = params_nrm2(p, p->g);
        if (n_group == 1)
            gnorm = gn;
        if (n_group == 1 && g)
            params_copy(p, p->g, g);
        else if (c == gr.lo && g)
            vec_axpby(n, wgt, p->g, 0.0f, g);
        else if (g)
            vec_axpy(n, wgt, p->g, g);
        /* The perturbation is built from this group's own gradient (m-sharpness). As a scale of
         * the gradient it is applied from where the gradient stays through the perturbed passes:
         * p->g for one pass, the clean copy g with one group; else it is formed in e. */
        float s;
        bool scaled;
        const float *src = e;
        if (o->psel) {
            /* optimizer.perturb: the scale applies to g on the selected tensors, formed in pe,
             * and the rule sees that part's norm. */
            params_copy(p, p->g, o->pe);
            optim_perturb_filter(o, p, o->pe);
            s = perturb(o, p, p->g, vec_nrm2(n, o->pe), e);
            scaled = false;
            if (s != PERTURB_IN_E) {
                SAMX_ASSERT(s >= 0 || isnan(s));
                vec_scal(n, s, o->pe);
                src = o->pe;
            }
        } else {
            s = perturb(o, p, p->g, gn, e);
            scaled = s != PERTURB_IN_E;
        }
        if (scaled) {
            SAMX_ASSERT(s >= 0 || isnan(s));
            if (n_signs == 1)
                src = p->g;
            else if (n_group == 1)
                src = g;
            else {
                SAMX_ASSERT(e != NULL);
                const float *gc = p->g;
#pragma omp parallel for schedule(static) num_threads(team_size()) if (n > 32768)
                for (size_t i = 0; i < n; i++)
                    e[i] = s * gc[i];
                scaled = false;
            }
        }
        for (int k = 0; k < n_signs; k++) {
            perturb_to(p, p->w, saved, k == 0, signs[k], scaled, s, src);
            double lk = closure_grad(f, p, pass_of[k] | local, sel, cnt);
            if (k == 0)
                loss_p += lk * cnt / batch;
            if (n_group == 1)
                params_copy(p, p->g, gs[k]); /* a no-op when gs[k] == p->g */
            else if (c == gr.lo)
                vec_axpby(n, wgt, p->g, 0.0f, gs[k]);
            else
                vec_axpy(n, wgt, p->g, gs[k]);
        }
        params_copy(p, saved, p->w);
    }
    if (gr.local) {
        float *v[1 + SAM_MAX_SIGNS];
        v[0] = g;
        for (int k = 0; k < n_signs; k++)
            v[1 + k] = gs[k];
        double d[2] = {loss, loss_p};
        closure_combine(f, &gr, v, 1 + n_signs, n, d, 2);
        loss = d[0], loss_p = d[1];
    }
    info->loss = loss;
    info->loss_perturbed = loss_p;
    info->grad_norm = n_group == 1 ? gnorm : vec_nrm2(n, g);
}
