#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int st_open(struct st_file *f, const char *path, struct err *e)
{
    memset(f, 0, sizeof *f);
    char *buf;
    size_t len;
    if (io_read_all(path, &buf, &len, e) < 0)
        return -1;
    f->path = xstrdup(path);
    f->buf = (uint8_t *)buf;
    f->len = len;
    if (len < 8)
        goto bad_header;
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)f->buf[i] << (8 * i);
    if (hl > len - 8)
        goto bad_header;
    f->hdr = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hl);
    if (!f->hdr || !cJSON_IsObject(f->hdr))
        goto bad_header;
    f->data = f->buf + 8 + hl;
    f->data_len = len - 8 - hl;
    cJSON *it;
    cJSON_ArrayForEach(it, f->hdr)
    {
        if (!strcmp(it->string, "__metadata__"))
            continue;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2 || !dtype_size(dt->valuestring)) {
            st_close(f);
            return err_set(e, "'%s': malformed entry for tensor '%s'", path, it->string);
        }
        double count = 1;
        cJSON *d;
        cJSON_ArrayForEach(d, sh) count *= d->valuedouble;
        double b = cJSON_GetArrayItem(of, 0)->valuedouble;
        double en = cJSON_GetArrayItem(of, 1)->valuedouble;
        if (b < 0 || en < b || en > (double)f->data_len ||
            en - b != count * (double)dtype_size(dt->valuestring)) {
            st_close(f);
            return err_set(e, "'%s': tensor '%s' has offsets outside the file or not matching "
                              "its shape (truncated file?)",
                           path, it->string);
        }
        f->n_tensors++;
    }
    return 0;
bad_header:
    st_close(f);
    return err_set(e, "'%s': not a safetensors file (bad header)", path);
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
    memcpy(dst, f->data + b, nbytes);
    return 0;
}

int st_read_f32(struct st_file *f, const struct tensor *t, float *dst, struct err *e)
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
