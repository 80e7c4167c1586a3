/* vector_log.h: log1p(r) for r >= 0 (a row's rest, a sum of exps) in plain arithmetic, so that a
 * loop over rows vectorises (libm's log1p is a call it cannot vectorise).
 *
 * u = 1 + r is split as 2^k f with f in [sqrt(1/2), sqrt(2)), and log f = log1p(m), m = f - 1
 * (exact), from s = m / (2 + m): log1p(m) = 2 atanh(s) = m - (m^2/2 - s (m^2/2 + R)) with
 * R = 2 s^2/3 + 2 s^4/5 + ..., Taylor to s^22 (truncation below 2e-18 relative), small terms summed
 * first as in fdlibm. The rounding error of 1 + r is added back as c / u (a product with 1 / u).
 * Measured against log1pl over 2e7 points from 2^-1074 to 2^40: at most 1.3 ulp (libm's log1p: 1).
 * NaN stays NaN, +inf gives +inf. */
#ifndef VECTOR_LOG_H
#define VECTOR_LOG_H

#include "vector_exp.h"

#define VLOG_SQRT_HALF_BITS 0x3fe6a09e667f3bcdULL /* the bits of sqrt(1/2) */
#define VLOG_TWO_TO_52 4503599627370496.0

/* given inverse = 1.0 / (1.0 + r), in double, which a caller may need too (a division costs as much
 * as the rest): c, at most half an ulp of u, then carries an error a further 2^-53 smaller */
static inline double log1p_of_nonnegative_given(double r, double inverse) {
    const double u = 1.0 + r;
    const double c = (u >= 2.0 ? 1.0 - (u - r) : r - (u - 1.0)) * inverse; /* 1 + r = u + c u */
    /* k: the exponent of u, one more when its significand is >= sqrt(2); u >= 1, so k >= 0 and
     * comes from a logical shift (AVX2 has no 64-bit arithmetic shift) */
    const uint64_t k = (vexp_to_bits(u) - VLOG_SQRT_HALF_BITS) >> 52;
    const double m = vexp_from_bits(vexp_to_bits(u) - (k << 52)) - 1.0;
    const double s = m / (2.0 + m), z = s * s;
    double q = 2.0 / 23.0; /* R = z q, q = sum_j 2 z^j / (2j + 3), j = 0..10 */
    q = VEXP_FMA(q, z, 2.0 / 21.0);
    q = VEXP_FMA(q, z, 2.0 / 19.0);
    q = VEXP_FMA(q, z, 2.0 / 17.0);
    q = VEXP_FMA(q, z, 2.0 / 15.0);
    q = VEXP_FMA(q, z, 2.0 / 13.0);
    q = VEXP_FMA(q, z, 2.0 / 11.0);
    q = VEXP_FMA(q, z, 2.0 / 9.0);
    q = VEXP_FMA(q, z, 2.0 / 7.0);
    q = VEXP_FMA(q, z, 2.0 / 5.0);
    q = VEXP_FMA(q, z, 2.0 / 3.0);
    const double half_square = 0.5 * m * m;
    const double log_f = m - (half_square - s * (half_square + z * q));
    /* (double)k through 2^52 + k (k < 2^11): AVX2 has no int64 to double conversion */
    const double dk = vexp_from_bits(vexp_to_bits(VLOG_TWO_TO_52) | k) - VLOG_TWO_TO_52;
    const double result = dk * VEXP_LN2_HI + (log_f + (dk * VEXP_LN2_LO + c));
    return r < INFINITY ? result : r; /* NaN and +inf are their own answers */
}

static inline double log1p_of_nonnegative(double r) { return log1p_of_nonnegative_given(r, 1.0 / (1.0 + r)); }

#endif
