/* nn_conv.h: kernels of convolutional networks as forward/backward pairs, NCHW layout.
 *
 * Tensors are (batch, channels, height, width), row-major, as PyTorch's default layout; a
 * convolution weight is (c_out, c_in, k, k) as torch.nn.Conv2d's. Argument order (llm.c, as
 * nn.h): outputs, then inputs, then weights, then dimensions. Backward functions ADD into
 * weight gradients (dw, db, dgamma, dbeta); input gradients dx are OVERWRITTEN, or added to
 * when `acc` is true (a value read by two layers, e.g. a residual block's input, gets the sum
 * of both gradients without a separate zeroing pass). Kernels never fail: they assert.
 *
 * Threads: every parallel loop runs over the index it writes (an example, a channel, a plane)
 * with a static schedule. The convolution splits the batch into `n_blk` fixed blocks (chosen at
 * init: blas.h work_blocks(), never the thread count), each owning one im2col buffer and one
 * partial weight gradient; the partials are added in block order afterwards. So results depend
 * on n_blk only, never on scheduling, and there are no float reductions across threads or
 * atomics. BatchNorm statistics are per-channel sums in double, in a fixed order.
 *
 * Hessian-vector products (Pearlmutter's R-operator, R{f} = d/dt f(w + t v) at t = 0): the
 * linear layers (convolution, pooling, shortcut, sum) need no rule of their own, since their
 * tangent is the layer applied to the input's tangent plus, for weights, the layer with the
 * direction v as weights (conv2d_forward with acc, conv2d_backward with the tangents); the
 * nonlinear ones have *_rop kernels below: max pooling (the argmax gather), BatchNorm in
 * evaluation mode, the fused ReLU of a sum, and the activations (nn.h act_rop).
 */
#ifndef SAMX_NN_CONV_H
#define SAMX_NN_CONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Geometry of one 2-D convolution: square kernel k, one stride and one zero padding for both
 * axes (every model here needs no more); h_out = (h + 2 pad - k) / stride + 1. */
struct conv_shape {
    int c_in, h, w, c_out, k, stride, pad, h_out, w_out;
};
/* Fill the output size; false when the kernel does not fit. */
bool conv_shape_init(struct conv_shape *s, int c_in, int h, int w, int c_out, int k, int stride,
                     int pad);
/* Floats of im2col workspace one block needs (0 for 1x1 stride-1 unpadded convolutions, which
 * read the input directly). */
size_t conv_col_floats(const struct conv_shape *s);

/* Workspace of a convolution layer: n_blk blocks, each with `col` (conv_col_floats floats) and
 * `dw` (a partial weight gradient, c_out*c_in*k*k floats, kept transposed). Allocated by the
 * caller, once; never read before written, so layers may share one. */
struct conv_ws {
    int n_blk;
    float **col, **dw;
};

/* out (batch, c_out, h_out, w_out) = conv(x (batch, c_in, h, w), w) + b (c_out; may be NULL),
 * or out += that with acc. With `moments` (batch * c_out * 2 doubles, or NULL; not with acc)
 * it also writes each output plane's sum and sum of squared deviations from the plane's own
 * mean, computed while the plane is still in cache: the statistics a BatchNorm that reads
 * `out` needs (batchnorm_forward). */
void conv2d_forward(float *out, double *moments, const float *x, const float *w, const float *b,
                    int batch, const struct conv_shape *s, const struct conv_ws *ws, bool acc);
/* dw += d/dw, db += d/db, dx = (or +=, acc) d/dx; dw, db and dx may each be NULL. */
void conv2d_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int batch, const struct conv_shape *s,
                     const struct conv_ws *ws, bool acc);
/* The definition, in double, for tests: out = direct sum over the kernel window. */
void conv2d_ref(float *out, const float *x, const float *w, const float *b, int batch,
                const struct conv_shape *s);

