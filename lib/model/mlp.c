/* mlp: multilayer perceptron, the equivalent of
 *     torch.nn.Sequential(Linear(n_in, h1), Act(), Linear(h1, h2), Act(), ..., Linear(hk, n_out))
 * with state_dict names 0.weight, 0.bias, 2.weight, ... (activations hold no weights but take
 * an index, as in Sequential).
 *
 * Keys: hidden [[512, 512]] (widths, non-empty), activation [relu | tanh | gelu], bias [true].
 * Init: PyTorch's Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, layer
 * by layer, weight before bias, from the (seed, "init") stream.
 *
 * `linear` (softmax regression / least squares) is the same stack without hidden layers.
 *
 * Both are builders of the layer graph (convnet.h): cn_linear layers with the activation fused
 * into each hidden one. The graph's linear layers split their passes by weight rows (convnet.c),
 * and its exact Hessian-vector product (cn_hvp, the R-operator of each layer) serves them; for
 * 784-512-512-10 that is about 2.1 times the multiply-adds of a gradient (the first layer needs
 * no input-gradient tangent).
 */
#include <stdio.h>

#include "convnet.h"
#include "nn.h"

#define MAX_LAYERS 32

static int dense_build(struct model *m, const long *hidden, int n_hidden, int act, bool bias,
                       struct err *e)
{
    SAMX_ASSERT(n_hidden >= 0 && n_hidden < MAX_LAYERS);
    struct convnet *n = cn_new(m, CN_INIT_TORCH, CN_INIT_TORCH, false);
    cn_set_activation(n, act);
    int v = 0;
    for (int l = 0; l <= n_hidden; l++) {
        char name[16];
        snprintf(name, sizeof name, "%d", 2 * l); /* Sequential's index of the l-th Linear */
        v = cn_linear(n, v, l < n_hidden ? (int)hidden[l] : m->n_out, bias, name);
        if (l < n_hidden)
            v = cn_relu(n, v);
    }
    return cn_finish(n, e);
}

static int mlp_init(struct model *m, struct cfg_node *c, struct err *e)
{
    static const long def_hidden[] = {512, 512};
    long hidden[MAX_LAYERS];
    int n_hidden, act;
    bool bias;
    if (cfg_int_list(c, "hidden", def_hidden, 2, hidden, MAX_LAYERS - 1, &n_hidden, e) < 0 ||
        cfg_enum(c, "activation", act_names, ACT_RELU, &act, e) < 0 ||
        cfg_bool(c, "bias", true, &bias, e) < 0)
        return -1;
    struct cfg_node *hn = cfg_child(c, "hidden");
    if (n_hidden == 0)
        return cfg_err(e, hn, "'model.hidden' must list at least one width (use model 'linear' "
                              "for none)");
    for (int i = 0; i < n_hidden; i++)
        if (hidden[i] < 1 || hidden[i] > 1000000)
            return cfg_err(e, hn, "'model.hidden' widths must be between 1 and 1000000, got %ld",
                           hidden[i]);
    return dense_build(m, hidden, n_hidden, act, bias, e);
}

const struct model_ops model_mlp = {
    .name = "mlp",
    .summary = "multilayer perceptron, torch.nn.Sequential(Linear, Act, ..., Linear)",
    .keys = "hidden [[512, 512]]: widths of the hidden layers\n"
            "activation [relu]: relu | tanh | gelu (exact erf form)\n"
            "bias [true]: biases in every Linear layer\n",
    .init = mlp_init,
    CN_MODEL_OPS,
};

/* The linear model: the same stack with no hidden layer. */
static int linear_init(struct model *m, struct cfg_node *c, struct err *e)
{
    bool bias;
    if (cfg_bool(c, "bias", true, &bias, e) < 0)
        return -1;
    return dense_build(m, NULL, 0, ACT_RELU, bias, e);
}

const struct model_ops model_linear = {
    .name = "linear",
    .summary = "softmax regression or least squares, torch.nn.Sequential(Linear)",
    .keys = "bias [true]: a bias term\n",
    .init = linear_init,
    CN_MODEL_OPS,
};
