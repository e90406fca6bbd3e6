/* fastfit's own float32 matrix product (gemm.h), for x86-64 CPUs with AVX-512.
 *
 * The layout is Goto's and BLIS's: the operands are copied ("packed") a block at a
 * time into panels the micro-kernel reads in order. One op(A) panel (16 kB) stays in
 * L1 while the op(B) panels of the block (4 MB at most, from L3) stream past it; the
 * block sizes were measured (docs/design.md, "The products"):
 *
 *   for each block of FF_NC columns of C (jc)
 *     for each block of FF_KC of the inner dimension (pc)
 *       pack op(B)[pc:pc+kc, jc:jc+nc] into panels of FF_NR columns, k-major
 *       for each block of FF_MC rows of C (ic)
 *         pack op(A)[ic:ic+mc, pc:pc+kc] into panels of FF_MR rows, k-major
 *         for each panel of FF_MR rows (ir)              the A panel stays in L1
 *           for each panel of FF_NR columns (jr)         the B panels stream past it
 *             tile C[ir, jr] (=, or += after the first pc block) a-panel x b-panel
 *
 * The first block of k writes C and the later ones add to it, so C is never zeroed
 * first (BLAS zeroes C in a pass of its own before a beta = 0 product).
 *
 * The micro-kernel holds an FF_MR x FF_NR tile of C in 16 vector registers: per k it
 * loads two vectors of the B panel's row and broadcasts each of the A panel's FF_MR
 * values, 16 fused multiply-adds. Columns past N are masked off; rows past M are
 * computed from zero padding into a tile on the stack and not copied out.
 */
#include "gemm.h"

#include <string.h>

#include "cpu_features.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FASTFIT_NO_CLONES)
#include "tile16.h"

#define FF_NV (FF_NR / 16) /* vectors per row of a tile */
_Static_assert(FF_NR == 32 && FF_MR == 8, "the micro-kernel and the packing are written for 8 x 32 tiles");
#define AVX512 __attribute__((target("avx512f")))

int ff_sgemm_usable(void)
{
    /* asked once: CPUID leaves a virtual machine for the hypervisor, microseconds each */
    static int usable = -1;
    if (usable < 0)
        usable = fastfit_avx512_usable();
    return usable;
}

/* The tile c (FF_MR rows of ldc) = (or += when accumulate) the a panel (kc x FF_MR,
 * k-major) times the b panel (kc x FF_NR, k-major), for nv of the tile's vectors,
 * the last one's lanes under `last`. */
static inline __attribute__((always_inline)) AVX512 void tile_product(
    int nv, int kc, const float *restrict a, const float *restrict b, float *restrict c, int ldc,
    int accumulate, __mmask16 last)
{
    __m512 acc[FF_MR][FF_NV];
    for (int i = 0; i < FF_MR; i++)
        for (int v = 0; v < nv; v++)
            acc[i][v] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 bk[FF_NV];
        for (int v = 0; v < nv; v++)
            bk[v] = _mm512_load_ps(b + 16 * v);
        for (int i = 0; i < FF_MR; i++) {
            __m512 aik = _mm512_set1_ps(a[i]);
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm512_fmadd_ps(aik, bk[v], acc[i][v]);
        }
        a += FF_MR;
        b += FF_NR;
    }
    for (int i = 0; i < FF_MR; i++) {
        float *ci = c + (size_t)i * ldc;
        for (int v = 0; v < nv; v++) {
            __mmask16 lanes = v == nv - 1 ? last : (__mmask16)0xFFFF;
            if (accumulate)
                acc[i][v] = _mm512_add_ps(acc[i][v], _mm512_maskz_loadu_ps(lanes, ci + 16 * v));
            _mm512_mask_storeu_ps(ci + 16 * v, lanes, acc[i][v]);
        }
    }
}

/* The tile's first nr columns (1 <= nr <= FF_NR). */
static AVX512 void micro_kernel(int nr, int kc, const float *a, const float *b, float *c, int ldc,
                                int accumulate)
{
    int nv = (nr + 15) / 16;
    __mmask16 last = (__mmask16)(0xFFFFu >> (16 * nv - nr));
    if (nv == 2)
        tile_product(2, kc, a, b, c, ldc, accumulate, last);
    else
        tile_product(1, kc, a, b, c, ldc, accumulate, last);
}

