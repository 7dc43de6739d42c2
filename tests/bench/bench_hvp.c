/* bench_hvp: the cost of one Hessian trace probe relative to one gradient evaluation, on the
 * eval.hessian_trace probe set of a config (configs/fmnist-hessian.yaml: the Fashion-MNIST MLP
 * 784-512-512-10 on 1024 training examples). Prints the best-of-5 wall time of: a gradient of
 * the mean loss over the probe set, an exact HVP (R-operator), a finite-difference HVP (two
 * gradients), and one Hutchinson probe (draw + exact HVP + dot), each also as a multiple of the
 * gradient, and the relative difference of the two HVPs. Weights are the config's
 * initialisation.
 *     bench_hvp CONFIG [THREADS [KEY=VALUE ...]]
 */
#include <stdio.h>
#include <stdlib.h>

#include "blas.h"
#include "measure.h"
#include "rundir.h"
#include "train.h"

static double best_of(int what, struct probe *pr, float *v, float *hv, int reps)
{
    double best = 1e30;
    struct rng r;
    rng_init(&r, 0, "bench", 0);
    struct trace_result tr;
    for (int k = 0; k < 5; k++) {
        double t0 = rundir_now();
        for (int i = 0; i < reps; i++) {
            if (what == 0)
                probe_grad(pr, hv);
            else if (what == 1)
                probe_hvp(pr, HVP_EXACT, v, hv);
            else if (what == 2)
                probe_hvp(pr, HVP_FINITE_DIFFERENCE, v, hv);
            else
                measure_trace(pr, HVP_EXACT, 1, 0, &r, v, hv, &tr);
        }
        double t = (rundir_now() - t0) / reps;
        best = t < best ? t : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_hvp CONFIG [THREADS [KEY=VALUE ...]]\n");
        return 2;
    }
    threads_set(argc > 2 ? atoi(argv[2]) : 1);
    struct run_opts o = {.config = argv[1], .quiet = true,
                         .overrides = (const char *const *)argv + 3,
                         .n_overrides = argc > 3 ? argc - 3 : 0};
    struct experiment x;
    struct err e = {0};
    if (experiment_build(&x, &o, &e) < 0) {
        fprintf(stderr, "bench_hvp: %s\n", e.msg);
        return 1;
    }
    struct probe *pr = &x.measure.trace.pr;
    if (!x.measure.trace.on) {
        fprintf(stderr, "bench_hvp: the config has no eval.hessian_trace\n");
        return 2;
    }
    size_t n = x.model.p.n;
    float *v = xfloats(n), *hv = xfloats(n);
    for (size_t i = 0; i < n; i++)
        v[i] = (i % 3) ? 1.0f : -1.0f;
    probe_grad(pr, hv); /* warm up caches and the BLAS thread pool */
    probe_hvp(pr, HVP_EXACT, v, hv);
    double tg = best_of(0, pr, v, hv, 3), te = best_of(1, pr, v, hv, 3);
    double tf = best_of(2, pr, v, hv, 3), tp = best_of(3, pr, v, hv, 3);
    printf("model %s, %zu parameters, %d probe examples (chunks of %d), %d threads\n",
           x.model.ops->name, n, pr->n, pr->chunk, threads_get());
    printf("gradient               %8.2f ms   1.00\n", 1e3 * tg);
    printf("exact HVP              %8.2f ms   %.2f\n", 1e3 * te, te / tg);
    printf("finite-difference HVP  %8.2f ms   %.2f\n", 1e3 * tf, tf / tg);
    printf("Hutchinson probe       %8.2f ms   %.2f\n", 1e3 * tp, tp / tg);
    /* How far apart the two HVPs are on this model (ReLU: kinks inside the FD step count). */
    float *h2 = xfloats(n);
    probe_hvp(pr, HVP_EXACT, v, hv);
    probe_hvp(pr, HVP_FINITE_DIFFERENCE, v, h2);
    double hn = vec_nrm2(n, hv);
    vec_axpy(n, -1.0f, hv, h2);
    printf("||Hv_exact - Hv_fd|| / ||Hv_exact|| = %.2g (FD step h ||v|| = %.3g)\n",
           vec_nrm2(n, h2) / hn, measure_fd_step(n, x.model.p.w, v) * vec_nrm2(n, v));
    free(h2);
    free(v);
    free(hv);
    experiment_free(&x);
    return 0;
}
