/* schedule.h: scalar hyperparameters as functions of the training step.
 *
 * Every scalar hyperparameter (lr, rho, gamma, ...) is a struct sched: a plain number in the
 * config is a constant schedule; a mapping with `schedule:` picks one of the kinds below. Time is
 * measured in epochs, e = t / steps_per_epoch for step t (0-based), so schedules read the same
 * whatever the batch size; `per: epoch` holds the value for a whole epoch (e = floor(e)).
 *
 *   constant     value
 *   linear       start, end [0]: start + (end - start) * p, p = progress through the schedule
 *   cosine       start, end [0]: end + (start - end) * (1 + cos(pi * p)) / 2
 *   step         start, gamma [0.1], milestones [[]] (epochs) or every [0] (epochs):
 *                start * gamma^(number of milestones passed)
 *   exponential  start, gamma [per epoch]: start * gamma^e
 *   piecewise    at [e0, e1, ...] (epochs), values [v0, v1, ...]: linear between points,
 *                constant outside them
 * Common keys: warmup [0 epochs]: ramp linearly from warmup_start [0] to the schedule's value at
 * e = warmup; progress p for linear/cosine runs from warmup to `epochs` [train.epochs].
 * per [step | epoch].
 *
 * The struct holds everything: evaluating it is a pure function of t, so resuming a run needs
 * no schedule state.
 */
#ifndef SAMX_SCHEDULE_H
#define SAMX_SCHEDULE_H

#include <stdbool.h>

#include "cfg.h"
#include "err.h"

#define SCHED_MAX_POINTS 16

enum sched_kind { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE, SCHED_STEP, SCHED_EXPONENTIAL,
                  SCHED_PIECEWISE };
extern const char *const sched_names[];   /* indexed by enum sched_kind, NULL-terminated */
extern const char *const sched_summary[]; /* one line each, for `samx list schedules` */

struct sched {
    enum sched_kind kind;
    double start, end, gamma, every;
    double milestones[SCHED_MAX_POINTS];
    double px[SCHED_MAX_POINTS], py[SCHED_MAX_POINTS];
    int n_milestones, n_points;
    double warmup, warmup_start, epochs;
    bool per_epoch;
    long steps_per_epoch;
};

/* Time base shared by every schedule of a run. */
struct sched_clock {
    long steps_per_epoch;
    double epochs;        /* train.epochs */
};

/* Read map[key] as a number or a schedule mapping; missing -> constant `def` (inserted in the
 * config). Values are checked against [lo, hi] (every value the schedule can take: start, end,
 * value, points); errors name the key. */
int sched_parse(struct sched *s, struct cfg_node *map, const char *key, double def, double lo,
                double hi, const struct sched_clock *clk, struct err *e);
double sched_at(const struct sched *s, long t);
/* A constant schedule (tests, internal use). */
void sched_constant(struct sched *s, double v);

#endif
