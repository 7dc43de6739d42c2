/* safetensors.h: reading and writing the safetensors format.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "string value", ...}}, then the raw little-endian tensor bytes.
 * The header is padded with spaces to a multiple of 8 bytes so tensor data stays aligned.
 * Files are written atomically (io.h).
 */
#ifndef SAMX_SAFETENSORS_H
#define SAMX_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "params.h"

struct cJSON;

struct st_entry {
    const char *name;
    const char *dtype;    /* "F32", "F64" or "I64" */
    int ndim;             /* 0 for a scalar */
    long shape[SAMX_MAX_DIMS];
    const void *data;
    size_t nbytes;
};

/* Write entries in the given order, with optional string metadata (a cJSON object of strings,
 * may be NULL); durable as for io_write_atomic2. */
int st_save(const char *path, const struct st_entry *t, int n, const struct cJSON *meta,
            bool durable, struct err *e);
/* The entries for every tensor of p, data from w (weights) */
void st_entries_params(const struct params *p, const float *w, struct st_entry *out);

struct st_file {
    char *path;
    uint8_t *buf;
    size_t len;
    struct cJSON *hdr;
    const uint8_t *data; /* start of the byte buffer */
    size_t data_len;
    int n_tensors;       /* entries other than __metadata__ */
};

/* Read and validate a whole file: header JSON, dtypes, shapes against offsets, offsets within
 * the data. Errors name the path. */
int st_open(struct st_file *f, const char *path, struct err *e);
/* Copy tensor t.name (F32, exactly t's shape) into dst. */
int st_read_f32(struct st_file *f, const struct tensor *t, float *dst, struct err *e);
/* Copy a tensor of the given dtype and exactly nbytes into dst. */
int st_read_raw(struct st_file *f, const char *name, const char *dtype, void *dst,
                size_t nbytes, struct err *e);
/* Metadata string, or NULL. */
const char *st_meta(const struct st_file *f, const char *key);
void st_close(struct st_file *f);

#endif
