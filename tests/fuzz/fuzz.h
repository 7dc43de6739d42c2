/* fuzz.h: helpers shared by the fuzz targets (libFuzzer's LLVMFuzzerTestOneInput; replay.c
 * runs the same function on files for the regression tests).
 *
 * An input that stands for several files holds them one after the other, separated by the
 * line FUZZ_SEP ("\n--8<--\n"), which seeds spell out and mutations keep or break.
 * Every target also checks samx's error contract: a failing call leaves one line in e.msg. */
#ifndef SAMX_FUZZ_H
#define SAMX_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define FUZZ_SEP "\n--8<--\n"
#define FUZZ_MAX_PARTS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_part {
    const uint8_t *p;
    size_t n;
};

/* Split data at FUZZ_SEP into at most max parts (the last takes the rest); returns the count. */
int fuzz_split(const uint8_t *data, size_t size, struct fuzz_part *parts, int max);
/* A scratch directory for this process (under /dev/shm when there is one), created once. */
const char *fuzz_dir(void);
/* Write n bytes to dir/name; returns the malloc'd path. Aborts on failure. */
char *fuzz_write(const char *name, const void *p, size_t n);
/* Abort (a finding) if a failed call's message is not one non-empty line. */
void fuzz_check_err(int rc, const struct err *e);

#endif
