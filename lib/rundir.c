#include "rundir.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "dist.h"
#include "io.h"
#include "safetensors.h"
#include "train.h"
#include "tune.h"
#include "version.h"

const char *const run_status_names[] = {"running", "completed", "diverged", "interrupted",
                                        "failed", "stopped", NULL};

void record_begin(struct record *r, long epoch, long step, double seconds, double sps,
                  double grad_evals)
{
    r->obj = cJSON_CreateObject();
    r->nonfinite = NULL;
    cJSON_AddNumberToObject(r->obj, "epoch", (double)epoch);
    cJSON_AddNumberToObject(r->obj, "step", (double)step);
    record_num(r, "seconds", seconds);
    record_num(r, "samples_per_second", sps);
    record_num(r, "grad_evals", grad_evals);
}

void record_num(struct record *r, const char *key, double v)
{
    if (isfinite(v)) {
        cJSON_AddNumberToObject(r->obj, key, v);
        return;
    }
    cJSON_AddNullToObject(r->obj, key);
    if (!r->nonfinite)
        r->nonfinite = cJSON_CreateArray();
    cJSON_AddItemToArray(r->nonfinite, cJSON_CreateString(key));
}

double rundir_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile sig_atomic_t interrupted, deferred;
static void on_signal(int sig)
{
    if (!interrupted)
        interrupted = sig;
    if (deferred)
        return;
    /* write and _exit only: async-signal-safe */
    static const char msg_int[] = "samx: interrupted by SIGINT\n";
    static const char msg_term[] = "samx: interrupted by SIGTERM\n";
    ssize_t w = sig == SIGINT ? write(2, msg_int, sizeof msg_int - 1)
                              : write(2, msg_term, sizeof msg_term - 1);
    (void)w;
    _exit(SAMX_EXIT_INTERRUPTED);
}

void rundir_signals_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A signal that came while they were blocked across a re-exec (main.c) is delivered now. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

void rundir_signals_defer(void) { deferred = 1; }

bool rundir_interrupted(void) { return interrupted != 0; }

const char *rundir_signal_name(void) { return interrupted == SIGINT ? "SIGINT" : "SIGTERM"; }

void rundir_progress(const struct experiment *x, long epoch, long step, double loss, double sps)
{
    long left = (x->epochs - epoch) * x->steps_per_epoch + (x->steps_per_epoch - step);
    double eta = sps > 0 ? (double)left * x->batch_size / sps : 0;
    fprintf(stderr, "\r\033[Kepoch %ld/%ld  step %ld/%ld  loss %.4f  %.0f ex/s  ETA %.0fs", epoch,
            x->epochs, step, x->steps_per_epoch, loss, sps, eta);
    fflush(stderr);
}

static char *path_in(const struct rundir *rd, const char *file)
{
    return xasprintf("%s/%s", rd->dir, file);
}

static int write_json(const struct rundir *rd, const char *file, cJSON *j, struct err *e)
{
    char *s = cJSON_Print(j);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n';
    s[n + 1] = 0;
    char *p = path_in(rd, file);
    int rc = io_write_atomic(p, s, n + 1, e);
    free(p);
    free(s);
    return rc;
}

static void iso_time(char buf[32])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    fclose(f);
}

/* The "flags" line of /proc/cpuinfo (the instruction sets the kernels could use), malloc'd. */
static char *cpu_flags(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char *out = NULL;
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        while (!out && getline(&line, &cap, f) > 0)
            if (!strncmp(line, "flags", 5) && strchr(line, ':')) {
                char *c = strchr(line, ':') + 1;
                c += strspn(c, " \t");
                c[strcspn(c, "\n")] = 0;
                out = xstrdup(c);
            }
        free(line);
        fclose(f);
    }
    return out ? out : xstrdup("unknown");
}

