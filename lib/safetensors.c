#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io.h"

int st_save(const char *path, const struct st_entry *t, int n, const cJSON *meta,
            bool durable, struct err *e)
{
    cJSON *h = cJSON_CreateObject();
    if (meta)
        cJSON_AddItemToObject(h, "__metadata__", cJSON_Duplicate(meta, 1));
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_AddObjectToObject(h, t[i].name);
        cJSON_AddStringToObject(o, "dtype", t[i].dtype);
        cJSON *s = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t[i].ndim; d++)
            cJSON_AddItemToArray(s, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *r = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)(off + t[i].nbytes)));
        off += t[i].nbytes;
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t hl = strlen(json), padded = (hl + 7) / 8 * 8;
    size_t head_len = 8 + padded;
    uint8_t *head = xmalloc(head_len);
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(head + 8, json, hl);
    memset(head + 8 + hl, ' ', padded - hl);
    free(json);
    uint8_t *body = xmalloc(off ? off : 1);
    off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(body + off, t[i].data, t[i].nbytes);
        off += t[i].nbytes;
    }
    int rc = io_write_atomic2(path, head, head_len, body, off, durable, e);
    free(head);
    free(body);
    return rc;
}

void st_entries_params(const struct params *p, const float *w, struct st_entry *out)
{
    for (int i = 0; i < p->nt; i++) {
        const struct tensor *t = &p->t[i];
        out[i] = (struct st_entry){.name = t->name, .dtype = "F32", .ndim = t->ndim,
                                   .data = w + t->off, .nbytes = t->n * sizeof(float)};
        for (int d = 0; d < t->ndim; d++)
            out[i].shape[d] = t->shape[d];
    }
}

static size_t dtype_size(const char *d)
{
    if (!strcmp(d, "F32") || !strcmp(d, "I32"))
        return 4;
    if (!strcmp(d, "F64") || !strcmp(d, "I64"))
        return 8;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16"))
        return 2;
    if (!strcmp(d, "U8") || !strcmp(d, "I8") || !strcmp(d, "BOOL"))
        return 1;
    return 0;
}

/* A JSON number that is an exact integer in [0, 2^53]: cJSON holds numbers as doubles, which
 * are exact up to there (and every size samx can address is below it). */
static bool st_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d))
        return false;
    *out = (uint64_t)d;
    return true;
}

struct st_span {
    uint64_t begin, end;
    const char *name;
};

static int st_span_cmp(const void *a, const void *b)
{
    const struct st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int st_name_cmp(const void *a, const void *b)
{
    return strcmp(((const struct st_span *)a)->name, ((const struct st_span *)b)->name);
}

/* Check one entry of the header, giving its byte span; the error (set by the caller) names
 * the tensor. */
static const char *st_check_entry(const cJSON *it, struct st_span *sp)
{
    if (!cJSON_IsObject(it))
        return "is not an object";
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt) || !dtype_size(dt->valuestring))
        return "has no known dtype";
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 8)
        return "has no shape (a list of at most 8 sizes)";
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return "has no data_offsets [begin, end]";
    uint64_t count = 1, b, en, dim;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh)
    {
        if (!st_uint(d, &dim))
            return "has a size in its shape that is not a non-negative integer";
        if (dim && count > (UINT64_C(1) << 53) / dim)
            return "has a shape too large";
        count *= dim;
    }
    if (!st_uint(cJSON_GetArrayItem(of, 0), &b) || !st_uint(cJSON_GetArrayItem(of, 1), &en) ||
        en < b)
        return "has data_offsets that are not integers 0 <= begin <= end";
    if (count > (UINT64_C(1) << 53) / dtype_size(dt->valuestring) ||
        en - b != count * dtype_size(dt->valuestring))
        return "has data_offsets not matching its shape and dtype";
    sp->begin = b;
    sp->end = en;
    sp->name = it->string;
    return NULL;
}

