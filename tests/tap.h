/* tap.h: a small TAP producer for samx's unit tests.
 *
 * Each check prints "ok N - name" or "not ok N - name" (with a diagnostic), so meson's TAP
 * protocol counts individual cases. done() prints the plan, a closing "N passed, N failed" line,
 * and returns the process exit status.
 */
#ifndef SAMX_TAP_H
#define SAMX_TAP_H

#include <stdbool.h>

/* Record a check. Returns cond. */
bool ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* numpy allclose for one value: |got - want| <= atol + rtol * |want| (NaN never passes). */
bool approx(double got, double want, double rtol, double atol, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The running maximum of error terms: max(worst, d), where a NaN term is the worst of all
 * (fmax would drop it, and a kernel that returns NaN would pass). */
double worse(double worst, double d);
/* Diagnostic line ("# ..."), not a check. */
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A check that cannot run here, reported as passed with a SKIP directive. */
void skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print the plan and the totals; returns 0 if every check passed, 1 otherwise. */
int done(void);

#endif