/* op(A)'s rows [0, mc) and columns [0, kc) into panels of FF_MR rows: panel p holds
 * element (p*FF_MR + i, k) at p*FF_MR*kc + k*FF_MR + i, zero past mc. op(A)'s element
 * (i, k) is a[i*rs + k*cs]. */
static AVX512 void pack_a(int mc, int kc, const float *a, size_t rs, size_t cs, float *dst)
{
    int i0 = 0;
    if (cs == 1) {               /* rows of A: two panels at a time through 16 x 16 tiles */
        float tile[16 * 16] __attribute__((aligned(64)));
        int k16 = kc / 16 * 16;
        for (; i0 + 2 * FF_MR <= mc; i0 += 2 * FF_MR, dst += (size_t)2 * FF_MR * kc) {
            float *upper = dst, *lower = dst + (size_t)FF_MR * kc;
            for (int k0 = 0; k0 < k16; k0 += 16) {
                transpose_tile_16x16(a + (size_t)i0 * rs + k0, rs, tile, 16);
                for (int k = 0; k < 16; k++) {
                    _mm256_store_ps(upper + (k0 + k) * FF_MR, _mm256_load_ps(tile + 16 * k));
                    _mm256_store_ps(lower + (k0 + k) * FF_MR, _mm256_load_ps(tile + 16 * k + 8));
                }
            }
            for (int i = 0; i < 2 * FF_MR; i++)
                for (int k = k16; k < kc; k++)
                    (i < FF_MR ? upper : lower)[k * FF_MR + i % FF_MR] = a[(size_t)(i0 + i) * rs + k];
        }
    }
    for (; i0 < mc; i0 += FF_MR, dst += (size_t)FF_MR * kc) {
        int mr = mc - i0 < FF_MR ? mc - i0 : FF_MR;
        if (cs == 1) {           /* rows of A: each row of the panel scattered down a column */
            for (int i = 0; i < mr; i++) {
                const float *row = a + (size_t)(i0 + i) * rs;
                for (int k = 0; k < kc; k++)
                    dst[k * FF_MR + i] = row[k];
            }
        } else {                 /* columns of A: each k's FF_MR values are contiguous */
            for (int k = 0; k < kc; k++) {
                const float *col = a + (size_t)k * cs + (size_t)i0 * rs;
                for (int i = 0; i < mr; i++)
                    dst[k * FF_MR + i] = col[i * rs];
            }
        }
        for (int k = 0; mr < FF_MR && k < kc; k++)
            for (int i = mr; i < FF_MR; i++)
                dst[k * FF_MR + i] = 0.f;
    }
}

/* op(B)'s rows [0, kc) and columns [0, nc) into panels of FF_NR columns: panel q holds
 * element (k, q*FF_NR + j) at q*FF_NR*kc + k*FF_NR + j, zero past nc. op(B)'s element
 * (k, j) is b[k*rs + j*cs]. */
static AVX512 void pack_b(int kc, int nc, const float *b, size_t rs, size_t cs, float *dst)
{
    for (int j0 = 0; j0 < nc; j0 += FF_NR, dst += (size_t)FF_NR * kc) {
        int nr = nc - j0 < FF_NR ? nc - j0 : FF_NR;
        int k16 = 0;
        if (cs == 1) {           /* rows of B: a row of the panel is a piece of a row */
            __mmask16 lo = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
            __mmask16 hi = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
            for (int k = 0; k < kc; k++) {
                const float *row = b + (size_t)k * rs + j0;
                _mm512_store_ps(dst + k * FF_NR, _mm512_maskz_loadu_ps(lo, row));
                _mm512_store_ps(dst + k * FF_NR + 16, _mm512_maskz_loadu_ps(hi, row + 16));
            }
            continue;
        }
        /* B's columns are rows in memory (B = W^T): whole 16 x 16 tiles through
         * registers, one group of 16 rows of W at a time so the reads run along rows */
        if (nr == FF_NR) {
            k16 = kc / 16 * 16;
            for (int q = 0; q < FF_NR; q += 16)
                for (int k = 0; k < k16; k += 16)
                    transpose_tile_16x16(b + (size_t)(j0 + q) * cs + k, cs, dst + k * FF_NR + q, FF_NR);
        }
        for (int j = 0; j < FF_NR; j++) {
            const float *col = b + (size_t)(j0 + j) * cs;
            for (int k = k16; k < kc; k++)
                dst[k * FF_NR + j] = j < nr ? col[(size_t)k * rs] : 0.f;
        }
    }
}

