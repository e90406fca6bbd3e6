# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled core: forward, backward, losses, optimizer updates, the training step.

The training step has two parts (docs/math.md has every formula):

- the batch gradient: gather the batch's rows, forward pass, loss and its
  gradient with respect to the output, backward pass into the gradient buffer;
- the update: the optimizer's rule over the parameters, layer by layer.

``train_steps`` runs both for a run of batches with the GIL released; there
each layer is updated as soon as its gradient is final, while it is still in
cache. The distributed fit runs the batch gradient, all-reduces the gradient
buffer, then runs the update (``batch_gradient`` and ``update``); or, exchanging
factors, each rank's slice of the batch forward and back (``slice_head``,
``slice_input_gradient``), then the weight gradients over the whole batch
(``rows_weight_gradient``) and ``update``.

Every function here trusts its inputs: shapes, dtypes, contiguity, label
ranges and buffer sizes were checked by the Python layer before the objects
below were built. Nothing here raises (except while constructing those
objects) or allocates during a step.

The objects (each a small C struct with the arrays it points into kept alive):
- Network: the network's shape, its offsets and its parameter and gradient buffers;
- Workspace: activations, backward scratch and the gathered batch, for up to
  ``capacity`` rows;
- Dataset: the training rows (X, and float targets Y or integer labels);
- Objective: the loss and its reduction;
- UpdateRule: the optimizer's rule, hyper-parameters and state buffers.
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport sqrt, exp, log1p, fabs, isfinite
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport sgemm, dgemm

import numpy as np

cnp.import_array()

cdef extern from "math.h" nogil:
    float expf(float)
    float log1pf(float)
    float fabsf(float)

cdef extern from "codes.h":
    cdef enum:
        FF_LOSS_SQUARED_ERROR
        FF_LOSS_SOFTMAX_CROSS_ENTROPY
        FF_LOSS_BINARY_CROSS_ENTROPY
        FF_SGD
        FF_MOMENTUM
        FF_NESTEROV
        FF_ADAM
        FF_NORMALIZED

cdef extern from "gemm.h" nogil:
    ctypedef struct ff_gemm_finish:
        const void *bias
        int relu
        void *gated
        int ldg
        void *column_sums
    size_t ff_gemm_pack_bytes(int max_n, int max_k)
    int ff_gemm_usable()
    void ff_gemm_f32(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, float *C, int ldc, void *pack, const ff_gemm_finish *finish)
    void ff_gemm_f64(int trans_a, int trans_b, int M, int N, int K, const double *A, int lda,
                     const double *B, int ldb, double *C, int ldc, void *pack, const ff_gemm_finish *finish)

cdef extern from "kernels.h" nogil:
    ctypedef struct ff_rule:
        int kind
        double lr, beta1, beta2, eps, m_hat_scale, v_hat_scale, keep, move, grad_decay, shrink
    void ff_update_f32(const ff_rule *rule, float *p, const float *g, float *m, float *v,
                       size_t n, int n_threads)
    void ff_update_f64(const ff_rule *rule, double *p, const double *g, double *m, double *v,
                       size_t n, int n_threads)
    int ff_update_stays_finite_f32(const ff_rule *rule, const float *p, const float *g, const float *m,
                                   const float *v, size_t n, int n_threads)
    int ff_update_stays_finite_f64(const ff_rule *rule, const double *p, const double *g, const double *m,
                                   const double *v, size_t n, int n_threads)
    void ff_bias_act_f32(float *f, const float *bias, size_t rows, size_t cols, int relu)
    void ff_bias_act_f64(double *f, const double *bias, size_t rows, size_t cols, int relu)
    void ff_colsum_f32(const float *d, size_t rows, size_t cols, float *db)
    void ff_colsum_f64(const double *d, size_t rows, size_t cols, double *db)
    void ff_mask_colsum_f32(const float *dh, float *h, size_t rows, size_t cols, float *db)
    void ff_mask_colsum_f64(const double *dh, double *h, size_t rows, size_t cols, double *db)
    void ff_outer_f32(const float *a, size_t a_stride, const float *b, size_t m, size_t n, float *c, size_t ldc)
    void ff_outer_f64(const double *a, size_t a_stride, const double *b, size_t m, size_t n, double *c, size_t ldc)
    void ff_row_times_f32(const float *a, const float *b, size_t ldb, size_t k, size_t n, float *c)
    void ff_row_times_f64(const double *a, const double *b, size_t ldb, size_t k, size_t n, double *c)
    double ff_softmax_xent_f32(const float *out, size_t rows, size_t cols, const Py_ssize_t *labels,
                               float scale, float *grad, Py_ssize_t *hits)
    double ff_softmax_xent_f64(const double *out, size_t rows, size_t cols, const Py_ssize_t *labels,
                               double scale, double *grad, Py_ssize_t *hits)
    void ff_transpose_f32(const float *a, size_t rows, size_t cols, float *at)
    void ff_transpose_f64(const double *a, size_t rows, size_t cols, double *at)
    void ff_relu_mask_f32(const float *h, float *d, size_t n)
    void ff_relu_mask_f64(const double *h, double *d, size_t n)
    void ff_prefetch_rows(const void *base, const Py_ssize_t *rows, size_t n, size_t row_bytes)
    size_t FF_GUARD_PARALLEL_MIN_BYTES
    void ff_copy_bytes(void *dst, const void *src, size_t bytes, int n_threads)
    int ff_all_finite_f32(const float *x, size_t n, int n_threads)
    int ff_all_finite_f64(const double *x, size_t n, int n_threads)

cdef extern from "team.h" nogil:
    ctypedef void (*ff_task)(void *arg, int index, int count) noexcept nogil
    void ff_team_run(ff_task task, void *arg, int count)
    int ff_team_size()

# The codes of csrc/codes.h, for the Python layer.
LOSS_SQUARED_ERROR = FF_LOSS_SQUARED_ERROR
LOSS_SOFTMAX_CROSS_ENTROPY = FF_LOSS_SOFTMAX_CROSS_ENTROPY
LOSS_BINARY_CROSS_ENTROPY = FF_LOSS_BINARY_CROSS_ENTROPY
OPT_SGD = FF_SGD
OPT_MOMENTUM = FF_MOMENTUM
OPT_NESTEROV = FF_NESTEROV
OPT_ADAM = FF_ADAM
OPT_NORMALIZED = FF_NORMALIZED


def team_size():
    """How many threads fastfit's own team has started so far."""
    return ff_team_size()


# ---------------------------------------------------------------- the objects the core receives

cdef struct NetView:
    int L                       # number of layers
    bint f64                    # double (else float) buffers
    const int *dims             # (L+1,) widths d_0 .. d_L
    const Py_ssize_t *woff      # (L,) W_k (d_{k+1}, d_k) row-major starts at params + woff[k]
    const Py_ssize_t *boff      # (L,) b_k (d_{k+1},) starts at params + boff[k] (right after W_k)
    const Py_ssize_t *aoff      # (L,) layer k's output starts at acts + B * aoff[k] for a batch of B
    Py_ssize_t n_params
    void *params                # (n_params,)
    void *grads                 # (n_params,), the same layout


cdef class Network:
    """An MLP's shape and flat buffers, as the core sees them (docs/math.md, "Weight layout").

    ``Network(sizes, params, grads)``: sizes (d_0, ..., d_L); params and grads
    C-contiguous float32 or float64 arrays of ``n_params`` entries, both of one
    dtype. Every offset into the buffers is computed here and nowhere else.
    """
    cdef NetView v
    cdef readonly object sizes, params, grads
    cdef readonly cnp.ndarray dims, woff, boff, aoff

    def __init__(self, sizes, cnp.ndarray params, cnp.ndarray grads):
        sizes = tuple(int(s) for s in sizes)
        L = len(sizes) - 1
        self.dims = np.asarray(sizes, dtype=np.intc)
        woff, boff, aoff = [], [], []
        off = act = 0
        for k in range(L):
            din, dout = sizes[k], sizes[k + 1]
            woff.append(off)
            off += din * dout
            boff.append(off)
            off += dout
            aoff.append(act)
            act += dout
        dtype = params.dtype
        if (dtype not in (np.float32, np.float64) or grads.dtype != dtype
                or params.ndim != 1 or grads.ndim != 1
                or params.shape[0] != off or grads.shape[0] != off
                or not params.flags.c_contiguous or not grads.flags.c_contiguous
                or not params.flags.writeable or not grads.flags.writeable):
            raise ValueError(f"params and grads must be writeable contiguous float32 or float64 arrays "
                             f"of {off} entries for sizes {sizes}")
        self.sizes, self.params, self.grads = sizes, params, grads
        self.woff = np.asarray(woff, dtype=np.intp)
        self.boff = np.asarray(boff, dtype=np.intp)
        self.aoff = np.asarray(aoff, dtype=np.intp)
        self.v.L = L
        self.v.f64 = dtype == np.float64
        self.v.dims = <const int *>cnp.PyArray_DATA(self.dims)
        self.v.woff = <const Py_ssize_t *>cnp.PyArray_DATA(self.woff)
        self.v.boff = <const Py_ssize_t *>cnp.PyArray_DATA(self.boff)
        self.v.aoff = <const Py_ssize_t *>cnp.PyArray_DATA(self.aoff)
        self.v.n_params = off
        self.v.params = cnp.PyArray_DATA(params)
        self.v.grads = cnp.PyArray_DATA(grads)

    @property
    def n_params(self):
        return self.v.n_params

    @property
    def n_layers(self):
        return self.v.L

    @property
    def activation_width(self):
        """Entries of activations per batch row: d_1 + ... + d_L."""
        return sum(self.sizes[1:])

    def output_offset(self, Py_ssize_t rows):
        """Where the output F_L of a batch of ``rows`` starts in the activation buffer."""
        return rows * self.v.aoff[self.v.L - 1]


