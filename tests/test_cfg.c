/* test_cfg: loading, typed getters and their defaults, the resolved dump, unknown-key and type
 * errors with file:line:col, overrides, and number formatting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "tap.h"

static const char *const activations[] = {"relu", "tanh", "gelu", NULL};

/* Checks that a call failed with exactly the config error `want`. */
static void check_err(int rc, const struct err *e, const char *want, const char *name)
{
    bool good = rc == -1 && e->status == SAMX_EXIT_CONFIG && strcmp(e->msg, want) == 0;
    ok(good, "%s", name);
    if (!good)
        diag("got rc %d status %d '%s', want '%s'", rc, e->status, e->msg, want);
}

static void check_str(const char *got, const char *want, const char *name)
{
    bool good = got && want ? strcmp(got, want) == 0 : got == want;
    ok(good, "%s", name);
    if (!good)
        diag("got '%s', want '%s'", got ? got : "(null)", want ? want : "(null)");
}

static void load_fails(const char *yaml, const char *want, const char *name)
{
    struct cfg c;
    struct err e = {0};
    check_err(cfg_load_string(&c, "x.yaml", yaml, &e), &e, want, name);
    ok(c.root == NULL, "%s: nothing left loaded", name);
    cfg_free(&c);
}

static void load(struct cfg *c, const char *yaml)
{
    struct err e = {0};
    if (cfg_load_string(c, "x.yaml", yaml, &e) < 0) {
        diag("unexpected load error: %s", e.msg);
        abort();
    }
}

/* Reads the keys of the example config the way plugins would, defaults included. */
static int read_example(struct cfg *c, struct err *e)
{
    struct cfg_node *model, *train, *opt, *base, *data;
    const char *str;
    long hidden[8], seed, epochs, batch;
    double lr, mom, rho, wd, clip, widths[4];
    static const double def_widths[] = {0.5, 0.25};
    int n_hidden, n_widths, act;
    bool shuffle, nesterov, has_clip;

    if (cfg_str(c->root, "name", "run", &str, e) < 0 || cfg_int(c->root, "seed", 0, &seed, e) < 0)
        return -1;
    if (!(model = cfg_map(c->root, "model", e)) || cfg_str(model, "name", "mlp", &str, e) < 0 ||
        cfg_int_list(model, "hidden", (const long[]){64}, 1, hidden, 8, &n_hidden, e) < 0 ||
        cfg_enum(model, "activation", activations, 0, &act, e) < 0 ||
        cfg_num_list(model, "widths", def_widths, 2, widths, 4, &n_widths, e) < 0)
        return -1;
    if (!(train = cfg_map(c->root, "train", e)) || cfg_int(train, "epochs", 1, &epochs, e) < 0 ||
        cfg_num(train, "lr", 0.1, &lr, e) < 0 ||
        cfg_bool(train, "shuffle", true, &shuffle, e) < 0 ||
        cfg_int(train, "batch_size", 128, &batch, e) < 0 ||
        cfg_num(train, "momentum", 0.9, &mom, e) < 0 ||
        cfg_bool(train, "nesterov", true, &nesterov, e) < 0)
        return -1;
    if (!(opt = cfg_map(c->root, "optimizer", e)) || cfg_str(opt, "name", "sgd", &str, e) < 0 ||
        cfg_num(opt, "rho", 0.05, &rho, e) < 0 || !(base = cfg_map(opt, "base", e)) ||
        cfg_str(base, "name", "sgd", &str, e) < 0 ||
        cfg_num(base, "weight_decay", 5e-4, &wd, e) < 0 ||
        cfg_num_opt(base, "clip", &clip, &has_clip, e) < 0)
        return -1;
    if (!(data = cfg_map(c->root, "data", e)) ||
        cfg_str(data, "name", "fashion-mnist", &str, e) < 0 ||
        cfg_str(data, "dir", NULL, &str, e) < 0)
        return -1;
    return 0;
}

static const char example[] = "name: fmnist\n"
                              "seed: 3\n"
                              "model:\n"
                              "  name: mlp\n"
                              "  hidden: [512, 256]\n"
                              "  activation: tanh\n"
                              "train:\n"
                              "  epochs: 10\n"
                              "  lr: 5.0e-4   # read as a number: dumped as 0.0005\n"
                              "  shuffle: false\n"
                              "optimizer:\n"
                              "  name: sam\n"
                              "  rho:\n"
                              "  base:\n"
                              "    name: sgd\n";

