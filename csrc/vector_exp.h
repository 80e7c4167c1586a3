/* vector_exp.h: exp(d) for d <= 0 (a logit minus its row max) in plain arithmetic, so that the
 * compiler vectorises the loops that call it (libm's exp is a call it cannot vectorise).
 *
 * Cody-Waite reduction d = k ln2 + r with |r| <= ln2 / 2 (ln2 split in two so k * LN2_HI is exact),
 * exp(r) = 1 + r q with q a degree-10 minimax polynomial (exp(r) of degree 11; the degree-13 Taylor
 * polynomial before took two more FMAs, 9-10% of float16's and the baseline build's float64 time at
 * 8192x1000 on Zen 3), and 2^k applied in two halves so that results down to the smallest subnormal
 * are right. Measured against quad precision over 3e7 points in [-750, 0] (a third of them in [-0.35,
 * 0]): at most 1.16 ulp, 1.00 with FMA, as with the Taylor polynomial. NaN stays NaN; d = -inf gives
 * 0. The same reduction gives expm1 without its cancellation near 0 (for the softcap's tanh): at
 * most 2.04 ulp by that measure, 1.73 with FMA (worst near d = -0.35). With FMA (AVX2, AVX-512) the
 * last bits can differ from the baseline build's. */
#ifndef VECTOR_EXP_H
#define VECTOR_EXP_H

#include <stdint.h>
#include <string.h>

#define VEXP_LOG2E 1.4426950408889634
#define VEXP_LN2_HI 6.93147180369123816490e-01 /* fdlibm's: 32 trailing zero bits */
#define VEXP_LN2_LO 1.90821492927058770002e-10
#define VEXP_ROUND 6755399441055744.0 /* 1.5 * 2^52: adding it rounds to an integer, kept in the low bits */
#define VEXP_FLOOR (-1100.0)           /* below the smallest subnormal; keeps k in range */

/* a * b + c, fused where the instruction set has it (the build turns off implicit contraction) */
#if defined(__FMA__) || defined(__aarch64__)
#define VEXP_FMA(a, b, c) __builtin_fma(a, b, c)
#else
#define VEXP_FMA(a, b, c) ((a) * (b) + (c))
#endif