static int write_meta(struct rundir *rd, struct experiment *x, const struct train_state *st,
                      const char *command_line, const char *started, struct err *e)
{
    cJSON *m = cJSON_CreateObject();
    char host[256] = "", cpu[256], now[32];
    gethostname(host, sizeof host - 1);
    cpu_model(cpu, sizeof cpu);
    iso_time(now);
    cJSON_AddNumberToObject(m, "schema", 1);
    cJSON_AddStringToObject(m, "samx_version", SAMX_VERSION);
    cJSON_AddStringToObject(m, "git_commit", SAMX_GIT);
    cJSON_AddStringToObject(m, "command_line", command_line ? command_line : "");
    cJSON_AddStringToObject(m, "host", host);
    cJSON_AddStringToObject(m, "cpu", cpu);
    char *flags = cpu_flags();
    cJSON_AddStringToObject(m, "cpu_flags", flags);
    free(flags);
    char cwd[4096];
    cJSON_AddStringToObject(m, "working_directory", getcwd(cwd, sizeof cwd) ? cwd : "unknown");
    cJSON_AddNumberToObject(m, "omp_threads", threads_get());
    /* the MPI job (dist.h): its size, and each rank's host and threads, in rank order */
    cJSON_AddNumberToObject(m, "world_size", dist_size());
    if (dist_size() > 1) {
        cJSON *hosts = cJSON_AddArrayToObject(m, "hosts");
        cJSON *threads = cJSON_AddArrayToObject(m, "rank_threads");
        for (int r = 0; r < dist_size(); r++) {
            cJSON_AddItemToArray(hosts, cJSON_CreateString(dist_host(r)));
            cJSON_AddItemToArray(threads, cJSON_CreateNumber(dist_threads(r)));
        }
    }
    cJSON_AddNumberToObject(m, "work_blocks", work_blocks());
    cJSON_AddNumberToObject(m, "openblas_threads", blas_threads());
    cJSON_AddStringToObject(m, "openblas_core", blas_corename());
    cJSON_AddStringToObject(m, "omp_wait_policy", tune_wait_policy());
    cJSON_AddStringToObject(m, "omp_team", team_policy());
    cJSON_AddStringToObject(m, "openblas_config", blas_config());
    cJSON_AddStringToObject(m, "openblas_parallel",
                            blas_parallel() == 2 ? "openmp" : blas_parallel() == 1 ? "pthreads"
                                                                                   : "serial");
    cJSON_AddStringToObject(m, "compiler", "gcc " __VERSION__);
    cJSON_AddStringToObject(m, "run_id", x->run_id);
    char sha[65];
    sha256_hex(x->resolved, strlen(x->resolved), sha);
    cJSON_AddStringToObject(m, "config_sha256", sha);
    cJSON *files = cJSON_AddArrayToObject(m, "data_files");
    for (int i = 0; i < x->data.n_file; i++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "path", x->data.file[i].path);
        cJSON_AddStringToObject(f, "sha256", x->data.file[i].sha256);
        cJSON_AddItemToArray(files, f);
    }
    cJSON_AddNumberToObject(m, "noisy_labels", x->data.n_noisy);
    cJSON_AddNumberToObject(m, "parameters", (double)x->model.p.n);
    cJSON_AddStringToObject(m, "start_time", started);
    if (st->status == RUN_RUNNING)
        cJSON_AddNullToObject(m, "end_time");
    else
        cJSON_AddStringToObject(m, "end_time", now);
    cJSON_AddStringToObject(m, "status", run_status_names[st->status]);
    int rc = write_json(rd, "meta.json", m, e);
    cJSON_Delete(m);
    return rc;
}

/* Track the best record by the selection metric. */
static void note_record(struct rundir *rd, const cJSON *rec)
{
    cJSON_Delete(rd->last);
    rd->last = cJSON_Duplicate(rec, 1);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, rd->best_by);
    if (!cJSON_IsNumber(v))
        return;
    const cJSON *b = rd->best ? cJSON_GetObjectItemCaseSensitive(rd->best, rd->best_by) : NULL;
    if (!b || (rd->best_max ? v->valuedouble > b->valuedouble : v->valuedouble < b->valuedouble)) {
        cJSON_Delete(rd->best);
        rd->best = cJSON_Duplicate(rec, 1);
    }
}

int rundir_append_record(struct rundir *rd, struct record *r, struct err *e)
{
    if (r->nonfinite)
        cJSON_AddItemToObject(r->obj, "nonfinite", r->nonfinite);
    char *s = cJSON_PrintUnformatted(r->obj);
    note_record(rd, r->obj);
    cJSON_Delete(r->obj);
    r->obj = r->nonfinite = NULL;
    size_t n = strlen(s);
    int bad = !rd->follower && (fprintf(rd->metrics, "%s\n", s) < 0 || fflush(rd->metrics) != 0);
    if (!bad) {
        if (rd->records_len + n + 1 > rd->records_cap) {
            rd->records_cap = 2 * (rd->records_len + n + 1);
            rd->records = xrealloc(rd->records, rd->records_cap);
        }
        memcpy(rd->records + rd->records_len, s, n);
        rd->records_len += n;
        rd->records[rd->records_len++] = '\n';
    }
    free(s);
    if (bad)
        return err_set(e, "cannot write '%s/metrics.jsonl': %s", rd->dir, strerror(errno));
    return 0;
}