static const char example_resolved[] = "name: fmnist\n"
                                       "seed: 3\n"
                                       "model:\n"
                                       "  name: mlp\n"
                                       "  hidden: [512, 256]\n"
                                       "  activation: tanh\n"
                                       "  widths: [0.5, 0.25]\n"
                                       "train:\n"
                                       "  epochs: 10\n"
                                       "  lr: 0.0005\n"
                                       "  shuffle: false\n"
                                       "  batch_size: 128\n"
                                       "  momentum: 0.9\n"
                                       "  nesterov: true\n"
                                       "optimizer:\n"
                                       "  name: sam\n"
                                       "  rho: 0.05\n"
                                       "  base:\n"
                                       "    name: sgd\n"
                                       "    weight_decay: 0.0005\n"
                                       "    clip: null\n"
                                       "data:\n"
                                       "  name: fashion-mnist\n"
                                       "  dir: null\n";

static void test_getters(void)
{
    struct cfg c;
    struct err e = {0};
    struct cfg_node *model, *train, *opt;
    const char *str;
    long seed, epochs, batch, hidden[4];
    double lr, rho, mom, widths[4];
    int n, act;
    bool shuffle, nesterov;

    load(&c, example);
    ok(cfg_str(c.root, "name", "run", &str, &e) == 0 && strcmp(str, "fmnist") == 0, "str");
    ok(cfg_int(c.root, "seed", 0, &seed, &e) == 0 && seed == 3, "int");
    model = cfg_map(c.root, "model", &e);
    ok(model && model->type == CFG_MAP, "map");
    ok(cfg_int_list(model, "hidden", NULL, 0, hidden, 4, &n, &e) == 0 && n == 2 &&
           hidden[0] == 512 && hidden[1] == 256,
       "int list");
    ok(cfg_enum(model, "activation", activations, 0, &act, &e) == 0 && act == 1, "enum");
    ok(cfg_num_list(model, "widths", (const double[]){0.5, 0.25}, 2, widths, 4, &n, &e) == 0 &&
           n == 2 && widths[0] == 0.5 && widths[1] == 0.25,
       "num list default");
    train = cfg_map(c.root, "train", &e);
    ok(cfg_int(train, "epochs", 1, &epochs, &e) == 0 && epochs == 10, "int in a section");
    approx(cfg_num(train, "lr", 0.1, &lr, &e) == 0 ? lr : -1, 5e-4, 0, 0, "num 5.0e-4");
    ok(cfg_bool(train, "shuffle", true, &shuffle, &e) == 0 && !shuffle, "bool false");
    ok(cfg_int(train, "batch_size", 128, &batch, &e) == 0 && batch == 128, "int default");
    ok(cfg_num(train, "momentum", 0.9, &mom, &e) == 0 && mom == 0.9, "num default");
    ok(cfg_bool(train, "nesterov", true, &nesterov, &e) == 0 && nesterov, "bool default");
    opt = cfg_map(c.root, "optimizer", &e);
    ok(cfg_num(opt, "rho", 0.05, &rho, &e) == 0 && rho == 0.05, "empty value takes the default");
    ok(cfg_child(opt, "rho")->type == CFG_SCALAR, "null replaced by the default in the tree");
    ok(cfg_child(c.root, "nope") == NULL, "cfg_child of a missing key");
    ok(cfg_check_unused(&c, &e) == -1, "keys not read yet are unknown");
    cfg_free(&c);
    ok(c.root == NULL, "cfg_free clears the struct");
}

static void test_dump(void)
{
    struct cfg c, again;
    struct err e = {0};
    char *dump, *dump2;

    load(&c, example);
    ok(read_example(&c, &e) == 0, "read the example");
    ok(cfg_check_unused(&c, &e) == 0, "every key read");
    dump = cfg_dump(&c);
    check_str(dump, example_resolved, "dump writes every default");
    load(&again, dump);
    ok(read_example(&again, &e) == 0 && cfg_check_unused(&again, &e) == 0, "dump reads back");
    dump2 = cfg_dump(&again);
    check_str(dump2, dump, "dump -> load -> dump is stable");
    free(dump);
    free(dump2);
    cfg_free(&again);
    cfg_free(&c);

    load(&c, "a: 1\n");
    cfg_free(&c);
    load(&c, "{}\n");
    dump = cfg_dump(&c);
    check_str(dump, "{}\n", "empty mapping dumps as {}");
    free(dump);
    cfg_free(&c);
}

