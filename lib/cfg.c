/* cfg.c: the strict YAML config tree (contract in cfg.h).
 *
 * Every YAML text (the file, or the value of one override) is read twice by libyaml: first as
 * events, to reject what the document API would silently resolve or drop (aliases, anchors,
 * explicit tags, extra documents), then with yaml_parser_load, whose node graph is copied into
 * struct cfg_node. Plain `~`, `null` and empty scalars become CFG_NULL; every other scalar keeps
 * its text, and the getters decide what it means.
 */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

/* Deeper YAML is rejected, which bounds the recursion of the tree walks below. */
enum { CFG_MAX_DEPTH = 64 };
/* Keys are at most this long: the dump writes keys as YAML implicit keys, which may not exceed
 * 1024 characters, and an escaped byte takes up to 4 (samx's own keys are short names). */
enum { CFG_MAX_KEY = 200 };
/* A config file is read up to this size (the largest real ones are a few kB). */
enum { CFG_MAX_BYTES = 64 << 20 };

struct cfg_buf {
    char *s;
    size_t n, cap;
};

static void cfg_buf_add(struct cfg_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void cfg_buf_puts(struct cfg_buf *b, const char *s)
{
    cfg_buf_add(b, s, strlen(s));
}

/* ---- errors ---- */

static int cfg_verr(struct err *e, const char *file, int line, int col, const char *fmt, va_list ap)
{
    char msg[sizeof e->msg];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (line > 0)
        return err_cfg(e, "%s:%d:%d: %s", file, line, col, msg);
    return err_cfg(e, "%s: %s", file, msg);
}

static int cfg_err_at(struct err *e, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int cfg_err_at(struct err *e, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_verr(e, file, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

int cfg_err(struct err *e, const struct cfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_verr(e, n->file, n->line, n->col, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- nodes ---- */

static struct cfg_node *cfg_node_new(enum cfg_type type, const char *file, int line, int col)
{
    struct cfg_node *n = xcalloc(1, sizeof *n);
    n->type = type;
    n->file = file;
    n->line = line;
    n->col = col;
    return n;
}

static void cfg_node_free(struct cfg_node *n);

/* Drop n's value (text and children), keeping its key and origin. */
static void cfg_node_clear(struct cfg_node *n)
{
    for (int i = 0; i < n->n_kid; i++)
        cfg_node_free(n->kid[i]);
    free(n->kid);
    free(n->str);
    n->kid = NULL;
    n->str = NULL;
    n->n_kid = n->cap_kid = 0;
}

static void cfg_node_free(struct cfg_node *n)
{
    if (!n)
        return;
    cfg_node_clear(n);
    free(n->key);
    free(n);
}

static void cfg_node_add(struct cfg_node *parent, struct cfg_node *kid)
{
    if (parent->n_kid == parent->cap_kid) {
        parent->cap_kid = parent->cap_kid ? 2 * parent->cap_kid : 4;
        parent->kid = xrealloc(parent->kid, (size_t)parent->cap_kid * sizeof *parent->kid);
    }
    parent->kid[parent->n_kid++] = kid;
    kid->parent = parent;
}

static int cfg_index(const struct cfg_node *n)
{
    for (int i = 0; i < n->parent->n_kid; i++)
        if (n->parent->kid[i] == n)
            return i;
    SAMX_BUG("node missing from its parent");
}

/* Put n in old's slot under old's key, so a replaced value keeps its place in the dump. */
static void cfg_node_swap(struct cfg_node *old, struct cfg_node *n)
{
    old->parent->kid[cfg_index(old)] = n;
    n->parent = old->parent;
    n->key = old->key;
    old->key = NULL;
    cfg_node_free(old);
}

struct cfg_node *cfg_child(const struct cfg_node *map, const char *key)
{
    if (!map || map->type != CFG_MAP)
        return NULL;
    for (int i = 0; i < map->n_kid; i++)
        if (strcmp(map->kid[i]->key, key) == 0)
            return map->kid[i];
    return NULL;
}

/* A read key makes its ancestors used too, so a mapping reached with cfg_child is not reported
 * as unknown once any key in it has been read. */
/* Getters number the keys in the order they first ask for them, which is the code's order, not
 * the input's: the dump's key order then depends on the config, not on how it was written. */
static unsigned long cfg_read_count;

static void cfg_read_now(struct cfg_node *n)
{
    if (!n->read_seq)
        n->read_seq = ++cfg_read_count;
}

static void cfg_use(struct cfg_node *n)
{
    for (; n; n = n->parent)
        n->used = true;
}

static void cfg_use_tree(struct cfg_node *n)
{
    n->used = true;
    for (int i = 0; i < n->n_kid; i++)
        cfg_use_tree(n->kid[i]);
}

void cfg_mark(struct cfg_node *n)
{
    cfg_read_now(n);
    cfg_use(n);
}

static void cfg_path_put(struct cfg_buf *b, const struct cfg_node *n)
{
    const struct cfg_node *p = n->parent;
    if (!p)
        return;
    cfg_path_put(b, p);
    if (p->type == CFG_SEQ) {
        char idx[24];
        snprintf(idx, sizeof idx, "[%d]", cfg_index(n));
        cfg_buf_puts(b, idx);
        return;
    }
    if (b->n)
        cfg_buf_puts(b, ".");
    cfg_buf_puts(b, n->key);
}

char *cfg_path(const struct cfg_node *n)
{
    struct cfg_buf b = {0};
    cfg_path_put(&b, n);
    return b.s ? b.s : xstrdup("");
}

static const char *cfg_intern(struct cfg *c, const char *s)
{
    for (int i = 0; i < c->n_strings; i++)
        if (strcmp(c->strings[i], s) == 0)
            return c->strings[i];
    c->strings = xrealloc(c->strings, (size_t)(c->n_strings + 1) * sizeof *c->strings);
    c->strings[c->n_strings] = xstrdup(s);
    return c->strings[c->n_strings++];
}

void cfg_free(struct cfg *c)
{
    cfg_node_free(c->root);
    for (int i = 0; i < c->n_strings; i++)
        free(c->strings[i]);
    free(c->strings);
    free(c->path);
    memset(c, 0, sizeof *c);
}

/* ---- reading YAML ---- */

struct cfg_src {
    const char *file; /* interned origin */
    bool located;     /* marks are file positions (false for override values) */
    const char *text;
    size_t len;
    yaml_document_t doc;
    struct err *e;
};

static int cfg_src_err(const struct cfg_src *s, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cfg_src_err(const struct cfg_src *s, yaml_mark_t m, const char *fmt, ...)
{
    va_list ap;
    int line = s->located ? (int)m.line + 1 : 0;
    va_start(ap, fmt);
    cfg_verr(s->e, s->file, line, (int)m.column + 1, fmt, ap);
    va_end(ap);
    return -1;
}

/* libyaml calls a tab in indentation "found character that cannot start any token". */
static bool cfg_tab_at(const struct cfg_src *s, yaml_mark_t m)
{
    size_t i = 0;
    for (size_t line = 0; i < s->len && line < m.line; i++)
        if (s->text[i] == '\n')
            line++;
    for (size_t col = 0; i < s->len && col < m.column && s->text[i] != '\n'; col++) {
        i++;
        while (i < s->len && ((unsigned char)s->text[i] & 0xc0) == 0x80)
            i++;
    }
    return i < s->len && s->text[i] == '\t';
}

static int cfg_yaml_err(const struct cfg_src *s, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "malformed yaml";
    if (p->error == YAML_MEMORY_ERROR)
        return err_set(s->e, "out of memory reading '%s'", s->file);
    if (p->error == YAML_READER_ERROR)
        return cfg_err_at(s->e, s->file, 0, 0, "%s at byte %zu", problem, p->problem_offset);
    if (cfg_tab_at(s, p->problem_mark))
        problem = "tab character where spaces are expected";
    return cfg_src_err(s, p->problem_mark, "%s", problem);
}

static int cfg_check_events(const struct cfg_src *s)
{
    yaml_parser_t p;
    yaml_event_t ev;
    int docs = 0, depth = 0, rc = 0;
    bool end = false;

    if (!yaml_parser_initialize(&p))
        return err_set(s->e, "out of memory reading '%s'", s->file);
    yaml_parser_set_input_string(&p, (const unsigned char *)s->text, s->len);
    while (!end && rc == 0) {
        const void *anchor = NULL, *tag = NULL;
        const char *bad = NULL;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = cfg_yaml_err(s, &p);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            end = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                bad = "more than one yaml document";
            break;
        case YAML_ALIAS_EVENT:
            bad = "anchors and aliases are not supported";
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            break;
        case YAML_SEQUENCE_START_EVENT:
            anchor = ev.data.sequence_start.anchor;
            tag = ev.data.sequence_start.tag;
            depth++;
            break;
        case YAML_MAPPING_START_EVENT:
            anchor = ev.data.mapping_start.anchor;
            tag = ev.data.mapping_start.tag;
            depth++;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        default:
            break;
        }
        if (anchor)
            bad = "anchors and aliases are not supported";
        else if (tag)
            bad = "tags are not supported";
        else if (depth > CFG_MAX_DEPTH)
            bad = "nesting is too deep";
        if (bad)
            rc = cfg_src_err(s, ev.start_mark, "%s", bad);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

static bool cfg_is_null(const char *s)
{
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* The keys of one mapping, for the duplicate check: open addressing over the key texts (FNV-1a),
 * so a mapping of n keys is checked in O(n), not O(n^2) comparisons. */
struct cfg_keyset {
    const char **slot;
    size_t mask;
};

static uint64_t cfg_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

/* Insert key; false if it was there already. */
static bool cfg_keyset_add(struct cfg_keyset *ks, const char *key)
{
    for (size_t i = cfg_hash(key) & ks->mask;; i = (i + 1) & ks->mask) {
        if (!ks->slot[i]) {
            ks->slot[i] = key;
            return true;
        }
        if (!strcmp(ks->slot[i], key))
            return false;
    }
}

/* Copy libyaml node y into a new node under parent (NULL for the root). *out is set before the
 * node is filled, so after an error the partial tree is still reachable and can be freed. */
static int cfg_copy(struct cfg_src *s, yaml_node_t *y, struct cfg_node *parent, yaml_node_t *yk,
                    struct cfg_node **out)
{
    int line = s->located ? (int)y->start_mark.line + 1 : 0;
    int col = s->located ? (int)y->start_mark.column + 1 : 0;
    enum cfg_type type = CFG_SCALAR;
    struct cfg_node *n;

    if (y->type == YAML_SCALAR_NODE) {
        const char *v = (const char *)y->data.scalar.value;
        if (strlen(v) != y->data.scalar.length)
            return cfg_src_err(s, y->start_mark, "nul character in a string");
        if (y->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && cfg_is_null(v))
            type = CFG_NULL;
    } else {
        type = y->type == YAML_MAPPING_NODE ? CFG_MAP : CFG_SEQ;
    }
    n = *out = cfg_node_new(type, s->file, line, col);
    if (yk) {
        n->key = xstrdup((const char *)yk->data.scalar.value);
        n->key_line = s->located ? (int)yk->start_mark.line + 1 : 0;
        n->key_col = s->located ? (int)yk->start_mark.column + 1 : 0;
    }
    if (parent)
        cfg_node_add(parent, n);

    if (type == CFG_SCALAR) {
        n->str = xstrdup((const char *)y->data.scalar.value);
        n->quoted = y->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    } else if (type == CFG_SEQ) {
        for (yaml_node_item_t *it = y->data.sequence.items.start; it < y->data.sequence.items.top;
             it++) {
            struct cfg_node *kid;
            if (cfg_copy(s, yaml_document_get_node(&s->doc, *it), n, NULL, &kid) < 0)
                return -1;
        }
    } else if (type == CFG_MAP) {
        size_t n_pairs = (size_t)(y->data.mapping.pairs.top - y->data.mapping.pairs.start), cap = 8;
        while (cap < 2 * n_pairs)
            cap *= 2;
        struct cfg_keyset ks = {xcalloc(cap, sizeof *ks.slot), cap - 1};
        int rc = 0;
        for (yaml_node_pair_t *pr = y->data.mapping.pairs.start;
             rc == 0 && pr < y->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(&s->doc, pr->key);
            struct cfg_node *kid;
            if (k->type != YAML_SCALAR_NODE) {
                rc = cfg_src_err(s, k->start_mark, "keys must be strings");
                break;
            }
            const char *key = (const char *)k->data.scalar.value;
            if (!*key)
                rc = cfg_src_err(s, k->start_mark, "empty key");
            else if (k->data.scalar.length > CFG_MAX_KEY)
                rc = cfg_src_err(s, k->start_mark, "key longer than %d bytes", CFG_MAX_KEY);
            else if (strlen(key) != k->data.scalar.length)
                rc = cfg_src_err(s, k->start_mark, "nul character in a key");
            else if (!cfg_keyset_add(&ks, key)) {
                char *path = cfg_path(n);
                rc = cfg_src_err(s, k->start_mark, "duplicate key '%s%s%s'", path,
                                 *path ? "." : "", key);
                free(path);
            } else {
                rc = cfg_copy(s, yaml_document_get_node(&s->doc, pr->value), n, k, &kid);
            }
        }
        free(ks.slot);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Parse one YAML text; *out is NULL for a stream without a document. */
static int cfg_read(const char *file, bool located, const char *text, size_t len,
                    struct cfg_node **out, struct err *e)
{
    struct cfg_src s = {.file = file, .located = located, .text = text, .len = len, .e = e};
    yaml_parser_t p;
    yaml_node_t *root;
    int rc = 0;

    *out = NULL;
    if (cfg_check_events(&s) < 0)
        return -1;
    if (!yaml_parser_initialize(&p))
        return err_set(e, "out of memory reading '%s'", file);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, &s.doc)) {
        rc = cfg_yaml_err(&s, &p);
        yaml_parser_delete(&p);
        return rc;
    }
    root = yaml_document_get_root_node(&s.doc);
    if (root)
        rc = cfg_copy(&s, root, NULL, NULL, out);
    if (rc < 0) {
        cfg_node_free(*out);
        *out = NULL;
    }
    yaml_document_delete(&s.doc);
    yaml_parser_delete(&p);
    return rc;
}

/* How a wrong value reads in a message. */
static const char *cfg_got(const struct cfg_node *n, char *buf, size_t size)
{
    enum { SHOW = 40 };
    int cut = SHOW;

    if (n->type == CFG_NULL)
        return "null";
    if (n->type == CFG_MAP)
        return "a mapping";
    if (n->type == CFG_SEQ)
        return "a list";
    if (strlen(n->str) <= SHOW + 3)
        cut = SHOW + 3;
    else
        while (cut > 0 && ((unsigned char)n->str[cut] & 0xc0) == 0x80)
            cut--;
    snprintf(buf, size, "%s'%.*s%s'", n->quoted ? "the string " : "", cut, n->str,
             strlen(n->str) > (size_t)cut ? "..." : "");
    return buf;
}

static int cfg_load_text(struct cfg *c, const char *name, const char *text, size_t len,
                         struct err *e)
{
    struct cfg_node *root;
    const char *file;
    char got[64];

    memset(c, 0, sizeof *c);
    c->path = xstrdup(name);
    file = cfg_intern(c, name);
    if (cfg_read(file, true, text, len, &root, e) < 0)
        goto fail;
    if (!root || root->type == CFG_NULL) {
        cfg_node_free(root);
        cfg_err_at(e, file, 0, 0, "empty config");
        goto fail;
    }
    if (root->type != CFG_MAP) {
        cfg_err(e, root, "top level must be a mapping, got %s", cfg_got(root, got, sizeof got));
        cfg_node_free(root);
        goto fail;
    }
    c->root = root;
    return 0;
fail:
    cfg_free(c);
    return -1;
}

int cfg_load_string(struct cfg *c, const char *name, const char *yaml, struct err *e)
{
    return cfg_load_text(c, name, yaml, strlen(yaml), e);
}

int cfg_load(struct cfg *c, const char *path, struct err *e)
{
    FILE *f;
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    int rc;

    memset(c, 0, sizeof *c);
    f = fopen(path, "rb");
    if (!f)
        return err_cfg(e, "cannot read '%s': %s", path, strerror(errno));
    do {
        if (cap - len < 4096) {
            cap = cap ? 2 * cap : 16384;
            text = xrealloc(text, cap);
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
    } while (got > 0 && len <= CFG_MAX_BYTES);
    if (len > CFG_MAX_BYTES) { /* a device (/dev/zero) or a runaway file */
        fclose(f);
        free(text);
        return err_cfg(e, "cannot read '%s': larger than %d MiB", path, CFG_MAX_BYTES >> 20);
    }
    if (ferror(f)) {
        int errnum = errno;
        fclose(f);
        free(text);
        return err_cfg(e, "cannot read '%s': %s", path, strerror(errnum));
    }
    fclose(f);
    rc = cfg_load_text(c, path, text, len, e);
    free(text);
    return rc;
}

/* ---- overrides ---- */

static bool cfg_key_path_ok(const char *s, size_t len)
{
    size_t seg = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (seg == 0)
                return false;
            seg = 0;
        } else if ((isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-') &&
                   seg < CFG_MAX_KEY) {
            seg++;
        } else {
            return false;
        }
    }
    return seg > 0;
}

/* How many collections deep n is (0 for a scalar), as the parser counts nesting. */
static int cfg_node_depth(const struct cfg_node *n)
{
    int d = 0;
    for (int i = 0; i < n->n_kid; i++) {
        int k = cfg_node_depth(n->kid[i]);
        d = k > d ? k : d;
    }
    return n->type == CFG_MAP || n->type == CFG_SEQ ? d + 1 : 0;
}

int cfg_override(struct cfg *c, const char *assignment, struct err *e)
{
    const char *eq = strchr(assignment, '=');
    const char *seg = assignment, *file;
    struct cfg_node *map = c->root, *val;
    char *origin;

    SAMX_ASSERT(c->root);
    if (!eq)
        return err_cfg(e, "override '%s': expected key=value", assignment);
    if (eq == assignment)
        return err_cfg(e, "override '%s': missing key before '='", assignment);
    if (!cfg_key_path_ok(assignment, (size_t)(eq - assignment)))
        return err_cfg(e,
                       "override '%s': invalid key '%.*s' (names of letters, digits, '_' and '-' "
                       "joined by '.')",
                       assignment, (int)(eq - assignment), assignment);
    origin = xasprintf("override '%s'", assignment);
    file = cfg_intern(c, origin);
    free(origin);
    if (cfg_read(file, false, eq + 1, strlen(eq + 1), &val, e) < 0)
        return -1;
    if (!val)
        val = cfg_node_new(CFG_NULL, file, 0, 0);
    /* The value sits in one mapping per key of the path: deeper than a file may nest, the
     * config would dump to text that does not load back. */
    int depth = 1;
    for (const char *p = assignment; p < eq; p++)
        depth += *p == '.';
    if (depth + cfg_node_depth(val) > CFG_MAX_DEPTH) {
        cfg_node_free(val);
        return err_cfg(e, "override '%s': nesting is too deep (more than %d levels)", assignment,
                       CFG_MAX_DEPTH);
    }

    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(eq - seg));
        size_t n = (size_t)((dot ? dot : eq) - seg);
        char *key = memcpy(xmalloc(n + 1), seg, n);
        struct cfg_node *k;

        key[n] = '\0';
        k = cfg_child(map, key);
        if (!dot || !k || k->type == CFG_NULL) {
            /* the value itself, or a missing intermediate mapping */
            struct cfg_node *m = dot ? cfg_node_new(CFG_MAP, file, 0, 0) : val;
            if (k) {
                cfg_node_swap(k, m);
                free(key);
            } else {
                m->key = key;
                cfg_node_add(map, m);
            }
            if (!dot)
                return 0;
            k = m;
        } else if (k->type != CFG_MAP) {
            char *path = cfg_path(k);
            cfg_err_at(e, file, 0, 0, "'%s' is not a mapping", path);
            free(path);
            free(key);
            cfg_node_free(val);
            return -1;
        } else {
            free(key);
        }
        map = k;
        seg = dot + 1;
    }
}

/* ---- getters ---- */

/* map[key] for a getter, marked used; NULL when missing or null, so that the default goes in. */
static struct cfg_node *cfg_get(struct cfg_node *map, const char *key)
{
    struct cfg_node *k;

    SAMX_ASSERT(map && map->type == CFG_MAP);
    k = cfg_child(map, key);
    if (!k)
        return NULL;
    cfg_read_now(k);
    cfg_use(k);
    return k->type == CFG_NULL ? NULL : k;
}

/* Write a resolved default into map[key], in the place of a null if there is one. */
static struct cfg_node *cfg_put(struct cfg_node *map, const char *key, enum cfg_type type,
                                const char *text, bool quoted)
{
    struct cfg_node *k = cfg_child(map, key);

    if (k) {
        cfg_node_clear(k);
    } else {
        k = cfg_node_new(type, map->file, 0, 0);
        k->key = xstrdup(key);
        cfg_node_add(map, k);
    }
    k->type = type;
    k->str = text ? xstrdup(text) : NULL;
    k->quoted = quoted;
    k->read_as = 0;
    cfg_read_now(k);
    cfg_use(k);
    return k;
}

struct cfg_node *cfg_set_scalar(struct cfg_node *map, const char *key, const char *text)
{
    SAMX_ASSERT(map && map->type == CFG_MAP);
    return cfg_put(map, key, CFG_SCALAR, text, false);
}

struct cfg_node *cfg_take(struct cfg_node *map, const char *key)
{
    struct cfg_node *k = cfg_get(map, key);
    if (k)
        cfg_use_tree(k);
    return k;
}

static int cfg_type_err(struct err *e, const struct cfg_node *n, const char *want)
{
    char got[64];
    char *path = cfg_path(n);
    cfg_err(e, n, "'%s' must be %s, got %s", path, want, cfg_got(n, got, sizeof got));
    free(path);
    return -1;
}

struct cfg_node *cfg_map(struct cfg_node *map, const char *key, struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);
    if (!k)
        return cfg_put(map, key, CFG_MAP, NULL, false);
    if (k->type != CFG_MAP) {
        cfg_type_err(e, k, "a mapping");
        return NULL;
    }
    return k;
}

static int cfg_scalar_int(struct cfg_node *n, long *out, struct err *e)
{
    const char *p;
    long v;

    if (n->type != CFG_SCALAR || n->quoted)
        return cfg_type_err(e, n, "an integer");
    p = n->str + (n->str[0] == '+' || n->str[0] == '-');
    if (!*p)
        return cfg_type_err(e, n, "an integer");
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return cfg_type_err(e, n, "an integer");
    errno = 0;
    v = strtol(n->str, NULL, 10);
    if (errno == ERANGE) {
        char want[96];
        snprintf(want, sizeof want, "an integer from %ld to %ld", LONG_MIN, LONG_MAX);
        return cfg_type_err(e, n, want);
    }
    n->read_as = 'i';
    *out = v;
    return 0;
}

/* The decimal syntax strtod reads, without its hex, inf and nan spellings. */
static int cfg_scalar_num(struct cfg_node *n, double *out, struct err *e)
{
    const char *p;
    int digits = 0;
    double v;

    if (n->type != CFG_SCALAR || n->quoted)
        return cfg_type_err(e, n, "a number");
    p = n->str + (n->str[0] == '+' || n->str[0] == '-');
    for (; isdigit((unsigned char)*p); p++)
        digits++;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            digits++;
    if (digits && (*p == 'e' || *p == 'E')) {
        p += 1 + (p[1] == '+' || p[1] == '-');
        if (!isdigit((unsigned char)*p))
            return cfg_type_err(e, n, "a number");
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (!digits || *p)
        return cfg_type_err(e, n, "a number");
    v = strtod(n->str, NULL);
    if (!isfinite(v))
        return cfg_type_err(e, n, "a finite number");
    n->read_as = n->read_as == 'i' ? 'i' : 'n';
    *out = v;
    return 0;
}

int cfg_int(struct cfg_node *map, const char *key, long def, long *out, struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);
    char buf[32];

    if (k)
        return cfg_scalar_int(k, out, e);
    snprintf(buf, sizeof buf, "%ld", def);
    cfg_put(map, key, CFG_SCALAR, buf, false);
    *out = def;
    return 0;
}

int cfg_num(struct cfg_node *map, const char *key, double def, double *out, struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);
    char buf[32];

    if (k)
        return cfg_scalar_num(k, out, e);
    cfg_put(map, key, CFG_SCALAR, cfg_fmt_num(buf, def), false);
    *out = def;
    return 0;
}

int cfg_num_opt(struct cfg_node *map, const char *key, double *out, bool *present, struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);

    *present = false;
    *out = 0.0;
    if (!k) {
        cfg_put(map, key, CFG_NULL, NULL, false);
        return 0;
    }
    if (cfg_scalar_num(k, out, e) < 0)
        return -1;
    *present = true;
    return 0;
}

int cfg_bool(struct cfg_node *map, const char *key, bool def, bool *out, struct err *e)
{
    static const char *const spelling[2][3] = {{"false", "False", "FALSE"},
                                               {"true", "True", "TRUE"}};
    struct cfg_node *k = cfg_get(map, key);

    if (!k) {
        cfg_put(map, key, CFG_SCALAR, def ? "true" : "false", false);
        *out = def;
        return 0;
    }
    for (int v = 0; v < 2 && k->type == CFG_SCALAR && !k->quoted; v++) {
        for (int i = 0; i < 3; i++) {
            if (strcmp(k->str, spelling[v][i]) == 0) {
                k->read_as = 'b';
                *out = v;
                return 0;
            }
        }
    }
    return cfg_type_err(e, k, "true or false");
}

int cfg_str(struct cfg_node *map, const char *key, const char *def, const char **out, struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);

    if (!k) {
        k = cfg_put(map, key, def ? CFG_SCALAR : CFG_NULL, def, def != NULL);
        *out = k->str;
        return 0;
    }
    if (k->type != CFG_SCALAR)
        return cfg_type_err(e, k, "a string");
    *out = k->str;
    return 0;
}

int cfg_str_path(struct cfg_node *map, const char *key, const char *def, const char **out,
                 struct err *e)
{
    if (cfg_str(map, key, def, out, e) < 0)
        return -1;
    struct cfg_node *k = cfg_child(map, key);
    if (!*out || !**out || **out == '/' || !k || k->type != CFG_SCALAR)
        return 0;
    char base[PATH_MAX] = ".";
    bool in_file = k->line > 0 && strncmp(k->file, "override '", 10) != 0;
    char *dir = xstrdup(in_file ? k->file : ".");
    char *slash = strrchr(dir, '/');
    if (!in_file || !slash)
        snprintf(dir, 2, ".");
    else if (slash == dir)
        slash[1] = 0;
    else
        *slash = 0;
    if (!realpath(dir, base)) {
        free(dir);
        return cfg_err(e, k, "cannot resolve '%s': directory '%s' of its config: %s", *out,
                       in_file ? k->file : ".", strerror(errno));
    }
    free(dir);
    const char *rel = *out;
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    char *abs = xasprintf("%s%s%s", base, strcmp(base, "/") ? "/" : "", rel);
    free(k->str);
    k->str = abs;
    *out = k->str;
    return 0;
}

int cfg_enum(struct cfg_node *map, const char *key, const char *const *choices, int def, int *out,
             struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);
    struct cfg_buf want = {0};
    int n = 0;

    while (choices[n])
        n++;
    SAMX_ASSERT(def >= 0 && def < n);
    if (!k) {
        cfg_put(map, key, CFG_SCALAR, choices[def], true);
        *out = def;
        return 0;
    }
    if (k->type == CFG_SCALAR) {
        for (int i = 0; i < n; i++) {
            if (strcmp(k->str, choices[i]) == 0) {
                *out = i;
                return 0;
            }
        }
    }
    cfg_buf_puts(&want, "one of ");
    for (int i = 0; i < n; i++) {
        cfg_buf_puts(&want, i ? ", " : "");
        cfg_buf_puts(&want, choices[i]);
    }
    cfg_type_err(e, k, want.s);
    free(want.s);
    return -1;
}

/* Int and number lists share everything but the item parser: exactly one of iout/dout is set. */
static int cfg_list(struct cfg_node *map, const char *key, const long *idef, const double *ddef,
                    int n_def, long *iout, double *dout, int max, int *n, struct err *e)
{
    struct cfg_node *k = cfg_get(map, key);

    SAMX_ASSERT(n_def >= 0 && n_def <= max);
    if (!k) {
        k = cfg_put(map, key, CFG_SEQ, NULL, false);
        for (int i = 0; i < n_def; i++) {
            struct cfg_node *item = cfg_node_new(CFG_SCALAR, map->file, 0, 0);
            char buf[32];
            if (iout) {
                snprintf(buf, sizeof buf, "%ld", idef[i]);
                iout[i] = idef[i];
            } else {
                cfg_fmt_num(buf, ddef[i]);
                dout[i] = ddef[i];
            }
            item->str = xstrdup(buf);
            item->used = true;
            cfg_node_add(k, item);
        }
        *n = n_def;
        return 0;
    }
    if (k->type != CFG_SEQ)
        return cfg_type_err(e, k, iout ? "a list of integers" : "a list of numbers");
    cfg_use_tree(k);
    if (k->n_kid > max) {
        char *path = cfg_path(k);
        cfg_err(e, k, "'%s' must have at most %d items, got %d", path, max, k->n_kid);
        free(path);
        return -1;
    }
    for (int i = 0; i < k->n_kid; i++) {
        int rc =
            iout ? cfg_scalar_int(k->kid[i], &iout[i], e) : cfg_scalar_num(k->kid[i], &dout[i], e);
        if (rc < 0)
            return -1;
    }
    *n = k->n_kid;
    return 0;
}

int cfg_int_list(struct cfg_node *map, const char *key, const long *def, int n_def, long *out,
                 int max, int *n, struct err *e)
{
    return cfg_list(map, key, def, NULL, n_def, out, NULL, max, n, e);
}

int cfg_num_list(struct cfg_node *map, const char *key, const double *def, int n_def, double *out,
                 int max, int *n, struct err *e)
{
    return cfg_list(map, key, NULL, def, n_def, NULL, out, max, n, e);
}

/* ---- unused keys ---- */

size_t cfg_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b), d;
    size_t *row = xmalloc((nb + 1) * sizeof *row);

    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    d = row[nb];
    free(row);
    return d;
}

