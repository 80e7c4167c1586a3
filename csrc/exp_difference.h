/* exp_difference.h: exp(x - m) for a logit x and its row max m, accurate to the last bit that matters.
 *
 * The softmax of x_k is exp(x_k - m) / sum. If x_k - m were rounded first, its rounding error
 * |x_k - m| * eps would become a relative error of exp; for a spread of 100 that is 100 ulp. */
#ifndef EXP_DIFFERENCE_H
#define EXP_DIFFERENCE_H

#include <math.h>

#include "vector_exp.h"

/* float logits: the difference of two floats is exact in double (or off by 2^-53 relative), so plain
 * double arithmetic already gives exp of the exact difference. */
static inline double exp_difference_of_floats(double x, double m) { return exp_of_nonpositive(x - m); }

/* float logits in float arithmetic (twice the vector lanes): x - m split exactly into hi + lo
 * (TwoSum in float), then exp(hi + lo) by expf_of_nonpositive_sum: at most 0.88 float ulp with FMA,
 * 1.15 without (measured against expl over 2e7 differences up to 110, logits up to 1e6). Used for
 * float32 logits, whose contract has room for it; half precision, rounded bit-exactly, keeps the
 * double. */
static inline float exp_difference_in_float(float x, float m, int in_double) {
    const float hi = x - m;
    const float x_part = hi + m;
    const float lo = (x - x_part) - (m + (hi - x_part));
    return expf_of_nonpositive_sum(hi, lo, in_double);
}

/* The same exps for the float logits x <= m of one row with |m| < EXPF_ROW_LIMIT, with FMA (AVX2,
 * AVX-512), in 14 operations instead of 21: the difference taken in base 2 by FMAs, whose products
 * are exact, where TwoSum took six operations to split it exactly. With s = m log2(e) split into
 * s_hi (s rounded down to a 2^-8 grid) + s_lo, and x below m - 104 (exp rounds to 0 there) taken as
 * m - 116 (see VEXPF_ZERO_AT):
 *   d = x LOG2E_HI - s_hi, k = round(d),
 *   r = (x LOG2E_HI - (k + s_hi)) + (x LOG2E_LO - s_lo) = (x - m) log2(e) - k, |r| <= 0.505,
 * where k + s_hi is exact (|k + s_hi| < 2^15 on the 2^-8 grid) and so is the product in the first
 * FMA, which rounds once; then 2^r by the polynomial of expf_of_nonpositive_sum in r ln 2 and 2^k
 * as there. Measured against expl over 3.2e8 differences: at most 1.13 float ulp (the two roundings
 * of r; exp_difference_in_float 0.91 by the same measure). Not shift-invariant as that is: x + c and
 * m + c, both exact, may give exps a bit apart. Without FMA, expf_row_of declines every row. */
#define EXPF_ROW_LIMIT 0x1p14f
#define EXP2F_LOG2E_HI 1.442695e+00f /* log2(e) rounded to float ... */
#define EXP2F_LOG2E_LO 1.925963e-08f /* ... and the rest */
/* 2^r = 1 + r (C1 + r (C2 + ...)), C_j = VEXPF_C_j ln2^j */
#define EXP2F_C1 6.931472e-01f
#define EXP2F_C2 2.4022648e-01f
#define EXP2F_C3 5.5503625e-02f
#define EXP2F_C4 9.618527e-03f
#define EXP2F_C5 1.3390217e-03f
#define EXP2F_C6 1.532106e-04f

typedef struct {
    float zero_below, zero_at, shift_hi, shift_lo; /* logits below zero_below are taken as zero_at */
    int careful; /* whether results may be subnormal: see expf_of_row_with */
} expf_row;

/* whether expf_of_row takes the row of max m, and if so its constants */
static inline int expf_row_of(expf_row *row, float m) {
#if defined(__FMA__) || defined(__aarch64__)
    if (!(fabsf(m) < EXPF_ROW_LIMIT)) return 0; /* also a max that is NaN or infinite */
    const double shift = (double)m * VEXP_LOG2E;
    const double shift_hi = floor(shift * 256.0) / 256.0;
    *row = (expf_row){m + VEXPF_FLOOR, m + VEXPF_ZERO_AT, (float)shift_hi, (float)(shift - shift_hi), 0};
    return 1;
#else
    return (void)row, (void)m, 0;
#endif
}

/* in_double: a constant, for a careful row (vexpf_times_power_of_2) */
static inline float expf_of_row_with(float x, const expf_row *row, int in_double) {
    x = x < row->zero_below ? row->zero_at : x; /* exp rounds to 0; NaN passes through */
    const float shifted = VEXPF_FMA(x, EXP2F_LOG2E_HI, -row->shift_hi) + VEXPF_ROUND;
    const float k = shifted - VEXPF_ROUND;
    const float r =
        VEXPF_FMA(x, EXP2F_LOG2E_HI, -(k + row->shift_hi)) + VEXPF_FMA(x, EXP2F_LOG2E_LO, -row->shift_lo);
    float p = EXP2F_C6;
    p = VEXPF_FMA(p, r, EXP2F_C5);
    p = VEXPF_FMA(p, r, EXP2F_C4);
    p = VEXPF_FMA(p, r, EXP2F_C3);
    p = VEXPF_FMA(p, r, EXP2F_C2);
    p = VEXPF_FMA(p, r, EXP2F_C1);
    p = VEXPF_FMA(p, r, 1.0f);
    const int32_t power = (int32_t)(vexpf_to_bits(shifted) - vexpf_to_bits(VEXPF_ROUND));
    return vexpf_times_power_of_2(p, power, in_double);
}

static inline float expf_of_row(float x, const expf_row *row) { return expf_of_row_with(x, row, 0); }

/* exp(d) for a double d <= 0 (a softcapped float32 logit minus its max) in float arithmetic: d
 * split into floats hi + lo, the part hi rounds off; as accurate as exp_difference_in_float.
 * in_double: vexpf_times_power_of_2's */
static inline float expf_of_double(double d, int in_double) {
    const float hi = (float)d;
    return expf_of_nonpositive_sum(hi, (float)(d - hi), in_double);
}

/* double logits: split x - m into hi + lo exactly (Knuth's TwoSum) and use exp(hi + lo) =
 * exp(hi) * (1 + lo), exact to first order since |lo| <= ulp(hi) / 2. lo is NaN when x is -inf;
 * exp(hi) is then 0, which is the answer. */
static inline double exp_difference_of_doubles(double x, double m) {
    double hi = x - m;
    double x_part = hi + m;
    double lo = (x - x_part) - (m + (hi - x_part));
    double e = exp_of_nonpositive(hi);
    return lo == lo ? e + e * lo : e;
}

#endif