/* Read exactly n bytes, or fail with "truncated". */
static int st_read_exact(FILE *fp, const char *path, void *dst, size_t n, const char *what,
                         struct err *e)
{
    if (n && fread(dst, 1, n, fp) != n) {
        if (ferror(fp))
            return err_set(e, "cannot read '%s': %s", path, strerror(errno));
        return err_set(e, "'%s': truncated safetensors file (the %s ends early)", path, what);
    }
    return 0;
}

/* Header of at most this many bytes (the safetensors library's own limit). */
#define ST_MAX_HEADER (100u << 20)

static int st_load(struct st_file *f, const char *path, bool header_only, struct err *e)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return err_set(e, "cannot read '%s': %s", path, strerror(errno));
    f->path = xstrdup(path);
    struct stat st;
    bool regular = fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode);
    uint8_t lenb[8];
    struct st_span *span = NULL;
    char *text = NULL;
    int n = 0;
    if (st_read_exact(fp, path, lenb, 8, "header length", e) < 0)
        goto fail;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)lenb[i] << (8 * i);
    if (hl < 2 || hl > ST_MAX_HEADER) {
        err_set(e, "'%s': not a safetensors file (header length %llu, expected 2 to %u)", path,
                (unsigned long long)hl, ST_MAX_HEADER);
        goto fail;
    }
    if (regular && hl > (uint64_t)st.st_size - 8) {
        err_set(e, "'%s': truncated safetensors file (header of %llu bytes, file of %lld)", path,
                (unsigned long long)hl, (long long)st.st_size);
        goto fail;
    }
    text = xmalloc((size_t)hl + 1);
    if (st_read_exact(fp, path, text, (size_t)hl, "header", e) < 0)
        goto fail;
    text[hl] = 0;
    f->hdr = cJSON_ParseWithLength(text, (size_t)hl);
    if (!f->hdr || !cJSON_IsObject(f->hdr)) {
        err_set(e, "'%s': not a safetensors file (the header is not a JSON object)", path);
        goto fail;
    }
    int cap = cJSON_GetArraySize(f->hdr);
    span = xmalloc((size_t)(cap ? cap : 1) * sizeof *span);
    cJSON *it;
    bool meta_seen = false;
    cJSON_ArrayForEach(it, f->hdr)
    {
        if (!strcmp(it->string, "__metadata__")) {
            const cJSON *m;
            bool ok = cJSON_IsObject(it) && !meta_seen;
            cJSON_ArrayForEach(m, it) ok = ok && cJSON_IsString(m);
            if (!ok) {
                err_set(e, "'%s': __metadata__ must be one object of strings", path);
                goto fail;
            }
            meta_seen = true;
            continue;
        }
        const char *why = st_check_entry(it, &span[n]);
        if (why) {
            err_set(e, "'%s': tensor '%.200s' %s", path, it->string, why);
            goto fail;
        }
        n++;
    }
    /* Names are unique, and the spans tile the data exactly: no overlap, no hole. */
    qsort(span, (size_t)n, sizeof *span, st_name_cmp);
    for (int i = 1; i < n; i++)
        if (!strcmp(span[i].name, span[i - 1].name)) {
            err_set(e, "'%s': tensor '%.200s' is listed twice", path, span[i].name);
            goto fail;
        }
    qsort(span, (size_t)n, sizeof *span, st_span_cmp);
    uint64_t data_len = 0;
    for (int i = 0; i < n; i++) {
        if (span[i].begin != data_len) {
            err_set(e, "'%s': tensor '%.200s' %s", path, span[i].name,
                    span[i].begin < data_len ? "overlaps another tensor's bytes"
                                             : "leaves a hole before its bytes");
            goto fail;
        }
        data_len = span[i].end;
    }
    if (regular && data_len != (uint64_t)st.st_size - 8 - hl) {
        err_set(e, "'%s': %s safetensors file (the header lists %llu bytes of tensor data, the "
                   "file holds %lld)",
                path, data_len > (uint64_t)st.st_size - 8 - hl ? "truncated" : "corrupt",
                (unsigned long long)data_len, (long long)(st.st_size - 8 - (off_t)hl));
        goto fail;
    }
    if (data_len > SIZE_MAX / 2) {
        err_set(e, "'%s': tensor data too large", path);
        goto fail;
    }
    f->n_tensors = n;
    f->data_len = (size_t)data_len;
    if (!header_only) {
        f->buf = xmalloc(f->data_len ? f->data_len : 1);
        if (st_read_exact(fp, path, f->buf, f->data_len, "tensor data", e) < 0)
            goto fail;
        if (fgetc(fp) != EOF) {
            err_set(e, "'%s': corrupt safetensors file (bytes after the tensor data)", path);
            goto fail;
        }
        f->data = f->buf;
        f->len = 8 + (size_t)hl + f->data_len;
    }
    free(span);
    free(text);
    fclose(fp);
    return 0;
