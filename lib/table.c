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

/* ---- did you mean ---- */

const char *table_suggest(const char *word, const char *const *cand, int n)
{
    size_t len = strlen(word), best = (len / 3 > 2 ? len / 3 : 2) + 1;
    const char *r = NULL, *inside = NULL, *tail = NULL;
    const char *last = strrchr(word, '.'), *dot = strchr(word, '.');
    for (int i = 0; i < n; i++) {
        /* a key ending in the word ("lr" for "optimizer.lr") is what a short name means */
        size_t lc = strlen(cand[i]);
        if (lc > len && cand[i][lc - len - 1] == '.' && !strcmp(cand[i] + lc - len, word))
            return cand[i];
        /* a section ("optimizer"): its name key, else its first key */
        if (lc > len && cand[i][len] == '.' && !strncmp(cand[i], word, len)) {
            if (!strcmp(cand[i] + len + 1, "name"))
                return cand[i];
            inside = inside ? inside : cand[i];
        }
        /* a dotted word with a level left out ("optimizer.lr" for "optimizer.base.lr"): the
         * same first section and the same last key */
        size_t ll = last ? strlen(last) : 0;
        if (last && !tail && lc > ll && !strcmp(cand[i] + lc - ll, last) &&
            !strncmp(cand[i], word, (size_t)(dot - word + 1)))
            tail = cand[i];
        size_t d = cfg_distance(word, cand[i]);
        if (d < best && d < len) {
            best = d;
            r = cand[i];
        }
    }
    return inside ? inside : tail ? tail : r;
}

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
    if (n_kids > 1) /* kids is NULL when there are none */
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

static void kv_add(struct table_run *r, char *key, char *val, char *show)
{
    r->key = xrealloc(r->key, (size_t)(r->n_kv + 1) * sizeof *r->key);
    r->val = xrealloc(r->val, (size_t)(r->n_kv + 1) * sizeof *r->val);
    r->show = xrealloc(r->show, (size_t)(r->n_kv + 1) * sizeof *r->show);
    r->key[r->n_kv] = key;
    r->show[r->n_kv] = show ? show : xstrdup(val);
    r->val[r->n_kv++] = val;
}

/* A schedule as a reader writes it: "cosine 0.05→0 warmup 1", "step 0.1 gamma 0.1
 * milestones [30,60]" (its keys as written, start→end first). */
static char *schedule_text(const struct cfg_node *m)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    const struct cfg_node *name = cfg_child(m, "schedule"), *a = cfg_child(m, "start"),
                          *b = cfg_child(m, "end");
    char *t = sweep_value_text(name);
    fputs(t, f);
    free(t);
    if (a) {
        t = sweep_value_text(a);
        fprintf(f, " %s", t);
        free(t);
    }
    if (b) {
        t = sweep_value_text(b);
        fprintf(f, "%s%s", a ? "→" : " end ", t);
        free(t);
    }
    /* the resolved config writes every default: those are left out (schedule.c's defaults) */
    const struct cfg_node *root = m, *tr, *te;
    while (root->parent)
        root = root->parent;
    tr = cfg_child(root, "train");
    te = tr ? cfg_child(tr, "epochs") : NULL;
    for (int i = 0; i < m->n_kid; i++) {
        const struct cfg_node *k = m->kid[i];
        if (k == name || k == a || k == b)
            continue;
        bool zero = k->type == CFG_SCALAR && !k->quoted && strtod(k->str, NULL) == 0 &&
                    strspn(k->str, "0.") == strlen(k->str);
        if (((!strcmp(k->key, "warmup") || !strcmp(k->key, "warmup_start") ||
              !strcmp(k->key, "every")) && zero) ||
            (!strcmp(k->key, "per") && k->type == CFG_SCALAR && !strcmp(k->str, "step")) ||
            (!strcmp(k->key, "epochs") && te && k->type == CFG_SCALAR &&
             te->type == CFG_SCALAR && !strcmp(k->str, te->str)))
            continue;
        t = sweep_value_text(k);
        fprintf(f, " %s %s", k->key, t);
        free(t);
    }
    fclose(f);
    return s;
}

/* Mappings become dotted keys; anything else (scalars, lists) and schedules (a mapping with a
 * 'schedule' key: one hyperparameter) are one value in flow text. */
