/* csv.c: tabular data from comma-separated files, `csv`.
 *
 * One example per row: every column is a feature except the label column. Fields are separated
 * by commas, may be double-quoted ("" inside quotes is a quote; quoted fields may hold commas and
 * newlines), and are trimmed of surrounding spaces; CRLF line ends, blank lines and a missing
 * final newline are fine. Files may be gzipped. Classification labels are non-negative integers
 * ("3" or "3.0"), with n_classes = 1 + the largest label in train and test; regression targets
 * are any numbers.
 *
 * Keys:
 *   train [required]: path of the training file
 *   test [none]: path of the test file, same columns; none gives an empty test set
 *   label [-1]: label column: an index (negative counts from the end) or a header name
 *   task [classification]: classification | regression
 *   header [auto]: auto (the first row is a header when any field is not a number) | true | false
 *   standardize [false]: standardize every feature with the training file's mean and std
 *                        (std 0 counts as 1), computed before limit_train and val_split
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

enum { CSV_HEADER_AUTO, CSV_HEADER_TRUE, CSV_HEADER_FALSE };

struct csv_opts {
    int header;        /* CSV_HEADER_* */
    const char *label; /* label column by header name, or NULL: by index */
    long label_index;  /* label column by index, negative from the end */
    struct cfg_node *label_node;
    bool regression;
};

/* Tokenizer state for one file held in memory. */
struct csv {
    const char *path;
    const char *p, *end;
    int line;     /* 1-based line of the cursor */
    int rec_line; /* line on which the current record starts */
    char *text;   /* the current record's fields, each NUL-terminated */
    size_t n_text, cap_text;
    size_t *field; /* offsets of the fields in text */
    int n_field, cap_field;
};

static void csv_put(struct csv *r, char ch)
{
    if (r->n_text == r->cap_text) {
        r->cap_text = r->cap_text ? 2 * r->cap_text : 256;
        r->text = xrealloc(r->text, r->cap_text);
    }
    r->text[r->n_text++] = ch;
}

static const char *csv_field(const struct csv *r, int i) { return r->text + r->field[i]; }

static bool csv_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }

/* Read the next non-blank record. Returns 1, 0 at the end of the file, -1 on error. */
static int csv_next(struct csv *r, struct err *e)
{
    for (;;) {
        const char *q = r->p;
        while (q < r->end && csv_space(*q))
            q++;
        if (q == r->end) {
            r->p = q;
            return 0;
        }
        if (*q != '\n')
            break;
        r->p = q + 1;
        r->line++;
    }
    r->rec_line = r->line;
    r->n_text = 0;
    r->n_field = 0;
    for (;;) {
        while (r->p < r->end && (*r->p == ' ' || *r->p == '\t'))
            r->p++;
        if (r->n_field == r->cap_field) {
            r->cap_field = r->cap_field ? 2 * r->cap_field : 16;
            r->field = xrealloc(r->field, (size_t)r->cap_field * sizeof *r->field);
        }
        r->field[r->n_field++] = r->n_text;
        if (r->p < r->end && *r->p == '"') {
            r->p++;
            for (;;) {
                if (r->p == r->end)
                    return err_set(e, "'%s':%d: unterminated quoted field", r->path, r->rec_line);
                if (*r->p == '"') {
                    if (r->p + 1 < r->end && r->p[1] == '"') {
                        csv_put(r, '"');
                        r->p += 2;
                        continue;
                    }
                    r->p++;
                    break;
                }
                if (*r->p == '\n')
                    r->line++;
                csv_put(r, *r->p++);
            }
            while (r->p < r->end && csv_space(*r->p))
                r->p++;
            if (r->p < r->end && *r->p != ',' && *r->p != '\n')
                return err_set(e, "'%s':%d: column %d: text after the closing quote", r->path,
                               r->line, r->n_field);
        } else {
            const char *s = r->p;
            while (r->p < r->end && *r->p != ',' && *r->p != '\n')
                r->p++;
            const char *t = r->p;
            while (t > s && csv_space(t[-1]))
                t--;
            while (s < t)
                csv_put(r, *s++);
        }
        csv_put(r, '\0');
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end) { /* the newline */
            r->p++;
            r->line++;
        }
        return 1;
    }
}

/* A finite number spelled out in the whole of s; spaces around it (kept inside quotes) are ok. */
static bool csv_number(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    if (end == s)
        return false;
    while (csv_space(*end))
        end++;
    return !*end && isfinite(*v);
}

