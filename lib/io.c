#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int io_write_atomic2(const char *path, const void *a, size_t na, const void *b, size_t nb,
                     bool durable, struct err *e)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return err_set(e, "cannot create '%s': %s", tmp, strerror(errno));
    if (write_all(fd, a, na) < 0 || (nb && write_all(fd, b, nb) < 0) || (durable && fsync(fd) < 0)) {
        int saved = errno;
        close(fd);
        unlink(tmp);
        return err_set(e, "cannot write '%s': %s", path, strerror(saved));
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int saved = errno;
        unlink(tmp);
        return err_set(e, "cannot write '%s': %s", path, strerror(saved));
    }
    return 0;
}

int io_write_atomic(const char *path, const void *data, size_t len, struct err *e)
{
    return io_write_atomic2(path, data, len, NULL, 0, true, e);
}

int io_mkdir_p(const char *dir, struct err *e)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return err_set(e, "cannot create directory '%s': bad path", dir);
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return err_set(e, "cannot create directory '%s': %s", buf, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return err_set(e, "cannot create directory '%s': not a directory", dir);
    return 0;
}

int io_read_all(const char *path, char **buf, size_t *len, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "cannot read '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = xmalloc(cap);
    for (;;) {
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (n + 1 < cap)
            break;
        cap *= 2;
        b = xrealloc(b, cap);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b);
        return err_set(e, "cannot read '%s': read error", path);
    }
    b[n] = 0;
    *buf = b;
    if (len)
        *len = n;
    return 0;
}

int io_exists(const char *path) { return access(path, F_OK) == 0; }

int io_lock(const char *path, int *fd, struct err *e)
{
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0 && (errno == EROFS || errno == EACCES)) {
        /* Nobody can write here: a lock file that exists still locks; without one there is
         * nothing to protect, and the first write will say why it cannot. */
        *fd = open(path, O_RDONLY | O_CLOEXEC);
        if (*fd < 0)
            return 0;
    }
    if (*fd < 0)
        return err_set(e, "cannot create '%s': %s", path, strerror(errno));
    int rc;
    while ((rc = flock(*fd, LOCK_EX | LOCK_NB)) < 0 && errno == EINTR)
        ;
    if (rc == 0)
        return 0;
    int saved = errno;
    close(*fd);
    *fd = -1;
    if (saved == EWOULDBLOCK)
        return 1;
    return err_set(e, "cannot lock '%s': %s", path, strerror(saved));
}

void io_put_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (const char *p = s; *p; p++) {
        fputc(*p, f);
        if (*p == '\'')
            fputc('\'', f);
    }
    fputc('\'', f);
}

