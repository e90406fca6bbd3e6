/* fastfit's own float32 matrix product, for x86-64 CPUs with AVX-512.
 *
 * Row-major C (M, N) = op(A) op(B), where op(X) is X transposed when trans_x is set;
 * C is only written (BLAS's beta = 0). It does what sgemm does with OpenBLAS's
 * blocked layout, with blocks sized for a training step's products, where one
 * dimension is the batch; measured against SciPy's OpenBLAS in docs/design.md,
 * "The products". Each entry of C is the sum over k in blocks of FF_KC, each block
 * summed in order of k, so it does not depend on how C is cut into shares.
 */
#ifndef FASTFIT_GEMM_H
#define FASTFIT_GEMM_H

#include <stddef.h>

/* The blocking: a tile of C is FF_MR rows by FF_NR columns (16 vector registers
 * of 16 floats); op(B) is packed FF_KC rows by FF_NC columns at a time, op(A) FF_MC
 * rows by FF_KC at a time. Measured on the medium and large networks' products, these
 * ran 2-4% faster than 256 by 1024 (docs/design.md, "The products"). */
#define FF_MR 8
#define FF_NR 32
#define FF_KC 512
#define FF_MC 128
#define FF_NC 2048

/* Floats of packing buffer that one call with N <= max_n and K <= max_k needs; the
 * buffer must start on a 64-byte line (one per thread that calls at once). */
size_t ff_sgemm_pack_floats(int max_n, int max_k);

/* 1 when this build has the AVX-512 product and the CPU and the OS run it; else 0. */
int ff_sgemm_usable(void);

/* C (M, N) = op(A) op(B); lda, ldb, ldc are the row-major row lengths. Only call it
 * when ff_sgemm_usable() is 1. */
void ff_sgemm(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, float *C, int ldc, float *pack);

#endif