/* BatchNorm2d over (batch, c, hw). Training (batch statistics): mean and biased variance of
 * each channel over batch*hw values, y = (x - mean) / sqrt(var + eps) * gamma + beta; saves
 * mean and 1/sqrt(var + eps) per channel into save_mean, save_invstd (c) for backward; when
 * run_mean/run_var are not NULL updates them as PyTorch does with momentum m:
 * run = (1 - m) run + m stat, with the UNBIASED variance var * N / (N - 1), N = batch*hw.
 * Evaluation (train = false): normalises with run_mean/run_var and saves those. */
/* With relu, y = max(0, ...) (a fused BatchNorm + ReLU: one pass over the data less).
 * `moments`: NULL, or in training mode the per-plane moments of x from conv2d_forward, merged
 * here in example order (Chan et al.'s pairwise update, in double) instead of two passes over
 * x. */
void batchnorm_forward(float *y, float *save_mean, float *save_invstd, const float *x,
                       const double *moments, const float *gamma, const float *beta,
                       float *run_mean, float *run_var, int batch, int c, int hw, bool train,
                       bool relu, float momentum, float eps);
/* Gradient of the forward above (same `train`): batch statistics depend on x in training mode,
 * the running ones do not. dgamma, dbeta added to; dx overwritten or added (acc). y_relu: the
 * forward's output when it was fused with a ReLU (dy counts where y_relu > 0), else NULL. */
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                        const float *y_relu, const float *x, const float *save_mean,
                        const float *save_invstd, const float *gamma, int batch, int c, int hw,
                        bool train, bool acc);

/* The phases of batchnorm_forward and batchnorm_backward in training mode, for the statistics
 * of a batch split between processes (dist.h): the caller sums each phase's per-channel
 * doubles over the processes between the phases and passes the count of the whole batch,
 * cnt = rows * hw. Without a sum in between, the composition is batchnorm_forward / _backward
 * in training mode, bit for bit (they share the per-channel code).
 *   forward:  batchnorm_sums (sum: c, the sum of x), mean = sum / cnt, batchnorm_devs (dev: 2c,
 *             per channel the squared deviations from mean and the deviations), then
 *             batchnorm_normalize (running statistics updated when run_mean is not NULL);
 *   backward: batchnorm_backward_sums (sums: 2c, per channel sum dy and sum dy xhat of this
 *             process's rows, dy masked by the fused ReLU; dbeta and dgamma added to with them),
 *             then batchnorm_backward_dx with the summed sums (dx may not be NULL). */
void batchnorm_sums(double *sum, const float *x, const double *moments, int batch, int c, int hw);
void batchnorm_devs(double *dev, const float *x, const double *moments, const double *mean,
                    int batch, int c, int hw);
void batchnorm_normalize(float *y, float *save_mean, float *save_invstd, const float *x,
                         const double *mean, const double *dev, double cnt, const float *gamma,
                         const float *beta, float *run_mean, float *run_var, int batch, int c,
                         int hw, bool relu, float momentum, float eps);
/* The running statistics' update of batchnorm_normalize alone (the same bits), from the mean
 * and dev of batchnorm_devs over cnt values: for statistics computed before. */
void batchnorm_update_running(float *run_mean, float *run_var, const double *mean,
                              const double *dev, double cnt, int c, float momentum);
void batchnorm_backward_sums(double *sums, float *dgamma, float *dbeta, const float *dy,
                             const float *y_relu, const float *x, const float *save_mean,
                             const float *save_invstd, int batch, int c, int hw);
void batchnorm_backward_dx(float *dx, const double *sums, double cnt, const float *dy,
                           const float *y_relu, const float *x, const float *save_mean,
                           const float *save_invstd, const float *gamma, int batch, int c,
                           int hw, bool acc);

/* The R-operator of BatchNorm in evaluation mode (save_mean, save_invstd: the running
 * statistics the forward used), where y = gamma is (x - mean) + beta is affine in x:
 * tangent  ry = mask (gamma is rx + vgamma is (x - mean) + vbeta);
 * backward, with g = mask dy and rg = mask rdy (mask: y_relu > 0 when a ReLU was fused, else 1):
 *   dx = (or +=, acc) gamma is g,  rdx = (or +=) gamma is rg + vgamma is g  (dx, rdx: both or
 *   neither NULL),  hgamma += sum rg is (x - mean) + g is rx,  hbeta += sum rg.
 * Only evaluation mode: Hessian-vector products are of the evaluation-mode network (model.h). */
