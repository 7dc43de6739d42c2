/* data.c: the dataset registry, the shared data.* keys (limits, validation split, label noise),
 * batching, and the file helpers plugins share (gunzip, sha256).
 *
 * data_init reads every common key before calling the plugin, so a bad value is reported
 * without first loading tens of megabytes, and the resolved config lists the common keys first.
 */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "rng.h"
#include "tune.h"

const struct dataset_ops *const dataset_registry[] = {
    &dataset_idx_fashion_mnist,
    &dataset_idx_mnist,
    &dataset_csv,
    &dataset_synthetic_linear,
    &dataset_cifar10,
    &dataset_cifar100,
    NULL,
};

const struct dataset_ops *dataset_find(const char *name)
{
    for (int i = 0; dataset_registry[i]; i++)
        if (!strcmp(dataset_registry[i]->name, name))
            return dataset_registry[i];
    return NULL;
}

/* ---- splits ---- */

static void dataset_release(struct dataset *ds)
{
    free(ds->x8);
    free(ds->xf);
    free(ds->label);
    free(ds->y);
    memset(ds, 0, sizeof *ds);
}

/* Keep the first n examples, giving the rest of each array back. */
static void dataset_limit(struct dataset *ds, int n)
{
    if (n >= ds->n)
        return;
    size_t dim = (size_t)ds->dim;
    ds->n = n;
    if (ds->x8)
        ds->x8 = xrealloc(ds->x8, (size_t)n * dim);
    if (ds->xf)
        ds->xf = xrealloc(ds->xf, (size_t)n * dim * sizeof *ds->xf);
    if (ds->label)
        ds->label = xrealloc(ds->label, (size_t)n * sizeof *ds->label);
    if (ds->y)
        ds->y = xrealloc(ds->y, (size_t)n * sizeof *ds->y);
}

/* dst = the examples of src where pick[i] == want, in src order. dst gets src's shape. */
static void dataset_select(struct dataset *dst, const struct dataset *src, const char *pick,
                           char want, int n)
{
    size_t dim = (size_t)src->dim;
    *dst = *src;
    dst->n = n;
    dst->x8 = NULL;
    dst->xf = NULL;
    dst->label = NULL;
    dst->y = NULL;
    if (n == 0)
        return;
    if (src->x8)
        dst->x8 = xmalloc((size_t)n * dim);
    if (src->xf)
        dst->xf = xmalloc((size_t)n * dim * sizeof *dst->xf);
    if (src->label)
        dst->label = xmalloc((size_t)n * sizeof *dst->label);
    if (src->y)
        dst->y = xmalloc((size_t)n * sizeof *dst->y);
    int j = 0;
    for (int i = 0; i < src->n; i++) {
        if (pick[i] != want)
            continue;
        if (src->x8)
            memcpy(dst->x8 + (size_t)j * dim, src->x8 + (size_t)i * dim, dim);
        if (src->xf)
            memcpy(dst->xf + (size_t)j * dim, src->xf + (size_t)i * dim, dim * sizeof *src->xf);
        if (src->label)
            dst->label[j] = src->label[i];
        if (src->y)
            dst->y[j] = src->y[i];
        j++;
    }
    SAMX_ASSERT(j == n);
}

/* Move round(frac * n) seeded-random examples of train into val; both keep file order. */
static void data_split_val(struct data *d, double frac, uint64_t seed)
{
    struct dataset *tr = &d->train;
    int n_val = (int)lround(frac * tr->n);
    if (d->plan) { /* sizes only: no examples to move */
        dataset_select(&d->val, tr, NULL, 1, 0);
        d->val.n = n_val;
        tr->n -= n_val;
        return;
    }
    if (n_val == 0) {
        dataset_select(&d->val, tr, NULL, 1, 0); /* shape only */
        return;
    }
    int *perm = xmalloc((size_t)tr->n * sizeof *perm);
    char *in_val = xcalloc((size_t)tr->n, 1);
    struct rng r;
    rng_init(&r, seed, "data.val_split", 0);
    for (int i = 0; i < tr->n; i++)
        perm[i] = i;
    rng_shuffle(&r, perm, tr->n);
    for (int i = 0; i < n_val; i++)
        in_val[perm[i]] = 1;
    struct dataset old = *tr;
    dataset_select(&d->val, &old, in_val, 1, n_val);
    dataset_select(tr, &old, in_val, 0, old.n - n_val);
    dataset_release(&old);
    free(in_val);
    free(perm);
}

