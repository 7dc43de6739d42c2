/* synthetic.c: `synthetic-linear`, a seeded linear-regression teacher.
 *
 * Features are independent Gaussians with a power-law spectrum, x_i ~ N(0, (i+1)^-spectrum), so
 * the feature covariance has eigenvalues (i+1)^-spectrum; a teacher beta* ~ N(0, I/features)
 * gives targets y = x . beta* + noise * N(0, 1). The loss landscape of least squares on this data
 * is a quadratic with that spectrum, which makes sharpness measurements checkable by hand.
 * Streams: "data.synthetic.teacher" (counter 0) for beta*; "data.synthetic.x" and
 * "data.synthetic.noise" with counter 0 for train and 1 for test. No files are read.
 *
 * Keys:
 *   n_train [1000], n_test [1000]: examples
 *   features [20]: dimension
 *   noise [0.1]: std of the additive Gaussian label noise
 *   spectrum [1.0]: feature i has variance (i+1)^-spectrum
 */
#include <math.h>
#include <stdlib.h>

#include "data.h"
#include "rng.h"

/* Config error at map[key]: "'data.key' <what>, got 'text'". */
static int synthetic_key_err(struct err *e, struct cfg_node *map, const char *key, const char *what)
{
    struct cfg_node *n = cfg_child(map, key);
    char *path = cfg_path(n);
    cfg_err(e, n, "'%s' %s, got '%s'", path, what, n->str ? n->str : "");
    free(path);
    return -1;
}

/* Draw n examples of ds from the train (counter 0) or test (counter 1) streams. */
static void synthetic_draw(struct dataset *ds, int n, int dim, const double *beta, const double *sd,
                           double noise, uint64_t seed, uint64_t counter)
{
    struct rng rx, rn;
    rng_init(&rx, seed, "data.synthetic.x", counter);
    rng_init(&rn, seed, "data.synthetic.noise", counter);
    ds->n = n;
    ds->dim = dim;
    ds->xf = xmalloc((size_t)(n ? n : 1) * (size_t)dim * sizeof *ds->xf);
    ds->y = xmalloc((size_t)(n ? n : 1) * sizeof *ds->y);
    for (int i = 0; i < n; i++) {
        float *x = ds->xf + (size_t)i * dim;
        double y = 0;
        for (int j = 0; j < dim; j++) {
            x[j] = (float)(sd[j] * rng_normal(&rx));
            /* The target uses the stored float features, so noise 0 is exactly linear. */
            y += (double)x[j] * beta[j];
        }
        ds->y[i] = (float)(y + noise * rng_normal(&rn));
    }
}

static int synthetic_load(struct data *d, struct cfg_node *c, uint64_t seed, struct err *e)
{
    long n_train, n_test, features;
    double noise, spectrum;
    if (cfg_int(c, "n_train", 1000, &n_train, e))
        return -1;
    if (n_train < 1 || n_train > INT32_MAX)
        return synthetic_key_err(e, c, "n_train", "must be a positive integer");
    if (cfg_int(c, "n_test", 1000, &n_test, e))
        return -1;
    if (n_test < 0 || n_test > INT32_MAX)
        return synthetic_key_err(e, c, "n_test", "must be a non-negative integer");
    if (cfg_int(c, "features", 20, &features, e))
        return -1;
    if (features < 1 || features > INT32_MAX)
        return synthetic_key_err(e, c, "features", "must be a positive integer");
    if (cfg_num(c, "noise", 0.1, &noise, e))
        return -1;
    if (!(noise >= 0))
        return synthetic_key_err(e, c, "noise", "must be >= 0");
    if (cfg_num(c, "spectrum", 1.0, &spectrum, e))
        return -1;

    int dim = (int)features;
    if (d->plan) {
        d->train.n = (int)n_train;
        d->test.n = (int)n_test;
        d->train.dim = d->test.dim = dim;
        return 0;
    }
    double *beta = xmalloc((size_t)dim * sizeof *beta);
    double *sd = xmalloc((size_t)dim * sizeof *sd);
    struct rng r;
    rng_init(&r, seed, "data.synthetic.teacher", 0);
    for (int j = 0; j < dim; j++) {
        beta[j] = rng_normal(&r) / sqrt((double)dim);
        sd[j] = pow(j + 1.0, -0.5 * spectrum);
    }
    synthetic_draw(&d->train, (int)n_train, dim, beta, sd, noise, seed, 0);
    synthetic_draw(&d->test, (int)n_test, dim, beta, sd, noise, seed, 1);
    free(beta);
    free(sd);
    return 0;
}

const struct dataset_ops dataset_synthetic_linear = {
    .name = "synthetic-linear",
    .summary = "seeded linear teacher with power-law feature spectrum, y = x.beta* + noise",
    .keys = "n_train [1000]: training examples\n"
            "n_test [1000]: test examples\n"
            "features [20]: input dimension\n"
            "noise [0.1]: std of the Gaussian noise added to the targets\n"
            "spectrum [1.0]: feature i has variance (i+1)^-spectrum\n",
    .load = synthetic_load,
};
