/* bf16_round_avx2.h: the gradient's bfloat16 values 16 at a time in AVX2 and FMA intrinsics, rounded
 * as bf16_from_float (half_precision.h) rounds each: to nearest even by integer steps, NaN kept
 * quiet. GCC vectorised bf16_from_float's loop with a second pack and permute for the NaN mask and
 * a byte blend after them (about 24 operations per 16 values, 2/3 of a bfloat16 row's gradient
 * pass on Zen 3); here the NaN lanes are chosen before the one pack. */
#ifndef BF16_ROUND_AVX2_H
#define BF16_ROUND_AVX2_H

#include <immintrin.h>
#include <stdint.h>

/* 8 floats rounded, each bfloat16 in the low half of its 32-bit lane */
static inline __m256i bf16_round_8_in_words(__m256 values) {
    const __m256i word = _mm256_castps_si256(values);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(word, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_add_epi32(word, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
    const __m256i quiet = _mm256_or_si256(word, _mm256_set1_epi32(0x00400000));
    const __m256 nan = _mm256_cmp_ps(values, values, _CMP_UNORD_Q);
    return _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet, _mm256_castps_si256(nan)), 16);
}

/* out[j] = bfloat16 of low[j] and out[8 + j] of high[j], j < 8 */
static inline void bf16_store_16(uint16_t *out, __m256 low, __m256 high) {
    /* (the pack interleaves the halves' 128-bit lanes; the permute puts them back in order) */
    const __m256i packed = _mm256_packus_epi32(bf16_round_8_in_words(low), bf16_round_8_in_words(high));
    _mm256_storeu_si256((__m256i *)out, _mm256_permute4x64_epi64(packed, 0xD8));
}

/* out[j] = bfloat16 of e[j] hi + (e[j] lo - c[j]), j < 16 (c NULL: c_constant for every j), as
 * scaled_minus (kernel_alongside_exps.h) computes each */
static inline void bf16_scaled_minus_16(uint16_t *out, const float *e, __m256 hi, __m256 lo, const float *c,
                                        __m256 c_constant) {
    __m256 values[2];
    for (int half = 0; half < 2; half++) {
        const __m256 e8 = _mm256_loadu_ps(e + 8 * half);
        const __m256 c8 = c ? _mm256_loadu_ps(c + 8 * half) : c_constant;
        values[half] = _mm256_fmadd_ps(e8, hi, _mm256_fmsub_ps(e8, lo, c8));
    }
    bf16_store_16(out, values[0], values[1]);
}

#endif
