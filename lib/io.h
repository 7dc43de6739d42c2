/* io.h: files that are never half-written.
 *
 * io_write_atomic writes to "<path>.tmp.<pid>", fsyncs, and renames over path, so a reader (or
 * a crash) sees either the old file or the whole new one. Errors name the path.
 */
#ifndef SAMX_IO_H
#define SAMX_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "err.h"

int io_write_atomic(const char *path, const void *data, size_t len, struct err *e);
/* Two buffers written back to back (header + payload) as one atomic file. durable: fsync
 * before the rename, so the new file also survives a power loss; without it the file is still
 * never half-written for readers and after a crash of samx (kill -9), which is what a
 * checkpoint replaced every epoch needs, at a fraction of the cost. */
int io_write_atomic2(const char *path, const void *a, size_t na, const void *b, size_t nb,
                     bool durable, struct err *e);
/* mkdir -p. */
int io_mkdir_p(const char *dir, struct err *e);
/* Read a whole file into a NUL-terminated malloc'd buffer. */
int io_read_all(const char *path, char **buf, size_t *len, struct err *e);
int io_exists(const char *path);
/* Take an exclusive flock on path (created if missing) without waiting; *fd holds it until
 * closed, and the kernel drops it when the process dies, so a killed holder never blocks the
 * next one. On a read-only filesystem an existing path is locked read-only, and a missing one
 * is not locked at all (*fd = -1; nothing can be written there). Returns 0, 1 when another
 * process holds it (*fd = -1), or -1 with e set. */
int io_lock(const char *path, int *fd, struct err *e);
/* Write s in single quotes, a quote inside doubled: a single-quoted string both for YAML flow
 * values and for gnuplot. */
void io_put_quoted(FILE *f, const char *s);

#endif
