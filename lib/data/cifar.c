/* cifar.c: CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in their binary formats.
 *
 * cifar10: `dir`/data_batch_1.bin .. data_batch_5.bin (train, in that order) and test_batch.bin;
 *   each record is 1 label byte (0..9) and 3072 pixel bytes.
 * cifar100: `dir`/train.bin and test.bin; each record is a coarse label byte, a fine label
 *   byte (0..99, the one used) and 3072 pixel bytes.
 * Pixels are 3 planes (R, G, B) of 32x32, row-major: already NCHW. They stay 8-bit in memory;
 * data_batch normalises each channel, x = (p/255 - mean[c]) / std[c].
 *
 * No Debian package ships CIFAR, so `dir` is required (e.g. the extracted
 * cifar-10-batches-bin/ or cifar-100-binary/ folders). A file need not hold the usual 10000
 * records (tests write small ones), but it must hold whole records.
 *
 * Planning (data.h) takes the record counts from the file sizes; labels are checked at run
 * time.
 *
 * Keys:
 *   dir [required]
 *   normalize [true]
 *   mean, std [the WSAM/atorch recipe (algorithms.md 3.3): CIFAR-10 (0.4914, 0.4822, 0.4465) /
 *     (0.2470, 0.2435, 0.2616), CIFAR-100 (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762);
 *     the CR-SAM and VaSSO recipes (4.4, 7.3) use (125.3, 123.0, 113.9)/255 and
 *     (63.0, 62.1, 66.7)/255 for both]
 *   augment [crop: 4, flip: true, cutout: 0, cutout_p: 0.5] (data.h, struct augment)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

#define CIFAR_PIXELS 3072

struct cifar_set {
    const char *name;
    int label_bytes, n_classes;
    const char *const *train_files;
    const char *test_file;
    double mean[3], std[3];
};

static const char *const cifar10_train[] = {"data_batch_1.bin", "data_batch_2.bin",
                                            "data_batch_3.bin", "data_batch_4.bin",
                                            "data_batch_5.bin", NULL};
static const char *const cifar100_train[] = {"train.bin", NULL};

static const struct cifar_set cifar10 = {"cifar10", 1, 10, cifar10_train, "test_batch.bin",
                                         {0.4914, 0.4822, 0.4465}, {0.2470, 0.2435, 0.2616}};
static const struct cifar_set cifar100 = {"cifar100", 2, 100, cifar100_train, "test.bin",
                                          {0.5071, 0.4865, 0.4409}, {0.2673, 0.2564, 0.2762}};

/* Append the records of dir/base to ds. */
static int cifar_file(struct data *d, const struct cifar_set *set, const char *dir,
                      const char *base, struct dataset *ds, struct err *e)
{
    char *path = xasprintf("%s/%s", dir, base);
    SAMX_ASSERT(d->n_file < SAMX_MAX_DATA_FILES);
    struct data_file *f = &d->file[d->n_file];
    uint8_t *buf = NULL;
    size_t len;
    if (d->plan) { /* sizes only: the records are fixed-size */
        uint8_t head[1];
        bool gz;
        long long size;
        if (data_read_head(path, head, 0, &len, &gz, &size, e)) {
            free(path);
            return -1;
        }
        len = (size_t)size;
    } else if (data_read_file(path, &buf, &len, f->sha256, e)) {
        free(path);
        return -1;
    }
    f->path = path;
    d->n_file++;
    size_t rec = (size_t)set->label_bytes + CIFAR_PIXELS;
    int rc = -1;
    if (len == 0 || len % rec != 0) {
        err_set(e, "'%s': truncated: %zu bytes is not a whole number of %zu-byte records", path,
                len, rec);
        goto out;
    }
    size_t k = len / rec;
    if ((size_t)ds->n + k > 1000000000 / CIFAR_PIXELS) {
        err_set(e, "'%s': too many records", path);
        goto out;
    }
    int n0 = ds->n;
    ds->n += (int)k;
    if (d->plan) {
        rc = 0;
        goto out;
    }
    ds->x8 = xrealloc(ds->x8, (size_t)ds->n * CIFAR_PIXELS);
    ds->label = xrealloc(ds->label, (size_t)ds->n * sizeof *ds->label);
    for (size_t i = 0; i < k; i++) {
        const uint8_t *r = buf + i * rec;
        int y = r[set->label_bytes - 1]; /* the fine label for CIFAR-100 */
        if (y >= set->n_classes) {
            err_set(e, "'%s': label %d of record %zu is not in [0, %d)", path, y, i,
                    set->n_classes);
            goto out;
        }
        ds->label[n0 + i] = y;
        memcpy(ds->x8 + (size_t)(n0 + i) * CIFAR_PIXELS, r + set->label_bytes, CIFAR_PIXELS);
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

static int cifar_load(struct data *d, struct cfg_node *c, const struct cifar_set *set,
                      struct err *e)
{
    const char *dir;
    bool normalize;
    double mean[3], std[3];
    int n_mean, n_std;
    if (cfg_str_path(c, "dir", NULL, &dir, e) || cfg_bool(c, "normalize", true, &normalize, e) ||
        cfg_num_list(c, "mean", set->mean, 3, mean, 3, &n_mean, e) ||
        cfg_num_list(c, "std", set->std, 3, std, 3, &n_std, e))
        return -1;
    if (!dir) {
        char *path = cfg_path(c);
        cfg_err(e, c, "'%s.dir' is required for dataset '%s' (no package ships it: give the "
                      "folder of the binary version)", path, set->name);
        free(path);
        return -1;
    }
    if (n_mean != 3 || n_std != 3)
        return cfg_err(e, cfg_child(c, n_mean != 3 ? "mean" : "std"),
                       "'data.%s' must list 3 numbers, one per channel", n_mean != 3 ? "mean"
                                                                                     : "std");
    for (int ch = 0; ch < 3; ch++)
        if (!(std[ch] > 0))
            return cfg_err(e, cfg_child(c, "std"), "'data.std' must be positive");
    struct dataset *parts[2] = {&d->train, &d->test};
    for (int s = 0; s < 2; s++) {
        struct dataset *ds = parts[s];
        ds->channels = 3;
        ds->height = ds->width = 32;
        ds->dim = CIFAR_PIXELS;
        ds->n_classes = set->n_classes;
        ds->chan_norm = true;
        for (int ch = 0; ch < 3; ch++) {
            ds->chan_scale[ch] = normalize ? (float)(1.0 / (255.0 * std[ch])) : 1.0f / 255.0f;
            ds->chan_shift[ch] = normalize ? (float)(-mean[ch] / std[ch]) : 0.0f;
        }
        ds->scale = 1.0f / 255.0f;
    }
    for (int i = 0; set->train_files[i]; i++)
        if (cifar_file(d, set, dir, set->train_files[i], &d->train, e))
            return -1;
    return cifar_file(d, set, dir, set->test_file, &d->test, e);
}

static int cifar10_load(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    (void)seed;
    return cifar_load(d, c, &cifar10, e);
}

static int cifar100_load(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    (void)seed;
    return cifar_load(d, c, &cifar100, e);
}

/* The papers' basic augmentation (algorithms.md 3.3, 4.4): random crop 32 with padding 4 and
 * horizontal flip; cutout off (CR-SAM's `cutout` recipe: cutout 16, p 0.5). */
static const struct augment cifar_augment = {.crop = 4, .flip = true, .cutout = 0,
                                             .cutout_p = 0.5};

const struct dataset_ops dataset_cifar10 = {
    .name = "cifar10",
    .summary = "CIFAR-10, 32x32 colour images, 10 classes, 50000 train / 10000 test (binary)",
    .keys = "dir [required]: folder with data_batch_1..5.bin and test_batch.bin\n"
            "normalize [true]: per channel (p/255 - mean) / std\n"
            "mean [[0.4914, 0.4822, 0.4465]], std [[0.2470, 0.2435, 0.2616]]\n"
            "augment [{crop: 4, flip: true, cutout: 0, cutout_p: 0.5}]: train batches only\n",
    .load = cifar10_load,
    .augment = &cifar_augment,
};

const struct dataset_ops dataset_cifar100 = {
    .name = "cifar100",
    .summary = "CIFAR-100, 32x32 colour images, 100 fine classes, 50000 train / 10000 test",
    .keys = "dir [required]: folder with train.bin and test.bin\n"
            "normalize [true]: per channel (p/255 - mean) / std\n"
            "mean [[0.5071, 0.4865, 0.4409]], std [[0.2673, 0.2564, 0.2762]]\n"
            "augment [{crop: 4, flip: true, cutout: 0, cutout_p: 0.5}]: train batches only\n",
    .load = cifar100_load,
    .augment = &cifar_augment,
};
