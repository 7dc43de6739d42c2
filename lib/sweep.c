/* sweep.c: expand a sweep into runs, plan them, write the manifest, and run them here or print a
 * script for another engine (contract in sweep.h). */
#include "sweep.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "rng.h"
#include "rundir.h"
#include "table.h"
#include "train.h"

/* More runs than this is a typo in a range, not a sweep. */
enum { SWEEP_MAX_RUNS = 100000 };

struct param {
    char *key;
    char **val;  /* YAML flow text of each value */
    char **name; /* named alternatives: each value's name (NULL for a plain list) */
    int n;
};

struct plan {
    char *config; /* absolute path of the base config */
    struct param *p;
    int np;
    bool random;
    long samples, seed;
};

struct run {
    char **ov;           /* "key=value", the parameters in order */
    char **label;        /* "key=value" or, for a named alternative, "key=name" */
    int n_ov;
    char *run_id, *dir;  /* dir: absolute ROOT/<name>/<run_id> */
    char **argv;         /* samx run ... -o DIR, NULL-terminated, room for "-t T -q" */
    int argc;
    char *command;       /* argv shell-quoted */
    const char *status;  /* a static string */
    pid_t pid;
    double started;
    int log_fd;          /* the run's stderr while it runs here */
};

/* ---- values ---- */

static bool plain_key(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_-.", *p))
            return false;
    return true;
}

/* A scalar written plainly in a block may not survive flow syntax ("a,b"); those are quoted,
 * which keeps them strings. Numbers and names never need it. */
static bool plain_flow_ok(const char *s)
{
    size_t len = strlen(s);
    return len && !strchr("?:,[]{}#&*!|>'\"%@` -", s[0]) && !strpbrk(s, ",[]{}") &&
           !strstr(s, ": ") && !strstr(s, " #") && s[len - 1] != ' ' && s[len - 1] != ':';
}

static void put_flow(FILE *f, const struct cfg_node *n)
{
    switch (n->type) {
    case CFG_NULL:
        fputs("null", f);
        break;
    case CFG_SCALAR:
        if (!n->quoted && (plain_flow_ok(n->str) || (n->str[0] == '-' && isdigit(
                                                                  (unsigned char)n->str[1]))))
            fputs(n->str, f);
        else
            io_put_quoted(f, n->str);
        break;
    case CFG_SEQ:
        fputc('[', f);
        for (int i = 0; i < n->n_kid; i++) {
            if (i)
                fputc(',', f);
            put_flow(f, n->kid[i]);
        }
        fputc(']', f);
        break;
    case CFG_MAP:
        fputc('{', f);
        for (int i = 0; i < n->n_kid; i++) {
            if (i)
                fputs(", ", f);
            if (plain_key(n->kid[i]->key))
                fputs(n->kid[i]->key, f);
            else
                io_put_quoted(f, n->kid[i]->key);
            fputs(": ", f);
            put_flow(f, n->kid[i]);
        }
        fputc('}', f);
        break;
    }
}

char *sweep_value_text(const struct cfg_node *n)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    put_flow(f, n);
    fclose(f);
    return s;
}

/* "a..b" with integers a <= b. */
static bool parse_range(const char *s, long *a, long *b)
{
    char *end;
    errno = 0;
    *a = strtol(s, &end, 10);
    if (end == s || strncmp(end, "..", 2) != 0)
        return false;
    const char *t = end + 2;
    *b = strtol(t, &end, 10);
    return end != t && !*end && errno == 0;
}

/* A set of strings for the duplicate checks: open addressing over FNV-1a hashes, so the
 * values of a parameter and the runs of a sweep (up to SWEEP_MAX_RUNS) are checked in O(n),
 * not O(n^2) comparisons. It holds pointers: the strings must outlive it. */
struct strset {
    const char **slot;
    size_t mask, n;
};

static size_t strset_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return (size_t)h;
}

/* Insert s; false if it was there already. */
static bool strset_add(struct strset *set, const char *s)
{
    if (!set->slot || 2 * (set->n + 1) > set->mask + 1) { /* at most half full */
        size_t cap = set->slot ? 2 * (set->mask + 1) : 64;
        struct strset big = {xcalloc(cap, sizeof *big.slot), cap - 1, 0};
        for (size_t i = 0; set->slot && i <= set->mask; i++)
            if (set->slot[i])
                strset_add(&big, set->slot[i]);
        free(set->slot);
        *set = big;
    }
    for (size_t i = strset_hash(s) & set->mask;; i = (i + 1) & set->mask) {
        if (!set->slot[i]) {
            set->slot[i] = s;
            set->n++;
            return true;
        }
        if (!strcmp(set->slot[i], s))
            return false;
    }
}

/* A value (or an alternative's name) listed twice would be the same run twice. */
static int param_check_twice(const struct param *p, struct err *e)
{
    struct strset set = {0};
    int rc = 0;
    for (int i = 0; i < p->n && rc == 0; i++)
        if (!strset_add(&set, p->name ? p->name[i] : p->val[i]))
            rc = err_cfg(e, "sweep parameter '%s' %s '%s' twice", p->key,
                         p->name ? "names" : "lists", p->name ? p->name[i] : p->val[i]);
    free(set.slot);
    return rc;
}

/* (duplicates: param_check_twice, once a parameter has all its values) */
static void param_add(struct param *p, const char *val)
{
    p->val = xrealloc(p->val, (size_t)(p->n + 1) * sizeof *p->val);
    p->val[p->n++] = xstrdup(val);
}