/* The closest key read in n's mapping: at most 2 edits or a third of n's key, and never a
 * rewrite of the whole key (which would make every two-letter key "close" to every other). */
static const char *cfg_suggest(const struct cfg_node *n)
{
    size_t len = strlen(n->key);
    size_t best = (len / 3 > 2 ? len / 3 : 2) + 1;
    const char *key = NULL;

    if (best > len)
        best = len;
    for (int i = 0; i < n->parent->n_kid; i++) {
        const struct cfg_node *k = n->parent->kid[i];
        size_t d;
        if (k == n || !k->used)
            continue;
        d = cfg_distance(n->key, k->key);
        if (d < best) {
            best = d;
            key = k->key;
        }
    }
    return key;
}

static const struct cfg_node *cfg_find_unused(const struct cfg_node *n)
{
    for (int i = 0; i < n->n_kid; i++) {
        const struct cfg_node *k = n->kid[i], *u;
        if (n->type == CFG_MAP && !k->used)
            return k;
        u = cfg_find_unused(k);
        if (u)
            return u;
    }
    return NULL;
}

int cfg_check_unused(const struct cfg *c, struct err *e)
{
    const struct cfg_node *n = cfg_find_unused(c->root);
    const char *near;
    char *path;

    if (!n)
        return 0;
    near = cfg_suggest(n);
    path = cfg_path(n);
    cfg_err_at(e, n->file, n->key_line, n->key_col, "unknown key '%s'%s%s%s", path,
               near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
    free(path);
    return -1;
}

/* ---- dump ---- */

/* Would a plain scalar with this text be read as something other than a string, by samx or by
 * other YAML readers (YAML 1.1 yes/no/on/off as PyYAML reads them, numbers in any base, .inf)?
 * Erring towards quoting costs nothing. */
static bool cfg_looks_typed(const char *s)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", NULL};
    if (cfg_is_null(s) || isdigit((unsigned char)s[0]) || s[0] == '.' || s[0] == '+' ||
        (s[0] == '-' && (isdigit((unsigned char)s[1]) || s[1] == '.')))
        return true;
    for (int i = 0; words[i]; i++)
        if (strcasecmp(s, words[i]) == 0)
            return true;
    return false;
}

