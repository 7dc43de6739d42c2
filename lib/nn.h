/* nn.h: layer and loss kernels as forward/backward pairs.
 *
 * Argument order (llm.c): outputs, then inputs, then weights, then dimensions. Shapes are given
 * in comments as (rows, cols), row-major. Backward functions ADD into weight gradients (dw, db)
 * (linear_backward: unless acc is false) and OVERWRITE input gradients (dx), which the caller
 * owns. Kernels never fail: they assert.
 * Parallel loops run over the index they write, with static schedules.
 */
#ifndef SAMX_NN_H
#define SAMX_NN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* out (batch, n_out) = x (batch, n_in) @ w^T (n_out, n_in) + b (n_out); b may be NULL. */
void linear_forward(float *out, const float *x, const float *w, const float *b, int batch,
                    int n_in, int n_out);
/* dw (n_out, n_in) += dout^T x; db (n_out) += column sums of dout; dx (batch, n_in) = dout w.
 * Without acc, dw and db are overwritten (=) instead. dx and db may be NULL. */
void linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int batch, int n_in, int n_out, bool acc);

/* out (cols) = column sums of x (rows, cols; row length ld), each summed over the rows in index
 * order in float; added into out when acc. Serial: for use on blocks inside parallel code. */
void col_sums(float *out, const float *x, int rows, int cols, int ld, bool acc);

enum act { ACT_RELU, ACT_TANH, ACT_GELU };
extern const char *const act_names[]; /* "relu", "tanh", "gelu", NULL */

/* y = act(z), n elements. GELU is the exact erf form (PyTorch's default). */
void act_forward(enum act a, float *y, const float *z, size_t n);
/* The same, serial, on a block (rows, cols) of row-major matrices with row length ld; the
 * backward one in place (dz holds dy). For use inside parallel code. */
void act_forward_block(enum act a, float *y, const float *z, int rows, int cols, int ld);
void act_backward_block(enum act a, float *dz, const float *z, const float *y, int rows,
                        int cols, int ld);
/* dz = dy * act'(z), y = act(z) (overwrites dz, which may alias dy; or adds with acc).
 * ReLU'(0) = 0, as PyTorch. */
void act_backward(enum act a, float *dz, const float *dy, const float *z, const float *y,
                  size_t n, bool acc);
/* The backward step through an activation and its R-operator (Hessian-vector products): from
 * the forward z, y = act(z), the tangent rz = R{z}, the output gradient dy and its tangent rdy,
 *     dz = dy act'(z),   rdz = rdy act'(z) + dy act''(z) rz,
 * overwritten, or added to dz and rdz with acc. act'' is 0 for ReLU (as PyTorch's double
 * backward), -2 y (1 - y^2) for tanh and phi(z) (2 - z^2) for GELU (phi the standard normal
 * density). dz may alias dy and rdz rdy when acc is false. */
void act_rop(enum act a, float *dz, float *rdz, const float *dy, const float *rdy,
             const float *z, const float *y, const float *rz, size_t n, bool acc);

/* Softmax cross-entropy on logits (batch, k) with labels, PyTorch semantics for label
 * smoothing s: target = (1-s) onehot + s/k. Writes per-example losses to loss_ex (batch,
 * required: the caller's workspace) and 1/0 for a correct argmax to hit (batch, required).
 * Returns the SUM of per-example losses, added in index order. When dlogits is not NULL it gets
 * d(sum loss)/d(logits) times `scale` (1/examples for the gradient of a mean); it may alias
 * logits. */
double xent_forward_backward(float *dlogits, double *loss_ex, uint8_t *hit, const float *logits,
                             const int32_t *label, int batch, int k, float smoothing,
                             float scale);
/* Squared error of predictions (batch, 1) against targets y: loss_ex[i] = (p - y)^2 (required).
 * Returns the SUM; dpred = scale * 2 (p - y) when not NULL (may alias pred). PyTorch's MSELoss
 * is the mean: pass scale = 1/batch. */
double mse_forward_backward(float *dpred, double *loss_ex, const float *pred, const float *y,
                            int batch, float scale);

/* The gradient through a ReLU: d where the ReLU's input (or output) y is positive, else 0
 * (ReLU'(0) = 0, as PyTorch). Both values are arguments, so a loop over it loads d
 * unconditionally: written inline as `y[i] > 0 ? d[i] : 0` the load of d[i] is conditional and
 * GCC leaves the loop scalar. */
static inline float relu_grad(float y, float d)
{
    return y > 0 ? d : 0.0f;
}

#endif