static void param_add_named(struct param *p, const char *name, const char *val)
{
    p->name = xrealloc(p->name, (size_t)(p->n + 1) * sizeof *p->name);
    p->val = xrealloc(p->val, (size_t)(p->n + 1) * sizeof *p->val);
    p->name[p->n] = xstrdup(name);
    p->val[p->n++] = xstrdup(val);
}

/* One value text, or a range expanded into its integers. */
static int param_add_text(struct param *p, const char *text, struct err *e)
{
    long a, b;
    if (!parse_range(text, &a, &b)) {
        param_add(p, text);
        return 0;
    }
    if (b < a || b - a >= SWEEP_MAX_RUNS)
        return err_cfg(e, "sweep parameter '%s': range '%s' must run upwards, at most %d values",
                       p->key, text, SWEEP_MAX_RUNS);
    for (long v = a; v <= b; v++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", v);
        param_add(p, buf);
    }
    return 0;
}

static void param_clear(struct param *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->val[i]);
        if (p->name)
            free(p->name[i]);
    }
    free(p->val);
    free(p->name);
    p->val = p->name = NULL;
    p->n = 0;
}

static struct param *plan_param(struct plan *pl, const char *key, size_t klen, bool *existed)
{
    for (int i = 0; i < pl->np; i++)
        if (strlen(pl->p[i].key) == klen && !strncmp(pl->p[i].key, key, klen)) {
            *existed = true;
            return &pl->p[i];
        }
    *existed = false;
    pl->p = xrealloc(pl->p, (size_t)(pl->np + 1) * sizeof *pl->p);
    struct param *p = &pl->p[pl->np++];
    memset(p, 0, sizeof *p);
    p->key = memcpy(xcalloc(klen + 1, 1), key, klen);
    return p;
}

static int plan_arg_values(struct param *p, const char *arg, const char *list, struct err *e);

/* "key=v1,v2,...": split at commas outside brackets, braces and quotes. For a parameter the
 * sweep file gives as named alternatives, the values are names: the alternatives to run. */
static int plan_arg(struct plan *pl, const char *arg, bool *seen_on_cli, struct err *e)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return err_cfg(e, "'%s' is not KEY=V1,V2,... (see 'samx help sweep')", arg);
    bool existed;
    struct param *p = plan_param(pl, arg, (size_t)(eq - arg), &existed);
    if (existed && seen_on_cli[p - pl->p])
        return err_cfg(e, "sweep parameter '%s' is given twice", p->key);
    seen_on_cli[p - pl->p] = true;
    struct param named = *p; /* a sweep file's named alternatives, chosen from by name */
    if (!p->name) {
        param_clear(p); /* the command line replaces a sweep file's values */
    } else {
        p->val = p->name = NULL;
        p->n = 0;
    }
    int rc = plan_arg_values(p, arg, eq + 1, e);
    if (named.name) {
        struct param chosen = *p;
        *p = named;
        p->val = p->name = NULL;
        p->n = 0;
        for (int i = 0; i < chosen.n && rc == 0; i++) {
            int j = 0;
            while (j < named.n && strcmp(named.name[j], chosen.val[i]) != 0)
                j++;
            if (j == named.n) {
                const char *near = table_suggest(chosen.val[i], (const char *const *)named.name,
                                                 named.n);
                rc = err_cfg(e, "'%s': '%s' is not one of the alternatives of '%s'%s%s%s", arg,
                             chosen.val[i], p->key, near ? " (did you mean '" : "",
                             near ? near : "", near ? "'?)" : "");
            } else {
                param_add_named(p, named.name[j], named.val[j]);
            }
        }
        param_clear(&chosen);
        param_clear(&named);
    }
    return rc < 0 ? rc : param_check_twice(p, e);
}

static int plan_arg_values(struct param *p, const char *arg, const char *list, struct err *e)
{
    int depth = 0;
    char quote = 0;
    const char *start = list;
    for (const char *s = start;; s++) {
        if (quote) {
            if (*s == quote)
                quote = 0;
            else if (!*s)
                return err_cfg(e, "'%s': unterminated quote", arg);
            continue;
        }
        if (*s == '\'' || *s == '"')
            quote = *s;
        else if (*s == '[' || *s == '{')
            depth++;
        else if (*s == ']' || *s == '}')
            depth--;
        else if ((*s == ',' && depth == 0) || !*s) {
            char *v = memcpy(xcalloc((size_t)(s - start) + 1, 1), start, (size_t)(s - start));
            int rc = *v ? param_add_text(p, v, e)
                        : err_cfg(e, "'%s': empty value in the list", arg);
            free(v);
            if (rc < 0)
                return -1;
            start = s + 1;
            if (!*s)
                break;
        }
    }
    return 0;
}

/* ---- the sweep file ---- */

static char *abs_path(const char *path, struct err *e)
{
    char *r = realpath(path, NULL);
    if (!r)
        err_cfg(e, "cannot read '%s': %s", path, strerror(errno));
    return r;
}

/* The flow text of b deep-merged over a: keys of both mappings in a's order, then b's own;
 * where either is not a mapping, b. A null in b removes a's key (an alternative that does not
 * take a shared key). */
static void put_merged(FILE *f, const struct cfg_node *a, const struct cfg_node *b)
{
    if (!a || a->type != CFG_MAP || b->type != CFG_MAP) {
        put_flow(f, b);
        return;
    }
    fputc('{', f);
    int k = 0;
    for (int pass = 0; pass < 2; pass++) {
        const struct cfg_node *m = pass ? b : a;
        for (int i = 0; i < m->n_kid; i++) {
            const struct cfg_node *x = m->kid[i], *y = cfg_child(pass ? a : b, x->key);
            if ((pass && y) || (!pass && y && y->type == CFG_NULL))
                continue; /* written in the first pass, or removed */
            fputs(k++ ? ", " : "", f);
            if (plain_key(x->key))
                fputs(x->key, f);
            else
                io_put_quoted(f, x->key);
            fputs(": ", f);
            if (!pass && y)
                put_merged(f, x, y);
            else
                put_flow(f, x);
        }
    }
    fputc('}', f);
}

