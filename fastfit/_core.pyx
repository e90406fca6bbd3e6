# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled core: forward, backward, losses, optimizer updates, the fused loop.

Every function here trusts its inputs: shapes, dtypes, contiguity, label ranges
and buffer sizes were checked by the Python layer (network.py, losses.py,
optim.py, training.py) before the call. Nothing here raises or allocates.

Memory layout (see MATH.md, "The network"):
- params: one flat buffer; layer k's W_k (d_{k+1}, d_k) row-major at woff[k],
  then b_k (d_{k+1},) at boff[k]. grads has the same layout.
- acts: one buffer holding, for a batch of B rows, H_1 .. H_K and the output
  F_K back to back, each (B, d_{k+1}) row-major. The activation is its own
  ReLU mask (1[F > 0] == 1[H > 0]), so no pre-activation is kept.
- The backward pass overwrites H_k with dL/dF_{k-1} once H_k has served
  dL/dW_k and the mask: after backward the activations are spent.
- scratch: (B, max hidden width), where dL/dH_k is written before masking.

BLAS trick: a row-major (r, c) array is a column-major (c, r) array, i.e. the
transpose. So every product below is the column-major statement of the
row-major formula, and no array is ever copied or transposed.
"""
from cython cimport floating
from libc.math cimport sqrt, exp, log, log1p, fabs, isfinite
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "math.h" nogil:
    float expf(float)
    float logf(float)
    float log1pf(float)
    float sqrtf(float)
    float fabsf(float)

cdef extern from "kernels.h" nogil:
    void ff_update_f32(int kind, float *p, const float *g, float *m, float *v, size_t n,
                       double lr, double beta1, double beta2, double eps,
                       double c1, double c2, double keep, double move, int n_threads)
    void ff_update_f64(int kind, double *p, const double *g, double *m, double *v, size_t n,
                       double lr, double beta1, double beta2, double eps,
                       double c1, double c2, double keep, double move, int n_threads)
    void ff_bias_act_f32(float *f, const float *bias, size_t rows, size_t cols, int relu)
    void ff_bias_act_f64(double *f, const double *bias, size_t rows, size_t cols, int relu)
    void ff_colsum_f32(const float *d, size_t rows, size_t cols, float *db)
    void ff_colsum_f64(const double *d, size_t rows, size_t cols, double *db)
    void ff_mask_colsum_f32(const float *dh, float *h, size_t rows, size_t cols, float *db)
    void ff_mask_colsum_f64(const double *dh, double *h, size_t rows, size_t cols, double *db)

# Codes shared with the Python layer (losses.py, optim.py) and csrc/kernels.h.
LOSS_SQUARED_ERROR = 0
LOSS_SOFTMAX_CROSS_ENTROPY = 1
LOSS_BINARY_CROSS_ENTROPY = 2
OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_NESTEROV = 2
OPT_ADAM = 3
OPT_NORMALIZED = 4
OPT_ADAM_EPS_HAT = 5  # Adam with Keras/scikit-learn's epsilon placement; runs as 3

# ---------------------------------------------------------------- BLAS glue

cdef inline void gemm(char transa, char transb, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """C (m x n, column-major) = alpha * op(A) @ op(B) + beta * C."""
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda,
              <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda,
              <double*>b, &ldb, &beta, c, &ldc)


# ---------------------------------------------------------------- network passes

cdef inline floating* act_slot(floating* acts, const int* dims, Py_ssize_t B,
                               Py_ssize_t k) noexcept nogil:
    """Start of layer k's output (H_{k+1}, or F_K for the last layer) for batch B."""
    cdef Py_ssize_t off = 0, j
    for j in range(k):
        off += B * dims[j + 1]
    return acts + off


cdef void forward_pass(int L, const int* dims, const Py_ssize_t* woff,
                       const Py_ssize_t* boff, const floating* params,
                       const floating* X, Py_ssize_t B, floating* acts) noexcept nogil:
    """F_k = H_k @ W_k.T + b_k; H_{k+1} = relu(F_k); the last layer stays linear."""
    cdef const floating* h = X
    cdef floating* f
    cdef Py_ssize_t k, din, dout
    if B == 0:
        return
    for k in range(L):
        din = dims[k]
        dout = dims[k + 1]
        f = act_slot(acts, dims, B, k)
        # row-major F (B, dout) is column-major F^T (dout, B) = W (dout, din) @ H^T (din, B);
        # the W buffer read column-major is W^T, hence transa = 'T'.
        gemm(c'T', c'N', <int>dout, <int>B, <int>din, <floating>1.0,
             params + woff[k], <int>din, h, <int>din, <floating>0.0, f, <int>dout)
        # bias + ReLU in one pass (the last layer: bias only)
        if floating is float:
            ff_bias_act_f32(f, params + boff[k], B, dout, k < L - 1)
        else:
            ff_bias_act_f64(f, params + boff[k], B, dout, k < L - 1)
        h = f


