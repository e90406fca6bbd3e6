/* The element-wise passes of the forward and backward passes for one floating
 * type; kernels.c includes this file twice (T = float / double). */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)

/* Whether all n values of x are finite, read from their bits: no exponent field is all
 * ones. An integer running maximum, which the compiler vectorizes; a floating-point test's
 * reduction would need -ffast-math. (The check after a run of steps: see kernels.c.) */
FF_CLONES static int FN(finite_range)(const T *x, size_t n)
{
    T_BITS top = 0;
    for (size_t i = 0; i < n; i++) {
        T_BITS bits;
        memcpy(&bits, x + i, sizeof bits);
        T_BITS exponent = bits & T_EXPONENT_BITS;
        top = exponent > top ? exponent : top;
    }
    return top != T_EXPONENT_BITS;
}

/* The products of a one-row batch, where a general product's blocking only costs
 * (see ff_outer and ff_row_times in kernels.h). */
FF_CLONES void FN(ff_outer)(const T *a, size_t a_stride, const T *restrict b, size_t m, size_t n,
                            T *restrict c, size_t ldc)
{
    for (size_t i = 0; i < m; i++) {
        const T a_i = a[i * a_stride];
        T *restrict c_row = c + i * ldc;
        for (size_t j = 0; j < n; j++)
            c_row[j] = a_i * b[j];
    }
}

FF_CLONES void FN(ff_row_times)(const T *restrict a, const T *restrict b, size_t ldb, size_t k, size_t n,
                                T *restrict c)
{
    for (size_t j = 0; j < n; j++)
        c[j] = a[0] * b[j];
    for (size_t p = 1; p < k; p++) {
        const T a_p = a[p];
        const T *restrict b_row = b + p * ldb;
        for (size_t j = 0; j < n; j++)
            c[j] += a_p * b_row[j];
    }
}

/* F_k += b_k row by row, then H_{k+1} = relu(F_k) in place (hidden layers). */
FF_CLONES void FN(ff_bias_act)(T *restrict f, const T *restrict bias, size_t rows, size_t cols,
                               int relu)
{
    for (size_t i = 0; i < rows; i++) {
        T *restrict row = f + i * cols;
        if (relu) {
            for (size_t j = 0; j < cols; j++) {
                T z = row[j] + bias[j];
                row[j] = z > 0 ? z : (T)0;
            }
        } else {
            for (size_t j = 0; j < cols; j++)
                row[j] += bias[j];
        }
    }
}

/* dL/db = column sums of dL/dF. */
FF_CLONES void FN(ff_colsum)(const T *restrict d, size_t rows, size_t cols, T *restrict db)
{
    for (size_t j = 0; j < cols; j++)
        db[j] = 0;
    for (size_t i = 0; i < rows; i++) {
        const T *restrict row = d + i * cols;
        for (size_t j = 0; j < cols; j++)
            db[j] += row[j];
    }
}

/* dL/dF_{k-1} = 1[H_k > 0] * dL/dH_k written over H_k, with dL/db_{k-1} as its column sums. */
FF_CLONES void FN(ff_mask_colsum)(const T *restrict dh, T *restrict h, size_t rows, size_t cols,
                                  T *restrict db)
{
    for (size_t j = 0; j < cols; j++)
        db[j] = 0;
    for (size_t i = 0; i < rows; i++) {
        const T *restrict dh_row = dh + i * cols;
        T *restrict h_row = h + i * cols;
        for (size_t j = 0; j < cols; j++) {
            T df = h_row[j] > 0 ? dh_row[j] : (T)0;
            h_row[j] = df;
            db[j] += df;
        }
    }
}

/* d = 1[h > 0] * d in place, over n entries: dL/dF_{k-1} from dL/dH_k where H_k must
 * stay as it is (the distributed fit's factor exchange still sends and multiplies it). */
FF_CLONES void FN(ff_relu_mask)(const T *restrict h, T *restrict d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = h[i] > 0 ? d[i] : (T)0;
}

/* at = a^T for a (rows, cols) block of a matrix with row stride lda, into at (row
 * stride ldat): the layer input the forward product reads in BLAS's other layout (see
 * forward_product in fastfit/_core.pyx). In 16 x 16 tiles, so each tile's reads and
 * writes stay within a few cache lines. */
FF_CLONES static void FN(transpose_block)(const T *restrict a, size_t lda, size_t rows, size_t cols,
                                         T *restrict at, size_t ldat)
{
    for (size_t i0 = 0; i0 < rows; i0 += 16) {
        size_t i1 = i0 + 16 < rows ? i0 + 16 : rows;
        for (size_t j0 = 0; j0 < cols; j0 += 16) {
            size_t j1 = j0 + 16 < cols ? j0 + 16 : cols;
            for (size_t i = i0; i < i1; i++)  /* read along a's rows: twice as fast as along at's */
                for (size_t j = j0; j < j1; j++)
                    at[j * ldat + i] = a[i * lda + j];
        }
    }
}

#undef FN
#undef FF_CAT
#undef FF_CAT_
