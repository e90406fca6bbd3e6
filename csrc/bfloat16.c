#include "bfloat16.h"

#include <string.h>

#include "clones.h"

static FF_INLINE uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static FF_INLINE float widen(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Adding 0x7FFF plus the lowest kept bit carries into the kept half exactly when
 * the dropped half is above one half, or equal to it with the kept half odd. A
 * NaN's payload could carry into the exponent and become an infinity, so NaN is
 * written as the canonical quiet NaN instead. */
static FF_INLINE uint16_t rounded(float x)
{
    uint32_t u = bits_of(x);
    uint16_t r = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return x != x ? (uint16_t)0x7FC0 : r;
}

FF_CLONES void ff_bf16_encode(const float *restrict x, uint16_t *restrict out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = rounded(x[i]);
}

FF_CLONES void ff_bf16_decode(const uint16_t *restrict h, float *restrict out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = widen(h[i]);
}

FF_CLONES void ff_bf16_add(float *restrict acc, const uint16_t *restrict h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] += widen(h[i]);
}

FF_CLONES void ff_bf16_sum(float *restrict out, const uint16_t *restrict a, const uint16_t *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = widen(a[i]) + widen(b[i]);
}
