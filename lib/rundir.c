#include "rundir.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "io.h"
#include "safetensors.h"
#include "train.h"
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

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void rundir_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool rundir_interrupted(void) { return interrupted != 0; }

void rundir_release_signals(void)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

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
    cJSON_AddNumberToObject(m, "omp_threads", threads_get());
    cJSON_AddNumberToObject(m, "openblas_threads", blas_threads());
    cJSON_AddStringToObject(m, "openblas_core", blas_corename());
    cJSON_AddStringToObject(m, "openblas_config", blas_config());
    cJSON_AddStringToObject(m, "openblas_parallel",
                            blas_parallel() == 2 ? "openmp" : blas_parallel() == 1 ? "pthreads"
                                                                                   : "serial");
    cJSON_AddStringToObject(m, "compiler", "gcc " __VERSION__);
    cJSON_AddStringToObject(m, "run_id", x->run_id);
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
    int bad = fprintf(rd->metrics, "%s\n", s) < 0 || fflush(rd->metrics) != 0;
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
    if (!s || (*v = strtod(s, &end), *end))
        return err_set(e, "'%s': checkpoint lacks '%s'", f->path, key);
    return 0;
}

/* Weights, model buffers (BatchNorm running statistics, issue 7), optimizer buffers. */
#define MAX_ENTRIES (2 * SAMX_MAX_TENSORS + 2 * OPTIM_MAX_BUF)

/* Append the model's buffers (m->buf) to the entries after its n weight tensors. */
static int entries_buffers(const struct model *m, struct st_entry *ent, int n)
{
    if (m->buf.nt == 0)
        return n;
    st_entries_params(&m->buf, m->buf.w, ent + n);
    return n + m->buf.nt;
}

int rundir_checkpoint(struct rundir *rd, struct experiment *x, const struct train_state *st,
                      struct err *e)
{
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
    char sha[65];
    sha256_hex(x->resolved, strlen(x->resolved), sha);
    cJSON_AddStringToObject(m, "config_sha256", sha);
    cJSON_AddStringToObject(m, "status", run_status_names[st->status]);
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
    char *path = path_in(rd, "checkpoint.safetensors");
    int rc = st_save(path, ent, n, m, false, e);
    free(path);
    cJSON_Delete(m);
    return rc;
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
        for (int i = 0; i < o->n_state && rc == 0; i++) {
            char key[128];
            snprintf(key, sizeof key, "%s.%s", pre, o->state_name[i]);
            rc = meta_get(&f, key, o->state[i], e);
        }
    }
    double v[9];
    static const char *const keys[] = {"epoch", "step", "step_in_epoch", "acc_steps"};
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = meta_get(&f, keys[i], &v[i], e);
    if (rc == 0) {
        st->epoch = (long)v[0];
        st->step = (long)v[1];
        st->step_in_epoch = (long)v[2];
        st->acc_steps = (long)v[3];
        st->have_epoch0 = true;
    }
    struct {
        const char *key;
        double *dst;
    } d[] = {{"grad_evals", &st->grad_evals},   {"acc_loss", &st->acc_loss},
             {"acc_hit", &st->acc_hit},         {"acc_count", &st->acc_count},
             {"acc_grad_norm", &st->acc_grad_norm}, {"acc_perturbed", &st->acc_perturbed},
             {"acc_sharp", &st->acc_sharp},
             {"acc_perturbed_count", &st->acc_perturbed_count},     {"epoch_seconds", &st->epoch_seconds},
             {"wall_seconds", &st->wall_seconds}};
    for (size_t i = 0; i < sizeof d / sizeof d[0] && rc == 0; i++)
        rc = meta_get(&f, d[i].key, d[i].dst, e);
out:
    st_close(&f);
    (void)rd;
    return rc;
}

/* Keep the records of epochs <= last (those the checkpoint has seen), rewrite the file, and
 * rebuild last/best from them. */
