/* The three products of a layer for batches of a few rows, for one floating type;
 * kernels.c includes this file twice (T = float / double).
 *
 * For a handful of rows BLAS spends most of its time packing W into its blocked
 * layout and zeroing the output (beta = 0) rather than multiplying. These loops
 * read W once per product and write each output once. Sums over an index that
 * is contiguous in memory keep FF_LANES partial sums, added in a fixed order at
 * the end, so the compiler vectorizes them without reassociating anything:
 * the result is deterministic, and within rounding of BLAS's. */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)

/* sum_j a[j] * b[j] over n entries. */
static inline T FN(dot)(const T *restrict a, const T *restrict b, size_t n)
{
    T part[FF_LANES] = {0};
    size_t j = 0;
    for (; j + FF_LANES <= n; j += FF_LANES)
        for (size_t l = 0; l < FF_LANES; l++)
            part[l] += a[j + l] * b[j + l];
    T sum = 0;
    for (size_t l = 0; l < FF_LANES; l++)
        sum += part[l];
    for (; j < n; j++)
        sum += a[j] * b[j];
    return sum;
}

/* F (B, d_out) = H (B, d_in) W^T; W is (d_out, d_in). */
FF_CLONES void FN(ff_small_forward)(const T *restrict H, size_t B, const T *restrict W,
                                    size_t d_in, size_t d_out, T *restrict F)
{
    for (size_t i = 0; i < d_out; i++)
        for (size_t r = 0; r < B; r++)
            F[r * d_out + i] = FN(dot)(W + i * d_in, H + r * d_in, d_in);
}

/* dW (d_out, d_in) = dF^T (d_out, B) H (B, d_in): one pass, each entry written once. */
FF_CLONES void FN(ff_small_weight_grad)(const T *restrict dF, const T *restrict H, size_t B,
                                        size_t d_in, size_t d_out, T *restrict dW)
{
    for (size_t i = 0; i < d_out; i++) {
        T *restrict row = dW + i * d_in;
        const T d0 = dF[i];
        for (size_t j = 0; j < d_in; j++)
            row[j] = d0 * H[j];
        for (size_t r = 1; r < B; r++) {
            const T dr = dF[r * d_out + i];
            const T *restrict h = H + r * d_in;
            for (size_t j = 0; j < d_in; j++)
                row[j] += dr * h[j];
        }
    }
}

/* dH (B, d_in) = dF (B, d_out) W (d_out, d_in): rows of W scaled and added. */
FF_CLONES void FN(ff_small_input_grad)(const T *restrict dF, const T *restrict W, size_t B,
                                       size_t d_in, size_t d_out, T *restrict dH)
{
    for (size_t r = 0; r < B; r++) {
        T *restrict out = dH + r * d_in;
        const T *restrict d = dF + r * d_out;
        for (size_t j = 0; j < d_in; j++)
            out[j] = d[0] * W[j];
        for (size_t i = 1; i < d_out; i++) {
            const T di = d[i];
            const T *restrict w = W + i * d_in;
            for (size_t j = 0; j < d_in; j++)
                out[j] += di * w[j];
        }
    }
}

#undef FN
#undef FF_CAT
#undef FF_CAT_
