/* vector_exp_double_avx2.h: exp8_of_row (vector_exp_double_avx512.h) for 4 double lanes in AVX2 and
 * FMA intrinsics, the same bits: the same reduction and polynomial, k rounded by vroundpd, and 2^k
 * applied as two normal factors, the first product exact and the second the one rounding, as
 * vscalefpd's (subnormal results included), or as one where 2^k is normal (exp4_finish_block). The
 * portable exps it replaces took the difference by TwoSum and a correction exp(hi) (1 + lo), about
 * twice the operations. */
#ifndef VECTOR_EXP_DOUBLE_AVX2_H
#define VECTOR_EXP_DOUBLE_AVX2_H

#include <immintrin.h>

#include "vector_exp_double_row.h"

typedef struct {
    __m256d zero_below, shift_hi, shift_lo;
} exp4_row;

/* whether exp4_reduce and exp4_finish take the row of max m, and if so its constants */
static inline int exp4_row_of(exp4_row *row, double m) {
    exp_double_row scalar;
    if (!exp_double_row_of(&scalar, m)) return 0;
    *row = (exp4_row){_mm256_set1_pd(scalar.zero_below), _mm256_set1_pd(scalar.shift_hi),
                      _mm256_set1_pd(scalar.shift_lo)};
    return 1;
}

/* 2^j for integral j in [-1022, 1023] (else some other number): j + 1023 in the low bits of j + 1023 +
 * 2^52, moved to the exponent */
static inline __m256d power_of_2_4(__m256d j) {
    const __m256d biased = _mm256_add_pd(j, _mm256_set1_pd(0x1p52 + 1023.0));
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(biased), 52));
}

/* p 2^k for p in [0.5, 2] (or NaN) and integral k >= -1100, rounded once as vscalefpd rounds it (a
 * subnormal result too): k in halves of -550 or more, p 2^low normal and exact, the second product the
 * one rounding. A NaN k is taken to -1100 (maxpd returns its second operand), so that no garbage
 * exponent makes a subnormal factor (Intel's multipliers take a microcode assist for one). Callers
 * give the lanes they mask k = 0: a product that rounds to 0 from just below the subnormals, as p
 * 2^-1080 would, takes such an assist too (VEXPF_ZERO_AT). */
static inline __m256d times_power_of_2_4(__m256d p, __m256d k) {
    const __m256d scale = _mm256_max_pd(k, _mm256_set1_pd(-1100.0));
    const __m256d low =
        _mm256_round_pd(_mm256_mul_pd(scale, _mm256_set1_pd(0.5)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    return _mm256_mul_pd(_mm256_mul_pd(p, power_of_2_4(low)), power_of_2_4(_mm256_sub_pd(scale, low)));
}

/* The exps of 4 logits of the row (NaN passes through), in two steps so that a caller can take
 * several vectors' first steps before their second ones (exp_double_run: the four quarters of a
 * block; vector_exp_avx2.h's expf8_reduce, for why). */

/* the first step: k (the power of 2) and the reduced argument r */
typedef struct {
    __m256d k, r;
} exp4_reduced;

static inline exp4_reduced exp4_reduce(__m256d x, const exp4_row *row) {
    const __m256d log2e_hi = _mm256_set1_pd(EXP2_LOG2E_HI);
    const __m256d k =
        _mm256_round_pd(_mm256_fmsub_pd(x, log2e_hi, row->shift_hi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256d r = _mm256_add_pd(_mm256_fmsub_pd(x, log2e_hi, _mm256_add_pd(k, row->shift_hi)),
                                    _mm256_fmsub_pd(x, _mm256_set1_pd(EXP2_LOG2E_LO), row->shift_lo));
    return (exp4_reduced){k, r};
}

/* 2^r, r the reduced argument */
static inline __m256d power_of_2_polynomial(__m256d r) {
    __m256d p = _mm256_set1_pd(EXP2_P11);
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P10));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P9));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P8));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P7));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P6));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P4));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P3));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P2));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP2_P1));
    return _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
}

/* the second: the polynomial, 2^k, and the lanes below zero_below zeroed */
static inline __m256d exp4_finish(exp4_reduced reduced, __m256d x, const exp4_row *row) {
    const __m256d zero = _mm256_cmp_pd(x, row->zero_below, _CMP_LT_OQ); /* as exp8_of_row's mask */
    /* kept lanes have -1076 <= k <= 0 */
    const __m256d p = power_of_2_polynomial(reduced.r);
    return _mm256_andnot_pd(zero, times_power_of_2_4(p, _mm256_andnot_pd(zero, reduced.k)));
}

/* The second step of a block's four quarters. Where every lane has k >= -1022, as in a block of
 * logits within about 708 of the row's max, 2^k is a normal double, no lane is zeroed, and p 2^k is
 * one product, rounded once as times_power_of_2_4's two are: the same bits, for 10 fewer operations
 * per quarter (float64 8192x1000 and 256x128256 on Zen 3, A/B medians: 0.86-0.87 of the time, the
 * test included). powers_of_2_normal(k of four vectors): k + 1022 has its sign bit set where k <
 * -1022; a NaN k (a NaN logit's) may pass, and then p is NaN too, and its product with any
 * power_of_2_4 (a normal power of 2, 0 or inf, never NaN) p's NaN, as times_power_of_2_4's products
 * are. */
static inline int powers_of_2_normal(__m256d k0, __m256d k1, __m256d k2, __m256d k3) {
    const __m256d floor = _mm256_set1_pd(1022.0);
    const __m256d below = _mm256_or_pd(_mm256_or_pd(_mm256_add_pd(k0, floor), _mm256_add_pd(k1, floor)),
                                       _mm256_or_pd(_mm256_add_pd(k2, floor), _mm256_add_pd(k3, floor)));
    return _mm256_testz_pd(below, below);
}

static inline void exp4_finish_block(__m256d exps[4], const exp4_reduced reduced[4], const __m256d x[4],
                                     const exp4_row *row) {
    if (powers_of_2_normal(reduced[0].k, reduced[1].k, reduced[2].k, reduced[3].k))
        for (int j = 0; j < 4; j++)
            exps[j] = _mm256_mul_pd(power_of_2_polynomial(reduced[j].r), power_of_2_4(reduced[j].k));
    else
        for (int j = 0; j < 4; j++) exps[j] = exp4_finish(reduced[j], x[j], row);
}

#endif