/* parameters: {KEY: {NAME: VALUE, ..., _shared: VALUE}}: named alternatives for KEY, each
 * VALUE (a mapping: the whole subtree at KEY) with _shared deep-merged under it. */
static int plan_named(struct param *p, struct cfg_node *v, struct err *e)
{
    struct cfg_node *shared = cfg_take(v, "_shared");
    int n = 0;
    for (int j = 0; j < v->n_kid; j++) {
        struct cfg_node *alt = v->kid[j];
        if (alt == shared)
            continue;
        cfg_take(v, alt->key);
        if (alt->key[0] == '_' || !plain_key(alt->key) || strchr(alt->key, '.'))
            return cfg_err(e, alt, "alternative '%s' of '%s': a name is letters, digits, '-' "
                                   "and '_', not starting with '_' ('_shared' is the only "
                                   "such key)", alt->key, p->key);
        if (shared && shared->type == CFG_MAP && alt->type != CFG_MAP)
            return cfg_err(e, alt, "alternative '%s' of '%s' is not a mapping, so '_shared' "
                                   "cannot merge into it", alt->key, p->key);
        char *t = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&t, &len);
        if (!f)
            SAMX_BUG("open_memstream failed");
        put_merged(f, shared, alt);
        fclose(f);
        param_add_named(p, alt->key, t);
        free(t);
        n++;
    }
    if (n == 0)
        return cfg_err(e, v, "sweep parameter '%s' names no alternatives", p->key);
    return 0;
}

static int plan_sweep_file(struct plan *pl, struct cfg *c, struct err *e)
{
    static const char *const methods[] = {"grid", "random", NULL};
    struct cfg_node *root = c->root, *cn = cfg_child(root, "config"), *pm;
    const char *config;
    int method;
    if (cfg_str(root, "config", NULL, &config, e) < 0)
        return -1;
    if (!config)
        return cfg_err(e, cn, "'config' must name the base config file");
    char *dir = xstrdup(c->path), *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    char *joined = config[0] == '/' || !slash ? xstrdup(config) : xasprintf("%s%s", dir, config);
    free(dir);
    pl->config = realpath(joined, NULL);
    if (!pl->config) {
        cfg_err(e, cn, "cannot read config '%s': %s", joined, strerror(errno));
        free(joined);
        return -1;
    }
    free(joined);
    if (cfg_enum(root, "method", methods, 0, &method, e) < 0)
        return -1;
    pl->random = method == 1;
    if (pl->random) {
        if (cfg_int(root, "samples", 0, &pl->samples, e) < 0 ||
            cfg_int(root, "seed", 0, &pl->seed, e) < 0)
            return -1;
        if (pl->samples < 1 || pl->samples > SWEEP_MAX_RUNS)
            return cfg_err(e, cfg_child(root, "samples") ? cfg_child(root, "samples") : root,
                           "method random needs 'samples' in [1, %d]", SWEEP_MAX_RUNS);
    }
    if (!(pm = cfg_map(root, "parameters", e)))
        return -1;
    for (int i = 0; i < pm->n_kid; i++) {
        struct cfg_node *v = pm->kid[i];
        bool existed;
        struct param *p = plan_param(pl, v->key, strlen(v->key), &existed);
        cfg_take(pm, v->key);
        int rc = 0;
        if (v->type == CFG_SEQ && v->n_kid == 0)
            rc = cfg_err(e, v, "sweep parameter '%s' lists no values", v->key);
        for (int j = 0; v->type == CFG_SEQ && j < v->n_kid && rc == 0; j++) {
            char *t = sweep_value_text(v->kid[j]);
            param_add(p, t);
            free(t);
        }
        if (v->type == CFG_MAP)
            rc = plan_named(p, v, e);
        else if (v->type == CFG_SCALAR && !v->quoted)
            rc = param_add_text(p, v->str, e);
        else if (v->type != CFG_SEQ) {
            char *t = sweep_value_text(v);
            param_add(p, t);
            free(t);
        }
        if (rc == 0)
            rc = param_check_twice(p, e);
        if (rc < 0)
            return err_prefix(e, "'%s'", c->path);
    }
    return cfg_check_unused(c, e);
}

static int plan_load(struct plan *pl, const struct sweep_opts *o, struct err *e)
{
    struct cfg c;
    memset(&c, 0, sizeof c);
    int rc = cfg_load(&c, o->spec, e);
    /* A sweep file names its config; a config never has a top-level 'config' key. */
    if (rc == 0 && cfg_child(c.root, "config"))
        rc = plan_sweep_file(pl, &c, e);
    else if (rc == 0 && !(pl->config = abs_path(o->spec, e)))
        rc = -1;
    cfg_free(&c);
    if (rc < 0)
        return -1;
    bool *seen = xcalloc((size_t)(pl->np + o->n_args) + 1, sizeof *seen);
    for (int i = 0; i < o->n_args && rc == 0; i++)
        rc = plan_arg(pl, o->args[i], seen, e);
    free(seen);
    return rc;
}

static void plan_free(struct plan *pl)
{
    for (int i = 0; i < pl->np; i++) {
        param_clear(&pl->p[i]);
        free(pl->p[i].key);
    }
    free(pl->p);
    free(pl->config);
}

