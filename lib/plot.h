/* plot.h: samx plot, a per-epoch metric per group as mean with a band (interface.md 1).
 *
 * Runs are collected and grouped as by samx table (table.h), and only completed runs are
 * plotted (a partial curve would drag the mean at the epochs it reached). At each x value
 * (any record key, default epoch; from epoch 1 unless --from says otherwise, epoch 0 being the
 * initialization) the group's curve is the mean of y over the runs that have both, with the
 * sample std (n - 1; a zero band for one run) or the standard error (std / sqrt n) as band. A
 * group none of whose runs records y is left out and named in one warning line; y recorded by
 * no run is an error with a did-you-mean. A record line that is not JSON is an error naming
 * metrics.jsonl:LINE, never skipped. Integer x values get integer ticks over their range.
 *
 * Three files, always written beside each other (atomically): FILE.dat (one gnuplot data block
 * per curve: x, mean, mean - band, mean + band, n), FILE.gp (the gnuplot script; run it in its
 * directory: `gnuplot FILE.gp`) and FILE itself, drawn by gnuplot for .png (pngcairo), .svg,
 * .pdf (pdfcairo) or .txt (dumb, a terminal chart). FILE keeps its extension in the other two
 * names (acc.png.dat), so acc.png and acc.pdf never overwrite each other's. When gnuplot is not
 * installed the figure is skipped with one warning line on stderr and the command still
 * succeeds: the .dat and .gp are the result, and can be drawn on any machine that has gnuplot.
 * A gnuplot that fails is an error.
 */
#ifndef SAMX_PLOT_H
#define SAMX_PLOT_H

#include <stdbool.h>

#include "err.h"

struct plot_opts {
    const char *const *dirs;
    int n_dirs;
    const char *group;  /* comma-separated config keys, or NULL */
    const char *x;      /* [epoch] */
    const char *y;      /* required */
    const char *out;    /* FILE.png|.svg|.pdf|.txt [<y>.png] */
    const char *title;  /* NULL: none */
    const char *xlabel, *ylabel; /* [the x and y keys] */
    const char *labels; /* "a,b,c": legend labels in group order [key=value (n runs)] */
    const char *band;   /* std | sem | none [std] */
    bool logy;          /* log-scale y */
    double from;        /* the first x shown, when from_set [1 for epoch: no initialization] */
    bool from_set;
};

/* samx plot. 0, or -1 with e set (status 2 for usage/config, 1 for gnuplot failing). */
int plot_main(const struct plot_opts *o, struct err *e);

#endif
