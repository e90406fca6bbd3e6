#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "clones.h"
#include "expf.h"
#include "team.h"

/* Below this many parameters an update runs on the calling thread alone:
 * waking a team thread costs more than the second core gives. */
#define FF_PARALLEL_MIN_PARAMS ((size_t)1 << 16)
/* The most parts one update is split into. */
#define FF_MAX_PARTS 64

#define T float
#define SUFFIX f32
#define SQRT sqrtf
#define FABS fabsf
#define T_MIN_NORMAL FLT_MIN
#define EXP_NONPOSITIVE ff_exp_nonpositive_f32
#define LOG logf
#define T_BITS uint32_t
#define T_EXPONENT_BITS 0x7f800000u
#include "update_impl.h"
#include "passes_impl.h"
#include "softmax_impl.h"
#undef EXP_NONPOSITIVE
#undef LOG
#undef T_BITS
#undef T_EXPONENT_BITS
#undef T
#undef SUFFIX
#undef SQRT
#undef FABS
#undef T_MIN_NORMAL

#define T double
#define SUFFIX f64
#define SQRT sqrt
#define FABS fabs
#define T_MIN_NORMAL DBL_MIN
#define EXP_NONPOSITIVE exp
#define LOG log
#define T_BITS uint64_t
#define T_EXPONENT_BITS 0x7ff0000000000000ull
#include "update_impl.h"
#include "passes_impl.h"
#include "softmax_impl.h"
#undef EXP_NONPOSITIVE
#undef LOG
#undef T_BITS
#undef T_EXPONENT_BITS
#undef T
#undef SUFFIX
#undef SQRT
#undef FABS
#undef T_MIN_NORMAL

/* ---------------------------------------------------------------- the guard around a run
 *
 * Before each run of steps the fit copies the parameters and the optimizer's state,
 * and after it checks them for an infinity or NaN (an overflowed update, which the
 * run then replays step by step). For the large network (20M parameters, three
 * buffers of 80 MB) NumPy's copy and sum took about 29 ms a run, 3% of it; both
 * are bound by memory bandwidth, which two cores share better than one. */

/* How many parts a guard pass over `bytes` bytes is split into. */
static int guard_parts(size_t bytes, int n_threads)
{
    int parts = bytes >= FF_GUARD_PARALLEL_MIN_BYTES && n_threads > 1 ? n_threads : 1;
    return parts > FF_MAX_PARTS ? FF_MAX_PARTS : parts;
}

/* Part `index` of `count` of [0, n), its ends on multiples of 64 elements: whole lines of
 * a buffer that starts on one, as the parameters and the state do. */
static void guard_part(size_t n, int index, int count, size_t *lo, size_t *hi)
{
    size_t blocks = (n + 63) / 64;
    *lo = blocks * (size_t)index / (size_t)count * 64;
    *hi = blocks * (size_t)(index + 1) / (size_t)count * 64;
    if (*lo > n)
        *lo = n;
    if (*hi > n)
        *hi = n;
}

typedef struct {
    char *dst;
    const char *src;
    size_t bytes;
} copy_job;

static void copy_part(void *arg, int index, int count)
{
    copy_job *job = arg;
    size_t lo, hi;
    guard_part(job->bytes, index, count, &lo, &hi);
    memcpy(job->dst + lo, job->src + lo, hi - lo);
}

void ff_copy_bytes(void *dst, const void *src, size_t bytes, int n_threads)
{
    copy_job job = {dst, src, bytes};
    int parts = guard_parts(bytes, n_threads);
    if (parts == 1)
        memcpy(dst, src, bytes);
    else
        ff_team_run(copy_part, &job, parts);
}

typedef struct {
    const void *x;
    size_t n;
    int f64;
    int finite[FF_MAX_PARTS];  /* each part's answer */
} finite_job;

static void finite_part(void *arg, int index, int count)
{
    finite_job *job = arg;
    size_t lo, hi;
    guard_part(job->n, index, count, &lo, &hi);
    job->finite[index] = job->f64 ? finite_range_f64((const double *)job->x + lo, hi - lo)
                                  : finite_range_f32((const float *)job->x + lo, hi - lo);
}