/* ---- expansion and planning ---- */

static char *shell_quote(const char *s)
{
    bool plain = *s != 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("@%_+=:,./-", *p))
            plain = false;
    if (plain)
        return xstrdup(s);
    size_t n = 3;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *q = xmalloc(n), *d = q;
    *d++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(d, "'\\''", 4);
            d += 4;
        } else {
            *d++ = *p;
        }
    }
    *d++ = '\'';
    *d = 0;
    return q;
}

static char *join_quoted(char *const *argv, int argc)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    for (int i = 0; i < argc; i++) {
        char *q = shell_quote(argv[i]);
        fprintf(f, "%s%s", i ? " " : "", q);
        free(q);
    }
    fclose(f);
    return s;
}

/* The combinations, as value indices per parameter: the grid (last parameter fastest) or
 * `samples` distinct draws from it. */
static int expand(const struct plan *pl, int **combo, long *n_combo, struct err *e)
{
    long total = 1;
    for (int i = 0; i < pl->np; i++) {
        total *= pl->p[i].n;
        if (total > SWEEP_MAX_RUNS)
            return err_cfg(e, "the sweep has more than %d runs", SWEEP_MAX_RUNS);
    }
    int np = pl->np ? pl->np : 1;
    long n = pl->random ? pl->samples : total;
    if (pl->random && n > total)
        return err_cfg(e, "method random: 'samples: %ld' exceeds the %ld distinct combinations",
                       n, total);
    int *c = xcalloc((size_t)(n * np), sizeof *c);
    struct rng r;
    rng_init(&r, (uint64_t)pl->seed, "sweep", 0);
    for (long k = 0; k < n; k++) {
        int *ck = c + k * np;
        if (!pl->random) {
            long rest = k;
            for (int i = pl->np - 1; i >= 0; i--) {
                ck[i] = (int)(rest % pl->p[i].n);
                rest /= pl->p[i].n;
            }
            continue;
        }
        /* Rejection keeps draws distinct; n <= total bounds the expected number of tries. */
        for (bool dup = true; dup;) {
            for (int i = 0; i < pl->np; i++)
                ck[i] = (int)rng_below(&r, (uint64_t)pl->p[i].n);
            dup = false;
            for (long j = 0; j < k && !dup; j++)
                dup = !memcmp(c + j * np, ck, (size_t)pl->np * sizeof *ck);
        }
    }
    *combo = c;
    *n_combo = n;
    return 0;
}

const char *sweep_run_status(const char *dir)
{
    static const char *const known[] = {"completed", "diverged", "interrupted", "failed",
                                        "stopped", NULL};
    char *p = xasprintf("%s/summary.json", dir), *s = NULL;
    const char *status = NULL;
    struct err ignored = {0};
    if (io_exists(p) && io_read_all(p, &s, NULL, &ignored) == 0) {
        cJSON *j = cJSON_Parse(s);
        const cJSON *st = j ? cJSON_GetObjectItemCaseSensitive(j, "status") : NULL;
        for (int i = 0; known[i] && cJSON_IsString(st); i++)
            if (!strcmp(st->valuestring, known[i]))
                status = known[i];
        cJSON_Delete(j);
        free(s);
    }
    free(p);
    if (status)
        return status;
    char *c = xasprintf("%s/config.yaml", dir), *k = xasprintf("%s/checkpoint.safetensors", dir);
    status = io_exists(c) || io_exists(k) ? "interrupted" : "planned";
    free(c);
    free(k);
    return status;
}

/* As samx run makes an id from its overrides (experiment.c): each "key=value" by its last key
 * component, joined by commas, awkward characters as '_', then the hash part of samx run's id. */
static char *label_run_id(char *const *label, int n, const char *samx_id)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    for (int i = 0; i < n; i++) {
        const char *eq = strchr(label[i], '='), *k = label[i];
        for (const char *p = label[i]; p < eq; p++)
            if (*p == '.')
                k = p + 1;
        fputs(i ? "," : "", f);
        for (const char *p = k; *p && ftell(f) < 200; p++) /* samx run's id length */
            fputc(isalnum((unsigned char)*p) || strchr("=.,-_+", *p) ? *p : '_', f);
    }
    fprintf(f, "%s", strrchr(samx_id, '-'));
    fclose(f);
    return s;
}

static void run_free(struct run *r)
{
    for (int i = 0; i < r->n_ov; i++) {
        free(r->ov[i]);
        free(r->label[i]);
    }
    free(r->ov);
    free(r->label);
    free(r->run_id);
    free(r->dir);
    for (int i = 0; i < r->argc; i++)
        free(r->argv[i]);
    free(r->argv);
    free(r->command);
}

/* Resolve every run's config (the full validation samx run does), giving its run id, name and
 * directory. Nothing is written. */
/* The runs' warnings (experiment_warn), each distinct line once with how many runs gave it
 * and the first: a sweep says them at planning, as a run would (its runs run with -q). */
struct warnings {
    char **msg;
    long *count, *first;
    int n;
};

static void collect_warnings(struct warnings *w, const struct experiment *x, long k)
{
    if (samx_quiet)
        return;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    samx_warn_to(f);
    experiment_warn(x);
    samx_warn_to(NULL);
    fclose(f);
    static const char prefix[] = "samx: warning: ";
    for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        const char *m = strncmp(line, prefix, sizeof prefix - 1) ? line : line + sizeof prefix - 1;
        int i = 0;
        while (i < w->n && strcmp(w->msg[i], m) != 0)
            i++;
        if (i == w->n) {
            w->msg = xrealloc(w->msg, (size_t)(w->n + 1) * sizeof *w->msg);
            w->count = xrealloc(w->count, (size_t)(w->n + 1) * sizeof *w->count);
            w->first = xrealloc(w->first, (size_t)(w->n + 1) * sizeof *w->first);
            w->msg[i] = xstrdup(m);
            w->count[i] = 0;
            w->first[i] = k;
            w->n++;
        }
        w->count[i]++;
    }
    free(buf);
}