/* Relabel round(frac * n) seeded-random training examples uniformly over all classes. */
static void data_label_noise(struct data *d, double frac, uint64_t seed)
{
    struct dataset *tr = &d->train;
    int k = (int)lround(frac * tr->n);
    int *perm = xmalloc((size_t)(tr->n ? tr->n : 1) * sizeof *perm);
    struct rng r;
    rng_init(&r, seed, "data.label_noise", 0);
    for (int i = 0; i < tr->n; i++)
        perm[i] = i;
    rng_shuffle(&r, perm, tr->n);
    d->n_noisy = 0;
    for (int i = 0; i < k; i++) {
        int32_t y = (int32_t)rng_below(&r, (uint64_t)tr->n_classes);
        d->n_noisy += y != tr->label[perm[i]];
        tr->label[perm[i]] = y;
    }
    free(perm);
}

/* ---- data.* keys ---- */

/* Config error at map[key]: "'data.key' <what>, got 'text'". */
static int data_key_err(struct err *e, struct cfg_node *map, const char *key, const char *what)
{
    struct cfg_node *n = cfg_child(map, key);
    char *path = cfg_path(n);
    cfg_err(e, n, "'%s' %s, got '%s'", path, what, n->str ? n->str : "");
    free(path);
    return -1;
}

/* A limit_* key: a positive integer, or absent / null / "all" for no limit (*out = -1). */
static int data_limit_key(struct cfg_node *c, const char *key, long *out, struct err *e)
{
    struct cfg_node *n = cfg_child(c, key);
    double v;
    bool present;
    *out = -1;
    if (n && n->type == CFG_SCALAR && !n->quoted && !strcmp(n->str, "all")) {
        cfg_take(c, key);
        return 0;
    }
    /* absent or null is the default, written as "all" so that every spelling of it is one
     * resolved config (and one run id) */
    if (!n || n->type == CFG_NULL) {
        cfg_set_scalar(c, key, "all");
        return 0;
    }
    if (cfg_num_opt(c, key, &v, &present, e))
        return -1;
    if (!present)
        return 0;
    if (!(v >= 1 && v <= 2147483647.0) || v != floor(v))
        return data_key_err(e, c, key, "must be a positive integer or 'all'");
    *out = (long)v;
    return 0;
}

/* data.augment. Read only when the data set has a default or the key is given, so
 * the resolved configs (and run ids) of data sets without augmentation stay as they were. */
static int data_augment_keys(struct data *d, struct cfg_node *c, struct err *e)
{
    if (!d->ops->augment && !cfg_child(c, "augment"))
        return 0;
    struct augment def = {.cutout_p = 0.5};
    if (d->ops->augment)
        def = *d->ops->augment;
    struct cfg_node *a = cfg_map(c, "augment", e);
    long crop, cutout;
    if (!a || cfg_int(a, "crop", def.crop, &crop, e) || cfg_bool(a, "flip", def.flip,
                                                                  &d->augment.flip, e) ||
        cfg_int(a, "cutout", def.cutout, &cutout, e) ||
        cfg_num(a, "cutout_p", def.cutout_p, &d->augment.cutout_p, e))
        return -1;
    if (crop < 0 || crop > 64)
        return data_key_err(e, a, "crop", "must be a padding in [0, 64]");
    if (cutout < 0 || cutout > 4096)
        return data_key_err(e, a, "cutout", "must be a side in [0, 4096]");
    if (!(d->augment.cutout_p >= 0 && d->augment.cutout_p <= 1))
        return data_key_err(e, a, "cutout_p", "must be in [0, 1]");
    d->augment.crop = (int)crop;
    d->augment.cutout = (int)cutout;
    return 0;
}

static int data_build(struct data *d, struct cfg_node *c, uint64_t seed, bool plan,
                      struct err *e)
{
    const char *name;
    double val_split, label_noise;
    long limit_train, limit_test;

