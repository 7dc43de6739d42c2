#include "schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const sched_names[] = {"constant", "linear",      "cosine",
                                   "step",     "exponential", "piecewise", NULL};
const char *const sched_summary[] = {
    "value: the same every step",
    "start, end [0]: straight line from start to end over the schedule",
    "start, end [0]: half cosine from start to end (CosineAnnealingLR's closed form)",
    "start, gamma [0.1], milestones [[]] or every [0]: multiply by gamma at each milestone epoch",
    "start, gamma: start * gamma^epoch",
    "at [...] (epochs), values [...]: linear between (epoch, value) points, constant outside",
};

void sched_constant(struct sched *s, double v)
{
    memset(s, 0, sizeof *s);
    s->kind = SCHED_CONSTANT;
    s->start = s->end = v;
    s->steps_per_epoch = 1;
}

static int check_range(struct err *e, struct cfg_node *n, const char *what, double v, double lo,
                       double hi)
{
    if (v >= lo && v <= hi)
        return 0;
    char *path = cfg_path(n);
    char b1[32], b2[32], b3[32];
    int rc = cfg_err(e, n, "'%s'%s must be in [%s, %s], got %s", path, what, cfg_fmt_num(b1, lo),
                     cfg_fmt_num(b2, hi), cfg_fmt_num(b3, v));
    free(path);
    return rc;
}

static int parse_mapping(struct sched *s, struct cfg_node *m, double lo, double hi,
                         const struct sched_clock *clk, struct err *e)
{
    int kind;
    if (!cfg_child(m, "schedule")) {
        char *path = cfg_path(m);
        int rc = cfg_err(e, m, "'%s' is a mapping without 'schedule:' (one of constant, linear, "
                               "cosine, step, exponential, piecewise)", path);
        free(path);
        return rc;
    }
    if (cfg_enum(m, "schedule", sched_names, SCHED_CONSTANT, &kind, e) < 0)
        return -1;
    s->kind = (enum sched_kind)kind;
    double def_gamma = 0.1;
    switch (s->kind) {
    case SCHED_CONSTANT:
        if (!cfg_child(m, "value"))
            return cfg_err(e, m, "schedule 'constant' needs 'value'");
        if (cfg_num(m, "value", 0, &s->start, e) < 0 ||
            check_range(e, cfg_child(m, "value"), "", s->start, lo, hi) < 0)
            return -1;
        s->end = s->start;
        break;
    case SCHED_LINEAR:
    case SCHED_COSINE:
        if (!cfg_child(m, "start"))
            return cfg_err(e, m, "schedule '%s' needs 'start'", sched_names[kind]);
        if (cfg_num(m, "start", 0, &s->start, e) < 0 || cfg_num(m, "end", 0, &s->end, e) < 0 ||
            check_range(e, cfg_child(m, "start"), "", s->start, lo, hi) < 0 ||
            check_range(e, cfg_child(m, "end"), "", s->end, lo, hi) < 0)
            return -1;
        break;
    case SCHED_EXPONENTIAL:
    case SCHED_STEP:
        if (!cfg_child(m, "start") ||
            (s->kind == SCHED_EXPONENTIAL && !cfg_child(m, "gamma")))
            return cfg_err(e, m, "schedule '%s' needs 'start'%s", sched_names[kind],
                           s->kind == SCHED_EXPONENTIAL ? " and 'gamma'" : "");
        if (cfg_num(m, "start", 0, &s->start, e) < 0 ||
            check_range(e, cfg_child(m, "start"), "", s->start, lo, hi) < 0 ||
            cfg_num(m, "gamma", def_gamma, &s->gamma, e) < 0)
            return -1;
        if (s->gamma <= 0)
            return cfg_err(e, cfg_child(m, "gamma"), "schedule gamma must be > 0");
        if (s->kind == SCHED_STEP) {
            if (cfg_num_list(m, "milestones", NULL, 0, s->milestones, SCHED_MAX_POINTS,
                             &s->n_milestones, e) < 0 ||
                cfg_num(m, "every", 0, &s->every, e) < 0)
                return -1;
            if (s->every < 0)
                return cfg_err(e, cfg_child(m, "every"), "schedule 'every' must be >= 0");
            if (s->n_milestones == 0 && s->every == 0)
                return cfg_err(e, m, "schedule 'step' needs 'milestones' or 'every'");
        }
        s->end = s->start;
        break;
    case SCHED_PIECEWISE: {
        int nx, ny;
        if (!cfg_child(m, "at") || !cfg_child(m, "values"))
            return cfg_err(e, m, "schedule 'piecewise' needs 'at' and 'values'");
        if (cfg_num_list(m, "at", NULL, 0, s->px, SCHED_MAX_POINTS, &nx, e) < 0 ||
            cfg_num_list(m, "values", NULL, 0, s->py, SCHED_MAX_POINTS, &ny, e) < 0)
            return -1;
        if (nx != ny || nx == 0)
            return cfg_err(e, m, "schedule 'piecewise': 'at' and 'values' must have the "
                                 "same, non-zero length");
        for (int i = 0; i < nx; i++) {
            if (i > 0 && s->px[i] <= s->px[i - 1])
                return cfg_err(e, cfg_child(m, "at"), "schedule 'piecewise': 'at' must "
                                                      "increase");
            if (check_range(e, cfg_child(m, "values"), "", s->py[i], lo, hi) < 0)
                return -1;
        }
        s->n_points = nx;
        s->start = s->py[0];
        s->end = s->py[nx - 1];
        break;
    }
    }
    int per;
    static const char *const pers[] = {"step", "epoch", NULL};
    if (cfg_num(m, "warmup", 0, &s->warmup, e) < 0 ||
        cfg_num(m, "warmup_start", 0, &s->warmup_start, e) < 0 ||
        cfg_num(m, "epochs", clk->epochs, &s->epochs, e) < 0 ||
        cfg_enum(m, "per", pers, 0, &per, e) < 0)
        return -1;
    s->per_epoch = per == 1;
    if (s->warmup < 0 || s->warmup > s->epochs)
        return cfg_err(e, cfg_child(m, "warmup"), "schedule 'warmup' must be in [0, epochs]");
    if (s->epochs <= 0)
        return cfg_err(e, cfg_child(m, "epochs"), "schedule 'epochs' must be > 0");
    /* warmup_start is a value the schedule takes only when there is a warmup. */
    if (s->warmup == 0)
        return 0;
    return check_range(e, cfg_child(m, "warmup_start"), "", s->warmup_start, lo, hi);
}

