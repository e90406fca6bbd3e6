/* bfloat16, the all-reduce's compressed wire format (fastfit/_allreduce.py):
 * the top 16 bits of a float32, so every bfloat16 widens to float32 exactly.
 * Rounding is to nearest, ties to even; NaN stays NaN; values beyond the
 * largest finite bfloat16 round to infinity. */
#ifndef FASTFIT_BFLOAT16_H
#define FASTFIT_BFLOAT16_H

#include <stddef.h>
#include <stdint.h>

/* out[i] = x[i] rounded to bfloat16 */
void ff_bf16_encode(const float *x, uint16_t *out, size_t n);
/* out[i] = h[i] widened to float32 */
void ff_bf16_decode(const uint16_t *h, float *out, size_t n);
/* acc[i] += h[i] widened */
void ff_bf16_add(float *acc, const uint16_t *h, size_t n);
/* out[i] = a[i] widened + b[i] widened */
void ff_bf16_sum(float *out, const uint16_t *a, const uint16_t *b, size_t n);

#endif