    memset(d, 0, sizeof *d);
    d->plan = plan;
    if (cfg_str(c, "name", "fashion-mnist", &name, e))
        return -1;
    d->ops = dataset_find(name);
    if (!d->ops) {
        char known[256] = "";
        for (int i = 0; dataset_registry[i]; i++) {
            size_t len = strlen(known);
            snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                     dataset_registry[i]->name);
        }
        return cfg_err(e, cfg_child(c, "name"), "unknown dataset '%s' (known: %s)", name, known);
    }
    if (cfg_num(c, "val_split", 0, &val_split, e))
        return -1;
    if (!(val_split >= 0 && val_split < 1))
        return data_key_err(e, c, "val_split", "must be in [0, 1)");
    if (cfg_num(c, "label_noise", 0, &label_noise, e))
        return -1;
    if (!(label_noise >= 0 && label_noise <= 1))
        return data_key_err(e, c, "label_noise", "must be in [0, 1]");
    if (cfg_bool(c, "shuffle", true, &d->shuffle, e))
        return -1;
    if (data_limit_key(c, "limit_train", &limit_train, e) ||
        data_limit_key(c, "limit_test", &limit_test, e))
        return -1;

    if (data_augment_keys(d, c, e))
        return -1;
    if (d->ops->load(d, c, seed, e))
        goto fail;
    if ((d->augment.crop || d->augment.flip || d->augment.cutout) &&
        (d->train.channels == 0 || (!d->plan && !d->train.x8))) {
        cfg_err(e, cfg_child(c, "augment"), "'augment' needs an image data set ('%s' is not)",
                name);
        goto fail;
    }
    if (label_noise > 0 && d->train.n_classes == 0) {
        char *path = cfg_path(cfg_child(c, "label_noise"));
        cfg_err(e, cfg_child(c, "label_noise"),
                "'%s' needs a classification dataset ('%s' gives regression targets)", path, name);
        free(path);
        goto fail;
    }
    if (limit_train > 0)
        dataset_limit(&d->train, (int)(limit_train < d->train.n ? limit_train : d->train.n));
    if (limit_test > 0)
        dataset_limit(&d->test, (int)(limit_test < d->test.n ? limit_test : d->test.n));
    if (lround(val_split * d->train.n) >= d->train.n && d->train.n > 0) {
        char *path = cfg_path(cfg_child(c, "val_split"));
        cfg_err(e, cfg_child(c, "val_split"), "'%s' %g leaves none of the %d training examples",
                path, val_split, d->train.n);
        free(path);
        goto fail;
    }
    if (d->train.n == 0) {
        err_set(e, "'%s': the training set is empty", d->n_file ? d->file[0].path : name);
        goto fail;
    }
    data_split_val(d, val_split, seed);
    if (label_noise > 0 && !d->plan)
        data_label_noise(d, label_noise, seed);
    return 0;
fail:
    data_free(d);
    return -1;
}

int data_init(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    return data_build(d, c, seed, false, e);
}

int data_plan(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    return data_build(d, c, seed, true, e);
}

void data_free(struct data *d)
{
    dataset_release(&d->train);
    dataset_release(&d->val);
    dataset_release(&d->test);
    for (int i = 0; i < d->n_file; i++)
        free(d->file[i].path);
    memset(d, 0, sizeof *d);
}

/* Normalisation of pixel value v of channel ch. */
static float pixel(const struct dataset *ds, int ch, float v)
{
    return ds->chan_norm ? v * ds->chan_scale[ch] + ds->chan_shift[ch] : v * ds->scale + ds->shift;
}

/* One augmented image (struct augment's order: crop, flip, cutout), drawing from stream r. */
static void augment_image(const struct dataset *ds, const struct augment *a, struct rng *r,
                          const uint8_t *src, float *dst)
{
    int c = ds->channels, h = ds->height, w = ds->width;
    int dy = a->crop ? (int)rng_below(r, 2 * (uint64_t)a->crop + 1) : a->crop;
    int dx = a->crop ? (int)rng_below(r, 2 * (uint64_t)a->crop + 1) : a->crop;
    bool flip = a->flip && rng_uniform(r) < 0.5;
    bool cut = a->cutout > 0 && rng_uniform(r) < a->cutout_p;
    int cy = cut ? (int)rng_below(r, (uint64_t)h) : 0;
    int cx = cut ? (int)rng_below(r, (uint64_t)w) : 0;
    for (int ch = 0; ch < c; ch++) {
        float zero = pixel(ds, ch, 0.0f); /* the zero padding, normalised */
        for (int oy = 0; oy < h; oy++)
            for (int ox = 0; ox < w; ox++) {
                int sy = oy + dy - a->crop, sx = (flip ? w - 1 - ox : ox) + dx - a->crop;
                dst[((size_t)ch * h + oy) * w + ox] =
                    sy < 0 || sy >= h || sx < 0 || sx >= w
                        ? zero
                        : pixel(ds, ch, (float)src[((size_t)ch * h + sy) * w + sx]);
            }
    }
    if (cut) {
        int y0 = cy - a->cutout / 2, x0 = cx - a->cutout / 2;
        int y1 = y0 + a->cutout, x1 = x0 + a->cutout;
        y0 = y0 < 0 ? 0 : y0, x0 = x0 < 0 ? 0 : x0;
        y1 = y1 > h ? h : y1, x1 = x1 > w ? w : x1;
        for (int ch = 0; ch < c; ch++)
            for (int y = y0; y < y1; y++)
                for (int xx = x0; xx < x1; xx++)
                    dst[((size_t)ch * h + y) * w + xx] = 0.0f;
    }
}

