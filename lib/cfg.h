/* cfg.h: the strict YAML config tree.
 *
 * A config is one YAML file (read with libyaml's document API) plus command-line overrides
 * `a.b.c=value`, held as a tree of nodes. Every node remembers where it came from (file, line,
 * column, 1-based; overrides say "override 'a.b=v'" instead of a file).
 *
 * Getters read one key of a mapping, check its type, mark it used and, when it is missing,
 * insert the default into the tree. So once every plugin has read its keys, the tree IS the
 * resolved config: cfg_dump() prints it with every default written out, in a form that loads
 * back to the same values, each number and bool in one spelling whatever the input's (the dump
 * is the run's identity: its hash names the run directory). Each default is written in exactly one place: the getter call in the
 * plugin that owns the key.
 *
 * After all plugins have read their keys, cfg_check_unused() reports the first key nobody read
 * as an error at its file:line:column, suggesting the closest key that was read in the same
 * mapping ("did you mean 'rho'?").
 *
 * Errors are config errors (exit status 2) and read
 *     sam.yaml:12:5: unknown key 'optimizer.rhoo' (did you mean 'rho'?)
 *     sam.yaml:7:13: 'train.epochs' must be an integer, got 'ten'
 * Keys are at most 200 bytes (the dump writes them as YAML implicit keys, limited to 1024
 * characters once escaped). Every function returning int returns 0 on success and -1 with e set.
 *
 * Ownership: the struct cfg owns every node and string. Pointers returned by getters stay valid
 * until cfg_free.
 */
#ifndef SAMX_CFG_H
#define SAMX_CFG_H

#include <stdbool.h>

#include "err.h"

enum cfg_type { CFG_NULL, CFG_SCALAR, CFG_MAP, CFG_SEQ };

struct cfg_node {
    enum cfg_type type;
    char *key;        /* key in the parent mapping; NULL for the root and sequence items */
    char *str;        /* CFG_SCALAR: the text as written (the dump respells it: read_as) */
    bool quoted;      /* scalar was quoted in YAML: never read as a number or bool */
    char read_as;     /* 'i', 'n' or 'b' once a getter read it as an integer, number or bool:
                         cfg_dump writes that value in one spelling (0.050 and 5e-2 as 0.05) */
    unsigned long read_seq; /* when a getter first asked for it (0: never): cfg_dump writes a
                               mapping's keys in that order, whatever order they were given in */
    const char *file; /* origin: file path or "override 'a.b=v'"; owned by struct cfg */
    int line, col;    /* 1-based origin; 0 for inserted defaults */
    int key_line, key_col; /* where the key was written (unknown-key errors); 0 if not in a file */
    bool used;        /* read by some getter (or an ancestor of a read key) */
    struct cfg_node *parent;
    struct cfg_node **kid; /* CFG_MAP: values in key order as written, then inserted defaults;
                              CFG_SEQ: items */
    int n_kid, cap_kid;
};

struct cfg {
    struct cfg_node *root; /* always a CFG_MAP after cfg_load */
    char *path;            /* the file given to cfg_load */
    char **strings;        /* interned origin strings, freed with the tree */
    int n_strings;
};

/* Load a YAML file whose top level must be a mapping. Duplicate keys, anchors/aliases, tags and
 * multi-document streams are errors. Unreadable file: "cannot read 'x.yaml': No such file...". */
int cfg_load(struct cfg *c, const char *path, struct err *e);
/* Load from a string (tests); `name` is used as the file name in messages. */
int cfg_load_string(struct cfg *c, const char *name, const char *yaml, struct err *e);
void cfg_free(struct cfg *c);

/* Apply "a.b.c=value": value is parsed as YAML flow syntax ("0.1", "[256,128]",
 * "{schedule: cosine, start: 0.1}"). Missing intermediate mappings are created. The replaced
 * subtree is dropped. A malformed assignment is an error. Whether the key exists is checked
 * later, by cfg_check_unused, like any key from the file. */
int cfg_override(struct cfg *c, const char *assignment, struct err *e);

/* Child of a mapping by key, or NULL. Does not mark anything used. */
struct cfg_node *cfg_child(const struct cfg_node *map, const char *key);