/* Doubles in checkpoint metadata are hex floats: exact, so a resumed run continues bit for bit. */
static void meta_num(cJSON *m, const char *key, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%a", v);
    cJSON_AddStringToObject(m, key, buf);
}

static int meta_get(const struct st_file *f, const char *key, double *v, struct err *e)
{
    const char *s = st_meta(f, key);
    char *end;
    if (!s || (*v = strtod(s, &end), *end || end == s))
        return err_set(e, "'%s': checkpoint lacks '%s'; use --force to start over", f->path,
                       key);
    return 0;
}

/* A field that must be a finite number in [lo, hi] (an integer when integral). */
static int meta_range(const struct st_file *f, const char *key, double lo, double hi,
                      bool integral, double *v, struct err *e)
{
    if (meta_get(f, key, v, e) < 0)
        return -1;
    if (isfinite(*v) && *v >= lo && *v <= hi && (!integral || *v == floor(*v)))
        return 0;
    return err_set(e, "'%s': checkpoint field '%s' is %.17g, outside [%.17g, %.17g]%s; the file "
                      "is damaged (use --force to start over)",
                   f->path, key, *v, lo, hi, integral ? " or not an integer" : "");
}

/* Weights, model buffers (BatchNorm running statistics), optimizer buffers, records. */
#define MAX_ENTRIES (2 * SAMX_MAX_TENSORS + 2 * OPTIM_MAX_BUF + 1)

/* Append the model's buffers (m->buf) to the entries after its n weight tensors. */
static int entries_buffers(const struct model *m, struct st_entry *ent, int n)
{
    if (m->buf.nt == 0)
        return n;
    st_entries_params(&m->buf, m->buf.w, ent + n);
    return n + m->buf.nt;
}

/* The checkpoint's checksum (rundir.h): sha256 of the metadata without "checksum", printed
 * unformatted, followed by the tensor bytes in file order. */