/* Gather (and with a != NULL augment) examples idx[0..n) of ds; see data_batch_train. */
static void batch_gather(const struct dataset *ds, const struct augment *a, uint64_t seed,
                         long step, const int *idx, int n, float *x, int32_t *label, float *y)
{
    size_t dim = (size_t)ds->dim;
    for (int i = 0; i < n; i++)
        SAMX_ASSERT(idx[i] >= 0 && idx[i] < ds->n);
    if (x) {
        SAMX_ASSERT(ds->x8 || ds->xf || n == 0);
        SAMX_ASSERT(!a || (ds->x8 && n < 65536));
        size_t plane = ds->chan_norm ? (size_t)ds->height * ds->width : dim;
#pragma omp parallel for schedule(static) num_threads(team_size()) if ((size_t)n * dim > 65536)
        for (int i = 0; i < n; i++) {
            float *xi = x + (size_t)i * dim;
            if (a) {
                struct rng r;
                rng_init(&r, seed, "augment", (uint64_t)step << 16 | (uint64_t)i);
                augment_image(ds, a, &r, ds->x8 + (size_t)idx[i] * dim, xi);
            } else if (ds->x8) {
                const uint8_t *src = ds->x8 + (size_t)idx[i] * dim;
                /* pixel() a plane at a time, so the loop vectorizes. */
                for (size_t p0 = 0; p0 < dim; p0 += plane) {
                    int ch = (int)(p0 / plane);
                    float sc = ds->chan_norm ? ds->chan_scale[ch] : ds->scale;
                    float sh = ds->chan_norm ? ds->chan_shift[ch] : ds->shift;
                    for (size_t j = p0; j < p0 + plane; j++)
                        xi[j] = (float)src[j] * sc + sh;
                }
            } else {
                memcpy(xi, ds->xf + (size_t)idx[i] * dim, dim * sizeof *xi);
            }
        }
    }
    if (label) {
        SAMX_ASSERT(ds->label || n == 0);
        for (int i = 0; i < n; i++)
            label[i] = ds->label[idx[i]];
    }
    if (y) {
        SAMX_ASSERT(ds->y || n == 0);
        for (int i = 0; i < n; i++)
            y[i] = ds->y[idx[i]];
    }
}

void data_batch(const struct dataset *ds, const int *idx, int n, float *x, int32_t *label, float *y)
{
    batch_gather(ds, NULL, 0, 0, idx, n, x, label, y);
}

void data_batch_train(const struct data *d, const int *idx, int n, uint64_t seed, long step,
                      float *x, int32_t *label, float *y)
{
    const struct augment *a = &d->augment;
    bool on = a->crop || a->flip || (a->cutout && a->cutout_p > 0);
    batch_gather(&d->train, on ? a : NULL, seed, step, idx, n, x, label, y);
}

/* ---- files ---- */

/* Inflate a whole .gz buffer. Concatenated members (`cat a.gz b.gz`) are read as one stream, as
 * gzip -d does; zero padding after the last member is ignored, anything else is corruption. */
static int gunzip(const char *path, const uint8_t *in, size_t n_in, uint8_t **out, size_t *n_out,
                  struct err *e)
{
    const size_t chunk = (size_t)1 << 30; /* zlib counts in uInt */
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return err_set(e, "cannot gunzip '%s': %s", path, zs.msg ? zs.msg : "zlib init failed");

    /* The trailer's ISIZE (size mod 2^32 of the last member) is usually the exact size. */
    size_t cap = 0;
    if (n_in >= 18)
        cap = (size_t)in[n_in - 4] | (size_t)in[n_in - 3] << 8 | (size_t)in[n_in - 2] << 16 |
              (size_t)in[n_in - 1] << 24;
    if (cap / 1032 > n_in) /* deflate cannot expand more than ~1032x: a corrupt trailer */
        cap = n_in * 1032;
    cap = cap < 4096 ? 4096 : cap + 1;
    uint8_t *buf = xmalloc(cap);
    size_t pos_in = 0, pos_out = 0;
    const char *fail = NULL;