static int plan_runs(const struct plan *pl, const char *root, const char *exe, struct run **out,
                     int *n_out, char **name_out, struct err *e)
{
    int *combo = NULL;
    long n = 0;
    if (expand(pl, &combo, &n, e) < 0)
        return -1;
    int np = pl->np ? pl->np : 1;
    struct run *runs = xcalloc((size_t)n, sizeof *runs);
    struct strset ids = {0}; /* the run ids so far */
    struct warnings warns = {0};
    char *name = NULL;
    int rc = 0;
    for (long k = 0; k < n && rc == 0; k++) {
        struct run *r = &runs[k];
        r->n_ov = pl->np;
        r->ov = xcalloc((size_t)np, sizeof *r->ov);
        r->label = xcalloc((size_t)np, sizeof *r->label);
        bool named = false;
        for (int i = 0; i < pl->np; i++) {
            const struct param *p = &pl->p[i];
            int c = combo[k * np + i];
            r->ov[i] = xasprintf("%s=%s", p->key, p->val[c]);
            r->label[i] = p->name ? xasprintf("%s=%s", p->key, p->name[c]) : xstrdup(r->ov[i]);
            named = named || p->name;
        }
        struct run_opts ro = {.config = pl->config, .overrides = (const char *const *)r->ov,
                              .n_overrides = r->n_ov, .threads = 1, .plan = true};
        struct experiment x;
        if (experiment_build(&x, &ro, e) < 0) {
            char *what = join_quoted(r->ov, r->n_ov);
            /* strict config: say how a sweep carries method-specific keys (sweep.h) */
            if (strstr(e->msg, "unknown key"))
                snprintf(e->msg + strlen(e->msg), sizeof e->msg - strlen(e->msg), "%s",
                         "; a sweep runs each config as is: give each method its own config, or "
                         "sweep the whole subtree (see 'samx help sweep')");
            err_prefix(e, "sweep run %ld of %ld (%s)", k + 1, n, r->n_ov ? what : "no overrides");
            free(what);
            experiment_free(&x);
            rc = -1;
            break;
        }
        collect_warnings(&warns, &x, k);
        if (!name) {
            name = xstrdup(x.name);
        } else if (strcmp(name, x.name) != 0) {
            rc = err_cfg(e, "sweep runs have different names ('%s', '%s'); a sweep writes one "
                            "results/<name>/manifest.jsonl, so sweep 'name' separately",
                         name, x.name);
        }
        /* The run is its config: an existing directory of it, whatever its label (rundir.h);
         * a new one is named by its labels (a named alternative is its name in the run id, as
         * its key=value would be), with the same hash of the resolved config. */
        char *parent = xasprintf("%s/%s", root, x.name);
        r->dir = rundir_find(parent, &x);
        if (!r->dir) {
            char *id = named ? label_run_id(r->label, r->n_ov, x.run_id) : xstrdup(x.run_id);
            r->dir = xasprintf("%s/%s", parent, id);
            free(id);
        }
        r->run_id = xstrdup(strrchr(r->dir, '/') + 1);
        free(parent);
        experiment_free(&x);
        if (rc == 0 && !strset_add(&ids, r->run_id)) {
            long j = 0;
            while (strcmp(runs[j].run_id, r->run_id) != 0)
                j++;
            rc = err_cfg(e, "sweep runs %ld and %ld are the same run '%s'", j + 1, k + 1,
                         r->run_id);
        }
        r->argv = xcalloc((size_t)r->n_ov + 10, sizeof *r->argv);
        r->argv[r->argc++] = xstrdup(exe);
        r->argv[r->argc++] = xstrdup("run");
        r->argv[r->argc++] = xstrdup(pl->config);
        for (int i = 0; i < r->n_ov; i++)
            r->argv[r->argc++] = xstrdup(r->ov[i]);
        r->argv[r->argc++] = xstrdup("-o");
        r->argv[r->argc++] = xstrdup(r->dir);
        r->command = join_quoted(r->argv, r->argc);
        r->status = sweep_run_status(r->dir);
    }
    free(combo);
    free(ids.slot);
    for (int i = 0; i < warns.n; i++) {
        if (rc == 0 && n == 1)
            samx_warn("%s", warns.msg[i]);
        else if (rc == 0)
            samx_warn("%s (%s%ld of %ld runs, first %s)", warns.msg[i],
                      warns.count[i] == n ? "all " : "", warns.count[i], n,
                      runs[warns.first[i]].run_id);
        free(warns.msg[i]);
    }
    free(warns.msg);
    free(warns.count);
    free(warns.first);
    if (rc < 0) {
        for (long k = 0; k < n; k++)
            run_free(&runs[k]);
        free(runs);
        free(name);
        return -1;
    }
    *out = runs;
    *n_out = (int)n;
    *name_out = name;
    return 0;
}

/* ---- files ---- */

/* The manifest: what the sweep plans, never its progress (a run's status is in its directory),
 * so the same sweep always has the same manifest. */
