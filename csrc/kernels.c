#include "kernels.h"

#include <float.h>
#include <math.h>

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
#include "update_impl.h"
#include "passes_impl.h"
#include "softmax_impl.h"
#undef EXP_NONPOSITIVE
#undef LOG
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
#include "update_impl.h"
#include "passes_impl.h"
#include "softmax_impl.h"
#undef EXP_NONPOSITIVE
#undef LOG
#undef T
#undef SUFFIX
#undef SQRT
#undef FABS
#undef T_MIN_NORMAL

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
#include <immintrin.h>

/* at's 16 x 16 tile = a's transposed. Pairs of rows are interleaved, then 4 x 4 blocks
 * formed within each 128-bit lane (lane L of u[4i + k] is column 4L + k of rows
 * 4i..4i+3), then the lanes are gathered across the four groups of rows. */
__attribute__((target("avx512f"))) static void transpose_tile_16x16(const float *a, size_t lda,
                                                                    float *at, size_t ldat)
{
    __m512 r[16], t[16], u[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(a + i * lda);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; k++) {
        __m512 lanes01_rows0to7 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44);
        __m512 lanes23_rows0to7 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);
        __m512 lanes01_rows8to15 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44);
        __m512 lanes23_rows8to15 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
        _mm512_storeu_ps(at + (0 + k) * ldat, _mm512_shuffle_f32x4(lanes01_rows0to7, lanes01_rows8to15, 0x88));
        _mm512_storeu_ps(at + (4 + k) * ldat, _mm512_shuffle_f32x4(lanes01_rows0to7, lanes01_rows8to15, 0xDD));
        _mm512_storeu_ps(at + (8 + k) * ldat, _mm512_shuffle_f32x4(lanes23_rows0to7, lanes23_rows8to15, 0x88));
        _mm512_storeu_ps(at + (12 + k) * ldat, _mm512_shuffle_f32x4(lanes23_rows0to7, lanes23_rows8to15, 0xDD));
    }
}

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
