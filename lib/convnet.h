/* convnet.h: the layer graph every model is built on (model/mlp.c, model/cnn.c,
 * model/resnet.c). Internal to those plugins; not a model itself. No model has a forward or
 * backward pass of its own: each is a short builder of this graph.
 *
 * A builder declares layers in forward order; each layer reads one or two earlier values and
 * writes a new one, so residual blocks are two paths joined by cn_add. Value 0 is the model's
 * input, (batch, c*h*w) viewed as NCHW, or (n_in, 1, 1) for tabular inputs (m->in_c == 0).
 *
 * Linear layers split their training passes by weight rows into work_blocks() blocks (blas.h),
 * each block computing its output columns (and the fused activation, cn_relu), its rows of dW
 * and db and a partial product of the input gradient, added in block order; see convnet.c.
 * Results depend on the shapes only, never on -t or the team (tune.h). Parameters are declared
 * on m->p and BatchNorm running statistics on m->buf with PyTorch state_dict names built from
 * the `name` prefixes ("layer1.0.conv1" -> "layer1.0.conv1.weight"). Every activation is
 * allocated for m->max_batch examples at build time, and the gradients in a pool of buffers
 * planned at cn_finish (values whose gradients are never live together share one); forward
 * and backward never allocate.
 *
 * Backward: a value read by several layers receives the sum of their gradients: the first
 * contribution (in reverse order) overwrites, the others add (nn_conv.h's `acc`), so no
 * gradient buffer is ever cleared separately.
 *
 * Pass modes (model.h): BatchNorm uses batch statistics in PASS_TRAIN_UPDATE and
 * PASS_TRAIN_FROZEN and updates the running statistics (momentum 0.1, unbiased variance) in
 * PASS_TRAIN_UPDATE only; PASS_EVAL normalises with the running statistics. Dropout is active
 * in both training modes with the mask of (m->seed, "dropout", m->step), identity in PASS_EVAL.
 * backward() differentiates the most recent forward in its own mode.
 *
 * Hessian-vector products: cn_hvp is exact (forward-over-reverse, the R-operator of every
 * layer, nn_conv.h) for the network in evaluation mode, as model.h's hvp states: BatchNorm with
 * its running statistics, dropout off. Its workspace, the tangent of every activation (as much
 * memory again as the activations) and a second gradient pool for the gradients' tangents, is
 * allocated by cn_hvp_reserve only, so a model trained without exact curvature measurements
 * does not carry it.
 */
#ifndef SAMX_CONVNET_H
#define SAMX_CONVNET_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

/* Weight initialisation of conv and linear weights (biases: PyTorch's default uniform unless
 * zero_bias; BatchNorm: weight 1, bias 0, running mean 0, running var 1). */
enum cn_init {
    CN_INIT_TORCH,       /* PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    CN_INIT_KAIMING_IN,  /* kaiming_normal_(mode='fan_in'): N(0, 2/fan_in) (akamaster) */
    CN_INIT_KAIMING_OUT, /* kaiming_normal_(mode='fan_out', relu): N(0, 2/fan_out) (WRN) */
};

struct convnet;

/* Start a graph for model m (m->in_c/in_h/in_w set, or all 0 for tabular inputs); sets
 * m->priv. */
struct convnet *cn_new(struct model *m, enum cn_init conv_init, enum cn_init linear_init,
                       bool zero_linear_bias);
/* The nonlinearity of every cn_relu layer (default ACT_RELU, the papers' choice; nn.h enum
 * act). The models expose it as `activation` so that gradient checks can run on a smooth
 * network, where finite differences are not spoiled by kinks (and the MLP as its own choice).
 * Before the first layer. */
void cn_set_activation(struct convnet *n, int act);
/* Layers: each returns the id of the value it writes. */
int cn_conv(struct convnet *n, int in, int c_out, int k, int stride, int pad, bool bias,
            const char *name);
int cn_bn(struct convnet *n, int in, const char *name);
/* The activation: fused into the layer that wrote `in` when that is the last one added and a
 * linear layer (any activation) or a BatchNorm or sum (ReLU); then it returns `in`. */
int cn_relu(struct convnet *n, int in);
int cn_maxpool(struct convnet *n, int in, int k, int stride);
int cn_avgpool(struct convnet *n, int in, int k, int stride);
int cn_gap(struct convnet *n, int in);                  /* -> (c, 1, 1) */
/* Flattens its input; tensors name.weight (n_out, n_in) and, with bias, name.bias (n_out). */
int cn_linear(struct convnet *n, int in, int n_out, bool bias, const char *name);
int cn_add(struct convnet *n, int a, int b);
int cn_shortcut_a(struct convnet *n, int in, int c_out, int stride);
int cn_dropout(struct convnet *n, int in, float p);     /* p == 0: returns in, no layer */
/* Shape of a value. */
void cn_shape(const struct convnet *n, int v, int *c, int *h, int *w);
/* Close the graph: the last value is m->out (it must be (n_out, 1, 1)); 0 or -1 with e set. */
int cn_finish(struct convnet *n, struct err *e);

/* A fingerprint of the piecewise-linear region of the last forward pass over `batch`
 * examples: a hash of every ReLU's active set and every max-pool's argmax. Gradient checks use
 * it to discard finite differences that cross a kink (style.md 6.7: kinks handled explicitly). */
uint64_t cn_fingerprint(const struct model *m, int batch);

/* model_ops members of every model (CN_MODEL_OPS below). */
void cn_reset(struct model *m, uint64_t seed);
void cn_forward(struct model *m, const float *x, int batch, enum pass_mode mode);
void cn_backward(struct model *m, const float *x, const float *dout, int batch, bool acc);
void cn_hvp(struct model *m, const float *x, int batch, const struct hvp_loss *l, const float *v,
            float *hv);
void cn_hvp_reserve(struct model *m);
void cn_release(struct model *m);
void cn_set_bn_group(struct model *m, int k);
size_t cn_runlog_reserve(struct model *m, int groups, int per_group);
void cn_runlog_apply(struct model *m, void (*sum)(double *x, size_t n));
/* Those members in a model_ops initializer: every model is a builder of this graph, so only its
 * name, keys and init differ. */
#define CN_MODEL_OPS                                                                          \
    .reset = cn_reset, .forward = cn_forward, .backward = cn_backward, .hvp = cn_hvp,           \
    .hvp_reserve = cn_hvp_reserve, .release = cn_release, .set_bn_group = cn_set_bn_group,    \
    .runlog_reserve = cn_runlog_reserve, .runlog_apply = cn_runlog_apply

#endif