static char *manifest_text(const struct plan *pl, const struct run *runs, int n)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    for (int k = 0; k < n; k++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "run_id", runs[k].run_id);
        cJSON *ov = cJSON_AddArrayToObject(j, "overrides");
        cJSON *lb = cJSON_AddArrayToObject(j, "labels");
        for (int i = 0; i < runs[k].n_ov; i++) {
            cJSON_AddItemToArray(ov, cJSON_CreateString(runs[k].ov[i]));
            cJSON_AddItemToArray(lb, cJSON_CreateString(runs[k].label[i]));
        }
        cJSON_AddStringToObject(j, "command", runs[k].command);
        cJSON_AddStringToObject(j, "config", pl->config);
        char *line = cJSON_PrintUnformatted(j);
        fprintf(f, "%s\n", line);
        free(line);
        cJSON_Delete(j);
    }
    fclose(f);
    return s;
}

static char *commands_text(const struct run *runs, int n)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    for (int k = 0; k < n; k++)
        fprintf(f, "%s\n", runs[k].command);
    fclose(f);
    return s;
}

/* Write a file that is never rewritten: an emitted job may be reading it. An existing file
 * with the same content is the same sweep again, and is kept as it is. */
static int write_once(const char *path, const char *text, struct err *e)
{
    if (!io_exists(path))
        return io_write_atomic(path, text, strlen(text), e);
    char *old = NULL;
    if (io_read_all(path, &old, NULL, e) < 0)
        return -1;
    int rc = strcmp(old, text) == 0
                 ? 0
                 : err_set(e, "'%s' exists with other content; a sweep's files are never "
                              "rewritten (move that directory away to plan this sweep again)",
                           path);
    free(old);
    return rc;
}

/* ---- scripts for other engines ---- */

static void emit_script(const char *engine, const char *name, const char *dir, int n, int jobs,
                        int threads, int ntasks, const struct run *runs)
{
    char *qdir = shell_quote(dir), *cmds = xasprintf("%s/commands.txt", dir);
    char *qcmds = shell_quote(cmds), *jl = xasprintf("%s/joblog", dir), *qjl = shell_quote(jl);
    if (!strcmp(engine, "sh")) {
        printf("#!/bin/sh\n"
               "# samx sweep '%s': %d runs, one after another. Rerunning skips completed runs and\n"
               "# resumes interrupted ones; Ctrl-C checkpoints the current run and stops.\n"
               "status=0\n"
               "run() { \"$@\"; rc=$?; [ $rc -eq 130 ] && exit 130; [ $rc -eq 0 ] || status=1; }\n",
               name, n);
        for (int k = 0; k < n; k++)
            printf("run %s\n", runs[k].command);
        printf("exit $status\n");
    } else if (!strcmp(engine, "parallel")) {
        printf("#!/bin/sh\n"
               "# samx sweep '%s': the %d commands of %s\n"
               "# through GNU parallel, %d at a time, OMP_NUM_THREADS=%d each. Rerunning skips the\n"
               "# runs that completed (--resume-failed reruns failed and interrupted ones, which\n"
               "# resume from their checkpoints).\n"
               "OMP_NUM_THREADS=%d exec parallel --joblog %s --resume-failed -j %d :::: %s\n",
               name, n, cmds, jobs, threads, threads, qjl, jobs, qcmds);
    } else {
        printf("#!/bin/bash\n"
               "#SBATCH --job-name=samx-%s\n"
               "#SBATCH --array=0-%d\n",
               name, n - 1);
        if (ntasks > 1)
            printf("#SBATCH --ntasks=%d\n", ntasks);
        printf("#SBATCH --cpus-per-task=%d\n"
               "#SBATCH --output=%s/slurm-%%A_%%a.out\n"
               "# samx sweep '%s': array task i runs line i+1 of %s (%d runs)",
               threads, dir, name, cmds, n);
        if (ntasks > 1)
            printf(",\n# each over %d MPI processes: srun with Slurm's MPI plugin SAMX_SRUN_MPI "
                   "[pmix]", ntasks);
        printf(".\n"
               "# Resubmitting skips completed runs and resumes interrupted ones; samx\n"
               "# checkpoints on the SIGTERM Slurm sends at the time limit.\n"
               "export OMP_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n"
               "line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" %s)\n"
               "[ -n \"$line\" ] || { echo \"no line $((SLURM_ARRAY_TASK_ID + 1)) in %s\" >&2; "
               "exit 2; }\n",
               qcmds, cmds);
        /* srun does not pass the job's --cpus-per-task on to its tasks (Slurm >= 22.05) */
        if (ntasks > 1)
            printf("eval \"exec srun --mpi=\\\"${SAMX_SRUN_MPI:-pmix}\\\" --ntasks=%d "
                   "--cpus-per-task=\\\"$OMP_NUM_THREADS\\\" $line\"\n",
                   ntasks);
        else
            printf("eval \"exec $line\"\n");
    }
    free(qdir);
    free(cmds);
    free(qcmds);
    free(jl);
    free(qjl);
}

/* ---- running here ---- */

static volatile sig_atomic_t got_signal, n_signals;
static void on_signal(int sig)
{
    got_signal = sig;
    n_signals++;
}

static bool finished(const char *status)
{
    return !strcmp(status, "completed") || !strcmp(status, "diverged") ||
           !strcmp(status, "stopped");
}

/* Exit status of samx run for a run directory another samx process holds (rundir). */

/* The run's status from how its process ended and what it left on disk. */
static const char *reap_status(const struct run *r, int ws)
{
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
        const char *s = sweep_run_status(r->dir);
        return finished(s) ? s : "failed";
    }
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == SAMX_EXIT_INTERRUPTED)
        return "interrupted";
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == SAMX_EXIT_BUSY)
        return "busy";
    /* killed: its last checkpoint is on disk, and running the sweep again resumes from it */
    if (WIFSIGNALED(ws))
        return "interrupted";
    return "failed";
}

