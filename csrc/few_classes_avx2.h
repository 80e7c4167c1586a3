/* few_classes_avx2.h: the class loops of the few-classes groups' max and exps (group_max, group_exps
 * in kernel_few_classes_steps.h) for float lanes on AVX2 (float32 and bfloat16 logits), 8 rows of a
 * group to a register; included by kernel_few_classes_layout.h with transpose_4_avx2.h.
 *
 * GCC vectorises the portable loops, but each class's pass over the group's rows is a loop of its
 * own, the rows' maxima and sums going to memory and back for every class; here they stay in
 * registers across the classes, as in few_classes_avx512.h. The arithmetic is the portable loops',
 * the same bits: the same comparisons, exp_difference_in_float per lane (exp8_reduce, exp8_finish),
 * the sums in class order. */
#include <immintrin.h>

#include "exp_difference.h"

#define GROUP_LOOPS_8 1

/* group_max's class loop: each row's max, the first index of it, and its smallest x (a NaN left out) */
static inline void group_max_classes_8(float *max, float *min, int *argmax, const float *value, int n_classes) {
    for (int r = 0; r < ROW_GROUP; r += 8) {
        __m256 m = _mm256_set1_ps(-INFINITY), smallest = _mm256_set1_ps(INFINITY);
        __m256i a = _mm256_setzero_si256();
        for (int k = 0; k < n_classes; k++) {
            const __m256 x = _mm256_loadu_ps(value + AT(k, r));
            const __m256 larger = _mm256_cmp_ps(x, m, _CMP_GT_OQ);
            m = _mm256_blendv_ps(m, x, larger);
            a = _mm256_blendv_epi8(a, _mm256_set1_epi32(k), _mm256_castps_si256(larger));
            smallest = _mm256_min_ps(x, smallest); /* x < smallest ? x : smallest */
        }
        _mm256_storeu_ps(max + r, m);
        _mm256_storeu_ps(min + r, smallest);
        _mm256_storeu_si256((__m256i *)(argmax + r), a);
    }
}

/* exp_difference_in_float(x, m, in_double) of 8 lanes, the same bits (expf_of_nonpositive_sum: below
 * the floor d = VEXPF_ZERO_AT and lo = 0; in_double, careful_exps, 2^k applied in double, rounded once
 * by the conversion); NaN passes through. Where that takes 2^k as two float halves, a group that is
 * not careful takes it as one factor: its rows' exps that are not 0 are of logits at least max - 87,
 * so k >= -126, 2^k is normal and p 2^k one rounding, as the halves' second product; the lanes below
 * the floor (k about -167) are zeroed by a mask, as the halves round them to 0 (65536x10 A/B medians
 * on Zen 3: 0.95-0.96, the loss alone 0.92). In two steps, which group_exps_8 takes in two loops: one
 * chain of about 70 cycles per 8 exps left Zen 2's lanes waiting (presumably its small FP scheduler,
 * full of the chain's waiting operations; llvm-mca's model agreed), two shorter ones overlap (a C loop
 * over a group of 10 classes: 24 -> 19 cycles per 8 exps). */

/* the first step: the reduced argument r and k + VEXPF_ROUND (k in its low bits) */
typedef struct {
    __m256 r, shifted;
} exp8_reduced;

static inline exp8_reduced exp8_reduce(__m256 x, __m256 m) {
    const __m256 hi = _mm256_sub_ps(x, m);
    const __m256 x_part = _mm256_add_ps(hi, m);
    const __m256 lo = _mm256_sub_ps(_mm256_sub_ps(x, x_part), _mm256_add_ps(m, _mm256_sub_ps(hi, x_part)));
    const __m256 underflows = _mm256_cmp_ps(hi, _mm256_set1_ps(VEXPF_FLOOR), _CMP_LT_OQ);
    const __m256 d = _mm256_blendv_ps(hi, _mm256_set1_ps(VEXPF_ZERO_AT), underflows);
    const __m256 round = _mm256_set1_ps(VEXPF_ROUND);
    const __m256 shifted = _mm256_fmadd_ps(d, _mm256_set1_ps(VEXPF_LOG2E), round);
    const __m256 k = _mm256_sub_ps(shifted, round);
    const __m256 r = _mm256_add_ps(_mm256_fnmadd_ps(k, _mm256_set1_ps(VEXPF_LN2_HI), d),
                                   _mm256_fnmadd_ps(k, _mm256_set1_ps(VEXPF_LN2_LO), _mm256_andnot_ps(underflows, lo)));
    return (exp8_reduced){r, shifted};
}

/* the second: the polynomial and 2^k */
static inline __m256 exp8_finish(exp8_reduced reduced, int careful) {
    const __m256 r = reduced.r;
    __m256 p = _mm256_set1_ps(VEXPF_C6);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(VEXPF_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(VEXPF_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(VEXPF_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(VEXPF_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i k_int =
        _mm256_sub_epi32(_mm256_castps_si256(reduced.shifted), _mm256_castps_si256(_mm256_set1_ps(VEXPF_ROUND)));
    if (careful) { /* p 2^k in double, 4 lanes at a time */
        __m128 halves[2];
        for (int half = 0; half < 2; half++) {
            const __m128i k_half = half ? _mm256_extracti128_si256(k_int, 1) : _mm256_castsi256_si128(k_int);
            const __m256i bits = _mm256_slli_epi64(
                _mm256_add_epi64(_mm256_cvtepi32_epi64(k_half), _mm256_set1_epi64x(1023)), 52);
            const __m128 p_half = half ? _mm256_extractf128_ps(p, 1) : _mm256_castps256_ps128(p);
            halves[half] = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(p_half), _mm256_castsi256_pd(bits)));
        }
        return _mm256_set_m128(halves[1], halves[0]);
    }
    /* one factor; a NaN's shifted is not below the floor's, and its NaN p passes */
    const __m256 zeroed = _mm256_cmp_ps(reduced.shifted, _mm256_set1_ps(VEXPF_ROUND - 127.0f), _CMP_LT_OQ);
    const __m256i biased = _mm256_add_epi32(k_int, _mm256_set1_epi32(127));
    return _mm256_andnot_ps(zeroed, _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23))));
}

/* group_exps' loop without a softcap, 8 rows at a time: e = exp(x - max), and rest in double, the
 * argmax's term left out; careful (a constant) for the whole group, as the portable loop */
static inline __attribute__((always_inline)) void group_exps_8(double *rest, float *e, const float *value,
                                                               const float *max, const int *argmax, int n_classes,
                                                               int careful) {
    exp8_reduced reduced[n_classes];
    for (int r = 0; r < ROW_GROUP; r += 8) {
        const __m256 m = _mm256_loadu_ps(max + r);
        const __m256i a = _mm256_loadu_si256((const __m256i *)(argmax + r));
        __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd(); /* rows r.. r + 3, r + 4.. r + 7 */
        for (int k = 0; k < n_classes; k++) reduced[k] = exp8_reduce(_mm256_loadu_ps(value + AT(k, r)), m);
        for (int k = 0; k < n_classes; k++) {
            const __m256 e_k = exp8_finish(reduced[k], careful);
            _mm256_storeu_ps(e + AT(k, r), e_k);
            const __m256 at_argmax = _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_set1_epi32(k)));
            const __m256 term = _mm256_andnot_ps(at_argmax, e_k);
            low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(term)));
            high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(term, 1)));
        }
        _mm256_storeu_pd(rest + r, low);
        _mm256_storeu_pd(rest + r + 4, high);
    }
}
