/* resnet, wrn: the residual networks of the SAM papers' CIFAR tables.
 *
 * resnet, depth 20 | 32 | 56 (any 6n+2): He et al. 2016's CIFAR ResNet (arXiv:1512.03385,
 *   section 4.2) as the common akamaster/pytorch_resnet_cifar10 `resnet.py` writes it: conv1
 *   3x3 (width), bn1, ReLU; layer1..layer3 of n BasicBlocks at width, 2*width, 4*width (stride 2
 *   at the start of layer2 and layer3); global average pool; `linear`. BasicBlock: conv1 3x3
 *   (stride), bn1, ReLU, conv2 3x3, bn2, + shortcut, ReLU. Shortcut option A by default (the
 *   paper's CIFAR choice and akamaster's): x[:, :, ::2, ::2] with planes/4 zero channels on
 *   both sides, no weights; `shortcut: B` uses 1x1 conv + BN (`shortcut.0`, `shortcut.1`).
 *   Names: conv1.weight, bn1.*, layer1.0.conv1.weight, layer1.0.bn1.*, ..., linear.weight.
 *   Init as akamaster: kaiming_normal_ (fan_in) for convs and the linear weight, linear bias
 *   PyTorch's default uniform. ResNet-20: 269,722 weights (10 classes).
 * resnet, depth 18: the CIFAR variant of ResNet-18 (kuangliu/pytorch-cifar `resnet.py`, used by
 *   the WSAM demo and CR-SAM): 3x3 stem conv1 (64) + bn1, no max-pool, layer1..layer4 of two
 *   BasicBlocks at 64, 128, 256, 512 (width scales them) with option-B shortcuts
 *   (`shortcut.0` conv 1x1, `shortcut.1` BN) where the shape changes, 4x4 average pool
 *   (global at 32x32 input), `linear`. PyTorch default init. 11.17 M weights.
 * wrn: Wide ResNet-d-k (Zagoruyko & Komodakis, arXiv:1605.07146) as xternalz/WideResNet-pytorch
 *   writes it (also the VaSSO and SAM repos' layout): conv1 3x3 16; block1..block3 of
 *   n = (d-4)/6 pre-activation blocks at 16k, 32k, 64k; bn1, ReLU, global average pool, `fc`.
 *   Block `blockB.layer.i`: bn1, ReLU, conv1 3x3 (stride), bn2, ReLU, dropout, conv2 3x3; the
 *   shortcut is the input, or convShortcut (1x1, stride) of the activated input when the shape
 *   changes. Init: kaiming_normal_ (fan_out) convs, fc bias 0. WRN-28-10: 36.5 M weights.
 *
 * Keys: resnet: depth [20], width [16 for 6n+2 depths, 64 for 18], shortcut [A | B] (6n+2
 *   depths only; 18 is always B); wrn: depth [28], widen [10], dropout [0]; both: activation
 *   [relu | tanh | gelu] (the papers use ReLU; smooth ones serve gradient checks).
 * BatchNorm follows the pass mode (convnet.h). Hessian-vector products: exact, in evaluation
 * mode (cn_hvp, convnet.h).
 */
#include <stdio.h>

#include "convnet.h"
#include "nn.h"

/* One BasicBlock (post-activation); returns the output value. */
static int basic_block(struct convnet *n, int in, int planes, int stride, bool option_b,
                       const char *pre)
{
    char name[64];
    int c, h, w;
    cn_shape(n, in, &c, &h, &w);
    snprintf(name, sizeof name, "%s.conv1", pre);
    int v = cn_conv(n, in, planes, 3, stride, 1, false, name);
    snprintf(name, sizeof name, "%s.bn1", pre);
    v = cn_relu(n, cn_bn(n, v, name));
    snprintf(name, sizeof name, "%s.conv2", pre);
    v = cn_conv(n, v, planes, 3, 1, 1, false, name);
    snprintf(name, sizeof name, "%s.bn2", pre);
    v = cn_bn(n, v, name);
    int sc = in;
    if (stride != 1 || c != planes) {
        if (option_b) {
            snprintf(name, sizeof name, "%s.shortcut.0", pre);
            sc = cn_conv(n, in, planes, 1, stride, 0, false, name);
            snprintf(name, sizeof name, "%s.shortcut.1", pre);
            sc = cn_bn(n, sc, name);
        } else {
            sc = cn_shortcut_a(n, in, planes, stride);
        }
    }
    return cn_relu(n, cn_add(n, v, sc));
}