static void checkpoint_digest(const cJSON *meta, const struct st_entry *ent, int n,
                              const void *data, size_t data_len, char out[65])
{
    cJSON *m = cJSON_Duplicate(meta, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(m, "checksum");
    char *js = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    size_t nj = strlen(js), nd = data_len;
    if (ent) {
        nd = 0;
        for (int i = 0; i < n; i++)
            nd += ent[i].nbytes;
    }
    char *buf = xmalloc(nj + nd + 1);
    memcpy(buf, js, nj);
    if (ent) {
        size_t off = nj;
        for (int i = 0; i < n; i++) {
            memcpy(buf + off, ent[i].data, ent[i].nbytes);
            off += ent[i].nbytes;
        }
    } else if (nd) {
        memcpy(buf + nj, data, nd);
    }
    sha256_hex(buf, nj + nd, out);
    free(buf);
    free(js);
}

int rundir_checkpoint(struct rundir *rd, struct experiment *x, const struct train_state *st,
                      struct err *e)
{
    if (rd->follower)
        return 0;
    struct st_entry ent[MAX_ENTRIES];
    char names[2 * OPTIM_MAX_BUF][96];
    struct params *p = &x->model.p;
    st_entries_params(p, p->w, ent);
    int n = entries_buffers(&x->model, ent, p->nt), k = 0;
    cJSON *m = cJSON_CreateObject();
    for (const struct optim *o = &x->optim; o; o = o->base) {
        const char *pre = o == &x->optim ? "optim" : "optim.base";
        for (int i = 0; i < o->n_buf; i++, k++) {
            snprintf(names[k], sizeof names[k], "%s.%s", pre, o->buf_name[i]);
            ent[n++] = (struct st_entry){.name = names[k], .dtype = "F32", .ndim = 1,
                                         .shape = {(long)p->n}, .data = o->buf[i],
                                         .nbytes = p->n * sizeof(float)};
        }
        for (int i = 0; i < o->n_state; i++) {
            char key[128];
            snprintf(key, sizeof key, "%s.%s", pre, o->state_name[i]);
            meta_num(m, key, *o->state[i]);
        }
    }
    if (rd->records_len > 0)
        ent[n++] = (struct st_entry){.name = "records", .dtype = "U8", .ndim = 1,
                                     .shape = {(long)rd->records_len}, .data = rd->records,
                                     .nbytes = rd->records_len};
    char sha[65];
    sha256_hex(x->resolved, strlen(x->resolved), sha);
    cJSON_AddStringToObject(m, "config_sha256", sha);
    cJSON_AddStringToObject(m, "status", run_status_names[st->status]);
    char th[32];
    snprintf(th, sizeof th, "%d", threads_get());
    cJSON_AddStringToObject(m, "omp_threads", th);
    snprintf(th, sizeof th, "%d", work_blocks());
    cJSON_AddStringToObject(m, "work_blocks", th);
    cJSON_AddStringToObject(m, "openblas_core", blas_corename());
    /* Only a multi-process run records its world size (a checkpoint without it: 1), so that a
     * single process writes the checkpoint samx without MPI writes. */
    if (dist_size() > 1) {
        snprintf(th, sizeof th, "%d", dist_size());
        cJSON_AddStringToObject(m, "world_size", th);
    }
    meta_num(m, "records_bytes", (double)rd->records_len);
    meta_num(m, "epoch", (double)st->epoch);
    meta_num(m, "step", (double)st->step);
    meta_num(m, "step_in_epoch", (double)st->step_in_epoch);
    meta_num(m, "grad_evals", st->grad_evals);
    meta_num(m, "acc_loss", st->acc_loss);
    meta_num(m, "acc_hit", st->acc_hit);
    meta_num(m, "acc_count", st->acc_count);
    meta_num(m, "acc_grad_norm", st->acc_grad_norm);
    meta_num(m, "acc_perturbed", st->acc_perturbed);
    meta_num(m, "acc_sharp", st->acc_sharp);
    meta_num(m, "acc_perturbed_count", st->acc_perturbed_count);
    meta_num(m, "acc_steps", (double)st->acc_steps);
    meta_num(m, "epoch_seconds", st->epoch_seconds);
    meta_num(m, "wall_seconds", st->wall_seconds + rundir_now() - rd->started);
    char sum[65];
    checkpoint_digest(m, ent, n, NULL, 0, sum);
    cJSON_AddStringToObject(m, "checksum", sum);
    char *path = path_in(rd, "checkpoint.safetensors");
    int rc = st_save(path, ent, n, m, false, e);
    free(path);
    cJSON_Delete(m);
    return rc;
}

/* The checkpoint's records: whole lines, epochs 0..st->epoch in order, each a JSON object. They
 * become rd->records and rebuild last/best. */
static int load_records(struct rundir *rd, struct st_file *f, const struct train_state *st,
                        size_t nbytes, struct err *e)
{
    rd->records = xmalloc(nbytes + 1);
    rd->records_cap = nbytes + 1;
    rd->records_len = nbytes;
    if (st_read_raw(f, "records", "U8", rd->records, nbytes, e) < 0)
        return -1;
    rd->records[nbytes] = 0;
    long want = 0;
    for (char *line = rd->records; *line; want++) {
        char *nl = strchr(line, '\n');
        cJSON *r = nl ? cJSON_ParseWithLength(line, (size_t)(nl - line)) : NULL;
        const cJSON *ep = r ? cJSON_GetObjectItemCaseSensitive(r, "epoch") : NULL;
        bool ok = cJSON_IsNumber(ep) && ep->valuedouble == (double)want && want <= st->epoch;
        if (ok)
            note_record(rd, r);
        cJSON_Delete(r);
        if (!ok)
            return err_set(e, "'%s': record %ld of the checkpoint is not epoch %ld's; the file is "
                              "damaged (use --force to start over)",
                           f->path, want + 1, want);
        line = nl + 1;
    }
    rd->records[nbytes] = 0;
    if (want != st->epoch + 1)
        return err_set(e, "'%s': the checkpoint holds records of epochs 0..%ld, not 0..%ld; the "
                          "file is damaged (use --force to start over)",
                       f->path, want - 1, st->epoch);
    return 0;
}

static int load_checkpoint(struct rundir *rd, struct experiment *x, struct train_state *st,
                           const char *path, struct err *e)
{
    struct st_file f;
    if (st_open(&f, path, e) < 0)
        return -1;
    int rc = 0;
    char sha[65];
    sha256_hex(x->resolved, strlen(x->resolved), sha);
    const char *csha = st_meta(&f, "config_sha256");
    if (!csha || strcmp(csha, sha) != 0) {
        rc = err_cfg(e, "'%s': checkpoint of a different config; use --force to start over",
                     path);
        goto out;
    }
    /* The work split and the BLAS core change the numbers (the thread count does not,
     * blas.h): a resume must use the same. */
    const char *blk = st_meta(&f, "work_blocks"), *core = st_meta(&f, "openblas_core");
    if (!blk || !core) {
        rc = err_set(e, "'%s': checkpoint lacks 'work_blocks' or 'openblas_core' (an older "
                        "samx, whose results depended on the thread count, wrote it); use "
                        "--force to start over",
                     path);
        goto out;
    }
    /* Numbers in range before they are compared: a damaged one is the file's fault, not
     * another samx's split or process count. */
    double nblk, nworld = 1;
    if (meta_range(&f, "work_blocks", 1, INT_MAX, true, &nblk, e) < 0 ||
        (st_meta(&f, "world_size") &&
         meta_range(&f, "world_size", 1, INT_MAX, true, &nworld, e) < 0)) {
        rc = -1;
        goto out;
    }
    if ((int)nblk != work_blocks() || strcmp(core, blas_corename())) {
        rc = err_cfg(e, "'%s': trained with OpenBLAS core %s and a work split of %d blocks, "
                        "this run has %s and %d; resume with OPENBLAS_CORETYPE=%s (and a samx "
                        "of the same split), or --force to start over",
                     rd->dir, core, (int)nblk, blas_corename(), work_blocks(), core);
        goto out;
    }
    /* The shards, and so the sums' order, follow the number of processes (dist.h). */
    int world = (int)nworld;
    if (world != dist_size()) {
        rc = err_cfg(e, "'%s': trained by %d process%s, this run has %d; resume with the same "
                        "number (mpirun -np %d), or --force to start over",
                     rd->dir, world, world == 1 ? "" : "es", dist_size(), world);
        goto out;
    }
    const char *status = st_meta(&f, "status");
    int si = -1;
    for (int i = 0; status && run_status_names[i]; i++)
        if (!strcmp(status, run_status_names[i]))
            si = i;
    if (si < 0 || si == RUN_FAILED) {
        rc = err_set(e, "'%s': checkpoint status '%s' is not one a checkpoint has; the file is "
                        "damaged (use --force to start over)",
                     path, status ? status : "(none)");
        goto out;
    }
    st->status = si == RUN_INTERRUPTED ? RUN_RUNNING : (enum run_status)si;
    /* Every field in range before anything is used. */
    double spe = (double)x->steps_per_epoch, bs = (double)x->batch_size;
    double ep, sie, step, acc_steps, nrec;
    if (meta_range(&f, "epoch", 0, (double)x->epochs, true, &ep, e) < 0 ||
        meta_range(&f, "step_in_epoch", 0, spe > 0 ? spe - 1 : 0, true, &sie, e) < 0 ||
        meta_range(&f, "step", 0, ep * spe + sie, true, &step, e) < 0 ||
        meta_range(&f, "acc_steps", sie, sie, true, &acc_steps, e) < 0 ||
        meta_range(&f, "records_bytes", 1, (double)f.data_len, true, &nrec, e) < 0) {
        rc = -1;
        goto out;
    }
    /* A diverged epoch ends early; every other checkpoint sits exactly at its position. */
    if ((st->status != RUN_DIVERGED && step != ep * spe + sie) ||
        (st->status == RUN_COMPLETED && (ep != (double)x->epochs || sie != 0)) ||
        (st->status == RUN_DIVERGED && sie != 0)) {
        rc = err_set(e, "'%s': checkpoint position (epoch %.0f, step %.0f, step in epoch %.0f, "
                        "status %s) is inconsistent; the file is damaged (use --force to start "
                        "over)",
                     path, ep, step, sie, status);
        goto out;
    }
    st->epoch = (long)ep;
    st->step = (long)step;
    st->step_in_epoch = (long)sie;
    st->acc_steps = (long)acc_steps;
    st->have_epoch0 = true;
    struct {
        const char *key;
        double lo, hi;
        double *dst;
    } d[] = {{"grad_evals", 0, INFINITY, &st->grad_evals},
             {"acc_count", 0, sie * bs, &st->acc_count},
             {"acc_hit", 0, sie * bs, &st->acc_hit},
             {"acc_perturbed_count", 0, sie * bs, &st->acc_perturbed_count},
             {"acc_loss", -INFINITY, INFINITY, &st->acc_loss},
             {"acc_grad_norm", 0, INFINITY, &st->acc_grad_norm},
             {"acc_perturbed", -INFINITY, INFINITY, &st->acc_perturbed},
             {"acc_sharp", -INFINITY, INFINITY, &st->acc_sharp},
             {"epoch_seconds", 0, INFINITY, &st->epoch_seconds},
             {"wall_seconds", 0, INFINITY, &st->wall_seconds}};
    for (size_t i = 0; i < sizeof d / sizeof d[0] && rc == 0; i++)
        rc = meta_range(&f, d[i].key, d[i].lo, d[i].hi, false, d[i].dst, e);
    /* The optimizers' scalar state, each in the range its method declares (optim_state). */
    for (struct optim *o = &x->optim; o && rc == 0; o = o->base) {
        const char *pre = o == &x->optim ? "optim" : "optim.base";
        for (int i = 0; i < o->n_state && rc == 0; i++) {
            char key[128];
            snprintf(key, sizeof key, "%s.%s", pre, o->state_name[i]);
            rc = meta_range(&f, key, o->state_lo[i], o->state_hi[i], o->state_int[i],
                            o->state[i], e);
        }
    }
    if (rc < 0)
        goto out;
    /* Then the checksum, before a single byte of the tensors is used. */
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(f.hdr, "__metadata__");
    const char *want = st_meta(&f, "checksum");
    char got[65];
    checkpoint_digest(meta, NULL, 0, f.data, f.data_len, got);
    if (!want || strcmp(want, got) != 0) {
        rc = err_set(e, "'%s': checksum %s, expected %.16s...; the file is damaged (use --force "
                        "to start over)",
                     path, want ? "does not match" : "missing", got);
        goto out;
    }
    struct params *p = &x->model.p;
    for (int i = 0; i < p->nt && rc == 0; i++)
        rc = st_read_f32(&f, &p->t[i], p->w + p->t[i].off, e);
    for (int i = 0; i < x->model.buf.nt && rc == 0; i++)
        rc = st_read_f32(&f, &x->model.buf.t[i], x->model.buf.w + x->model.buf.t[i].off, e);
    for (struct optim *o = &x->optim; o && rc == 0; o = o->base) {
        const char *pre = o == &x->optim ? "optim" : "optim.base";
        for (int i = 0; i < o->n_buf && rc == 0; i++) {
            char name[96];
            snprintf(name, sizeof name, "%s.%s", pre, o->buf_name[i]);
            rc = st_read_raw(&f, name, "F32", o->buf[i], p->n * sizeof(float), e);
        }
    }
    if (rc == 0)
        rc = load_records(rd, &f, st, (size_t)nrec, e);
out:
    st_close(&f);
    return rc;
}

/* metrics.jsonl must begin with the checkpoint's records (rd->records); records after them are
 * of an epoch the resumed run computes again. A file that does not is restored from them. */
static int restore_metrics(struct rundir *rd, struct err *e)
{
    char *path = path_in(rd, "metrics.jsonl"), *buf = NULL;
    size_t len = 0, n = rd->records_len;
    bool have = io_exists(path);
    if (have && io_read_all(path, &buf, &len, e) < 0) {
        free(path);
        return -1;
    }
    bool prefix = have && len >= n && memcmp(buf, rd->records, n) == 0;
    if (!prefix) {
        long line = 1, last = 0;
        for (size_t i = 0; i < n && i < len && buf[i] == rd->records[i]; i++)
            line += buf[i] == '\n';
        for (size_t i = 0; i < n; i++)
            last += rd->records[i] == '\n';
        char what[64];
        if (!have || len == 0)
            snprintf(what, sizeof what, "is %s", have ? "empty" : "missing");
        else
            snprintf(what, sizeof what, "line %ld does not match the checkpoint", line);
        fprintf(stderr, "samx: warning: '%s' %s; restored the records of epochs 0..%ld from "
                        "checkpoint.safetensors\n",
                path, what, last - 1);
    }
    int rc = prefix && len == n ? 0 : io_write_atomic(path, rd->records, n, e);
    free(buf);
    free(path);
    return rc;
}

static void remove_file(struct rundir *rd, const char *file)
{
    char *p = path_in(rd, file);
    unlink(p);
    free(p);
}

static void remove_run_files(struct rundir *rd)
{
    static const char *const files[] = {"summary.json", "metrics.jsonl", "checkpoint.safetensors",
                                        "model.safetensors", "meta.json", "best.safetensors",
                                        NULL};
    for (int i = 0; files[i]; i++)
        remove_file(rd, files[i]);
}

/* Half-written "<file>.tmp.<pid>" of a killed writer (io.h); only called under the lock. */
static void remove_stale_tmp(struct rundir *rd)
{
    struct dirent **ents;
    int n = scandir(rd->dir, &ents, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (strstr(ents[i]->d_name, ".tmp."))
            remove_file(rd, ents[i]->d_name);
        free(ents[i]);
    }
    if (n >= 0)
        free(ents);
}

/* The config.yaml of dir equals resolved. */
static bool same_config(const char *dir, const char *resolved)
{
    char *p = xasprintf("%s/config.yaml", dir), *s = NULL;
    struct err ignored = {0};
    bool same = io_exists(p) && io_read_all(p, &s, NULL, &ignored) == 0 && !strcmp(s, resolved);
    free(s);
    free(p);
    return same;
}

bool rundir_holds(const char *dir, const struct experiment *x)
{
    char *meta = xasprintf("%s/meta.json", dir);
    bool run = io_exists(meta);
    free(meta);
    return run && same_config(dir, x->resolved);
}

char *rundir_find(const char *parent, const struct experiment *x)
{
    char *mine = xasprintf("%s/%s", parent, x->run_id);
    if (same_config(mine, x->resolved))
        return mine;
    free(mine);
    const char *hash = strrchr(x->run_id, '-');
    struct dirent **ents;
    int n = hash ? scandir(parent, &ents, NULL, alphasort) : -1;
    char *found = NULL;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(ents[i]->d_name), hl = strlen(hash);
        if (!found && len > hl && !strcmp(ents[i]->d_name + len - hl, hash)) {
            char *d = xasprintf("%s/%s", parent, ents[i]->d_name);
            if (same_config(d, x->resolved))
                found = d;
            else
                free(d);
        }
        free(ents[i]);
    }
    if (n >= 0)
        free(ents);
    return found;
}