cdef struct WorkView:
    Py_ssize_t capacity         # rows of the largest batch these buffers hold
    int threads                 # fastfit threads a large product is split across (BLAS at 1 inside)
    void *acts                  # (capacity * (d_1 + ... + d_L),): layer k's output at B * aoff[k]
    void *scratch               # (capacity * widest hidden width,): dL/dH_k before its mask, and
                                #   a small forward product's transposed input (input_transposed)
    Py_ssize_t scratch_len      # its length in elements
    bint transpose_small_inputs # BLAS has the small-matrix kernels input_transposed is for
    bint transpose_few_row_outputs  # BLAS runs (W H^T)^T faster for few rows (output_transposed)
    char *pack                  # (threads * pack_stride,) bytes: each thread's packing buffer for
                                #   fastfit's own products (own_product), or NULL: BLAS for all
    Py_ssize_t pack_stride      # bytes from one thread's packing buffer to the next's
    void *xbuf                  # (capacity, d_0): the gathered inputs
    void *ybuf                  # (capacity, target columns): the gathered float targets
    Py_ssize_t *lbuf            # (capacity,): the gathered integer labels
    void *deltas                # (capacity * (d_1 + ... + d_L),) or NULL: dL/dF_k at B * aoff[k],
                                #   apart from the activations (the factor exchange keeps both)


cdef class Workspace:
    """The buffers one batch is worked in, for batches of up to ``capacity`` rows
    (docs/math.md, "Memory"). The activation buffer doubles as the backward
    pass's dL/dF buffer, so no pre-activations or masks are stored."""
    cdef WorkView v
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t rows_in_use  # the rows gradient_head last worked on
    cdef readonly cnp.ndarray acts, scratch, xbuf, ybuf, lbuf, deltas, packing
    cdef readonly bint own_products
    cdef readonly object sizes, dtype      # of the network the buffers are sized for
    cdef readonly Py_ssize_t target_cols   # float target columns ybuf holds per row

    def __init__(self, Network net, Py_ssize_t capacity, Py_ssize_t target_cols=0, bint labels=False,
                 int threads=1, bint transpose_small_inputs=False, bint deltas=False,
                 bint transpose_few_row_outputs=False, bint own_products=False):
        sizes = net.sizes
        dtype = net.params.dtype
        self.sizes, self.dtype, self.target_cols = sizes, dtype, target_cols
        if own_products and not ff_gemm_usable():
            raise ValueError("own_products needs fastfit's AVX-512 product, and this build, CPU "
                             "or operating system cannot run it")
        self.own_products = own_products and uses_own_products(net.sizes, capacity, dtype)
        self.packing = np.empty(0, dtype=np.uint8)
        self.v.pack = NULL
        self.v.pack_stride = own_product_packing_bytes(net.sizes, capacity)
        hidden = sizes[1:len(sizes) - 1]
        self.capacity = capacity
        self.acts = line_aligned_zeros(capacity * net.activation_width, dtype)
        self.scratch = line_aligned_zeros(capacity * max(hidden) if hidden else 0, dtype)
        self.xbuf = line_aligned_zeros(capacity * sizes[0], dtype)
        self.ybuf = line_aligned_zeros(capacity * target_cols, dtype)
        self.lbuf = line_aligned_zeros(capacity if labels else 0, np.intp)
        self.deltas = line_aligned_zeros(capacity * net.activation_width if deltas else 0, dtype)
        self.v.capacity = capacity
        self.v.acts = cnp.PyArray_DATA(self.acts)
        self.v.scratch = cnp.PyArray_DATA(self.scratch)
        self.v.scratch_len = self.scratch.shape[0]
        self.v.transpose_small_inputs = transpose_small_inputs
        self.v.transpose_few_row_outputs = transpose_few_row_outputs
        self.v.xbuf = cnp.PyArray_DATA(self.xbuf)
        self.v.ybuf = cnp.PyArray_DATA(self.ybuf)
        self.v.lbuf = <Py_ssize_t *>cnp.PyArray_DATA(self.lbuf)
        self.v.deltas = cnp.PyArray_DATA(self.deltas) if deltas else NULL
        self.threads = threads

    @property
    def threads(self):
        """How many of fastfit's threads a large product of a batch here is split across."""
        return self.v.threads

    @threads.setter
    def threads(self, int n):
        if n < 1:
            raise ValueError(f"threads must be at least 1, got {n}")
        if self.own_products and self.packing.shape[0] < n * self.v.pack_stride + LINE:
            # one packing buffer per thread, each starting on a line
            self.packing = np.empty(n * self.v.pack_stride + LINE, dtype=np.uint8)
            self.v.pack = line_aligned(self.packing)
        self.v.threads = n

    @property
    def transpose_small_inputs(self):
        """Whether small forward products read their input transposed (see input_transposed)."""
        return self.v.transpose_small_inputs

    @property
    def transpose_few_row_outputs(self):
        """Whether float32 forward products of few rows run as (W H^T)^T (see output_transposed)."""
        return self.v.transpose_few_row_outputs

    @property
    def nbytes(self):
        """Bytes the buffers hold, each line-aligned one's allocation whole (see line_aligned_zeros)."""
        return sum(allocated_bytes(a) for a in (self.acts, self.scratch, self.xbuf, self.ybuf, self.lbuf,
                                                 self.deltas, self.packing))


cdef struct DataView:
    Py_ssize_t n_rows, d0, ycols
    const void *X               # (n_rows, d0)
    const void *Y               # (n_rows, ycols), or NULL when the targets are labels
    const Py_ssize_t *labels    # (n_rows,), or NULL when the targets are floats


cdef class Dataset:
    """Training rows: X (n, d_0) and either float targets Y (n, C) or labels (n,),
    C-contiguous, in the network's dtype; the other target array is empty."""
    cdef DataView v
    cdef readonly cnp.ndarray X, Y, labels
    cdef readonly Py_ssize_t label_min, label_max   # the labels' range (0, -1 without labels)

    def __init__(self, cnp.ndarray X, cnp.ndarray Y, cnp.ndarray labels):
        if (X.ndim != 2 or X.dtype not in (np.float32, np.float64) or not X.flags.c_contiguous
                or Y.ndim != 2 or not Y.flags.c_contiguous or (Y.size and (Y.dtype != X.dtype or Y.shape[0] != X.shape[0]))
                or labels.ndim != 1 or labels.dtype != np.intp or not labels.flags.c_contiguous
                or (labels.size and labels.shape[0] != X.shape[0])):
            raise ValueError("Dataset needs X (n, d) contiguous float32 or float64, and Y (n, C) contiguous of "
                             "X's dtype or labels (n,) contiguous intp, the other empty")
        if labels.flags.writeable or (<object>labels).base is not None:
            # its own copy, read-only: the range read once here must hold for every later step
            # (the core trusts each label to index the output; see check_batch_inputs)
            labels = labels.copy()
            labels.flags.writeable = False
        self.X, self.Y, self.labels = X, Y, labels
        self.label_min, self.label_max = (int(labels.min()), int(labels.max())) if labels.size else (0, -1)
        self.v.n_rows = X.shape[0]
        self.v.d0 = X.shape[1]
        self.v.ycols = Y.shape[1] if Y.size else 0
        self.v.X = cnp.PyArray_DATA(X)
        self.v.Y = cnp.PyArray_DATA(Y) if Y.size else NULL
        self.v.labels = <const Py_ssize_t *>cnp.PyArray_DATA(labels) if labels.size else NULL


cdef struct LossView:
    int kind                    # FF_LOSS_*
    bint mean                   # "mean" reduction (else "sum")
    Py_ssize_t per_sample       # what "mean" divides by per row: 1, or the number of outputs
    double l2                   # L2 penalty coefficient on the weights (docs/math.md, "Regularisation")


cdef class Objective:
    """What the step minimises: a loss (kind, reduction) and the L2 penalty on the weights."""
    cdef LossView v

    def __init__(self, int kind, bint mean, Py_ssize_t per_sample, double l2=0.0):
        self.v.kind, self.v.mean, self.v.per_sample, self.v.l2 = kind, mean, per_sample, l2

    def grad_scale(self, Py_ssize_t rows):
        """The factor dl_i/df takes in dL/df for a batch of ``rows``: 1 for "sum", 1/(rows*per_sample) for "mean"."""
        return loss_scale(&self.v, rows)


cdef inline double loss_scale(const LossView *loss, Py_ssize_t rows) noexcept nogil:
    return 1.0 / (rows * loss.per_sample) if loss.mean else 1.0


cdef struct RuleView:
    int kind                    # FF_SGD ... FF_NORMALIZED
    bint eps_hat                # Adam with Keras's and scikit-learn's epsilon placement
    bint decoupled              # AdamW: decay the parameters, not the gradient
    double beta1, beta2, eps, weight_decay
    int n_threads               # threads an update of a large layer is split across
    void *m                     # (n_params,) first state buffer, or NULL
    void *v                     # (n_params,) second state buffer, or NULL


cdef class UpdateRule:
    """An optimizer's rule as the core runs it: kind, hyper-parameters, state buffers (m, v)."""
    cdef RuleView v
    cdef readonly cnp.ndarray m, vbuf

    def __init__(self, int kind, cnp.ndarray m, cnp.ndarray v, double beta1=0.0, double beta2=0.0,
                 double eps=0.0, double weight_decay=0.0, bint decoupled=False, bint eps_hat=False,
                 int n_threads=1):
        self.m, self.vbuf = m, v
        self.v.kind, self.v.eps_hat, self.v.decoupled = kind, eps_hat, decoupled
        self.v.beta1, self.v.beta2, self.v.eps, self.v.weight_decay = beta1, beta2, eps, weight_decay
        self.v.n_threads = max(1, n_threads)
        self.v.m = cnp.PyArray_DATA(m) if m.size else NULL
        self.v.v = cnp.PyArray_DATA(v) if v.size else NULL


cdef ff_rule step_coefficients(const RuleView *r, double lr, double lr_next, long long t) noexcept nogil:
    """The coefficients of step t (t steps were taken before it) at learning rates lr_t, lr_{t+1}."""
    cdef ff_rule c
    c.kind, c.lr, c.beta1, c.beta2, c.eps = r.kind, lr, r.beta1, r.beta2, r.eps
    c.m_hat_scale = c.v_hat_scale = 1.0
    if r.kind == FF_ADAM:
        c.m_hat_scale = 1.0 / (1.0 - r.beta1 ** (t + 1))
        c.v_hat_scale = 1.0 / (1.0 - r.beta2 ** (t + 1))
        if r.eps_hat:  # eps / sqrt(1 - beta2^(t+1)) (docs/math.md, "Matching other libraries")
            c.eps = r.eps * sqrt(c.v_hat_scale)
    c.keep = lr * r.beta1
    c.move = lr + lr_next * r.beta1
    c.grad_decay = 0.0 if r.decoupled else r.weight_decay
    c.shrink = 1.0 - lr * r.weight_decay if r.decoupled else 1.0
    return c


