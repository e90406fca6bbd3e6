/* fastfit's own float32 and float64 matrix products (gemm.h), for x86-64 CPUs with AVX-512.
 *
 * The layout is Goto's and BLIS's: the operands are copied ("packed") a block at a
 * time into panels the micro-kernel reads in order. One op(A) panel (16 kB) stays in
 * L1 while the op(B) panels of the block (4 MB at most, from L3) stream past it; the
 * block sizes were measured (docs/design.md, "The products"). In float64 a block holds
 * half as many elements along k (FF_KC_F64), so every block has the same size in bytes:
 *
 *   for each block of FF_NC columns of C (jc)
 *     for each block of KC (FF_KC_F32 or FF_KC_F64) of the inner dimension (pc)
 *       pack op(B)[pc:pc+kc, jc:jc+nc] into panels of NR columns, k-major
 *       for each block of FF_MC rows of C (ic)
 *         pack op(A)[ic:ic+mc, pc:pc+kc] into panels of FF_MR rows, k-major
 *         for each panel of FF_MR rows (ir)              the A panel stays in L1
 *           for each panel of NR columns (jr)            the B panels stream past it
 *             tile C[ir, jr] (=, or += after the first pc block) a-panel x b-panel
 *
 * The first block of k writes C and the later ones add to it, so C is never zeroed
 * first (BLAS zeroes C in a pass of its own before a beta = 0 product).
 *
 * The micro-kernel holds an FF_MR x NR tile of C in 16 vector registers (NR = 32
 * floats or 16 doubles, two vectors a row): per k it loads two vectors of the B panel's
 * row and broadcasts each of the A panel's FF_MR values, 16 fused multiply-adds. Columns
 * past N are masked off; rows past M are computed from zero padding and never stored.
 * After the last block of k, a tile's final entries take the layer's element-wise passes
 * (ff_gemm_finish: bias, ReLU, the ReLU's gate, column sums) before they are stored. The
 * loops are written once, for both types, in gemm_impl.h.
 */
#include "gemm.h"

#include <string.h>

#include "cpu_features.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FASTFIT_NO_CLONES)
#include "tiles.h"

#define AVX512 __attribute__((target("avx512f")))

int ff_gemm_usable(void)
{
    /* asked once: CPUID leaves a virtual machine for the hypervisor, microseconds each */
    static int usable = -1;
    if (usable < 0)
        usable = fastfit_avx512_usable();
    return usable;
}

#define T float
#define SUFFIX f32
#define KC FF_KC_F32
#define LANES 16
#define VEC __m512
#define MASK __mmask16
#define ALL_LANES 0xFFFFu
#define V_ZERO _mm512_setzero_ps
#define V_LOAD _mm512_load_ps
#define V_STORE _mm512_store_ps
#define V_SET1 _mm512_set1_ps
#define V_FMADD _mm512_fmadd_ps
#define V_ADD _mm512_add_ps
#define V_MASKZ_LOADU _mm512_maskz_loadu_ps
#define V_MASK_STOREU _mm512_mask_storeu_ps
#define V_MASKZ_MOV _mm512_maskz_mov_ps
#define V_CMP_GT_ZERO(v) _mm512_cmp_ps_mask((v), _mm512_setzero_ps(), _CMP_GT_OQ)
#define TRANSPOSE_TILE transpose_tile_16x16
#include "gemm_impl.h"
#undef T
#undef SUFFIX
#undef KC
#undef LANES
#undef VEC
#undef MASK
#undef ALL_LANES
#undef V_ZERO
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_FMADD
#undef V_ADD
#undef V_MASKZ_LOADU
#undef V_MASK_STOREU
#undef V_MASKZ_MOV
#undef V_CMP_GT_ZERO
#undef TRANSPOSE_TILE

#define T double
#define SUFFIX f64
#define KC FF_KC_F64
#define LANES 8
#define VEC __m512d
#define MASK __mmask8
#define ALL_LANES 0xFFu
#define V_ZERO _mm512_setzero_pd
#define V_LOAD _mm512_load_pd
#define V_STORE _mm512_store_pd
#define V_SET1 _mm512_set1_pd
#define V_FMADD _mm512_fmadd_pd
#define V_ADD _mm512_add_pd
#define V_MASKZ_LOADU _mm512_maskz_loadu_pd
#define V_MASK_STOREU _mm512_mask_storeu_pd
#define V_MASKZ_MOV _mm512_maskz_mov_pd
#define V_CMP_GT_ZERO(v) _mm512_cmp_pd_mask((v), _mm512_setzero_pd(), _CMP_GT_OQ)
#define TRANSPOSE_TILE transpose_tile_8x8
#include "gemm_impl.h"

size_t ff_gemm_pack_bytes(int max_n, int max_k)
{
    size_t f32 = pack_bytes_f32(max_n, max_k), f64 = pack_bytes_f64(max_n, max_k);
    return f32 > f64 ? f32 : f64;
}

#else /* no AVX-512 product in this build: the core uses BLAS for every product */

size_t ff_gemm_pack_bytes(int max_n, int max_k)
{
    (void)max_n;
    (void)max_k;
    return 0;
}

int ff_gemm_usable(void)
{
    return 0;
}

/* never called (ff_gemm_usable() is 0): should it ever be, the plain sum (the core
 * applies the finish itself after BLAS's products, so it is never passed one here) */
#define PLAIN_GEMM(T, SUFFIX)                                                                   \
    void ff_gemm_##SUFFIX(int trans_a, int trans_b, int M, int N, int K, const T *A, int lda,   \
                          const T *B, int ldb, T *C, int ldc, void *pack,                       \
                          const ff_gemm_finish *finish)                                         \
    {                                                                                           \
        (void)pack;                                                                             \
        (void)finish;                                                                           \
        for (int i = 0; i < M; i++)                                                             \
            for (int j = 0; j < N; j++) {                                                       \
                T s = 0;                                                                        \
                for (int k = 0; k < K; k++)                                                     \
                    s += (trans_a ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k])            \
                         * (trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);         \
                C[(size_t)i * ldc + j] = s;                                                     \
            }                                                                                   \
    }
PLAIN_GEMM(float, f32)
PLAIN_GEMM(double, f64)

#endif