static void flatten(struct table_run *r, const struct cfg_node *map, const char *prefix)
{
    for (int i = 0; i < map->n_kid; i++) {
        const struct cfg_node *k = map->kid[i];
        char *key = prefix ? xasprintf("%s.%s", prefix, k->key) : xstrdup(k->key);
        bool sched = k->type == CFG_MAP && cfg_child(k, "schedule");
        if (k->type == CFG_MAP && k->n_kid > 0 && !sched) {
            flatten(r, k, key);
            free(key);
        } else {
            kv_add(r, key, sweep_value_text(k), sched ? schedule_text(k) : NULL);
        }
    }
}

static const char *kv_show(const struct table_run *r, const char *key)
{
    for (int i = 0; i < r->n_kv; i++)
        if (!strcmp(r->key[i], key))
            return r->show[i];
    return NULL;
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
        free(r->show[i]);
    }
    free(r->key);
    free(r->val);
    free(r->show);
    r->key = r->val = r->show = NULL;
    r->n_kv = 0;
}

static void set_gvals(struct runset *rs, struct table_run *r)
{
    r->gval = xcalloc((size_t)rs->n_keys + 1, sizeof *r->gval);
    r->gshow = xcalloc((size_t)rs->n_keys + 1, sizeof *r->gshow);
    for (int i = 0; i < rs->n_keys; i++) {
        const char *v = kv_get(r, rs->keys[i]), *w = kv_show(r, rs->keys[i]);
        r->gval[i] = xstrdup(v ? v : absent);
        r->gshow[i] = xstrdup(w ? w : absent);
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
    /* how it ran: runs with other BLAS cores or work splits differ in their last bits */
    path = xasprintf("%s/meta.json", dir);
    char *buf = NULL;
    struct err ignored = {0};
    if (io_exists(path) && io_read_all(path, &buf, NULL, &ignored) == 0) {
        cJSON *m = cJSON_Parse(buf);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "omp_threads");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(m, "work_blocks");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "openblas_core");
        const cJSON *ws = cJSON_GetObjectItemCaseSensitive(m, "world_size");
        r->world = cJSON_IsNumber(ws) && ws->valueint > 0 ? ws->valueint : 1;
        r->threads = cJSON_IsNumber(t) ? t->valueint : 0;
        r->blocks = cJSON_IsNumber(b) ? b->valueint : 0;
        r->core = xstrdup(cJSON_IsString(c) ? c->valuestring : "");
        cJSON_Delete(m);
    }
    free(buf);
    free(path);
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
                              .threads = 1, .plan = true};
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

static bool planned_already(const struct runset *rs, const char *dir)
{
    for (int i = 0; i < rs->n_run; i++)
        if (!strcmp(rs->run[i].status, "missing") && !strcmp(rs->run[i].dir, dir))
            return true;
    return false;
}

/* A manifest line (sweep.c) is an object whose run_id names a directory beside the manifest,
 * with a config file name and overrides, all strings; anything else is a damaged file. */
static int check_manifest_line(const cJSON *j, const char *path, int line, struct err *e)
{
    const char *bad = NULL;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "run_id");
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(j, "config");
    const cJSON *ovs = cJSON_GetObjectItemCaseSensitive(j, "overrides");
    if (!cJSON_IsObject(j))
        bad = "not a JSON object (a corrupt or truncated line)";
    else if (!cJSON_IsString(id) || !id->valuestring[0] || strchr(id->valuestring, '/') ||
             !strcmp(id->valuestring, ".") || !strcmp(id->valuestring, ".."))
        bad = "its run_id is not the name of a run directory";
    else if (config && !cJSON_IsString(config))
        bad = "its config is not a string";
    else if (ovs && !cJSON_IsArray(ovs))
        bad = "its overrides are not a list of strings";
    for (const cJSON *o = ovs ? ovs->child : NULL; o && !bad; o = o->next)
        if (!cJSON_IsString(o))
            bad = "its overrides are not a list of strings";
    return bad ? err_set(e, "%s:%d: %s; the sweep manifest is damaged", path, line, bad) : 0;
}

/* A sweep's manifest is NAME/sweeps/HASH/manifest.jsonl, its runs NAME/RUN_ID (sweep.h); an
 * older samx wrote NAME/manifest.jsonl. Every manifest counts: a run planned by any sweep and
 * never run is missing, once. */