# ---------------------------------------------------------------- BLAS, in row-major terms

cdef enum:
    # A product of at least this many flops is split across the workspace's threads;
    # a smaller one runs on the calling thread (handing it over would cost more).
    SPLIT_MIN_FLOPS = 1 << 20
    # Each thread's share of a split product has at least this many columns, and
    # shares start at multiples of 16 columns (a 64-byte line of floats); or, cut
    # by rows, at least 32 rows, starting at multiples of 8.
    SPLIT_MIN_COLUMNS = 32
    SPLIT_COLUMN_BLOCK = 16
    SPLIT_MIN_ROWS = 32
    SPLIT_ROW_BLOCK = 8
    # A weight-gradient product (dF^T H: trans_a, not trans_b) with rows for two shares is
    # cut by rows even when C is wider than tall, up to this many times: at two threads 7-11%
    # faster than column shares at 256 x 256, 256 x 784, 256 x 1024 and 1024 x 1024 (K =
    # 64-128), 7-10% slower at 512 x 4096 and 64 x 4096 (docs/design.md, "The training step").
    WEIGHT_GRAD_ROWS_RATIO = 4

PRODUCT_SPLIT_MIN_FLOPS = SPLIT_MIN_FLOPS
WEIGHT_GRADIENT_ROWS_RATIO = WEIGHT_GRAD_ROWS_RATIO

cdef enum:
    # SciPy's OpenBLAS with its AVX-512 (SkylakeX) kernels runs a product of at most
    # 100^3 multiply-adds through small-matrix kernels that skip packing, except for one
    # layout: a transposed first operand ('T', 'N' in BLAS's column-major terms, which is
    # how the forward product H W^T reaches it) with more than 1200 outputs takes the
    # general path, up to 1.7x slower (docs/design.md, "The training step": small
    # forward products).
    SMALL_KERNEL_MAX_MULADDS = 1000000
    SMALL_KERNEL_TN_MAX_OUTPUTS = 1200

SMALL_PRODUCT_MAX_MULADDS = SMALL_KERNEL_MAX_MULADDS
SMALL_PRODUCT_TN_MAX_OUTPUTS = SMALL_KERNEL_TN_MAX_OUTPUTS

cdef enum:
    LINE = 64  # bytes of a cache line: where the core's buffers start

LINE_BYTES = LINE


cdef char *line_aligned(cnp.ndarray buffer) except NULL:
    """The first byte of `buffer` that starts a line (the buffers hold LINE bytes more)."""
    cdef char *base = <char *>cnp.PyArray_DATA(buffer)
    return base + (LINE - <size_t>base % LINE) % LINE


def allocated_bytes(array):
    """The bytes of the allocation an array lives in (a line-aligned buffer's whole)."""
    return array.nbytes if array.base is None else array.base.nbytes


def line_aligned_zeros(Py_ssize_t n, dtype):
    """n zeros of dtype starting on a 64-byte line (a view into a buffer 64 bytes longer): the
    parameters, gradients, optimizer state and workspace buffers, so that the element-wise
    passes read whole lines with each vector (NumPy gives 16 bytes; the small network's fit
    ran 4-6% faster on lines) and a split update's parts start on lines (see ff_update).
    No elements, no buffer."""
    dtype = np.dtype(dtype)
    if n == 0:
        return np.zeros(0, dtype=dtype)
    raw = np.zeros(n * dtype.itemsize + LINE_BYTES, dtype=np.uint8)
    start = line_aligned(raw) - <char *>cnp.PyArray_DATA(raw)
    return raw[start:start + n * dtype.itemsize].view(dtype)


cdef void check_guard_buffer(cnp.ndarray x, str name) except *:
    if not (x.ndim == 1 and x.dtype in (np.float32, np.float64) and x.flags.c_contiguous):
        raise ValueError(f"{name} must be a contiguous 1-d float32 or float64 array")


GUARD_PARALLEL_MIN_BYTES = FF_GUARD_PARALLEL_MIN_BYTES


def copy_into(cnp.ndarray dst, cnp.ndarray src, int threads=1):
    """dst[:] = src, split across ``threads`` of fastfit's team when large: the snapshot of
    the parameters and state before a run of steps (fastfit/epochs.py)."""
    check_guard_buffer(dst, "dst")
    check_guard_buffer(src, "src")
    if dst.dtype != src.dtype or dst.shape[0] != src.shape[0] or not dst.flags.writeable:
        raise ValueError("dst must be a writeable array of src's dtype and length")
    cdef void *d = cnp.PyArray_DATA(dst)
    cdef const void *from_ = cnp.PyArray_DATA(src)
    cdef size_t nbytes = dst.nbytes
    with nogil:
        ff_copy_bytes(d, from_, nbytes, max(threads, 1))


def all_finite(cnp.ndarray x, int threads=1):
    """Whether every value of x is finite, read across ``threads`` of fastfit's team when x
    is large: the check of the parameters and state after a run of steps."""
    check_guard_buffer(x, "x")
    cdef const void *data = cnp.PyArray_DATA(x)
    cdef size_t n = x.shape[0]
    cdef int finite
    cdef bint f64 = x.dtype == np.float64
    with nogil:
        if f64:
            finite = ff_all_finite_f64(<const double *>data, n, max(threads, 1))
        else:
            finite = ff_all_finite_f32(<const float *>data, n, max(threads, 1))
    return bool(finite)


def own_product_packing_bytes(sizes, Py_ssize_t rows):
    """Bytes of packing buffer each thread of a workspace with own_products holds, for a network
    of these layer sizes and batches of up to ``rows`` rows: enough for any of its products (no
    side longer than the widest layer or the batch), a whole number of 64-byte lines."""
    cdef int longest = max(max(sizes), rows)
    return (ff_gemm_pack_bytes(longest, longest) + 63) // 64 * 64


def own_products_usable():
    """Whether this build, CPU and operating system run fastfit's own AVX-512 products."""
    return bool(ff_gemm_usable())


def takes_own_product(int M, int N, int K):
    """Whether a product of op(A) (M, K) by op(B) (K, N) runs on fastfit's own product in a
    workspace that has it (see own_product)."""
    cdef char one_byte = 0
    return own_product(&one_byte, M, N, K)


def uses_own_products(sizes, Py_ssize_t rows, dtype):
    """Whether a network of these layer sizes, working batches of up to ``rows`` rows, has a
    product for fastfit's own (see own_product): past the small-matrix range and no side too
    narrow (each product of layer k has the sides rows, d_k and d_{k+1}). Only then does a
    workspace hold packing buffers."""
    return np.dtype(dtype) in (np.float32, np.float64) and any(
        takes_own_product(rows, d_out, d_in) for d_in, d_out in zip(sizes, sizes[1:]))


cdef enum:
    # fastfit's own product needs this much of each side of a product to beat BLAS: narrower
    # ones (a 10-class output layer's three products) fill its 8 x 32 tiles and 16-wide vectors
    # only in part, and ran 1.2-3.5x slower than BLAS at two threads (docs/design.md, "The products").
    OWN_PRODUCT_MIN_SIDE = 16

OWN_PRODUCT_MIN_SIDE_LENGTH = OWN_PRODUCT_MIN_SIDE


cdef inline bint own_product(const char *pack, int M, int N, int K) noexcept nogil:
    """Whether a product runs on fastfit's own AVX-512 product rather than BLAS's:
    when the workspace has packing buffers (own_products), the product is past OpenBLAS's
    small-matrix range, where fastfit's packs its operands as BLAS's general path does and
    was measured faster at a training step's shapes (docs/design.md, "The products"), and no
    side is narrower than OWN_PRODUCT_MIN_SIDE; below that range BLAS's unpacked
    small-matrix kernels win."""
    return (pack != NULL and <double>M * N * K > SMALL_KERNEL_MAX_MULADDS
            and M >= OWN_PRODUCT_MIN_SIDE and N >= OWN_PRODUCT_MIN_SIDE and K >= OWN_PRODUCT_MIN_SIDE)

cdef enum:
    # With the same kernels, a float32 forward product past the small-matrix range, of at
    # most this many rows, whose output is at least FEW_ROWS_OUTPUT_RATIO times wider than
    # the batch is long, runs faster as F^T = W H^T (then transposed) than as F = H W^T:
    # 1.07-2.4x at 16-64 rows, widths 256-4096, at all shapes measured but one, 4% slower
    # (docs/design.md, "The training step").
    # At 128 rows and more it won for some widths and lost up to 24% for others.
    FEW_ROWS_MAX_ROWS = 64
    FEW_ROWS_OUTPUT_RATIO = 8

FEW_ROWS_PRODUCT_MAX_ROWS = FEW_ROWS_MAX_ROWS
FEW_ROWS_PRODUCT_OUTPUT_RATIO = FEW_ROWS_OUTPUT_RATIO


