/* plot.c: per-group mean ± std curves of a per-epoch metric, as gnuplot data, script and figure
 * (contract in plot.h). */
#include "plot.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "table.h"

struct point {
    double x, y;
};

static int cmp_point(const void *pa, const void *pb)
{
    const struct point *a = pa, *b = pb;
    return a->x < b->x ? -1 : a->x > b->x ? 1 : 0;
}

/* Append run dir's (x, y) pairs; a key that no record of the run has is a misspelling. */
static int read_curve(const char *dir, const char *xk, const char *yk, struct point **pts,
                      int *n, struct err *e)
{
    char *path = xasprintf("%s/metrics.jsonl", dir), *buf;
    int rc = io_read_all(path, &buf, NULL, e);
    if (rc < 0) {
        free(path);
        return -1;
    }
    bool seen_x = false, seen_y = false;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        const cJSON *x = rec ? cJSON_GetObjectItemCaseSensitive(rec, xk) : NULL;
        const cJSON *y = rec ? cJSON_GetObjectItemCaseSensitive(rec, yk) : NULL;
        seen_x = seen_x || x;
        seen_y = seen_y || y;
        if (cJSON_IsNumber(x) && cJSON_IsNumber(y)) {
            *pts = xrealloc(*pts, (size_t)(*n + 1) * sizeof **pts);
            (*pts)[(*n)++] = (struct point){x->valuedouble, y->valuedouble};
        }
        cJSON_Delete(rec);
    }
    free(buf);
    if (!seen_x || !seen_y)
        rc = err_cfg(e, "'%s' is not a key of the records in '%s'", seen_x ? yk : xk, path);
    free(path);
    return rc;
}

/* Write one data block per group with points; labels[j] and blocks[j] (-1: no points) say
 * which. */
static char *make_dat(const struct runset *rs, const struct plot_opts *o, char **labels,
                      int *blocks, int *n_blocks, struct err *e)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    const char *xk = o->x ? o->x : "epoch";
    fprintf(f, "# samx plot: %s against %s; per group, the mean and sample std (n - 1) over its "
               "completed runs\n# columns: x mean mean-std mean+std n\n",
            o->y, xk);
    *n_blocks = 0;
    int rc = 0;
    for (int j = 0; j < rs->n_grp && rc == 0; j++) {
        const struct table_group *g = &rs->grp[j];
        struct point *pts = NULL;
        int n = 0, n_runs = 0;
        for (int i = 0; i < g->n_run && rc == 0; i++) {
            const struct table_run *r = &rs->run[g->run[i]];
            if (strcmp(r->status, "completed") != 0)
                continue;
            n_runs++;
            rc = read_curve(r->dir, xk, o->y, &pts, &n, e);
        }
        char *label = NULL;
        size_t llen = 0;
        FILE *lf = open_memstream(&label, &llen);
        if (!lf)
            SAMX_BUG("open_memstream failed");
        for (int k = 0; k < rs->n_keys; k++)
            fprintf(lf, "%s%s=%s", k ? ", " : "", rs->keys[k], g->gval[k]);
        fprintf(lf, "%s%d run%s", rs->n_keys ? " (" : "", n_runs, n_runs == 1 ? "" : "s");
        fputs(rs->n_keys ? ")" : "", lf);
        fclose(lf);
        labels[j] = label;
        blocks[j] = -1;
        if (rc < 0 || n == 0) {
            free(pts);
            continue;
        }
        /* stable enough: equal x values are pooled, so their order does not matter */
        qsort(pts, (size_t)n, sizeof *pts, cmp_point);
        fprintf(f, "%s# block %d: %s\n", *n_blocks ? "\n\n" : "", *n_blocks, label);
        blocks[j] = (*n_blocks)++;
        for (int a = 0; a < n;) {
            int b = a;
            double sum = 0, ss = 0;
            while (b < n && pts[b].x == pts[a].x)
                sum += pts[b++].y;
            int m = b - a;
            double mean = sum / m;
            for (int i = a; i < b; i++)
                ss += (pts[i].y - mean) * (pts[i].y - mean);
            double sd = m > 1 ? sqrt(ss / (m - 1)) : 0;
            fprintf(f, "%.10g %.10g %.10g %.10g %d\n", pts[a].x, mean, mean - sd, mean + sd, m);
            a = b;
        }
        free(pts);
    }
    fclose(f);
    if (rc == 0 && *n_blocks == 0)
        rc = err_set(e, "no completed run has records of '%s' to plot", o->y);
    if (rc < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static char *make_gp(const struct runset *rs, const struct plot_opts *o, const char *base,
                     const char *ext, const char *fig, char **labels, const int *blocks)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    bool dumb = !strcmp(ext, "txt");
    fprintf(f, "# samx plot: %s against %s from %s.dat. Run in this directory: gnuplot %s.gp\n"
               "# (gnuplot -e \"outfile='other.png'\" %s.gp writes elsewhere, same terminal)\n",
            o->y, o->x ? o->x : "epoch", base, base, base);
    fprintf(f, "if (!exists(\"outfile\")) outfile = ");
    io_put_quoted(f, fig);
    fprintf(f, "\n");
    if (!strcmp(ext, "png"))
        fprintf(f, "set terminal pngcairo size 960,600 noenhanced font ',11'\n");
    else if (!strcmp(ext, "svg"))
        fprintf(f, "set terminal svg size 960,600 noenhanced font 'sans,11'\n");
    else if (!strcmp(ext, "pdf"))
        fprintf(f, "set terminal pdfcairo size 6.4in,4in noenhanced font ',10'\n");
    else
        fprintf(f, "set terminal dumb size 100,32 noenhanced\n");
    fprintf(f, "set output outfile\nset xlabel ");
    io_put_quoted(f, o->x ? o->x : "epoch");
    fprintf(f, "\nset ylabel ");
    io_put_quoted(f, o->y);
    fprintf(f, "\nset key below\n%s", dumb ? "" : "set grid\n");
    fprintf(f, "plot");
    bool first = true;
    for (int j = 0; j < rs->n_grp; j++) {
        if (blocks[j] < 0)
            continue;
        int lc = blocks[j] + 1;
        /* the band under the line, so the line stays visible; the dumb terminal has no fill */
        if (!dumb) {
            fprintf(f, "%s \\\n    '%s.dat' index %d using 1:3:4 with filledcurves "
                       "fillstyle transparent solid 0.2 noborder lc %d notitle",
                    first ? "" : ",", base, blocks[j], lc);
            first = false;
        }
        fprintf(f, "%s \\\n    '%s.dat' index %d using 1:2 with %s lc %d title ", first ? "" : ",",
                base, blocks[j], dumb ? "lines" : "linespoints pt 7 ps 0.6", lc);
        io_put_quoted(f, labels[j]);
        first = false;
    }
    fprintf(f, "\n");
    fclose(f);
    return s;
}