cdef void backward_pass(int L, const int* dims, const Py_ssize_t* woff,
                        const Py_ssize_t* boff, const floating* params,
                        floating* grads, const floating* X, Py_ssize_t B,
                        floating* acts, floating* scratch) noexcept nogil:
    """Gradients of all W_k, b_k given dL/dF_K stored in the output slot of acts."""
    cdef Py_ssize_t i, k, din, dout
    cdef floating* dF
    cdef floating* h
    cdef const floating* hin
    # dL/db_{K} = column sums of dL/dF_K
    dout = dims[L]
    dF = act_slot(acts, dims, B, L - 1)
    if floating is float:
        ff_colsum_f32(dF, B, dout, grads + boff[L - 1])
    else:
        ff_colsum_f64(dF, B, dout, grads + boff[L - 1])
    for k in range(L - 1, -1, -1):
        din = dims[k]
        dout = dims[k + 1]
        dF = act_slot(acts, dims, B, k)
        hin = X if k == 0 else act_slot(acts, dims, B, k - 1)
        # dL/dW_k (dout, din) row-major is column-major (din, dout) = H^T (din, B) @ dF (B, dout):
        # the H buffer read column-major is H^T ('N'), the dF buffer is dF^T ('T').
        if B > 0:
            gemm(c'N', c'T', <int>din, <int>dout, <int>B, <floating>1.0,
                 hin, <int>din, dF, <int>dout, <floating>0.0,
                 grads + woff[k], <int>din)
        else:
            for i in range(din * dout):
                grads[woff[k] + i] = 0
        if k == 0:
            break  # the input gradient of the first layer is never needed (MATH.md)
        # dL/dH_k (B, din) row-major is column-major (din, B) = W^T (din, dout) @ dF^T (dout, B)
        gemm(c'N', c'N', <int>din, <int>B, <int>dout, <floating>1.0,
             params + woff[k], <int>din, dF, <int>dout, <floating>0.0,
             scratch, <int>din)
        # dL/dF_{k-1} = 1[H_k > 0] * dL/dH_k, written over H_k (spent after this),
        # fused with dL/db_{k-1} = column sums of dL/dF_{k-1}.
        h = act_slot(acts, dims, B, k - 1)
        if floating is float:
            ff_mask_colsum_f32(scratch, h, B, din, grads + boff[k - 1])
        else:
            ff_mask_colsum_f64(scratch, h, B, din, grads + boff[k - 1])


# ---------------------------------------------------------------- losses

