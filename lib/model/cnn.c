/* cnn: a small convolutional network for 28x28 (Fashion-)MNIST-sized images, the equivalent of
 *
 *     class CNN(nn.Module):     # channels [c1, c2], kernel k, batchnorm true, pool max
 *         conv1 = Conv2d(C, c1, k, padding=k//2, bias=not batchnorm); bn1 = BatchNorm2d(c1)
 *         conv2 = Conv2d(c1, c2, k, padding=k//2, bias=not batchnorm); bn2 = BatchNorm2d(c2)
 *         fc = Linear(c2 * (H//4) * (W//4), n_out)
 *         forward: pool(relu(bn1(conv1(x)))) -> pool(relu(bn2(conv2(.)))) -> flatten
 *                  -> dropout(p) -> fc
 *
 * with pool = MaxPool2d(2) or AvgPool2d(2). State_dict names conv1.weight, bn1.weight,
 * bn1.bias, bn1.running_mean, bn1.running_var, ..., fc.weight, fc.bias (num_batches_tracked is
 * not stored; PyTorch's load_state_dict fills it in). With the defaults on 1x28x28 inputs and 10
 * classes: 20,234 weights. The BatchNorm layers make the SAM family's bn_update policy
 * (algorithms.md 1.3) matter, as in the papers' CIFAR ResNets.
 *
 * Keys: channels [[16, 32]], kernel [3] (odd), batchnorm [true], pool [max | avg],
 * dropout [0] (before fc; the mask of (seed, "dropout", step), the same in every pass of a step),
 * activation [relu | tanh | gelu] (the smooth ones serve gradient checks).
 * Init: PyTorch's defaults (Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
 * Hessian-vector products: exact, in evaluation mode (cn_hvp, convnet.h).
 */
#include <stdio.h>

#include "convnet.h"
#include "nn.h"

static int cnn_init(struct model *m, struct cfg_node *c, struct err *e)
{
    static const long def_ch[] = {16, 32};
    static const char *const pools[] = {"max", "avg", NULL};
    long ch[2], k;
    int n_ch, pool, act;
    bool bn;
    double p;
    if (cfg_int_list(c, "channels", def_ch, 2, ch, 2, &n_ch, e) < 0 ||
        cfg_int(c, "kernel", 3, &k, e) < 0 || cfg_bool(c, "batchnorm", true, &bn, e) < 0 ||
        cfg_enum(c, "pool", pools, 0, &pool, e) < 0 || cfg_num(c, "dropout", 0, &p, e) < 0 ||
        cfg_enum(c, "activation", act_names, ACT_RELU, &act, e) < 0)
        return -1;
    if (n_ch != 2 || ch[0] < 1 || ch[1] < 1 || ch[0] > 4096 || ch[1] > 4096)
        return cfg_err(e, cfg_child(c, "channels"), "'model.channels' must be two widths in "
                                                    "[1, 4096]");
    if (k < 1 || k > 15 || k % 2 == 0)
        return cfg_err(e, cfg_child(c, "kernel"), "'model.kernel' must be odd, in [1, 15]");
    if (!(p >= 0 && p < 1))
        return cfg_err(e, cfg_child(c, "dropout"), "'model.dropout' must be in [0, 1)");
    if (m->in_c == 0)
        return err_cfg(e, "model 'cnn' needs image data (this data set has no image shape)");
    if (m->in_h < 4 || m->in_w < 4)
        return err_cfg(e, "model 'cnn' needs images of at least 4x4, got %dx%d", m->in_h,
                       m->in_w);
    struct convnet *n = cn_new(m, CN_INIT_TORCH, CN_INIT_TORCH, false);
    cn_set_activation(n, act);
    int v = 0, kk = (int)k;
    for (int l = 0; l < 2; l++) {
        char conv[16], bnn[16];
        snprintf(conv, sizeof conv, "conv%d", l + 1);
        snprintf(bnn, sizeof bnn, "bn%d", l + 1);
        v = cn_conv(n, v, (int)ch[l], kk, 1, kk / 2, !bn, conv);
        if (bn)
            v = cn_bn(n, v, bnn);
        v = cn_relu(n, v);
        v = pool ? cn_avgpool(n, v, 2, 2) : cn_maxpool(n, v, 2, 2);
    }
    v = cn_dropout(n, v, (float)p);
    cn_linear(n, v, m->n_out, true, "fc");
    return cn_finish(n, e);
}

const struct model_ops model_cnn = {
    .name = "cnn",
    .summary = "small CNN: 2 x (conv, BatchNorm, ReLU, 2x2 pool), linear head (images)",
    .keys = "channels [[16, 32]]: output channels of conv1 and conv2\n"
            "kernel [3]: odd kernel size, 'same' padding\n"
            "batchnorm [true]: BatchNorm2d after each conv (convs then have no bias)\n"
            "pool [max]: max | avg, 2x2 stride 2\n"
            "dropout [0]: dropout probability before the linear head\n"
            "activation [relu]: relu | tanh | gelu\n",
    .init = cnn_init,
    CN_MODEL_OPS,
};
