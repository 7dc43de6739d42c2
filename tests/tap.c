#include "tap.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int n_run, n_fail;

static void vreport(bool cond, const char *fmt, va_list ap)
{
    n_run++;
    if (!cond)
        n_fail++;
    printf("%sok %d - ", cond ? "" : "not ", n_run);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
}

bool ok(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cond, fmt, ap);
    va_end(ap);
    return cond;
}

bool approx(double got, double want, double rtol, double atol, const char *fmt, ...)
{
    bool cond = fabs(got - want) <= atol + rtol * fabs(want);
    va_list ap;
    va_start(ap, fmt);
    vreport(cond, fmt, ap);
    va_end(ap);
    if (!cond)
        printf("#   got %.10g, want %.10g, diff %.3g (rtol %g, atol %g)\n", got, want,
               got - want, rtol, atol);
    return cond;
}

void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

void skip(const char *fmt, ...)
{
    va_list ap;
    n_run++;
    printf("ok %d # SKIP ", n_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

int done(void)
{
    printf("1..%d\n", n_run);
    printf("# %d passed, %d failed\n", n_run - n_fail, n_fail);
    return n_fail ? 1 : 0;
}

double worse(double worst, double d)
{
    return isnan(d) ? INFINITY : d > worst ? d : worst;
}
