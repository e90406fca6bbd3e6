/* Square tiles transposed through AVX-512 registers: 16 x 16 float32 and 8 x 8 float64,
 * one vector per row. Used by the core's transpose (kernels.c) and by the product's
 * packing (gemm.c). x86-64 with GCC or Clang only; the caller checks that the CPU runs
 * AVX-512 before calling them. */
#ifndef FASTFIT_TILES_H
#define FASTFIT_TILES_H

#include <stddef.h>
#include <immintrin.h>

/* at's 16 x 16 tile = a's transposed. Pairs of rows are interleaved, then 4 x 4 blocks
 * formed within each 128-bit lane (lane L of u[4i + k] is column 4L + k of rows
 * 4i..4i+3), then the lanes are gathered across the four groups of rows. */
__attribute__((target("avx512f"))) static inline void transpose_tile_16x16(const float *a, size_t lda,
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

/* at's 8 x 8 tile = a's transposed, the same way with pairs of doubles: after the rows
 * are interleaved in pairs, t[2i] holds columns 0, 2, 4, 6 and t[2i + 1] columns 1, 3, 5, 7
 * of rows 2i and 2i + 1, one 128-bit lane per column; the lanes are then gathered. */
__attribute__((target("avx512f"))) static inline void transpose_tile_8x8(const double *a, size_t lda,
                                                                  double *at, size_t ldat)
{
    __m512d r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm512_loadu_pd(a + i * lda);
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int odd = 0; odd < 2; odd++) {
        __m512d lanes01_rows0to3 = _mm512_shuffle_f64x2(t[odd], t[2 + odd], 0x44);
        __m512d lanes23_rows0to3 = _mm512_shuffle_f64x2(t[odd], t[2 + odd], 0xEE);
        __m512d lanes01_rows4to7 = _mm512_shuffle_f64x2(t[4 + odd], t[6 + odd], 0x44);
        __m512d lanes23_rows4to7 = _mm512_shuffle_f64x2(t[4 + odd], t[6 + odd], 0xEE);
        _mm512_storeu_pd(at + (0 + odd) * ldat, _mm512_shuffle_f64x2(lanes01_rows0to3, lanes01_rows4to7, 0x88));
        _mm512_storeu_pd(at + (2 + odd) * ldat, _mm512_shuffle_f64x2(lanes01_rows0to3, lanes01_rows4to7, 0xDD));
        _mm512_storeu_pd(at + (4 + odd) * ldat, _mm512_shuffle_f64x2(lanes23_rows0to3, lanes23_rows4to7, 0x88));
        _mm512_storeu_pd(at + (6 + odd) * ldat, _mm512_shuffle_f64x2(lanes23_rows0to3, lanes23_rows4to7, 0xDD));
    }
}

#endif