    for (;;) {
        if (zs.avail_in == 0 && pos_in < n_in) {
            size_t len = n_in - pos_in < chunk ? n_in - pos_in : chunk;
            zs.next_in = (Bytef *)(in + pos_in);
            zs.avail_in = (uInt)len;
            pos_in += len;
        }
        if (pos_out == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t room = cap - pos_out < chunk ? cap - pos_out : chunk;
        zs.next_out = buf + pos_out;
        zs.avail_out = (uInt)room;
        int rc = inflate(&zs, Z_NO_FLUSH);
        pos_out += room - zs.avail_out;
        if (rc == Z_STREAM_END) {
            size_t used = pos_in - zs.avail_in;
            if (used == n_in)
                break;
            if (n_in - used >= 2 && in[used] == 0x1f && in[used + 1] == 0x8b) {
                inflateReset(&zs);
                continue;
            }
            while (used < n_in && in[used] == 0)
                used++;
            if (used < n_in)
                fail = "trailing garbage after the gzip data";
            break;
        }
        if (rc == Z_OK || (rc == Z_BUF_ERROR && zs.avail_out == 0))
            continue;
        if (rc == Z_BUF_ERROR)
            fail = "unexpected end of file";
        else
            fail = zs.msg ? zs.msg : "inflate failed";
        break;
    }
    inflateEnd(&zs);
    if (fail) {
        free(buf);
        return err_set(e, "'%s': corrupt gzip data: %s", path, fail);
    }
    *out = xrealloc(buf, pos_out);
    *n_out = pos_out;
    return 0;
}

int data_read_file(const char *path, uint8_t **buf, size_t *len, char sha[65], struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "cannot read '%s': %s", path, strerror(errno));
    struct stat st;
    size_t cap = 65536, n = 0;
    /* A device or pipe (/dev/zero) could be read until memory runs out. */
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, "cannot read '%s': not a regular file", path);
    }
    if (st.st_size > 0)
        cap = (size_t)st.st_size + 1;
    uint8_t *raw = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            raw = xrealloc(raw, cap);
        }
        size_t got = fread(raw + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        int errnum = errno;
        fclose(f);
        free(raw);
        return err_set(e, "cannot read '%s': %s", path, strerror(errnum));
    }
    fclose(f);
    sha256_hex(raw, n, sha);
    if (n >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        int rc = gunzip(path, raw, n, buf, len, e);
        free(raw);
        return rc;
    }
    *buf = xrealloc(raw, n);
    *len = n;
    return 0;
}

int data_read_head(const char *path, uint8_t *buf, size_t n, size_t *got, bool *gz,
                   long long *size, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "cannot read '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, "cannot read '%s': not a regular file", path);
    }
    *size = (long long)st.st_size;
    uint8_t magic[2];
    size_t m = fread(magic, 1, 2, f);
    *gz = m == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    fclose(f);
    if (!*gz) {
        f = fopen(path, "rb");
        if (!f)
            return err_set(e, "cannot read '%s': %s", path, strerror(errno));
        *got = fread(buf, 1, n, f);
        int bad = ferror(f);
        fclose(f);
        return bad ? err_set(e, "cannot read '%s': read error", path) : 0;
    }
    gzFile g = gzopen(path, "rb");
    if (!g)
        return err_set(e, "cannot read '%s': %s", path, strerror(errno));
    int r = gzread(g, buf, (unsigned)n), zerr;
    char msg[128] = "";
    if (r < 0)
        snprintf(msg, sizeof msg, "%s", gzerror(g, &zerr));
    gzclose(g);
    if (r < 0)
        return err_set(e, "'%s': corrupt gzip data: %s", path, msg);
    *got = (size_t)r;
    return 0;
}

/* ---- sha256 (FIPS 180-4) ---- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t s1 = ror32(v[4], 6) ^ ror32(v[4], 11) ^ ror32(v[4], 25);
        uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
        uint32_t t1 = v[7] + s1 + ch + sha_k[i] + w[i];
        uint32_t s0 = ror32(v[0], 2) ^ ror32(v[0], 13) ^ ror32(v[0], 22);
        uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + s0 + maj;
    }
    for (int i = 0; i < 8; i++)
        h[i] += v[i];
}

void sha256_hex(const void *buf, size_t len, char out[65])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = buf;
    size_t full = len / 64, rem = len % 64;
    for (size_t i = 0; i < full; i++)
        sha256_block(h, p + 64 * i);
    /* Padding: 0x80, zeros, then the bit length big-endian, in one or two final blocks. */
    uint8_t tail[128] = {0};
    if (rem)
        memcpy(tail, p + 64 * full, rem);
    tail[rem] = 0x80;
    size_t n_tail = rem < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[n_tail - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha256_block(h, tail);
    if (n_tail == 128)
        sha256_block(h, tail + 64);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", (unsigned)h[i]);
}