/* Can s be written as a plain scalar and read back as the same text? Conservative. */
/* The escape for a character libyaml reads as a line break (NEL, LS, PS) or drops (the BOM)
 * inside a scalar, with its UTF-8 length in *n; NULL for any other character. Written as it
 * is, such a character would load back as a space or vanish. */
static const char *cfg_unicode_escape(const unsigned char *p, size_t *n)
{
    if (p[0] == 0xc2 && p[1] == 0x85)
        return *n = 2, "\\N";
    if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
        return *n = 3, p[2] == 0xa8 ? "\\L" : "\\P";
    if (p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)
        return *n = 3, "\\uFEFF";
    return NULL;
}

static bool cfg_plain_ok(const char *s, bool flow)
{
    size_t len = strlen(s);

    if (!len || strchr("?:,[]{}#&*!|>'\"%@` ", s[0]) || s[len - 1] == ' ' || s[len - 1] == ':' ||
        strncmp(s, "---", 3) == 0 || strncmp(s, "...", 3) == 0)
        return false;
    if (s[0] == '-' && (s[1] == ' ' || s[1] == '\0'))
        return false;
    if (strstr(s, ": ") || strstr(s, " #"))
        return false;
    if (flow && strpbrk(s, ",[]{}:"))
        return false;
    size_t n;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || cfg_unicode_escape((const unsigned char *)p, &n))
            return false;
    return true;
}

