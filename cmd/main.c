/* samx: command table, option parsing, dispatch, exit statuses. Only this file exits.
 *
 * Exit statuses: 0 done (a diverged run is a result), 1 runtime failure, 2 usage or config
 * error, 75 busy (another samx holds the run directory's lock; EX_TEMPFAIL), 130 interrupted
 * (SIGINT/SIGTERM; samx run saves a checkpoint first). Every non-zero status comes with one
 * line on stderr saying why. Signal handlers are installed first thing, for every command.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "blas.h"
#include "data.h"
#include "dist.h"
#include "measure.h"
#include "model.h"
#include "optim.h"
#include "plot.h"
#include "rundir.h"
#include "schedule.h"
#include "sweep.h"
#include "table.h"
#include "train.h"
#include "tune.h"
#include "version.h"

static const char *const usage_run =
    "usage: samx run CONFIG [KEY=VALUE ...] [-o DIR] [-t THREADS] [--force] [--dry-run] [-q]\n"
    "  KEY=VALUE      override a config key, value in YAML flow syntax (model.hidden=[256,128])\n"
    "  -o DIR         run directory [results/<name>/<run-id>]\n"
    "  -t THREADS     threads [OMP_NUM_THREADS, else the machine's cores]\n"
    "  --force        start over even if DIR holds a completed or interrupted run\n"
    "  --dry-run      resolve and check everything, print what would run, train nothing\n"
    "  -q             errors only: no per-epoch lines, warnings or progress display\n"
    "  On stderr, terminal or not: warnings for degenerate settings, one line per epoch (train,\n"
    "  validation and test loss and accuracy, eval.* measurements, seconds), and a final line\n"
    "  with the status, the result and the run directory; a progress line on a terminal.\n"
    "  The run directory is found by the config's hash: any spelling of the same config (its\n"
    "  own config.yaml included) resumes or skips the same directory. Exit 0 done, 1 runtime\n"
    "  error, 2 config or usage error (a resume with another OpenBLAS core too),\n"
    "  75 busy (another samx is training this run directory), 130 interrupted (resumable).\n";
static const char *const usage_check =
    "usage: samx check CONFIG [KEY=VALUE ...] [-q]\n"
    "  validate CONFIG (reading data file headers, not the examples) and print the resolved\n"
    "  config, every default included;\n"
    "  warnings for degenerate settings on stderr (-q: errors only)\n";
static const char *const usage_sweep =
    "usage: samx sweep SWEEP|CONFIG [KEY=V1,V2 ...] [-j JOBS] [--emit sh|parallel|slurm]\n"
    "                  [--ntasks N] [--dry-run] [-o ROOT] [-t THREADS] [-q]\n"
    "  SWEEP          a sweep file: config (relative to it), method grid|random (samples: N,\n"
    "                 seed), parameters: {key: [values]}; or a CONFIG and KEY=V1,V2 arguments\n"
    "  KEY=V1,V2      sweep a key over values (commas inside [] or {} do not split); seed=0..4\n"
    "                 is a range; with a sweep file, adds or replaces a parameter, or picks\n"
    "                 named alternatives (optimizer=sam,sgd)\n"
    "  -j JOBS        runs at once here, each with max(1, THREADS/JOBS) threads [1]\n"
    "  -t THREADS     threads for all runs together [OMP_NUM_THREADS, else the machine's cores]\n"
    "  --emit ENGINE  write the sweep's files and print a script that runs it instead: sh,\n"
    "                 parallel (GNU parallel, --joblog/--resume-failed) or slurm (an sbatch\n"
    "                 array job)\n"
    "  --ntasks N     with --emit slurm: each array task is one run over N MPI processes\n"
    "                 (srun samx run; THREADS threads each) [1: a single process]\n"
    "  --dry-run      print the run commands; write and run nothing\n"
    "  -o ROOT        results root [results]: runs in ROOT/<name>/<run-id>\n"
    "  -q             errors only (a failed or killed run, with its reason); the runs themselves\n"
    "                 always run with -q\n"
    "  Named alternatives: in a sweep file, a mapping instead of a list names each value, and\n"
    "  run ids carry the name (optimizer=sam,seed=0-<hash>); _shared is merged under every\n"
    "  alternative, and an alternative's 'key: null' drops a shared key:\n"
    "    parameters:\n"
    "      optimizer:\n"
    "        _shared: {base: {name: sgd, lr: 0.1, momentum: 0.9}, rho: 0.05}\n"
    "        sam: {name: sam}\n"
    "        asam: {name: asam, rho: 0.5}\n"
    "        sgd: {name: sgd, lr: 0.1, momentum: 0.9, base: null, rho: null}\n"
    "  Each sweep writes ROOT/<name>/sweeps/<hash of its runs>/: manifest.jsonl (the plan),\n"
    "  commands.txt (one run per line), logs/ and the engines' logs; they are never rewritten,\n"
    "  so a job emitted earlier keeps running its own commands. samx table reads them all.\n"
    "  Every run's config is checked before anything runs; a key some run does not accept\n"
    "  (optimizer.rho with optimizer.name=sgd) is an error: use named alternatives, or give\n"
    "  each method its own config. Completed runs are skipped and interrupted ones resume, so\n"
    "  rerunning a sweep finishes it. stderr: a line per run started and done (test_acc, or\n"
    "  why not) and a count. Exit 0 when every run completed or diverged, 1 when one failed or\n"
    "  was killed, 75 when the only runs left were busy (another samx trains them), 130 when\n"
    "  interrupted (SIGINT/SIGTERM reach every run, which checkpoints).\n";
static const char *const usage_table =
    "usage: samx table DIR ... [--group KEYS] [--metric NAMES] [--at final|best:NAME]\n"
    "                  [--format md|latex|csv|json] [--precision P] [--counts] [-q]\n"
    "  DIR            a run directory or a root searched for them (and sweep manifests)\n"
    "  --group KEYS   comma-separated config keys to group by (optimizer.name,optimizer.rho);\n"
    "                 runs of a group must not differ in any other key but seed [one group]\n"
    "  --metric NAMES comma-separated keys of metrics.jsonl, a column each [test_acc]\n"
    "  --at WHEN      final: the last record; best:NAME: the record where NAME is best (max\n"
    "                 for *_acc, min for *_loss) [final]; best:test_* is warned (selected\n"
    "                 on the test set)\n"
    "  --format F     md, latex (booktabs), csv or json [md]\n"
    "  --precision P  decimals in md and latex [4]\n"
    "  --counts       every count column in md and latex, not only those with a non-zero count\n"
    "  Per group: mean ± sample std (n-1) over completed runs, n, and counts of diverged,\n"
    "  failed, interrupted and missing (planned by a sweep, never run) runs. Schedules read\n"
    "  as text (cosine 0.05→0 warmup 1). A group whose runs ran with different BLAS cores\n"
    "  (or, from an older samx, thread counts) is named in one warning line.\n";
static const char *const usage_plot =
    "usage: samx plot DIR ... --y NAME [--x epoch] [--group KEYS] [-o FILE] [--title T]\n"
    "                 [--xlabel T] [--ylabel T] [--labels A,B] [--logy] [--band std|sem|none]\n"
    "                 [--from X] [-q]\n"
    "  DIR            a run directory or a root searched for them\n"
    "  --y NAME       the record key to plot (test_acc, train_loss, hessian_trace, ...)\n"
    "  --x NAME       the record key along x [epoch]\n"
    "  --group KEYS   one curve per group, as samx table [one curve]\n"
    "  -o FILE        FILE.png, .svg, .pdf or .txt (a terminal chart) [NAME.png]\n"
    "  --title T, --xlabel T, --ylabel T   the figure's title and axis labels [none, the keys]\n"
    "  --labels A,B   legend labels of the curves, in order [key=value (n runs)]\n"
    "  --logy         log-scale y\n"
    "  --band B       std (sample std), sem (standard error) or none [std]\n"
    "  --from X       the first x shown [1 for epoch: epoch 0 is the initialization]\n"
    "  Mean over completed runs with a band, drawn by gnuplot; FILE.dat and FILE.gp (acc.png.dat,\n"
    "  acc.png.gp) are written beside it (without gnuplot, only they are, with a warning, exit\n"
    "  0). Groups without NAME are left out, named in a warning.\n";
static const char *const usage_landscape =
    "usage: samx landscape RUN_DIR [KEY=VALUE ...] [-t THREADS] [-q]\n"
    "  loss along filter-normalised random directions around a finished run's final weights,\n"
    "  written to RUN_DIR/landscape/final.csv; keys are eval.landscape.* (dims, points, range)\n"
    "  -t THREADS     threads [OMP_NUM_THREADS, else the machine's cores]\n"
    "  -q             errors only\n";
static const char *const usage_list =
    "usage: samx list [optimizers|models|datasets|schedules|keys]\n"
    "  keys: the train.*, data.* and eval.* keys with their defaults\n";

static void die(int status, const char *msg)
{
    fprintf(stderr, "samx: error: %s\n", msg);
    exit(status);
}

/* One line, like every error; the usage text itself is one 'samx help' away. */
static void usage_error(const char *usage, const char *fmt, const char *arg)
{
    char cmd[32] = "";
    sscanf(usage, "usage: samx %31s", cmd);
    fprintf(stderr, "samx: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'samx help %s')\n", cmd);
    exit(SAMX_EXIT_CONFIG);
}

