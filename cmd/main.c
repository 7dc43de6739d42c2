/* samx: command table, option parsing, dispatch, exit statuses. Only this file exits.
 *
 * Exit statuses: 0 done (a diverged run is a result), 1 runtime failure, 2 usage or config
 * error, 130 interrupted after saving a checkpoint.
 */
#include <cpuid.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "data.h"
#include "model.h"
#include "optim.h"
#include "schedule.h"
#include "train.h"
#include "version.h"

static const char *const usage_run =
    "usage: samx run CONFIG [KEY=VALUE ...] [-o DIR] [-t THREADS] [--force] [--dry-run] [-q]\n"
    "  KEY=VALUE      override a config key, value in YAML flow syntax (model.hidden=[256,128])\n"
    "  -o DIR         run directory [results/<name>/<run-id>]\n"
    "  -t THREADS     threads [OMP_NUM_THREADS, else the machine's cores]\n"
    "  --force        start over even if DIR holds a completed or interrupted run\n"
    "  --dry-run      resolve and check everything, print what would run, train nothing\n"
    "  -q             no progress display\n";
static const char *const usage_check =
    "usage: samx check CONFIG [KEY=VALUE ...]\n"
    "  validate CONFIG (loading its data) and print the resolved config, every default included\n";
static const char *const usage_list =
    "usage: samx list [optimizers|models|datasets|schedules]\n";

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
    while ((c = getopt_long(argc, argv, is_run ? "o:t:qh" : "h", is_run ? run_opts : check_opts,
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
    struct run_opts o = {.threads = default_threads(), .command_line = cmdline};
    parse_run_args(argc, argv, &o, usage_run, true);
    o.progress = !o.quiet && isatty(2);
    threads_set(o.threads);
    struct err e = {0};
    int rc = train_run(&o, &e);
    if (rc < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    return rc;
}

static int cmd_check(int argc, char **argv, char *cmdline)
{
    struct run_opts o = {.threads = 1, .command_line = cmdline};
    parse_run_args(argc, argv, &o, usage_check, false);
    struct experiment x;
    struct err e = {0};
    if (experiment_build(&x, &o, &e) < 0)
        die(e.status ? e.status : SAMX_EXIT_RUNTIME, e.msg);
    fputs(x.resolved, stdout);
    experiment_free(&x);
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

static int cmd_list(int argc, char **argv, char *cmdline)
{
    (void)cmdline;
    const char *what = argc > 1 ? argv[1] : NULL;
    if (argc > 2 || (what && strcmp(what, "optimizers") && strcmp(what, "models") &&
                     strcmp(what, "datasets") && strcmp(what, "schedules")))
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
    {"list", cmd_list, "list optimizers, models, data sets and schedules with their keys",
     &usage_list},
    {"help", cmd_help, "show help for samx or one command", NULL},
};

static void print_main_usage(FILE *f)
{
    fprintf(f, "usage: samx COMMAND [ARGS]   (samx --version, samx help COMMAND)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].summary);
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

/* OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs and falls back to its Haswell
 * kernels, at half the speed. The core type can only be chosen before the library loads, so on
 * such a CPU samx sets OPENBLAS_CORETYPE and re-executes itself once. A user's own setting
 * wins. */
static void pick_blas_core(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv("SAMX_NO_REEXEC"))
        return;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    bool avx512 = (b >> 16 & 1) && (b >> 17 & 1) && (b >> 30 & 1) && (b >> 31 & 1);
    if (!avx512 || strcmp(blas_corename(), "Haswell") != 0)
        return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    setenv("SAMX_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_main_usage(stderr);
        return SAMX_EXIT_CONFIG;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("samx %s (%s)\n", SAMX_VERSION, SAMX_GIT);
        return 0;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return cmd_help(1, argv + 1, NULL);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, argv[1])) {
            if (!strcmp(argv[1], "run"))
                pick_blas_core(argv);
            char *cmdline = join_argv(argc, argv);
            int rc = commands[i].fn(argc - 1, argv + 1, cmdline);
            free(cmdline);
            return rc;
        }
    fprintf(stderr, "samx: error: unknown command '%s' (see 'samx help')\n", argv[1]);
    return SAMX_EXIT_CONFIG;
}