static const char tricky[] = "a: '5'\n"
                             "b: \"yes\"\n"
                             "c: \"x: y\"\n"
                             "d: '#c'\n"
                             "e: ''\n"
                             "f: \"line1\\nline2\\t\\\"q\\\"\"\n"
                             "g: [x, 'y,z', '7', \"a'b\", -x]\n"
                             "h:\n"
                             "  - {k: 1, 'k 2': [1, 2], 'c:d': x}\n"
                             "  - [1, [2, 3]]\n"
                             "  - plain, with comma\n"
                             "  - null\n"
                             "\"key: odd\": 1\n"
                             "'null': 2\n"
                             "i: it's\n"
                             "j: ' lead'\n"
                             "k: 5.0e-4\n"
                             "l: -3\n"
                             "m: .5\n"
                             "n: ~\n"
                             "o: {}\n"
                             "p: []\n"
                             "q: |\n"
                             "  block\n"
                             "  text\n"
                             "r: 'true'\n"
                             "s: '-'\n"
                             "t: a #b\n"
                             "u: 'a #b'\n"
                             "v: ---x\n";

static const char tricky_dump[] = "a: '5'\n"
                                  "b: 'yes'\n"
                                  "c: 'x: y'\n"
                                  "d: '#c'\n"
                                  "e: ''\n"
                                  "f: \"line1\\nline2\\t\\\"q\\\"\"\n"
                                  "g: [x, 'y,z', '7', a'b, -x]\n"
                                  "h:\n"
                                  "  - {k: 1, k 2: [1, 2], 'c:d': x}\n"
                                  "  - [1, [2, 3]]\n"
                                  "  - 'plain, with comma'\n"
                                  "  - null\n"
                                  "'key: odd': 1\n"
                                  "'null': 2\n"
                                  "i: it's\n"
                                  "j: ' lead'\n"
                                  "k: 5.0e-4\n"
                                  "l: -3\n"
                                  "m: .5\n"
                                  "n: null\n"
                                  "o: {}\n"
                                  "p: []\n"
                                  "q: \"block\\ntext\\n\"\n"
                                  "r: 'true'\n"
                                  "s: '-'\n"
                                  "t: a\n"
                                  "u: 'a #b'\n"
                                  "v: '---x'\n";

static void test_quoting(void)
{
    struct cfg c, again;
    struct err e = {0};
    const char *str;
    char *dump, *dump2;
    long v;
    double d;

    load(&c, tricky);
    dump = cfg_dump(&c);
    check_str(dump, tricky_dump, "strings are quoted only where needed");
    load(&again, dump);
    dump2 = cfg_dump(&again);
    check_str(dump2, dump, "quoted dump is stable");
    ok(cfg_str(again.root, "a", NULL, &str, &e) == 0 && strcmp(str, "5") == 0 &&
           cfg_child(again.root, "a")->quoted,
       "quoted number stays a string");
    check_err(cfg_int(again.root, "a", 0, &v, &e), &e,
              "x.yaml:1:4: 'a' must be an integer, got the string '5'", "quoted int rejected");
    ok(cfg_str(again.root, "f", NULL, &str, &e) == 0 && strcmp(str, "line1\nline2\t\"q\"") == 0,
       "escapes survive");
    ok(cfg_str(again.root, "q", NULL, &str, &e) == 0 && strcmp(str, "block\ntext\n") == 0,
       "block scalar survives");
    ok(cfg_child(again.root, "key: odd") && cfg_child(again.root, "null"), "odd keys survive");
    ok(cfg_num(again.root, "k", 0, &d, &e) == 0 && d == 5e-4, "number spelling survives");
    ok(cfg_num(again.root, "m", 0, &d, &e) == 0 && d == 0.5, ".5 is a number");
    ok(cfg_int(again.root, "l", 0, &v, &e) == 0 && v == -3, "negative int");
    ok(cfg_child(again.root, "n")->type == CFG_NULL, "null survives");
    ok(cfg_str(again.root, "n", NULL, &str, &e) == 0 && str == NULL, "null string is NULL");
    ok(cfg_str(again.root, "b", NULL, &str, &e) == 0 && strcmp(str, "yes") == 0, "yes is text");
    {
        struct cfg_node *h = cfg_child(again.root, "h");
        char *path = cfg_path(cfg_child(h->kid[0], "k 2")->kid[1]);
        check_str(path, "h[0].k 2[1]", "path through sequences");
        free(path);
    }
    free(dump);
    free(dump2);
    cfg_free(&again);
    cfg_free(&c);
}