static int default_threads(void)
{
    const char *s = getenv("OMP_NUM_THREADS");
    int n = s ? atoi(s) : 0;
    if (n <= 0)
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

static char *join_argv(int argc, char **argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *s = xmalloc(len);
    s[0] = 0;
    for (int i = 0; i < argc; i++) {
        strcat(s, argv[i]);
        if (i + 1 < argc)
            strcat(s, " ");
    }
    return s;
}

/* Parse CONFIG [KEY=VALUE ...] and the options of run/check. GNU getopt permutes argv, so
 * options may come before or after the positional arguments. */
static void parse_run_args(int argc, char **argv, struct run_opts *o, const char *usage,
                           bool is_run)
{
    static const struct option run_opts[] = {
        {"force", no_argument, NULL, 'F'}, {"dry-run", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},  {NULL, 0, NULL, 0}};
    static const struct option check_opts[] = {{"help", no_argument, NULL, 'h'},
                                               {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, is_run ? "o:t:qh" : "qh", is_run ? run_opts : check_opts,
                            NULL)) != -1) {
        switch (c) {
        case 'o':
            o->out_dir = optarg;
            break;
        case 't':
            o->threads = atoi(optarg);
            if (o->threads < 1 || o->threads > 4096)
                usage_error(usage, "-t needs a thread count >= 1, got '%s'", optarg);
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'F':
            o->force = true;
            break;
        case 'D':
            o->dry_run = true;
            break;
        case 'h':
            fputs(usage, stdout);
            exit(0);
        default:
            usage_error(usage, "unknown option or missing argument: '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        usage_error(usage, "%s", "missing CONFIG");
    o->config = argv[optind];
    for (int i = optind + 1; i < argc; i++)
        if (!strchr(argv[i], '='))
            usage_error(usage, "'%s' is not KEY=VALUE", argv[i]);
    o->overrides = (const char *const *)argv + optind + 1;
    o->n_overrides = argc - optind - 1;
}

static int cmd_run(int argc, char **argv, char *cmdline)
{
    /* From here a signal only sets a flag: loading finishes, training checkpoints, exit 130. */
    rundir_signals_defer();
    struct run_opts o = {.threads = default_threads(), .command_line = cmdline};
    parse_run_args(argc, argv, &o, usage_run, true);
    samx_quiet = o.quiet;
    o.progress = !o.quiet && isatty(2);
    threads_set(o.threads);
    /* Under an MPI launcher the processes train one run together (dist.h); rank 0 speaks. */
    if (dist_init(o.threads) < 0)
        exit(SAMX_EXIT_RUNTIME);
    if (dist_rank() > 0) {
        samx_quiet = true;
        o.progress = false;
    }
    struct err e = {0};
    int rc = train_run(&o, &e);
    /* Errors train_run returns are the same on every rank (it aborts the job on one that is
     * not), so rank 0 reports them for the job. */
    bool say = dist_rank() == 0;
    dist_finalize();
    if (rc < 0 && e.status == SAMX_EXIT_INTERRUPTED) {
        if (say)
            fprintf(stderr, "samx: %s\n", e.msg);
        exit(SAMX_EXIT_INTERRUPTED);
    }
    if (rc < 0 && !say)
        exit(e.status ? e.status : SAMX_EXIT_RUNTIME);
    if (rc < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    return rc;
}

static int cmd_check(int argc, char **argv, char *cmdline)
{
    struct run_opts o = {.threads = 1, .command_line = cmdline, .plan = true};
    parse_run_args(argc, argv, &o, usage_check, false);
    samx_quiet = o.quiet;
    struct experiment x;
    struct err e = {0};
    if (experiment_build(&x, &o, &e) < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    experiment_warn(&x);
    fputs(x.resolved, stdout);
    experiment_free(&x);
    return 0;
}

static int parse_count(const char *usage, const char *opt, const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end || v < 1 || v > 4096)
        usage_error(usage, opt, arg);
    return (int)v;
}

static int cmd_sweep(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    static const struct option opts[] = {{"emit", required_argument, NULL, 'E'},
                                         {"ntasks", required_argument, NULL, 'N'},
                                         {"dry-run", no_argument, NULL, 'D'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct sweep_opts o = {.jobs = 1, .cores = default_threads(), .progress = true};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "j:o:t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            o.jobs = parse_count(usage_sweep, "-j needs a number of jobs >= 1, got '%s'", optarg);
            break;
        case 't':
            o.cores = parse_count(usage_sweep, "-t needs a thread count >= 1, got '%s'", optarg);
            break;
        case 'q':
            samx_quiet = true;
            o.progress = false;
            break;
        case 'o':
            o.results_root = optarg;
            break;
        case 'E':
            if (strcmp(optarg, "sh") && strcmp(optarg, "parallel") && strcmp(optarg, "slurm"))
                usage_error(usage_sweep, "--emit takes sh, parallel or slurm, got '%s'", optarg);
            o.emit = optarg;
            break;
        case 'N':
            o.ntasks = parse_count(usage_sweep, "--ntasks needs a number of processes >= 1, got '%s'",
                                   optarg);
            break;
        case 'D':
            o.dry_run = true;
            break;
        case 'h':
            fputs(usage_sweep, stdout);
            exit(0);
        default:
            usage_error(usage_sweep, "unknown option or missing argument: '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        usage_error(usage_sweep, "%s", "missing SWEEP or CONFIG");
    if (o.ntasks > 1 && (!o.emit || strcmp(o.emit, "slurm")))
        usage_error(usage_sweep, "%s", "--ntasks needs --emit slurm (elsewhere, start each run "
                                       "with mpirun -np N samx run)");
    o.spec = argv[optind];
    o.args = (const char *const *)argv + optind + 1;
    o.n_args = argc - optind - 1;
    struct err e = {0};
    int rc = sweep_main(&o, &e);
    if (rc < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    return rc;
}

static int cmd_table(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    static const struct option opts[] = {
        {"group", required_argument, NULL, 'g'}, {"metric", required_argument, NULL, 'm'},
        {"at", required_argument, NULL, 'a'},    {"format", required_argument, NULL, 'f'},
        {"precision", required_argument, NULL, 'p'}, {"counts", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    struct table_opts o = {0};
    char *end;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            samx_quiet = true;
            break;
        case 'g':
            o.group = optarg;
            break;
        case 'm':
            o.metric = optarg;
            break;
        case 'a':
            o.at = optarg;
            break;
        case 'f':
            o.format = optarg;
            break;
        case 'p':
            o.precision = (int)strtol(optarg, &end, 10);
            if (end == optarg || *end || o.precision < 0 || o.precision > 12)
                usage_error(usage_table, "--precision needs decimals in [0, 12], got '%s'",
                            optarg);
            o.precision_set = true;
            break;
        case 'c':
            o.counts = true;
            break;
        case 'h':
            fputs(usage_table, stdout);
            exit(0);
        default:
            usage_error(usage_table, "unknown option or missing argument: '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        usage_error(usage_table, "%s", "missing DIR");
    o.dirs = (const char *const *)argv + optind;
    o.n_dirs = argc - optind;
    struct err e = {0};
    if (table_main(&o, &e) < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    return 0;
}

static int cmd_plot(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    static const struct option opts[] = {
        {"y", required_argument, NULL, 'y'}, {"x", required_argument, NULL, 'x'},
        {"group", required_argument, NULL, 'g'}, {"title", required_argument, NULL, 'T'},
        {"xlabel", required_argument, NULL, 'X'}, {"ylabel", required_argument, NULL, 'Y'},
        {"labels", required_argument, NULL, 'L'}, {"band", required_argument, NULL, 'B'},
        {"logy", no_argument, NULL, 'l'}, {"from", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    struct plot_opts o = {0};
    char *end;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            samx_quiet = true;
            break;
        case 'y':
            o.y = optarg;
            break;
        case 'x':
            o.x = optarg;
            break;
        case 'g':
            o.group = optarg;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'T':
            o.title = optarg;
            break;
        case 'X':
            o.xlabel = optarg;
            break;
        case 'Y':
            o.ylabel = optarg;
            break;
        case 'L':
            o.labels = optarg;
            break;
        case 'B':
            o.band = optarg;
            break;
        case 'l':
            o.logy = true;
            break;
        case 'F':
            o.from = strtod(optarg, &end);
            if (end == optarg || *end)
                usage_error(usage_plot, "--from needs a number (the first x shown), got '%s'",
                            optarg);
            o.from_set = true;
            break;
        case 'h':
            fputs(usage_plot, stdout);
            exit(0);
        default:
            usage_error(usage_plot, "unknown option or missing argument: '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        usage_error(usage_plot, "%s", "missing DIR");
    if (!o.y)
        usage_error(usage_plot, "%s", "missing --y NAME");
    o.dirs = (const char *const *)argv + optind;
    o.n_dirs = argc - optind;
    struct err e = {0};
    if (plot_main(&o, &e) < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    return 0;
}

static void print_keys(const char *keys)
{
    for (const char *p = keys; p && *p;) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        printf("    %.*s\n", len, p);
        p += len + (nl ? 1 : 0);
    }
}

/* Print the keys below `n` as "  PATH [default]", skipping (data.*) the data set's own keys. */
static void print_defaults(const struct cfg_node *n, const char *prefix, const char *skip_keys)
{
    for (int i = 0; i < n->n_kid; i++) {
        const struct cfg_node *k = n->kid[i];
        char *path = xasprintf("%s.%s", prefix, k->key);
        char *own = xasprintf("%s [", k->key);
        const char *hit = skip_keys ? strstr(skip_keys, own) : NULL;
        bool skip = !strcmp(k->key, "name") ||
                    (hit && (hit == skip_keys || hit[-1] == '\n'));
        if (skip)
            ;
        else if (k->type == CFG_MAP)
            print_defaults(k, path, NULL);
        else if (k->type == CFG_SCALAR)
            printf("    %s [%s]\n", path, k->str);
        else if (k->type == CFG_NULL)
            printf("    %s [none]\n", path);
        else
            printf("    %s [a list]\n", path);
        free(own);
        free(path);
    }
}

/* The common keys and their defaults, as the config checker resolves them: a minimal config
 * (a synthetic data set, every measurement switched on) is built and its resolved tree printed,
 * so this list cannot drift from what `samx check` accepts. */
static void list_keys(void)
{
    static const char *const yaml = "data: {name: synthetic-linear}\n"
                                    "model: {name: linear}\n"
                                    "optimizer: {name: sgd}\n"
                                    "eval: {hessian_trace: {}, lambda_max: {}, sharpness: {}, "
                                    "landscape: {}}\n";
    struct run_opts o = {.config = "samx-list-keys", .config_text = yaml, .threads = 1,
                         .quiet = true};
    struct experiment x;
    struct err e = {0};
    if (experiment_build(&x, &o, &e) < 0)
        die(SAMX_EXIT_RUNTIME, e.msg);
    const struct cfg_node *root = x.cfg.root;
    printf("keys (every default; 'samx check CONFIG' prints one config resolved):\n"
           "  name [the config file's stem], seed [0]\n");
    printf("  data.* (every data set; its own keys: samx list datasets; image sets also take "
           "augment):\n");
    print_defaults(cfg_child(root, "data"), "data", x.data.ops->keys);
    printf("  train.*:\n");
    print_defaults(cfg_child(root, "train"), "train", "loss [");
    printf("    train.loss [cross_entropy with class labels, else mse]\n"
           "    train.bn_update [first_pass] (models with BatchNorm: first_pass, all_passes, "
           "reference)\n"
           "    train.bn_group [0] (ghost BatchNorm: statistics over groups of k examples; "
           "written when given)\n"
           "    train.accumulate [1] (micro-batches per step; written when given)\n"
           "    train.l2 [0] (lambda/2 ||w||^2 inside the loss; written when given)\n"
           "    train.keep_best [none] (a record key: best.safetensors), train.early_stop "
           "[none] ({metric, patience, min_delta}),\n"
           "    train.allow_test [false] (keep_best/early_stop on test-set keys)\n");
    printf("  eval.* (each measurement is off until its key is given: eval.hessian_trace={};\n"
           "  hvp [exact] is finite_difference for models without an exact one):\n");
    print_defaults(cfg_child(root, "eval"), "eval", NULL);
    printf("    eval.hessian_density.* (stochastic Lanczos quadrature): steps [100], runs [1], "
           "bins [10000],\n      sigma2 [1e-5], overhead [0.01], hvp, and every/examples/split "
           "as above\n");
    experiment_free(&x);
}

static int cmd_list(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    if (argc > 1 && !strcmp(argv[argc - 1], "-q"))
        argc--; /* nothing to silence: a list is the output */
    const char *what = argc > 1 ? argv[1] : NULL;
    if (argc > 2 || (what && strcmp(what, "optimizers") && strcmp(what, "models") &&
                     strcmp(what, "datasets") && strcmp(what, "schedules") &&
                     strcmp(what, "keys")))
        usage_error(usage_list, "unknown list '%s'", argc > 1 ? argv[1] : "");
    if (!what || !strcmp(what, "optimizers")) {
        printf("optimizers (optimizer.name):\n");
        for (int i = 0; optim_registry[i]; i++) {
            const struct optim_ops *op = optim_registry[i];
            printf("  %s%s: %s\n    paper: %s\n", op->name, op->wrapper ? " (SAM family)" : "",
                   op->summary, op->paper);
            print_keys(op->keys);
        }
    }
    if (!what || !strcmp(what, "models")) {
        printf("models (model.name; every model also takes init_from [none]):\n");
        for (int i = 0; model_registry[i]; i++) {
            printf("  %s: %s\n", model_registry[i]->name, model_registry[i]->summary);
            print_keys(model_registry[i]->keys);
        }
    }
    if (!what || !strcmp(what, "datasets")) {
        printf("datasets (data.name; every data set also takes val_split [0], label_noise [0], "
               "shuffle [true], limit_train [all], limit_test [all]):\n");
        for (int i = 0; dataset_registry[i]; i++) {
            printf("  %s: %s\n", dataset_registry[i]->name, dataset_registry[i]->summary);
            print_keys(dataset_registry[i]->keys);
        }
    }
    if (!what || !strcmp(what, "schedules")) {
        printf("schedules (any scalar hyperparameter: a number, or {schedule: NAME, ...}; "
               "common keys warmup [0 epochs], warmup_start [0], epochs [train.epochs], "
               "per [step | epoch]):\n");
        for (int i = 0; sched_names[i]; i++)
            printf("  %s: %s\n", sched_names[i], sched_summary[i]);
    }
    if (!what || !strcmp(what, "keys"))
        list_keys();
    return 0;
}

static int cmd_landscape(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c, threads = default_threads();
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            threads = parse_count(usage_landscape, "-t needs a thread count >= 1, got '%s'",
                                  optarg);
            break;
        case 'q':
            samx_quiet = true;
            break;
        case 'h':
            fputs(usage_landscape, stdout);
            exit(0);
        default:
            usage_error(usage_landscape, "unknown option or missing argument: '%s'",
                        argv[optind - 1]);
        }
    }
    if (optind >= argc)
        usage_error(usage_landscape, "missing RUN_DIR%s", "");
    const char *run_dir = argv[optind];
    for (int i = optind + 1; i < argc; i++)
        if (!strchr(argv[i], '='))
            usage_error(usage_landscape, "'%s' is not KEY=VALUE", argv[i]);
    threads_set(threads);
    struct err e = {0};
    if (measure_landscape_run(run_dir, (const char *const *)argv + optind + 1, argc - optind - 1,
                              &e) < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    samx_say("wrote '%s/landscape/final.csv'", run_dir);
    return 0;
}

static int cmd_help(int argc, char **argv, char *cmdline);

static const struct command {
    const char *name;
    int (*fn)(int argc, char **argv, char *cmdline);
    const char *summary;
    const char *const *usage;
} commands[] = {
    {"run", cmd_run, "train a model from a YAML config into a run directory", &usage_run},
    {"check", cmd_check, "validate a config and print it resolved, every default included",
     &usage_check},
    {"sweep", cmd_sweep, "run a grid or random sweep of configs, here or through an engine",
     &usage_sweep},
    {"table", cmd_table, "tabulate a metric over runs: mean ± std per group", &usage_table},
    {"plot", cmd_plot, "plot a per-epoch metric over runs: mean and ±std band per group",
     &usage_plot},
    {"landscape", cmd_landscape, "write 1-D/2-D loss-landscape slices of a finished run",
     &usage_landscape},
    {"list", cmd_list, "list optimizers, models, data sets, schedules and config keys",
     &usage_list},
    {"help", cmd_help, "show help for samx or one command", NULL},
};

static void print_main_usage(FILE *f)
{
    fprintf(f, "usage: samx COMMAND [ARGS]   (samx --version, samx help COMMAND)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
}

static int cmd_help(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    if (argc > 1)
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            if (!strcmp(commands[i].name, argv[1]) && commands[i].usage) {
                fputs(*commands[i].usage, stdout);
                return 0;
            }
    if (argc > 1 && strcmp(argv[1], "help")) {
        fprintf(stderr, "samx: error: unknown command '%s' (see 'samx help')\n", argv[1]);
        return SAMX_EXIT_CONFIG;
    }
    print_main_usage(stdout);
    return 0;
}

/* The runtimes read their settings before main (tune.h): when tune_env changes them, samx
 * re-executes itself once so OpenBLAS and libgomp load with them. If the exec fails, samx runs
 * on with the runtimes as they loaded (slower, same results). */
static void tune_process(char **argv)
{
    if (!tune_env())
        return;
    /* The signal mask survives exec: a SIGINT/SIGTERM before the new image installs its
     * handlers stays pending instead of killing it silently (rundir_signals_init). */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, &old);
    execv("/proc/self/exe", argv);
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* What a command printed must have reached stdout: a full disk or a closed descriptor makes
 * the command fail, with the reason, rather than exit 0 with its output lost. */
static int output_written(int rc)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return rc;
    fprintf(stderr, "samx: error: cannot write the output: %s\n",
            errno ? strerror(errno) : "write error");
    return rc ? rc : SAMX_EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
    rundir_signals_init();
    if (argc < 2) {
        print_main_usage(stderr);
        return SAMX_EXIT_CONFIG;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("samx %s (%s)\n", SAMX_VERSION, SAMX_GIT);
        return output_written(0);
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return output_written(cmd_help(1, argv + 1, NULL));
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, argv[1])) {
            if (!strcmp(argv[1], "run") || !strcmp(argv[1], "landscape"))
                tune_process(argv);
            char *cmdline = join_argv(argc, argv);
            int rc = commands[i].fn(argc - 1, argv + 1, cmdline);
            free(cmdline);
            return output_written(rc);
        }
    fprintf(stderr, "samx: error: unknown command '%s' (see 'samx help')\n", argv[1]);
    return SAMX_EXIT_CONFIG;
}
