/* fastfit's own product for one floating type; gemm.c includes this file twice, with
 * T = float (16 lanes a vector, SUFFIX f32) and T = double (8 lanes, SUFFIX f64), and
 * the vector operations V_* for that type. The layout and the loops are described at
 * the top of gemm.c; a tile of C is FF_MR rows by NR = 2 * LANES columns. */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)
#define NR (2 * LANES)

/* Where a tile's final entries go, and what is done to them first (see ff_gemm_finish):
 * the finish's pointers moved to the tile's first row and column. */
typedef struct {
    const T *bias;
    int relu;
    T *gated;
    int ldg;
    T *column_sums;
} FN(tile_finish);

/* The first mr rows (1 <= mr <= FF_MR) of the tile c (row length ldc) = (or += when
 * accumulate) the a panel (kc x FF_MR, k-major) times the b panel (kc x NR, k-major), for
 * nv of the tile's two vectors per row, the last one's lanes under `last`; then, when
 * `finish` is given (the last block of k), its passes on the final entries. Rows past mr
 * come from the a panel's zero padding and are never stored. */
static inline __attribute__((always_inline)) AVX512 void FN(tile_product)(
    int nv, int mr, int kc, const T *restrict a, const T *restrict b, T *restrict c, int ldc,
    int accumulate, MASK last, const FN(tile_finish) *finish)
{
    VEC acc[FF_MR][2];
    for (int i = 0; i < FF_MR; i++)
        for (int v = 0; v < nv; v++)
            acc[i][v] = V_ZERO();
    for (int k = 0; k < kc; k++) {
        VEC bk[2];
        for (int v = 0; v < nv; v++)
            bk[v] = V_LOAD(b + LANES * v);
        for (int i = 0; i < FF_MR; i++) {
            VEC aik = V_SET1(a[i]);
            for (int v = 0; v < nv; v++)
                acc[i][v] = V_FMADD(aik, bk[v], acc[i][v]);
        }
        a += FF_MR;
        b += NR;
    }
    MASK lanes[2] = {nv == 1 ? last : ALL_LANES, last};
    VEC bias[2] = {V_ZERO(), V_ZERO()}, sums[2] = {V_ZERO(), V_ZERO()};
    for (int v = 0; finish && v < nv; v++) {
        if (finish->bias)
            bias[v] = V_MASKZ_LOADU(lanes[v], finish->bias + LANES * v);
        if (finish->column_sums)
            sums[v] = V_MASKZ_LOADU(lanes[v], finish->column_sums + LANES * v);
    }
    for (int i = 0; i < FF_MR && i < mr; i++) {
        T *ci = c + (size_t)i * ldc;
        for (int v = 0; v < nv; v++) {
            VEC cv = acc[i][v];
            if (accumulate)
                cv = V_ADD(cv, V_MASKZ_LOADU(lanes[v], ci + LANES * v));
            if (!finish) {
                V_MASK_STOREU(ci + LANES * v, lanes[v], cv);
                continue;
            }
            if (finish->bias)
                cv = V_ADD(cv, bias[v]);
            if (finish->relu)
                cv = V_MASKZ_MOV(V_CMP_GT_ZERO(cv), cv);
            T *out = ci + LANES * v;
            if (finish->gated) {
                out = finish->gated + (size_t)i * finish->ldg + LANES * v;
                cv = V_MASKZ_MOV(V_CMP_GT_ZERO(V_MASKZ_LOADU(lanes[v], out)), cv);
            }
            if (finish->column_sums)
                sums[v] = V_ADD(sums[v], cv);
            V_MASK_STOREU(out, lanes[v], cv);
        }
    }
    for (int v = 0; finish && finish->column_sums && v < nv; v++)
        V_MASK_STOREU(finish->column_sums + LANES * v, lanes[v], sums[v]);
}

/* The tile's first mr rows and nr columns (1 <= nr <= NR). */
static AVX512 void FN(micro_kernel)(int mr, int nr, int kc, const T *a, const T *b, T *c, int ldc,
                                    int accumulate, const FN(tile_finish) *finish)
{
    int nv = (nr + LANES - 1) / LANES;
    MASK last = (MASK)(ALL_LANES >> (LANES * nv - nr));
    if (nv == 2)
        FN(tile_product)(2, mr, kc, a, b, c, ldc, accumulate, last, finish);
    else
        FN(tile_product)(1, mr, kc, a, b, c, ldc, accumulate, last, finish);
}