static int load_manifest(struct runset *rs, const char *path, struct err *e)
{
    char *buf;
    size_t len;
    if (io_read_all(path, &buf, &len, e) < 0)
        return -1;
    if (memchr(buf, 0, len)) {
        free(buf);
        return err_set(e, "'%s' holds a NUL byte; the sweep manifest is damaged", path);
    }
    char *dir = xstrdup(path);
    *strrchr(dir, '/') = 0;
    char *up = strrchr(dir, '/');
    if (up && up > dir) {
        *up = 0;
        char *up2 = strrchr(dir, '/');
        if (up2 && !strcmp(up2 + 1, "sweeps"))
            *up2 = 0;
        else
            *up = '/';
    }
    /* The hashes of the runs beside it: a planned run whose config was run under another label
     * (the same "-<hash>", rundir.h) is there, not missing. */
    char **held = NULL;
    int n_held = 0;
    struct dirent **ents;
    int n_ent = scandir(dir, &ents, NULL, alphasort);
    for (int i = 0; i < n_ent; i++) {
        const char *h = strrchr(ents[i]->d_name, '-');
        char *d = xasprintf("%s/%s", dir, ents[i]->d_name);
        if (h && h != ents[i]->d_name && is_run_dir(d))
            push(&held, &n_held, xstrdup(h));
        free(d);
        free(ents[i]);
    }
    if (n_ent >= 0)
        free(ents);
    if (n_held)
        qsort(held, (size_t)n_held, sizeof *held, cmp_str);
    int rc = 0, ln = 0;
    for (char *line = buf, *nl; *line && rc == 0; line = nl ? nl + 1 : line + strlen(line)) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        ln++;
        if (!*line)
            continue;
        cJSON *j = cJSON_Parse(line);
        if ((rc = check_manifest_line(j, path, ln, e)) == 0) {
            /* The run lives beside its manifest, wherever the results tree was moved. */
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "run_id");
            char *rd = xasprintf("%s/%s", dir, id->valuestring);
            const char *h = strrchr(id->valuestring, '-');
            if (!is_run_dir(rd) && !planned_already(rs, rd) &&
                !(h && n_held && bsearch(&h, held, (size_t)n_held, sizeof *held, cmp_str)))
                add_missing(rs, rd, j);
            free(rd);
        }
        cJSON_Delete(j);
    }
    for (int i = 0; i < n_held; i++)
        free(held[i]);
    free(held);
    free(dir);
    free(buf);
    return rc;
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
    if (sc.n_runs > 1)
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
        if (found)
            continue;
        const char **cand = NULL;
        int n_cand = 0;
        for (int i = 0; i < rs->n_run; i++)
            for (int j = 0; j < rs->run[i].n_kv; j++) {
                cand = xrealloc(cand, (size_t)(n_cand + 1) * sizeof *cand);
                cand[n_cand++] = rs->run[i].key[j];
            }
        const char *near = table_suggest(rs->keys[k], cand, n_cand);
        rc = err_cfg(e, "--group key '%s' is in no run's config%s%s%s", rs->keys[k],
                     near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
        free(cand);
    }
    if (rc < 0)
        return -1;
    if (rs->n_run > 1)
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
            g->gshow = r->gshow;
        }
        g->run = xrealloc(g->run, (size_t)(g->n_run + 1) * sizeof *g->run);
        g->run[g->n_run++] = i;
    }
    sort_rs = rs;
    if (rs->n_grp > 1)
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
        for (int k = 0; k < rs->n_keys; k++) {
            free(r->gval[k]);
            free(r->gshow[k]);
        }
        free(r->gval);
        free(r->gshow);
        free(r->core);
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

/* A record is flat: every value a number, or null for a non-finite one (rundir.h), and its
 * epoch, if it has one, a non-negative integer. Anything else is a damaged file, named by
 * where ("FILE:LINE", "FILE (final record)"). */
static int check_record(const cJSON *rec, const char *where, struct err *e)
{
    for (const cJSON *k = rec->child; k; k = k->next) {
        if (!cJSON_IsNumber(k) && !cJSON_IsNull(k))
            return err_set(e, "%s: '%s' is not a number (a damaged record)", where, k->string);
        if (!strcmp(k->string, "epoch") &&
            (cJSON_IsNull(k) || k->valuedouble < 0 || k->valuedouble != floor(k->valuedouble)))
            return err_set(e, "%s: epoch %.17g is not a non-negative integer (a damaged record)",
                           where, cJSON_IsNull(k) ? NAN : k->valuedouble);
    }
    return 0;
}