static void cfg_put_quoted(struct cfg_buf *b, const char *s)
{
    bool control = false;
    size_t n;

    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || cfg_unicode_escape((const unsigned char *)p, &n))
            control = true;
    if (!control) {
        cfg_buf_puts(b, "'");
        for (const char *p = s; *p; p++) {
            cfg_buf_add(b, p, 1);
            if (*p == '\'')
                cfg_buf_add(b, p, 1);
        }
        cfg_buf_puts(b, "'");
        return;
    }
    cfg_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8] = {(char)*p, '\0'};
        const char *u = cfg_unicode_escape(p, &n);
        if (u) {
            cfg_buf_puts(b, u);
            p += n - 1;
            continue;
        }
        if (*p == '\\' || *p == '"')
            snprintf(esc, sizeof esc, "\\%c", *p);
        else if (*p == '\n')
            strcpy(esc, "\\n");
        else if (*p == '\t')
            strcpy(esc, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            snprintf(esc, sizeof esc, "\\x%02x", *p);
        cfg_buf_puts(b, esc);
    }
    cfg_buf_puts(b, "\"");
}

/* A plain number of samx's syntax spelled so that YAML 1.1 readers (PyYAML) read a number too:
 * their floats need a '.' before an exponent and a sign on it, and a digit before a signed '.'
 * (5e-4 -> 5.0e-4, 1E5 -> 1.0E+5, -.5 -> -0.5). The value is unchanged. Returns s itself when it needs
 * no change or is not such a number. */
