# behdin-mazumder figure; run.sh runs it inside results/ (reads ls.dat, kernel.dat, zoom.gp).
# Lines without points: closed forms of algorithms.md 6.2 (GD and un-normalized SAM), i.e.
# expectations over the label noise. Points: samx, GD and USAM: bias = the noiseless run,
# E risk = bias + the sum of the basis runs (exact). NSAM (no closed form): samx, bias = the
# noiseless run, E risk = Monte Carlo over the noise draws with GD on the same draws as control
# variate, variance = E risk - bias. NSAM iterates settle on a 2-cycle, so its curves alternate
# between two values; they are drawn as the mean of iterations k-1 and k (a2 below; the .dat and
# the tables hold the raw values).
set terminal png size 1300,900 font "DejaVuSans,8"   # libgd: a palette PNG, ~5x smaller than pngcairo
set output "behdin-mazumder.png"
set datafile columnheaders
load "zoom.gp"
set multiplot layout 3,4 title "Behdin and Mazumder v1 re-run with samx: GD vs SAM (placeholder setup, see README)"
set grid lc rgb "#dddddd"
set xlabel "iteration k" offset 0,0.5
set xrange [0:200]
set key top right samplen 1.5 spacing 0.85
cg = "#1f60c4"; cu = "#d62728"; cn = "#2ca02c"; cs = "#ff7f0e"
ev = 10
c(s) = column(s)
a2(x) = (a2_t = (c("k") == 0 ? x : (x + a2_p) / 2), a2_p = x, a2_t)   # mean with the previous row

do for [row = 1:3] {
    f = (row == 3) ? "kernel.dat" : "ls.dat"
    o = (row == 2) ? "_out" : ""
    lab = (row == 1) ? "LS in-sample" : ((row == 2) ? "LS out-of-sample" : "kernel (coeff. c) in-sample")
    if (row == 1) { set key } else { unset key }

    set logscale y
    set format y "10^{%T}"
    set title lab.": bias"
    plot f using "k":(c("gd_cf_bias".o)) with lines lc rgb cg lw 2 title "GD closed form", \
         "" using "k":(c("gd_bias".o)) every ev with points pt 6 ps 0.7 lc rgb cg title "GD samx", \
         "" using "k":(c("usam_cf_bias".o)) with lines lc rgb cu lw 2 title "USAM closed form", \
         "" using "k":(c("usam_bias".o)) every ev with points pt 4 ps 0.7 lc rgb cu title "USAM samx", \
         "" using "k":(a2(c("nsam_bias".o))) with lines lc rgb cn lw 1.2 title "NSAM samx", \
         "" using "k":(a2(c("nsam_s_bias".o))) with lines lc rgb cs lw 1.2 title "NSAM rho/10 samx"
    unset key
    unset logscale y
    set format y "%g"
    set title lab.": variance"
    plot f using "k":(c("gd_cf_var".o)) with lines lc rgb cg lw 2, \
         "" using "k":(c("gd_risk".o) - c("gd_bias".o)) every ev with points pt 6 ps 0.7 lc rgb cg, \
         "" using "k":(c("usam_cf_var".o)) with lines lc rgb cu lw 2, \
         "" using "k":(c("usam_risk".o) - c("usam_bias".o)) every ev with points pt 4 ps 0.7 lc rgb cu, \
         "" using "k":(a2(c("nsam_risk".o) - c("nsam_bias".o))) with lines lc rgb cn lw 1.2, \
         "" using "k":(a2(c("nsam_s_risk".o) - c("nsam_s_bias".o))) with lines lc rgb cs lw 1.2
    do for [zoom = 0:1] {
        if (zoom == 0) {
            set logscale y; set format y "10^{%T}"; set autoscale y
            set title lab.": E excess risk (test error)"
        } else {
            unset logscale y; set format y "%g"; set yrange [zlo[row]:zhi[row]]
            set title lab.": E risk, zoom on the minimum"
        }
        plot f using "k":(c("gd_cf_bias".o) + c("gd_cf_var".o)) with lines lc rgb cg lw 2, \
             "" using "k":(c("gd_risk".o)) every (zoom ? 4 : ev) with points pt 6 ps 0.6 lc rgb cg, \
             "" using "k":(c("usam_cf_bias".o) + c("usam_cf_var".o)) with lines lc rgb cu lw 2, \
             "" using "k":(c("usam_risk".o)) every (zoom ? 4 : ev) with points pt 4 ps 0.6 lc rgb cu, \
             "" using "k":(a2(c("nsam_risk".o))) with lines lc rgb cn lw 1.2, \
             "" using "k":(a2(c("nsam_s_risk".o))) with lines lc rgb cs lw 1.2
    }
    set autoscale y
}
unset multiplot