static inline double vexp_from_bits(uint64_t bits) {
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline uint64_t vexp_to_bits(double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* d = k ln2 + r, |r| <= ln2 / 2, and exp(r) = 1 + r q */
typedef struct {
    double r, q;
    int64_t k;
} vexp_parts;

static inline vexp_parts vexp_reduce(double d) {
    d = d < VEXP_FLOOR ? VEXP_FLOOR : d; /* NaN compares false and passes through */
    const double shifted = d * VEXP_LOG2E + VEXP_ROUND;
    const double k = shifted - VEXP_ROUND;
    const double r = (d - k * VEXP_LN2_HI) - k * VEXP_LN2_LO;
    /* q = (exp(r) - 1) / r by its degree-10 minimax polynomial for the relative error over |r| <=
     * 0.3467 (a Remez fit at 60 digits, each coefficient then rounded to double: within 2.1e-17) */
    double q = 2.5052096319809795e-08;
    q = VEXP_FMA(q, r, 2.7626313079431784e-07);
    q = VEXP_FMA(q, r, 2.7557414929424058e-06);
    q = VEXP_FMA(q, r, 2.480150448152141e-05);
    q = VEXP_FMA(q, r, 0.0001984126970717428);
    q = VEXP_FMA(q, r, 0.0013888888932353767);
    q = VEXP_FMA(q, r, 0.008333333333398021);
    q = VEXP_FMA(q, r, 0.041666666666573635);
    q = VEXP_FMA(q, r, 0.16666666666666563);
    q = VEXP_FMA(q, r, 0.5000000000000006);
    q = VEXP_FMA(q, r, 1.0);
    return (vexp_parts){r, q, (int64_t)(vexp_to_bits(shifted) - vexp_to_bits(VEXP_ROUND))};
}

/* 2^k as two normal factors (k >= -1588 here), applied one after the other so that a subnormal
 * result is rounded once */
static inline double vexp_times_power_of_2(double value, int64_t k) {
    const int64_t low = k >> 1, high = k - low;
    return value * vexp_from_bits((uint64_t)(low + 1023) << 52) * vexp_from_bits((uint64_t)(high + 1023) << 52);
}

static inline double exp_of_nonpositive(double d) {
    const vexp_parts parts = vexp_reduce(d);
    return vexp_times_power_of_2(VEXP_FMA(parts.r, parts.q, 1.0), parts.k);
}

/* exp(d), d <= 0, as a term of a sum of at least 1 (a row's 1 + rest): d below -700 is taken as
 * -700 (about 1e-304, which no such sum can tell from less), so that no step is subnormal (masked
 * logits of -inf made exp_of_nonpositive's subnormal products: the logsumexp of log-probabilities
 * half masked took 1.7-2x the time of unmasked ones) and 2^k is one normal factor */
static inline double exp_of_nonpositive_term(double d) {
    const vexp_parts parts = vexp_reduce(d < -700.0 ? -700.0 : d); /* NaN passes */
    return VEXP_FMA(parts.r, parts.q, 1.0) * vexp_from_bits((uint64_t)(parts.k + 1023) << 52);
}

/* exp(d) and exp(d) - 1 for d <= 0 from one reduction, the latter without the cancellation near 0
 * (r q itself when k = 0). */
typedef struct {
    double exp, expm1;
} vexp_pair;

static inline vexp_pair exp_and_expm1_of_nonpositive(double d) {
    const vexp_parts parts = vexp_reduce(d);
    const double e = vexp_times_power_of_2(VEXP_FMA(parts.r, parts.q, 1.0), parts.k);
    return (vexp_pair){e, parts.k == 0 ? parts.r * parts.q : e - 1.0};
}

/* The float version, for float logits: exp(hi + lo) for hi <= 0 and a correction |lo| <= ulp(hi) / 2
 * (the rounding error of a difference, see exp_difference_in_float), in float arithmetic (twice the
 * lanes of double). The same reduction with lo added to the small part, k LN2_LO, so that r is
 * rounded once; a degree-6 polynomial fitted for relative error on |r| <= ln2 / 2 (Lawson's
 * iterations; below 4e-9 relative with these float coefficients); 2^k in two normal halves so that
 * a subnormal result is rounded once. */
#define VEXPF_LOG2E 1.44269504f
#define VEXPF_LN2_HI 0.693145751953125f /* 16 significant bits: k * LN2_HI is exact */
#define VEXPF_LN2_LO 1.42860677e-06f
#define VEXPF_ROUND 12582912.0f /* 1.5 * 2^23 */
#define VEXPF_FLOOR (-104.0f)   /* exp(-104) rounds to 0 in float */
/* Differences below this may give subnormal exps (exp(-87.34) is FLT_MIN): the kernels' test for
 * rows that take careful exps (careful_exps, group_max) */
#define VEXPF_SUBNORMAL_BELOW (-87.0f)
/* What a difference below VEXPF_FLOOR is replaced with: its 2^k (k = -167) in two normal halves
 * whose product lies far below the subnormals. Intel's multipliers round such a product to 0 at full
 * speed, but one near the subnormals (2^-150 from the floor itself) takes a microcode assist of about
 * 45 ns: float32 rows with a tenth of their logits -inf ran 3-4x slower on AVX2. */
#define VEXPF_ZERO_AT (-116.0f)
/* exp(r) = 1 + r (1 + r (C2 + r (C3 + r (C4 + r (C5 + r C6))))) */
#define VEXPF_C2 4.99999940e-01f
#define VEXPF_C3 1.66665211e-01f
#define VEXPF_C4 4.16683927e-02f
#define VEXPF_C5 8.36874451e-03f
#define VEXPF_C6 1.38145278e-03f

#if defined(__FMA__) || defined(__aarch64__)
#define VEXPF_FMA(a, b, c) __builtin_fmaf(a, b, c)
#else
#define VEXPF_FMA(a, b, c) ((a) * (b) + (c))
#endif

static inline float vexpf_from_bits(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline uint32_t vexpf_to_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* value 2^k for k >= -250, rounded once also where the result is subnormal: in two normal halves,
 * or in_double (a constant; for results that may be subnormal) in double, whose conversion rounds
 * once without the microcode assist Intel's multipliers take for a subnormal result (about 45 ns
 * per vector instruction) */
static inline float vexpf_times_power_of_2(float value, int32_t k, int in_double) {
    if (in_double) return (float)((double)value * vexp_from_bits((uint64_t)(k + 1023) << 52));
    const int32_t low = k >> 1, high = k - low; /* each >= -125: 2^each is normal */
    return value * vexpf_from_bits((uint32_t)(low + 127) << 23) * vexpf_from_bits((uint32_t)(high + 127) << 23);
}

static inline float expf_of_nonpositive_sum(float hi, float lo, int in_double) {
    const int underflows = hi < VEXPF_FLOOR; /* then so does the result; lo may be NaN (hi = -inf) */
    const float d = underflows ? VEXPF_ZERO_AT : hi; /* NaN passes through */
    lo = underflows ? 0.0f : lo;
    const float shifted = VEXPF_FMA(d, VEXPF_LOG2E, VEXPF_ROUND);
    const float k = shifted - VEXPF_ROUND;
    const float r = VEXPF_FMA(-k, VEXPF_LN2_HI, d) + VEXPF_FMA(-k, VEXPF_LN2_LO, lo); /* exact + tiny */
    float p = VEXPF_C6;
    p = VEXPF_FMA(p, r, VEXPF_C5);
    p = VEXPF_FMA(p, r, VEXPF_C4);
    p = VEXPF_FMA(p, r, VEXPF_C3);
    p = VEXPF_FMA(p, r, VEXPF_C2);
    p = VEXPF_FMA(p, r, 1.0f);
    p = VEXPF_FMA(p, r, 1.0f);
    return vexpf_times_power_of_2(p, (int32_t)(vexpf_to_bits(shifted) - vexpf_to_bits(VEXPF_ROUND)), in_double);
}

#endif
