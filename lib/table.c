/* table.c: collect run directories, group them, refuse unsound pooling, and print the metric's
 * mean and sample std per group (contract in table.h). */
#include "table.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cfg.h"
#include "io.h"
#include "sweep.h"
#include "train.h"

/* Deeper than this is a symlink loop or the wrong directory, not a results tree. */
enum { TABLE_MAX_DEPTH = 32 };

static const char *const absent = "-";

/* ---- collecting runs ---- */

static bool has_file(const char *dir, const char *file)
{
    char *p = xasprintf("%s/%s", dir, file);
    bool r = io_exists(p);
    free(p);
    return r;
}

static bool is_run_dir(const char *dir)
{
    return has_file(dir, "summary.json") || has_file(dir, "config.yaml");
}

struct scan {
    char **runs, **manifests;
    int n_runs, n_manifests;
};

static void push(char ***v, int *n, char *s)
{
    *v = xrealloc(*v, (size_t)(*n + 1) * sizeof **v);
    (*v)[(*n)++] = s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int scan_dir(struct scan *sc, const char *dir, int depth, struct err *e)
{
    if (is_run_dir(dir)) {
        push(&sc->runs, &sc->n_runs, realpath(dir, NULL));
        return 0;
    }
    if (depth > TABLE_MAX_DEPTH)
        return 0;
    if (has_file(dir, "manifest.jsonl"))
        push(&sc->manifests, &sc->n_manifests, xasprintf("%s/manifest.jsonl", dir));
    DIR *d = opendir(dir);
    if (!d)
        return err_set(e, "cannot read directory '%s': %s", dir, strerror(errno));
    char **kids = NULL;
    int n_kids = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.')
            continue;
        char *p = xasprintf("%s/%s", dir, de->d_name);
        struct stat st;
        /* lstat: a symlinked directory is not followed (no loops, no runs counted twice) */
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            push(&kids, &n_kids, p);
        else
            free(p);
    }
    closedir(d);
    qsort(kids, (size_t)n_kids, sizeof *kids, cmp_str);
    int rc = 0;
    for (int i = 0; i < n_kids; i++) {
        if (rc == 0)
            rc = scan_dir(sc, kids[i], depth + 1, e);
        free(kids[i]);
    }
    free(kids);
    return rc;
}

static void kv_add(struct table_run *r, char *key, char *val)
{
    r->key = xrealloc(r->key, (size_t)(r->n_kv + 1) * sizeof *r->key);
    r->val = xrealloc(r->val, (size_t)(r->n_kv + 1) * sizeof *r->val);
    r->key[r->n_kv] = key;
    r->val[r->n_kv++] = val;
}

/* Mappings become dotted keys; anything else (scalars, lists) is one value in flow text. */
static void flatten(struct table_run *r, const struct cfg_node *map, const char *prefix)
{
    for (int i = 0; i < map->n_kid; i++) {
        const struct cfg_node *k = map->kid[i];
        char *key = prefix ? xasprintf("%s.%s", prefix, k->key) : xstrdup(k->key);
        if (k->type == CFG_MAP && k->n_kid > 0) {
            flatten(r, k, key);
            free(key);
        } else {
            kv_add(r, key, sweep_value_text(k));
        }
    }
}

static const char *kv_get(const struct table_run *r, const char *key)
{
    for (int i = 0; i < r->n_kv; i++)
        if (!strcmp(r->key[i], key))
            return r->val[i];
    return NULL;
}

static void kv_clear(struct table_run *r)
{
    for (int i = 0; i < r->n_kv; i++) {
        free(r->key[i]);
        free(r->val[i]);
    }
    free(r->key);
    free(r->val);
    r->key = r->val = NULL;
    r->n_kv = 0;
}

static void set_gvals(struct runset *rs, struct table_run *r)
{
    r->gval = xcalloc((size_t)rs->n_keys + 1, sizeof *r->gval);
    for (int i = 0; i < rs->n_keys; i++) {
        const char *v = kv_get(r, rs->keys[i]);
        r->gval[i] = xstrdup(v ? v : absent);
    }
}

