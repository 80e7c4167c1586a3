/* f16_round_avx2.h: float16 logits in AVX2 and F16C intrinsics (the AVX2 and AVX-512 builds; the
 * latter compiled, not yet run on an AVX-512 machine): read 4 at a time as doubles for
 * the double exps of exp_double_run, where the portable exps had served them; the gradient's (and
 * log_softmax's) values written 16 at a time, each rounded once as f16_from_double (half_precision.h)
 * rounds it, where GCC had vectorised f16_from_double's integer steps with spills and shuffles (about
 * 5 cycles a value on Zen 3). Together, the whole call on Zen 3, A/B medians: 8192x1000 and 256x128256
 * 0.49 of the time on one thread, 0.54-0.55 on two. The exps and the order of the row sums changed
 * (their last double bits); the float16 results and float32 losses of 400 random calls did not. */
#ifndef F16_ROUND_AVX2_H
#define F16_ROUND_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* the 4 logits at x as doubles (exact), of which only the first left are read (the rest 0) */
static inline __m256d f16_load_4(const uint16_t *x, int64_t left) {
    if (left >= 4) return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)x)));
    uint64_t four = 0;
    memcpy(&four, x, (size_t)(left > 0 ? left : 0) * sizeof *x);
    return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_cvtsi64_si128((long long)four)));
}

/* 4 doubles rounded to odd at float's precision, as floats: the 29 bits below a float's last one
 * dropped, and the last one set where any of them was (a NaN stays a NaN). Exact as floats in
 * float's normal range; below it (or beyond it) each is a binary16 zero (or infinity) whatever the
 * float conversion's rounding. The odd last bit keeps the next rounding, to binary16, from seeing
 * a tie that the double was not (float has at least 2 * 11 + 2 bits). */
static inline __m128 f16_odd_floats_4(__m256d value) {
    const __m256i bits = _mm256_castpd_si256(value), below = _mm256_set1_epi64x(0x1FFFFFFF);
    const __m256i exact = _mm256_cmpeq_epi64(_mm256_and_si256(bits, below), _mm256_setzero_si256());
    const __m256i odd = _mm256_andnot_si256(exact, _mm256_set1_epi64x(0x20000000));
    return _mm256_cvtpd_ps(_mm256_castsi256_pd(_mm256_or_si256(_mm256_andnot_si256(below, bits), odd)));
}

/* out[j] = float16 of low[j] and out[8 + j] of high[j], j < 8, floats rounded to odd (above) */
static inline void f16_store_16_odd_floats(uint16_t *out, __m256 low, __m256 high) {
    _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(low, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    _mm_storeu_si128((__m128i *)(out + 8), _mm256_cvtps_ph(high, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* out[j] = float16 of value j of values (4 to a vector), j < 16 */
static inline void f16_store_16(uint16_t *out, const __m256d values[4]) {
    f16_store_16_odd_floats(out, _mm256_set_m128(f16_odd_floats_4(values[1]), f16_odd_floats_4(values[0])),
                            _mm256_set_m128(f16_odd_floats_4(values[3]), f16_odd_floats_4(values[2])));
}

/* out[j] = float16 of e[j] factor - c[j] (c NULL: c_constant for every j), j < 16, the product and
 * difference rounded in double as scaled_minus (kernel_alongside_exps.h) rounds them */
static inline void f16_scaled_minus_16(uint16_t *out, const double *e, __m256d factor, const double *c,
                                       __m256d c_constant) {
    __m256d values[4];
    for (int j = 0; j < 4; j++)
        values[j] = _mm256_sub_pd(_mm256_mul_pd(_mm256_loadu_pd(e + 4 * j), factor),
                                  c ? _mm256_loadu_pd(c + 4 * j) : c_constant);
    f16_store_16(out, values);
}

/* out[j] = float16 of (x[j] - max) - log_sum, j < 16, in double as log_softmax_values computes each */
static inline void f16_log_softmax_16(uint16_t *out, const uint16_t *x, __m256d max, __m256d log_sum) {
    __m256d values[4];
    for (int j = 0; j < 4; j++) values[j] = _mm256_sub_pd(_mm256_sub_pd(f16_load_4(x + 4 * j, 4), max), log_sum);
    f16_store_16(out, values);
}

#endif
