/* vector_exp_double_row.h: what the vector exps of a row of double logits share (AVX-512:
 * vector_exp_double_avx512.h, which describes the method and its measured error; AVX2:
 * vector_exp_double_avx2.h): the row's constants, and the Taylor coefficients of 2^r. */
#ifndef VECTOR_EXP_DOUBLE_ROW_H
#define VECTOR_EXP_DOUBLE_ROW_H

#include <math.h>

#define EXP_DOUBLE_ROW_LIMIT 0x1p14
#define EXP2_LOG2E_HI 1.4426950408889634    /* log2(e) rounded to double ... */
#define EXP2_LOG2E_LO 2.0355273740931033e-17 /* ... and the rest */

/* 2^r = sum_j (r ln2)^j / j!, j = 0..13: EXP2_T13 r^13 + ... + EXP2_T0 */
#define EXP2_T13 1.3691488853904128e-12
#define EXP2_T12 2.5678435993488206e-11
#define EXP2_T11 4.4455382718708116e-10
#define EXP2_T10 7.054911620801123e-09
#define EXP2_T9 1.01780860092397e-07
#define EXP2_T8 1.321548679014431e-06
#define EXP2_T7 1.5252733804059841e-05
#define EXP2_T6 0.0001540353039338161
#define EXP2_T5 0.0013333558146428443
#define EXP2_T4 0.009618129107628477
#define EXP2_T3 0.05550410866482158
#define EXP2_T2 0.24022650695910072
#define EXP2_T1 0.6931471805599453
#define EXP2_T0 1.0

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
