/* Element-wise kernels of fastfit's compiled core (called from fastfit/_core.pyx).
 *
 * Each exists for float (_f32) and double (_f64): update_impl.h and
 * passes_impl.h are written once and included twice by kernels.c. On x86-64
 * with GCC or Clang each loop is compiled for AVX-512, AVX2 and baseline, and
 * the loader picks the best the CPU runs (target_clones), so one portable
 * build gets wide vectors. Contraction into FMA is off (-ffp-contract=off in
 * setup.py), so the arithmetic is the NumPy reference's operation sequence.
 */
#ifndef FASTFIT_KERNELS_H
#define FASTFIT_KERNELS_H

#include <stddef.h>
#include "codes.h"

/* The coefficients of one optimizer step over one stretch of parameters
 * (docs/math.md, "Optimizers"). The core fills it once per step (per layer
 * for the decay, which differs between weights and biases). */
typedef struct {
    int kind;              /* enum ff_rule_kind */
    double lr;             /* alpha_t */
    double beta1, beta2;   /* momentum / Adam's betas */
    double eps;
    double m_hat_scale;    /* Adam: 1 / (1 - beta1^(t+1)) */
    double v_hat_scale;    /* Adam: 1 / (1 - beta2^(t+1)) */
    double keep, move;     /* Nesterov: psi += keep * m_old - move * m_new */
    double grad_decay;     /* g <- g + grad_decay * p before the rule (weight decay, L2) */
    double shrink;         /* AdamW: p <- p * shrink before the rule (1 - lr * wd), else 1 */
} ff_rule;

/* One in-place step over n parameters: p, g, m, v are the stretch's parameters,
 * gradient and state (m, v may be NULL when the rule keeps none). Runs on
 * n_threads of fastfit's own threads when n is large, in contiguous parts that
 * start on 64-byte lines of p (the core's buffers all start on lines). */
void ff_update_f32(const ff_rule *rule, float *p, const float *g, float *m, float *v,
                  size_t n, int n_threads);
void ff_update_f64(const ff_rule *rule, double *p, const double *g, double *m, double *v,
                  size_t n, int n_threads);

/* 1 when that step would leave every parameter and state value it writes finite, else 0:
 * the same arithmetic, run dry (nothing written), in the same parts. */
int ff_update_stays_finite_f32(const ff_rule *rule, const float *p, const float *g, const float *m,
                               const float *v, size_t n, int n_threads);
int ff_update_stays_finite_f64(const ff_rule *rule, const double *p, const double *g, const double *m,
                               const double *v, size_t n, int n_threads);

/* c (m, n, row length ldc) = a b^T: column a (m values, a_stride apart) times row b (n
 * values), each entry one product; the weight gradient of a one-row batch (K = 1). */
void ff_outer_f32(const float *a, size_t a_stride, const float *b, size_t m, size_t n, float *c, size_t ldc);
void ff_outer_f64(const double *a, size_t a_stride, const double *b, size_t m, size_t n, double *c, size_t ldc);

/* Row c (n values) = a B, for row a (k >= 1 values) and row-major B (k, n, row length ldb):
 * B's rows, each times its value of a, summed in order; the input gradient of a one-row batch. */
void ff_row_times_f32(const float *a, const float *b, size_t ldb, size_t k, size_t n, float *c);
void ff_row_times_f64(const double *a, const double *b, size_t ldb, size_t k, size_t n, double *c);

/* f[i, j] += bias[j], then ReLU when relu != 0; f is (rows, cols) row-major. */
void ff_bias_act_f32(float *f, const float *bias, size_t rows, size_t cols, int relu);
void ff_bias_act_f64(double *f, const double *bias, size_t rows, size_t cols, int relu);

/* db[j] = sum_i d[i, j]. */
void ff_colsum_f32(const float *d, size_t rows, size_t cols, float *db);
void ff_colsum_f64(const double *d, size_t rows, size_t cols, double *db);

/* h[i, j] = h[i, j] > 0 ? dh[i, j] : 0 (the activation is its own ReLU mask),
 * and db[j] = sum_i h[i, j] afterwards: dL/dF_{k-1} and dL/db_{k-1} in one pass. */
void ff_mask_colsum_f32(const float *dh, float *h, size_t rows, size_t cols, float *db);
void ff_mask_colsum_f64(const double *dh, double *h, size_t rows, size_t cols, double *db);

/* d[i] = h[i] > 0 ? d[i] : 0 over n entries (the mask alone, H left as it is). */
void ff_relu_mask_f32(const float *h, float *d, size_t n);
void ff_relu_mask_f64(const double *h, double *d, size_t n);

/* The softmax cross-entropy over rows of logits out (rows, cols) with integer labels:
 * returns sum_i l_i, writes scale * dl_i/df_i into grad (which may be out itself) and
 * adds to *hits the rows whose first largest logit is the label's (docs/math.md, "Losses"). */
double ff_softmax_xent_f32(const float *out, size_t rows, size_t cols, const ptrdiff_t *labels,
                           float scale, float *grad, ptrdiff_t *hits);
double ff_softmax_xent_f64(const double *out, size_t rows, size_t cols, const ptrdiff_t *labels,
                           double scale, double *grad, ptrdiff_t *hits);

/* The guard around a fit's run of steps (fastfit/epochs.py, LocalRunner.run), each split
 * across n_threads of fastfit's team when the buffer is large: copy `bytes` bytes from src
 * to dst (the snapshot before the run); and 1 when all n values of x are finite, else 0
 * (the check after it). */
#define FF_GUARD_PARALLEL_MIN_BYTES ((size_t)1 << 22)  /* below it: the calling thread alone */
void ff_copy_bytes(void *dst, const void *src, size_t bytes, int n_threads);
int ff_all_finite_f32(const float *x, size_t n, int n_threads);
int ff_all_finite_f64(const double *x, size_t n, int n_threads);

/* Ask the caches for rows[0..n) of a row-major matrix at base (row_bytes a row), every line
 * of them, without waiting: the next batch's rows, fetched from memory while this batch's
 * products run, so that the next gather copies them from cache. Changes nothing. */
void ff_prefetch_rows(const void *base, const ptrdiff_t *rows, size_t n, size_t row_bytes);

/* at (cols, rows) = a^T for a row-major (rows, cols). */
void ff_transpose_f32(const float *a, size_t rows, size_t cols, float *at);
void ff_transpose_f64(const double *a, size_t rows, size_t cols, double *at);

#endif
