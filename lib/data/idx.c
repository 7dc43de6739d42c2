/* idx.c: the MNIST family in LeCun's IDX format: `fashion-mnist` (Xiao et al. 2017,
 * arXiv:1708.07747) and `mnist`.
 *
 * Loads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
 * t10k-labels-idx1-ubyte from `dir`, each as NAME.gz if present, else NAME. Images are
 * (count, rows, cols) unsigned bytes with a big-endian header (magic 0x00000803), labels are
 * (count) bytes in [0, 10) (magic 0x00000801). Pixels stay 8-bit in memory; data_batch turns
 * them into floats with x = (p/255 - mean) / std, or p/255 without normalisation.
 *
 * Planning (data.h) reads the 16- and 8-byte headers only: counts and image sizes, and for a
 * plain (not gzipped) file that its size matches them; label values and gzip payloads are
 * checked when a run loads the files.
 *
 * Keys:
 *   dir [/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) for fashion-mnist;
 *        required for mnist, which no Debian package ships]
 *   normalize [true]: mean/std 0.2860/0.3530 (fashion-mnist), 0.1307/0.3081 (mnist)
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

struct idx_set {
    const char *name;
    const char *dir; /* default, or NULL: required */
    double mean, std;
};

static const struct idx_set idx_fashion = {"fashion-mnist", "/usr/share/datasets/fashion-mnist",
                                           0.2860, 0.3530};
static const struct idx_set idx_mnist = {"mnist", NULL, 0.1307, 0.3081};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Read dir/base(.gz), recording it in d->file. *path is malloc'd (owned by d->file). When
 * planning, *buf holds only the first `head` bytes (the header) and *len is the size the file
 * would have unpacked: exact for a plain file, "as the header says" (*len = 0 and *unknown)
 * for a gzip one, whose size is known only after inflating it. */
static int idx_read(struct data *d, const char *dir, const char *base, const char **path,
                    uint8_t **buf, size_t *len, size_t head, bool *unknown, struct err *e)
{
    char *gz = xasprintf("%s/%s.gz", dir, base), *plain = xasprintf("%s/%s", dir, base);
    char *use = NULL;
    if (access(gz, F_OK) == 0 || errno != ENOENT)
        use = gz;
    else if (access(plain, F_OK) == 0 || errno != ENOENT)
        use = plain;
    if (!use) {
        err_set(e, "cannot read '%s' or '%s': %s", gz, plain, strerror(ENOENT));
        free(gz);
        free(plain);
        return -1;
    }
    free(use == gz ? plain : gz);
    SAMX_ASSERT(d->n_file < SAMX_MAX_DATA_FILES);
    struct data_file *f = &d->file[d->n_file];
    *unknown = false;
    if (d->plan) {
        bool is_gz;
        long long size;
        *buf = xmalloc(head);
        if (data_read_head(use, *buf, head, len, &is_gz, &size, e)) {
            free(*buf);
            free(use);
            return -1;
        }
        if (*len == head) {
            *unknown = is_gz;
            *len = is_gz ? 0 : (size_t)size;
        }
    } else if (data_read_file(use, buf, len, f->sha256, e)) {
        free(use);
        return -1;
    }
    f->path = use;
    d->n_file++;
    *path = use;
    return 0;
}

/* Check that a file of `len` bytes is exactly `want` bytes. */
static int idx_length(const char *path, size_t len, size_t want, struct err *e)
{
    if (len < want)
        return err_set(e, "'%s': truncated: expected %zu bytes, got %zu", path, want, len);
    if (len > want)
        return err_set(e, "'%s': expected %zu bytes, got %zu (trailing data)", path, want, len);
    return 0;
}

/* Load an idx3 image file into ds (n, channels, height, width, x8). */
static int idx_images(struct data *d, const char *dir, const char *base, struct dataset *ds,
                      struct err *e)
{
    const char *path;
    uint8_t *buf;
    size_t len;
    bool unknown;
    if (idx_read(d, dir, base, &path, &buf, &len, 16, &unknown, e))
        return -1;
    if (len < 16 && !unknown) {
        free(buf);
        return err_set(e, "'%s': truncated: expected at least 16 bytes, got %zu", path, len);
    }
    uint32_t magic = be32(buf), count = be32(buf + 4), rows = be32(buf + 8), cols = be32(buf + 12);
    if (magic != 0x00000803) {
        free(buf);
        return err_set(e, "'%s': not an IDX image file (magic 0x%08x, expected 0x00000803)", path,
                       (unsigned)magic);
    }
    if (count > INT_MAX || rows == 0 || cols == 0 || rows > INT_MAX / cols ||
        (count && (size_t)rows * cols > (SIZE_MAX - 16) / count)) {
        free(buf);
        return err_set(e, "'%s': bad image dimensions %u x %u x %u", path, (unsigned)count,
                       (unsigned)rows, (unsigned)cols);
    }
    if (count == 0) {
        free(buf);
        return err_set(e, "'%s': holds no images", path);
    }
    size_t bytes = (size_t)count * rows * cols;
    if (!unknown && idx_length(path, len, 16 + bytes, e)) {
        free(buf);
        return -1;
    }
    ds->n = (int)count;
    ds->channels = 1;
    ds->height = (int)rows;
    ds->width = (int)cols;
    ds->dim = (int)(rows * cols);
    if (d->plan) {
        free(buf);
        return 0;
    }
    /* Drop the header in place instead of copying 47 MB. */
    memmove(buf, buf + 16, bytes);
    ds->x8 = xrealloc(buf, bytes);
    return 0;
}