/* op(A)'s rows [0, mc) and columns [0, kc) into panels of FF_MR rows: panel p holds
 * element (p*FF_MR + i, k) at p*FF_MR*kc + k*FF_MR + i, zero past mc. op(A)'s element
 * (i, k) is a[i*rs + k*cs]. */
static AVX512 void FN(pack_a)(int mc, int kc, const T *a, size_t rs, size_t cs, T *dst)
{
    enum { PANELS = LANES / FF_MR };  /* panels a LANES x LANES tile spans */
    int i0 = 0;
    if (cs == 1) {               /* rows of A: PANELS panels at a time through square tiles */
        T tile[LANES * LANES] __attribute__((aligned(64)));
        int k_tiled = kc / LANES * LANES;
        for (; i0 + LANES <= mc; i0 += LANES, dst += (size_t)LANES * kc) {
            for (int k0 = 0; k0 < k_tiled; k0 += LANES) {
                TRANSPOSE_TILE(a + (size_t)i0 * rs + k0, rs, tile, LANES);
                for (int p = 0; p < PANELS; p++)
                    for (int k = 0; k < LANES; k++)
                        memcpy(dst + (size_t)p * FF_MR * kc + (size_t)(k0 + k) * FF_MR,
                               tile + LANES * k + FF_MR * p, FF_MR * sizeof(T));
            }
            for (int i = 0; i < LANES; i++)
                for (int k = k_tiled; k < kc; k++)
                    dst[(size_t)(i / FF_MR) * FF_MR * kc + k * FF_MR + i % FF_MR] = a[(size_t)(i0 + i) * rs + k];
        }
    }
    for (; i0 < mc; i0 += FF_MR, dst += (size_t)FF_MR * kc) {
        int mr = mc - i0 < FF_MR ? mc - i0 : FF_MR;
        if (cs == 1) {           /* rows of A: each row of the panel scattered down a column */
            for (int i = 0; i < mr; i++) {
                const T *row = a + (size_t)(i0 + i) * rs;
                for (int k = 0; k < kc; k++)
                    dst[k * FF_MR + i] = row[k];
            }
        } else {                 /* columns of A: each k's FF_MR values are contiguous */
            for (int k = 0; k < kc; k++) {
                const T *col = a + (size_t)k * cs + (size_t)i0 * rs;
                for (int i = 0; i < mr; i++)
                    dst[k * FF_MR + i] = col[i * rs];
            }
        }
        for (int k = 0; mr < FF_MR && k < kc; k++)
            for (int i = mr; i < FF_MR; i++)
                dst[k * FF_MR + i] = 0;
    }
}

/* op(B)'s rows [0, kc) and columns [0, nc) into panels of NR columns: panel q holds
 * element (k, q*NR + j) at q*NR*kc + k*NR + j, zero past nc. op(B)'s element (k, j) is
 * b[k*rs + j*cs]. */
static AVX512 void FN(pack_b)(int kc, int nc, const T *b, size_t rs, size_t cs, T *dst)
{
    for (int j0 = 0; j0 < nc; j0 += NR, dst += (size_t)NR * kc) {
        int nr = nc - j0 < NR ? nc - j0 : NR;
        int k_tiled = 0;
        if (cs == 1) {           /* rows of B: a row of the panel is a piece of a row */
            MASK lo = (MASK)(nr >= LANES ? ALL_LANES : ALL_LANES >> (LANES - nr));
            MASK hi = (MASK)(nr >= NR ? ALL_LANES : nr <= LANES ? 0 : ALL_LANES >> (NR - nr));
            for (int k = 0; k < kc; k++) {
                const T *row = b + (size_t)k * rs + j0;
                V_STORE(dst + k * NR, V_MASKZ_LOADU(lo, row));
                V_STORE(dst + k * NR + LANES, V_MASKZ_LOADU(hi, row + LANES));
            }
            continue;
        }
        /* B's columns are rows in memory (B = W^T): whole square tiles through
         * registers, one group of LANES rows of W at a time so the reads run along rows */
        if (nr == NR) {
            k_tiled = kc / LANES * LANES;
            for (int q = 0; q < NR; q += LANES)
                for (int k = 0; k < k_tiled; k += LANES)
                    TRANSPOSE_TILE(b + (size_t)(j0 + q) * cs + k, cs, dst + k * NR + q, NR);
        }
        for (int j = 0; j < NR; j++) {
            const T *col = b + (size_t)(j0 + j) * cs;
            for (int k = k_tiled; k < kc; k++)
                dst[k * NR + j] = j < nr ? col[(size_t)k * rs] : 0;
        }
    }
}