static void test_unknown(void)
{
    struct cfg c;
    struct err e = {0};
    struct cfg_node *opt;
    const char *str;
    double rho;
    long v;

    load(&c, "optimizer:\n  name: sam\n  rhoo: 0.1\n");
    opt = cfg_map(c.root, "optimizer", &e);
    cfg_str(opt, "name", "sgd", &str, &e);
    cfg_num(opt, "rho", 0.05, &rho, &e);
    check_err(cfg_check_unused(&c, &e), &e,
              "x.yaml:3:3: unknown key 'optimizer.rhoo' (did you mean 'rho'?)",
              "unknown key with suggestion");
    cfg_free(&c);

    load(&c, "optimizer:\n  name: sam\n  zzzzzz: 0.1\n");
    opt = cfg_map(c.root, "optimizer", &e);
    cfg_str(opt, "name", "sgd", &str, &e);
    cfg_num(opt, "rho", 0.05, &rho, &e);
    check_err(cfg_check_unused(&c, &e), &e, "x.yaml:3:3: unknown key 'optimizer.zzzzzz'",
              "unknown key, nothing close");
    cfg_free(&c);

    load(&c, "lr: 1\nwd: 2\n");
    cfg_int(c.root, "lr", 0, &v, &e);
    check_err(cfg_check_unused(&c, &e), &e, "x.yaml:2:1: unknown key 'wd'",
              "two-letter keys are not close");
    cfg_free(&c);

    load(&c, "seed: 1\nmodle:\n  name: mlp\nmodel: {}\n");
    cfg_int(c.root, "seed", 0, &v, &e);
    cfg_map(c.root, "model", &e);
    check_err(cfg_check_unused(&c, &e), &e,
              "x.yaml:2:1: unknown key 'modle' (did you mean 'model'?)",
              "unread section reported at its key");
    cfg_free(&c);

    load(&c, "a:\n  b: 1\n  c: 2\n");
    cfg_int(cfg_child(c.root, "a"), "b", 0, &v, &e);
    check_err(cfg_check_unused(&c, &e), &e, "x.yaml:3:3: unknown key 'a.c'",
              "reading through cfg_child marks the section");
    cfg_free(&c);

    load(&c, "sched:\n  schedule: cosine\n  start: 1\n");
    ok(cfg_take(c.root, "sched") != NULL && cfg_check_unused(&c, &e) == 0,
       "cfg_take marks the subtree");
    ok(cfg_take(c.root, "missing") == NULL, "cfg_take of a missing key");
    cfg_free(&c);

    load(&c, "sched:\n  schedule: cosine\n  start: 1\n");
    cfg_mark(cfg_child(c.root, "sched"));
    check_err(cfg_check_unused(&c, &e), &e, "x.yaml:2:3: unknown key 'sched.schedule'",
              "cfg_mark marks only the node");
    cfg_free(&c);
}

