/* vector_exp_avx2.h: expf_of_row_with (exp_difference.h) for 8 float lanes in AVX2 and FMA
 * intrinsics, for rows whose exps are normal or 0 (not careful): the same operations in the same
 * order, so the same bits. GCC vectorised the portable loop of these exps too, but with every
 * constant broadcast again or reloaded from the stack (16 ymm registers) and its run sums through
 * memory: on Zen 2 about 200 instructions per 32 logits, and an exp pass of 3 cycles per logit. */
#ifndef VECTOR_EXP_AVX2_H
#define VECTOR_EXP_AVX2_H

#include <immintrin.h>

#include "exp_difference.h"

typedef struct {
    __m256 zero_below, zero_at, shift_hi, shift_lo;
} exp8_row;

static inline exp8_row exp8_row_of(const expf_row *row) {
    return (exp8_row){_mm256_set1_ps(row->zero_below), _mm256_set1_ps(row->zero_at), _mm256_set1_ps(row->shift_hi),
                      _mm256_set1_ps(row->shift_lo)};
}

/* 2^k as a float's bits, for -126 <= k <= 127 */
static inline __m256 power_of_2_8(__m256i k) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

static inline __m256 exp8_of_row(__m256 x, const exp8_row *row) {
    x = _mm256_blendv_ps(x, row->zero_at, _mm256_cmp_ps(x, row->zero_below, _CMP_LT_OQ)); /* NaN passes */
    const __m256 log2e_hi = _mm256_set1_ps(EXP2F_LOG2E_HI);
    const __m256 k = _mm256_round_ps(_mm256_fmsub_ps(x, log2e_hi, row->shift_hi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_add_ps(_mm256_fmsub_ps(x, log2e_hi, _mm256_add_ps(k, row->shift_hi)),
                                   _mm256_fmsub_ps(x, _mm256_set1_ps(EXP2F_LOG2E_LO), row->shift_lo));
    __m256 p = _mm256_set1_ps(EXP2F_C6);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* vexpf_times_power_of_2: 2^k in two normal halves */
    const __m256i power = _mm256_cvtps_epi32(k);
    const __m256i low = _mm256_srai_epi32(power, 1), high = _mm256_sub_epi32(power, low);
    return _mm256_mul_ps(_mm256_mul_ps(p, power_of_2_8(low)), power_of_2_8(high));
}

#endif