/* The packed op(B) block first (at most FF_NC columns, rounded up to whole panels, by
 * FF_KC), then the packed op(A) block (FF_MC rows by FF_KC); both as large as N and K need. */
static size_t packed_b_floats(int n, int k)
{
    size_t nc = n < FF_NC ? (size_t)(n + FF_NR - 1) / FF_NR * FF_NR : FF_NC;
    return nc * (size_t)(k < FF_KC ? k : FF_KC);
}

size_t ff_sgemm_pack_floats(int max_n, int max_k)
{
    return packed_b_floats(max_n, max_k) + (size_t)FF_MC * (max_k < FF_KC ? max_k : FF_KC);
}

void ff_sgemm(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, float *C, int ldc, float *pack)
{
    size_t a_rs = trans_a ? 1 : (size_t)lda, a_cs = trans_a ? (size_t)lda : 1;
    size_t b_rs = trans_b ? 1 : (size_t)ldb, b_cs = trans_b ? (size_t)ldb : 1;
    /* a whole number of panels of FF_NR floats before it: packed_a starts on a 64-byte line */
    float *packed_b = pack, *packed_a = pack + packed_b_floats(N, K);
    if (K == 0) {
        for (int i = 0; i < M; i++)
            memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    for (int jc = 0; jc < N; jc += FF_NC) {
        int nc = N - jc < FF_NC ? N - jc : FF_NC;
        for (int pc = 0; pc < K; pc += FF_KC) {
            int kc = K - pc < FF_KC ? K - pc : FF_KC;
            int accumulate = pc > 0;
            pack_b(kc, nc, B + pc * b_rs + jc * b_cs, b_rs, b_cs, packed_b);
            for (int ic = 0; ic < M; ic += FF_MC) {
                int mc = M - ic < FF_MC ? M - ic : FF_MC;
                pack_a(mc, kc, A + ic * a_rs + pc * a_cs, a_rs, a_cs, packed_a);
                for (int ir = 0; ir < mc; ir += FF_MR) {
                    int mr = mc - ir < FF_MR ? mc - ir : FF_MR;
                    const float *a = packed_a + (size_t)ir * kc;
                    for (int jr = 0; jr < nc; jr += FF_NR) {
                        int nr = nc - jr < FF_NR ? nc - jr : FF_NR;
                        const float *b = packed_b + (size_t)jr * kc;
                        float *c = C + (size_t)(ic + ir) * ldc + jc + jr;
                        if (mr == FF_MR) {
                            micro_kernel(nr, kc, a, b, c, ldc, accumulate);
                            continue;
                        }
                        /* the last rows: through a full tile on the stack */
                        float tile[FF_MR * FF_NR] __attribute__((aligned(64))) = {0};
                        for (int i = 0; accumulate && i < mr; i++)
                            memcpy(tile + i * FF_NR, c + (size_t)i * ldc, nr * sizeof(float));
                        micro_kernel(nr, kc, a, b, tile, FF_NR, accumulate);
                        for (int i = 0; i < mr; i++)
                            memcpy(c + (size_t)i * ldc, tile + i * FF_NR, nr * sizeof(float));
                    }
                }
            }
        }
    }
}

#else /* no AVX-512 product in this build: the core uses BLAS for every product */

size_t ff_sgemm_pack_floats(int max_n, int max_k)
{
    (void)max_n;
    (void)max_k;
    return 0;
}

int ff_sgemm_usable(void)
{
    return 0;
}

void ff_sgemm(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, float *C, int ldc, float *pack)
{
    /* never called (ff_sgemm_usable() is 0); the plain sum, should it ever be */
    (void)pack;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.f;
            for (int k = 0; k < K; k++)
                s += (trans_a ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k])
                     * (trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            C[(size_t)i * ldc + j] = s;
        }
}

#endif
