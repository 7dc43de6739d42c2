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

/* Append run dir's (x, y) pairs. *has_y: some record has y (a run may lack a measurement
 * others have); x missing from every record is a misspelling. */
static int read_curve(const char *dir, const char *xk, const char *yk, struct point **pts,
                      int *n, bool *has_y, char ***keys, int *n_keys, struct err *e)
{
    char *path = xasprintf("%s/metrics.jsonl", dir);
    cJSON **recs;
    int n_rec;
    int rc = table_read_records(path, &recs, &n_rec, e);
    if (rc < 0) {
        free(path);
        return -1;
    }
    bool seen_x = false;
    *has_y = false;
    for (int i = 0; i < n_rec; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(recs[i], xk);
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(recs[i], yk);
        seen_x = seen_x || x;
        *has_y = *has_y || y;
        if (cJSON_IsNumber(x) && cJSON_IsNumber(y)) {
            *pts = xrealloc(*pts, (size_t)(*n + 1) * sizeof **pts);
            (*pts)[(*n)++] = (struct point){x->valuedouble, y->valuedouble};
        }
    }
    /* the keys of the first run's last record, for "did you mean" */
    if (!*keys && n_rec) {
        for (const cJSON *k = recs[n_rec - 1]->child; k; k = k->next) {
            *keys = xrealloc(*keys, (size_t)(*n_keys + 1) * sizeof **keys);
            (*keys)[(*n_keys)++] = xstrdup(k->string);
        }
    }
    table_free_records(recs, n_rec);
    if (!seen_x && n_rec) {
        const char *near = table_suggest(xk, (const char *const *)*keys, *n_keys);
        rc = err_cfg(e, "--x '%s' is not a key of the records in '%s'%s%s%s", xk, path,
                     near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
    }
    free(path);
    return rc;
}

/* The legend label of group j, curve c: --labels' c-th, or its key=value pairs and run count. */
static char *group_label(const struct runset *rs, const struct plot_opts *o, int j, int c,
                         int n_runs)
{
    if (o->labels) {
        const char *p = o->labels;
        for (int k = 0; k < c && p; k++) {
            p = strchr(p, ',');
            p = p ? p + 1 : NULL;
        }
        if (p)
            return xasprintf("%.*s", (int)strcspn(p, ","), p);
    }
    char *label = NULL;
    size_t llen = 0;
    FILE *lf = open_memstream(&label, &llen);
    if (!lf)
        SAMX_BUG("open_memstream failed");
    for (int k = 0; k < rs->n_keys; k++)
        fprintf(lf, "%s%s=%s", k ? ", " : "", rs->keys[k], rs->grp[j].gshow[k]);
    fprintf(lf, "%s%d run%s", rs->n_keys ? " (" : "", n_runs, n_runs == 1 ? "" : "s");
    fputs(rs->n_keys ? ")" : "", lf);
    fclose(lf);
    return label;
}

struct figure {
    char **labels;
    int *blocks;     /* per group: its data block, or -1 (no points) */
    int n_blocks;
    double xmin, xmax;
    bool int_x;      /* every x an integer: integer ticks */
    double ymin, ymax; /* the positive values drawn (means and band ends), for a log y axis */
};

/* Write one data block per group with points (x >= the first x shown). */
static char *make_dat(const struct runset *rs, const struct plot_opts *o, struct figure *fg,
                      struct err *e)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    const char *xk = o->x ? o->x : "epoch", *band = o->band ? o->band : "std";
    bool sem = !strcmp(band, "sem");
    /* epoch 0 is the initialization: a figure of training starts at epoch 1 unless asked */
    double from = o->from_set ? o->from : !strcmp(xk, "epoch") ? 1 : -HUGE_VAL;
    fprintf(f, "# samx plot: %s against %s; per group, the mean and %s over its completed runs\n"
               "# columns: x mean mean-%s mean+%s n\n",
            o->y, xk, sem ? "standard error (sample std / sqrt n)" : "sample std (n - 1)",
            sem ? "se" : "std", sem ? "se" : "std");
    fg->n_blocks = 0;
    fg->xmin = HUGE_VAL;
    fg->xmax = -HUGE_VAL;
    fg->int_x = true;
    fg->ymin = HUGE_VAL;
    fg->ymax = -HUGE_VAL;
    char **keys = NULL, *left = NULL;
    int n_keys = 0, n_left = 0, rc = 0;
    size_t left_len = 0;
    FILE *lf = open_memstream(&left, &left_len);
    if (!lf)
        SAMX_BUG("open_memstream failed");
    for (int j = 0; j < rs->n_grp && rc == 0; j++) {
        const struct table_group *g = &rs->grp[j];
        struct point *pts = NULL;
        int n = 0, n_runs = 0, n_done = 0;
        for (int i = 0; i < g->n_run && rc == 0; i++) {
            const struct table_run *r = &rs->run[g->run[i]];
            if (strcmp(r->status, "completed") != 0)
                continue;
            n_done++;
            bool has_y = false;
            rc = read_curve(r->dir, xk, o->y, &pts, &n, &has_y, &keys, &n_keys, e);
            n_runs += has_y;
        }
        fg->blocks[j] = -1;
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (pts[i].x >= from)
                pts[kept++] = pts[i];
        n = kept;
        if (rc < 0 || n == 0) {
            if (rc == 0) {
                char *gl = group_label(rs, &(struct plot_opts){0}, j, j, n_done);
                fprintf(lf, "%s%s", n_left++ ? "; " : "", gl);
                free(gl);
            }
            free(pts);
            continue;
        }
        /* --labels name the curves drawn, in order */
        fg->labels[j] = group_label(rs, o, j, fg->n_blocks, n_runs);
        /* stable enough: equal x values are pooled, so their order does not matter */
        qsort(pts, (size_t)n, sizeof *pts, cmp_point);
        fprintf(f, "%s# block %d: %s\n", fg->n_blocks ? "\n\n" : "", fg->n_blocks,
                fg->labels[j]);
        fg->blocks[j] = fg->n_blocks++;
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
            if (sem)
                sd /= sqrt(m);
            if (!strcmp(band, "none"))
                sd = 0;
            fprintf(f, "%.10g %.10g %.10g %.10g %d\n", pts[a].x, mean, mean - sd, mean + sd, m);
            double ys[3] = {mean, mean - sd, mean + sd};
            for (int i = 0; i < 3; i++)
                if (ys[i] > 0) {
                    fg->ymin = fmin(fg->ymin, ys[i]);
                    fg->ymax = fmax(fg->ymax, ys[i]);
                }
            fg->xmin = fmin(fg->xmin, pts[a].x);
            fg->xmax = fmax(fg->xmax, pts[a].x);
            fg->int_x = fg->int_x && pts[a].x == floor(pts[a].x);
            a = b;
        }
        free(pts);
    }
    fclose(f);
    fclose(lf);
    if (rc == 0 && o->labels) {
        int n_lab = 1;
        for (const char *p = o->labels; *p; p++)
            n_lab += *p == ',';
        if (n_lab != fg->n_blocks)
            rc = err_cfg(e, "--labels names %d curve%s, the figure has %d", n_lab,
                         n_lab == 1 ? "" : "s", fg->n_blocks);
    }
    if (rc == 0 && fg->n_blocks == 0) {
        const char *near = table_suggest(o->y, (const char *const *)keys, n_keys);
        rc = err_cfg(e, "no completed run has records of '%s'%s to plot%s%s%s", o->y,
                     o->from_set || !strcmp(xk, "epoch") ? " at the x values shown" : "",
                     near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
    } else if (rc == 0 && n_left) {
        samx_warn("%d group%s without '%s' left out of the figure: %s", n_left,
                  n_left == 1 ? "" : "s", o->y, left);
    }
    for (int i = 0; i < n_keys; i++)
        free(keys[i]);
    free(keys);
    free(left);
    if (rc < 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* A log y axis over the values drawn, with labelled ticks even inside one decade (gnuplot
 * labels only powers of ten): 1-2-5 steps, else 1, 1.5, 2..9 per decade (1.5, so that the
 * widest gap, just above a power of ten, is labelled too), else 4 or more linear steps. */
static void put_log_y(FILE *f, const struct figure *fg)
{
    fprintf(f, "set logscale y\n");
    if (!(fg->ymin > 0 && fg->ymax >= fg->ymin))
        return;
    double lo = fg->ymin / 1.05, hi = fg->ymax * 1.05, tick[64];
    int n = 0;
    static const double mant[2][10] = {{1, 2, 5}, {1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9}};
    static const int n_mant[2] = {3, 10};
    for (int pass = 0; pass < 2 && n < 3; pass++) {
        n = 0;
        for (int d = (int)floor(log10(lo)); d <= (int)ceil(log10(hi)) && n < 60; d++)
            for (int k = 0; k < n_mant[pass] && n < 60; k++) {
                double v = mant[pass][k] * pow(10, d);
                if (v >= lo && v <= hi)
                    tick[n++] = v;
            }
    }
    if (n < 3) {
        /* the largest 1-2-5 step that still gives 4 or more ticks */
        double raw = (hi - lo) / 4, mag = pow(10, floor(log10(raw))), step = mag;
        if (5 * mag <= raw)
            step = 5 * mag;
        else if (2 * mag <= raw)
            step = 2 * mag;
        n = 0;
        for (double v = ceil(lo / step) * step; v <= hi && n < 60; v += step)
            tick[n++] = v;
    }
    fprintf(f, "set yrange [%.6g:%.6g]\nset ytics (", lo, hi);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.6g", i ? ", " : "", tick[i]);
    fprintf(f, ")\nset mytics 1\n");
}


/* The smallest of 1, 2, 5 times a power of ten that is >= s (s >= 1): tick steps that read as
 * round numbers (0, 50, 100 rather than 0, 39, 78). */
static double nice_step(double s)
{
    double p = pow(10, floor(log10(s)));
    return s <= p ? p : s <= 2 * p ? 2 * p : s <= 5 * p ? 5 * p : 10 * p;
}
static char *make_gp(const struct runset *rs, const struct plot_opts *o, const char *datname,
                     const char *gpname, const char *ext, const char *fig,
                     const struct figure *fg)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f)
        SAMX_BUG("open_memstream failed");
    bool dumb = !strcmp(ext, "txt");
    const char *band = o->band ? o->band : "std";
    fprintf(f, "# samx plot: %s against %s from %s. Run in this directory: gnuplot %s\n"
               "# (gnuplot -e \"outfile='other.png'\" %s writes elsewhere, same terminal)\n",
            o->y, o->x ? o->x : "epoch", datname, gpname, gpname);
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
    fprintf(f, "set output outfile\n");
    if (o->title) {
        fprintf(f, "set title ");
        io_put_quoted(f, o->title);
        fprintf(f, "\n");
    }
    fprintf(f, "set xlabel ");
    io_put_quoted(f, o->xlabel ? o->xlabel : o->x ? o->x : "epoch");
    fprintf(f, "\nset ylabel ");
    io_put_quoted(f, o->ylabel ? o->ylabel : o->y);
    fprintf(f, "\nset key below\n%s", dumb ? "" : "set grid\n");
    if (o->logy)
        put_log_y(f, fg);
    /* the bands' note sits above the frame: without a title, room is made for it */
    if (!dumb && strcmp(band, "none") != 0 && !o->title)
        fprintf(f, "set tmargin 2\n");
    if (!dumb && strcmp(band, "none") != 0)
        fprintf(f, "set label 1 '%s' at screen 0.99, screen 0.97 right font ',9'\n",
                !strcmp(band, "sem") ? "bands: mean ± standard error"
                                     : "bands: mean ± sample std (n-1)");
    /* integer x (epochs): integer ticks, at most about 10, over exactly the data's range */
    if (fg->int_x && fg->xmax >= fg->xmin) {
        double span = fg->xmax - fg->xmin, step = nice_step(fmax(1, ceil(span / 10)));
        /* steps of 5 and more start at a multiple of the step (5, 10, ... from epoch 1) */
        double first = step >= 5 ? ceil(fg->xmin / step) * step : fg->xmin;
        fprintf(f, "set xrange [%.10g:%.10g]\nset xtics %.10g, %.10g\nset mxtics 1\n",
                fg->xmin, fg->xmax > fg->xmin ? fg->xmax : fg->xmin + 1, first, step);
    }
    fprintf(f, "plot");
    bool first = true;
    for (int j = 0; j < rs->n_grp; j++) {
        if (fg->blocks[j] < 0)
            continue;
        int lc = fg->blocks[j] + 1;
        /* the band under the line, so the line stays visible; the dumb terminal has no fill */
        if (!dumb && strcmp(band, "none") != 0) {
            fprintf(f, "%s \\\n    '%s' index %d using 1:3:4 with filledcurves "
                       "fillstyle transparent solid 0.2 noborder lc %d notitle",
                    first ? "" : ",", datname, fg->blocks[j], lc);
            first = false;
        }
        fprintf(f, "%s \\\n    '%s' index %d using 1:2 with %s lc %d title ", first ? "" : ",",
                datname, fg->blocks[j], dumb ? "lines" : "linespoints pt 7 ps 0.6", lc);
        io_put_quoted(f, fg->labels[j]);
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
 * a failed or interrupted plot never leaves a half-drawn figure under the final name. Under -q
 * its stderr (warnings such as an empty y range) is held back and shown only if it fails. */
static int draw(const char *dir, const char *gpname, const char *fig, struct err *e)
{
    char *tmp = xasprintf("%s.tmp.%ld", fig, (long)getpid());
    char *arg = xasprintf("outfile='%s'", tmp), *gp = xstrdup(gpname);
    int hold[2] = {-1, -1};
    if (samx_quiet && pipe(hold) < 0)
        hold[0] = hold[1] = -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (hold[1] >= 0 && dup2(hold[1], 2) < 0)
            _exit(127);
        if (chdir(dir) < 0)
            _exit(127);
        execlp("gnuplot", "gnuplot", "-e", arg, gp, (char *)NULL);
        _exit(127);
    }
    char *said = NULL;
    size_t n_said = 0;
    if (hold[1] >= 0) {
        close(hold[1]);
        FILE *f = open_memstream(&said, &n_said);
        if (!f)
            SAMX_BUG("open_memstream failed");
        char buf[4096];
        ssize_t got;
        while ((got = read(hold[0], buf, sizeof buf)) > 0 || (got < 0 && errno == EINTR))
            if (got > 0)
                fwrite(buf, 1, (size_t)got, f);
        fclose(f);
        close(hold[0]);
    }
    int ws = 0, rc = 0;
    while (pid > 0 && waitpid(pid, &ws, 0) < 0 && errno == EINTR)
        ;
    char *tmp_path = xasprintf("%s/%s", dir, tmp), *fig_path = xasprintf("%s/%s", dir, fig);
    struct stat st;
    if (pid < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0 || stat(tmp_path, &st) < 0 ||
        st.st_size == 0) {
        unlink(tmp_path);
        if (n_said)
            fwrite(said, 1, n_said, stderr);
        rc = err_set(e, "gnuplot failed on '%s/%s' (its message is above)", dir, gp);
    } else if (rename(tmp_path, fig_path) < 0) {
        rc = err_set(e, "cannot write '%s': %s", fig_path, strerror(errno));
        unlink(tmp_path);
    }
    free(said);
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
    if (o->band && strcmp(o->band, "std") && strcmp(o->band, "sem") && strcmp(o->band, "none"))
        return err_cfg(e, "--band must be std, sem or none, got '%s'", o->band);
    char *out = o->out ? xstrdup(o->out) : xasprintf("%s.png", o->y);
    char *slash = strrchr(out, '/'), *dot = strrchr(out, '.');
    const char *ext = dot && (!slash || dot > slash) ? dot + 1 : "";
    if (strcmp(ext, "png") && strcmp(ext, "svg") && strcmp(ext, "pdf") && strcmp(ext, "txt")) {
        err_cfg(e, "-o '%s': the figure must end in .png, .svg, .pdf or .txt", out);
        free(out);
        return -1;
    }
    /* dir and fig (the file name) of the output; its data and script are named after the
     * whole file name (acc.png.dat, acc.png.gp), so acc.pdf beside it keeps its own */
    char *dir = slash ? xasprintf("%.*s", (int)(slash - out), out) : xstrdup(".");
    if (!*dir) {
        free(dir);
        dir = xstrdup("/");
    }
    char *fig = xstrdup(slash ? slash + 1 : out);
    char *datname = xasprintf("%s.dat", fig), *gpname = xasprintf("%s.gp", fig);
    struct runset rs;
    int rc = runset_load(&rs, o->dirs, o->n_dirs, o->group, e);
    struct figure fg = {.labels = xcalloc((size_t)rs.n_grp + 1, sizeof *fg.labels),
                        .blocks = xcalloc((size_t)rs.n_grp + 1, sizeof *fg.blocks)};
    char *dat = NULL, *gp = NULL;
    if (rc == 0)
        table_warn_mixed(&rs);
    if (rc == 0 && !(dat = make_dat(&rs, o, &fg, e)))
        rc = -1;
    if (rc == 0) {
        gp = make_gp(&rs, o, datname, gpname, ext, fig, &fg);
        char *dat_path = xasprintf("%s/%s", dir, datname), *gp_path = xasprintf("%s/%s", dir,
                                                                                gpname);
        if (io_mkdir_p(dir, e) < 0 || io_write_atomic(dat_path, dat, strlen(dat), e) < 0 ||
            io_write_atomic(gp_path, gp, strlen(gp), e) < 0)
            rc = -1;
        else if (!have_program("gnuplot"))
            samx_warn("gnuplot is not installed (Debian: gnuplot-nox), so no '%s'; wrote '%s' "
                      "and '%s' (draw with: cd '%s' && gnuplot %s)",
                      out, dat_path, gp_path, dir, gpname);
        else
            rc = draw(dir, gpname, fig, e);
        free(dat_path);
        free(gp_path);
    }
    for (int j = 0; j < rs.n_grp; j++)
        free(fg.labels[j]);
    free(fg.labels);
    free(fg.blocks);
    free(dat);
    free(gp);
    runset_free(&rs);
    free(out);
    free(dir);
    free(fig);
    free(datname);
    free(gpname);
    return rc;
}
