/* fastfit's own product for one floating type; gemm.c includes this file twice, with
 * T = float (16 lanes a vector, SUFFIX f32) and T = double (8 lanes, SUFFIX f64), and
 * the vector operations V_* for that type. The layout and the loops are described at
 * the top of gemm.c; a tile of C is FF_MR rows by NR = 2 * LANES columns. */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)
#define NR (2 * LANES)

/* The tile c (FF_MR rows of ldc) = (or += when accumulate) the a panel (kc x FF_MR,
 * k-major) times the b panel (kc x NR, k-major), for nv of the tile's two vectors per
 * row, the last one's lanes under `last`. */
static inline __attribute__((always_inline)) AVX512 void FN(tile_product)(
    int nv, int kc, const T *restrict a, const T *restrict b, T *restrict c, int ldc,
    int accumulate, MASK last)
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
    for (int i = 0; i < FF_MR; i++) {
        T *ci = c + (size_t)i * ldc;
        for (int v = 0; v < nv; v++) {
            MASK lanes = v == nv - 1 ? last : ALL_LANES;
            if (accumulate)
                acc[i][v] = V_ADD(acc[i][v], V_MASKZ_LOADU(lanes, ci + LANES * v));
            V_MASK_STOREU(ci + LANES * v, lanes, acc[i][v]);
        }
    }
}

/* The tile's first nr columns (1 <= nr <= NR). */
static AVX512 void FN(micro_kernel)(int nr, int kc, const T *a, const T *b, T *c, int ldc, int accumulate)
{
    int nv = (nr + LANES - 1) / LANES;
    MASK last = (MASK)(ALL_LANES >> (LANES * nv - nr));
    if (nv == 2)
        FN(tile_product)(2, kc, a, b, c, ldc, accumulate, last);
    else
        FN(tile_product)(1, kc, a, b, c, ldc, accumulate, last);
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
                 const T *B, int ldb, T *C, int ldc, void *pack)
{
    size_t a_rs = trans_a ? 1 : (size_t)lda, a_cs = trans_a ? (size_t)lda : 1;
    size_t b_rs = trans_b ? 1 : (size_t)ldb, b_cs = trans_b ? (size_t)ldb : 1;
    /* a whole number of NR-wide panels (128 bytes each) before it: packed_a starts on a 64-byte line */
    T *packed_b = pack, *packed_a = packed_b + FN(packed_b_elements)(N, K);
    if (K == 0) {
        for (int i = 0; i < M; i++)
            memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(T));
        return;
    }
    for (int jc = 0; jc < N; jc += FF_NC) {
        int nc = N - jc < FF_NC ? N - jc : FF_NC;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC;
            int accumulate = pc > 0;
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
                        T *c = C + (size_t)(ic + ir) * ldc + jc + jr;
                        if (mr == FF_MR) {
                            FN(micro_kernel)(nr, kc, a, b, c, ldc, accumulate);
                            continue;
                        }
                        /* the last rows: through a full tile on the stack */
                        T tile[FF_MR * NR] __attribute__((aligned(64))) = {0};
                        for (int i = 0; accumulate && i < mr; i++)
                            memcpy(tile + i * NR, c + (size_t)i * ldc, nr * sizeof(T));
                        FN(micro_kernel)(nr, kc, a, b, tile, NR, accumulate);
                        for (int i = 0; i < mr; i++)
                            memcpy(c + (size_t)i * ldc, tile + i * NR, nr * sizeof(T));
                    }
                }
            }
        }
    }
}

#undef NR
#undef FN
#undef FF_CAT
#undef FF_CAT_