static void test_types(void)
{
    struct cfg c;
    struct err e = {0};
    struct cfg_node *t;
    long v, list[2];
    double d, dl[2];
    bool b, present;
    int n, act;
    const char *str;

    load(&c, "train:\n"
             "  epochs: ten\n"
             "  half: 1.5\n"
             "  quoted: \"10\"\n"
             "  huge: 99999999999999999999\n"
             "  lr: abc\n"
             "  hex: 0x10\n"
             "  inf: .inf\n"
             "  big: 1e999\n"
             "  shuffle: yes\n"
             "  act: sigmoid\n"
             "  hidden: [512, abc]\n"
             "  one: 512\n"
             "  many: [1, 2, 3]\n"
             "  list: [1]\n"
             "  nested: {a: 1}\n"
             "  plus: +7\n"
             "  exp: 1E3\n"
             "  true_: True\n"
             "  clip: 2.5\n"
             "  noclip: ~\n");
    t = cfg_map(c.root, "train", &e);
    check_err(cfg_int(t, "epochs", 1, &v, &e), &e,
              "x.yaml:2:11: 'train.epochs' must be an integer, got 'ten'", "int given 'ten'");
    check_err(cfg_int(t, "half", 1, &v, &e), &e,
              "x.yaml:3:9: 'train.half' must be an integer, got '1.5'", "int given 1.5");
    check_err(cfg_int(t, "quoted", 1, &v, &e), &e,
              "x.yaml:4:11: 'train.quoted' must be an integer, got the string '10'",
              "int given a quoted number");
    check_err(cfg_int(t, "huge", 1, &v, &e), &e,
              "x.yaml:5:9: 'train.huge' must be an integer from -9223372036854775808 to "
              "9223372036854775807, got '99999999999999999999'",
              "int out of range");
    check_err(cfg_num(t, "lr", 1, &d, &e), &e, "x.yaml:6:7: 'train.lr' must be a number, got 'abc'",
              "num given 'abc'");
    check_err(cfg_num(t, "hex", 1, &d, &e), &e,
              "x.yaml:7:8: 'train.hex' must be a number, got '0x10'", "hex is not a number");
    check_err(cfg_num(t, "inf", 1, &d, &e), &e,
              "x.yaml:8:8: 'train.inf' must be a number, got '.inf'", "inf is not a number");
    check_err(cfg_num(t, "big", 1, &d, &e), &e,
              "x.yaml:9:8: 'train.big' must be a finite number, got '1e999'", "overflow");
    check_err(cfg_bool(t, "shuffle", true, &b, &e), &e,
              "x.yaml:10:12: 'train.shuffle' must be true or false, got 'yes'", "bool given yes");
    check_err(cfg_enum(t, "act", activations, 0, &act, &e), &e,
              "x.yaml:11:8: 'train.act' must be one of relu, tanh, gelu, got 'sigmoid'",
              "enum bad choice");
    check_err(cfg_int_list(t, "hidden", NULL, 0, list, 2, &n, &e), &e,
              "x.yaml:12:17: 'train.hidden[1]' must be an integer, got 'abc'",
              "list of non-numbers");
    check_err(cfg_int_list(t, "one", NULL, 0, list, 2, &n, &e), &e,
              "x.yaml:13:8: 'train.one' must be a list of integers, got '512'",
              "list given a scalar");
    check_err(cfg_int_list(t, "many", NULL, 0, list, 2, &n, &e), &e,
              "x.yaml:14:9: 'train.many' must have at most 2 items, got 3", "list too long");
    check_err(cfg_num_list(t, "nested", NULL, 0, dl, 2, &n, &e), &e,
              "x.yaml:16:11: 'train.nested' must be a list of numbers, got a mapping",
              "num list given a mapping");
    check_err(cfg_int(t, "list", 0, &v, &e), &e,
              "x.yaml:15:9: 'train.list' must be an integer, got a list", "int given a list");
    check_err(cfg_str(t, "list", NULL, &str, &e), &e,
              "x.yaml:15:9: 'train.list' must be a string, got a list", "str given a list");
    ok(cfg_map(t, "epochs", &e) == NULL, "map given a scalar fails");
    check_str(e.msg, "x.yaml:2:11: 'train.epochs' must be a mapping, got 'ten'", "its message");
    ok(cfg_int(t, "plus", 0, &v, &e) == 0 && v == 7, "int with a plus sign");
    ok(cfg_num(t, "exp", 0, &d, &e) == 0 && d == 1000, "1E3 is a number");
    ok(cfg_num(t, "plus", 0, &d, &e) == 0 && d == 7, "an integer is a number");
    ok(cfg_bool(t, "true_", false, &b, &e) == 0 && b, "True is a bool");
    ok(cfg_num_opt(t, "clip", &d, &present, &e) == 0 && present && d == 2.5, "num_opt present");
    ok(cfg_num_opt(t, "noclip", &d, &present, &e) == 0 && !present, "num_opt null");
    ok(cfg_num_opt(t, "gone", &d, &present, &e) == 0 && !present &&
           cfg_child(t, "gone")->type == CFG_NULL,
       "num_opt missing inserts null");
    check_err(cfg_num_opt(t, "lr", &d, &present, &e), &e,
              "x.yaml:6:7: 'train.lr' must be a number, got 'abc'", "num_opt given 'abc'");
    cfg_free(&c);
}