/* The last non-empty line of the run's log (its error message), or "". */
static char *last_line(const char *path)
{
    char *buf = NULL;
    struct err ignored = {0};
    if (io_read_all(path, &buf, NULL, &ignored) < 0)
        return xstrdup("");
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    char *nl = strrchr(buf, '\n'), *r = xstrdup(nl ? nl + 1 : buf);
    free(buf);
    return r;
}

/* One line on how a finished run went: its final test accuracy (or loss), or why it stopped. */
static void report(const struct run *r, int ws, const char *log, bool bad, int done, int n_todo)
{
    char what[600] = "";
    if (finished(r->status)) {
        char *p = xasprintf("%s/summary.json", r->dir), *s = NULL;
        struct err ignored = {0};
        cJSON *j = io_read_all(p, &s, NULL, &ignored) == 0 ? cJSON_Parse(s) : NULL;
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(j, "final");
        const cJSON *ep = cJSON_GetObjectItemCaseSensitive(j, "epochs_completed");
        static const char *const keys[] = {"test_acc", "test_loss", "train_loss", NULL};
        for (int i = 0; keys[i] && !what[0]; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(fin, keys[i]);
            if (cJSON_IsNumber(v))
                snprintf(what, sizeof what, " %s %.4f", keys[i], v->valuedouble);
        }
        if (!strcmp(r->status, "diverged") && cJSON_IsNumber(ep))
            snprintf(what, sizeof what, " after %d epochs", ep->valueint);
        cJSON_Delete(j);
        free(s);
        free(p);
    } else if (WIFSIGNALED(ws)) {
        snprintf(what, sizeof what, ": killed by signal %d (%s)%s", WTERMSIG(ws),
                 strsignal(WTERMSIG(ws)),
                 WTERMSIG(ws) == SIGKILL ? "; out of memory? rerun the sweep to resume it" : "");
    } else if (!strcmp(r->status, "busy")) {
        snprintf(what, sizeof what, ": another samx process is running it");
    } else if (!strcmp(r->status, "failed")) {
        char *msg = last_line(log);
        const char *m = !strncmp(msg, "samx: error: ", 13) ? msg + 13 : msg;
        snprintf(what, sizeof what, " (exit %d): %.400s", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1,
                 *m ? m : "no message");
        free(msg);
    }
    if (bad)
        fprintf(stderr, "samx: error: done %d/%d: run '%s' %s%s (log %s)\n", done, n_todo,
                r->run_id, r->status, what, log);
    else
        fprintf(stderr, "samx: done %d/%d %s %s%s (%.1f s)\n", done, n_todo, r->run_id,
                r->status, what, rundir_now() - r->started);
}

static int run_here(const struct sweep_opts *o, struct run *runs, int n, const char *sdir,
                    int threads, bool *stopped, struct err *e)
{
    int *todo = xcalloc((size_t)n + 1, sizeof *todo), n_todo = 0, next = 0, running = 0, done = 0;
    for (int k = 0; k < n; k++)
        if (!finished(runs[k].status))
            todo[n_todo++] = k;
    char tbuf[16];
    snprintf(tbuf, sizeof tbuf, "%d", threads);
    char *logdir = xasprintf("%s/logs", sdir);
    if (n_todo && io_mkdir_p(logdir, e) < 0) {
        free(logdir);
        free(todo);
        return -1;
    }
    int n_resume = 0;
    for (int i = 0; i < n_todo; i++)
        n_resume += !strcmp(runs[todo[i]].status, "interrupted");
    char rbuf[48] = "";
    if (n_resume)
        snprintf(rbuf, sizeof rbuf, " (%d of them resume)", n_resume);
    if (o->progress)
        fprintf(stderr, "samx: %d runs, %d done before, %d to run%s, %d at a time with %d "
                        "thread%s each; logs in %s\n",
                n, n - n_todo, n_todo, rbuf, o->jobs, threads, threads == 1 ? "" : "s",
                logdir);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int forwarded = 0, rc = 0, started = 0;
    while (((next < n_todo && !n_signals) || running > 0) && rc == 0) {
        /* Children share the terminal's process group, so a Ctrl-C reaches them directly; a
         * signal sent to the sweep alone (kill, Slurm, a parent script) is passed on here. A
         * second SIGINT is harmless: samx run only sets a flag. */
        if (n_signals != forwarded) {
            forwarded = n_signals;
            for (int k = 0; k < n; k++)
                if (runs[k].pid > 0)
                    kill(runs[k].pid, got_signal);
        }
        while (!n_signals && running < o->jobs && next < n_todo) {
            struct run *r = &runs[todo[next++]];
            char *log = xasprintf("%s/%s.log", logdir, r->run_id);
            /* appended: a resumed run's log follows the interrupted one's */
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            free(log);
            if (fd < 0) {
                rc = err_set(e, "cannot write the log of '%s' in '%s': %s", r->run_id, logdir,
                             strerror(errno));
                break;
            }
            r->argv[r->argc] = "-t";
            r->argv[r->argc + 1] = tbuf;
            r->argv[r->argc + 2] = "-q";
            r->argv[r->argc + 3] = NULL;
            fflush(stdout);
            fflush(stderr);
            r->started = rundir_now();
            r->pid = fork();
            if (r->pid == 0) {
                dup2(fd, 2);
                execv(r->argv[0], r->argv);
                fprintf(stderr, "samx: error: cannot run '%s': %s\n", r->argv[0], strerror(errno));
                _exit(SAMX_EXIT_RUNTIME);
            }
            close(fd);
            r->argv[r->argc] = NULL;
            if (r->pid < 0) {
                rc = err_set(e, "cannot start a run: %s", strerror(errno));
                break;
            }
            running++;
            started++;
            if (o->progress)
                fprintf(stderr, "samx: %s %d/%d %s\n",
                        strcmp(r->status, "interrupted") ? "start" : "resume", started, n_todo,
                        r->run_id);
        }
        int ws;
        pid_t pid = waitpid(-1, &ws, WNOHANG);
        if (pid <= 0) {
            if (pid < 0 && errno != EINTR && errno != ECHILD)
                rc = err_set(e, "waiting for runs: %s", strerror(errno));
            if (pid < 0 && errno == ECHILD)
                running = 0;
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int k = 0; k < n; k++) {
            struct run *r = &runs[k];
            if (r->pid != pid)
                continue;
            r->pid = 0;
            running--;
            done++;
            r->status = reap_status(r, ws);
            char *log = xasprintf("%s/%s.log", logdir, r->run_id);
            /* errors always; a run stopped by the sweep's own signal is no news */
            bool bad = !finished(r->status) && !(n_signals && !strcmp(r->status, "interrupted"));
            if (o->progress || bad)
                report(r, ws, log, bad, done, n_todo);
            free(log);
        }
    }
    /* On an error above, let the runs already started finish: they checkpoint and exit. */
    for (int k = 0; k < n; k++)
        if (runs[k].pid > 0) {
            int ws;
            kill(runs[k].pid, SIGINT);
            while (waitpid(runs[k].pid, &ws, 0) < 0 && errno == EINTR)
                ;
            runs[k].status = reap_status(&runs[k], ws);
            runs[k].pid = 0;
        }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    *stopped = n_signals > 0;
    free(todo);
    free(logdir);
    return rc;
}