static bool have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        char *full = xasprintf("%.*s/%s", (int)n, p, name);
        bool ok = n > 0 && access(full, X_OK) == 0;
        free(full);
        if (ok)
            return true;
        p += n + (p[n] == ':');
    }
    return false;
}

/* gnuplot draws into a temporary name in the figure's directory, renamed when it succeeded, so
 * a failed or interrupted plot never leaves a half-drawn figure under the final name. */
static int draw(const char *dir, const char *base, const char *fig, struct err *e)
{
    char *tmp = xasprintf("%s.tmp.%ld", fig, (long)getpid());
    char *arg = xasprintf("outfile='%s'", tmp), *gp = xasprintf("%s.gp", base);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(dir) < 0)
            _exit(127);
        execlp("gnuplot", "gnuplot", "-e", arg, gp, (char *)NULL);
        _exit(127);
    }
    int ws = 0, rc = 0;
    while (pid > 0 && waitpid(pid, &ws, 0) < 0 && errno == EINTR)
        ;
    char *tmp_path = xasprintf("%s/%s", dir, tmp), *fig_path = xasprintf("%s/%s", dir, fig);
    struct stat st;
    if (pid < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0 || stat(tmp_path, &st) < 0 ||
        st.st_size == 0) {
        unlink(tmp_path);
        rc = err_set(e, "gnuplot failed on '%s/%s' (its message is above)", dir, gp);
    } else if (rename(tmp_path, fig_path) < 0) {
        rc = err_set(e, "cannot write '%s': %s", fig_path, strerror(errno));
        unlink(tmp_path);
    }
    free(tmp);
    free(arg);
    free(gp);
    free(tmp_path);
    free(fig_path);
    return rc;
}

int plot_main(const struct plot_opts *o, struct err *e)
{
    if (!o->y || !*o->y)
        return err_cfg(e, "--y NAME is required (a key of metrics.jsonl, e.g. test_acc)");
    char *out = o->out ? xstrdup(o->out) : xasprintf("%s.png", o->y);
    char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    const char *ext = dot && (!slash || dot > slash) ? dot + 1 : "";
    if (strcmp(ext, "png") && strcmp(ext, "svg") && strcmp(ext, "pdf") && strcmp(ext, "txt")) {
        err_cfg(e, "-o '%s': the figure must end in .png, .svg, .pdf or .txt", out);
        free(out);
        return -1;
    }
    /* dir, base (the name without extension) and fig (the name) of the output */
    char *dir = slash ? xasprintf("%.*s", (int)(slash - out), out) : xstrdup(".");
    if (!*dir) {
        free(dir);
        dir = xstrdup("/");
    }
    char *fig = xstrdup(slash ? slash + 1 : out);
    char *base = xasprintf("%.*s", (int)(strrchr(fig, '.') - fig), fig);
    struct runset rs;
    int rc = runset_load(&rs, o->dirs, o->n_dirs, o->group, e);
    char **labels = xcalloc((size_t)rs.n_grp + 1, sizeof *labels);
    int *blocks = xcalloc((size_t)rs.n_grp + 1, sizeof *blocks), n_blocks = 0;
    char *dat = NULL, *gp = NULL;
    if (rc == 0 && !(dat = make_dat(&rs, o, labels, blocks, &n_blocks, e)))
        rc = -1;
    if (rc == 0) {
        gp = make_gp(&rs, o, base, ext, fig, labels, blocks);
        char *dat_path = xasprintf("%s/%s.dat", dir, base), *gp_path = xasprintf("%s/%s.gp", dir,
                                                                                  base);
        if (io_mkdir_p(dir, e) < 0 || io_write_atomic(dat_path, dat, strlen(dat), e) < 0 ||
            io_write_atomic(gp_path, gp, strlen(gp), e) < 0)
            rc = -1;
        else if (!have_program("gnuplot"))
            samx_warn("gnuplot is not installed (Debian: gnuplot-nox), so no '%s'; wrote '%s' "
                      "and '%s' (draw with: cd '%s' && gnuplot %s.gp)",
                      out, dat_path, gp_path, dir, base);
        else
            rc = draw(dir, base, fig, e);
        free(dat_path);
        free(gp_path);
    }
    for (int j = 0; j < rs.n_grp; j++)
        free(labels[j]);
    free(labels);
    free(blocks);
    free(dat);
    free(gp);
    runset_free(&rs);
    free(out);
    free(dir);
    free(fig);
    free(base);
    return rc;
}
