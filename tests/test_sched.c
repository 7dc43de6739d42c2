/* test_sched: every schedule kind at known points, warmup, per-epoch holding, and the config
 * errors of a schedule without its keys. */
#include <math.h>
#include <string.h>

#include "cfg.h"
#include "schedule.h"
#include "tap.h"

/* 10 epochs of 100 steps. */
static const struct sched_clock clk = {.steps_per_epoch = 100, .epochs = 10};

static int parse(struct sched *s, const char *yaml, struct err *e)
{
    struct cfg c;
    memset(e, 0, sizeof *e);
    if (cfg_load_string(&c, "s.yaml", yaml, e) < 0)
        return -1;
    int rc = sched_parse(s, c.root, "lr", 0.5, 0, 1e6, &clk, e);
    if (rc == 0)
        rc = cfg_check_unused(&c, e);
    cfg_free(&c);
    return rc;
}

static void value_at(const char *yaml, long t, double want, const char *what)
{
    struct sched s;
    struct err e;
    if (!ok(parse(&s, yaml, &e) == 0, "%s parses (%s)", what, e.msg))
        return;
    approx(sched_at(&s, t), want, 1e-12, 1e-15, "%s at step %ld", what, t);
}

static void error_of(const char *yaml, const char *needle, const char *what)
{
    struct sched s;
    struct err e;
    int rc = parse(&s, yaml, &e);
    ok(rc < 0 && e.status == 2 && strstr(e.msg, needle), "%s is a config error: %s", what, e.msg);
}

int main(void)
{
    value_at("{}", 0, 0.5, "missing key gives the default");
    value_at("lr: 0.1\n", 777, 0.1, "a number is constant");
    value_at("lr: {schedule: constant, value: 0.2}\n", 5, 0.2, "constant");
    value_at("lr: {schedule: cosine, start: 1.0}\n", 0, 1.0, "cosine start");
    value_at("lr: {schedule: cosine, start: 1.0}\n", 500, 0.5, "cosine halfway");
    value_at("lr: {schedule: cosine, start: 1.0, end: 0.1}\n", 1000, 0.1, "cosine end");
    value_at("lr: {schedule: cosine, start: 1.0}\n", 250, (1 + cos(M_PI / 4)) / 2,
             "cosine quarter");
    value_at("lr: {schedule: linear, start: 1.0, end: 0.0}\n", 300, 0.7, "linear");
    value_at("lr: {schedule: step, start: 1.0, milestones: [3, 6]}\n", 299, 1.0,
             "step before a milestone");
    value_at("lr: {schedule: step, start: 1.0, milestones: [3, 6]}\n", 300, 0.1,
             "step at a milestone");
    value_at("lr: {schedule: step, start: 1.0, gamma: 0.5, every: 2}\n", 450, 0.25,
             "step every 2 epochs");
    value_at("lr: {schedule: exponential, start: 1.0, gamma: 0.5}\n", 200, 0.25, "exponential");
    value_at("lr: {schedule: piecewise, at: [0, 2, 4], values: [0, 1, 0.5]}\n", 100, 0.5,
             "piecewise rising");
    value_at("lr: {schedule: piecewise, at: [0, 2, 4], values: [0, 1, 0.5]}\n", 300, 0.75,
             "piecewise falling");
    value_at("lr: {schedule: piecewise, at: [0, 2, 4], values: [0, 1, 0.5]}\n", 900, 0.5,
             "piecewise after the last point");
    value_at("lr: {schedule: cosine, start: 1.0, warmup: 2}\n", 100, 0.5, "warmup halfway");
    value_at("lr: {schedule: cosine, start: 1.0, warmup: 2}\n", 200, 1.0, "warmup end");
    /* A warmup as long as the schedule ramps to start (not to end, which left a cosine lr
     * with warmup == epochs at 0 for the whole run). */
    value_at("lr: {schedule: cosine, start: 1.0, warmup: 10}\n", 500, 0.5,
             "warmup as long as the schedule ramps towards start");
    value_at("lr: {schedule: linear, start: 1.0, end: 0.2, warmup: 10, warmup_start: 0.2}\n",
             999, 0.2 + 0.8 * 9.99 / 10, "linear warmup as long as the schedule, last step");
    value_at("lr: {schedule: cosine, start: 1.0, end: 0.1, warmup: 2, epochs: 2}\n", 300, 0.1,
             "after a schedule that was all warmup, its end value");
    value_at("lr: {schedule: cosine, start: 1.0, warmup: 2}\n", 600, 0.5,
             "cosine after warmup spans the remaining epochs");
    value_at("lr: {schedule: linear, start: 1.0, end: 0, per: epoch}\n", 199, 0.9,
             "per: epoch holds the epoch's value");
    value_at("lr: {schedule: linear, start: 1.0, end: 0, epochs: 5}\n", 900, 0.0,
             "a schedule's own epochs");

    error_of("lr: {schedule: cosine}\n", "needs 'start'", "cosine without start");
    error_of("lr: {schedule: step, start: 1}\n", "needs 'milestones' or 'every'",
             "step without milestones");
    error_of("lr: {schedule: piecewise, at: [0, 1], values: [1]}\n", "same, non-zero length",
             "piecewise with mismatched lists");
    error_of("lr: {start: 1}\n", "without 'schedule:'", "a mapping without schedule");
    error_of("lr: {schedule: wobble, start: 1}\n", "must be one of", "an unknown schedule");
    error_of("lr: {schedule: cosine, start: 1, ned: 0}\n", "did you mean 'end'",
             "a misspelt schedule key");
    error_of("lr: -0.1\n", "must be in [0,", "a negative value");
    error_of("lr: {schedule: linear, start: 1, end: -1}\n", "must be in [0,",
             "a schedule reaching a negative value");
    return done();
}