/* Load an idx1 label file for the n images of ds. */
static int idx_labels(struct data *d, const char *dir, const char *base, const char *images,
                      struct dataset *ds, struct err *e)
{
    const char *path;
    uint8_t *buf;
    size_t len;
    bool unknown;
    if (idx_read(d, dir, base, &path, &buf, &len, 8, &unknown, e))
        return -1;
    int rc = -1;
    if (len < 8 && !unknown) {
        err_set(e, "'%s': truncated: expected at least 8 bytes, got %zu", path, len);
        goto out;
    }
    uint32_t magic = be32(buf), count = be32(buf + 4);
    if (magic != 0x00000801) {
        err_set(e, "'%s': not an IDX label file (magic 0x%08x, expected 0x00000801)", path,
                (unsigned)magic);
        goto out;
    }
    if (!unknown && idx_length(path, len, 8 + (size_t)count, e))
        goto out;
    if (count != (uint32_t)ds->n) {
        err_set(e, "'%s' has %u labels but '%s' has %d images", path, (unsigned)count, images,
                ds->n);
        goto out;
    }
    ds->n_classes = 10;
    if (d->plan) { /* the label values are checked when the file is loaded */
        rc = 0;
        goto out;
    }
    ds->label = xmalloc((size_t)(count ? count : 1) * sizeof *ds->label);
    for (uint32_t i = 0; i < count; i++) {
        if (buf[8 + i] >= 10) {
            err_set(e, "'%s': label %d of example %u is not in [0, 10)", path, buf[8 + i],
                    (unsigned)i);
            goto out;
        }
        ds->label[i] = buf[8 + i];
    }
    ds->n_classes = 10;
    rc = 0;
out:
    free(buf);
    return rc;
}

static int idx_load(struct data *d, struct cfg_node *c, const struct idx_set *set, struct err *e)
{
    const char *dir;
    bool normalize;
    if (cfg_str_path(c, "dir", set->dir, &dir, e))
        return -1;
    if (!dir) {
        char *path = cfg_path(c);
        cfg_err(e, c, "'%s.dir' is required for dataset '%s'", path, set->name);
        free(path);
        return -1;
    }
    if (cfg_bool(c, "normalize", true, &normalize, e))
        return -1;

    if (idx_images(d, dir, "train-images-idx3-ubyte", &d->train, e) ||
        idx_labels(d, dir, "train-labels-idx1-ubyte", d->file[d->n_file - 1].path, &d->train, e) ||
        idx_images(d, dir, "t10k-images-idx3-ubyte", &d->test, e) ||
        idx_labels(d, dir, "t10k-labels-idx1-ubyte", d->file[d->n_file - 1].path, &d->test, e))
        return -1;
    if (d->test.height != d->train.height || d->test.width != d->train.width)
        return err_set(e, "'%s': images are %dx%d but the training images are %dx%d",
                       d->file[2].path, d->test.height, d->test.width, d->train.height,
                       d->train.width);

    /* Pixels are p/255 in [0, 1], then standardised with the training set's statistics. */
    float scale = 1.0f / 255.0f, shift = 0.0f;
    if (normalize) {
        scale = (float)(1.0 / (255.0 * set->std));
        shift = (float)(-set->mean / set->std);
    }
    d->train.scale = d->test.scale = scale;
    d->train.shift = d->test.shift = shift;
    return 0;
}

static int idx_load_fashion(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    (void)seed;
    return idx_load(d, c, &idx_fashion, e);
}

static int idx_load_mnist(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    (void)seed;
    return idx_load(d, c, &idx_mnist, e);
}

const struct dataset_ops dataset_idx_fashion_mnist = {
    .name = "fashion-mnist",
    .summary = "Zalando's 28x28 clothing images, 10 classes, 60000 train / 10000 test (IDX)",
    .keys = "dir [/usr/share/datasets/fashion-mnist]: folder with the four IDX files, "
            ".gz or not\n"
            "normalize [true]: (p/255 - 0.2860) / 0.3530; false: p/255\n",
    .load = idx_load_fashion,
};

const struct dataset_ops dataset_idx_mnist = {
    .name = "mnist",
    .summary = "LeCun's 28x28 handwritten digits, 10 classes, 60000 train / 10000 test (IDX)",
    .keys = "dir [required]: folder with the four IDX files, .gz or not\n"
            "normalize [true]: (p/255 - 0.1307) / 0.3081; false: p/255\n",
    .load = idx_load_mnist,
};