/* Resolve the label column of a file with n_col columns (header names in r, or none). */
static int csv_label_col(const struct csv_opts *o, const struct csv *r, bool header, int n_col,
                         int *col, struct err *e)
{
    if (!o->label) {
        long idx = o->label_index;
        if (idx < -n_col || idx >= n_col)
            return cfg_err(e, o->label_node,
                           "label column %ld is out of range: '%s' has %d columns", idx, r->path,
                           n_col);
        *col = (int)(idx < 0 ? idx + n_col : idx);
        return 0;
    }
    if (!header)
        return cfg_err(e, o->label_node, "label column '%s' needs a header row, which '%s' lacks",
                       o->label, r->path);
    for (int i = 0; i < n_col; i++) {
        if (!strcmp(csv_field(r, i), o->label)) {
            *col = i;
            return 0;
        }
    }
    char names[512] = "";
    for (int i = 0; i < n_col; i++) {
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s'%s'", i ? ", " : "", csv_field(r, i));
    }
    return cfg_err(e, o->label_node, "no column '%s' in '%s' (columns: %s)", o->label, r->path,
                   names);
}

/* Parse one file into ds (n, dim, xf, label or y). want_col: the column count the file must
 * have (the training file's), or 0 for the training file itself. */
static int csv_load_file(struct data *d, const char *path, const struct csv_opts *o, int want_col,
                         struct dataset *ds, struct err *e)
{
    struct csv r = {.path = path, .line = 1};
    uint8_t *buf;
    size_t len;
    int rc = -1;

    SAMX_ASSERT(d->n_file < SAMX_MAX_DATA_FILES);
    struct data_file *f = &d->file[d->n_file];
    if (data_read_file(path, &buf, &len, f->sha256, e))
        return -1;
    f->path = xstrdup(path);
    d->n_file++;
    r.p = (const char *)buf;
    r.end = r.p + len;

    int got = csv_next(&r, e);
    if (got < 0)
        goto out;
    if (got == 0) {
        err_set(e, "'%s': empty file", path);
        goto out;
    }
    int n_col = r.n_field;
    if (want_col && n_col != want_col) {
        err_set(e, "'%s':%d: expected %d columns (as in the training file), got %d", path,
                r.rec_line, want_col, n_col);
        goto out;
    }
    if (n_col < 2) {
        err_set(e, "'%s':%d: expected at least 2 columns (features and a label), got %d", path,
                r.rec_line, n_col);
        goto out;
    }
    bool header = o->header == CSV_HEADER_TRUE;
    if (o->header == CSV_HEADER_AUTO) {
        double v;
        for (int i = 0; i < n_col && !header; i++)
            header = !csv_number(csv_field(&r, i), &v);
    }
    int label_col = 0;
    if (csv_label_col(o, &r, header, n_col, &label_col, e))
        goto out;
    if (header && (got = csv_next(&r, e)) <= 0) {
        if (got == 0)
            err_set(e, "'%s': no data rows", path);
        goto out;
    }

    int dim = n_col - 1, cap = 0;
    ds->dim = dim;
    ds->n = 0;
    for (; got > 0; got = csv_next(&r, e)) {
        if (r.n_field != n_col) {
            err_set(e, "'%s':%d: expected %d columns, got %d", path, r.rec_line, n_col, r.n_field);
            goto out;
        }
        if (ds->n == cap) {
            if (cap > (int)(INT32_MAX / 2)) {
                err_set(e, "'%s': too many rows", path);
                goto out;
            }
            cap = cap ? 2 * cap : 1024;
            ds->xf = xrealloc(ds->xf, (size_t)cap * (size_t)dim * sizeof *ds->xf);
            if (o->regression)
                ds->y = xrealloc(ds->y, (size_t)cap * sizeof *ds->y);
            else
                ds->label = xrealloc(ds->label, (size_t)cap * sizeof *ds->label);
        }
        float *x = ds->xf + (size_t)ds->n * (size_t)dim;
        for (int i = 0; i < n_col; i++) {
            const char *s = csv_field(&r, i);
            double v;
            if (!csv_number(s, &v)) {
                err_set(e, "'%s':%d: column %d: '%s' is not a number", path, r.rec_line, i + 1, s);
                goto out;
            }
            if (i != label_col) {
                *x++ = (float)v;
            } else if (o->regression) {
                ds->y[ds->n] = (float)v;
            } else if (v < 0 || v != floor(v) || v >= INT32_MAX) {
                err_set(e, "'%s':%d: column %d: label '%s' is not a non-negative integer", path,
                        r.rec_line, i + 1, s);
                goto out;
            } else {
                ds->label[ds->n] = (int32_t)v;
            }
        }
        ds->n++;
    }
    if (got < 0)
        goto out;
    if (ds->n == 0) {
        err_set(e, "'%s': no data rows", path);
        goto out;
    }
    /* Give back the growth slack. */
    ds->xf = xrealloc(ds->xf, (size_t)ds->n * (size_t)dim * sizeof *ds->xf);
    if (ds->y)
        ds->y = xrealloc(ds->y, (size_t)ds->n * sizeof *ds->y);
    if (ds->label)
        ds->label = xrealloc(ds->label, (size_t)ds->n * sizeof *ds->label);
    rc = 0;
out:
    free(r.text);
    free(r.field);
    free(buf);
    return rc;
}

