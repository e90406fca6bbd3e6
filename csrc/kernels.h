/* Element-wise kernels of fastfit's compiled core (called from fastfit/_core.pyx).
 *
 * Each exists for float (_f32) and double (_f64). On x86-64 with GCC or Clang
 * each is compiled several times (AVX-512, AVX2, baseline) and the loader picks
 * the best the CPU runs (target_clones), so one portable build gets wide
 * vectors. Contraction into FMA is off (-ffp-contract=off in setup.py), so the
 * arithmetic is the same operation sequence as the NumPy reference's.
 */
#ifndef FASTFIT_KERNELS_H
#define FASTFIT_KERNELS_H

#include <stddef.h>

/* Optimizer kinds: the codes of fastfit/_core.pyx. */
enum { FF_SGD = 0, FF_MOMENTUM = 1, FF_NESTEROV = 2, FF_ADAM = 3, FF_NORMALIZED = 4 };

/* Below this many parameters an update runs on one thread: waking a second costs more. */
#define FF_PARALLEL_MIN_PARAMS ((size_t)1 << 16)

/* One in-place optimizer update over n parameters (MATH.md, Optimizers).
 * c1, c2: Adam's bias corrections 1/(1-beta1^(t+1)), 1/(1-beta2^(t+1)).
 * Nesterov: p holds psi; keep = lr_t*beta, move = lr_t + lr_{t+1}*beta. */
void ff_update_f32(int kind, float *p, const float *g, float *m, float *v, size_t n,
                   double lr, double beta1, double beta2, double eps,
                   double c1, double c2, double keep, double move, int n_threads);
void ff_update_f64(int kind, double *p, const double *g, double *m, double *v, size_t n,
                   double lr, double beta1, double beta2, double eps,
                   double c1, double c2, double keep, double move, int n_threads);

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

#endif