static void test_malformed(void)
{
    struct cfg c;
    struct err e = {0};
    char path[] = "/tmp/test_cfg_XXXXXX";
    int fd;
    long v;

    load_fails("a: [1, 2\nb: 3\n", "x.yaml:2:2: did not find expected ',' or ']'",
               "unclosed flow sequence");
    load_fails("a: 1\n b: 2\n", "x.yaml:2:3: mapping values are not allowed in this context",
               "bad indentation");
    load_fails("a:\n\tb: 1\n", "x.yaml:2:1: tab character where spaces are expected", "tab");
    load_fails("a: 1\nb:\n  c: 1\n  c: 2\n", "x.yaml:4:3: duplicate key 'b.c'", "duplicate key");
    load_fails("a: 1\na: 1\n", "x.yaml:2:1: duplicate key 'a'", "duplicate top-level key");
    load_fails("a: &x 1\nb: *x\n", "x.yaml:1:4: anchors and aliases are not supported", "anchor");
    load_fails("a: !!int 1\n", "x.yaml:1:4: tags are not supported", "tag");
    load_fails("a: 1\n---\nb: 2\n", "x.yaml:2:1: more than one yaml document", "two documents");
    load_fails("", "x.yaml: empty config", "empty file");
    load_fails("# nothing\n\n", "x.yaml: empty config", "comments only");
    load_fails("- 1\n- 2\n", "x.yaml:1:1: top level must be a mapping, got a list",
               "top-level list");
    load_fails("hello\n", "x.yaml:1:1: top level must be a mapping, got 'hello'",
               "top-level scalar");
    load_fails("[a]: 1\n", "x.yaml:1:1: keys must be strings", "non-scalar key");
    load_fails("a: \"\\0\"\n", "x.yaml:1:4: nul character in a string", "nul in a string");

    check_err(cfg_load(&c, "/nonexistent/samx.yaml", &e), &e,
              "cannot read '/nonexistent/samx.yaml': No such file or directory", "unreadable file");
    cfg_free(&c);
    check_err(cfg_load(&c, "/", &e), &e, "cannot read '/': Is a directory", "directory");
    cfg_free(&c);

    fd = mkstemp(path);
    if (fd < 0 || write(fd, "seed: 7\nx: [\n", 13) != 13) {
        skip("cannot write a temporary file");
    } else {
        char want[128];
        snprintf(want, sizeof want, "%s:3:1: did not find expected node content", path);
        check_err(cfg_load(&c, path, &e), &e, want, "file name in parse errors");
        cfg_free(&c);
        if (ftruncate(fd, 8) == 0 && cfg_load(&c, path, &e) == 0) {
            ok(cfg_int(c.root, "seed", 0, &v, &e) == 0 && v == 7, "cfg_load reads a file");
            ok(strcmp(c.path, path) == 0, "cfg_load keeps the path");
        } else {
            ok(false, "cfg_load reads a file: %s", e.msg);
        }
        cfg_free(&c);
    }
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
}

static void override_fails(const char *assignment, const char *want, const char *name)
{
    struct cfg c;
    struct err e = {0};
    load(&c, example);
    check_err(cfg_override(&c, assignment, &e), &e, want, name);
    cfg_free(&c);
}