static const char *cfg_yaml11_num(const char *s, char *buf, size_t cap)
{
    const char *p = s, *ip, *fp = NULL, *ep = NULL;
    size_t ni = 0, nf = 0, ne = 0;
    char sign = 0, esign = 0, e = 0;

    if (*p == '+' || *p == '-')
        sign = *p++;
    for (ip = p; isdigit((unsigned char)*p); p++)
        ni++;
    if (*p == '.')
        for (fp = ++p; isdigit((unsigned char)*p); p++)
            nf++;
    if (ni + nf > 0 && (*p == 'e' || *p == 'E')) {
        e = *p++;
        if (*p == '+' || *p == '-')
            esign = *p++;
        for (ep = p; isdigit((unsigned char)*p); p++)
            ne++;
        if (!ne)
            return s;
    }
    if (*p || ni + nf == 0 || strlen(s) + 4 >= cap)
        return s; /* not a number */
    /* already read alike: integers, 5.5, 5., .5, 5.0e-4 */
    if ((!e || esign) && (ni ? (fp || !e) : !sign))
        return s;
    snprintf(buf, cap, "%s%.*s.%.*s%s%s%.*s", sign == '-' ? "-" : "", (int)(ni ? ni : 1),
             ni ? ip : "0", (int)(nf ? nf : 1), nf ? fp : "0", e ? (e == 'E' ? "E" : "e") : "",
             e ? (esign == '-' ? "-" : "+") : "", (int)ne, ep ? ep : "");
    return buf;
}

