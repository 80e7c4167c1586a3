/* vector_exp_avx2.h: expf_of_row_with (exp_difference.h) for 8 float lanes in AVX2 and FMA
 * intrinsics, for rows whose exps are normal or 0 (not careful_exps): the same bits by a shorter
 * chain. GCC vectorised the portable loop of these exps too, but with every constant broadcast
 * again or reloaded from the stack (16 ymm registers) and its run sums through memory: on Zen 2
 * about 200 instructions per 32 logits, and an exp pass of 3 cycles per logit, bound by the latency
 * of each vector's chain of about 60 cycles (Zen 2 keeps only a few vectors' work in flight). Here
 * k is rounded by vroundps (k = round(d), as d + 1.5 2^23 - 1.5 2^23 rounds it, one addition
 * fewer), and 2^k is one factor: in a row that is not careful every logit whose exp is not 0 is at
 * least max - 87 (careful_exps), so k >= -126, 2^k is normal and so is the result, which the two
 * halves of vexpf_times_power_of_2 give exactly too; the logits below max - 87 (-inf too) are
 * zeroed by their mask rather than taken to zero_at. A/B on Zen 2, 8192x1000 float32 one thread:
 * the loss alone 0.84-0.86 for the intrinsics and vroundps, then 0.91 for the one factor. */
#ifndef VECTOR_EXP_AVX2_H
#define VECTOR_EXP_AVX2_H

#include <immintrin.h>

#include "exp_difference.h"

typedef struct {
    __m256 zero_below, shift_hi, shift_lo;
} expf8_row;

/* Lanes below m + EXPF8_FLOOR are zeroed (not below expf_row's m - 104): in a row that is not careful
 * no logit lies between the two (careful_exps), so the bits are the same, and every lane kept has
 * k >= -126 even in a row wrongly taken for not careful, which would then lose only subnormal exps.
 * m + EXPF8_FLOOR rounds to below m - 87 for |m| < 2^14 (by at most 2^-10), and exps from there up are
 * normal: k >= round(-87.011 log2(e)) = -126. */
#define EXPF8_FLOOR (-87.01f)

static inline expf8_row expf8_row_of(const expf_row *row, float m) {
    return (expf8_row){_mm256_set1_ps(m + EXPF8_FLOOR), _mm256_set1_ps(row->shift_hi), _mm256_set1_ps(row->shift_lo)};
}

/* 2^k as a float's bits for -126 <= k <= 127, and 0 below: a masked lane's garbage exponent makes no
 * subnormal factor (Intel's multipliers take a microcode assist for one) */
static inline __m256 power_of_2_8(__m256i k) {
    const __m256i biased = _mm256_max_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), _mm256_setzero_si256());
    return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
}

/* The exps of 8 logits of a row that is not careful (NaN passes through), in two steps so that a
 * caller can take two vectors' first steps before their second ones: with one vector's chain of
 * about 55 cycles after another, Zen 2's lanes waited (presumably its small FP scheduler, full of a
 * chain's waiting operations), interleaved they overlap (a C loop over a row in L1: 1.93 -> 1.62
 * cycles per logit). */

/* the first step: k (the power of 2) and the reduced argument r */
typedef struct {
    __m256 k, r;
} expf8_reduced;

static inline expf8_reduced expf8_reduce(__m256 x, const expf8_row *row) {
    const __m256 log2e_hi = _mm256_set1_ps(EXP2F_LOG2E_HI);
    const __m256 k =
        _mm256_round_ps(_mm256_fmsub_ps(x, log2e_hi, row->shift_hi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_add_ps(_mm256_fmsub_ps(x, log2e_hi, _mm256_add_ps(k, row->shift_hi)),
                                   _mm256_fmsub_ps(x, _mm256_set1_ps(EXP2F_LOG2E_LO), row->shift_lo));
    return (expf8_reduced){k, r};
}

/* the second: the polynomial, 2^k, and the lanes below zero_below zeroed */
static inline __m256 expf8_finish(expf8_reduced reduced, __m256 x, const expf8_row *row) {
    const __m256 zero = _mm256_cmp_ps(x, row->zero_below, _CMP_LT_OQ);
    const __m256 r = reduced.r;
    __m256 p = _mm256_set1_ps(EXP2F_C6);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    return _mm256_andnot_ps(zero, _mm256_mul_ps(p, power_of_2_8(_mm256_cvtps_epi32(reduced.k))));
}

#endif
