/* data.h: data sets, splits and batches.
 *
 * A data set is loaded once at build time by a dataset plugin (lib/data/<name>.c), then split,
 * limited and corrupted (label noise) by the shared code in data.c, all seeded. Image data stays
 * 8-bit in memory (x8) and is converted to float per batch by data_batch(); tabular data is
 * float (xf). Nothing here allocates after data_init().
 *
 * Order of operations in data_init (each seeded from its own named stream):
 *   1. the plugin loads train and test in file order;
 *   2. limit_train / limit_test keep the first N examples (file order);
 *   3. val_split moves a seeded random fraction of train into val ("data.val_split" stream);
 *   4. label_noise replaces a seeded random fraction of the remaining train labels by a label
 *      drawn uniformly from all classes, the true one included ("data.label_noise" stream).
 *
 * Config keys (data.*): name, val_split [0], label_noise [0], shuffle [true], limit_train [all],
 * limit_test [all], plus the plugin's own keys (see `samx list datasets`).
 *
 * Errors: unreadable, truncated or mislabelled files, ragged CSV rows and non-numbers are
 * runtime errors (exit 1) naming the file (and the CSV line); bad keys are config errors (2).
 */
#ifndef SAMX_DATA_H
#define SAMX_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "err.h"

struct dataset {
    int n;               /* examples */
    int dim;             /* features per example (= channels*height*width for images) */
    int channels, height, width; /* image shape; 0 for tabular data */
    int n_classes;       /* > 0: classification, labels in [0, n_classes); 0: regression */
    uint8_t *x8;         /* (n, dim) raw pixels, or NULL */
    float *xf;           /* (n, dim) features, or NULL; exactly one of x8/xf is set when n > 0 */
    float scale, shift;  /* x8 -> float: x = x8 * scale + shift */
    /* Per-channel normalisation (CIFAR): when chan_norm, channel ch of an NCHW image
     * becomes x8 * chan_scale[ch] + chan_shift[ch] instead (channels <= 4). */
    bool chan_norm;
    float chan_scale[4], chan_shift[4];
    int32_t *label;      /* (n) class labels (classification), else NULL */
    float *y;            /* (n) regression targets (regression), else NULL */
};

struct data_file {
    char *path;
    char sha256[65];     /* hex digest of the file's bytes as stored (compressed if .gz) */
};

#define SAMX_MAX_DATA_FILES 8

/* Training-time augmentation of images, in torchvision's order: random crop of the
 * original size from the image zero-padded by crop pixels (pad value: pixel 0, normalised as
 * any pixel), horizontal flip with probability 1/2, then cutout: with probability cutout_p a
 * cutout x cutout square centred at a uniform pixel (clipped at the borders) is set to 0 after
 * normalisation, as the Cutout code the CR-SAM recipe uses. All zero: no augmentation. */
struct augment {
    int crop;            /* padding of the random crop, 0: off */
    bool flip;
    int cutout;          /* side of the square, 0: off */
    double cutout_p;
};

struct data {
    const struct dataset_ops *ops;
    struct dataset train, val, test; /* val.n == 0 without a validation split */
    struct data_file file[SAMX_MAX_DATA_FILES];
    int n_file;
    bool shuffle;        /* data.shuffle: reshuffle train every epoch (else file order) */
    int n_noisy;         /* labels actually changed by label_noise */
    struct augment augment; /* data.augment: applied by data_batch_train to train batches */
    /* Planning (samx check, sweep --dry-run/--emit, table): shapes and sizes only, from file
     * headers (IDX), file sizes (CIFAR) or the config (synthetic); no example is loaded
     * (x8/xf/label/y stay NULL), no file hashed. CSV is still read whole: its shape is only
     * known by parsing it. What needs the examples (label values, gzip payloads) is checked
     * at run time. */
    bool plan;
};

/* A dataset plugin. load() reads the plugin's own keys from `c` (the data: mapping), fills
 * d->train and d->test in file order, and records every file it read in d->file. */
struct dataset_ops {
    const char *name;
    const char *summary; /* one line for `samx list datasets` */
    const char *keys;    /* "key [default]: meaning" lines for `samx list datasets` */
    int (*load)(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e);
    /* Default of data.augment, or NULL: the key is optional and off (image data sets only). */
    const struct augment *augment;
};

extern const struct dataset_ops dataset_idx_fashion_mnist, dataset_idx_mnist, dataset_csv,
    dataset_synthetic_linear;
extern const struct dataset_ops dataset_cifar10, dataset_cifar100;
/* NULL-terminated registry, in `samx list` order. */
extern const struct dataset_ops *const dataset_registry[];
const struct dataset_ops *dataset_find(const char *name);

/* Read data.* from `c` (the data: mapping), load, limit, split and corrupt as above. */
int data_init(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e);
/* data_init for planning (d->plan above): the same keys, defaults and config errors, and the
 * shapes and sizes of train, val and test; no examples. */
int data_plan(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e);
void data_free(struct data *d);

/* Gather examples idx[0..n) of ds into x (n, ds->dim) as float, and their labels (classification)
 * or targets (regression) into label / y; pass NULL for what the caller does not need. */
void data_batch(const struct dataset *ds, const int *idx, int n, float *x, int32_t *label,
                float *y);
/* data_batch on d->train for optimizer step `step`, with d->augment applied to the images:
 * example i of the batch draws from the stream (seed, "augment", step << 16 | i), so the batch
 * is a pure function of (seed, step, idx): the same for every pass of a step (the closure
 * reuses the batch gathered once) and after a resume. Needs n < 65536. */
void data_batch_train(const struct data *d, const int *idx, int n, uint64_t seed, long step,
                      float *x, int32_t *label, float *y);

/* Helpers shared by plugins. */
/* Read a whole file, gunzipping it when it starts with the gzip magic. Fills *sha with the
 * sha256 of the bytes on disk. Errors name the path. */
int data_read_file(const char *path, uint8_t **buf, size_t *len, char sha[65], struct err *e);
/* The first n bytes of a file (gunzipped when it starts with the gzip magic) into buf, for
 * reading a header without the payload; *got is how many there were (fewer at the end of the
 * data). *gz says whether it was gzip; *size is the file's size on disk. Regular files only. */
int data_read_head(const char *path, uint8_t *buf, size_t n, size_t *got, bool *gz,
                   long long *size, struct err *e);
/* sha256 of a buffer as 64 hex digits + NUL. */
void sha256_hex(const void *buf, size_t len, char out[65]);

#endif