static int image_check(const struct model *m, const char *name, struct err *e)
{
    if (m->in_c == 0)
        return err_cfg(e, "model '%s' needs image data (this data set has no image shape)",
                       name);
    if (m->in_h < 8 || m->in_w < 8)
        return err_cfg(e, "model '%s' needs images of at least 8x8, got %dx%d", name, m->in_h,
                       m->in_w);
    return 0;
}

static int resnet_init(struct model *m, struct cfg_node *c, struct err *e)
{
    static const char *const shortcuts[] = {"A", "B", NULL};
    long depth, width;
    int sc, act;
    if (cfg_int(c, "depth", 20, &depth, e) < 0)
        return -1;
    bool r18 = depth == 18;
    /* 170: the deepest 6n+2 network whose tensors fit SAMX_MAX_TENSORS (params.h) */
    if (!r18 && (depth < 8 || depth > 170 || (depth - 2) % 6 != 0))
        return cfg_err(e, cfg_child(c, "depth"), "'model.depth' must be 18 or 6n+2 up to 170 (20, "
                                                 "32, 44, 56, 110), got %ld", depth);
    if (cfg_int(c, "width", r18 ? 64 : 16, &width, e) < 0 ||
        cfg_enum(c, "shortcut", shortcuts, r18 ? 1 : 0, &sc, e) < 0 ||
        cfg_enum(c, "activation", act_names, ACT_RELU, &act, e) < 0)
        return -1;
    if (width < 1 || width > 1024 || width % 4 != 0)
        return cfg_err(e, cfg_child(c, "width"), "'model.width' must be a multiple of 4 in "
                                                 "[4, 1024]");
    if (r18 && sc != 1)
        return cfg_err(e, cfg_child(c, "shortcut"), "ResNet-18 uses shortcut B (1x1 conv + BN)");
    if (image_check(m, "resnet", e) < 0)
        return -1;
    struct convnet *n = r18 ? cn_new(m, CN_INIT_TORCH, CN_INIT_TORCH, false)
                            : cn_new(m, CN_INIT_KAIMING_IN, CN_INIT_KAIMING_IN, false);
    cn_set_activation(n, act);
    int v = cn_conv(n, 0, (int)width, 3, 1, 1, false, "conv1");
    v = cn_relu(n, cn_bn(n, v, "bn1"));
    int stages = r18 ? 4 : 3, blocks = r18 ? 2 : (int)(depth - 2) / 6;
    for (int s = 0; s < stages; s++)
        for (int b = 0; b < blocks; b++) {
            char pre[32];
            snprintf(pre, sizeof pre, "layer%d.%d", s + 1, b);
            v = basic_block(n, v, (int)width << s, s > 0 && b == 0 ? 2 : 1, sc == 1, pre);
        }
    v = cn_gap(n, v);
    cn_linear(n, v, m->n_out, true, "linear");
    return cn_finish(n, e);
}