/* Typed getters. `map` must be a CFG_MAP node. A key whose value is null (`~`, `null`, empty)
 * counts as missing for getters with a default. */

/* A nested mapping; missing -> an empty mapping is inserted. Error if present and not a mapping. */
struct cfg_node *cfg_map(struct cfg_node *map, const char *key, struct err *e);
/* Integer (decimal, optional sign); rejects 1.5, "abc", quoted scalars, out-of-range values. */
int cfg_int(struct cfg_node *map, const char *key, long def, long *out, struct err *e);
/* Number: integer or float text that strtod consumes fully, also .inf/.nan spellings are rejected. */
int cfg_num(struct cfg_node *map, const char *key, double def, double *out, struct err *e);
/* true/false (YAML 1.2 core spellings true/false/True/False/TRUE/FALSE). */
int cfg_bool(struct cfg_node *map, const char *key, bool def, bool *out, struct err *e);
/* String scalar (numbers are fine as strings). def may be NULL: then a missing key is inserted
 * as null and *out is NULL ("optional, none"). */
int cfg_str(struct cfg_node *map, const char *key, const char *def, const char **out,
            struct err *e);
/* A file or directory path, as cfg_str; a relative one is made absolute against the directory
 * of the config file it was written in (an override's, against the current directory) and
 * written back into the tree, so the resolved config names the same file from anywhere. */
int cfg_str_path(struct cfg_node *map, const char *key, const char *def, const char **out,
                 struct err *e);
/* One of `choices` (NULL-terminated); *out is the index. Error lists the choices. */
int cfg_enum(struct cfg_node *map, const char *key, const char *const *choices, int def,
             int *out, struct err *e);
/* Optional number: missing or null -> *present = false (null inserted); else a number. */
int cfg_num_opt(struct cfg_node *map, const char *key, double *out, bool *present,
                struct err *e);
/* Sequence of integers (flow or block). Missing -> def[0..n_def) inserted. At most max items. */
int cfg_int_list(struct cfg_node *map, const char *key, const long *def, int n_def, long *out,
                 int max, int *n, struct err *e);
/* Sequence of numbers, as cfg_int_list. */
int cfg_num_list(struct cfg_node *map, const char *key, const double *def, int n_def,
                 double *out, int max, int *n, struct err *e);

/* Get the value node of `key`, marking it (and its whole subtree) used, or NULL if missing.
 * For plugins that parse a value themselves (schedules accept a number or a mapping). */
struct cfg_node *cfg_take(struct cfg_node *map, const char *key);
/* Insert (or replace) a scalar default under map[key] with the given text; returns the node. */
struct cfg_node *cfg_set_scalar(struct cfg_node *map, const char *key, const char *text);
/* Mark one node used without its subtree (a schedule mapping whose keys are read one by one). */
void cfg_mark(struct cfg_node *n);

/* Dotted path of a node, e.g. "optimizer.base.lr" (sequence items as "hidden[1]"). malloc'd. */
char *cfg_path(const struct cfg_node *n);
/* Config error at node n: "file:line:col: <message>" (or "file: <message>" for inserted nodes).
 * Returns -1. */
int cfg_err(struct err *e, const struct cfg_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* First unused key in document order -> "file:line:col: unknown key 'a.b' (did you mean 'x'?)".
 * The suggestion is the closest used sibling key by edit distance (at most 2 edits, or a third
 * of the key's length), omitted when none is close. */
int cfg_check_unused(const struct cfg *c, struct err *e);

/* The resolved config as block YAML, keys in tree order, 2-space indent, flow style for
 * sequences of scalars ([512, 512]) and for mappings inside sequences; strings quoted when they
 * would otherwise read back as another type. Loading the text gives the same tree. malloc'd. */
char *cfg_dump(const struct cfg *c);

/* Format a double as the shortest decimal text that reads back to the same double
 * (0.05 -> "0.05", 1e-8 -> "1e-08", 3 -> "3"). buf must hold 32 bytes. */
const char *cfg_fmt_num(char buf[32], double v);

/* Levenshtein distance between a and b (the did-you-mean suggestions). */
size_t cfg_distance(const char *a, const char *b);

#endif