static struct table_run *runset_add(struct runset *rs, char *dir, const char *status)
{
    rs->run = xrealloc(rs->run, (size_t)(rs->n_run + 1) * sizeof *rs->run);
    struct table_run *r = &rs->run[rs->n_run++];
    memset(r, 0, sizeof *r);
    r->dir = dir;
    r->status = status;
    return r;
}

static int load_run(struct runset *rs, char *dir, struct err *e)
{
    struct table_run *r = runset_add(rs, dir, sweep_run_status(dir));
    char *path = xasprintf("%s/config.yaml", dir);
    int rc = 0;
    if (io_exists(path)) {
        struct cfg c;
        memset(&c, 0, sizeof c);
        rc = cfg_load(&c, path, e);
        if (rc == 0)
            flatten(r, c.root, NULL);
        cfg_free(&c);
    }
    free(path);
    set_gvals(rs, r);
    return rc;
}

/* A planned run without a directory: its group values come from its base config and
 * overrides, resolved in full (defaults included) only when a group key is not written there. */
static void add_missing(struct runset *rs, const char *dir, const cJSON *line)
{
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(line, "config");
    const cJSON *ovs = cJSON_GetObjectItemCaseSensitive(line, "overrides");
    struct table_run *r = runset_add(rs, xstrdup(dir), "missing");
    int n_ov = cJSON_GetArraySize(ovs);
    const char **ov = xcalloc((size_t)n_ov + 1, sizeof *ov);
    for (int i = 0; i < n_ov; i++) {
        const cJSON *s = cJSON_GetArrayItem(ovs, i);
        ov[i] = cJSON_IsString(s) ? s->valuestring : "";
    }
    struct cfg c;
    memset(&c, 0, sizeof c);
    struct err ignored = {0};
    bool ok = cJSON_IsString(config) && cfg_load(&c, config->valuestring, &ignored) == 0;
    for (int i = 0; ok && i < n_ov; i++)
        ok = cfg_override(&c, ov[i], &ignored) == 0;
    if (ok)
        flatten(r, c.root, NULL);
    cfg_free(&c);
    bool all = ok;
    for (int i = 0; all && i < rs->n_keys; i++)
        all = kv_get(r, rs->keys[i]) != NULL;
    if (ok && !all) {
        struct run_opts ro = {.config = config->valuestring, .overrides = ov, .n_overrides = n_ov,
                              .threads = 1};
        struct experiment x;
        kv_clear(r);
        if (experiment_build(&x, &ro, &ignored) == 0)
            flatten(r, x.cfg.root, NULL);
        experiment_free(&x);
    }
    set_gvals(rs, r);
    /* Its config is not a run's resolved config: kept out of the pooling check. */
    kv_clear(r);
    free(ov);
}

static int load_manifest(struct runset *rs, const char *path, struct err *e)
{
    char *buf;
    if (io_read_all(path, &buf, NULL, e) < 0)
        return -1;
    char *dir = xstrdup(path);
    *strrchr(dir, '/') = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *id = j ? cJSON_GetObjectItemCaseSensitive(j, "run_id") : NULL;
        if (cJSON_IsString(id) && id->valuestring[0] && !strchr(id->valuestring, '/')) {
            /* The run lives beside its manifest, wherever the results tree was moved. */
            char *rd = xasprintf("%s/%s", dir, id->valuestring);
            if (!is_run_dir(rd))
                add_missing(rs, rd, j);
            free(rd);
        }
        cJSON_Delete(j);
    }
    free(dir);
    free(buf);
    return 0;
}

/* ---- grouping ---- */

static bool is_number(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    return end != s && !*end;
}

static int cmp_value(const char *a, const char *b)
{
    double x, y;
    if (is_number(a, &x) && is_number(b, &y) && x != y)
        return x < y ? -1 : 1;
    return strcmp(a, b);
}