/* The packed op(B) block first (at most FF_NC columns, rounded up to whole panels, by
 * KC), then the packed op(A) block (FF_MC rows by KC); both as large as N and K need. */
static size_t FN(packed_b_elements)(int n, int k)
{
    size_t nc = n < FF_NC ? (size_t)(n + NR - 1) / NR * NR : FF_NC;
    return nc * (size_t)(k < KC ? k : KC);
}

static size_t FN(pack_bytes)(int max_n, int max_k)
{
    return (FN(packed_b_elements)(max_n, max_k) + (size_t)FF_MC * (max_k < KC ? max_k : KC)) * sizeof(T);
}

void FN(ff_gemm)(int trans_a, int trans_b, int M, int N, int K, const T *A, int lda,
                 const T *B, int ldb, T *C, int ldc, void *pack, const ff_gemm_finish *finish)
{
    size_t a_rs = trans_a ? 1 : (size_t)lda, a_cs = trans_a ? (size_t)lda : 1;
    size_t b_rs = trans_b ? 1 : (size_t)ldb, b_cs = trans_b ? (size_t)ldb : 1;
    /* a whole number of NR-wide panels (128 bytes each) before it: packed_a starts on a 64-byte line */
    T *packed_b = pack, *packed_a = packed_b + FN(packed_b_elements)(N, K);
    for (int jc = 0; jc < N; jc += FF_NC) {
        int nc = N - jc < FF_NC ? N - jc : FF_NC;
        int pc = 0;
        do {  /* at least once: with K = 0 the one block of k is empty, and C = 0 is finished */
            int kc = K - pc < KC ? K - pc : KC;
            int accumulate = pc > 0, last_block = pc + kc >= K;
            FN(pack_b)(kc, nc, B + pc * b_rs + jc * b_cs, b_rs, b_cs, packed_b);
            for (int ic = 0; ic < M; ic += FF_MC) {
                int mc = M - ic < FF_MC ? M - ic : FF_MC;
                FN(pack_a)(mc, kc, A + ic * a_rs + pc * a_cs, a_rs, a_cs, packed_a);
                for (int ir = 0; ir < mc; ir += FF_MR) {
                    int mr = mc - ir < FF_MR ? mc - ir : FF_MR;
                    const T *a = packed_a + (size_t)ir * kc;
                    for (int jr = 0; jr < nc; jr += NR) {
                        int nr = nc - jr < NR ? nc - jr : NR;
                        const T *b = packed_b + (size_t)jr * kc;
                        int i0 = ic + ir, j0 = jc + jr;
                        FN(tile_finish) at_tile, *tile_finish = NULL;
                        if (finish && last_block) {
                            at_tile.bias = finish->bias ? (const T *)finish->bias + j0 : NULL;
                            at_tile.relu = finish->relu;
                            at_tile.gated = finish->gated ? (T *)finish->gated + (size_t)i0 * finish->ldg + j0 : NULL;
                            at_tile.ldg = finish->ldg;
                            at_tile.column_sums = finish->column_sums ? (T *)finish->column_sums + j0 : NULL;
                            tile_finish = &at_tile;
                        }
                        FN(micro_kernel)(mr, nr, kc, a, b, C + (size_t)i0 * ldc + j0, ldc, accumulate, tile_finish);
                    }
                }
            }
            pc += kc;
        } while (pc < K);
    }
}

#undef NR
#undef FN
#undef FF_CAT
#undef FF_CAT_