/* The text the dump writes for scalar n: a value read as an integer, number or bool in one
 * spelling (+5 and 05 as 5; 0.050, 5e-2 and .05 as 0.05; True as true), so that every spelling
 * of one config resolves to one text and one hash; else the text as written. */
static const char *cfg_canon(const struct cfg_node *n, char buf[32])
{
    if (n->quoted || n->type != CFG_SCALAR)
        return n->str;
    switch (n->read_as) {
    case 'i':
        snprintf(buf, 32, "%ld", strtol(n->str, NULL, 10));
        return buf;
    case 'n':
        return cfg_fmt_num(buf, strtod(n->str, NULL));
    case 'b':
        return n->str[0] == 't' || n->str[0] == 'T' ? "true" : "false";
    default:
        return n->str;
    }
}

/* Keys are always strings, so they are written like quoted scalars. */
static void cfg_put_scalar(struct cfg_buf *b, const char *s, bool quoted, bool flow)
{
    char num[64];
    if (!quoted)
        s = cfg_yaml11_num(s, num, sizeof num);
    if (cfg_plain_ok(s, flow) && !(quoted && cfg_looks_typed(s)))
        cfg_buf_puts(b, s);
    else
        cfg_put_quoted(b, s);
}

/* A mapping's keys in the order the getters first asked for them (those never asked for, such
 * as the keys of an unread subtree, after them as written); a malloc'd array of n_kid. */