int sweep_main(const struct sweep_opts *o, struct err *e)
{
    struct plan pl;
    memset(&pl, 0, sizeof pl);
    struct run *runs = NULL;
    int n = 0, rc = 0;
    char *name = NULL, *root = NULL, *dir = NULL, *manifest = NULL;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        rc = err_set(e, "cannot find the samx binary: %s", strerror(errno));
        goto out;
    }
    exe[len] = 0;
    const char *r0 = o->results_root ? o->results_root : "results";
    if (r0[0] == '/') {
        root = xstrdup(r0);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) {
            rc = err_set(e, "cannot find the current directory: %s", strerror(errno));
            goto out;
        }
        root = xasprintf("%s/%s", cwd, r0);
    }
    if (plan_load(&pl, o, e) < 0 || plan_runs(&pl, root, exe, &runs, &n, &name, e) < 0) {
        rc = -1;
        goto out;
    }
    int threads = o->cores / o->jobs > 1 ? o->cores / o->jobs : 1;
    if (o->dry_run && !o->emit) {
        for (int k = 0; k < n; k++)
            printf("%s\n", runs[k].command);
        goto out;
    }
    /* The sweep's own directory, named by the hash of its run list: another sweep of the same
     * name gets another directory, the same sweep again the same one. */
    char *cmds = commands_text(runs, n), *man = manifest_text(&pl, runs, n), hash[65];
    sha256_hex(cmds, strlen(cmds), hash);
    dir = xasprintf("%s/%s/sweeps/%.12s", root, name, hash);
    manifest = xasprintf("%s/manifest.jsonl", dir);
    char *cpath = xasprintf("%s/commands.txt", dir);
    if (!o->dry_run && (io_mkdir_p(dir, e) < 0 || write_once(manifest, man, e) < 0 ||
                        write_once(cpath, cmds, e) < 0))
        rc = -1;
    free(cmds);
    free(man);
    free(cpath);
    if (rc < 0)
        goto out;
    if (o->emit) {
        emit_script(o->emit, name, dir, n, o->jobs, threads, o->ntasks, runs);
        goto out;
    }
    bool stopped = false;
    if (run_here(o, runs, n, dir, threads, &stopped, e) < 0) {
        rc = -1;
        goto out;
    }
    int counts[6] = {0};
    static const char *const names[] = {"completed", "diverged", "interrupted", "failed",
                                        "busy", "planned"};
    for (int k = 0; k < n; k++)
        for (int i = 0; i < 6; i++)
            counts[i] += !strcmp(runs[k].status, names[i]);
    if (o->progress || counts[2] + counts[3] + counts[4] + counts[5])
        fprintf(stderr, "samx: sweep '%s': %d runs: %d completed, %d diverged, %d interrupted, "
                        "%d failed, %d busy, %d not run; manifest %s\n",
                name, n, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5],
                manifest);
    rc = stopped                          ? SAMX_EXIT_INTERRUPTED
         : counts[0] + counts[1] == n     ? SAMX_EXIT_OK
         : counts[3] || counts[2]         ? SAMX_EXIT_RUNTIME
         : counts[4]                      ? SAMX_EXIT_BUSY
                                          : SAMX_EXIT_RUNTIME;
    /* Every non-zero exit says why, with or without a terminal (and with -q). */
    if (rc == SAMX_EXIT_INTERRUPTED)
        fprintf(stderr, "samx: interrupted by a signal: %d runs not finished (they resume when "
                        "the sweep runs again); manifest %s\n",
                n - counts[0] - counts[1], manifest);
out:
    for (int k = 0; k < n; k++)
        run_free(&runs[k]);
    free(runs);
    plan_free(&pl);
    free(name);
    free(root);
    free(dir);
    free(manifest);
    return rc;
}
