/* exp(x) for float32 arguments x <= 0, as an inline function, so that the softmax's
 * loop over a block of exponentials compiles into vector code (the C library's expf
 * is a call per element). Within one unit in the last place of the exact value over
 * [-87.33, 0] (checked against double-precision exp at every fourth float there);
 * NumPy's float32 exp, the reference's, is as close, and the two agree far inside
 * the float32 tolerance.
 *
 * exp(x) = 2^n exp(r), with n the integer nearest x / ln 2 and |r| <= ln(2) / 2;
 * exp(r) is a polynomial of degree 7 (Cephes's coefficients), and ln 2 is split into
 * a part exact in float and a correction so r keeps its low bits. n comes from the
 * float rounding trick rather than a float-to-integer conversion, which GCC would
 * not vectorize here. Below ln(FLT_MIN) the result is 0 (the exact value would be
 * subnormal), and a NaN stays NaN. */
#ifndef FASTFIT_EXPF_H
#define FASTFIT_EXPF_H

#include <stdint.h>
#include <string.h>

static inline float ff_exp_nonpositive_f32(float x)
{
    const float lowest = -87.33654f;           /* ln(FLT_MIN) */
    const float round_magic = 12582912.0f;     /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x > lowest ? x : lowest;        /* a NaN too, so everything below stays finite */
    float shifted = xc * 1.44269504088896341f + round_magic;  /* x / ln 2, rounded, in the low bits */
    float n = shifted - round_magic;
    uint32_t shifted_bits;
    memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
    float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = (p * r) * r + r + 1.0f;
    /* 2^n as a float: n (in [-126, 0]) from the low bits of shifted, plus the exponent bias */
    uint32_t bits = (shifted_bits - 0x4B400000u + 127u) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float below = x != x ? x : 0.0f;           /* NaN in, NaN out; else 0 under ln(FLT_MIN) */
    return x > lowest ? p * two_n : below;
}

#endif
