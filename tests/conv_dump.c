/* conv_dump: a helper for experiments/torch-check-resnet/check.py (not a test by itself).
 *
 *     conv_dump MODEL.yaml DATA.yaml N OUT.safetensors
 *
 * Builds the model of MODEL.yaml (a model: mapping, usually with init_from) for the data set of
 * DATA.yaml (a data: mapping), takes the first N test examples (no augmentation) and writes to
 * OUT: logits_eval (N, k) in PASS_EVAL; logits_train (N, k), loss_train (mean cross-entropy)
 * and grad.<tensor> for every weight after a PASS_TRAIN_UPDATE forward and backward; and
 * after.<buffer>, the running statistics after that pass. PyTorch computes the same.
 *
 *     conv_dump MODEL.yaml DATA.yaml N OUT.safetensors --hvp SEED [--smoothing S]
 *
 * also writes, after those, v.<tensor>: a direction of standard normal entries from the stream
 * (SEED, "conv_dump.v", 0) over the weights, and hv.<tensor>: H v from the model's exact hvp op,
 * H the Hessian of the mean cross-entropy (label smoothing S, default 0) over the same N
 * examples in evaluation mode, that is with the running statistics after.<buffer>
 * (experiments/torch-check-resnet/check_hvp.py differentiates PyTorch's loss twice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cfg.h"
#include "data.h"
#include "measure.h"
#include "model.h"
#include "nn.h"
#include "rng.h"
#include "safetensors.h"

int main(int argc, char **argv)
{
    bool hvp = false;
    unsigned long long seed = 0;
    double smoothing = 0;
    for (int a = 5; a < argc; a += 2) {
        char *end = NULL;
        if (a + 1 < argc && !strcmp(argv[a], "--hvp")) {
            hvp = true;
            seed = strtoull(argv[a + 1], &end, 10);
        } else if (a + 1 < argc && !strcmp(argv[a], "--smoothing")) {
            smoothing = strtod(argv[a + 1], &end);
            if (!(smoothing >= 0 && smoothing < 1))
                end = NULL;
        }
        if (!end || *end) {
            argc = 0; /* a malformed option: the usage line */
            break;
        }
    }
    if (argc < 5) {
        fprintf(stderr, "usage: conv_dump MODEL.yaml DATA.yaml N OUT.safetensors "
                        "[--hvp SEED [--smoothing S]]\n");
        return 2;
    }
    struct err e = {0};
    struct cfg mc, dc;
    struct data d;
    struct model m;
    int n = atoi(argv[3]);
    if (cfg_load(&mc, argv[1], &e) || cfg_load(&dc, argv[2], &e) || data_init(&d, dc.root, 0, &e))
        goto fail;
    if (n < 2 || n > d.test.n) {
        fprintf(stderr, "conv_dump: N must be in [2, %d]\n", d.test.n);
        return 2;
    }
    if (model_init_image(&m, mc.root, d.test.channels, d.test.height, d.test.width,
                         d.test.n_classes, n, 0, &e))
        goto fail;
    int k = m.n_out;
    int *idx = xmalloc((size_t)n * sizeof *idx);
    for (int i = 0; i < n; i++)
        idx[i] = i;
    float *x = xfloats((size_t)n * m.n_in), *le = xfloats((size_t)n * k);
    float *lt = xfloats((size_t)n * k), *dout = xfloats((size_t)n * k);
    int32_t *lab = xmalloc((size_t)n * sizeof *lab);
    double *lex = xmalloc((size_t)n * sizeof *lex);
    uint8_t *hit = xmalloc((size_t)n);
    data_batch(&d.test, idx, n, x, lab, NULL);

    m.ops->forward(&m, x, n, PASS_EVAL);
    memcpy(le, m.out, (size_t)n * k * sizeof *le);
    m.ops->forward(&m, x, n, PASS_TRAIN_UPDATE);
    memcpy(lt, m.out, (size_t)n * k * sizeof *lt);
    double loss = xent_forward_backward(dout, lex, hit, m.out, lab, n, k, 0.0f, 1.0f / n) / n;
    m.ops->backward(&m, x, dout, n, false);

    /* H v in evaluation mode, after the training pass: its BatchNorm uses the running
     * statistics written as after.<buffer>. The gaps between tensors stay 0 in v (xfloats);
     * hvp adds into hv, which starts at 0, and leaves p.g (the grad.* outputs) alone. */
    float *v = NULL, *hv = NULL;
    if (hvp) {
        if (!m.ops->hvp) {
            fprintf(stderr, "conv_dump: model '%s' has no exact hvp\n", m.ops->name);
            return 1;
        }
        model_hvp_reserve(&m);
        v = xfloats(m.p.n);
        hv = xfloats(m.p.n);
        struct rng r;
        rng_init(&r, (uint64_t)seed, "conv_dump.v", 0);
        for (int t = 0; t < m.p.nt; t++)
            for (size_t j = m.p.t[t].off; j < m.p.t[t].off + m.p.t[t].n; j++)
                v[j] = (float)rng_normal(&r);
        struct hvp_loss l = {.smoothing = (float)smoothing, .label = lab, .scale = 1.0 / n};
        m.ops->hvp(&m, x, n, &l, v, hv);
    }

    int nw = hvp ? 3 * m.p.nt : m.p.nt; /* grad., and v. and hv. with --hvp */
    struct st_entry *ent = xcalloc((size_t)(3 + nw + m.buf.nt), sizeof *ent);
    char (*names)[80] = xcalloc((size_t)(nw + m.buf.nt), sizeof *names);
    int ne = 0;
    ent[ne++] = (struct st_entry){.name = "logits_eval", .dtype = "F32", .ndim = 2,
                                  .shape = {n, k}, .data = le, .nbytes = (size_t)n * k * 4};
    ent[ne++] = (struct st_entry){.name = "logits_train", .dtype = "F32", .ndim = 2,
                                  .shape = {n, k}, .data = lt, .nbytes = (size_t)n * k * 4};
    ent[ne++] = (struct st_entry){.name = "loss_train", .dtype = "F64", .ndim = 0,
                                  .data = &loss, .nbytes = 8};
    for (int t = 0; t < m.p.nt + m.buf.nt; t++) {
        bool w = t < m.p.nt;
        const struct tensor *tv = w ? &m.p.t[t] : &m.buf.t[t - m.p.nt];
        snprintf(names[t], sizeof names[t], "%s.%s", w ? "grad" : "after", tv->name);
        struct st_entry *s = &ent[ne++];
        *s = (struct st_entry){.name = names[t], .dtype = "F32", .ndim = tv->ndim,
                               .data = (w ? m.p.g : m.buf.w) + tv->off,
                               .nbytes = tv->n * sizeof(float)};
        for (int i = 0; i < tv->ndim; i++)
            s->shape[i] = tv->shape[i];
    }
    for (int t = 0; hvp && t < 2 * m.p.nt; t++) {
        const struct tensor *tv = &m.p.t[t % m.p.nt];
        char *name = names[m.p.nt + m.buf.nt + t];
        snprintf(name, sizeof names[0], "%s.%s", t < m.p.nt ? "v" : "hv", tv->name);
        struct st_entry *s = &ent[ne++];
        *s = (struct st_entry){.name = name, .dtype = "F32", .ndim = tv->ndim,
                               .data = (t < m.p.nt ? v : hv) + tv->off,
                               .nbytes = tv->n * sizeof(float)};
        for (int i = 0; i < tv->ndim; i++)
            s->shape[i] = tv->shape[i];
    }
    if (st_save(argv[4], ent, ne, NULL, false, &e) < 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "conv_dump: %s\n", e.msg);
    return 1;
}