/* The record summary.json calls best: by keep_best's key, else val (or test) accuracy or loss. */
static void best_rule(struct rundir *rd, const struct experiment *x)
{
    bool has_val = x->data.val.n > 0, classify = x->data.train.n_classes > 0;
    rd->best_by = has_val ? (classify ? "val_acc" : "val_loss")
                          : (classify ? "test_acc" : "test_loss");
    rd->best_max = classify;
    if (x->keep_best) { /* train.keep_best selects the best record */
        rd->best_by = x->keep_best;
        rd->best_max = x->keep_best_max;
    }
}

void rundir_follow(struct rundir *rd, const char *dir, const struct experiment *x,
                   const char *records, size_t len)
{
    memset(rd, 0, sizeof *rd);
    rd->lock_fd = -1;
    rd->follower = true;
    rd->dir = xstrdup(dir);
    rd->started = rundir_now();
    iso_time(rd->start_time);
    best_rule(rd, x);
    rd->records = xmalloc(len + 1);
    rd->records_cap = len + 1;
    rd->records_len = len;
    memcpy(rd->records, records, len);
    rd->records[len] = 0;
    for (const char *line = rd->records; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        cJSON *r = cJSON_ParseWithLength(line, n);
        if (r)
            note_record(rd, r);
        cJSON_Delete(r);
        line += n + (nl ? 1 : 0);
    }
}

