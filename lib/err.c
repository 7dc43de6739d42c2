#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An error is one line: control characters from the input it quotes (a YAML string spanning
 * lines, a key with a tab) are written as \n, \t or \xHH, cut at the buffer's end. */
static void err_one_line(char *msg, size_t size)
{
    char out[sizeof ((struct err *)0)->msg];
    size_t n = 0;
    if (size > sizeof out)
        size = sizeof out;
    for (const unsigned char *p = (const unsigned char *)msg; *p && n + 1 < size; p++) {
        char esc[8];
        if (*p >= 0x20 && *p != 0x7f) {
            out[n++] = (char)*p;
            continue;
        }
        if (*p == '\n' || *p == '\t' || *p == '\r')
            snprintf(esc, sizeof esc, "\\%c", *p == '\n' ? 'n' : *p == '\t' ? 't' : 'r');
        else
            snprintf(esc, sizeof esc, "\\x%02x", *p);
        size_t k = strlen(esc);
        if (n + k + 1 > size)
            break;
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n] = 0;
    memcpy(msg, out, n + 1);
}

bool samx_quiet;

static FILE *warn_sink;

void samx_warn_to(FILE *f)
{
    warn_sink = f;
}

static void say(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
    if (samx_quiet)
        return;
    fprintf(f, "samx: %s", prefix);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
}

void samx_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(warn_sink ? warn_sink : stderr, "warning: ", fmt, ap);
    va_end(ap);
}

void samx_say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(stderr, "", fmt, ap);
    va_end(ap);
}

static int err_vset(struct err *e, int status, const char *fmt, va_list ap)
{
    if (e) {
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        err_one_line(e->msg, sizeof e->msg);
        e->status = status;
    }
    return -1;
}

int err_set(struct err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, SAMX_EXIT_RUNTIME, fmt, ap);
    va_end(ap);
    return -1;
}

int err_cfg(struct err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, SAMX_EXIT_CONFIG, fmt, ap);
    va_end(ap);
    return -1;
}

int err_prefix(struct err *e, const char *fmt, ...)
{
    char pre[256], old[sizeof e->msg];
    va_list ap;
    if (!e)
        return -1;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    /* A message longer than the buffer is cut: the start names what failed. */
    int n = snprintf(e->msg, sizeof e->msg, "%s: ", pre);
    if (n > 0 && (size_t)n < sizeof e->msg)
        memcpy(e->msg + n, old, sizeof e->msg - (size_t)n - 1);
    e->msg[sizeof e->msg - 1] = 0;
    err_one_line(e->msg, sizeof e->msg);
    return -1;
}

void samx_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "samx: BUG: %s:%d: assertion '%s' failed\n", file, line, expr);
    fflush(stderr);
    abort();
}

static void oom(size_t n)
{
    fprintf(stderr, "samx: error: out of memory allocating %zu bytes\n", n);
    exit(SAMX_EXIT_RUNTIME);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    SAMX_ASSERT(n >= 0);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

float *xfloats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p)
        oom(bytes);
    memset(p, 0, bytes ? bytes : 64);
    return p;
}
