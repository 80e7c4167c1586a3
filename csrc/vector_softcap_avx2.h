/* vector_softcap_avx2.h: softcapped8 and capped_exp8 (vector_softcap_avx512.h) for 4 double lanes in
 * AVX2 and FMA intrinsics, the same bits (the method and its error: vector_softcap.h): the same
 * reduction and polynomials, k rounded by vroundpd and 2^k applied as vscalefpd applies it
 * (times_power_of_2_4, or for capped_exp4_finish's normal results one exact product). The portable
 * loop it replaces, vectorised by GCC, took 5.2-5.4x the plain pass at 8192x1000 on Zen 2. */
#ifndef VECTOR_SOFTCAP_AVX2_H
#define VECTOR_SOFTCAP_AVX2_H

#include <immintrin.h>

#include "vector_exp_double_avx2.h"
#include "vector_softcap.h"

typedef struct {
    __m256d softcap, inverse, two_over_softcap, slope_scale, four_slope_scale;
} softcap4;

static inline softcap4 softcap4_of(double softcap, double slope_scale) {
    return (softcap4){_mm256_set1_pd(softcap), _mm256_set1_pd(1.0 / softcap), _mm256_set1_pd(2.0 / softcap),
                      _mm256_set1_pd(slope_scale), _mm256_set1_pd(4.0 * slope_scale)};
}

typedef struct {
    __m256d value, slope; /* x', and its slope times the slope_scale of softcap4_of */
} capped4;

/* s = u^2 (softcapped4_near's argument) */
static inline __m256d squared_u(__m256d x, const softcap4 *cap) {
    const __m256d u = _mm256_mul_pd(x, cap->inverse);
    return _mm256_mul_pd(u, u);
}

/* the lanes that softcapped4_near takes: s <= 1 (not NaN) */
static inline __m256d near_lanes(__m256d s) { return _mm256_cmp_pd(s, _mm256_set1_pd(1.0), _CMP_LE_OQ); }

/* x' = x tanh(u) / u and its slope 1 - tanh^2 where |u| <= 1 (s = u^2 <= 1; vector_softcap.h):
 * tanh(u) / u = 1 + s Q(s), Q's even and odd powers in two chains */
static inline capped4 softcapped4_near(__m256d x, __m256d s, const softcap4 *cap) {
    const __m256d s2 = _mm256_mul_pd(s, s);
    __m256d even = _mm256_fmadd_pd(_mm256_set1_pd(TANH_P11), s2, _mm256_set1_pd(TANH_P9));
    __m256d odd = _mm256_fmadd_pd(_mm256_set1_pd(TANH_P10), s2, _mm256_set1_pd(TANH_P8));
    even = _mm256_fmadd_pd(even, s2, _mm256_set1_pd(TANH_P7));
    odd = _mm256_fmadd_pd(odd, s2, _mm256_set1_pd(TANH_P6));
    even = _mm256_fmadd_pd(even, s2, _mm256_set1_pd(TANH_P5));
    odd = _mm256_fmadd_pd(odd, s2, _mm256_set1_pd(TANH_P4));
    even = _mm256_fmadd_pd(even, s2, _mm256_set1_pd(TANH_P3));
    odd = _mm256_fmadd_pd(odd, s2, _mm256_set1_pd(TANH_P2));
    even = _mm256_fmadd_pd(even, s2, _mm256_set1_pd(TANH_P1));
    const __m256d ratio = _mm256_fmadd_pd(_mm256_fmadd_pd(odd, s, even), s, _mm256_set1_pd(1.0)); /* tanh(u) / u */
    const __m256d tanh_squared = _mm256_mul_pd(_mm256_mul_pd(s, ratio), ratio);
    return (capped4){_mm256_mul_pd(x, ratio), _mm256_fnmadd_pd(tanh_squared, cap->slope_scale, cap->slope_scale)};
}

/* Both functions below come in two steps, so that a caller can take several vectors' first steps
 * before their second ones (vector_exp_avx2.h's expf8_reduce, for why): the reduction of exp's
 * argument d to k and r, then the rest. */
typedef struct {
    __m256d d, k, r; /* (capped_exp4_finish reads no d) */
} softcap4_reduced;