static void test_override(void)
{
    struct cfg c;
    struct err e = {0};
    struct cfg_node *train, *model, *opt, *rho, *eval;
    long v, hidden[4];
    double d;
    int n;
    char *dump;

    load(&c, example);
    ok(cfg_override(&c, "train.epochs=20", &e) == 0, "scalar override");
    ok(cfg_override(&c, "model.hidden=[256,128]", &e) == 0, "list override");
    ok(cfg_override(&c, "optimizer.rho={schedule: cosine, start: 0.1, end: 0.01}", &e) == 0,
       "mapping override");
    ok(cfg_override(&c, "eval.sharpness.rho=0.02", &e) == 0, "override creates sections");
    ok(cfg_override(&c, "seed=", &e) == 0, "empty override value");
    ok(cfg_override(&c, "train.epochs=30", &e) == 0, "later override wins");
    train = cfg_map(c.root, "train", &e);
    ok(cfg_int(train, "epochs", 1, &v, &e) == 0 && v == 30, "overridden int");
    model = cfg_map(c.root, "model", &e);
    ok(cfg_int_list(model, "hidden", NULL, 0, hidden, 4, &n, &e) == 0 && n == 2 &&
           hidden[0] == 256 && hidden[1] == 128,
       "overridden list");
    opt = cfg_map(c.root, "optimizer", &e);
    rho = cfg_map(opt, "rho", &e);
    ok(rho && cfg_num(rho, "start", 0, &d, &e) == 0 && d == 0.1, "overridden mapping");
    check_str(cfg_child(rho, "schedule")->str, "cosine", "mapping override keeps text");
    eval = cfg_map(cfg_map(c.root, "eval", &e), "sharpness", &e);
    ok(eval && cfg_num(eval, "rho", 0, &d, &e) == 0 && d == 0.02, "created section reads");
    ok(cfg_int(c.root, "seed", 5, &v, &e) == 0 && v == 5, "empty override is null");
    check_err(cfg_check_unused(&c, &e), &e, "x.yaml:1:1: unknown key 'name'",
              "keys from the file still count");
    dump = cfg_dump(&c);
    /* keys in the order this test read them, those it never read (lr, name) as written */
    check_str(dump,
              "train:\n"
              "  epochs: 30\n"
              "  lr: 5.0e-4\n"
              "  shuffle: false\n"
              "model:\n"
              "  hidden: [256, 128]\n"
              "  name: mlp\n"
              "  activation: tanh\n"
              "optimizer:\n"
              "  rho:\n"
              "    start: 0.1\n"
              "    schedule: cosine\n"
              "    end: 0.01\n"
              "  name: sam\n"
              "  base:\n"
              "    name: sgd\n"
              "eval:\n"
              "  sharpness:\n"
              "    rho: 0.02\n"
              "seed: 5\n"
              "name: fmnist\n",
              "overrides dump in place");
    free(dump);
    cfg_free(&c);

    load(&c, example);
    ok(cfg_override(&c, "optimizer.rhoo=0.1", &e) == 0, "override of an unknown key loads");
    ok(read_example(&c, &e) == 0, "read with the override");
    check_err(cfg_check_unused(&c, &e), &e,
              "override 'optimizer.rhoo=0.1': unknown key 'optimizer.rhoo' (did you mean 'rho'?)",
              "unknown override key names the override");
    cfg_free(&c);

    load(&c, example);
    ok(cfg_override(&c, "optimiser.rho=0.1", &e) == 0, "override of an unknown section loads");
    ok(read_example(&c, &e) == 0, "read with the section override");
    check_err(cfg_check_unused(&c, &e), &e,
              "override 'optimiser.rho=0.1': unknown key 'optimiser' (did you mean 'optimizer'?)",
              "unknown override section");
    cfg_free(&c);

    load(&c, example);
    ok(cfg_override(&c, "train.epochs=ten", &e) == 0, "override with a bad value loads");
    check_err(read_example(&c, &e), &e,
              "override 'train.epochs=ten': 'train.epochs' must be an integer, got 'ten'",
              "type error names the override");
    cfg_free(&c);

    load(&c, "optimizer:\n  base:\n");
    ok(cfg_override(&c, "optimizer.base.name=adamw", &e) == 0 &&
           strcmp(cfg_child(cfg_child(cfg_child(c.root, "optimizer"), "base"), "name")->str,
                  "adamw") == 0,
       "override through a null section");
    cfg_free(&c);

    override_fails("noequals", "override 'noequals': expected key=value", "no '='");
    override_fails("=5", "override '=5': missing key before '='", "no key");
    override_fails("a..b=1",
                   "override 'a..b=1': invalid key 'a..b' (names of letters, digits, '_' and '-' "
                   "joined by '.')",
                   "empty segment");
    override_fails("a.b.=1",
                   "override 'a.b.=1': invalid key 'a.b.' (names of letters, digits, '_' and '-' "
                   "joined by '.')",
                   "trailing dot");
    override_fails("a b=1",
                   "override 'a b=1': invalid key 'a b' (names of letters, digits, '_' and '-' "
                   "joined by '.')",
                   "space in key");
    override_fails("model.name.x=1", "override 'model.name.x=1': 'model.name' is not a mapping",
                   "intermediate is a scalar");
    override_fails("model.hidden=[1,",
                   "override 'model.hidden=[1,': did not find expected node content",
                   "malformed value");
    override_fails("seed=*x", "override 'seed=*x': anchors and aliases are not supported",
                   "alias in a value");

    /* A path of 64 keys holds a scalar in 64 mappings, a file's deepest nesting; the dump loads
     * back. One level more (a 65th key, or a list as the value) is refused. */
    char deep[256] = "a";
    for (int i = 1; i < 64; i++)
        strcat(deep, ".a");
    size_t nd = strlen(deep);
    strcpy(deep + nd, "=1");
    e = (struct err){0};
    load(&c, example);
    ok(cfg_override(&c, deep, &e) == 0, "a path of 64 keys: %s", e.msg);
    dump = cfg_dump(&c);
    struct cfg back;
    ok(cfg_load_string(&back, "dump.yaml", dump, &e) == 0,
       "a path of 64 keys dumps to text that loads back: %s", e.msg);
    cfg_free(&back);
    free(dump);
    cfg_free(&c);
    strcpy(deep + nd, "=[1]");
    load(&c, example);
    ok(cfg_override(&c, deep, &e) < 0 && strstr(e.msg, "': nesting is too deep (more than 64"),
       "a list at a path of 64 keys is too deep: %s", e.msg);
    cfg_free(&c);
    strcpy(deep + nd, ".a=1");
    load(&c, example);
    ok(cfg_override(&c, deep, &e) < 0 && strstr(e.msg, "': nesting is too deep (more than 64"),
       "a path of 65 keys is too deep: %s", e.msg);
    cfg_free(&c);
}

