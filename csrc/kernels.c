#include "kernels.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(FASTFIT_NO_CLONES)
#define FF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FF_CLONES
#endif

/* ---- optimizer updates: one pass over [0, n) of each buffer ---------------- */

#define DEFINE_UPDATE_RANGE(SUFFIX, T, SQRT)                                             \
FF_CLONES static void update_range_##SUFFIX(int kind, T *restrict p, const T *restrict g, \
        T *restrict m, T *restrict v, size_t n, T lr, T b1, T b2, T eps,                  \
        T c1, T c2, T keep, T move)                                                      \
{                                                                                        \
    const T om1 = (T)1 - b1, om2 = (T)1 - b2;                                            \
    size_t i;                                                                            \
    switch (kind) {                                                                      \
    case FF_SGD:                                                                         \
        for (i = 0; i < n; i++) p[i] -= lr * g[i];                                       \
        break;                                                                           \
    case FF_MOMENTUM:                                                                    \
        for (i = 0; i < n; i++) {                                                        \
            T mi = b1 * m[i] + om1 * g[i];                                               \
            m[i] = mi;                                                                   \
            p[i] -= lr * mi;                                                             \
        }                                                                                \
        break;                                                                           \
    case FF_NESTEROV:                                                                    \
        for (i = 0; i < n; i++) {                                                        \
            T mo = m[i];                                                                 \
            T mi = b1 * mo + om1 * g[i];                                                 \
            m[i] = mi;                                                                   \
            p[i] = p[i] + keep * mo - move * mi;                                         \
        }                                                                                \
        break;                                                                           \
    case FF_ADAM:                                                                        \
        for (i = 0; i < n; i++) {                                                        \
            T mi = b1 * m[i] + om1 * g[i];                                               \
            T vi = b2 * v[i] + om2 * (g[i] * g[i]);                                      \
            m[i] = mi;                                                                   \
            v[i] = vi;                                                                   \
            p[i] -= lr * (mi * c1) / (SQRT(vi * c2) + eps);                              \
        }                                                                                \
        break;                                                                           \
    default: /* FF_NORMALIZED */                                                         \
        for (i = 0; i < n; i++) p[i] -= lr * g[i] / (SQRT(g[i] * g[i]) + eps);           \
        break;                                                                           \
    }                                                                                    \
}

DEFINE_UPDATE_RANGE(f32, float, sqrtf)
DEFINE_UPDATE_RANGE(f64, double, sqrt)

/* Split the buffer into one contiguous slice per thread; each slice runs the
 * vectorized range loop. Small buffers stay on the calling thread. */
#define DEFINE_UPDATE(SUFFIX, T)                                                          \
void ff_update_##SUFFIX(int kind, T *p, const T *g, T *m, T *v, size_t n,                 \
                        double lr, double beta1, double beta2, double eps,                \
                        double c1, double c2, double keep, double move, int n_threads)    \
{                                                                                         \
    int nt = (n >= FF_PARALLEL_MIN_PARAMS && n_threads > 1) ? n_threads : 1;              \
    if (nt == 1) {                                                                        \
        update_range_##SUFFIX(kind, p, g, m, v, n, (T)lr, (T)beta1, (T)beta2, (T)eps,     \
                              (T)c1, (T)c2, (T)keep, (T)move);                            \
        return;                                                                           \
    }                                                                                     \
    FF_PARALLEL_SLICES(nt, n, update_range_##SUFFIX(kind, p + lo, g + lo,                 \
        m ? m + lo : m, v ? v + lo : v, hi - lo, (T)lr, (T)beta1, (T)beta2, (T)eps,       \
        (T)c1, (T)c2, (T)keep, (T)move))                                                  \
}

#ifdef _OPENMP
/* NT must be a variable named nt: _Pragma cannot take a macro argument. */
#define FF_PARALLEL_SLICES(NT, N, CALL)                                                   \
    _Pragma("omp parallel num_threads(nt)")                                               \
    {                                                                                     \
        size_t k = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();      \
        size_t lo = (N) * id / k, hi = (N) * (id + 1) / k;                                \
        CALL;                                                                             \
    }
#else
#define FF_PARALLEL_SLICES(NT, N, CALL)                                                   \
    { size_t lo = 0, hi = (N); (void)(NT); CALL; }
#endif

DEFINE_UPDATE(f32, float)
DEFINE_UPDATE(f64, double)

/* ---- network passes --------------------------------------------------------- */

#define DEFINE_PASSES(SUFFIX, T)                                                          \
FF_CLONES void ff_bias_act_##SUFFIX(T *restrict f, const T *restrict bias, size_t rows,  \
                                    size_t cols, int relu)                                \
{                                                                                         \
    for (size_t i = 0; i < rows; i++) {                                                   \
        T *restrict row = f + i * cols;                                                   \
        if (relu) {                                                                       \
            for (size_t j = 0; j < cols; j++) {                                           \
                T z = row[j] + bias[j];                                                   \
                row[j] = z > 0 ? z : (T)0;                                                \
            }                                                                             \
        } else {                                                                          \
            for (size_t j = 0; j < cols; j++) row[j] += bias[j];                          \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
FF_CLONES void ff_colsum_##SUFFIX(const T *restrict d, size_t rows, size_t cols,         \
                                  T *restrict db)                                         \
{                                                                                         \
    for (size_t j = 0; j < cols; j++) db[j] = 0;                                          \
    for (size_t i = 0; i < rows; i++) {                                                   \
        const T *restrict row = d + i * cols;                                             \
        for (size_t j = 0; j < cols; j++) db[j] += row[j];                                \
    }                                                                                     \
}                                                                                         \
                                                                                          \
FF_CLONES void ff_mask_colsum_##SUFFIX(const T *restrict dh, T *restrict h, size_t rows, \
                                       size_t cols, T *restrict db)                       \
{                                                                                         \
    for (size_t j = 0; j < cols; j++) db[j] = 0;                                          \
    for (size_t i = 0; i < rows; i++) {                                                   \
        const T *restrict drow = dh + i * cols;                                           \
        T *restrict hrow = h + i * cols;                                                  \
        for (size_t j = 0; j < cols; j++) {                                               \
            T gj = hrow[j] > 0 ? drow[j] : (T)0;                                          \
            hrow[j] = gj;                                                                 \
            db[j] += gj;                                                                  \
        }                                                                                 \
    }                                                                                     \
}

DEFINE_PASSES(f32, float)
DEFINE_PASSES(f64, double)
