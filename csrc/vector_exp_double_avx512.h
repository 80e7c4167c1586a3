/* vector_exp_double_avx512.h: exp(x - m) for the double logits x <= m of one row, 8 lanes in AVX-512
 * intrinsics, the way expf_of_row (exp_difference.h) does floats: the difference taken in base 2 by
 * FMAs, whose products are exact, where the portable exp_difference_of_doubles needs TwoSum and a
 * correction exp(hi) (1 + lo); 2^k applied by vscalefpd (one rounding, subnormal results included).
 * With s = m log2(e) = s_hi + s_lo (s_hi on a 2^-36 grid, s_lo to ~2^-90), and the lanes of x below
 * m - 746 zeroed (exp rounds to 0 there):
 *   d = x LOG2E_HI - s_hi, k = round(d),
 *   r = (x LOG2E_HI - (k + s_hi)) + (x LOG2E_LO - s_lo) = (x - m) log2(e) - k, |r| <= 0.503,
 * where k + s_hi is exact (|k + s_hi| < 2^16 on the 2^-36 grid) and so is the product in the first
 * FMA, which rounds once; 2^r by its degree-13 Taylor polynomial (truncation below 5e-18). Rows with
 * |m| >= EXP8_ROW_LIMIT (or m not finite) take the portable exps. Measured against expl over 2.4e7
 * differences: at most 1.13 ulp (the portable exps: 1.48 by the same measure). */
#ifndef VECTOR_EXP_DOUBLE_AVX512_H
#define VECTOR_EXP_DOUBLE_AVX512_H

#include <immintrin.h>
#include <math.h>

#define EXP8_ROW_LIMIT 0x1p14
#define EXP2_LOG2E_HI 1.4426950408889634    /* log2(e) rounded to double ... */
#define EXP2_LOG2E_LO 2.0355273740931033e-17 /* ... and the rest */

typedef struct {
    __m512d zero_below, shift_hi, shift_lo;
} exp8_row;

/* whether exp8_of_row takes the row of max m, and if so its constants */
static inline int exp8_row_of(exp8_row *row, double m) {
    if (!(fabs(m) < EXP8_ROW_LIMIT)) return 0; /* also a max that is NaN or infinite */
    const double product = m * EXP2_LOG2E_HI;
    const double product_error = fma(m, EXP2_LOG2E_HI, -product); /* exact */
    const double shift_hi = nearbyint(product * 0x1p36) * 0x1p-36;
    const double shift_lo = (product - shift_hi) + (product_error + m * EXP2_LOG2E_LO); /* the first exact */
    *row = (exp8_row){_mm512_set1_pd(m - 746.0), _mm512_set1_pd(shift_hi), _mm512_set1_pd(shift_lo)};
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
    /* 2^r = sum_j (r ln2)^j / j! */
    __m512d p = _mm512_set1_pd(1.3691488853904128e-12);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(2.5678435993488206e-11));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(4.4455382718708116e-10));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(7.054911620801123e-09));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.01780860092397e-07));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.321548679014431e-06));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.5252733804059841e-05));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.0001540353039338161));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.0013333558146428443));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.009618129107628477));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.05550410866482158));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.24022650695910072));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.6931471805599453));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    return _mm512_maskz_scalef_pd(kept, p, k);
}

#endif