cdef inline void one_gemm(bint trans_a, bint trans_b, int M, int N, int K,
                       const floating *A, int lda, const floating *B, int ldb,
                       floating *C, int ldc, char *pack, const ff_gemm_finish *finish) noexcept nogil:
    """Row-major C (M, N) = op(A) @ op(B), where op(X) is X.T when trans_x (C is only written);
    on fastfit's own product when `pack` (this thread's packing buffer) is given, which then
    also applies `finish` (NULL: none) to the final entries; BLAS never gets one (see gemm).

    BLAS is column-major, and a row-major buffer read column-major is the
    transpose. So the row-major C = op(A) op(B) is the column-major
    C^T = op(B)^T op(A)^T: BLAS gets B first, A second, each with its own flag.
    lda, ldb, ldc are the row-major row lengths.
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef floating one = 1, zero = 0
    if floating is float:
        if pack != NULL:
            ff_gemm_f32(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, pack, finish)
        else:
            sgemm(&ta, &tb, &N, &M, &K, &one, <float *>B, &ldb, <float *>A, &lda, &zero, C, &ldc)
    else:
        if pack != NULL:
            ff_gemm_f64(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, pack, finish)
        else:
            dgemm(&ta, &tb, &N, &M, &K, &one, <double *>B, &ldb, <double *>A, &lda, &zero, C, &ldc)


cdef struct GemmJob:
    # one row-major product C (M, N) = op(A) op(B), cut into shares of C's rows or columns (see gemm)
    bint f64, trans_a, trans_b, by_rows
    int M, N, K, lda, ldb, ldc
    const void *A
    const void *B
    void *C
    char *pack                  # the workspace's packing buffers (one per share), or NULL
    Py_ssize_t pack_stride      # bytes from one share's packing buffer to the next's
    const ff_gemm_finish *finish  # fastfit's own product's passes over the whole of C, or NULL


cdef inline void share_bounds(int length, int block, int index, int count, int *lo, int *hi) noexcept nogil:
    """Share `index` of `count` of [0, length), cut at multiples of `block`."""
    cdef int blocks = (length + block - 1) // block
    lo[0] = min(length, block * ((blocks * index) // count))
    hi[0] = min(length, block * ((blocks * (index + 1)) // count))


cdef void gemm_share(void *arg, int index, int count) noexcept nogil:
    """Share `index` of `count` of a GemmJob. By rows: C's rows [m0, m1), from the same rows
    of op(A) (A's columns m0..m1 when it is transposed, its rows otherwise). By columns: C's
    columns [n0, n1), from the same columns of op(B) (B's rows when it is transposed)."""
    cdef const GemmJob *job = <const GemmJob *>arg
    cdef int lo, hi, M = job.M, N = job.N
    cdef Py_ssize_t a0 = 0, b0 = 0, c0
    if job.by_rows:
        share_bounds(job.M, SPLIT_ROW_BLOCK, index, count, &lo, &hi)
        M = hi - lo
        a0 = lo if job.trans_a else <Py_ssize_t>lo * job.lda
        c0 = <Py_ssize_t>lo * job.ldc
    else:
        share_bounds(job.N, SPLIT_COLUMN_BLOCK, index, count, &lo, &hi)
        N = hi - lo
        b0 = <Py_ssize_t>lo * job.ldb if job.trans_b else lo
        c0 = lo
    if hi <= lo:
        return
    cdef char *pack = job.pack + index * job.pack_stride if job.pack != NULL else NULL
    cdef ff_gemm_finish share_finish
    cdef const ff_gemm_finish *finish = NULL
    cdef size_t item = sizeof(double) if job.f64 else sizeof(float)
    if job.finish != NULL:  # the same passes, on this share's rows or columns
        share_finish = job.finish[0]
        if job.by_rows:
            if share_finish.gated != NULL:
                share_finish.gated = <char *>share_finish.gated + <Py_ssize_t>lo * share_finish.ldg * item
        else:
            if share_finish.bias != NULL:
                share_finish.bias = <const char *>share_finish.bias + lo * item
            if share_finish.gated != NULL:
                share_finish.gated = <char *>share_finish.gated + lo * item
            if share_finish.column_sums != NULL:
                share_finish.column_sums = <char *>share_finish.column_sums + lo * item
        finish = &share_finish
    if job.f64:
        one_gemm(job.trans_a, job.trans_b, M, N, job.K, <const double *>job.A + a0, job.lda,
                 <const double *>job.B + b0, job.ldb, <double *>job.C + c0, job.ldc, pack, finish)
    else:
        one_gemm(job.trans_a, job.trans_b, M, N, job.K, <const float *>job.A + a0, job.lda,
                 <const float *>job.B + b0, job.ldb, <float *>job.C + c0, job.ldc, pack, finish)


cdef inline bint one_row_product(bint trans_a, bint trans_b, int M, int N, int K,
                                 const floating *A, int lda, const floating *B, int ldb,
                                 floating *C, int ldc) noexcept nogil:
    """The products of a one-row batch without BLAS, when op(B)'s rows are B's (not trans_b):
    the weight gradient (K = 1, an outer product) and the input gradient (M = 1, B's rows
    summed in order, each times its entry of the row op(A)); also any other product of
    these shapes (a one-column output layer's input gradient is an outer product). At the
    tiny network's batch-1 shapes they ran faster than BLAS's small-matrix kernels
    (docs/design.md, "The products"). Returns whether it ran."""
    if trans_b or K < 1:
        return False
    if K == 1:  # C[i, j] = op(A)[i, 0] * B[0, j]
        if floating is float:
            ff_outer_f32(A, 1 if trans_a else lda, B, M, N, C, ldc)
        else:
            ff_outer_f64(A, 1 if trans_a else lda, B, M, N, C, ldc)
        return True
    if M == 1 and not trans_a:  # C[0, :] = sum_k A[0, k] * B[k, :]
        if floating is float:
            ff_row_times_f32(A, B, ldb, K, N, C)
        else:
            ff_row_times_f64(A, B, ldb, K, N, C)
        return True
    return False


cdef inline void gemm(bint trans_a, bint trans_b, int M, int N, int K,
                      const floating *A, int lda, const floating *B, int ldb,
                      floating *C, int ldc, const WorkView *ws,
                      const ff_gemm_finish *finish=NULL) noexcept nogil:
    """Row-major C (M, N) = op(A) @ op(B) (beta = 0: C is only written), then `finish`, a
    layer's element-wise passes over the result, of one of two kinds: the forward pass's
    bias and ReLU (bias, relu), or the backward pass's ReLU gate and bias gradient (gated,
    column_sums; column_sums is overwritten). fastfit's own product applies them to each
    tile of C in registers, in each share; after BLAS's product they run as passes of their
    own (bias_act, mask_colsum) over C, whose row length must then be N. Both give the same
    numbers: the same operations on the same entries, the column sums in order of rows.

    A product of at least PRODUCT_SPLIT_MIN_FLOPS is cut into `ws.threads` shares of
    C, one per thread of fastfit's team, each one single-threaded BLAS call (BLAS
    runs at one thread while the core works) or one call of fastfit's own product
    with that thread's packing buffer (one_gemm). The cut runs along C's longer side:
    each share packs the whole of the operand it shares with the others, and
    that is then the smaller one; a weight-gradient product is cut by rows up to
    WEIGHT_GRAD_ROWS_RATIO times wider than tall, as measured faster. Every entry of
    C is still one BLAS dot product over all of K, so nothing is added afterwards,
    and no share reads what another writes (BLAS may block a narrower share's sums
    differently: another thread count can change results by rounding). A product of a
    one-row batch that is not cut and has no packing runs as C loops (one_row_product)
    where it can.
    """
    cdef GemmJob job
    cdef char *pack = ws.pack if own_product(ws.pack, M, N, K) else NULL  # the whole product decides
    cdef bint weight_gradient = trans_a and not trans_b  # dW = dF^T H (the forward from H^T is T, T)
    cdef bint by_rows = M > N or (weight_gradient and WEIGHT_GRAD_ROWS_RATIO * M >= N and M >= 2 * SPLIT_MIN_ROWS)
    cdef int shares = min(ws.threads, (M // SPLIT_MIN_ROWS) if by_rows else (N // SPLIT_MIN_COLUMNS))
    cdef bint split = shares > 1 and 2.0 * M * N * K >= SPLIT_MIN_FLOPS
    cdef ff_gemm_finish in_product
    cdef const ff_gemm_finish *product_finish = NULL  # what fastfit's own product applies
    cdef bint sums_after = False  # column sums of shares cut by rows: one pass afterwards, in order
    cdef Py_ssize_t j
    if finish != NULL and pack != NULL:
        in_product = finish[0]
        if in_product.column_sums != NULL:
            if split and by_rows:
                in_product.column_sums = NULL
                sums_after = True
            else:
                for j in range(N):
                    (<floating *>in_product.column_sums)[j] = 0
        product_finish = &in_product
    if split:
        job.f64 = floating is double
        job.trans_a, job.trans_b, job.by_rows, job.M, job.N, job.K = trans_a, trans_b, by_rows, M, N, K
        job.A, job.lda, job.B, job.ldb, job.C, job.ldc = A, lda, B, ldb, C, ldc
        job.pack, job.pack_stride, job.finish = pack, ws.pack_stride, product_finish
        ff_team_run(gemm_share, &job, shares)
    elif pack != NULL or not one_row_product(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc):
        one_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, pack, product_finish)
    if sums_after:
        colsum(<const floating *>finish.gated, M, N, <floating *>finish.column_sums)
    elif finish != NULL and pack == NULL and finish.gated != NULL:
        mask_colsum(C, <floating *>finish.gated, M, N, <floating *>finish.column_sums)
    elif finish != NULL and pack == NULL:
        bias_act(C, <const floating *>finish.bias, M, N, finish.relu)


cdef inline void bias_act(floating *f, const floating *b, Py_ssize_t rows, Py_ssize_t cols,
                          bint relu) noexcept nogil:
    if floating is float:
        ff_bias_act_f32(f, b, rows, cols, relu)
    else:
        ff_bias_act_f64(f, b, rows, cols, relu)


cdef inline void colsum(const floating *d, Py_ssize_t rows, Py_ssize_t cols, floating *db) noexcept nogil:
    if floating is float:
        ff_colsum_f32(d, rows, cols, db)
    else:
        ff_colsum_f64(d, rows, cols, db)


cdef inline void transpose(const floating *a, Py_ssize_t rows, Py_ssize_t cols, floating *at) noexcept nogil:
    if floating is float:
        ff_transpose_f32(a, rows, cols, at)
    else:
        ff_transpose_f64(a, rows, cols, at)


cdef inline void mask_colsum(const floating *dh, floating *h, Py_ssize_t rows, Py_ssize_t cols,
                             floating *db) noexcept nogil:
    if floating is float:
        ff_mask_colsum_f32(dh, h, rows, cols, db)
    else:
        ff_mask_colsum_f64(dh, h, rows, cols, db)


# ---------------------------------------------------------------- a layer's three products

cdef inline bint input_transposed(const WorkView *ws, Py_ssize_t B, int d_in, int d_out) noexcept nogil:
    """Whether the forward product reads H^T rather than H: when BLAS would take its general
    path for H W^T but has a small-matrix kernel for (H^T)^T W^T, 'T', 'T' in its terms
    (measured 1.4-1.7x faster at the tiny network's shapes, batches 16-64; the transpose
    costs B * d_in copies). Needs the scratch buffer, free during the forward pass."""
    return (ws.transpose_small_inputs and B * d_out > SMALL_KERNEL_TN_MAX_OUTPUTS
            and <double>B * d_in * d_out <= SMALL_KERNEL_MAX_MULADDS and B * d_in <= ws.scratch_len)


cdef inline bint output_transposed(const WorkView *ws, Py_ssize_t B, int d_in, int d_out) noexcept nogil:
    """Whether the float32 forward product is formed as F^T = W H^T (d_out, B) in the scratch
    buffer and transposed into F: for a batch of few rows against a wide output, past the
    small-matrix range, where BLAS has the kernels this was measured with. (float64 gained
    at some shapes and lost at others: it keeps H W^T. Where fastfit's own product takes H W^T,
    it runs it as fast, and this is not used.)"""
    return (ws.transpose_few_row_outputs and not own_product(ws.pack, <int>B, d_out, d_in)
            and B <= FEW_ROWS_MAX_ROWS and d_out >= FEW_ROWS_OUTPUT_RATIO * B
            and <double>B * d_in * d_out > SMALL_KERNEL_MAX_MULADDS and B * d_out <= ws.scratch_len)


cdef inline void forward_product(const floating *H, Py_ssize_t B, const floating *W, const floating *b,
                                 int d_in, int d_out, bint relu, floating *F, const WorkView *ws) noexcept nogil:
    """F (B, d_out) = H (B, d_in) W^T + b, then relu(F) in place when relu (a hidden layer);
    from H^T (written into the scratch buffer) where input_transposed says BLAS runs that
    layout faster, or as (W H^T)^T where output_transposed does (F^T in the scratch buffer).
    The bias and ReLU are the product's finish (see gemm)."""
    cdef floating *scratch = <floating *>ws.scratch
    cdef ff_gemm_finish bias_relu
    bias_relu.bias, bias_relu.relu, bias_relu.gated, bias_relu.ldg, bias_relu.column_sums = b, relu, NULL, 0, NULL
    if input_transposed(ws, B, d_in, d_out):
        transpose(H, B, d_in, scratch)
        gemm(True, True, <int>B, d_out, d_in, scratch, <int>B, W, d_in, F, d_out, ws, &bias_relu)
    elif floating is float and output_transposed(ws, B, d_in, d_out):
        gemm(False, True, d_out, <int>B, d_in, W, d_in, H, d_in, scratch, <int>B, ws)
        transpose(scratch, d_out, B, F)
        bias_act(F, b, B, d_out, relu)
    else:
        gemm(False, True, <int>B, d_out, d_in, H, d_in, W, d_in, F, d_out, ws, &bias_relu)


cdef inline void weight_grad_product(const floating *dF, const floating *H, Py_ssize_t B, int d_in,
                                     int d_out, floating *dW, const WorkView *ws) noexcept nogil:
    """dW (d_out, d_in) = dF^T H (zero for an empty batch, which BLAS would leave untouched)."""
    cdef Py_ssize_t i
    if B == 0:
        for i in range(<Py_ssize_t>d_in * d_out):
            dW[i] = 0
    else:
        gemm(True, False, d_out, d_in, <int>B, dF, d_out, H, d_in, dW, d_in, ws)


cdef inline void input_grad_product(const floating *dF, const floating *W, Py_ssize_t B, int d_in,
                                    int d_out, floating *dH, const WorkView *ws,
                                    const ff_gemm_finish *finish=NULL) noexcept nogil:
    """dH (B, d_in) = dF W, then `finish` (see gemm)."""
    gemm(False, False, <int>B, d_in, d_out, dF, d_out, W, d_in, dH, d_in, ws, finish)


# ---------------------------------------------------------------- forward and backward

cdef void forward_pass(const NetView *net, const floating *X, Py_ssize_t B, const WorkView *ws) noexcept nogil:
    """F_k = H_k W_k^T + b_k (B, d_{k+1}); H_{k+1} = relu(F_k); the last layer stays linear.

    H_0 = X; layer k's output is written at ws.acts + B * aoff[k]. Large products are
    split across the workspace's threads (see gemm)."""
    forward_rows(net, X, B, 0, B, ws)


cdef void forward_rows(const NetView *net, const floating *X, Py_ssize_t B, Py_ssize_t lo, Py_ssize_t hi,
                       const WorkView *ws) noexcept nogil:
    """The forward pass of rows [lo, hi) of a batch of B rows, in the whole batch's layout: row i
    of layer k's output at ws.acts + B * aoff[k] + i * d_{k+1}. X is the batch's first row."""
    cdef const floating *params = <const floating *>net.params
    cdef floating *acts = <floating *>ws.acts
    cdef const floating *H = X + lo * net.dims[0]
    cdef floating *F
    cdef Py_ssize_t rows = hi - lo
    cdef int k, d_in, d_out
    if rows == 0:
        return
    for k in range(net.L):
        d_in, d_out = net.dims[k], net.dims[k + 1]
        F = acts + B * net.aoff[k] + lo * d_out
        forward_product(H, rows, params + net.woff[k], params + net.boff[k], d_in, d_out, k < net.L - 1, F, ws)
        H = F


cdef bint update_layer(const NetView *net, const RuleView *rule, const ff_rule *c, int k,
                       double weight_penalty, bint dry=False) noexcept nogil:
    """The optimizer's rule over layer k's W_k and b_k; weight_penalty joins the
    gradient's decay on W_k only (the L2 penalty). dry: write nothing, and return whether
    every value the update would write is finite (else: True)."""
    cdef Py_ssize_t w0 = net.woff[k], b0 = net.boff[k]
    cdef Py_ssize_t n_w = b0 - w0, n_b = net.dims[k + 1]
    cdef ff_rule on_weights = c[0]
    if weight_penalty == 0:  # W_k and b_k are adjacent: one pass
        return update_stretch(net, rule, c, w0, n_w + n_b, dry)
    on_weights.grad_decay = c.grad_decay + weight_penalty
    return update_stretch(net, rule, &on_weights, w0, n_w, dry) & update_stretch(net, rule, c, b0, n_b, dry)


cdef inline bint update_stretch(const NetView *net, const RuleView *rule, const ff_rule *c,
                                Py_ssize_t start, Py_ssize_t n, bint dry) noexcept nogil:
    """The rule over parameters [start, start + n) (dry: see update_layer)."""
    if dry and net.f64:
        return ff_update_stays_finite_f64(c, <const double *>net.params + start, <const double *>net.grads + start,
                                          <const double *>rule.m + start if rule.m != NULL else NULL,
                                          <const double *>rule.v + start if rule.v != NULL else NULL, n,
                                          rule.n_threads)
    if dry:
        return ff_update_stays_finite_f32(c, <const float *>net.params + start, <const float *>net.grads + start,
                                          <const float *>rule.m + start if rule.m != NULL else NULL,
                                          <const float *>rule.v + start if rule.v != NULL else NULL, n,
                                          rule.n_threads)
    if net.f64:
        ff_update_f64(c, <double *>net.params + start, <const double *>net.grads + start,
                      <double *>rule.m + start if rule.m != NULL else NULL,
                      <double *>rule.v + start if rule.v != NULL else NULL, n, rule.n_threads)
    else:
        ff_update_f32(c, <float *>net.params + start, <const float *>net.grads + start,
                      <float *>rule.m + start if rule.m != NULL else NULL,
                      <float *>rule.v + start if rule.v != NULL else NULL, n, rule.n_threads)
    return True


cdef void output_bias_grad(const NetView *net, Py_ssize_t B, floating *acts) noexcept nogil:
    """db_{L-1} = column sums of dL/dF_L (in the output slot of acts): where backward starts."""
    colsum(acts + B * net.aoff[net.L - 1], B, net.dims[net.L],
           <floating *>net.grads + net.boff[net.L - 1])


cdef void backward_layer(const NetView *net, const floating *X, Py_ssize_t B, floating *acts,
                         floating *scratch, int k, const WorkView *ws) noexcept nogil:
    """Layer k of the backward pass, given dF_k in acts (dL/dF_k, written over layer k's output):

    dW_k = dF_k^T H_k;  dH_k = dF_k W_k;  dF_{k-1} = 1[H_k > 0] * dH_k, written over H_k
    (spent by then), with db_{k-1} its column sums. After it, W_k and b_k's gradients are
    final. The first layer's input gradient is never needed, so k = 0 stops at dW_0."""
    cdef const floating *params = <const floating *>net.params
    cdef floating *grads = <floating *>net.grads
    cdef int d_in = net.dims[k], d_out = net.dims[k + 1]
    cdef floating *dF = acts + B * net.aoff[k]
    cdef floating *H = <floating *>X if k == 0 else acts + B * net.aoff[k - 1]
    cdef ff_gemm_finish gate_sums  # dF_{k-1} over H_k and db_{k-1}, from dH_k (see gemm)
    weight_grad_product(dF, H, B, d_in, d_out, grads + net.woff[k], ws)
    if k > 0:
        gate_sums.bias, gate_sums.relu, gate_sums.gated, gate_sums.ldg = NULL, False, H, d_in
        gate_sums.column_sums = grads + net.boff[k - 1]
        input_grad_product(dF, params + net.woff[k], B, d_in, d_out, scratch, ws, &gate_sums)


cdef void backward_pass(const NetView *net, const floating *X, Py_ssize_t B, floating *acts,
                        floating *scratch, const RuleView *rule, const ff_rule *c,
                        double weight_penalty, const WorkView *ws) noexcept nogil:
    """Gradients of every W_k, b_k from dL/dF_L (already in the output slot of acts), layer by
    layer from the last. With a rule (rule != NULL), layer k is updated as soon as its
    gradient is final and W_k has served dH_k."""
    cdef int k
    output_bias_grad(net, B, acts)
    for k in range(net.L - 1, -1, -1):
        backward_layer(net, X, B, acts, scratch, k, ws)
        if rule != NULL:
            update_layer(net, rule, c, k, weight_penalty)


# ---------------------------------------------------------------- losses

cdef inline floating fexp(floating x) noexcept nogil:
    return expf(x) if floating is float else exp(x)


cdef inline floating flog1p(floating x) noexcept nogil:
    return log1pf(x) if floating is float else log1p(x)


cdef inline floating fabs_(floating x) noexcept nogil:
    return fabsf(x) if floating is float else fabs(x)


cdef double loss_and_grad(int kind, double scale, const floating *out, Py_ssize_t B,
                          Py_ssize_t C, const floating *Y, const Py_ssize_t *labels,
                          floating *grad, Py_ssize_t *hits) noexcept nogil:
    """Return sum_i l_i and write scale * dl_i/df into grad (which may be out itself).

    scale is the reduction's: 1 for "sum", 1/B or 1/(B*C) for "mean"
    (docs/math.md, "Losses"). Adds to hits[0] the outputs the prediction gets
    right (classification losses: rows whose largest logit is the label's;
    outputs whose logit's sign matches the 0/1 target), read before grad
    overwrites them."""
    cdef double total = 0.0
    cdef Py_ssize_t i
    cdef floating f, y, d, e, sig
    cdef floating sc = <floating>scale
    if kind == FF_LOSS_SOFTMAX_CROSS_ENTROPY:
        # l_i = logsumexp(f_i) - f_i[y_i]; dl_i/df_i = softmax(f_i) - onehot(y_i)
        # (csrc/softmax_impl.h: a block of rows' exponentials at a time, in vector code)
        if floating is float:
            return ff_softmax_xent_f32(out, B, C, labels, sc, grad, hits)
        else:
            return ff_softmax_xent_f64(out, B, C, labels, sc, grad, hits)
    elif kind == FF_LOSS_SQUARED_ERROR:
        # l_i = sum_j (f_ij - y_ij)^2; dl_i/df_ij = 2 (f_ij - y_ij)
        sc = <floating>(2.0 * scale)
        for i in range(B * C):
            d = out[i] - Y[i]
            total += <double>(d * d)
            grad[i] = d * sc
    else:
        # binary cross-entropy on logits: l = max(f, 0) - f y + log(1 + exp(-|f|)),
        # stable for any finite f; dl/df = sigmoid(f) - y
        for i in range(B * C):
            f = out[i]
            y = Y[i]
            hits[0] += (f > 0) == (y > 0.5)
            total += <double>((f if f > 0 else 0) - f * y + flog1p(fexp(-fabs_(f))))
            if f >= 0:
                sig = 1 / (1 + fexp(-f))
            else:
                e = fexp(f)
                sig = e / (1 + e)
            grad[i] = (sig - y) * sc
    return total


# ---------------------------------------------------------------- the training step

cdef void gather(const DataView *data, const Py_ssize_t *rows, Py_ssize_t B,
                 const WorkView *ws, Py_ssize_t itemsize) noexcept nogil:
    """Copy the batch's rows of X and of the targets into the workspace."""
    cdef Py_ssize_t r, row
    cdef Py_ssize_t xrow = data.d0 * itemsize, yrow = data.ycols * itemsize
    for r in range(B):
        row = rows[r]
        memcpy(<char *>ws.xbuf + r * xrow, <const char *>data.X + row * xrow, xrow)
        if data.labels != NULL:
            ws.lbuf[r] = data.labels[row]
        elif data.Y != NULL:
            memcpy(<char *>ws.ybuf + r * yrow, <const char *>data.Y + row * yrow, yrow)


cdef void prefetch_batch(const DataView *data, const Py_ssize_t *rows, Py_ssize_t B,
                         Py_ssize_t itemsize) noexcept nogil:
    """Start fetching the rows of X and of the targets a later gather will copy."""
    ff_prefetch_rows(data.X, rows, B, data.d0 * itemsize)
    if data.labels != NULL:
        ff_prefetch_rows(data.labels, rows, B, sizeof(Py_ssize_t))
    elif data.Y != NULL:
        ff_prefetch_rows(data.Y, rows, B, data.ycols * itemsize)


cdef double batch_gradient_typed(const NetView *net, const WorkView *ws, const DataView *data,
                                 const LossView *loss, const Py_ssize_t *rows, Py_ssize_t B,
                                 double scale, const RuleView *rule, const ff_rule *c,
                                 Py_ssize_t *hits, const Py_ssize_t *next_rows, Py_ssize_t next_B,
                                 floating *typed) noexcept nogil:
    """The batch gradient (and, with a rule, the update) for one floating type.

    next_rows, next_B: the batch after this one, whose rows are prefetched once this
    one's are gathered (next_B = 0: none). ``typed`` only selects the type. Returns
    sum_i l_i; a non-finite value means the gradient was not computed and nothing
    was updated."""
    cdef floating *acts = <floating *>ws.acts
    cdef floating *out
    cdef double total, penalty = 0.0
    gather(data, rows, B, ws, sizeof(floating))
    prefetch_batch(data, next_rows, next_B, sizeof(floating))
    forward_pass(net, <floating *>ws.xbuf, B, ws)
    out = acts + B * net.aoff[net.L - 1]
    total = loss_and_grad(loss.kind, scale, out, B, net.dims[net.L], <floating *>ws.ybuf,
                          ws.lbuf, out, hits)
    if not isfinite(total):
        return total
    if loss.l2 != 0:  # d/dW of (l2/2) ||W||^2, scaled as the loss is
        penalty = loss.l2 * scale
    backward_pass(net, <floating *>ws.xbuf, B, acts, <floating *>ws.scratch, rule, c, penalty, ws)
    return total


cdef inline double batch_gradient_any(const NetView *net, const WorkView *ws, const DataView *data,
                                      const LossView *loss, const Py_ssize_t *rows, Py_ssize_t B,
                                      double scale, const RuleView *rule, const ff_rule *c,
                                      Py_ssize_t *hits, const Py_ssize_t *next_rows=NULL,
                                      Py_ssize_t next_B=0) noexcept nogil:
    if net.f64:
        return batch_gradient_typed(net, ws, data, loss, rows, B, scale, rule, c, hits, next_rows, next_B,
                                    <double *>NULL)
    return batch_gradient_typed(net, ws, data, loss, rows, B, scale, rule, c, hits, next_rows, next_B,
                                <float *>NULL)



def batch_gradient(Network net, Workspace ws, Dataset data, Objective objective,
                   const Py_ssize_t[::1] rows, Py_ssize_t scale_rows):
    """The first part of a step: gather ``rows`` of the data, forward, loss, backward.

    Fills net.grads with the gradient of the loss over these rows, scaled as a
    batch of ``scale_rows`` rows would be (the global batch, in a distributed
    fit: every rank's share then sums to the global batch's gradient). The L2
    penalty is not added here: ``update`` adds it. Returns (sum_i l_i, the
    outputs predicted right); when the sum is not finite, the gradient buffer
    holds nothing useful."""
    cdef Py_ssize_t B = rows.shape[0], hits = 0
    cdef double total
    cdef double scale = loss_scale(&objective.v, scale_rows)
    cdef LossView without_penalty = objective.v
    without_penalty.l2 = 0.0
    cdef const Py_ssize_t *first = &rows[0] if B > 0 else NULL
    check_batch_inputs(net, ws, data, objective, rows, B)
    with nogil:
        total = batch_gradient_any(&net.v, &ws.v, &data.v, &without_penalty, first, B, scale,
                                   NULL, NULL, &hits)
    return total, hits


def gradient_head(Network net, Workspace ws, Dataset data, Objective objective,
                  const Py_ssize_t[::1] rows, Py_ssize_t scale_rows):
    """``batch_gradient`` up to the backward pass: gather, forward, the loss and dL/dF_L, and
    the last layer's bias gradient. ``gradient_layer`` then takes the layers one at a time,
    from the last, so that a layer's gradient can be sent while the next is computed.
    Returns (sum_i l_i, the outputs predicted right)."""
    cdef Py_ssize_t B = rows.shape[0], hits = 0
    cdef double total
    cdef double scale = loss_scale(&objective.v, scale_rows)
    cdef const Py_ssize_t *first = &rows[0] if B > 0 else NULL
    check_batch_inputs(net, ws, data, objective, rows, B)
    with nogil:
        if net.v.f64:
            total = head_typed(&net.v, &ws.v, &data.v, &objective.v, first, B, scale, &hits, <double *>NULL)
        else:
            total = head_typed(&net.v, &ws.v, &data.v, &objective.v, first, B, scale, &hits, <float *>NULL)
    ws.rows_in_use = B
    return total, hits


cdef double head_typed(const NetView *net, const WorkView *ws, const DataView *data, const LossView *loss,
                       const Py_ssize_t *rows, Py_ssize_t B, double scale, Py_ssize_t *hits,
                       floating *typed) noexcept nogil:
    cdef floating *acts = <floating *>ws.acts
    cdef floating *out
    cdef double total
    gather(data, rows, B, ws, sizeof(floating))
    forward_pass(net, <floating *>ws.xbuf, B, ws)
    out = acts + B * net.aoff[net.L - 1]
    total = loss_and_grad(loss.kind, scale, out, B, net.dims[net.L], <floating *>ws.ybuf, ws.lbuf, out, hits)
    output_bias_grad(net, B, acts)
    return total


def gradient_layer(Network net, Workspace ws, int k):
    """Layer k of the backward pass of the batch ``gradient_head`` began (layers in order
    L-1, ..., 0): afterwards W_k's and b_k's gradients are final."""
    cdef Py_ssize_t B = ws.rows_in_use
    check_workspace(net, ws)
    if not 0 <= k < net.v.L:
        raise ValueError(f"k must be a layer index in [0, {net.v.L}), got {k}")
    with nogil:
        if net.v.f64:
            backward_layer(&net.v, <double *>ws.v.xbuf, B, <double *>ws.v.acts, <double *>ws.v.scratch, k,
                           &ws.v)
        else:
            backward_layer(&net.v, <float *>ws.v.xbuf, B, <float *>ws.v.acts, <float *>ws.v.scratch, k,
                           &ws.v)


def update(Network net, UpdateRule rule, double lr, double lr_next, long long t, double weight_penalty,
           int first_layer=0, int end_layer=-1):
    """The second part of a step: the optimizer's rule over layers first_layer .. end_layer-1
    (all by default), from net.grads.

    t: steps taken before this one; lr, lr_next: the learning rates of steps t
    and t+1 (the second only for Nesterov's look-ahead); weight_penalty: the
    L2 penalty's coefficient on the weights' gradient (l2 times the loss's
    scale), 0 for none. Nothing here looks for overflow: the caller checks."""
    cdef ff_rule c
    cdef int k
    if end_layer < 0:
        end_layer = net.v.L
    if not 0 <= first_layer <= end_layer <= net.v.L:
        raise ValueError(f"layers [{first_layer}, {end_layer}) are not within [0, {net.v.L}]")
    check_rule(net, rule)
    with nogil:
        c = step_coefficients(&rule.v, lr, lr_next, t)
        for k in range(end_layer - 1, first_layer - 1, -1):
            update_layer(&net.v, &rule.v, &c, k, weight_penalty)


def update_stays_finite(Network net, UpdateRule rule, double lr, double lr_next, long long t,
                        double weight_penalty):
    """Whether ``update`` with these arguments (all layers) would leave every parameter and state
    value it writes finite: the same arithmetic, nothing written (the step API asks first, so a
    step that would overflow changes nothing)."""
    cdef ff_rule c
    cdef int k
    cdef bint finite = True
    check_rule(net, rule)
    with nogil:
        c = step_coefficients(&rule.v, lr, lr_next, t)
        for k in range(net.v.L):
            finite = update_layer(&net.v, &rule.v, &c, k, weight_penalty, True) and finite
    return finite


def train_steps(Network net, Workspace ws, Dataset data, Objective objective, UpdateRule rule,
                const Py_ssize_t[::1] order, Py_ssize_t batch_size, Py_ssize_t first_batch,
                Py_ssize_t n_batches, const double[::1] lrs, long long t0):
    """Run steps first_batch .. first_batch + n_batches - 1 of an epoch, GIL released.

    Batch j is rows order[j*batch_size : (j+1)*batch_size] (the last may be
    short); lrs[s] is the learning rate of step t0 + s (n_batches + 1 entries:
    the last is Nesterov's look-ahead rate). Each step gathers, forwards, takes
    the loss and its gradient in place over the output, and backpropagates,
    updating each layer as soon as its gradient is final; once a batch is gathered,
    the next batch's rows are prefetched (ff_prefetch_rows).

    Returns (sum of l_i over the completed steps, outputs predicted right in
    them, completed steps, stopped): stopped is True when a batch's loss was not
    finite (that step changed nothing). An update that overflows is not looked
    for here: the caller checks the parameters and state after the run.
    """
    cdef Py_ssize_t N = order.shape[0]
    cdef Py_ssize_t s, start, B, next_B
    cdef double total = 0.0, batch_total, scale
    cdef bint stop = False
    cdef Py_ssize_t done = 0, hits = 0, batch_hits
    cdef ff_rule c
    if batch_size < 1 or first_batch < 0 or n_batches < 0 or lrs.shape[0] < n_batches + 1 \
            or (n_batches > 0 and (first_batch + n_batches - 1) * batch_size >= N):
        raise ValueError(f"steps {first_batch}..{first_batch + n_batches - 1} of batches of {batch_size} do not "
                         f"fit an order of {N} rows with {lrs.shape[0]} learning rates")
    check_rule(net, rule)
    check_batch_inputs(net, ws, data, objective, order[first_batch * batch_size:
                                                        min(N, (first_batch + n_batches) * batch_size)],
                       min(batch_size, N))
    with nogil:
        for s in range(n_batches):
            start = (first_batch + s) * batch_size
            B = min(batch_size, N - start)
            scale = loss_scale(&objective.v, B)
            c = step_coefficients(&rule.v, lrs[s], lrs[s + 1], t0 + s)
            batch_hits = 0  # each layer is updated as soon as its gradient is final
            next_B = min(batch_size, N - start - B) if s + 1 < n_batches else 0
            batch_total = batch_gradient_any(&net.v, &ws.v, &data.v, &objective.v, &order[start], B,
                                             scale, &rule.v, &c, &batch_hits, &order[start + B] if next_B > 0
                                             else NULL, next_B)
            if not isfinite(batch_total):
                stop = True
                break
            total += batch_total
            hits += batch_hits
            done += 1
    return total, hits, done, stop


# ---------------------------------------------------------------- one batch shared by several processes
#
# The distributed fit's factor exchange (docs/distributed.md): each rank runs the forward pass
# and the input-gradient products on its own rows [lo, hi) of a batch of B rows, in the whole
# batch's layout (layer k's block at B * aoff[k] in ws.acts, dL/dF_k's at B * aoff[k] in
# ws.deltas, this rank's rows from row lo). The ranks then exchange their rows of every H_k and
# dL/dF_k, and every rank forms dW_k = dF_k^T H_k and db_k over all B rows: the very products
# one process runs for the batch, with no gradient sent at all.

cdef bint check_slice(Network net, Workspace ws, Py_ssize_t B, Py_ssize_t lo, Py_ssize_t hi,
                      int k=0, int first_k=0) except -1:
    """ValueError unless rows [lo, hi) of a batch of B fit ws, which has a deltas buffer, and
    first_k <= k < L."""
    check_workspace(net, ws)
    if ws.v.deltas == NULL:
        raise ValueError("this workspace has no deltas buffer (Workspace(..., deltas=True))")
    if not 0 <= lo <= hi <= B <= ws.capacity:
        raise ValueError(f"rows [{lo}, {hi}) of a batch of {B} do not fit a workspace of {ws.capacity}")
    if not first_k <= k < net.v.L:
        raise ValueError(f"k must be a layer index in [{first_k}, {net.v.L}), got {k}")
    return 0


def slice_head(Network net, Workspace ws, Dataset data, Objective objective, const Py_ssize_t[::1] rows,
               Py_ssize_t lo, Py_ssize_t hi):
    """Gather all B = len(rows) rows of the batch (every rank needs all of X's for dW_0), run
    the forward pass of rows [lo, hi) and their loss, scaled as for B rows, with dL/dF_L written
    into ws.deltas. Returns (sum of l_i over [lo, hi), the outputs there predicted right)."""
    cdef Py_ssize_t B = rows.shape[0], hits = 0
    cdef double total
    cdef double scale = loss_scale(&objective.v, B)
    cdef const Py_ssize_t *first = &rows[0] if B > 0 else NULL
    check_slice(net, ws, B, lo, hi)
    check_batch_inputs(net, ws, data, objective, rows, B)
    with nogil:
        if net.v.f64:
            total = slice_head_typed(&net.v, &ws.v, &data.v, &objective.v, first, B, lo, hi, scale, &hits,
                                     <double *>NULL)
        else:
            total = slice_head_typed(&net.v, &ws.v, &data.v, &objective.v, first, B, lo, hi, scale, &hits,
                                     <float *>NULL)
    return total, hits


cdef double slice_head_typed(const NetView *net, const WorkView *ws, const DataView *data,
                             const LossView *loss, const Py_ssize_t *rows, Py_ssize_t B, Py_ssize_t lo,
                             Py_ssize_t hi, double scale, Py_ssize_t *hits, floating *typed) noexcept nogil:
    cdef int C = net.dims[net.L]
    cdef Py_ssize_t out = B * net.aoff[net.L - 1] + lo * C
    gather(data, rows, B, ws, sizeof(floating))
    if hi == lo:
        return 0.0
    forward_rows(net, <floating *>ws.xbuf, B, lo, hi, ws)
    return loss_and_grad(loss.kind, scale, <floating *>ws.acts + out, hi - lo, C,
                         <floating *>ws.ybuf + lo * data.ycols if data.Y != NULL else NULL,
                         ws.lbuf + lo if data.labels != NULL else NULL,
                         <floating *>ws.deltas + out, hits)


def slice_input_gradient(Network net, Workspace ws, Py_ssize_t B, Py_ssize_t lo, Py_ssize_t hi, int k):
    """dL/dF_{k-1} of rows [lo, hi) = 1[H_k > 0] * (dF_k W_k), into ws.deltas, H_k left as it is
    (k >= 1; layers in order L-1, ..., 1, after slice_head)."""
    check_slice(net, ws, B, lo, hi, k, 1)
    with nogil:
        if net.v.f64:
            slice_input_gradient_typed(&net.v, &ws.v, B, lo, hi, k, <double *>NULL)
        else:
            slice_input_gradient_typed(&net.v, &ws.v, B, lo, hi, k, <float *>NULL)


cdef void slice_input_gradient_typed(const NetView *net, const WorkView *ws, Py_ssize_t B, Py_ssize_t lo,
                                     Py_ssize_t hi, int k, floating *typed) noexcept nogil:
    cdef int d_in = net.dims[k], d_out = net.dims[k + 1]
    cdef floating *dF = <floating *>ws.deltas + B * net.aoff[k] + lo * d_out
    cdef floating *dF_below = <floating *>ws.deltas + B * net.aoff[k - 1] + lo * d_in
    cdef const floating *H = <floating *>ws.acts + B * net.aoff[k - 1] + lo * d_in
    if hi == lo:
        return
    input_grad_product(dF, <const floating *>net.params + net.woff[k], hi - lo, d_in, d_out, dF_below,
                       ws)
    if floating is float:
        ff_relu_mask_f32(H, dF_below, (hi - lo) * d_in)
    else:
        ff_relu_mask_f64(H, dF_below, (hi - lo) * d_in)


def rows_weight_gradient(Network net, Workspace ws, Py_ssize_t B, Py_ssize_t lo, Py_ssize_t hi, int k):
    """dW_k = dF_k^T H_k and db_k = the column sums of dF_k over rows [lo, hi) of the batch, into
    net.grads (zeros for no rows): over all B rows once every rank's rows of H_k and dF_k are in
    ws.acts and ws.deltas, or over this rank's own rows for a layer whose gradient is summed."""
    check_slice(net, ws, B, lo, hi, k)
    with nogil:
        if net.v.f64:
            rows_weight_gradient_typed(&net.v, &ws.v, B, lo, hi, k, <double *>NULL)
        else:
            rows_weight_gradient_typed(&net.v, &ws.v, B, lo, hi, k, <float *>NULL)


cdef void rows_weight_gradient_typed(const NetView *net, const WorkView *ws, Py_ssize_t B, Py_ssize_t lo,
                                     Py_ssize_t hi, int k, floating *typed) noexcept nogil:
    cdef int d_in = net.dims[k], d_out = net.dims[k + 1]
    cdef const floating *dF = <floating *>ws.deltas + B * net.aoff[k] + lo * d_out
    cdef const floating *H = ((<floating *>ws.xbuf if k == 0 else <floating *>ws.acts + B * net.aoff[k - 1])
                              + lo * d_in)
    cdef floating *grads = <floating *>net.grads
    weight_grad_product(dF, H, hi - lo, d_in, d_out, grads + net.woff[k], ws)
    colsum(dF, hi - lo, d_out, grads + net.boff[k])  # zeros for no rows


# ---------------------------------------------------------------- what the entry points check
#
# The loops below trust their arguments: every size and pointer must agree. The Python layer
# builds them so; these checks (a few comparisons a call, one pass over a run's batch order)
# keep a caller that did not from reading or writing past a buffer.

cdef int check_workspace(Network net, Workspace ws) except -1:
    """ValueError unless ws was made for a network of net's sizes and dtype."""
    if ws.sizes != net.sizes or ws.dtype != net.params.dtype:
        raise ValueError(f"this workspace was made for a {ws.dtype} network of sizes {list(ws.sizes)}, "
                         f"not this {net.params.dtype} one of sizes {list(net.sizes)}")
    return 0


cdef int check_rows(Network net, Workspace ws, Py_ssize_t rows, Py_ssize_t cols, bint f64) except -1:
    """TypeError or ValueError unless `rows` rows of `cols` inputs (double when f64) fit net and ws."""
    check_workspace(net, ws)
    if f64 != net.v.f64:
        raise TypeError(f"the rows are {'float64' if f64 else 'float32'}; this network is {net.params.dtype}")
    if cols != net.v.dims[0]:
        raise ValueError(f"the rows have {cols} columns; this network takes {net.v.dims[0]} inputs")
    if not 0 <= rows <= ws.capacity:
        raise ValueError(f"{rows} rows do not fit a workspace of {ws.capacity}")
    return 0


cdef int check_batch_inputs(Network net, Workspace ws, Dataset data, Objective objective,
                            const Py_ssize_t[::1] rows, Py_ssize_t batch) except -1:
    """check_rows for batches of up to `batch` rows of data, and: the targets are the loss's
    kind and fit the network's outputs and the workspace, and every row index is in the data."""
    cdef Py_ssize_t i, n = data.v.n_rows, C = net.v.dims[net.v.L]
    check_rows(net, ws, batch, data.v.d0, data.X.dtype == np.float64)
    if objective.v.kind == FF_LOSS_SOFTMAX_CROSS_ENTROPY:
        if data.v.labels == NULL and n > 0:
            raise ValueError("cross-entropy needs integer labels, and the data holds none")
        if not (0 <= data.label_min and data.label_max < C):
            raise ValueError(f"the labels run from {data.label_min} to {data.label_max}; they must lie in [0, {C})")
        if ws.lbuf.shape[0] < ws.capacity:
            raise ValueError("this workspace holds no labels (Workspace(..., labels=True))")
    elif objective.v.kind in (FF_LOSS_SQUARED_ERROR, FF_LOSS_BINARY_CROSS_ENTROPY):
        if n > 0 and (data.v.Y == NULL or data.v.ycols != C):
            raise ValueError(f"this loss needs float targets of {C} columns, and the data holds "
                             f"{data.v.ycols if data.v.Y != NULL else 'none'}")
        if ws.target_cols != C:
            raise ValueError(f"this workspace holds {ws.target_cols} target columns; the network has {C} outputs")
    else:
        raise ValueError(f"unknown loss kind {objective.v.kind}")
    for i in range(rows.shape[0]):
        if not 0 <= rows[i] < n:
            raise ValueError(f"row index {rows[i]} is not in the data's {n} rows")
    return 0


cdef int check_rule(Network net, UpdateRule rule) except -1:
    """ValueError unless the rule holds the state buffers its kind needs, sized for net."""
    cdef bint needs_m = rule.v.kind in (FF_MOMENTUM, FF_NESTEROV, FF_ADAM)
    cdef bint needs_v = rule.v.kind == FF_ADAM
    if rule.v.kind not in (FF_SGD, FF_MOMENTUM, FF_NESTEROV, FF_ADAM, FF_NORMALIZED):
        raise ValueError(f"unknown update kind {rule.v.kind}")
    for needed, buffer, name in ((needs_m, rule.m, "m"), (needs_v, rule.vbuf, "v")):
        if needed and (buffer.shape[0] != net.v.n_params or buffer.dtype != net.params.dtype
                       or not buffer.flags.c_contiguous or not buffer.flags.writeable):
            raise ValueError(f"this update needs a writeable contiguous {net.params.dtype} state buffer {name} "
                             f"of {net.v.n_params} entries, got {buffer.shape[0]} of {buffer.dtype}")
    return 0


# ---------------------------------------------------------------- the step API's entry points

def forward(Network net, const floating[:, ::1] X, Workspace ws):
    """Forward pass of X (B <= ws.capacity rows) into ws.acts."""
    check_rows(net, ws, X.shape[0], X.shape[1], floating is double)
    with nogil:
        forward_pass(&net.v, &X[0, 0] if X.shape[0] > 0 else NULL, X.shape[0], &ws.v)


def backward(Network net, const floating[:, ::1] X, Workspace ws):
    """Backward pass for the batch X whose forward pass filled ws.acts, into net.grads.

    dL/dF_L must already be in the output slot of ws.acts. Spends the activations."""
    check_rows(net, ws, X.shape[0], X.shape[1], floating is double)
    with nogil:
        backward_pass(&net.v, &X[0, 0] if X.shape[0] > 0 else NULL, X.shape[0],
                      <floating *>ws.v.acts, <floating *>ws.v.scratch, NULL, NULL, 0.0, &ws.v)


def loss_value_and_grad(int kind, double scale, const floating[:, ::1] out,
                        const floating[:, ::1] Y, const Py_ssize_t[::1] labels,
                        floating[:, ::1] grad):
    """Return sum_i l_i over the batch and write scale * dl/dout into grad."""
    cdef double total
    cdef Py_ssize_t B = out.shape[0], C = out.shape[1], hits = 0, i
    if B == 0:
        return 0.0
    if grad.shape[0] != B or grad.shape[1] != C:
        raise ValueError(f"grad has shape ({grad.shape[0]}, {grad.shape[1]}); out's is ({B}, {C})")
    if kind == FF_LOSS_SOFTMAX_CROSS_ENTROPY:
        if labels.shape[0] != B:
            raise ValueError(f"cross-entropy needs {B} labels, got {labels.shape[0]}")
        for i in range(B):
            if not 0 <= labels[i] < C:
                raise ValueError(f"label {labels[i]} is not in [0, {C})")
    elif kind in (FF_LOSS_SQUARED_ERROR, FF_LOSS_BINARY_CROSS_ENTROPY):
        if Y.shape[0] != B or Y.shape[1] != C:
            raise ValueError(f"targets of shape ({Y.shape[0]}, {Y.shape[1]}) for outputs of ({B}, {C})")
    else:
        raise ValueError(f"unknown loss kind {kind}")
    with nogil:
        total = loss_and_grad(kind, scale, &out[0, 0], B, C,
                              &Y[0, 0] if Y.shape[0] > 0 else NULL,
                              &labels[0] if labels.shape[0] > 0 else NULL, &grad[0, 0], &hits)
    return total


def product(const floating[:, ::1] A, const floating[:, ::1] B, bint trans_a, bint trans_b, int threads=1,
            bint own=False, out=None, packing=None):
    """op(A) @ op(B) through the core's own product path (gemm): split across ``threads``
    shares where it is large enough, and on fastfit's own product where ``own`` and own_product
    say so. Into ``out`` (C-contiguous, (M, N), A's dtype) when given, else a new array, which
    is returned; ``packing``: a byte array of packing buffers to reuse (threads times
    own_product_packing_bytes([N, K], 0), and 64 bytes more), else new ones. For tests, which
    hold each path against NumPy, and for the benchmarks' product timings."""
    cdef int M = A.shape[1] if trans_a else A.shape[0]
    cdef int K = A.shape[0] if trans_a else A.shape[1]
    cdef int N = B.shape[0] if trans_b else B.shape[1]
    cdef WorkView ws
    cdef floating[:, ::1] c
    if (B.shape[1] if trans_b else B.shape[0]) != K:
        raise ValueError(f"op(A) has {K} columns but op(B) has {B.shape[1] if trans_b else B.shape[0]} rows")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if own and not ff_gemm_usable():
        raise ValueError("own=True needs fastfit's AVX-512 product, which cannot run here")
    dtype = np.float32 if floating is float else np.float64
    C = np.empty((M, N), dtype=dtype) if out is None else out
    if not (isinstance(C, np.ndarray) and C.shape == (M, N) and C.dtype == dtype and C.flags.c_contiguous
            and C.flags.writeable):
        raise ValueError(f"out must be a writable C-contiguous {np.dtype(dtype).name} array of shape {(M, N)}")
    c = C
    ws.pack_stride = own_product_packing_bytes([N, K], 0)
    need = threads * ws.pack_stride + LINE if own else 0
    if packing is None:
        packing = np.empty(need, dtype=np.uint8)
    if not (isinstance(packing, np.ndarray) and packing.dtype == np.uint8 and packing.ndim == 1
            and packing.flags.c_contiguous and packing.flags.writeable and packing.shape[0] >= need):
        raise ValueError(f"packing must be a writable contiguous uint8 array of at least {need} bytes")
    ws.threads = threads
    ws.pack = NULL
    if own:
        ws.pack = line_aligned(packing)
    if K == 0:
        C[...] = 0
        return C
    if M == 0 or N == 0:
        return C
    with nogil:
        gemm(trans_a, trans_b, M, N, K, &A[0, 0] if A.shape[0] * A.shape[1] > 0 else NULL, <int>A.shape[1],
             &B[0, 0] if B.shape[0] * B.shape[1] > 0 else NULL, <int>B.shape[1], &c[0, 0], N, &ws)
    return C