int rundir_open(struct rundir *rd, const char *dir, struct experiment *x, struct train_state *st,
                bool force, const char *command_line, bool *done, struct err *e)
{
    memset(rd, 0, sizeof *rd);
    memset(st, 0, sizeof *st);
    rd->lock_fd = -1;
    *done = false;
    rd->dir = xstrdup(dir);
    rd->started = rundir_now();
    iso_time(rd->start_time);
    best_rule(rd, x);
    if (io_mkdir_p(dir, e) < 0)
        return -1;
    char *cfg_path = path_in(rd, "config.yaml"), *ck = path_in(rd, "checkpoint.safetensors");
    char *sum_path = path_in(rd, "summary.json"), *lock = path_in(rd, ".lock");
    int rc = io_lock(lock, &rd->lock_fd, e);
    char *old = NULL;
    if (rc != 0) {
        if (rc > 0) {
            rc = err_set(e, "'%s': busy: another samx is training this run directory", dir);
            e->status = SAMX_EXIT_BUSY;
        }
        goto out;
    }
    remove_stale_tmp(rd);
    if (!force && io_exists(cfg_path)) {
        if (io_read_all(cfg_path, &old, NULL, e) < 0) {
            rc = -1;
            goto out;
        }
        if (strcmp(old, x->resolved) != 0) {
            rc = err_cfg(e, "'%s' holds a run of a different config; use --force to replace it",
                         dir);
            goto out;
        }
    }
    if (force)
        remove_run_files(rd);
    if (!force && io_exists(sum_path)) {
        char *s = NULL;
        if (io_read_all(sum_path, &s, NULL, e) < 0) {
            rc = -1;
            goto out;
        }
        cJSON *j = cJSON_Parse(s);
        const cJSON *status = j ? cJSON_GetObjectItemCaseSensitive(j, "status") : NULL;
        *done = cJSON_IsString(status) && (!strcmp(status->valuestring, "completed") ||
                                           !strcmp(status->valuestring, "diverged") ||
                                           !strcmp(status->valuestring, "stopped"));
        cJSON_Delete(j);
        free(s);
        if (*done)
            goto out;
    }
    if (!force && io_exists(ck)) {
        if (load_checkpoint(rd, x, st, ck, e) < 0 || restore_metrics(rd, e) < 0) {
            rc = -1;
            goto out;
        }
    } else {
        remove_run_files(rd);
    }
    /* The previous invocation's summary (interrupted, failed) no longer describes the run. */
    remove_file(rd, "summary.json");
    if (io_write_atomic(cfg_path, x->resolved, strlen(x->resolved), e) < 0) {
        rc = -1;
        goto out;
    }
    char *mp = path_in(rd, "metrics.jsonl");
    rd->metrics = fopen(mp, "a");
    if (!rd->metrics)
        rc = err_set(e, "cannot open '%s': %s", mp, strerror(errno));
    free(mp);
    if (rc == 0)
        rc = write_meta(rd, x, st, command_line, rd->start_time, e);
out:
    free(old);
    free(cfg_path);
    free(ck);
    free(sum_path);
    free(lock);
    return rc;
}