cdef inline floating fexp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating flog(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating flog1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef double loss_and_grad(int kind, bint mean, const floating* out, Py_ssize_t B,
                          Py_ssize_t C, const floating* yf, const Py_ssize_t* yi,
                          floating* grad) noexcept nogil:
    """Return sum_i l_i (unreduced) and write dL/dF into grad (may alias out).

    The gradient carries the reduction's scale: 1 for "sum", 1/B (cross-entropy)
    or 1/(B*C) (squared error, binary cross-entropy) for "mean" (MATH.md, Losses).
    """
    cdef double total = 0.0
    cdef Py_ssize_t i, j, label
    cdef floating f, y, d, mx, s, e, lse, scale, a, sig
    cdef const floating* row
    cdef floating* grow
    if B == 0:
        return 0.0
    if kind == 1:  # softmax cross-entropy, integer labels
        scale = <floating>(1.0 / B) if mean else <floating>1.0
        for i in range(B):
            row = out + i * C
            grow = grad + i * C
            label = yi[i]
            mx = row[0]
            for j in range(1, C):
                if row[j] > mx:
                    mx = row[j]
            # subtract the max first: no overflow for any finite logits. The
            # exponentials go into the gradient row, then one pass normalises
            # them (grad may alias out: row[label] is read before it is written).
            f = row[label]
            s = 0
            for j in range(C):
                e = fexp(row[j] - mx)
                grow[j] = e
                s += e
            lse = mx + flog(s)
            total += <double>(lse - f)
            e = scale / s
            for j in range(C):
                grow[j] *= e
            grow[label] -= scale
    elif kind == 0:  # squared error
        scale = <floating>(2.0 / (B * C)) if mean else <floating>2.0
        for i in range(B * C):
            d = out[i] - yf[i]
            total += <double>(d * d)
            grad[i] = d * scale
    else:  # binary cross-entropy on logits
        scale = <floating>(1.0 / (B * C)) if mean else <floating>1.0
        for i in range(B * C):
            f = out[i]
            y = yf[i]
            a = fabs(f) if floating is double else fabsf(f)
            # max(f, 0) - f*y + log(1 + exp(-|f|)): stable for any finite f
            total += <double>((f if f > 0 else 0) - f * y + flog1p(fexp(-a)))
            if f >= 0:
                sig = 1 / (1 + fexp(-f))
            else:
                e = fexp(f)
                sig = e / (1 + e)
            grad[i] = (sig - y) * scale
    return total


# ---------------------------------------------------------------- optimizer updates

cdef void optimizer_update(int kind, floating* p, const floating* g, floating* m,
                           floating* v, Py_ssize_t n, double lr, double lr_next,
                           double beta1, double beta2, double eps, long long t,
                           int n_threads) noexcept nogil:
    """One in-place update of the whole flat parameter buffer (MATH.md, Optimizers).

    t is the number of steps taken before this one (Adam's bias correction uses t+1).
    For Nesterov, p holds the look-ahead point psi_t = phi_t - lr_t*beta*m_t and
    becomes psi_{t+1} = psi_t + lr_t*beta*m_t - (lr_t + lr_{t+1}*beta)*m_{t+1}.
    The loops themselves are in csrc/kernels.c (vectorized, threaded when large).
    """
    cdef double c1 = 0.0, c2 = 0.0
    if kind == 5:
        # eps-hat form (MATH.md): the seed's rule with eps / sqrt(1 - beta2^(t+1))
        eps = eps / sqrt(1.0 - beta2 ** (t + 1))
        kind = 3
    if kind == 3:
        c1 = 1.0 / (1.0 - beta1 ** (t + 1))
        c2 = 1.0 / (1.0 - beta2 ** (t + 1))
    if floating is float:
        ff_update_f32(kind, p, g, m, v, n, lr, beta1, beta2, eps, c1, c2,
                      lr * beta1, lr + lr_next * beta1, n_threads)
    else:
        ff_update_f64(kind, p, g, m, v, n, lr, beta1, beta2, eps, c1, c2,
                      lr * beta1, lr + lr_next * beta1, n_threads)


# ---------------------------------------------------------------- Python entry points

cdef inline const floating* cptr1(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating* cptr2(const floating[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL


cdef inline floating* ptr1(floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


def forward(floating[::1] params, const int[::1] dims, const Py_ssize_t[::1] woff,
            const Py_ssize_t[::1] boff, const floating[:, ::1] X, floating[::1] acts):
    """Forward pass of X (B, d_0) into acts; returns nothing."""
    cdef int L = <int>dims.shape[0] - 1
    with nogil:
        forward_pass(L, &dims[0], &woff[0], &boff[0], &params[0], cptr2(X),
                     X.shape[0], ptr1(acts))


def backward(floating[::1] params, floating[::1] grads, const int[::1] dims,
             const Py_ssize_t[::1] woff, const Py_ssize_t[::1] boff,
             const floating[:, ::1] X, floating[::1] acts, floating[::1] scratch):
    """Backward pass for the batch X whose forward pass filled acts.

    dL/dF_K must already be in the output slot of acts. Spends the activations.
    """
    cdef int L = <int>dims.shape[0] - 1
    with nogil:
        backward_pass(L, &dims[0], &woff[0], &boff[0], &params[0], &grads[0],
                      cptr2(X), X.shape[0], ptr1(acts), ptr1(scratch))


def loss_value_and_grad(int kind, bint mean, const floating[:, ::1] out,
                        const floating[:, ::1] yf, const Py_ssize_t[::1] yi,
                        floating[:, ::1] grad):
    """Return sum_i l_i over the batch and write the scaled gradient into grad."""
    cdef double total
    cdef const Py_ssize_t* yip = &yi[0] if yi.shape[0] > 0 else NULL
    with nogil:
        total = loss_and_grad(kind, mean, cptr2(out), out.shape[0], out.shape[1],
                              cptr2(yf), yip, &grad[0, 0] if grad.shape[0] > 0 else NULL)
    return total


def optimizer_step(int kind, floating[::1] params, const floating[::1] grads,
                   floating[::1] m, floating[::1] v, double lr, double lr_next,
                   double beta1, double beta2, double eps, long long t, int n_threads):
    """One in-place optimizer update of the flat buffer (see optimizer_update)."""
    with nogil:
        optimizer_update(kind, &params[0], cptr1(grads), ptr1(m), ptr1(v),
                         params.shape[0], lr, lr_next, beta1, beta2, eps, t, n_threads)


def train_batches(const floating[:, ::1] X, const floating[:, ::1] Y,
                  const Py_ssize_t[::1] labels, const Py_ssize_t[::1] order,
                  Py_ssize_t batch_size, Py_ssize_t first_batch, Py_ssize_t n_batches,
                  floating[::1] params, floating[::1] grads, const int[::1] dims,
                  const Py_ssize_t[::1] woff, const Py_ssize_t[::1] boff,
                  floating[::1] acts, floating[::1] scratch, floating[::1] xbuf,
                  floating[::1] ybuf, Py_ssize_t[::1] lbuf,
                  int loss_kind, bint mean, int opt_kind, floating[::1] m, floating[::1] v,
                  const double[::1] lrs, double beta1, double beta2, double eps,
                  long long t0, int n_threads):
    """The fused training loop: n_batches steps, the GIL released throughout.

    Batch j takes the rows order[j*batch_size : (j+1)*batch_size] (the last one
    may be short). For each batch: gather rows into xbuf/ybuf/lbuf, forward,
    loss and its gradient in place over the output, backward, optimizer update.
    lrs[s] is the learning rate of step t0+s (lrs has n_batches+1 entries, the
    last for Nesterov's look-ahead). Y holds float targets (squared error, binary
    cross-entropy) and labels integer ones (cross-entropy); the other is empty.

    Returns (sum of l_i over the rows seen, batches done, stopped_on_nonfinite).
    A batch whose loss is not finite stops the loop before its update, so the
    parameters stay those of the last finite step.
    """
    cdef int L = <int>dims.shape[0] - 1
    cdef Py_ssize_t N = order.shape[0]
    cdef Py_ssize_t d0 = dims[0]
    cdef Py_ssize_t C = dims[L]
    cdef Py_ssize_t ycols = Y.shape[1] if Y.shape[0] > 0 else 0
    cdef Py_ssize_t P = params.shape[0]
    cdef Py_ssize_t s, r, start, stop, B, row
    cdef double total = 0.0, batch_total
    cdef bint nonfinite = False
    cdef Py_ssize_t done = 0
    cdef floating* out
    cdef const floating* Xp = cptr2(X)
    cdef const floating* Yp = cptr2(Y)
    cdef const Py_ssize_t* labp = &labels[0] if labels.shape[0] > 0 else NULL
    cdef floating* xb = ptr1(xbuf)
    cdef floating* yb = ptr1(ybuf)
    cdef Py_ssize_t* lb = &lbuf[0] if lbuf.shape[0] > 0 else NULL
    with nogil:
        for s in range(n_batches):
            start = (first_batch + s) * batch_size
            stop = start + batch_size
            if stop > N:
                stop = N
            B = stop - start
            for r in range(B):
                row = order[start + r]
                memcpy(xb + r * d0, Xp + row * d0, d0 * sizeof(floating))
                if labp != NULL:
                    lb[r] = labp[row]
                else:
                    memcpy(yb + r * ycols, Yp + row * ycols, ycols * sizeof(floating))
            forward_pass(L, &dims[0], &woff[0], &boff[0], &params[0], xb, B, &acts[0])
            out = act_slot(&acts[0], &dims[0], B, L - 1)
            batch_total = loss_and_grad(loss_kind, mean, out, B, C, yb, lb, out)
            if not isfinite(batch_total):
                nonfinite = True
                break
            total += batch_total
            backward_pass(L, &dims[0], &woff[0], &boff[0], &params[0], &grads[0],
                          xb, B, &acts[0], ptr1(scratch))
            optimizer_update(opt_kind, &params[0], &grads[0], ptr1(m), ptr1(v), P,
                             lrs[s], lrs[s + 1], beta1, beta2, eps, t0 + s, n_threads)
            done += 1
    return total, done, nonfinite