static int trim_metrics(struct rundir *rd, long last, struct err *e)
{
    char *path = path_in(rd, "metrics.jsonl"), *buf = NULL;
    size_t len = 0, keep = 0;
    int rc = 0;
    if (io_exists(path) && io_read_all(path, &buf, &len, e) < 0) {
        free(path);
        return -1;
    }
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            break; /* a line cut by a crash is not a record */
        *nl = 0;
        cJSON *r = cJSON_Parse(line);
        const cJSON *ep = r ? cJSON_GetObjectItemCaseSensitive(r, "epoch") : NULL;
        bool ok = cJSON_IsNumber(ep) && ep->valuedouble <= last;
        if (ok) {
            note_record(rd, r);
            *nl = '\n';
            keep = (size_t)(nl + 1 - buf);
        }
        cJSON_Delete(r);
        if (!ok)
            break;
        line = nl + 1;
    }
    rc = io_write_atomic(path, buf ? buf : "", keep, e);
    free(buf);
    free(path);
    return rc;
}

static void remove_run_files(struct rundir *rd)
{
    static const char *const files[] = {"metrics.jsonl", "summary.json", "checkpoint.safetensors",
                                        "model.safetensors", "meta.json", "best.safetensors",
                                        NULL};
    for (int i = 0; files[i]; i++) {
        char *p = path_in(rd, files[i]);
        unlink(p);
        free(p);
    }
}

int rundir_open(struct rundir *rd, const char *dir, struct experiment *x, struct train_state *st,
                bool force, const char *command_line, bool *done, struct err *e)
{
    memset(rd, 0, sizeof *rd);
    memset(st, 0, sizeof *st);
    *done = false;
    rd->dir = xstrdup(dir);
    rd->started = rundir_now();
    iso_time(rd->start_time);
    bool has_val = x->data.val.n > 0, classify = x->data.train.n_classes > 0;
    rd->best_by = has_val ? (classify ? "val_acc" : "val_loss")
                          : (classify ? "test_acc" : "test_loss");
    rd->best_max = classify;
    if (x->keep_best) { /* train.keep_best selects the best record */
        rd->best_by = x->keep_best;
        rd->best_max = x->keep_best_max;
    }
    if (io_mkdir_p(dir, e) < 0)
        return -1;
    char *cfg_path = path_in(rd, "config.yaml"), *ck = path_in(rd, "checkpoint.safetensors");
    char *sum_path = path_in(rd, "summary.json");
    int rc = 0;
    char *old = NULL;
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
        if (load_checkpoint(rd, x, st, ck, e) < 0 || trim_metrics(rd, st->epoch, e) < 0) {
            rc = -1;
            goto out;
        }
    } else {
        remove_run_files(rd);
    }
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
    return rc;
}

int rundir_finish(struct rundir *rd, struct experiment *x, const struct train_state *st,
                  const char *command_line, struct err *e)
{
    struct params *p = &x->model.p;
    struct st_entry ent[2 * SAMX_MAX_TENSORS];
    st_entries_params(p, p->w, ent);
    int n_ent = entries_buffers(&x->model, ent, p->nt);
    char *mp = path_in(rd, "model.safetensors");
    int rc = 0;
    if (st->status != RUN_INTERRUPTED)
        rc = st_save(mp, ent, n_ent, NULL, true, e);
    free(mp);
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "status", run_status_names[st->status]);
    cJSON_AddNumberToObject(s, "epochs_completed", (double)st->epoch);
    cJSON_AddItemToObject(s, "final", rd->last ? cJSON_Duplicate(rd->last, 1) : cJSON_CreateNull());
    cJSON_AddItemToObject(s, "best", rd->best ? cJSON_Duplicate(rd->best, 1) : cJSON_CreateNull());
    cJSON_AddStringToObject(s, "best_by", rd->best_by);
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
    if (rc == 0)
        rc = write_meta(rd, x, st, command_line, rd->start_time, e);
    return rc;
}

void rundir_close(struct rundir *rd)
{
    if (rd->metrics)
        fclose(rd->metrics);
    cJSON_Delete(rd->last);
    cJSON_Delete(rd->best);
    free(rd->dir);
    memset(rd, 0, sizeof *rd);
}
