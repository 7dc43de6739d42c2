/* fuzz.c: helpers of fuzz.h. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fuzz_split(const uint8_t *data, size_t size, struct fuzz_part *parts, int max)
{
    size_t sep = strlen(FUZZ_SEP);
    int n = 0;
    const uint8_t *p = data, *end = data + size;
    while (n < max - 1) {
        const uint8_t *q = NULL;
        for (const uint8_t *s = p; s + sep <= end; s++)
            if (!memcmp(s, FUZZ_SEP, sep)) {
                q = s;
                break;
            }
        if (!q)
            break;
        parts[n++] = (struct fuzz_part){p, (size_t)(q - p)};
        p = q + sep;
    }
    parts[n++] = (struct fuzz_part){p, (size_t)(end - p)};
    return n;
}

const char *fuzz_dir(void)
{
    static char dir[256];
    if (!dir[0]) {
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/samx-fuzz.%ld", base, (long)getpid());
        if (mkdir(dir, 0700) < 0 && access(dir, W_OK) < 0) {
            perror(dir);
            abort();
        }
    }
    return dir;
}

char *fuzz_write(const char *name, const void *p, size_t n)
{
    char *path = xasprintf("%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

void fuzz_check_err(int rc, const struct err *e)
{
    if (rc == 0)
        return;
    if (!e->msg[0] || strchr(e->msg, '\n') || (e->status != SAMX_EXIT_CONFIG &&
                                               e->status != SAMX_EXIT_RUNTIME)) {
        fprintf(stderr, "fuzz: bad error (status %d): '%s'\n", e->status, e->msg);
        abort();
    }
}