static void test_set_scalar(void)
{
    struct cfg c;
    struct err e = {0};
    struct cfg_node *n;
    char *dump;

    load(&c, "lr: 0.1\n");
    n = cfg_set_scalar(c.root, "lr", "{not: parsed}");
    ok(n == cfg_child(c.root, "lr") && n->used, "set_scalar replaces in place");
    cfg_set_scalar(c.root, "warmup", "0");
    ok(cfg_check_unused(&c, &e) == 0, "set scalars count as used");
    dump = cfg_dump(&c);
    check_str(dump, "lr: '{not: parsed}'\nwarmup: 0\n", "set scalars dump");
    free(dump);
    cfg_free(&c);
}

/* The dump is a run's identity: the same values, however written (key order, a default given
 * or left out, number and bool spellings, overrides), dump to the same text. */
static void test_canonical(void)
{
    static const char *const spellings[][2] = {
        {"name: fmnist\nseed: 3\nmodel: {name: mlp, hidden: [512, 256], activation: tanh}\n"
         "train: {epochs: 10, lr: 5.0e-4, shuffle: false}\n"
         "optimizer: {name: sam, base: {name: sgd}}\n",
         NULL},
        {"optimizer: {base: {weight_decay: 5e-4, name: sgd}, rho: .05, name: sam}\n"
         "train: {shuffle: False, nesterov: TRUE, lr: 0.00050, momentum: 9e-1, epochs: +10}\n"
         "model: {activation: tanh, hidden: [512, 256], widths: [5e-1, 0.250]}\n"
         "seed: 03\nname: fmnist\n",
         NULL},
        {"name: fmnist\nmodel: {name: mlp, hidden: [1]}\ntrain: {epochs: 1}\n"
         "optimizer: {name: sgd}\n",
         "model.hidden=[512,256]|seed=3|train.epochs=+10|train.lr=5E-4|train.shuffle=false|"
         "model.activation=tanh|optimizer.name=sam|optimizer.base.name=sgd"},
    };
    char *first = NULL;
    for (size_t k = 0; k < sizeof spellings / sizeof spellings[0]; k++) {
        struct cfg c;
        struct err e = {0};
        load(&c, spellings[k][0]);
        bool good = true;
        char over[512];
        snprintf(over, sizeof over, "%s", spellings[k][1] ? spellings[k][1] : "");
        for (char *a = strtok(over, "|"); a && good; a = strtok(NULL, "|"))
            good = cfg_override(&c, a, &e) == 0;
        good = good && read_example(&c, &e) == 0 && cfg_check_unused(&c, &e) == 0;
        char *dump = good ? cfg_dump(&c) : NULL;
        if (!first)
            first = dump;
        ok(good && dump, "spelling %zu reads (%s)", k, good ? "" : e.msg);
        char name[64];
        snprintf(name, sizeof name, "spelling %zu dumps like spelling 0", k);
        if (k)
            check_str(dump, first, name);
        if (dump != first)
            free(dump);
        cfg_free(&c);
    }
    free(first);
}

static void test_fmt_num(void)
{
    static const double vals[] = {
        0.05, 1e-8, 3, -2.5, 1e20, 5e-4, -0.0, 1e15, 4.9e-324, 1.7976931348623157e308, 123456.789};
    char buf[32];

    check_str(cfg_fmt_num(buf, 0.05), "0.05", "fmt 0.05");
    check_str(cfg_fmt_num(buf, 1e-8), "1e-08", "fmt 1e-8");
    check_str(cfg_fmt_num(buf, 3), "3", "fmt 3");
    check_str(cfg_fmt_num(buf, 5e-4), "0.0005", "fmt 5e-4");
    check_str(cfg_fmt_num(buf, 0.1 + 0.2), "0.30000000000000004", "fmt 0.1+0.2");
    check_str(cfg_fmt_num(buf, 1e14), "100000000000000", "fmt 1e14 without exponent");
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        cfg_fmt_num(buf, vals[i]);
        ok(strtod(buf, NULL) == vals[i], "fmt %.17g -> %s round-trips", vals[i], buf);
    }
    /* these need all 17 digits */
    ok(strtod(cfg_fmt_num(buf, 0.1 + 0.2), NULL) == 0.1 + 0.2, "fmt 0.1+0.2 round-trips");
    ok(strtod(cfg_fmt_num(buf, 1.0 / 3), NULL) == 1.0 / 3, "fmt 1/3 round-trips");
}

int main(void)
{
    test_getters();
    test_dump();
    test_quoting();
    test_unknown();
    test_types();
    test_malformed();
    test_override();
    test_set_scalar();
    test_canonical();
    test_fmt_num();
    return done();
}