/* Standardize the features of train and test with train's per-feature mean and std. */
static void csv_standardize(struct dataset *train, struct dataset *test)
{
    int dim = train->dim;
    for (int j = 0; j < dim; j++) {
        double sum = 0, sq = 0;
        for (int i = 0; i < train->n; i++)
            sum += train->xf[(size_t)i * dim + j];
        double mean = sum / train->n;
        for (int i = 0; i < train->n; i++) {
            double t = train->xf[(size_t)i * dim + j] - mean;
            sq += t * t;
        }
        double sd = sqrt(sq / train->n);
        if (sd == 0)
            sd = 1;
        for (int i = 0; i < train->n; i++)
            train->xf[(size_t)i * dim + j] = (float)((train->xf[(size_t)i * dim + j] - mean) / sd);
        for (int i = 0; i < test->n; i++)
            test->xf[(size_t)i * dim + j] = (float)((test->xf[(size_t)i * dim + j] - mean) / sd);
    }
}

/* label: an integer is a column index, anything else (a quoted "3" too) a header name. Reading
 * integers with cfg_int keeps the resolved config's `label: -1` a number. */
static int csv_label_key(struct cfg_node *c, struct csv_opts *o, struct err *e)
{
    struct cfg_node *n = cfg_child(c, "label");
    char *end = NULL;
    o->label = NULL;
    if (n && n->type == CFG_SCALAR && !n->quoted)
        strtol(n->str, &end, 10);
    if (!n || n->type != CFG_SCALAR || (end && end != n->str && !*end)) {
        if (cfg_int(c, "label", -1, &o->label_index, e))
            return -1;
    } else if (cfg_str(c, "label", NULL, &o->label, e)) {
        return -1;
    }
    o->label_node = cfg_child(c, "label");
    return 0;
}

static int csv_load(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    static const char *const tasks[] = {"classification", "regression", NULL};
    static const char *const headers[] = {"auto", "true", "false", NULL};
    const char *train, *test;
    struct csv_opts o;
    int task;
    bool standardize;
    (void)seed;

    if (cfg_str_path(c, "train", NULL, &train, e) || cfg_str_path(c, "test", NULL, &test, e) ||
        csv_label_key(c, &o, e) || cfg_enum(c, "task", tasks, 0, &task, e) ||
        cfg_enum(c, "header", headers, CSV_HEADER_AUTO, &o.header, e) ||
        cfg_bool(c, "standardize", false, &standardize, e))
        return -1;
    if (!train) {
        char *path = cfg_path(c);
        cfg_err(e, c, "'%s.train' is required for dataset 'csv'", path);
        free(path);
        return -1;
    }
    o.regression = task == 1;

    if (csv_load_file(d, train, &o, 0, &d->train, e))
        return -1;
    d->test.dim = d->train.dim;
    if (test && csv_load_file(d, test, &o, d->train.dim + 1, &d->test, e))
        return -1;

    int n_classes = 0;
    if (!o.regression) {
        for (int i = 0; i < d->train.n; i++)
            n_classes = d->train.label[i] >= n_classes ? d->train.label[i] + 1 : n_classes;
        for (int i = 0; i < d->test.n; i++)
            n_classes = d->test.label[i] >= n_classes ? d->test.label[i] + 1 : n_classes;
    }
    d->train.n_classes = d->test.n_classes = n_classes;
    if (standardize)
        csv_standardize(&d->train, &d->test);
    return 0;
}

const struct dataset_ops dataset_csv = {
    .name = "csv",
    .summary = "tabular data from comma-separated files (features and one label column)",
    .keys = "train [required]: path of the training file (may be gzipped)\n"
            "test [none]: path of the test file, same columns; none: no test set\n"
            "label [-1]: label column: index (negative counts from the end) or header name\n"
            "task [classification]: classification | regression\n"
            "header [auto]: auto (a header if any field of row 1 is not a number) | true | false\n"
            "standardize [false]: scale features by the training file's mean and std\n",
    .load = csv_load,
};
