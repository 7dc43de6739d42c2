#include "model.h"

#include <string.h>

#include "safetensors.h"

const struct model_ops *const model_registry[] = {
    &model_linear, &model_mlp,
    &model_cnn, &model_resnet, &model_wrn, /* convolutional networks */
    NULL,
};

const struct model_ops *model_find(const char *name)
{
    for (int i = 0; model_registry[i]; i++)
        if (strcmp(model_registry[i]->name, name) == 0)
            return model_registry[i];
    return NULL;
}

static int model_load_weights(struct model *m, const char *path, struct err *e)
{
    struct st_file f;
    bool plan = m->plan; /* names and shapes from the header only */
    if ((plan ? st_open_header(&f, path, e) : st_open(&f, path, e)) < 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < m->p.nt && rc == 0; i++)
        rc = plan ? st_check_f32(&f, &m->p.t[i], e)
                  : st_read_f32(&f, &m->p.t[i], m->p.w + m->p.t[i].off, e);
    /* Buffers (BatchNorm running statistics) are part of the model's state too. */
    for (int i = 0; i < m->buf.nt && rc == 0; i++)
        rc = plan ? st_check_f32(&f, &m->buf.t[i], e)
                  : st_read_f32(&f, &m->buf.t[i], m->buf.w + m->buf.t[i].off, e);
    if (rc == 0 && f.n_tensors != m->p.nt + m->buf.nt)
        rc = err_set(e, "'%s': holds %d tensors, the model has %d", path, f.n_tensors,
                     m->p.nt + m->buf.nt);
    st_close(&f);
    return rc;
}

/* chw: the image shape, or NULL for tabular inputs. */
static int model_build(struct model *m, struct cfg_node *c, int n_in, const int *chw, int n_out,
                       int max_batch, uint64_t seed, bool plan, struct err *e)
{
    const char *name, *init_from;
    memset(m, 0, sizeof *m);
    if (chw) {
        m->in_c = chw[0];
        m->in_h = chw[1];
        m->in_w = chw[2];
    }
    m->seed = seed;
    m->plan = plan;
    if (cfg_str(c, "name", "mlp", &name, e) < 0)
        return -1;
    m->ops = model_find(name);
    if (!m->ops)
        return cfg_err(e, cfg_child(c, "name"), "unknown model '%s' (see 'samx list models')",
                       name);
    m->n_in = n_in;
    m->n_out = n_out;
    m->max_batch = max_batch;
    if (m->ops->init(m, c, e) < 0)
        return -1;
    if (!plan) {
        params_alloc(&m->p);
        if (m->buf.nt > 0)
            params_alloc(&m->buf);
    }
    if (cfg_str_path(c, "init_from", NULL, &init_from, e) < 0)
        return -1;
    if (init_from)
        return model_load_weights(m, init_from, e);
    if (!plan)
        m->ops->reset(m, seed);
    return 0;
}

int model_init(struct model *m, struct cfg_node *c, int n_in, int n_out, int max_batch,
               uint64_t seed, struct err *e)
{
    return model_build(m, c, n_in, NULL, n_out, max_batch, seed, false, e);
}

int model_init_image(struct model *m, struct cfg_node *c, int channels, int height, int width,
                     int n_out, int max_batch, uint64_t seed, struct err *e)
{
    int chw[3] = {channels, height, width};
    return model_build(m, c, channels * height * width, chw, n_out, max_batch, seed, false, e);
}

int model_plan(struct model *m, struct cfg_node *c, int n_in, const int *chw, int n_out,
               uint64_t seed, struct err *e)
{
    return model_build(m, c, chw ? chw[0] * chw[1] * chw[2] : n_in, chw, n_out, 1, seed, true,
                       e);
}

void model_hvp_reserve(struct model *m)
{
    if (m->ops->hvp && m->ops->hvp_reserve && !m->plan)
        m->ops->hvp_reserve(m);
}

void model_release(struct model *m)
{
    if (m->ops && m->ops->release)
        m->ops->release(m);
    params_free(&m->p);
    params_free(&m->buf);
    memset(m, 0, sizeof *m);
}
