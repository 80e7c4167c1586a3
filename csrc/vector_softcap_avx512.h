/* vector_softcap_avx512.h: the softcap of float logits, 8 double lanes in AVX-512 intrinsics (the
 * method and its error: vector_softcap.h). Per 16 float logits about 100 operations, where the
 * portable loop, which GCC vectorised a block at a time, took 235 instructions: the softcapped exp
 * pass at 8192x1000 20 -> 14 ms. */
#ifndef VECTOR_SOFTCAP_AVX512_H
#define VECTOR_SOFTCAP_AVX512_H

#include <immintrin.h>

#include "vector_softcap.h"

typedef struct {
    __m512d softcap, inverse, two_over_softcap, slope_scale, four_slope_scale;
} softcap8;

static inline softcap8 softcap8_of(double softcap, double slope_scale) {
    return (softcap8){_mm512_set1_pd(softcap), _mm512_set1_pd(1.0 / softcap), _mm512_set1_pd(2.0 / softcap),
                      _mm512_set1_pd(slope_scale), _mm512_set1_pd(4.0 * slope_scale)};
}

typedef struct {
    __m512d value, slope; /* x', and its slope times the slope_scale of softcap8_of */
} capped8;

/* s = u^2 (softcapped8_near's argument) */
static inline __m512d squared_u8(__m512d x, const softcap8 *cap) {
    const __m512d u = _mm512_mul_pd(x, cap->inverse);
    return _mm512_mul_pd(u, u);
}

/* the lanes that softcapped8_near takes: s <= 1 (not NaN) */
static inline __mmask8 near_lanes8(__m512d s) { return _mm512_cmp_pd_mask(s, _mm512_set1_pd(1.0), _CMP_LE_OQ); }

/* x' = x tanh(u) / u and its slope 1 - tanh^2 where |u| <= 1 (s = u^2 <= 1; vector_softcap.h):
 * tanh(u) / u = 1 + s Q(s), Q's even and odd powers in two chains */
static inline capped8 softcapped8_near(__m512d x, __m512d s, const softcap8 *cap) {
    const __m512d s2 = _mm512_mul_pd(s, s);
    __m512d even = _mm512_fmadd_pd(_mm512_set1_pd(TANH_P11), s2, _mm512_set1_pd(TANH_P9));
    __m512d odd = _mm512_fmadd_pd(_mm512_set1_pd(TANH_P10), s2, _mm512_set1_pd(TANH_P8));
    even = _mm512_fmadd_pd(even, s2, _mm512_set1_pd(TANH_P7));
    odd = _mm512_fmadd_pd(odd, s2, _mm512_set1_pd(TANH_P6));
    even = _mm512_fmadd_pd(even, s2, _mm512_set1_pd(TANH_P5));
    odd = _mm512_fmadd_pd(odd, s2, _mm512_set1_pd(TANH_P4));
    even = _mm512_fmadd_pd(even, s2, _mm512_set1_pd(TANH_P3));
    odd = _mm512_fmadd_pd(odd, s2, _mm512_set1_pd(TANH_P2));
    even = _mm512_fmadd_pd(even, s2, _mm512_set1_pd(TANH_P1));
    const __m512d ratio = _mm512_fmadd_pd(_mm512_fmadd_pd(odd, s, even), s, _mm512_set1_pd(1.0)); /* tanh(u) / u */
    const __m512d tanh_squared = _mm512_mul_pd(_mm512_mul_pd(s, ratio), ratio);
    return (capped8){_mm512_mul_pd(x, ratio), _mm512_fnmadd_pd(tanh_squared, cap->slope_scale, cap->slope_scale)};
}

static inline capped8 softcapped8(__m512d x, const softcap8 *cap) {
    const __m512d sign = _mm512_set1_pd(-0.0);
    const __m512d d = _mm512_max_pd(_mm512_set1_pd(VEXP_FLOOR), /* -2 |u|; NaN, the second operand, passes */
                                    _mm512_mul_pd(_mm512_or_pd(x, sign), cap->two_over_softcap));
    const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(d, _mm512_set1_pd(VEXP_LOG2E)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(VEXP_LN2_LO), _mm512_fnmadd_pd(k, _mm512_set1_pd(VEXP_LN2_HI), d));
    /* q = sum_j r^j / (j + 1)!, j = 0..9, and exp(r) = 1 + r q */
    const __m512d r2 = _mm512_mul_pd(r, r), r4 = _mm512_mul_pd(r2, r2);
    const __m512d q01 = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 2.0), _mm512_set1_pd(1.0));
    const __m512d q23 = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 24.0), _mm512_set1_pd(1.0 / 6.0));
    const __m512d q45 = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 720.0), _mm512_set1_pd(1.0 / 120.0));
    const __m512d q67 = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 40320.0), _mm512_set1_pd(1.0 / 5040.0));
    const __m512d q89 = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 3628800.0), _mm512_set1_pd(1.0 / 362880.0));
    const __m512d q4_9 = _mm512_fmadd_pd(q89, r4, _mm512_fmadd_pd(q67, r2, q45));
    const __m512d q = _mm512_fmadd_pd(q4_9, r4, _mm512_fmadd_pd(q23, r2, q01));
    const __mmask8 kept = _mm512_cmp_pd_mask(d, _mm512_set1_pd(SOFTCAP_E_ZERO_BELOW), _CMP_NLT_UQ);
    const __m512d e = _mm512_maskz_scalef_pd(kept, _mm512_fmadd_pd(r, q, _mm512_set1_pd(1.0)), k);
    /* expm1: r q itself where k = 0, free of the cancellation of e - 1 */
    const __mmask8 k_is_0 = _mm512_cmp_pd_mask(k, _mm512_setzero_pd(), _CMP_EQ_OQ);
    const __m512d m = _mm512_mask_mul_pd(_mm512_sub_pd(e, _mm512_set1_pd(1.0)), k_is_0, r, q);
    const __m512d inverse = _mm512_div_pd(_mm512_set1_pd(1.0), _mm512_add_pd(_mm512_set1_pd(2.0), m));
    const __m512d magnitude = _mm512_mul_pd(_mm512_mul_pd(m, inverse), cap->softcap); /* -x' if x >= 0 */
    const __m512d value = _mm512_castsi512_pd(_mm512_ternarylogic_epi64( /* x's sign, magnitude's other bits */
        _mm512_castpd_si512(magnitude), _mm512_castpd_si512(x), _mm512_castpd_si512(sign), 0xD8));
    const __m512d slope = _mm512_mul_pd(_mm512_mul_pd(e, inverse), _mm512_mul_pd(inverse, cap->four_slope_scale));
    return (capped8){value, slope};
}

/* exp(d) for d = x' - m' <= 0 (NaN passes through) */
static inline __m256 capped_exp8(__m512d d) {
    d = _mm512_max_pd(_mm512_set1_pd(VEXPF_FLOOR), d); /* exp rounds to 0 in float below */
    const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(d, _mm512_set1_pd(VEXP_LOG2E)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(VEXP_LN2_LO), _mm512_fnmadd_pd(k, _mm512_set1_pd(VEXP_LN2_HI), d));
    __m512d p = _mm512_set1_pd(VEXPF_C6);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(VEXPF_C5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(VEXPF_C4));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(VEXPF_C3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(VEXPF_C2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    return _mm512_cvtpd_ps(_mm512_scalef_pd(p, k));
}

#endif