static inline softcap4_reduced exp_argument_reduced(__m256d d) {
    const __m256d k =
        _mm256_round_pd(_mm256_mul_pd(d, _mm256_set1_pd(VEXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256d r =
        _mm256_fnmadd_pd(k, _mm256_set1_pd(VEXP_LN2_LO), _mm256_fnmadd_pd(k, _mm256_set1_pd(VEXP_LN2_HI), d));
    return (softcap4_reduced){d, k, r};
}

/* x' and its slope: softcapped4_reduce(x), then softcapped4_finish */
static inline softcap4_reduced softcapped4_reduce(__m256d x, const softcap4 *cap) {
    const __m256d minus_2u = _mm256_mul_pd(_mm256_or_pd(x, _mm256_set1_pd(-0.0)), cap->two_over_softcap); /* -2 |u| */
    return exp_argument_reduced(_mm256_max_pd(_mm256_set1_pd(VEXP_FLOOR), minus_2u)); /* NaN (the second) passes */
}

/* normal (a constant): every lane's k >= -1022 (powers_of_2_normal), so that e = p 2^k is one product,
 * as in exp4_finish_block */
static inline capped4 softcapped4_finish(softcap4_reduced reduced, __m256d x, const softcap4 *cap, int normal) {
    const __m256d sign = _mm256_set1_pd(-0.0);
    const __m256d d = reduced.d, k = reduced.k, r = reduced.r;
    /* q = sum_j r^j / (j + 1)!, j = 0..9, and exp(r) = 1 + r q */
    const __m256d r2 = _mm256_mul_pd(r, r), r4 = _mm256_mul_pd(r2, r2);
    const __m256d q01 = _mm256_fmadd_pd(r, _mm256_set1_pd(1.0 / 2.0), _mm256_set1_pd(1.0));
    const __m256d q23 = _mm256_fmadd_pd(r, _mm256_set1_pd(1.0 / 24.0), _mm256_set1_pd(1.0 / 6.0));
    const __m256d q45 = _mm256_fmadd_pd(r, _mm256_set1_pd(1.0 / 720.0), _mm256_set1_pd(1.0 / 120.0));
    const __m256d q67 = _mm256_fmadd_pd(r, _mm256_set1_pd(1.0 / 40320.0), _mm256_set1_pd(1.0 / 5040.0));
    const __m256d q89 = _mm256_fmadd_pd(r, _mm256_set1_pd(1.0 / 3628800.0), _mm256_set1_pd(1.0 / 362880.0));
    const __m256d q4_9 = _mm256_fmadd_pd(q89, r4, _mm256_fmadd_pd(q67, r2, q45));
    const __m256d q = _mm256_fmadd_pd(q4_9, r4, _mm256_fmadd_pd(q23, r2, q01));
    const __m256d p = _mm256_fmadd_pd(r, q, _mm256_set1_pd(1.0));
    const __m256d kept = _mm256_cmp_pd(d, _mm256_set1_pd(SOFTCAP_E_ZERO_BELOW), _CMP_NLT_UQ);
    const __m256d e = normal ? _mm256_mul_pd(p, power_of_2_4(k))
                             : _mm256_and_pd(kept, times_power_of_2_4(p, _mm256_and_pd(kept, k)));
    /* expm1: r q itself where k = 0, free of the cancellation of e - 1 */
    const __m256d k_is_0 = _mm256_cmp_pd(k, _mm256_setzero_pd(), _CMP_EQ_OQ);
    const __m256d m = _mm256_blendv_pd(_mm256_sub_pd(e, _mm256_set1_pd(1.0)), _mm256_mul_pd(r, q), k_is_0);
    const __m256d inverse = _mm256_div_pd(_mm256_set1_pd(1.0), _mm256_add_pd(_mm256_set1_pd(2.0), m));
    const __m256d magnitude = _mm256_mul_pd(_mm256_mul_pd(m, inverse), cap->softcap); /* -x' if x >= 0 */
    const __m256d value = _mm256_or_pd(_mm256_and_pd(x, sign), _mm256_andnot_pd(sign, magnitude)); /* x's sign */
    const __m256d slope = _mm256_mul_pd(_mm256_mul_pd(e, inverse), _mm256_mul_pd(inverse, cap->four_slope_scale));
    return (capped4){value, slope};
}

/* exp(d) for d = x' - m' <= 0 (NaN passes through): capped_exp4_reduce(d), then capped_exp4_finish */
static inline softcap4_reduced capped_exp4_reduce(__m256d d) {
    return exp_argument_reduced(_mm256_max_pd(_mm256_set1_pd(VEXPF_FLOOR), d)); /* exp rounds to 0 in float below */
}

static inline __m128 capped_exp4_finish(softcap4_reduced reduced) {
    const __m256d k = reduced.k, r = reduced.r;
    __m256d p = _mm256_set1_pd(VEXPF_C6);
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(VEXPF_C5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(VEXPF_C4));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(VEXPF_C3));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(VEXPF_C2));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    /* k >= -150: 2^k and p 2^k normal doubles, the product exact (NaN: p is NaN) */
    return _mm256_cvtpd_ps(_mm256_mul_pd(p, power_of_2_4(k)));
}

#endif