static int all_finite(const void *x, size_t n, size_t item, int n_threads)
{
    finite_job job = {x, n, item == sizeof(double), {0}};
    int parts = guard_parts(n * item, n_threads);
    if (parts == 1)
        finite_part(&job, 0, 1);
    else
        ff_team_run(finite_part, &job, parts);
    for (int i = 0; i < parts; i++)
        if (!job.finite[i])
            return 0;
    return 1;
}

int ff_all_finite_f32(const float *x, size_t n, int n_threads)
{
    return all_finite(x, n, sizeof(float), n_threads);
}

int ff_all_finite_f64(const double *x, size_t n, int n_threads)
{
    return all_finite(x, n, sizeof(double), n_threads);
}

/* ---------------------------------------------------------------- the next batch's rows
 *
 * A batch's rows are scattered through X, and out of cache for a data set larger than
 * the last level of it: copying the 64 rows of a 784-column float32 batch took 30 us
 * from memory against 14 from cache. Prefetched one step ahead, the fetches overlap
 * the step's products, which leave the memory bus idle. x86-64 asks for the lines into
 * the second-level cache (prefetcht1: the step's own data keeps the first level), with
 * an instruction of its own because GCC 12 drops __builtin_prefetch from some loops. */

static inline void prefetch_line(const char *line)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __asm__ volatile("prefetcht1 %0" : : "m"(*line));
#elif defined(__GNUC__)
    __builtin_prefetch(line, 0, 2);
#else
    (void)line;
#endif
}

void ff_prefetch_rows(const void *base, const ptrdiff_t *rows, size_t n, size_t row_bytes)
{
    for (size_t r = 0; r < n; r++) {
        const char *row = (const char *)base + (size_t)rows[r] * row_bytes;
        const char *end = row + row_bytes;
        for (const char *line = (const char *)((uintptr_t)row & ~(uintptr_t)63); line < end; line += 64)
            prefetch_line(line);
    }
}

/* ---------------------------------------------------------------- the transpose
 *
 * float32 on x86-64 with AVX-512 moves whole 16 x 16 tiles through registers: 0.14 us
 * for the tiny network's batch of 32 x 64, against 0.66 for the element loop, which
 * does the edges beyond whole tiles, float64, and every other machine. */

void ff_transpose_f64(const double *a, size_t rows, size_t cols, double *at)
{
    transpose_block_f64(a, cols, rows, cols, at, rows);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FASTFIT_NO_CLONES)
#include "tiles.h"

/* The (rows16, cols16) top-left block of a (row stride lda), both multiples of 16, into at
 * (row stride ldat). */
__attribute__((target("avx512f"))) static void transpose_tiles_f32(const float *a, size_t lda, size_t rows16,
                                                                   size_t cols16, float *at, size_t ldat)
{
    for (size_t i0 = 0; i0 < rows16; i0 += 16)
        for (size_t j0 = 0; j0 < cols16; j0 += 16)
            transpose_tile_16x16(a + i0 * lda + j0, lda, at + j0 * ldat + i0, ldat);
}

void ff_transpose_f32(const float *a, size_t rows, size_t cols, float *at)
{
    size_t rows16 = __builtin_cpu_supports("avx512f") ? rows / 16 * 16 : 0;
    size_t cols16 = rows16 ? cols / 16 * 16 : 0;
    if (rows16 && cols16)
        transpose_tiles_f32(a, cols, rows16, cols16, at, rows);
    else
        rows16 = cols16 = 0;
    /* the right-hand columns of the tiled rows, then the rows below them */
    transpose_block_f32(a + cols16, cols, rows16, cols - cols16, at + cols16 * rows, rows);
    transpose_block_f32(a + rows16 * cols, cols, rows - rows16, cols, at + rows16, rows);
}
#else
void ff_transpose_f32(const float *a, size_t rows, size_t cols, float *at)
{
    transpose_block_f32(a, cols, rows, cols, at, rows);
}
#endif
