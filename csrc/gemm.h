/* fastfit's own float32 and float64 matrix products, for x86-64 CPUs with AVX-512.
 *
 * Row-major C (M, N) = op(A) op(B), where op(X) is X transposed when trans_x is set;
 * C is only written (BLAS's beta = 0). It does what sgemm and dgemm do with OpenBLAS's
 * blocked layout, with blocks sized for a training step's products, where one
 * dimension is the batch; measured against SciPy's OpenBLAS in docs/design.md,
 * "The products". Each entry of C is the sum over k in blocks of FF_KC_F32 (or
 * FF_KC_F64), each block summed in order of k, so it does not depend on how C is cut
 * into shares.
 */
#ifndef FASTFIT_GEMM_H
#define FASTFIT_GEMM_H

#include <stddef.h>

/* The blocking: a tile of C is FF_MR rows by two vectors (32 floats or 16 doubles: 16
 * vector registers); op(B) is packed FF_KC_* rows by FF_NC columns at a time, op(A)
 * FF_MC rows by FF_KC_* at a time, so a float64 block has the bytes of a float32 one.
 * Measured on the medium and large networks' products, these ran 2-4% faster than 256
 * by 1024 in float32 (docs/design.md, "The products"). */
#define FF_MR 8
#define FF_KC_F32 512
#define FF_KC_F64 256
#define FF_MC 128
#define FF_NC 2048

/* What a product does to C's entries once they are final (each tile after its last block
 * of k, while it is still in registers), in this order; every field may be NULL (0): the
 * layer's element-wise passes, fused into the product (docs/design.md, "The products").
 * Pointers are of the product's type and start at C's first column (and row, for gated). */
typedef struct {
    const void *bias;   /* add bias[j] to each entry of column j */
    int relu;           /* then keep entries > 0 and make the others 0 (NaN included) */
    void *gated;        /* write the entries here (row length ldg) instead of into C, each kept only
                           where the entry it overwrites is > 0, else 0: dL/dF = 1[H > 0] dL/dH
                           written over H. C then only holds partial sums over k (K > one block),
                           and must not overlap gated. */
    int ldg;
    void *column_sums;  /* add each column's entries, row after row in order, to column_sums[j] */
} ff_gemm_finish;

/* Bytes of packing buffer that one call of either product with N <= max_n and K <= max_k
 * needs; the buffer must start on a 64-byte line (one per thread that calls at once). */
size_t ff_gemm_pack_bytes(int max_n, int max_k);

/* 1 when this build has the AVX-512 products and the CPU and the OS run them; else 0. */
int ff_gemm_usable(void);

/* C (M, N) = op(A) op(B), then `finish` (NULL: nothing); lda, ldb, ldc are the row-major
 * row lengths. Only call them when ff_gemm_usable() is 1. */
void ff_gemm_f32(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                 const float *B, int ldb, float *C, int ldc, void *pack, const ff_gemm_finish *finish);
void ff_gemm_f64(int trans_a, int trans_b, int M, int N, int K, const double *A, int lda,
                 const double *B, int ldb, double *C, int ldc, void *pack, const ff_gemm_finish *finish);

#endif
