/* test_data: sha256, file reading (gzip), the IDX, CSV and synthetic-linear plugins, the shared
 * limit / val_split / label_noise steps and data_batch. Small data files are written to a
 * mkdtemp directory; the real Fashion-MNIST is loaded from Debian's package when installed. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cfg.h"
#include "data.h"
#include "rng.h"
#include "tap.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static char tmp[64]; /* the mkdtemp directory */

/* ---- helpers ---- */

static char *tmp_path(const char *name) { return xasprintf("%s/%s", tmp, name); }

static void write_raw(const char *path, const void *buf, size_t n, bool gz)
{
    if (gz) {
        gzFile g = gzopen(path, "wb");
        SAMX_ASSERT(g);
        SAMX_ASSERT(n == 0 || gzwrite(g, buf, (unsigned)n) == (int)n);
        SAMX_ASSERT(gzclose(g) == Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        SAMX_ASSERT(f);
        SAMX_ASSERT(fwrite(buf, 1, n, f) == n);
        SAMX_ASSERT(fclose(f) == 0);
    }
}

static void write_text(const char *path, const char *text)
{
    write_raw(path, text, strlen(text), false);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    SAMX_ASSERT(f);
    size_t cap = 1 << 16;
    uint8_t *buf = xmalloc(cap);
    *n = 0;
    size_t got;
    while ((got = fread(buf + *n, 1, cap - *n, f)) > 0) {
        *n += got;
        if (*n == cap)
            buf = xrealloc(buf, cap *= 2);
    }
    fclose(f);
    return buf;
}

static void rm_tree(const char *path)
{
    DIR *dir = opendir(path);
    if (dir) {
        struct dirent *de;
        while ((de = readdir(dir))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char *kid = xasprintf("%s/%s", path, de->d_name);
            rm_tree(kid);
            free(kid);
        }
        closedir(dir);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Load the data: mapping of a YAML config, then check that every key was read. */
static int load(struct data *d, const char *yaml, uint64_t seed, struct err *e)
{
    struct cfg c;
    memset(e, 0, sizeof *e);
    memset(&c, 0, sizeof c);
    if (cfg_load_string(&c, "test.yaml", yaml, e))
        return -1;
    struct cfg_node *node = cfg_map(c.root, "data", e);
    int rc = node ? data_init(d, node, seed, e) : -1;
    if (rc == 0 && cfg_check_unused(&c, e)) {
        data_free(d);
        rc = -1;
    }
    cfg_free(&c);
    return rc;
}

/* data_init must fail with `status` and a message containing `want`. */
static void expect_err(const char *yaml, int status, const char *want, const char *name)
{
    struct data d;
    struct err e;
    int rc = load(&d, yaml, 1, &e);
    if (rc == 0)
        data_free(&d);
    if (!ok(rc == -1 && e.status == status && strstr(e.msg, want), "%s", name))
        diag("rc %d, status %d, message '%s'; want status %d and '%s'", rc, e.status, e.msg, status,
             want);
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

/* ---- sha256 and file reading ---- */

static void test_sha256(void)
{
    char hex[65];
    sha256_hex("", 0, hex);
    ok(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
       "sha256 of ''");
    sha256_hex("abc", 3, hex);
    ok(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
       "sha256 of 'abc'");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(two, strlen(two), hex);
    ok(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
       "sha256 of the 448-bit vector (padding spills into a second block)");
    char *a = xmalloc(1000000);
    memset(a, 'a', 1000000);
    sha256_hex(a, 1000000, hex);
    ok(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
       "sha256 of one million 'a'");
    free(a);
}

static void test_read_file(void)
{
    size_t n = 100000;
    uint8_t *want = xmalloc(n);
    struct rng r;
    rng_init(&r, 1, "test", 0);
    for (size_t i = 0; i < n; i++)
        want[i] = (uint8_t)(rng_below(&r, 4) + 'a'); /* compressible, not trivially */
    char *plain = tmp_path("blob"), *gz = tmp_path("blob.gz");
    write_raw(plain, want, n, false);
    write_raw(gz, want, n, true);

    uint8_t *buf;
    size_t len, raw_len;
    char sha[65], raw_sha[65];
    struct err e = {0};
    ok(data_read_file(plain, &buf, &len, sha, &e) == 0 && len == n && !memcmp(buf, want, n),
       "read_file: plain file");
    free(buf);
    ok(data_read_file(gz, &buf, &len, sha, &e) == 0 && len == n && !memcmp(buf, want, n),
       "read_file: gzipped file is inflated");
    free(buf);
    uint8_t *raw = slurp(gz, &raw_len);
    sha256_hex(raw, raw_len, raw_sha);
    ok(!strcmp(sha, raw_sha), "read_file: sha256 is of the compressed bytes");

    /* Two members, as `cat a.gz b.gz` or gzopen(..., "ab") make. */
    gzFile g = gzopen(gz, "ab");
    gzwrite(g, "tail", 4);
    gzclose(g);
    ok(data_read_file(gz, &buf, &len, sha, &e) == 0 && len == n + 4 && !memcmp(buf, want, n) &&
           !memcmp(buf + n, "tail", 4),
       "read_file: multi-member gzip is read whole");
    free(buf);

    /* Zero padding after the last member is tolerated, other trailing bytes are not. */
    uint8_t *padded = xcalloc(raw_len + 16, 1);
    memcpy(padded, raw, raw_len);
    write_raw(gz, padded, raw_len + 16, false);
    ok(data_read_file(gz, &buf, &len, sha, &e) == 0 && len == n, "read_file: zero padding");
    free(buf);
    memcpy(padded + raw_len, "junk", 4);
    write_raw(gz, padded, raw_len + 16, false);
    ok(data_read_file(gz, &buf, &len, sha, &e) == -1 && strstr(e.msg, gz) &&
           strstr(e.msg, "corrupt gzip"),
       "read_file: trailing garbage is an error naming the file");
    free(padded);

    write_raw(gz, raw, raw_len - 10, false);
    ok(data_read_file(gz, &buf, &len, sha, &e) == -1 && strstr(e.msg, gz) &&
           strstr(e.msg, "corrupt gzip") && e.status == SAMX_EXIT_RUNTIME,
       "read_file: truncated gzip is a runtime error naming the file");
    diag("%s", e.msg);
    raw[raw_len / 2] ^= 0x55;
    write_raw(gz, raw, raw_len, false);
    ok(data_read_file(gz, &buf, &len, sha, &e) == -1 && strstr(e.msg, gz),
       "read_file: corrupt gzip is an error naming the file");
    diag("%s", e.msg);

    char *missing = tmp_path("no-such-file");
    ok(data_read_file(missing, &buf, &len, sha, &e) == -1 && strstr(e.msg, missing) &&
           strstr(e.msg, "No such file"),
       "read_file: missing file");
    free(missing);
    free(raw);
    free(want);
    free(plain);
    free(gz);
}

/* ---- IDX ---- */

/* Pixel j of example i: pixels 0 and 1 spell the example's index, so splits can be traced. */
static uint8_t pix(int i, int j)
{
    if (j == 0)
        return (uint8_t)(i & 255);
    if (j == 1)
        return (uint8_t)((i >> 8) & 255);
    return (uint8_t)((i * 7 + j * 3) & 255);
}

/* Write one IDX file (NAME or NAME.gz): header (magic, dims) then payload; `adjust` bytes are
 * cut (< 0) or appended (> 0). */
static void write_idx(const char *dir, const char *name, bool gz, uint32_t magic,
                      const uint32_t *dims, int nd, const uint8_t *payload, size_t n, long adjust)
{
    size_t head = 4 + 4 * (size_t)nd, len = head + n;
    uint8_t *buf = xcalloc(len + (adjust > 0 ? (size_t)adjust : 0), 1);
    uint32_t word[4] = {magic, dims[0], nd > 1 ? dims[1] : 0, nd > 2 ? dims[2] : 0};
    for (int w = 0; w <= nd; w++)
        for (int b = 0; b < 4; b++)
            buf[4 * w + b] = (uint8_t)(word[w] >> (24 - 8 * b));
    memcpy(buf + head, payload, n);
    len = (size_t)((long)len + adjust);
    char *path = xasprintf("%s/%s%s", dir, name, gz ? ".gz" : "");
    write_raw(path, buf, len, gz);
    free(path);
    free(buf);
}

static void write_images(const char *dir, const char *name, bool gz, int n, int rows, int cols,
                         uint32_t magic, long adjust)
{
    uint8_t *px = xmalloc((size_t)n * rows * cols + 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < rows * cols; j++)
            px[(size_t)i * rows * cols + j] = pix(i, j);
    uint32_t dims[3] = {(uint32_t)n, (uint32_t)rows, (uint32_t)cols};
    write_idx(dir, name, gz, magic, dims, 3, px, (size_t)n * rows * cols, adjust);
    free(px);
}

static void write_labels(const char *dir, const char *name, bool gz, int n, int bad_at)
{
    uint8_t *lab = xmalloc((size_t)n + 1);
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)(i == bad_at ? 10 : i % 10);
    uint32_t dims[1] = {(uint32_t)n};
    write_idx(dir, name, gz, 0x00000801, dims, 1, lab, (size_t)n, 0);
    free(lab);
}

/* A fresh directory tmp/name holding a valid IDX set: train gzipped, test plain. */
static char *make_idx(const char *name, int n_train, int n_test, int rows, int cols)
{
    char *dir = tmp_path(name);
    SAMX_ASSERT(mkdir(dir, 0700) == 0);
    write_images(dir, "train-images-idx3-ubyte", true, n_train, rows, cols, 0x803, 0);
    write_labels(dir, "train-labels-idx1-ubyte", true, n_train, -1);
    write_images(dir, "t10k-images-idx3-ubyte", false, n_test, rows, cols, 0x803, 0);
    write_labels(dir, "t10k-labels-idx1-ubyte", false, n_test, -1);
    return dir;
}

static char *mnist_yaml(const char *dir, const char *extra)
{
    return xasprintf("data:\n  name: mnist\n  dir: %s\n%s", dir, extra);
}

static void test_idx(void)
{
    char *dir = make_idx("idx", 5, 2, 3, 4), *yaml = mnist_yaml(dir, "");
    struct data d;
    struct err e;
    if (!ok(load(&d, yaml, 1, &e) == 0, "idx: load a small mnist")) {
        diag("%s", e.msg);
        return;
    }
    ok(d.train.n == 5 && d.test.n == 2 && d.val.n == 0, "idx: example counts");
    ok(d.train.channels == 1 && d.train.height == 3 && d.train.width == 4 && d.train.dim == 12 &&
           d.test.dim == 12 && d.train.n_classes == 10 && d.test.n_classes == 10,
       "idx: shape from the header (rows 3, cols 4), 10 classes");
    bool same = d.train.x8 && !d.train.xf && d.test.x8 && !d.train.y;
    for (int i = 0; same && i < 5; i++)
        for (int j = 0; j < 12; j++)
            same = same && d.train.x8[i * 12 + j] == pix(i, j) && d.train.label[i] == i % 10;
    for (int i = 0; same && i < 2; i++)
        for (int j = 0; j < 12; j++)
            same = same && d.test.x8[i * 12 + j] == pix(i, j) && d.test.label[i] == i % 10;
    ok(same, "idx: pixels and labels in file order");
    approx(d.train.scale, 1 / (255 * 0.3081), 1e-6, 0, "idx: mnist scale 1/(255 std)");
    approx(d.train.shift, -0.1307 / 0.3081, 1e-6, 0, "idx: mnist shift -mean/std");
    ok(d.test.scale == d.train.scale && d.test.shift == d.train.shift, "idx: test scaled alike");
    ok(d.n_file == 4 && ends_with(d.file[0].path, "/train-images-idx3-ubyte.gz") &&
           ends_with(d.file[1].path, "/train-labels-idx1-ubyte.gz") &&
           ends_with(d.file[2].path, "/t10k-images-idx3-ubyte") &&
           ends_with(d.file[3].path, "/t10k-labels-idx1-ubyte"),
       "idx: the four files are recorded, .gz or not");
    bool shas = true;
    for (int i = 0; i < d.n_file; i++) {
        size_t n;
        char hex[65];
        uint8_t *raw = slurp(d.file[i].path, &n);
        sha256_hex(raw, n, hex);
        shas = shas && !strcmp(hex, d.file[i].sha256);
        free(raw);
    }
    ok(shas, "idx: recorded sha256 matches the bytes on disk");

    /* data_batch on x8: x = x8 * scale + shift. */
    int idx[3] = {4, 0, 2};
    float x[36];
    int32_t lab[3];
    data_batch(&d.train, idx, 3, x, lab, NULL);
    bool conv = true;
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 12; j++)
            conv = conv && fabsf(x[k * 12 + j] -
                                 ((float)pix(idx[k], j) * d.train.scale + d.train.shift)) <= 1e-6f;
    ok(conv && lab[0] == 4 && lab[1] == 0 && lab[2] == 2, "data_batch: x8 to float, labels");
    data_free(&d);
    free(yaml);

    yaml = mnist_yaml(dir, "  normalize: false\n");
    ok(load(&d, yaml, 1, &e) == 0 && d.train.scale == 1.0f / 255 && d.train.shift == 0,
       "idx: normalize false scales to [0, 1]");
    data_free(&d);
    free(yaml);

    /* Both NAME.gz and NAME present: the .gz wins (the plain one here is not even IDX). */
    char *plain = xasprintf("%s/train-images-idx3-ubyte", dir);
    write_text(plain, "not idx");
    yaml = mnist_yaml(dir, "");
    ok(load(&d, yaml, 1, &e) == 0 && d.train.n == 5, "idx: NAME.gz is tried before NAME");
    data_free(&d);
    free(yaml);
    free(plain);
    free(dir);
}

static void test_idx_errors(void)
{
    struct {
        const char *what;
        int which; /* 0 train images, 1 train labels, 2 test labels */
        uint32_t magic;
        long adjust;
        int n, bad_at;
        const char *want;
    } cases[] = {
        {"truncated images file", 0, 0x803, -5, 5, -1, "truncated: expected 76 bytes, got 71"},
        {"trailing bytes after the images", 0, 0x803, 3, 5, -1, "expected 76 bytes, got 79"},
        {"wrong images magic", 0, 0x804, 0, 5, -1, "not an IDX image file"},
        {"image / label count mismatch", 1, 0x801, 0, 4, -1, "has 4 labels but"},
        {"label 10", 2, 0x801, 0, 2, 1, "label 10 of example 1"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "idx-err%zu", k);
        char *dir = make_idx(name, 5, 2, 3, 4);
        char *file;
        if (cases[k].which == 0) {
            write_images(dir, "train-images-idx3-ubyte", true, cases[k].n, 3, 4, cases[k].magic,
                         cases[k].adjust);
            file = xasprintf("%s/train-images-idx3-ubyte.gz", dir);
        } else if (cases[k].which == 1) {
            write_labels(dir, "train-labels-idx1-ubyte", true, cases[k].n, cases[k].bad_at);
            file = xasprintf("%s/train-labels-idx1-ubyte.gz", dir);
        } else {
            write_labels(dir, "t10k-labels-idx1-ubyte", false, cases[k].n, cases[k].bad_at);
            file = xasprintf("%s/t10k-labels-idx1-ubyte", dir);
        }
        char *yaml = mnist_yaml(dir, "");
        char *want = xasprintf("'%s'", file);
        char *label = xasprintf("idx: %s is a runtime error naming the file", cases[k].what);
        expect_err(yaml, SAMX_EXIT_RUNTIME, want, label);
        expect_err(yaml, SAMX_EXIT_RUNTIME, cases[k].want, cases[k].what);
        free(label);
        free(want);
        free(yaml);
        free(file);
        free(dir);
    }

    char *dir = make_idx("idx-missing", 5, 2, 3, 4);
    char *file = xasprintf("%s/t10k-labels-idx1-ubyte", dir);
    unlink(file);
    char *yaml = mnist_yaml(dir, "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, file, "idx: missing file names the path");
    free(yaml);
    free(file);

    file = xasprintf("%s/train-images-idx3-ubyte.gz", dir);
    write_text(file, "\x1f\x8b garbage");
    yaml = mnist_yaml(dir, "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "corrupt gzip", "idx: corrupt gzip");
    free(yaml);
    free(file);
    free(dir);

    expect_err("data:\n  name: mnist\n", SAMX_EXIT_CONFIG, "'data.dir' is required",
               "idx: mnist needs data.dir");
    expect_err("data:\n  name: fashion-mnist\n  dir: /nonexistent/samx\n", SAMX_EXIT_RUNTIME,
               "/nonexistent/samx/train-images-idx3-ubyte", "idx: nonexistent dir");
}

/* ---- common keys: limits, val_split, label_noise ---- */

/* The index of example i as written into its first two pixels. */
static int id_of(const struct dataset *ds, int i)
{
    return ds->x8[(size_t)i * ds->dim] | ds->x8[(size_t)i * ds->dim + 1] << 8;
}

static void test_splits(void)
{
    char *dir = make_idx("split", 1000, 20, 2, 2);
    struct data d, d2;
    struct err e;

    char *yaml = mnist_yaml(dir, "  val_split: 0.25\n");
    if (!ok(load(&d, yaml, 7, &e) == 0, "split: load with val_split")) {
        diag("%s", e.msg);
        return;
    }
    ok(d.val.n == 250 && d.train.n == 750, "split: round(0.25 n) examples go to val");
    ok(d.val.dim == 4 && d.val.n_classes == 10 && d.val.scale == d.train.scale && d.val.height == 2,
       "split: val has train's shape and scaling");
    char *seen = xcalloc(1000, 1);
    bool order = true, labels = true;
    for (int i = 0; i < d.train.n; i++) {
        seen[id_of(&d.train, i)]++;
        order = order && (i == 0 || id_of(&d.train, i) > id_of(&d.train, i - 1));
        labels = labels && d.train.label[i] == id_of(&d.train, i) % 10;
    }
    for (int i = 0; i < d.val.n; i++) {
        seen[id_of(&d.val, i)]++;
        labels = labels && d.val.label[i] == id_of(&d.val, i) % 10;
    }
    bool all = true;
    for (int i = 0; i < 1000; i++)
        all = all && seen[i] == 1;
    ok(all, "split: train and val partition the examples");
    ok(order, "split: train keeps file order");
    ok(labels, "split: labels travel with their images");
    free(seen);

    ok(load(&d2, yaml, 7, &e) == 0 && d2.val.n == 250 && !memcmp(d.val.x8, d2.val.x8, 250 * 4) &&
           !memcmp(d.train.x8, d2.train.x8, 750 * 4),
       "split: same seed, same split");
    data_free(&d2);
    ok(load(&d2, yaml, 8, &e) == 0 && d2.val.n == 250 && memcmp(d.val.x8, d2.val.x8, 250 * 4),
       "split: another seed, another split");
    data_free(&d2);
    data_free(&d);
    free(yaml);

    yaml = mnist_yaml(dir, "  limit_train: 100\n  limit_test: 3\n  val_split: 0.1\n");
    ok(load(&d, yaml, 7, &e) == 0 && d.train.n == 90 && d.val.n == 10 && d.test.n == 3,
       "limit: limits apply before the split");
    bool first = true;
    for (int i = 0; i < d.train.n; i++)
        first = first && id_of(&d.train, i) < 100;
    for (int i = 0; i < d.val.n; i++)
        first = first && id_of(&d.val, i) < 100;
    for (int i = 0; i < d.test.n; i++)
        first = first && id_of(&d.test, i) == i;
    ok(first, "limit: the first N examples in file order are kept");
    data_free(&d);
    free(yaml);

    yaml = mnist_yaml(dir, "  limit_train: all\n  limit_test: 5000\n");
    ok(load(&d, yaml, 7, &e) == 0 && d.train.n == 1000 && d.test.n == 20,
       "limit: 'all' and limits above n keep everything");
    data_free(&d);
    free(yaml);

    yaml = mnist_yaml(dir, "  label_noise: 0.5\n  val_split: 0.2\n");
    ok(load(&d, yaml, 3, &e) == 0, "noise: load with label_noise");
    int changed = 0, val_changed = 0;
    for (int i = 0; i < d.train.n; i++)
        changed += d.train.label[i] != id_of(&d.train, i) % 10;
    for (int i = 0; i < d.val.n; i++)
        val_changed += d.val.label[i] != id_of(&d.val, i) % 10;
    ok(changed == d.n_noisy, "noise: n_noisy counts the changed labels (%d)", d.n_noisy);
    /* 400 of 800 relabelled uniformly over 10 classes: 360 change on average, sd ~6. */
    ok(d.n_noisy >= 330 && d.n_noisy <= 390, "noise: about 0.5 * 0.9 of the labels change");
    ok(val_changed == 0, "noise: validation labels stay clean");
    ok(load(&d2, yaml, 3, &e) == 0 && d2.n_noisy == d.n_noisy &&
           !memcmp(d.train.label, d2.train.label, (size_t)d.train.n * sizeof *d.train.label),
       "noise: same seed, same noisy labels");
    data_free(&d2);
    data_free(&d);
    free(yaml);

    yaml = mnist_yaml(dir, "  val_split: 1\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "'data.val_split' must be in [0, 1), got '1'",
               "keys: val_split 1");
    free(yaml);
    yaml = mnist_yaml(dir, "  label_noise: 1.5\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "'data.label_noise' must be in [0, 1]",
               "keys: label_noise 1.5");
    free(yaml);
    yaml = mnist_yaml(dir, "  limit_train: 0\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "'data.limit_train' must be a positive integer",
               "keys: limit_train 0");
    free(yaml);
    yaml = mnist_yaml(dir, "  limit_test: 2.5\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "'data.limit_test' must be a positive integer",
               "keys: limit_test 2.5");
    free(yaml);
    yaml = mnist_yaml(dir, "  shuffle: false\n");
    ok(load(&d, yaml, 1, &e) == 0 && !d.shuffle, "keys: shuffle false");
    data_free(&d);
    free(yaml);
    yaml = mnist_yaml(dir, "");
    ok(load(&d, yaml, 1, &e) == 0 && d.shuffle && d.n_noisy == 0, "keys: shuffle defaults true");
    data_free(&d);
    free(yaml);
    yaml = mnist_yaml(dir, "  limit_train: 1\n  val_split: 0.6\n");
    expect_err(yaml, SAMX_EXIT_CONFIG,
               "'data.val_split' 0.6 leaves none of the 1 training examples",
               "keys: val_split that empties train");
    free(yaml);
    free(dir);

    /* The list grows with the registry; its start is stable. */
    expect_err("data:\n  name: imagenet\n", SAMX_EXIT_CONFIG,
               "unknown dataset 'imagenet' (known: fashion-mnist, mnist, csv, synthetic-linear",
               "keys: unknown dataset lists the known ones");
    expect_err("data:\n  name: synthetic-linear\n  label_noise: 0.1\n", SAMX_EXIT_CONFIG,
               "'data.label_noise' needs a classification dataset",
               "keys: label_noise on regression data");
}

/* ---- CSV ---- */

static char *csv_yaml(const char *train, const char *test, const char *extra)
{
    char *tr = tmp_path(train), *te = test ? tmp_path(test) : NULL;
    char *s = xasprintf("data:\n  name: csv\n  train: %s\n%s%s%s%s", tr, te ? "  test: " : "",
                        te ? te : "", te ? "\n" : "", extra);
    free(tr);
    free(te);
    return s;
}

static bool floats_are(const float *x, const float *want, int n)
{
    for (int i = 0; i < n; i++)
        if (fabsf(x[i] - want[i]) > 1e-5f)
            return false;
    return true;
}

static void test_csv(void)
{
    struct data d;
    struct err e;
    char *path, *yaml;

    path = tmp_path("cls.csv");
    write_text(path, "a, b ,label\r\n1,2,0\r\n3,4,1\r\n\" 5 \",\"6\",2.0\r\n\r\n");
    free(path);
    path = tmp_path("cls-test.csv");
    write_text(path, "a,b,label\n7,8,4");
    free(path);
    yaml = csv_yaml("cls.csv", "cls-test.csv", "  label: label\n");
    if (ok(load(&d, yaml, 1, &e) == 0, "csv: classification, header, label by name")) {
        const float x[] = {1, 2, 3, 4, 5, 6};
        ok(d.train.n == 3 && d.train.dim == 2 && d.train.xf && !d.train.x8 && d.train.label &&
               !d.train.y && d.train.channels == 0,
           "csv: shape");
        ok(floats_are(d.train.xf, x, 6), "csv: quoted, spaced and CRLF fields");
        ok(d.train.label[0] == 0 && d.train.label[1] == 1 && d.train.label[2] == 2,
           "csv: labels, '2.0' accepted");
        ok(d.test.n == 1 && d.test.label[0] == 4 && d.test.xf[1] == 8 && d.train.n_classes == 5 &&
               d.test.n_classes == 5,
           "csv: test file, n_classes = 1 + max over train and test");
        ok(d.n_file == 2 && ends_with(d.file[1].path, "cls-test.csv"), "csv: files recorded");
        float xb[4];
        int32_t lb[2];
        int idx[2] = {2, 0};
        data_batch(&d.train, idx, 2, xb, lb, NULL);
        const float want[] = {5, 6, 1, 2};
        ok(floats_are(xb, want, 4) && lb[0] == 2 && lb[1] == 0, "data_batch: xf rows, labels");
        data_free(&d);
    } else {
        diag("%s", e.msg);
    }
    free(yaml);

    path = tmp_path("num.csv");
    write_text(path, "0,1.5,2.5\n1,3.5,4.5\n");
    free(path);
    yaml = csv_yaml("num.csv", NULL, "  label: 0\n");
    ok(load(&d, yaml, 1, &e) == 0 && d.train.n == 2 && d.train.label[1] == 1 &&
           d.train.xf[0] == 1.5f && d.train.xf[3] == 4.5f && d.test.n == 0 && d.test.dim == 2,
       "csv: no header detected, label by index, no test file");
    data_free(&d);
    free(yaml);
    yaml = csv_yaml("num.csv", NULL, "  label: -3\n  header: true\n");
    ok(load(&d, yaml, 1, &e) == 0 && d.train.n == 1 && d.train.label[0] == 1,
       "csv: header true skips a numeric first row; negative index");
    data_free(&d);
    free(yaml);
    yaml = csv_yaml("cls.csv", NULL, "  header: false\n");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "cls.csv':1: column 1: 'a' is not a number",
               "csv: header false reads the header as data");
    free(yaml);
    yaml = csv_yaml("num.csv", NULL, "  label: label\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "needs a header row", "csv: label name without header");
    free(yaml);
    yaml = csv_yaml("cls.csv", NULL, "  label: nope\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "no column 'nope'", "csv: unknown label name");
    free(yaml);
    yaml = csv_yaml("cls.csv", NULL, "  label: 3\n");
    expect_err(yaml, SAMX_EXIT_CONFIG, "out of range", "csv: label index out of range");
    free(yaml);

    path = tmp_path("reg.csv");
    write_text(path, "x1,x2,y\n1,10,0.5\n2,10,-1.25\n3,10,2\n");
    free(path);
    path = tmp_path("reg-test.csv");
    write_text(path, "x1,x2,y\n4,12,7\n");
    free(path);
    yaml = csv_yaml("reg.csv", "reg-test.csv", "  task: regression\n  standardize: true\n");
    if (ok(load(&d, yaml, 1, &e) == 0, "csv: regression with standardize")) {
        float s = sqrtf(2.0f / 3.0f);
        const float x[] = {-1 / s, 0, 0, 0, 1 / s, 0};
        const float y[] = {0.5f, -1.25f, 2};
        ok(d.train.n_classes == 0 && !d.train.label && d.train.y && floats_are(d.train.y, y, 3),
           "csv: regression targets in y");
        ok(floats_are(d.train.xf, x, 6), "csv: standardized with train mean/std (std 0 -> 1)");
        ok(fabsf(d.test.xf[0] - 2 / s) < 1e-5f && d.test.xf[1] == 2 && d.test.y[0] == 7,
           "csv: test standardized with the train statistics");
        float yb[1];
        int idx[1] = {1};
        data_batch(&d.train, idx, 1, NULL, NULL, yb);
        ok(yb[0] == -1.25f, "data_batch: regression targets");
        data_free(&d);
    } else {
        diag("%s", e.msg);
    }
    free(yaml);

    path = tmp_path("ragged.csv");
    write_text(path, "a,b,c\n1,2,3\n\n4,5\n");
    yaml = csv_yaml("ragged.csv", NULL, "");
    char *want = xasprintf("'%s':4: expected 3 columns, got 2", path);
    expect_err(yaml, SAMX_EXIT_RUNTIME, want, "csv: ragged row names file and line");
    free(want);
    free(yaml);
    free(path);

    path = tmp_path("nan.csv");
    write_text(path, "a,b,c\n1,2,3\n4,abc,6\n");
    yaml = csv_yaml("nan.csv", NULL, "");
    want = xasprintf("'%s':3: column 2: 'abc' is not a number", path);
    expect_err(yaml, SAMX_EXIT_RUNTIME, want, "csv: non-number names file, line and column");
    free(want);
    free(yaml);
    free(path);

    path = tmp_path("frac.csv");
    write_text(path, "1,2,0\n1,2,2.5\n");
    free(path);
    yaml = csv_yaml("frac.csv", NULL, "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "frac.csv':2: column 3: label '2.5' is not a non-negative",
               "csv: fractional class label");
    free(yaml);
    yaml = csv_yaml("frac.csv", NULL, "  task: regression\n");
    ok(load(&d, yaml, 1, &e) == 0 && d.train.y[1] == 2.5f, "csv: the same file as regression");
    data_free(&d);
    free(yaml);

    path = tmp_path("empty.csv");
    write_text(path, "\n\n");
    free(path);
    yaml = csv_yaml("empty.csv", NULL, "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "empty.csv': empty file", "csv: empty file");
    free(yaml);
    path = tmp_path("head.csv");
    write_text(path, "a,b\n");
    free(path);
    yaml = csv_yaml("head.csv", NULL, "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "head.csv': no data rows", "csv: header only");
    free(yaml);
    path = tmp_path("quote.csv");
    write_text(path, "1,\"2\n");
    free(path);
    yaml = csv_yaml("quote.csv", NULL, "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "quote.csv':1: unterminated", "csv: unterminated quote");
    free(yaml);
    yaml = csv_yaml("cls.csv", "num.csv", "");
    expect_err(yaml, SAMX_EXIT_RUNTIME, "num.csv", "csv: test file with a different width");
    free(yaml);
    expect_err("data:\n  name: csv\n", SAMX_EXIT_CONFIG, "'data.train' is required",
               "csv: train is required");

    /* Gzipped CSV goes through the same reader. */
    path = tmp_path("cls.csv.gz");
    const char *text = "f,label\n0.5,1\n";
    write_raw(path, text, strlen(text), true);
    free(path);
    yaml = csv_yaml("cls.csv.gz", NULL, "");
    ok(load(&d, yaml, 1, &e) == 0 && d.train.n == 1 && d.train.label[0] == 1 &&
           d.train.n_classes == 2,
       "csv: gzipped file");
    data_free(&d);
    free(yaml);
}

/* ---- synthetic-linear ---- */

/* Solve the k x k system a x = b in place (Gaussian elimination, partial pivoting). */
static void solve(double *a, double *b, int k)
{
    for (int c = 0; c < k; c++) {
        int p = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(a[r * k + c]) > fabs(a[p * k + c]))
                p = r;
        for (int j = 0; j < k; j++) {
            double t = a[c * k + j];
            a[c * k + j] = a[p * k + j];
            a[p * k + j] = t;
        }
        double t = b[c];
        b[c] = b[p];
        b[p] = t;
        for (int r = c + 1; r < k; r++) {
            double f = a[r * k + c] / a[c * k + c];
            for (int j = c; j < k; j++)
                a[r * k + j] -= f * a[c * k + j];
            b[r] -= f * b[c];
        }
    }
    for (int c = k - 1; c >= 0; c--) {
        for (int j = c + 1; j < k; j++)
            b[c] -= a[c * k + j] * b[j];
        b[c] /= a[c * k + c];
    }
}

static void test_synthetic(void)
{
    struct data d, d2;
    struct err e;
    const char *yaml = "data:\n  name: synthetic-linear\n  n_train: 200\n  n_test: 50\n"
                       "  features: 5\n  noise: 0\n";
    if (!ok(load(&d, yaml, 11, &e) == 0, "synthetic: load")) {
        diag("%s", e.msg);
        return;
    }
    ok(d.train.n == 200 && d.test.n == 50 && d.train.dim == 5 && d.train.n_classes == 0 &&
           d.train.xf && d.train.y && !d.train.label && !d.train.x8 && d.n_file == 0,
       "synthetic: shapes, regression, no files");

    /* Least squares on noise-free data recovers the teacher drawn from its stream. */
    double a[25] = {0}, b[5] = {0}, beta[5];
    struct rng r;
    rng_init(&r, 11, "data.synthetic.teacher", 0);
    for (int j = 0; j < 5; j++)
        beta[j] = rng_normal(&r) / sqrt(5.0);
    for (int i = 0; i < 200; i++) {
        const float *x = d.train.xf + i * 5;
        for (int j = 0; j < 5; j++) {
            b[j] += x[j] * (double)d.train.y[i];
            for (int k = 0; k < 5; k++)
                a[j * 5 + k] += (double)x[j] * x[k];
        }
    }
    solve(a, b, 5);
    double worst = 0;
    for (int j = 0; j < 5; j++)
        worst = worse(worst, fabs(b[j] - beta[j]));
    ok(worst < 1e-4, "synthetic: least squares recovers beta* (max error %.2g)", worst);

    ok(load(&d2, yaml, 11, &e) == 0 && !memcmp(d.train.xf, d2.train.xf, 200 * 5 * sizeof(float)) &&
           !memcmp(d.test.y, d2.test.y, 50 * sizeof(float)),
       "synthetic: same seed, same data");
    data_free(&d2);
    ok(load(&d2, yaml, 12, &e) == 0 && memcmp(d.train.xf, d2.train.xf, 200 * 5 * sizeof(float)),
       "synthetic: another seed, other data");
    data_free(&d2);
    ok(memcmp(d.train.xf, d.test.xf, 50 * 5 * sizeof(float)), "synthetic: test differs from train");
    data_free(&d);

    yaml = "data:\n  name: synthetic-linear\n  n_train: 20000\n  n_test: 0\n  features: 4\n"
           "  spectrum: 2\n  noise: 0.5\n";
    if (ok(load(&d, yaml, 5, &e) == 0 && d.test.n == 0, "synthetic: spectrum 2, no test set")) {
        bool var_ok = true;
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int i = 0; i < d.train.n; i++)
                s += (double)d.train.xf[i * 4 + j] * d.train.xf[i * 4 + j];
            double want = pow(j + 1, -2.0);
            var_ok = var_ok && fabs(s / d.train.n - want) < 0.05 * want;
        }
        ok(var_ok, "synthetic: feature i has variance (i+1)^-spectrum");
        /* The residual y - x.beta* is the noise: std 0.5. */
        rng_init(&r, 5, "data.synthetic.teacher", 0);
        double bt[4], ss = 0;
        for (int j = 0; j < 4; j++)
            bt[j] = rng_normal(&r) / 2;
        for (int i = 0; i < d.train.n; i++) {
            double res = d.train.y[i];
            for (int j = 0; j < 4; j++)
                res -= bt[j] * d.train.xf[i * 4 + j];
            ss += res * res;
        }
        approx(sqrt(ss / d.train.n), 0.5, 0.03, 0, "synthetic: noise std");
        data_free(&d);
    }
    expect_err("data:\n  name: synthetic-linear\n  features: 0\n", SAMX_EXIT_CONFIG,
               "'data.features' must be a positive integer", "synthetic: features 0");
    expect_err("data:\n  name: synthetic-linear\n  noise: -1\n", SAMX_EXIT_CONFIG,
               "'data.noise' must be >= 0", "synthetic: negative noise");
}

/* ---- the real Fashion-MNIST ---- */

static void test_fashion(void)
{
    if (access(FASHION_DIR "/train-labels-idx1-ubyte.gz", R_OK) != 0) {
        skip("fashion-mnist: %s not installed (Debian package dataset-fashion-mnist)", FASHION_DIR);
        return;
    }
    struct data d;
    struct err e;
    if (!ok(load(&d, "data:\n  name: fashion-mnist\n", 1, &e) == 0, "fashion-mnist: load")) {
        diag("%s", e.msg);
        return;
    }
    ok(d.train.n == 60000 && d.test.n == 10000 && d.train.height == 28 && d.train.width == 28 &&
           d.train.dim == 784 && d.train.n_classes == 10,
       "fashion-mnist: 60000 + 10000 images of 28x28, 10 classes");
    ok(d.train.label[0] == 9, "fashion-mnist: the first training image is an ankle boot (9)");
    ok(d.n_file == 4 && !strcmp(d.file[1].path, FASHION_DIR "/train-labels-idx1-ubyte.gz") &&
           !strcmp(d.file[1].sha256,
                   "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
       "fashion-mnist: sha256 of train-labels-idx1-ubyte.gz matches sha256sum");
    double s = 0, ss = 0;
    size_t n = (size_t)d.train.n * d.train.dim;
    for (size_t i = 0; i < n; i++) {
        double p = d.train.x8[i] / 255.0;
        s += p;
        ss += p * p;
    }
    double mean = s / n, sd = sqrt(ss / n - mean * mean);
    approx(mean, 0.2860, 0, 5e-4, "fashion-mnist: pixel mean is the normalisation mean");
    approx(sd, 0.3530, 0, 5e-4, "fashion-mnist: pixel std is the normalisation std");

    /* A batch big enough for the parallel path converts like the serial formula. */
    enum { B = 256 };
    int idx[B];
    for (int i = 0; i < B; i++)
        idx[i] = (i * 7919) % d.train.n;
    float *x = xmalloc((size_t)B * 784 * sizeof *x);
    int32_t lab[B];
    data_batch(&d.train, idx, B, x, lab, NULL);
    bool same = true;
    for (int i = 0; i < B; i++) {
        same = same && lab[i] == d.train.label[idx[i]];
        for (int j = 0; j < 784; j++)
            same = same && fabsf(x[i * 784 + j] -
                                 ((float)d.train.x8[(size_t)idx[i] * 784 + j] * d.train.scale +
                                  d.train.shift)) <= 1e-6f;
    }
    ok(same, "data_batch: a 256 x 784 batch (parallel path) converts like x8 * scale + shift");
    free(x);
    data_free(&d);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/samx-test-data-XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_sha256();
    test_read_file();
    test_idx();
    test_idx_errors();
    test_splits();
    test_csv();
    test_synthetic();
    test_fashion();
    rm_tree(tmp);
    return done();
}