static int cmp_run(const void *pa, const void *pb)
{
    const struct table_run *a = pa, *b = pb;
    return strcmp(a->dir, b->dir);
}

static const struct runset *sort_rs; /* qsort has no context argument */
static int cmp_group(const void *pa, const void *pb)
{
    const struct table_group *a = pa, *b = pb;
    for (int i = 0; i < sort_rs->n_keys; i++) {
        int c = cmp_value(a->gval[i], b->gval[i]);
        if (c)
            return c;
    }
    return 0;
}

static bool same_group(const struct runset *rs, char **a, char **b)
{
    for (int i = 0; i < rs->n_keys; i++)
        if (strcmp(a[i], b[i]))
            return false;
    return true;
}

static bool pooled_key(const struct runset *rs, const char *key)
{
    if (!strcmp(key, "seed"))
        return false;
    for (int i = 0; i < rs->n_keys; i++)
        if (!strcmp(rs->keys[i], key))
            return false;
    return true;
}

/* Runs a and b agree on every key that is neither grouped nor seed, or e names the first that
 * differs with both values. */
static int check_pool(const struct runset *rs, const struct table_run *a, const struct table_run *b,
                      struct err *e)
{
    for (int pass = 0; pass < 2; pass++) {
        const struct table_run *x = pass ? b : a, *y = pass ? a : b;
        for (int i = 0; i < x->n_kv; i++) {
            const char *vy = kv_get(y, x->key[i]);
            if (!pooled_key(rs, x->key[i]) || (vy && !strcmp(vy, x->val[i])))
                continue;
            const char *va = pass ? (vy ? vy : "(absent)") : x->val[i];
            const char *vb = pass ? x->val[i] : (vy ? vy : "(absent)");
            return err_cfg(e, "runs differ in '%s', which is neither grouped nor seed: %s in '%s', "
                              "%s in '%s' (add it to --group, or table them apart)",
                           x->key[i], va, a->dir, vb, b->dir);
        }
    }
    return 0;
}