int table_read_records(const char *path, cJSON ***recs, int *n, struct err *e)
{
    char *buf;
    size_t len;
    *recs = NULL;
    *n = 0;
    if (io_read_all(path, &buf, &len, e) < 0)
        return -1;
    if (memchr(buf, 0, len)) {
        free(buf);
        return err_set(e, "'%s' holds a NUL byte (a damaged file)", path);
    }
    int line = 0, rc = 0;
    for (char *p = buf, *nl; *p && rc == 0; p = nl ? nl + 1 : p + strlen(p)) {
        nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        line++;
        if (!*p)
            continue;
        cJSON *rec = cJSON_Parse(p);
        if (!cJSON_IsObject(rec)) {
            cJSON_Delete(rec);
            rc = err_set(e, "%s:%d: not a JSON record (a corrupt or truncated line)", path, line);
            break;
        }
        char *where = xasprintf("%s:%d", path, line);
        rc = check_record(rec, where, e);
        free(where);
        if (rc < 0) {
            cJSON_Delete(rec);
            break;
        }
        *recs = xrealloc(*recs, (size_t)(*n + 1) * sizeof **recs);
        (*recs)[(*n)++] = rec;
    }
    free(buf);
    if (rc < 0)
        table_free_records(*recs, *n);
    return rc;
}

void table_free_records(cJSON **recs, int n)
{
    for (int i = 0; i < n; i++)
        cJSON_Delete(recs[i]);
    free(recs);
}

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

/* "'x' is not a key of the records of DIR (did you mean 'y'?)", from one record's keys. */
static int no_key(struct err *e, const char *key, const cJSON *rec, const char *dir)
{
    const char **cand = NULL;
    int n = 0;
    for (const cJSON *k = rec ? rec->child : NULL; k; k = k->next) {
        cand = xrealloc(cand, (size_t)(n + 1) * sizeof *cand);
        cand[n++] = k->string;
    }
    const char *near = table_suggest(key, cand, n);
    err_cfg(e, "'%s' is not a key of the records of '%s'%s%s%s", key, dir,
            near ? " (did you mean '" : " (see metrics.jsonl)", near ? near : "",
            near ? "'?)" : "");
    free(cand);
    return -1;
}

/* The metric in record rec: 0 with its value, NAN for null (non-finite); 1 when the record
 * has no such key (a measurement this run did not make, or a misspelt metric: the caller
 * tells them apart by whether any run has it), with e saying so; -1 for a value that is neither
 * a number nor null. */
static int record_value(const cJSON *rec, const char *metric, const char *dir, double *v,
                        struct err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(rec, metric);
    if (cJSON_IsNumber(m))
        *v = m->valuedouble;
    else if (cJSON_IsNull(m))
        *v = NAN;
    else if (m) /* records from metrics.jsonl are checked as read: this one is summary.json's */
        return err_set(e, "'%s/summary.json': '%s' is neither a number nor null (a corrupt "
                          "record)", dir, metric);
    else
        return no_key(e, metric, rec, dir), 1;
    return 0;
}

static int run_value(const struct table_run *r, const char *metric, const char *best, double *v,
                     struct err *e)
{
    int rc = 0;
    if (!best) {
        char *p = xasprintf("%s/summary.json", r->dir);
        cJSON *s = read_json(p, e);
        if (!s) {
            free(p);
            return -1;
        }
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(s, "final");
        char *where = xasprintf("%s (final record)", p);
        if (cJSON_IsObject(fin))
            rc = check_record(fin, where, e) < 0 ? -1 : record_value(fin, metric, r->dir, v, e);
        else
            *v = NAN;
        free(where);
        free(p);
        cJSON_Delete(s);
        return rc;
    }
    /* The run's recorded best (train.keep_best: summary.json's best record, best_by NAME, the
     * epoch of best.safetensors) when it selected on this metric. */
    char *sp = xasprintf("%s/summary.json", r->dir);
    bool has_sum = io_exists(sp);
    cJSON *sum = has_sum ? read_json(sp, e) : NULL;
    if (has_sum && !sum) {
        free(sp);
        return -1;
    }
    const cJSON *by = sum ? cJSON_GetObjectItemCaseSensitive(sum, "best_by") : NULL;
    const cJSON *brec = sum ? cJSON_GetObjectItemCaseSensitive(sum, "best") : NULL;
    if (cJSON_GetObjectItemCaseSensitive(sum, "best_epoch") && cJSON_IsString(by) &&
        !strcmp(by->valuestring, best) && cJSON_IsObject(brec)) {
        char *where = xasprintf("%s (best record)", sp);
        rc = check_record(brec, where, e) < 0 ? -1 : record_value(brec, metric, r->dir, v, e);
        free(where);
        free(sp);
        cJSON_Delete(sum);
        return rc;
    }
    free(sp);
    cJSON_Delete(sum);
    size_t n = strlen(best);
    bool max = n > 4 && !strcmp(best + n - 4, "_acc");
    char *p = xasprintf("%s/metrics.jsonl", r->dir);
    cJSON **recs;
    int n_rec;
    rc = table_read_records(p, &recs, &n_rec, e);
    free(p);
    if (rc < 0)
        return -1;
    double best_v = NAN;
    bool seen = false;
    *v = NAN;
    for (int i = 0; i < n_rec && rc == 0; i++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(recs[i], best);
        seen = seen || b;
        if (cJSON_IsNumber(b) && (isnan(best_v) || (max ? b->valuedouble > best_v
                                                        : b->valuedouble < best_v))) {
            best_v = b->valuedouble;
            rc = record_value(recs[i], metric, r->dir, v, e);
        }
    }
    if (rc > 0) {
        table_free_records(recs, n_rec);
        return rc;
    }
    if (rc == 0 && !seen)
        rc = no_key(e, best, n_rec ? recs[n_rec - 1] : NULL, r->dir);
    table_free_records(recs, n_rec);
    return rc;
}

