/* vector_exp_avx2.h: expf_of_row_with (exp_difference.h) for 8 float lanes in AVX2 and FMA
 * intrinsics, for rows whose exps are normal or 0 (not careful_exps): the same bits by a shorter
 * chain. GCC vectorised the portable loop of these exps too, but with every constant broadcast
 * again or reloaded from the stack (16 ymm registers) and its run sums through memory: on Zen 2
 * about 200 instructions per 32 logits, and an exp pass of 3 cycles per logit, bound by the latency
 * of each vector's chain of about 60 cycles (Zen 2 keeps only a few vectors' work in flight). Here
 * k is rounded by vroundps (k = round(d), as d + 1.5 2^23 - 1.5 2^23 rounds it, one addition
 * fewer), and 2^k is one factor: in a row that is not careful every logit whose exp is not 0 is at
 * least max - 87 (careful_exps), so k >= -126, 2^k is normal and so is the result, which the two
 * halves of vexpf_times_power_of_2 give exactly too; the logits below zero_below (max - 104, -inf
 * too) are raised to it, whose k <= -150 makes 2^k, and the exp, +0, rather than taken to zero_at.
 * A/B on Zen 2, 8192x1000 float32 one thread: the loss alone 0.84-0.86 for the intrinsics and
 * vroundps, then 0.91 for the one factor. */
#ifndef VECTOR_EXP_AVX2_H
#define VECTOR_EXP_AVX2_H

#include <immintrin.h>

#include "exp_difference.h"

/* zero_below: expf_row's. A row that is not careful has no logit in [m - 104, m - 87) (careful_exps),
 * whose exps are all that could be subnormal: a lane raised to zero_below gives +0, as a mask of the
 * lanes below m - 87 did, for one operation (a max) where the mask took two (A/B on Zen 3, one
 * thread, both builds with loops on 32 bytes: 8192x1000 and 1024x32000 0.94-0.97). */
typedef struct {
    __m256 zero_below, shift_hi, shift_lo;
} expf8_row;

static inline expf8_row expf8_row_of(const expf_row *row) {
    return (expf8_row){_mm256_set1_ps(row->zero_below), _mm256_set1_ps(row->shift_hi), _mm256_set1_ps(row->shift_lo)};
}

/* 2^k as a float's bits for -126 <= k <= 127, and 0 below: a lane raised to zero_below makes no
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

static inline expf8_reduced expf8_reduce(__m256 logits, const expf8_row *row) {
    const __m256 x = _mm256_max_ps(row->zero_below, logits); /* the second operand: NaN passes */
    const __m256 log2e_hi = _mm256_set1_ps(EXP2F_LOG2E_HI);
    const __m256 k =
        _mm256_round_ps(_mm256_fmsub_ps(x, log2e_hi, row->shift_hi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_add_ps(_mm256_fmsub_ps(x, log2e_hi, _mm256_add_ps(k, row->shift_hi)),
                                   _mm256_fmsub_ps(x, _mm256_set1_ps(EXP2F_LOG2E_LO), row->shift_lo));
    return (expf8_reduced){k, r};
}

/* the second: the polynomial and 2^k */
static inline __m256 expf8_finish(expf8_reduced reduced) {
    const __m256 r = reduced.r;
    __m256 p = _mm256_set1_ps(EXP2F_C6);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP2F_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(p, power_of_2_8(_mm256_cvtps_epi32(reduced.k)));
}

#endif