int runset_load(struct runset *rs, const char *const *dirs, int n_dirs, const char *group,
                struct err *e)
{
    memset(rs, 0, sizeof *rs);
    for (const char *g = group; g && *g;) {
        size_t len = strcspn(g, ",");
        if (len)
            push(&rs->keys, &rs->n_keys, memcpy(xcalloc(len + 1, 1), g, len));
        g += len + (g[len] == ',');
    }
    struct scan sc = {0};
    int rc = 0;
    for (int i = 0; i < n_dirs && rc == 0; i++) {
        struct stat st;
        if (stat(dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
            rc = err_cfg(e, "'%s' is not a directory of runs", dirs[i]);
        else
            rc = scan_dir(&sc, dirs[i], 0, e);
    }
    qsort(sc.runs, (size_t)sc.n_runs, sizeof *sc.runs, cmp_str);
    for (int i = 0; i < sc.n_runs; i++) {
        /* the same run reached through two DIR arguments counts once */
        if (rc == 0 && !(i > 0 && !strcmp(sc.runs[i], sc.runs[i - 1])))
            rc = load_run(rs, sc.runs[i], e);
        else
            free(sc.runs[i]);
    }
    for (int i = 0; i < sc.n_manifests; i++) {
        if (rc == 0)
            rc = load_manifest(rs, sc.manifests[i], e);
        free(sc.manifests[i]);
    }
    free(sc.runs);
    free(sc.manifests);
    if (rc == 0 && rs->n_run == 0)
        rc = err_cfg(e, "no runs (directories with summary.json or config.yaml) under '%s'%s",
                     n_dirs ? dirs[0] : ".", n_dirs > 1 ? " and the others" : "");
    for (int k = 0; k < rs->n_keys && rc == 0; k++) {
        bool found = false;
        for (int i = 0; i < rs->n_run && !found; i++)
            found = strcmp(rs->run[i].gval[k], absent) != 0;
        if (!found)
            rc = err_cfg(e, "--group key '%s' is in no run's config", rs->keys[k]);
    }
    if (rc < 0)
        return -1;
    qsort(rs->run, (size_t)rs->n_run, sizeof *rs->run, cmp_run);
    for (int i = 0; i < rs->n_run; i++) {
        struct table_run *r = &rs->run[i];
        struct table_group *g = NULL;
        for (int j = 0; j < rs->n_grp && !g; j++)
            if (same_group(rs, rs->grp[j].gval, r->gval))
                g = &rs->grp[j];
        if (!g) {
            rs->grp = xrealloc(rs->grp, (size_t)(rs->n_grp + 1) * sizeof *rs->grp);
            g = &rs->grp[rs->n_grp++];
            memset(g, 0, sizeof *g);
            g->gval = r->gval;
        }
        g->run = xrealloc(g->run, (size_t)(g->n_run + 1) * sizeof *g->run);
        g->run[g->n_run++] = i;
    }
    sort_rs = rs;
    qsort(rs->grp, (size_t)rs->n_grp, sizeof *rs->grp, cmp_group);
    for (int j = 0; j < rs->n_grp; j++) {
        const struct table_run *first = NULL;
        for (int i = 0; i < rs->grp[j].n_run; i++) {
            const struct table_run *r = &rs->run[rs->grp[j].run[i]];
            if (!r->n_kv)
                continue;
            if (!first)
                first = r;
            else if (check_pool(rs, first, r, e) < 0)
                return -1;
        }
    }
    return 0;
}

void runset_free(struct runset *rs)
{
    for (int i = 0; i < rs->n_run; i++) {
        struct table_run *r = &rs->run[i];
        kv_clear(r);
        for (int k = 0; k < rs->n_keys; k++)
            free(r->gval[k]);
        free(r->gval);
        free(r->dir);
    }
    for (int j = 0; j < rs->n_grp; j++)
        free(rs->grp[j].run);
    for (int k = 0; k < rs->n_keys; k++)
        free(rs->keys[k]);
    free(rs->keys);
    free(rs->run);
    free(rs->grp);
    memset(rs, 0, sizeof *rs);
}

/* ---- the metric of one run ---- */

static cJSON *read_json(const char *path, struct err *e)
{
    char *s;
    if (io_read_all(path, &s, NULL, e) < 0)
        return NULL;
    cJSON *j = cJSON_Parse(s);
    free(s);
    if (!j)
        err_set(e, "'%s' is not valid JSON", path);
    return j;
}

/* The metric in record rec: its value, NAN for null (non-finite), or an error when the record
 * has no such key (a misspelt metric). */
static int record_value(const cJSON *rec, const char *metric, const char *dir, double *v,
                        struct err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(rec, metric);
    if (cJSON_IsNumber(m))
        *v = m->valuedouble;
    else if (cJSON_IsNull(m))
        *v = NAN;
    else
        return err_cfg(e, "'%s' is not a key of the records of '%s' (see metrics.jsonl)", metric,
                       dir);
    return 0;
}

static int run_value(const struct table_run *r, const char *metric, const char *best, double *v,
                     struct err *e)
{
    int rc = 0;
    if (!best) {
        char *p = xasprintf("%s/summary.json", r->dir);
        cJSON *s = read_json(p, e);
        free(p);
        if (!s)
            return -1;
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(s, "final");
        if (cJSON_IsObject(fin))
            rc = record_value(fin, metric, r->dir, v, e);
        else
            *v = NAN;
        cJSON_Delete(s);
        return rc;
    }
    /* The run's recorded best (train.keep_best: summary.json's best record, best_by NAME, the
     * epoch of best.safetensors) when it selected on this metric. */
    char *sp = xasprintf("%s/summary.json", r->dir);
    bool has_sum = io_exists(sp);
    cJSON *sum = has_sum ? read_json(sp, e) : NULL;
    free(sp);
    if (has_sum && !sum)
        return -1;
    const cJSON *by = sum ? cJSON_GetObjectItemCaseSensitive(sum, "best_by") : NULL;
    const cJSON *brec = sum ? cJSON_GetObjectItemCaseSensitive(sum, "best") : NULL;
    if (cJSON_GetObjectItemCaseSensitive(sum, "best_epoch") && cJSON_IsString(by) &&
        !strcmp(by->valuestring, best) && cJSON_IsObject(brec)) {
        rc = record_value(brec, metric, r->dir, v, e);
        cJSON_Delete(sum);
        return rc;
    }
    cJSON_Delete(sum);
    size_t n = strlen(best);
    bool max = n > 4 && !strcmp(best + n - 4, "_acc");
    char *p = xasprintf("%s/metrics.jsonl", r->dir), *buf;
    rc = io_read_all(p, &buf, NULL, e);
    free(p);
    if (rc < 0)
        return -1;
    double best_v = NAN;
    bool seen = false;
    *v = NAN;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        const cJSON *b = rec ? cJSON_GetObjectItemCaseSensitive(rec, best) : NULL;
        seen = seen || b;
        if (cJSON_IsNumber(b) && (isnan(best_v) || (max ? b->valuedouble > best_v
                                                        : b->valuedouble < best_v))) {
            best_v = b->valuedouble;
            rc = record_value(rec, metric, r->dir, v, e);
        }
        cJSON_Delete(rec);
    }
    free(buf);
    if (rc == 0 && !seen)
        rc = err_cfg(e, "'%s' is not a key of the records of '%s' (see metrics.jsonl)", best,
                     r->dir);
    return rc;
}

/* ---- aggregation and output ---- */

struct row {
    double mean, std; /* NAN when undefined (n = 0; std also for n = 1) */
    int n, diverged, failed, interrupted, missing;
    double *val;      /* the completed runs' values, in run order */
    const char **dir;
};

static int aggregate(const struct runset *rs, const struct table_group *g, const char *metric,
                     const char *best, struct row *w, struct err *e)
{
    memset(w, 0, sizeof *w);
    w->val = xcalloc((size_t)g->n_run + 1, sizeof *w->val);
    w->dir = xcalloc((size_t)g->n_run + 1, sizeof *w->dir);
    for (int i = 0; i < g->n_run; i++) {
        const struct table_run *r = &rs->run[g->run[i]];
        if (!strcmp(r->status, "completed") || !strcmp(r->status, "stopped")) {
            double v = NAN; /* set by run_value on success */
            if (run_value(r, metric, best, &v, e) < 0)
                return -1;
            if (isnan(v)) {
                w->diverged++;
            } else {
                w->dir[w->n] = r->dir;
                w->val[w->n++] = v;
            }
        } else if (!strcmp(r->status, "diverged")) {
            w->diverged++;
        } else if (!strcmp(r->status, "failed")) {
            w->failed++;
        } else if (!strcmp(r->status, "missing")) {
            w->missing++;
        } else {
            w->interrupted++;
        }
    }
    double sum = 0, ss = 0;
    for (int i = 0; i < w->n; i++)
        sum += w->val[i];
    w->mean = w->n ? sum / w->n : NAN;
    for (int i = 0; i < w->n; i++)
        ss += (w->val[i] - w->mean) * (w->val[i] - w->mean);
    w->std = w->n > 1 ? sqrt(ss / (w->n - 1)) : NAN;
    return 0;
}

/* Four decimals suit accuracies and losses; very small or large values go to exponents. The
 * std is written in its mean's style (like), so a column reads 0.8813 ± 0.0008 throughout. */
static const char *fmt_like(char buf[32], double v, double like)
{
    if (like == 0 || (fabs(like) >= 1e-3 && fabs(like) < 1e5))
        snprintf(buf, 32, "%.4f", v);
    else
        snprintf(buf, 32, "%.3e", v);
    return buf;
}

static const char *fmt_short(char buf[32], double v) { return fmt_like(buf, v, v); }

static void put_escaped(const char *s, const char *format)
{
    for (const char *p = s; *p; p++) {
        if (!strcmp(format, "latex") && strchr("_%&#${}", *p))
            printf("\\%c", *p);
        else if (!strcmp(format, "latex") && strchr("~^\\", *p))
            printf("\\textascii%s{}", *p == '~' ? "tilde" : *p == '^' ? "circum" : "");
        else if (!strcmp(format, "md") && *p == '|')
            printf("\\|");
        else
            putchar(*p);
    }
}

static void put_csv(const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            putchar('"');
        putchar(*p);
    }
    putchar('"');
}

