#include "tune.h"

#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "blas.h"
#include "err.h"

static bool avx512_cpu(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return false;
    /* AVX-512 F, DQ, BW and VL: what OpenBLAS's SkylakeX kernels use. */
    return (b >> 16 & 1) && (b >> 17 & 1) && (b >> 30 & 1) && (b >> 31 & 1);
}

static bool set_blas_core(void)
{
    const char *env = getenv("OPENBLAS_CORETYPE"), *keep = getenv("SAMX_BLAS_CORE");
    if ((env && strcasecmp(env, "Haswell") != 0) || (keep && !strcmp(keep, "keep")))
        return false;
    if (!avx512_cpu() || strcmp(blas_corename(), "Haswell") != 0)
        return false;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    return true;
}

static bool set_wait_policy(void)
{
    const char *keep = getenv("SAMX_OMP_WAIT");
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || (keep && !strcmp(keep, "keep")))
        return false;
    setenv("GOMP_SPINCOUNT", SAMX_SPINCOUNT, 1);
    return true;
}

bool tune_env(void)
{
    if (getenv("SAMX_TUNED"))
        return false;
    bool blas = set_blas_core(), wait = set_wait_policy();
    if (blas || wait)
        setenv("SAMX_TUNED", blas && wait ? "blas,wait" : blas ? "blas" : "wait", 1);
    return blas || wait;
}

const char *tune_wait_policy(void)
{
    static char buf[128];
    const char *tuned = getenv("SAMX_TUNED");
    const char *who = tuned && strstr(tuned, "wait") ? "samx" : "user";
    const char *pol = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    if (spin && pol)
        snprintf(buf, sizeof buf, "OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s (user)", pol, spin);
    else if (spin)
        snprintf(buf, sizeof buf, "GOMP_SPINCOUNT=%s (%s)", spin, who);
    else if (pol)
        snprintf(buf, sizeof buf, "OMP_WAIT_POLICY=%s (user)", pol);
    else
        snprintf(buf, sizeof buf, "libgomp default");
    return buf;
}

static struct {
    int n, size;
    bool ready, pinned, cycle, trace;
    double t0, win[TEAM_WINDOW];
    int nwin;
    double ref[SAMX_MAX_THREADS + 1]; /* latest median step time per team size; 0 unknown */
    int home;                         /* while probing: the size the probe is compared with */
    bool probing, down;               /* down: the next probe tries a smaller team */
    long since, period;
} tm = {.n = 1, .size = 1};

void team_init(int n)
{
    SAMX_ASSERT(n >= 1);
    memset(&tm, 0, sizeof tm);
    tm.n = tm.size = n < SAMX_MAX_THREADS ? n : SAMX_MAX_THREADS;
    tm.period = TEAM_PERIOD;
    tm.down = true;
    tm.ready = true;
    tm.trace = getenv("SAMX_TEAM_TRACE") != NULL;
    const char *pin = getenv("SAMX_TEAM");
    if (pin && !strcmp(pin, "cycle")) {
        tm.cycle = tm.pinned = true;
        tm.size = 1;
    } else if (pin && *pin) {
        int k = atoi(pin);
        tm.size = k < 1 ? 1 : k > tm.n ? tm.n : k;
        tm.pinned = true;
    }
}

int team_size(void)
{
    if (!tm.ready)
        threads_get(); /* sets the default -t, which calls team_init */
    return tm.size;
}

const char *team_policy(void)
{
    static char buf[64];
    if (!tm.pinned)
        return "adaptive";
    if (tm.cycle)
        return "cycle (SAMX_TEAM)";
    snprintf(buf, sizeof buf, "pinned %d (SAMX_TEAM)", tm.size);
    return buf;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void team_step_begin(void)
{
    if (tm.n > 1 && !tm.pinned)
        tm.t0 = now();
}

static double median(double *x, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return x[n / 2];
}

void team_step_end(void)
{
    if (tm.cycle)
        tm.size = tm.size % tm.n + 1;
    if (tm.n <= 1 || tm.pinned)
        return;
    tm.win[tm.nwin++] = now() - tm.t0;
    if (tm.nwin < TEAM_WINDOW)
        return;
    double med = median(tm.win, tm.nwin), old = tm.ref[tm.size];
    tm.nwin = 0;
    tm.ref[tm.size] = med;
    if (tm.probing) {
        /* Keep the probed size only when it is clearly faster: noise must not flip it. */
        bool keep = med < 0.97 * tm.ref[tm.home];
        if (tm.trace)
            fprintf(stderr, "samx: team %d: %.2f ms a step, team %d: %.2f ms: %s %d\n",
                    tm.home, 1e3 * tm.ref[tm.home], tm.size, 1e3 * med,
                    keep ? "switch to" : "stay at", keep ? tm.size : tm.home);
        if (keep) {
            tm.period = TEAM_PERIOD;
        } else {
            tm.size = tm.home;
            tm.period = tm.period * 2 < TEAM_PERIOD_MAX ? tm.period * 2 : TEAM_PERIOD_MAX;
        }
        tm.probing = false;
        tm.since = 0;
        return;
    }
    tm.since += TEAM_WINDOW;
    if (tm.since < tm.period && !(old > 0 && med > TEAM_SLOWER * old))
        return;
    int down = (tm.size + 1) / 2, up = 2 * tm.size < tm.n ? 2 * tm.size : tm.n;
    int next = tm.down ? (down != tm.size ? down : up) : (up != tm.size ? up : down);
    tm.down = !tm.down;
    tm.home = tm.size;
    tm.size = next;
    tm.probing = true;
}
