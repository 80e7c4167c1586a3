/* vector_exp_double_row.h: what the vector exps of a row of double logits share (AVX-512:
 * vector_exp_double_avx512.h, which describes the method and its measured error; AVX2:
 * vector_exp_double_avx2.h): the row's constants, and the polynomial of 2^r. */
#ifndef VECTOR_EXP_DOUBLE_ROW_H
#define VECTOR_EXP_DOUBLE_ROW_H

#include <math.h>

#define EXP_DOUBLE_ROW_LIMIT 0x1p14
#define EXP2_LOG2E_HI 1.4426950408889634    /* log2(e) rounded to double ... */
#define EXP2_LOG2E_LO 2.0355273740931033e-17 /* ... and the rest */

/* 2^r = 1 + r (EXP2_P1 + r (EXP2_P2 + ... + r EXP2_P11)) for |r| <= 0.5035, the minimax polynomial of
 * its degree with 1 at r = 0 for the relative error (a Remez fit at 60 digits, then each coefficient
 * rounded to double: within 2.3e-17 relative, exact arithmetic; degree 13's Taylor polynomial, 5e-18,
 * took two more FMAs: A/B on Zen 3, float64 8192x1000 and 256x128256, 0.89-0.93 of the time) */
#define EXP2_P11 4.0781151091906447e-10
#define EXP2_P10 7.072818573067334e-09
#define EXP2_P9 1.0180683850346634e-07
#define EXP2_P8 1.3215441427360795e-06
#define EXP2_P7 1.5252727202842793e-05
#define EXP2_P6 0.00015403530443630704
#define EXP2_P5 0.0013333558153740324
#define EXP2_P4 0.009618129107605771
#define EXP2_P3 0.0555041086647886
#define EXP2_P2 0.240226506959101
#define EXP2_P1 0.6931471805599457

typedef struct {
    double zero_below, shift_hi, shift_lo; /* exps of logits below zero_below round to 0 */
} exp_double_row;

/* whether the vector exps take the row of max m, and if so its constants */
static inline int exp_double_row_of(exp_double_row *row, double m) {
    if (!(fabs(m) < EXP_DOUBLE_ROW_LIMIT)) return 0; /* also a max that is NaN or infinite */
    const double product = m * EXP2_LOG2E_HI;
    const double product_error = fma(m, EXP2_LOG2E_HI, -product); /* exact */
    const double shift_hi = nearbyint(product * 0x1p36) * 0x1p-36;
    const double shift_lo = (product - shift_hi) + (product_error + m * EXP2_LOG2E_LO); /* the first exact */
    *row = (exp_double_row){m - 746.0, shift_hi, shift_lo};
    return 1;
}

#endif