static const char *const count_names[] = {"diverged", "failed", "interrupted", "missing"};

static void print_text(const struct runset *rs, const struct row *rows, const char *metric,
                       const char *at, const char *format)
{
    bool tex = !strcmp(format, "latex");
    const char *sep = tex ? " & " : " | ", *end = tex ? " \\\\\n" : " |\n";
    char a[32], b[32];
    if (tex) {
        printf("\\begin{tabular}{");
        for (int k = 0; k < rs->n_keys; k++)
            putchar('l');
        printf("rrrrrr}\n\\toprule\n");
    } else {
        printf("| ");
    }
    for (int k = 0; k < rs->n_keys; k++) {
        put_escaped(rs->keys[k], format);
        fputs(sep, stdout);
    }
    put_escaped(metric, format);
    printf(" (");
    put_escaped(at, format);
    printf(")%s%s", sep, tex ? "$n$" : "n");
    for (int c = 0; c < 4; c++)
        printf("%s%s", sep, count_names[c]);
    fputs(end, stdout);
    if (tex) {
        printf("\\midrule\n");
    } else {
        printf("|");
        for (int k = 0; k < rs->n_keys; k++)
            printf("---|");
        printf("---:|---:|---:|---:|---:|---:|\n");
    }
    for (int j = 0; j < rs->n_grp; j++) {
        const struct row *w = &rows[j];
        if (!tex)
            printf("| ");
        for (int k = 0; k < rs->n_keys; k++) {
            put_escaped(rs->grp[j].gval[k], format);
            fputs(sep, stdout);
        }
        /* the std of one run is undefined: shown as a dash, like an empty cell */
        if (w->n == 0)
            printf("%s", tex ? "--" : "–");
        else if (tex && w->n == 1)
            printf("$%s \\pm$ --", fmt_short(a, w->mean));
        else if (tex)
            printf("$%s \\pm %s$", fmt_short(a, w->mean), fmt_like(b, w->std, w->mean));
        else
            printf("%s ± %s", fmt_short(a, w->mean),
                   w->n > 1 ? fmt_like(b, w->std, w->mean) : "–");
        printf("%s%d%s%d%s%d%s%d%s%d%s", sep, w->n, sep, w->diverged, sep, w->failed, sep,
               w->interrupted, sep, w->missing, end);
    }
    if (tex)
        printf("\\bottomrule\n\\end{tabular}\n");
}

