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
    uint8_t *buf;        /* the tensor data (NULL after st_open_header) */
    size_t len;          /* bytes read: 8 + header + data */
    struct cJSON *hdr;
    const uint8_t *data; /* start of the byte buffer */
    size_t data_len;     /* bytes of tensor data the header lists */
    int n_tensors;       /* entries other than __metadata__ */
};

/* Read and validate a whole file. Every header field is checked as input: a header length of
 * 2 bytes to 100 MiB, a JSON object whose entries each have a known dtype, a shape of at most
 * 8 non-negative integer sizes and integer data_offsets [begin, end] with end - begin =
 * elements x dtype size; names unique; __metadata__ an object of strings; the tensors' spans
 * tile the data with no overlap or hole, and the file ends exactly where the data does. Reads
 * are bounded by the header: only the header and then exactly the bytes it lists are read (a
 * device or a huge header never makes samx read until memory runs out). Errors (exit 1) name
 * the path. */
int st_open(struct st_file *f, const char *path, struct err *e);
/* st_open without reading the tensor data (f->data stays NULL): validates the header and, for
 * a regular file, that its size is what the header lists. For st_check_f32 and st_meta. */
int st_open_header(struct st_file *f, const char *path, struct err *e);
/* Whether tensor t.name is there, F32, exactly t's shape. */
int st_check_f32(struct st_file *f, const struct tensor *t, struct err *e);
/* Copy tensor t.name (F32, exactly t's shape) into dst. Needs st_open. */
int st_read_f32(struct st_file *f, const struct tensor *t, float *dst, struct err *e);
/* Copy a tensor of the given dtype and exactly nbytes into dst. */
int st_read_raw(struct st_file *f, const char *name, const char *dtype, void *dst,
                size_t nbytes, struct err *e);
/* Metadata string, or NULL. */
const char *st_meta(const struct st_file *f, const char *key);
void st_close(struct st_file *f);

#endif