int rundir_finish(struct rundir *rd, struct experiment *x, const struct train_state *st,
                  const char *command_line, struct err *e)
{
    if (rd->follower)
        return 0;
    struct params *p = &x->model.p;
    struct st_entry ent[2 * SAMX_MAX_TENSORS];
    st_entries_params(p, p->w, ent);
    int n_ent = entries_buffers(&x->model, ent, p->nt);
    char *mp = path_in(rd, "model.safetensors");
    int rc = 0;
    if (st->status != RUN_INTERRUPTED)
        rc = st_save(mp, ent, n_ent, NULL, true, e);
    free(mp);
    /* meta.json before summary.json: summary.json is the result and comes last (rundir.h). */
    if (rc == 0)
        rc = write_meta(rd, x, st, command_line, rd->start_time, e);
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "status", run_status_names[st->status]);
    cJSON_AddNumberToObject(s, "epochs_completed", (double)st->epoch);
    cJSON_AddItemToObject(s, "final", rd->last ? cJSON_Duplicate(rd->last, 1) : cJSON_CreateNull());
    cJSON_AddItemToObject(s, "best", rd->best ? cJSON_Duplicate(rd->best, 1) : cJSON_CreateNull());
    cJSON_AddStringToObject(s, "best_by", rd->best_by);
    /* the split "best" was selected on: test when there is no validation split */
    cJSON_AddStringToObject(s, "best_on", x->data.val.n > 0 ? "validation" : "test");
    if (x->keep_best) /* train.keep_best: best.safetensors holds this epoch's weights */
        cJSON_AddItemToObject(s, "best_epoch",
                              rd->best ? cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(
                                                             rd->best, "epoch"), 1)
                                       : cJSON_CreateNull());
    cJSON_AddNumberToObject(s, "wall_seconds", st->wall_seconds + rundir_now() - rd->started);
    cJSON_AddNumberToObject(s, "grad_evals", st->grad_evals);
    if (rc == 0)
        rc = write_json(rd, "summary.json", s, e);
    cJSON_Delete(s);
    return rc;
}

void rundir_close(struct rundir *rd)
{
    if (rd->metrics)
        fclose(rd->metrics);
    cJSON_Delete(rd->last);
    cJSON_Delete(rd->best);
    free(rd->records);
    free(rd->dir);
    if (rd->lock_fd >= 0)
        close(rd->lock_fd); /* releases the flock */
    memset(rd, 0, sizeof *rd);
    rd->lock_fd = -1;
}