struct cfg_rank {
    unsigned long seq;
    int i;
};

static int cfg_rank_cmp(const void *a, const void *b)
{
    const struct cfg_rank *x = a, *y = b;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static const struct cfg_node **cfg_in_order(const struct cfg_node *map)
{
    int n = map->n_kid;
    struct cfg_rank *r = xmalloc(((size_t)n + 1) * sizeof *r);
    const struct cfg_node **out = xmalloc(((size_t)n + 1) * sizeof *out);
    for (int i = 0; i < n; i++)
        r[i] = (struct cfg_rank){map->kid[i]->read_seq ? map->kid[i]->read_seq : ULONG_MAX, i};
    qsort(r, (size_t)n, sizeof *r, cfg_rank_cmp);
    for (int i = 0; i < n; i++)
        out[i] = map->kid[r[i].i];
    free(r);
    return out;
}

static void cfg_dump_flow(struct cfg_buf *b, const struct cfg_node *n)
{
    switch (n->type) {
    case CFG_NULL:
        cfg_buf_puts(b, "null");
        break;
    case CFG_SCALAR: {
        char canon[32];
        cfg_put_scalar(b, cfg_canon(n, canon), n->quoted, true);
        break;
    }
    case CFG_SEQ:
        cfg_buf_puts(b, "[");
        for (int i = 0; i < n->n_kid; i++) {
            cfg_buf_puts(b, i ? ", " : "");
            cfg_dump_flow(b, n->kid[i]);
        }
        cfg_buf_puts(b, "]");
        break;
    case CFG_MAP: {
        const struct cfg_node **kid = cfg_in_order(n);
        cfg_buf_puts(b, "{");
        for (int i = 0; i < n->n_kid; i++) {
            cfg_buf_puts(b, i ? ", " : "");
            cfg_put_scalar(b, kid[i]->key, true, true);
            cfg_buf_puts(b, ": ");
            cfg_dump_flow(b, kid[i]);
        }
        cfg_buf_puts(b, "}");
        free(kid);
        break;
    }
    }
}

static void cfg_indent(struct cfg_buf *b, int indent)
{
    for (int i = 0; i < indent; i++)
        cfg_buf_puts(b, " ");
}

static void cfg_dump_block(struct cfg_buf *b, const struct cfg_node *map, int indent)
{
    const struct cfg_node **kid = cfg_in_order(map);
    for (int i = 0; i < map->n_kid; i++) {
        const struct cfg_node *k = kid[i];
        bool flat = k->type != CFG_MAP || k->n_kid == 0;

        cfg_indent(b, indent);
        cfg_put_scalar(b, k->key, true, false);
        cfg_buf_puts(b, ":");
        for (int j = 0; k->type == CFG_SEQ && j < k->n_kid; j++)
            if (k->kid[j]->type == CFG_MAP || k->kid[j]->type == CFG_SEQ)
                flat = false;
        if (flat && k->type == CFG_SCALAR) {
            cfg_buf_puts(b, " ");
            char canon[32];
            cfg_put_scalar(b, cfg_canon(k, canon), k->quoted, false);
            cfg_buf_puts(b, "\n");
        } else if (flat) {
            cfg_buf_puts(b, " ");
            cfg_dump_flow(b, k);
            cfg_buf_puts(b, "\n");
        } else if (k->type == CFG_MAP) {
            cfg_buf_puts(b, "\n");
            cfg_dump_block(b, k, indent + 2);
        } else {
            cfg_buf_puts(b, "\n");
            for (int j = 0; j < k->n_kid; j++) {
                cfg_indent(b, indent + 2);
                cfg_buf_puts(b, "- ");
                cfg_dump_flow(b, k->kid[j]);
                cfg_buf_puts(b, "\n");
            }
        }
    }
    free(kid);
}

char *cfg_dump(const struct cfg *c)
{
    struct cfg_buf b = {0};

    SAMX_ASSERT(c->root);
    if (c->root->n_kid == 0)
        cfg_buf_puts(&b, "{}\n");
    else
        cfg_dump_block(&b, c->root, 0);
    return b.s;
}

const char *cfg_fmt_num(char buf[32], double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, 32, "%.0f", v);
        return buf;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}
