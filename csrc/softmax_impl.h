/* The softmax cross-entropy loss and its gradient for one floating type; kernels.c
 * includes this file twice (T = float / double, EXP_NONPOSITIVE the exp it uses). */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)

/* Rows are taken this many at a time: their shifted logits are exponentiated as one
 * block, which the compiler turns into vector code, where a row of ten classes alone
 * would not fill a vector. */
#define FF_SOFTMAX_BLOCK_ROWS 64

FF_CLONES double FN(ff_softmax_xent)(const T *out, size_t rows, size_t cols, const ptrdiff_t *labels,
                                     T scale, T *grad, ptrdiff_t *hits)
{
    double total = 0.0;
    T z_label[FF_SOFTMAX_BLOCK_ROWS];
    for (size_t i0 = 0; i0 < rows; i0 += FF_SOFTMAX_BLOCK_ROWS) {
        size_t n = rows - i0 < FF_SOFTMAX_BLOCK_ROWS ? rows - i0 : FF_SOFTMAX_BLOCK_ROWS;
        /* z_i = f_i - max_j f_ij (no overflow for any finite logits), over the gradient;
         * grad may be out itself, so each row is read before it is written */
        for (size_t r = 0; r < n; r++) {
            const T *row = out + (i0 + r) * cols;
            T *g = grad + (i0 + r) * cols;
            T row_max = row[0];
            size_t j_max = 0;
            for (size_t j = 1; j < cols; j++)
                if (row[j] > row_max) {
                    row_max = row[j];
                    j_max = j;
                }
            ptrdiff_t label = labels[i0 + r];
            *hits += (ptrdiff_t)j_max == label;
            z_label[r] = row[label] - row_max;
            for (size_t j = 0; j < cols; j++)
                g[j] = row[j] - row_max;
        }
        T *block = grad + i0 * cols;
        for (size_t k = 0; k < n * cols; k++)
            block[k] = EXP_NONPOSITIVE(block[k]);
        /* l_i = log(sum_j e^z_ij) - z_i[y_i]; dl_i/df_i = softmax(f_i) - onehot(y_i) */
        for (size_t r = 0; r < n; r++) {
            T *g = block + r * cols;
            T s = 0;
            for (size_t j = 0; j < cols; j++)
                s += g[j];
            total += (double)(LOG(s) - z_label[r]);
            T normalise = scale / s;
            for (size_t j = 0; j < cols; j++)
                g[j] *= normalise;
            g[labels[i0 + r]] -= scale;
        }
    }
    return total;
}

#undef FF_SOFTMAX_BLOCK_ROWS
#undef FN
#undef FF_CAT
#undef FF_CAT_