/* One pre-activation wide block (xternalz's BasicBlock). */
static int wide_block(struct convnet *n, int in, int planes, int stride, float drop,
                      const char *pre)
{
    char name[64];
    int c, h, w;
    cn_shape(n, in, &c, &h, &w);
    bool equal = c == planes && stride == 1;
    snprintf(name, sizeof name, "%s.bn1", pre);
    int a = cn_relu(n, cn_bn(n, in, name));
    snprintf(name, sizeof name, "%s.conv1", pre);
    int v = cn_conv(n, a, planes, 3, stride, 1, false, name);
    snprintf(name, sizeof name, "%s.bn2", pre);
    v = cn_relu(n, cn_bn(n, v, name));
    v = cn_dropout(n, v, drop);
    snprintf(name, sizeof name, "%s.conv2", pre);
    v = cn_conv(n, v, planes, 3, 1, 1, false, name);
    int sc = in;
    if (!equal) {
        snprintf(name, sizeof name, "%s.convShortcut", pre);
        sc = cn_conv(n, a, planes, 1, stride, 0, false, name);
    }
    return cn_add(n, v, sc);
}

static int wrn_init(struct model *m, struct cfg_node *c, struct err *e)
{
    long depth, widen;
    double drop;
    int act;
    if (cfg_int(c, "depth", 28, &depth, e) < 0 || cfg_int(c, "widen", 10, &widen, e) < 0 ||
        cfg_num(c, "dropout", 0, &drop, e) < 0 ||
        cfg_enum(c, "activation", act_names, ACT_RELU, &act, e) < 0)
        return -1;
    /* 172: the deepest 6n+4 network whose tensors fit SAMX_MAX_TENSORS (params.h) */
    if (depth < 10 || depth > 172 || (depth - 4) % 6 != 0)
        return cfg_err(e, cfg_child(c, "depth"), "'model.depth' must be 6n+4 up to 172 (16, 22, "
                                                 "28, 40), got %ld", depth);
    if (widen < 1 || widen > 64)
        return cfg_err(e, cfg_child(c, "widen"), "'model.widen' must be in [1, 64]");
    if (!(drop >= 0 && drop < 1))
        return cfg_err(e, cfg_child(c, "dropout"), "'model.dropout' must be in [0, 1)");
    if (image_check(m, "wrn", e) < 0)
        return -1;
    struct convnet *n = cn_new(m, CN_INIT_KAIMING_OUT, CN_INIT_TORCH, true);
    cn_set_activation(n, act);
    int v = cn_conv(n, 0, 16, 3, 1, 1, false, "conv1");
    int blocks = (int)(depth - 4) / 6;
    for (int s = 0; s < 3; s++)
        for (int b = 0; b < blocks; b++) {
            char pre[32];
            snprintf(pre, sizeof pre, "block%d.layer.%d", s + 1, b);
            v = wide_block(n, v, (int)(16 * widen) << s, s > 0 && b == 0 ? 2 : 1, (float)drop,
                           pre);
        }
    v = cn_relu(n, cn_bn(n, v, "bn1"));
    v = cn_gap(n, v);
    cn_linear(n, v, m->n_out, true, "fc");
    return cn_finish(n, e);
}

const struct model_ops model_resnet = {
    .name = "resnet",
    .summary = "CIFAR ResNet-20/32/56 (option-A shortcuts) and ResNet-18 (CIFAR variant)",
    .keys = "depth [20]: 6n+2 (20, 32, 56, 110: He et al.'s CIFAR ResNets) or 18\n"
            "width [16; 64 for depth 18]: channels of the first stage (doubling per stage)\n"
            "shortcut [A; B for depth 18]: A zero-padded identity, B 1x1 conv + BN\n"
            "activation [relu]: relu | tanh | gelu\n",
    .init = resnet_init,
    CN_MODEL_OPS,
};

const struct model_ops model_wrn = {
    .name = "wrn",
    .summary = "Wide ResNet-d-k (pre-activation blocks, xternalz layout), e.g. WRN-28-10",
    .keys = "depth [28]: 6n+4\n"
            "widen [10]: widening factor k\n"
            "dropout [0]: dropout between the two convs of each block\n"
            "activation [relu]: relu | tanh | gelu\n",
    .init = wrn_init,
    CN_MODEL_OPS,
};