/* ---- aggregation and output ---- */

struct cell {
    double mean, std; /* NAN when undefined (n = 0; std also for n = 1) */
    int n;
    double *val;      /* the values, in run order */
    const char **dir;
};

struct row {
    struct cell *c;   /* one per metric */
    int n;            /* completed runs whose first metric is finite */
    int diverged, failed, interrupted, missing;
};

static void cell_add(struct cell *c, double v, const char *dir)
{
    c->dir[c->n] = dir;
    c->val[c->n++] = v;
}

static void cell_stats(struct cell *c)
{
    double sum = 0, ss = 0;
    for (int i = 0; i < c->n; i++)
        sum += c->val[i];
    c->mean = c->n ? sum / c->n : NAN;
    for (int i = 0; i < c->n; i++)
        ss += (c->val[i] - c->mean) * (c->val[i] - c->mean);
    c->std = c->n > 1 ? sqrt(ss / (c->n - 1)) : NAN;
}

/* A completed run whose first metric is null (non-finite) counts as diverged; the other
 * metrics of the run then count nowhere. */
static int aggregate(const struct runset *rs, const struct table_group *g, char **metric,
                     int n_metric, const char *best, struct row *w, int *present,
                     struct err *lacking, struct err *e)
{
    memset(w, 0, sizeof *w);
    w->c = xcalloc((size_t)n_metric, sizeof *w->c);
    for (int m = 0; m < n_metric; m++) {
        w->c[m].val = xcalloc((size_t)g->n_run + 1, sizeof *w->c[m].val);
        w->c[m].dir = xcalloc((size_t)g->n_run + 1, sizeof *w->c[m].dir);
    }
    for (int i = 0; i < g->n_run; i++) {
        const struct table_run *r = &rs->run[g->run[i]];
        if (!strcmp(r->status, "completed") || !strcmp(r->status, "stopped")) {
            bool diverged = false;
            for (int m = 0; m < n_metric && !diverged; m++) {
                double v = NAN; /* set by run_value on success */
                struct err a = {0};
                int got = run_value(r, metric[m], best, &v, &a);
                if (got < 0) {
                    *e = a;
                    return -1;
                }
                if (got > 0) {
                    if (!lacking[m].status)
                        lacking[m] = a;
                    continue; /* a cell without it; an error if no run has it */
                }
                present[m]++;
                if (m == 0 && isnan(v))
                    diverged = true;
                else if (!isnan(v))
                    cell_add(&w->c[m], v, r->dir);
            }
            w->diverged += diverged;
            w->n += !diverged;
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
    for (int m = 0; m < n_metric; m++)
        cell_stats(&w->c[m]);
    return 0;
}

/* prec decimals suit accuracies and losses; very small or large values go to exponents. The
 * std is written in its mean's style (like), so a column reads 0.8813 ± 0.0008 throughout. */
static const char *fmt_like(char buf[48], double v, double like, int prec)
{
    if (like == 0 || (fabs(like) >= 1e-3 && fabs(like) < 1e5))
        snprintf(buf, 48, "%.*f", prec, v);
    else
        snprintf(buf, 48, "%.*e", prec > 1 ? prec - 1 : 0, v);
    return buf;
}

static void put_escaped(const char *s, const char *format)
{
    for (const char *p = s; *p; p++) {
        if (!strcmp(format, "latex") && !strncmp(p, "→", strlen("→"))) {
            printf("$\\to$");
            p += strlen("→") - 1;
        } else if (!strcmp(format, "latex") && strchr("_%&#${}", *p)) {
            printf("\\%c", *p);
        } else if (!strcmp(format, "latex") && strchr("~^\\", *p)) {
            printf("\\textascii%s{}", *p == '~' ? "tilde" : *p == '^' ? "circum" : "");
        } else if (!strcmp(format, "md") && *p == '|') {
            printf("\\|");
        } else {
            putchar(*p);
        }
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

static int row_count(const struct row *w, int c)
{
    int v[4] = {w->diverged, w->failed, w->interrupted, w->missing};
    return v[c];
}

struct out {
    char **metric;
    int n_metric, prec;
    const char *at, *format;
    bool counts;      /* every count column, even all-zero ones */
};

static void print_text(const struct runset *rs, const struct row *rows, const struct out *o)
{
    bool tex = !strcmp(o->format, "latex");
    const char *sep = tex ? " & " : " | ", *end = tex ? " \\\\\n" : " |\n";
    bool show[4];
    for (int c = 0; c < 4; c++) {
        show[c] = o->counts;
        for (int j = 0; j < rs->n_grp && !show[c]; j++)
            show[c] = row_count(&rows[j], c) > 0;
    }
    char a[48], b[48];
    if (tex) {
        printf("\\begin{tabular}{");
        for (int k = 0; k < rs->n_keys; k++)
            putchar('l');
        for (int m = 0; m <= o->n_metric; m++)
            putchar('r');
        for (int c = 0; c < 4; c++)
            if (show[c])
                putchar('r');
        printf("}\n\\toprule\n");
    } else {
        printf("| ");
    }
    for (int k = 0; k < rs->n_keys; k++) {
        put_escaped(rs->keys[k], o->format);
        fputs(sep, stdout);
    }
    for (int m = 0; m < o->n_metric; m++) {
        put_escaped(o->metric[m], o->format);
        printf(" (");
        put_escaped(o->at, o->format);
        printf(")%s", sep);
    }
    printf("%s", tex ? "$n$" : "n");
    for (int c = 0; c < 4; c++)
        if (show[c])
            printf("%s%s", sep, count_names[c]);
    fputs(end, stdout);
    if (tex) {
        printf("\\midrule\n");
    } else {
        printf("|");
        for (int k = 0; k < rs->n_keys; k++)
            printf("---|");
        for (int m = 0; m <= o->n_metric; m++)
            printf("---:|");
        for (int c = 0; c < 4; c++)
            if (show[c])
                printf("---:|");
        printf("\n");
    }
    for (int j = 0; j < rs->n_grp; j++) {
        const struct row *w = &rows[j];
        if (!tex)
            printf("| ");
        for (int k = 0; k < rs->n_keys; k++) {
            put_escaped(rs->grp[j].gshow[k], o->format);
            fputs(sep, stdout);
        }
        for (int m = 0; m < o->n_metric; m++) {
            const struct cell *c = &w->c[m];
            /* the std of one run is undefined: shown as a dash, like an empty cell */
            if (c->n == 0)
                printf("%s", tex ? "--" : "–");
            else if (tex && c->n == 1)
                printf("$%s \\pm$ --", fmt_like(a, c->mean, c->mean, o->prec));
            else if (tex)
                printf("$%s \\pm %s$", fmt_like(a, c->mean, c->mean, o->prec),
                       fmt_like(b, c->std, c->mean, o->prec));
            else
                printf("%s ± %s", fmt_like(a, c->mean, c->mean, o->prec),
                       c->n > 1 ? fmt_like(b, c->std, c->mean, o->prec) : "–");
            /* a metric some runs have no finite value of says over how many it is */
            if (c->n != w->n && c->n > 0)
                printf(" (%s=%d)", tex ? "$n$" : "n", c->n);
            fputs(sep, stdout);
        }
        printf("%d", w->n);
        for (int c = 0; c < 4; c++)
            if (show[c])
                printf("%s%d", sep, row_count(w, c));
        fputs(end, stdout);
    }
    if (tex)
        printf("\\bottomrule\n\\end{tabular}\n");
}

static void print_csv(const struct runset *rs, const struct row *rows, const struct out *o)
{
    char buf[32];
    for (int k = 0; k < rs->n_keys; k++) {
        put_csv(rs->keys[k]);
        putchar(',');
    }
    printf("metric,at,mean,std,n,diverged,failed,interrupted,missing\n");
    for (int j = 0; j < rs->n_grp; j++)
        for (int m = 0; m < o->n_metric; m++) {
            const struct row *w = &rows[j];
            const struct cell *c = &w->c[m];
            for (int k = 0; k < rs->n_keys; k++) {
                put_csv(rs->grp[j].gshow[k]);
                putchar(',');
            }
            put_csv(o->metric[m]);
            putchar(',');
            put_csv(o->at);
            printf(",%s", c->n ? cfg_fmt_num(buf, c->mean) : "");
            printf(",%s", c->n > 1 ? cfg_fmt_num(buf, c->std) : "");
            printf(",%d,%d,%d,%d,%d\n", c->n, w->diverged, w->failed, w->interrupted, w->missing);
        }
}

static void print_json(const struct runset *rs, const struct row *rows, const struct out *o)
{
    cJSON *arr = cJSON_CreateArray();
    for (int j = 0; j < rs->n_grp; j++)
        for (int m = 0; m < o->n_metric; m++) {
            const struct row *w = &rows[j];
            const struct cell *c = &w->c[m];
            cJSON *ob = cJSON_CreateObject(), *g = cJSON_AddObjectToObject(ob, "group");
            for (int k = 0; k < rs->n_keys; k++)
                cJSON_AddStringToObject(g, rs->keys[k], rs->grp[j].gval[k]);
            cJSON *gs = cJSON_AddObjectToObject(ob, "group_text");
            for (int k = 0; k < rs->n_keys; k++)
                cJSON_AddStringToObject(gs, rs->keys[k], rs->grp[j].gshow[k]);
            cJSON_AddStringToObject(ob, "metric", o->metric[m]);
            cJSON_AddStringToObject(ob, "at", o->at);
            if (c->n)
                cJSON_AddNumberToObject(ob, "mean", c->mean);
            else
                cJSON_AddNullToObject(ob, "mean");
            if (c->n > 1)
                cJSON_AddNumberToObject(ob, "std", c->std);
            else
                cJSON_AddNullToObject(ob, "std");
            cJSON_AddNumberToObject(ob, "n", c->n);
            for (int k = 0; k < 4; k++)
                cJSON_AddNumberToObject(ob, count_names[k], row_count(w, k));
            cJSON *vals = cJSON_AddArrayToObject(ob, "values");
            cJSON *runs = cJSON_AddArrayToObject(ob, "runs");
            for (int i = 0; i < c->n; i++) {
                cJSON_AddItemToArray(vals, cJSON_CreateNumber(c->val[i]));
                cJSON_AddItemToArray(runs, cJSON_CreateString(c->dir[i]));
            }
            cJSON_AddItemToArray(arr, ob);
        }
    char *s = cJSON_Print(arr);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(arr);
}

/* Runs whose arithmetic was split alike: the same number of MPI processes and the same work
 * blocks, or (older samx, which split by threads) the same thread count. */
static bool same_split(const struct table_run *a, const struct table_run *b)
{
    return a->world == b->world && a->blocks == b->blocks &&
           (a->blocks || a->threads == b->threads);
}

void table_warn_mixed(const struct runset *rs)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    int n_mixed = 0;
    for (int j = 0; j < rs->n_grp; j++) {
        const struct table_group *g = &rs->grp[j];
        /* distinct (split, core) pairs among the group's runs that ran, with counts; the
         * split is the work blocks, or the thread count for an older samx's runs */
        int n_kind = 0, *first = xcalloc((size_t)g->n_run + 1, sizeof *first),
            *count = xcalloc((size_t)g->n_run + 1, sizeof *count);
        for (int i = 0; i < g->n_run; i++) {
            const struct table_run *r = &rs->run[g->run[i]];
            if (!r->core)
                continue;
            int k = 0;
            while (k < n_kind && !(same_split(&rs->run[first[k]], r) &&
                                   !strcmp(rs->run[first[k]].core, r->core)))
                k++;
            if (k == n_kind)
                first[n_kind++] = g->run[i];
            count[k]++;
        }
        if (n_kind > 1) {
            bool mixed_world = false;
            for (int k = 1; k < n_kind; k++)
                mixed_world |= rs->run[first[k]].world != rs->run[first[0]].world;
            fputs(n_mixed++ ? "; " : "", f);
            for (int k = 0; k < rs->n_keys; k++)
                fprintf(f, "%s%s=%s", k ? "," : "", rs->keys[k], g->gshow[k]);
            fputs(rs->n_keys ? ": " : "", f);
            for (int k = 0; k < n_kind; k++) {
                const struct table_run *r = &rs->run[first[k]];
                fprintf(f, "%s%d run%s with %s", k ? ", " : "", count[k],
                        count[k] == 1 ? "" : "s", r->core);
                if (r->blocks)
                    fprintf(f, "/%d blocks", r->blocks);
                else
                    fprintf(f, " at %d thread%s (older samx)", r->threads,
                            r->threads == 1 ? "" : "s");
                if (r->world > 1)
                    fprintf(f, " on %d MPI processes", r->world);
                else if (mixed_world)
                    fputs(" in one process", f);
            }
        }
        free(first);
        free(count);
    }
    fclose(f);
    if (n_mixed)
        samx_warn("%d group%s mix%s BLAS cores, work splits or MPI world sizes, so %s runs "
                  "are not bit-comparable (%s)",
                  n_mixed, n_mixed == 1 ? "" : "s", n_mixed == 1 ? "es" : "",
                  n_mixed == 1 ? "its" : "their", s);
    free(s);
}

int table_main(const struct table_opts *o, struct err *e)
{
    static const char *const formats[] = {"md", "latex", "csv", "json", NULL};
    const char *metrics = o->metric ? o->metric : "test_acc", *at = o->at ? o->at : "final";
    const char *format = o->format ? o->format : "md", *best = NULL;
    bool known = false;
    for (int i = 0; formats[i]; i++)
        known = known || !strcmp(format, formats[i]);
    if (!known)
        return err_cfg(e, "--format must be md, latex, csv or json, got '%s'", format);
    if (o->precision < 0 || o->precision > 12)
        return err_cfg(e, "--precision must be in [0, 12] decimals, got %d", o->precision);
    if (!strncmp(at, "best:", 5)) {
        best = at + 5;
        size_t n = strlen(best);
        if (!(n > 4 && !strcmp(best + n - 4, "_acc")) && !(n > 5 && !strcmp(best + n - 5, "_loss")))
            return err_cfg(e, "--at best:NAME needs a *_acc (max) or *_loss (min) metric, got '%s'",
                           best);
    } else if (strcmp(at, "final") != 0) {
        return err_cfg(e, "--at must be 'final' or 'best:NAME', got '%s'", at);
    }
    struct out out = {.prec = o->precision ? o->precision : 4, .format = format,
                      .counts = o->counts};
    if (o->precision_set)
        out.prec = o->precision;
    for (const char *m = metrics; *m;) {
        size_t len = strcspn(m, ",");
        if (len)
            push(&out.metric, &out.n_metric, memcpy(xcalloc(len + 1, 1), m, len));
        m += len + (m[len] == ',');
    }
    if (!out.n_metric)
        return err_cfg(e, "--metric needs a name, got '%s'", metrics);
    struct runset rs;
    int rc = runset_load(&rs, o->dirs, o->n_dirs, o->group, e);
    struct row *rows = xcalloc((size_t)rs.n_grp + 1, sizeof *rows);
    int *present = xcalloc((size_t)out.n_metric, sizeof *present);
    struct err *lacking = xcalloc((size_t)out.n_metric, sizeof *lacking);
    for (int j = 0; j < rs.n_grp && rc == 0; j++)
        rc = aggregate(&rs, &rs.grp[j], out.metric, out.n_metric, best, &rows[j], present,
                       lacking, e);
    for (int m = 0; m < out.n_metric && rc == 0; m++)
        if (!present[m] && lacking[m].status) {
            *e = lacking[m];
            rc = -1;
        }
    free(present);
    free(lacking);
    char label[256];
    snprintf(label, sizeof label, "%s%s", best ? "best " : "final", best ? best : "");
    out.at = !strcmp(format, "csv") || !strcmp(format, "json") ? at : label;
    if (rc == 0)
        table_warn_mixed(&rs);
    if (rc == 0 && best && !strncmp(best, "test_", 5))
        samx_warn("--at best:%s selects each run's best record on the test set, an optimistic "
                  "estimate (select on a validation split: data.val_split and --at best:val_%s)",
                  best, best + 5);
    if (rc == 0 && !strcmp(format, "csv"))
        print_csv(&rs, rows, &out);
    else if (rc == 0 && !strcmp(format, "json"))
        print_json(&rs, rows, &out);
    else if (rc == 0)
        print_text(&rs, rows, &out);
    for (int j = 0; j < rs.n_grp; j++) {
        for (int m = 0; rows[j].c && m < out.n_metric; m++) {
            free(rows[j].c[m].val);
            free(rows[j].c[m].dir);
        }
        free(rows[j].c);
    }
    free(rows);
    for (int m = 0; m < out.n_metric; m++)
        free(out.metric[m]);
    free(out.metric);
    runset_free(&rs);
    return rc;
}