fail:
    free(span);
    free(text);
    fclose(fp);
    st_close(f);
    return -1;
}

int st_open(struct st_file *f, const char *path, struct err *e)
{
    return st_load(f, path, false, e);
}

int st_open_header(struct st_file *f, const char *path, struct err *e)
{
    return st_load(f, path, true, e);
}

static cJSON *st_entry_of(struct st_file *f, const char *name, const char *dtype,
                          struct err *e)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(f->hdr, name);
    if (!o || !strcmp(name, "__metadata__")) {
        err_set(e, "'%s': no tensor '%s'", f->path, name);
        return NULL;
    }
    const char *dt = cJSON_GetObjectItemCaseSensitive(o, "dtype")->valuestring;
    if (strcmp(dt, dtype) != 0) {
        err_set(e, "'%s': tensor '%s' is %s, expected %s", f->path, name, dt, dtype);
        return NULL;
    }
    return o;
}

int st_read_raw(struct st_file *f, const char *name, const char *dtype, void *dst,
                size_t nbytes, struct err *e)
{
    cJSON *o = st_entry_of(f, name, dtype, e);
    if (!o)
        return -1;
    cJSON *of = cJSON_GetObjectItemCaseSensitive(o, "data_offsets");
    size_t b = (size_t)cJSON_GetArrayItem(of, 0)->valuedouble;
    size_t en = (size_t)cJSON_GetArrayItem(of, 1)->valuedouble;
    if (en - b != nbytes)
        return err_set(e, "'%s': tensor '%s' has %zu bytes, expected %zu", f->path, name,
                       en - b, nbytes);
    SAMX_ASSERT(f->data && en <= f->data_len); /* st_open checked the spans */
    memcpy(dst, f->data + b, nbytes);
    return 0;
}

int st_check_f32(struct st_file *f, const struct tensor *t, struct err *e)
{
    cJSON *o = st_entry_of(f, t->name, "F32", e);
    if (!o)
        return -1;
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(o, "shape");
    int ok = cJSON_GetArraySize(sh) == t->ndim;
    for (int d = 0; ok && d < t->ndim; d++)
        ok = (long)cJSON_GetArrayItem(sh, d)->valuedouble == t->shape[d];
    if (!ok) {
        char want[64] = "", got[64] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? ", " : "",
                     t->shape[d]);
        for (int d = 0; d < cJSON_GetArraySize(sh); d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%ld", d ? ", " : "",
                     (long)cJSON_GetArrayItem(sh, d)->valuedouble);
        return err_set(e, "'%s': tensor '%s' has shape [%s], the model needs [%s]", f->path,
                       t->name, got, want);
    }
    return 0;
}

int st_read_f32(struct st_file *f, const struct tensor *t, float *dst, struct err *e)
{
    if (st_check_f32(f, t, e) < 0)
        return -1;
    return st_read_raw(f, t->name, "F32", dst, t->n * sizeof(float), e);
}

const char *st_meta(const struct st_file *f, const char *key)
{
    cJSON *m = cJSON_GetObjectItemCaseSensitive(f->hdr, "__metadata__");
    cJSON *v = m ? cJSON_GetObjectItemCaseSensitive(m, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

void st_close(struct st_file *f)
{
    cJSON_Delete(f->hdr);
    free(f->buf);
    free(f->path);
    memset(f, 0, sizeof *f);
}