int sched_parse(struct sched *s, struct cfg_node *map, const char *key, double def, double lo,
                double hi, const struct sched_clock *clk, struct err *e)
{
    sched_constant(s, def);
    s->steps_per_epoch = clk->steps_per_epoch > 0 ? clk->steps_per_epoch : 1;
    s->epochs = clk->epochs;
    struct cfg_node *n = cfg_child(map, key);
    if (n && n->type == CFG_MAP) {
        cfg_mark(n);
        long spe = s->steps_per_epoch;
        int rc = parse_mapping(s, n, lo, hi, clk, e);
        s->steps_per_epoch = spe;
        return rc;
    }
    if (n && n->type == CFG_SEQ)
        return cfg_err(e, n, "'%s' must be a number or a schedule mapping", key);
    if (cfg_num(map, key, def, &s->start, e) < 0)
        return -1;
    s->end = s->start;
    return check_range(e, cfg_child(map, key), "", s->start, lo, hi);
}

static double core_at(const struct sched *s, double ep)
{
    /* A warmup as long as the schedule leaves no time to anneal: the core then holds its start
     * value up to the end of the warmup (the warmup's target) and its end value after it. */
    double span = s->epochs - s->warmup;
    double p = span > 0 ? (ep - s->warmup) / span : ep > s->warmup ? 1 : 0;
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    switch (s->kind) {
    case SCHED_CONSTANT:
        return s->start;
    case SCHED_LINEAR:
        return s->start + (s->end - s->start) * p;
    case SCHED_COSINE:
        return s->end + (s->start - s->end) * (1 + cos(M_PI * p)) / 2;
    case SCHED_STEP: {
        int k = 0;
        for (int i = 0; i < s->n_milestones; i++)
            k += ep >= s->milestones[i];
        if (s->every > 0)
            k += (int)floor(ep / s->every + 1e-9);
        return s->start * pow(s->gamma, k);
    }
    case SCHED_EXPONENTIAL:
        return s->start * pow(s->gamma, ep);
    case SCHED_PIECEWISE:
        if (ep <= s->px[0])
            return s->py[0];
        for (int i = 1; i < s->n_points; i++)
            if (ep <= s->px[i]) {
                double f = (ep - s->px[i - 1]) / (s->px[i] - s->px[i - 1]);
                return s->py[i - 1] + (s->py[i] - s->py[i - 1]) * f;
            }
        return s->py[s->n_points - 1];
    }
    return s->start;
}

double sched_at(const struct sched *s, long t)
{
    double ep = (double)t / (double)s->steps_per_epoch;
    if (s->per_epoch)
        ep = floor(ep);
    if (s->warmup > 0 && ep < s->warmup) {
        double target = core_at(s, s->warmup);
        return s->warmup_start + (target - s->warmup_start) * (ep / s->warmup);
    }
    return core_at(s, ep);
}