static void print_csv(const struct runset *rs, const struct row *rows, const char *metric,
                      const char *at)
{
    char buf[32];
    for (int k = 0; k < rs->n_keys; k++) {
        put_csv(rs->keys[k]);
        putchar(',');
    }
    printf("metric,at,mean,std,n,diverged,failed,interrupted,missing\n");
    for (int j = 0; j < rs->n_grp; j++) {
        const struct row *w = &rows[j];
        for (int k = 0; k < rs->n_keys; k++) {
            put_csv(rs->grp[j].gval[k]);
            putchar(',');
        }
        put_csv(metric);
        putchar(',');
        put_csv(at);
        printf(",%s", w->n ? cfg_fmt_num(buf, w->mean) : "");
        printf(",%s", w->n > 1 ? cfg_fmt_num(buf, w->std) : "");
        printf(",%d,%d,%d,%d,%d\n", w->n, w->diverged, w->failed, w->interrupted, w->missing);
    }
}

static void print_json(const struct runset *rs, const struct row *rows, const char *metric,
                       const char *at)
{
    cJSON *arr = cJSON_CreateArray();
    for (int j = 0; j < rs->n_grp; j++) {
        const struct row *w = &rows[j];
        cJSON *o = cJSON_CreateObject(), *g = cJSON_AddObjectToObject(o, "group");
        for (int k = 0; k < rs->n_keys; k++)
            cJSON_AddStringToObject(g, rs->keys[k], rs->grp[j].gval[k]);
        cJSON_AddStringToObject(o, "metric", metric);
        cJSON_AddStringToObject(o, "at", at);
        if (w->n)
            cJSON_AddNumberToObject(o, "mean", w->mean);
        else
            cJSON_AddNullToObject(o, "mean");
        if (w->n > 1)
            cJSON_AddNumberToObject(o, "std", w->std);
        else
            cJSON_AddNullToObject(o, "std");
        cJSON_AddNumberToObject(o, "n", w->n);
        int counts[4] = {w->diverged, w->failed, w->interrupted, w->missing};
        for (int c = 0; c < 4; c++)
            cJSON_AddNumberToObject(o, count_names[c], counts[c]);
        cJSON *vals = cJSON_AddArrayToObject(o, "values");
        cJSON *runs = cJSON_AddArrayToObject(o, "runs");
        for (int i = 0; i < w->n; i++) {
            cJSON_AddItemToArray(vals, cJSON_CreateNumber(w->val[i]));
            cJSON_AddItemToArray(runs, cJSON_CreateString(w->dir[i]));
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_Print(arr);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(arr);
}

int table_main(const struct table_opts *o, struct err *e)
{
    static const char *const formats[] = {"md", "latex", "csv", "json", NULL};
    const char *metric = o->metric ? o->metric : "test_acc", *at = o->at ? o->at : "final";
    const char *format = o->format ? o->format : "md", *best = NULL;
    bool known = false;
    for (int i = 0; formats[i]; i++)
        known = known || !strcmp(format, formats[i]);
    if (!known)
        return err_cfg(e, "--format must be md, latex, csv or json, got '%s'", format);
    if (!strncmp(at, "best:", 5)) {
        best = at + 5;
        size_t n = strlen(best);
        if (!(n > 4 && !strcmp(best + n - 4, "_acc")) && !(n > 5 && !strcmp(best + n - 5, "_loss")))
            return err_cfg(e, "--at best:NAME needs a *_acc (max) or *_loss (min) metric, got '%s'",
                           best);
    } else if (strcmp(at, "final") != 0) {
        return err_cfg(e, "--at must be 'final' or 'best:NAME', got '%s'", at);
    }
    struct runset rs;
    if (runset_load(&rs, o->dirs, o->n_dirs, o->group, e) < 0) {
        runset_free(&rs);
        return -1;
    }
    struct row *rows = xcalloc((size_t)rs.n_grp + 1, sizeof *rows);
    int rc = 0;
    for (int j = 0; j < rs.n_grp && rc == 0; j++)
        rc = aggregate(&rs, &rs.grp[j], metric, best, &rows[j], e);
    char label[256];
    snprintf(label, sizeof label, "%s%s", best ? "best " : "final", best ? best : "");
    if (rc == 0 && !strcmp(format, "csv"))
        print_csv(&rs, rows, metric, at);
    else if (rc == 0 && !strcmp(format, "json"))
        print_json(&rs, rows, metric, at);
    else if (rc == 0)
        print_text(&rs, rows, metric, label, format);
    for (int j = 0; j < rs.n_grp; j++) {
        free(rows[j].val);
        free(rows[j].dir);
    }
    free(rows);
    runset_free(&rs);
    return rc;
}
