/* vector_exp_double_avx512.h: exp(x - m) for the double logits x <= m of one row, 8 lanes in AVX-512
 * intrinsics, the way expf_of_row (exp_difference.h) does floats: the difference taken in base 2 by
 * FMAs, whose products are exact, where the portable exp_difference_of_doubles needs TwoSum and a
 * correction exp(hi) (1 + lo); 2^k applied by vscalefpd (one rounding, subnormal results included).
 * With s = m log2(e) = s_hi + s_lo (s_hi on a 2^-36 grid, s_lo to ~2^-90), and the lanes of x below
 * m - 746 zeroed (exp rounds to 0 there):
 *   d = x LOG2E_HI - s_hi, k = round(d),
 *   r = (x LOG2E_HI - (k + s_hi)) + (x LOG2E_LO - s_lo) = (x - m) log2(e) - k, |r| <= 0.503,
 * where k + s_hi is exact (|k + s_hi| < 2^16 on the 2^-36 grid) and so is the product in the first
 * FMA, which rounds once; 2^r by a degree-11 minimax polynomial (vector_exp_double_row.h, within
 * 2.3e-17). Rows with |m| >= EXP_DOUBLE_ROW_LIMIT (or m not finite) take the portable exps. Measured
 * on AVX2 (the same bits) against quad precision's expq over 1.6e8 differences: at most 1.13 ulp
 * (1.08 with the degree-13 Taylor polynomial before; the portable exps: 1.60, 1.50 with FMA). */
#ifndef VECTOR_EXP_DOUBLE_AVX512_H
#define VECTOR_EXP_DOUBLE_AVX512_H

#include <immintrin.h>

#include "vector_exp_double_row.h"

typedef struct {
    __m512d zero_below, shift_hi, shift_lo;
} exp8_row;

/* whether exp8_of_row takes the row of max m, and if so its constants */
static inline int exp8_row_of(exp8_row *row, double m) {
    exp_double_row scalar;
    if (!exp_double_row_of(&scalar, m)) return 0;
    *row = (exp8_row){_mm512_set1_pd(scalar.zero_below), _mm512_set1_pd(scalar.shift_hi),
                      _mm512_set1_pd(scalar.shift_lo)};
    return 1;
}

static inline __m512d exp8_of_row(__m512d x, const exp8_row *row) {
    /* lanes below zero_below are zeroed by vscalefpd's mask, as in exp16_of_row */
    const __mmask8 kept = _mm512_cmp_pd_mask(x, row->zero_below, _CMP_NLT_UQ);
    const __m512d log2e_hi = _mm512_set1_pd(EXP2_LOG2E_HI);
    const __m512d k = _mm512_roundscale_pd(_mm512_fmsub_pd(x, log2e_hi, row->shift_hi),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512d r = _mm512_add_pd(_mm512_fmsub_pd(x, log2e_hi, _mm512_add_pd(k, row->shift_hi)),
                                    _mm512_fmsub_pd(x, _mm512_set1_pd(EXP2_LOG2E_LO), row->shift_lo));
    __m512d p = _mm512_set1_pd(EXP2_P11);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P10));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P9));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P8));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P7));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P6));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P4));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP2_P1));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    return _mm512_maskz_scalef_pd(kept, p, k);
}

#endif