void batchnorm_rop(float *ry, const float *y_relu, const float *rx, const float *x,
                   const float *gamma, const float *vgamma, const float *vbeta,
                   const float *save_mean, const float *save_invstd, int batch, int c, int hw);
void batchnorm_rop_backward(float *dx, float *rdx, float *hgamma, float *hbeta, const float *dy,
                            const float *rdy, const float *y_relu, const float *x,
                            const float *rx, const float *save_mean, const float *save_invstd,
                            const float *gamma, const float *vgamma, int batch, int c, int hw,
                            bool acc);

/* Max pooling, window k, stride, no padding: out (batch, c, h_out, w_out); arg (same size)
 * keeps the index within the input plane of each maximum (first one on ties, as PyTorch). */
void maxpool_forward(float *out, int32_t *arg, const float *x, int batch, int c, int h, int w,
                     int k, int stride);
void maxpool_backward(float *dx, const float *dout, const int32_t *arg, int batch, int c, int h,
                      int w, int k, int stride, bool acc);
/* Tangent of max pooling: rout = rx at the forward's argmax (its backward is
 * maxpool_backward applied to the tangent). */
void maxpool_rop(float *rout, const int32_t *arg, const float *rx, int batch, int c, int h,
                 int w, int k, int stride);
/* Average pooling, window k, stride, no padding (count_include_pad is moot). */
void avgpool_forward(float *out, const float *x, int batch, int c, int h, int w, int k,
                     int stride);
void avgpool_backward(float *dx, const float *dout, int batch, int c, int h, int w, int k,
                      int stride, bool acc);
/* Global average pooling: out (batch, c) = mean over each plane of x (batch, c, hw). */
void gap_forward(float *out, const float *x, int batch, int c, int hw);
void gap_backward(float *dx, const float *dout, int batch, int c, int hw, bool acc);

/* The "option A" shortcut of He et al.'s CIFAR ResNets (akamaster's LambdaLayer):
 * out (batch, c_out, h/2, w/2) = x[:, :, ::2, ::2] with (c_out - c_in)/2 zero channels before
 * and after. With stride 1 and c_out == c_in it is the identity. */
void shortcut_a_forward(float *out, const float *x, int batch, int c_in, int h, int w,
                        int c_out, int stride);
void shortcut_a_backward(float *dx, const float *dout, int batch, int c_in, int h, int w,
                         int c_out, int stride, bool acc);

/* Inverted dropout with probability p: out = x * mask / (1 - p). The mask of example i (row
 * row0 + i of the step's batch: a process's shard of it starts at row0, dist.h) is drawn from
 * the stream (seed, "dropout", step << 24 | layer << 16 | (row0 + i)), so every pass of an
 * optimizer step (same step) sees the same mask, and a resumed run the same masks. The mask
 * is kept in `mask` (n floats: 0 or 1/(1-p)) for backward. Requires row0 + batch < 65536. */
void dropout_forward(float *out, float *mask, const float *x, int batch, size_t per_example,
                     float p, uint64_t seed, uint64_t step, int layer, int row0);
void dropout_backward(float *dx, const float *dout, const float *mask, size_t n, bool acc);

/* out = a + b (n floats), or max(0, a + b) with relu; backward: grad_pass to both inputs. */
void add_forward(float *out, const float *a, const float *b, size_t n, bool relu);
/* Tangent of add_forward: rout = ra + rb, where y_relu > 0 when a ReLU was fused (y_relu not
 * NULL). */
void add_rop(float *rout, const float *ra, const float *rb, const float *y_relu, size_t n);
/* dx = dout (or += with acc); with y_relu (a fused ReLU's output), only where y_relu > 0. */
void grad_pass(float *dx, const float *dout, const float *y_relu, size_t n, bool acc);

#endif
