/* err.h: errors, assertions and checked allocation.
 *
 * Three kinds of failure, handled three ways:
 *   - a broken invariant inside numeric code (a kernel called with bad shapes) is a samx bug:
 *     SAMX_ASSERT reports file:line and aborts. It is always compiled in, NDEBUG or not.
 *   - a failure at a boundary (config, data file, run directory, plugin init) is the user's to
 *     fix: the function writes one line into a struct err and returns -1 (or NULL). The caller
 *     may prefix context. Only cmd/ prints it and exits.
 *   - out of memory: xmalloc and friends print and exit(1); nothing else in lib/ exits.
 *
 * struct err carries the exit status the error should produce: SAMX_EXIT_CONFIG (2) for bad
 * usage or a bad config, SAMX_EXIT_RUNTIME (1) for everything else (unreadable data, disk full).
 * Messages follow git's style: lowercase, no final period, names in single quotes.
 */
#ifndef SAMX_ERR_H
#define SAMX_ERR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum {
    SAMX_EXIT_OK = 0,
    SAMX_EXIT_RUNTIME = 1,
    SAMX_EXIT_CONFIG = 2,
    SAMX_EXIT_BUSY = 75, /* EX_TEMPFAIL: another samx holds the run directory's lock */
    SAMX_EXIT_INTERRUPTED = 130,
};

struct err {
    char msg[1024];
    int status; /* SAMX_EXIT_RUNTIME, SAMX_EXIT_CONFIG or SAMX_EXIT_BUSY; 0 while no error */
};

/* Set a runtime error (exit status 1). Always returns -1, so `return err_set(e, ...)` reads well. */
int err_set(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Set a config/usage error (exit status 2). Returns -1. */
int err_cfg(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepend "prefix: " to the message already in e (keeps its status). Returns -1. */
int err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What a command tells the user besides its output and its errors: warnings and, for run,
 * one line per epoch. samx_quiet (the -q option of every command) silences all of it; errors
 * are printed by cmd/ regardless. */
extern bool samx_quiet;
/* "samx: warning: MESSAGE" on stderr, one line, unless samx_quiet. */
void samx_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Send samx_warn's lines to f instead of stderr (NULL: back to stderr): a sweep collects its
 * runs' warnings to say each once. */
void samx_warn_to(FILE *f);
/* "samx: MESSAGE" on stderr, one line, unless samx_quiet. */
void samx_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void samx_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define SAMX_ASSERT(x) ((x) ? (void)0 : samx_assert_fail(#x, __FILE__, __LINE__))
#define SAMX_BUG(msg) samx_assert_fail(msg, __FILE__, __LINE__)

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* malloc'd printf. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 64-byte aligned, zeroed allocation for float buffers (free with free()). */
float *xfloats(size_t n);

#endif
