/* few_classes_avx512.h: the class loops of the few-classes groups (the max and the exps of
 * kernel_few_classes_steps.h, the gradient of a lone class index of kernel_few_classes.h) for
 * float32 on AVX-512, 16 rows of a group to a register. Included by kernel_few_classes_layout.h
 * with transpose_16.h.
 *
 * GCC vectorises the portable loops, but each class's pass over the group's rows is a loop of its own:
 * the rows' maxima and sums go to memory and back for every class, with loop overhead on top (each
 * class of a row cost about 1.2 ns: 65536 rows of 2 to 32 classes, one thread). Here they stay in
 * registers across the classes: 5-8% less time for the whole call (K = 4, 10, 32).
 * The arithmetic is the portable loops': the same comparisons, sums in class order and gradient
 * products; the exps are the row path's two forms, chosen per lane (see group_exp16). */
#include <immintrin.h>

#include "vector_exp_avx512.h"

#define LANES_16 16

/* group_max's loop: the first index of the largest x, x_at_argmax, and min: the smallest x above
 * -inf (a row's NaN left out), and where that is more than 87 below the max (rare), a second loop
 * takes the smallest x whose exp is not 0. Leaving -inf out takes a comparison per class and 16
 * rows; the second loop for every row holding -inf (masked classes) cost 5-10% there at K = 64. */
static inline void group_max_16(float *max, float *min, int *argmax, float *x_at_argmax, const float *value,
                                int n_classes) {
    for (int r = 0; r < ROW_GROUP; r += LANES_16) {
        __m512 m = _mm512_set1_ps(-INFINITY), smallest = _mm512_set1_ps(INFINITY);
        __m512i a = _mm512_setzero_si512();
        for (int k = 0; k < n_classes; k++) {
            const __m512 x = _mm512_loadu_ps(value + AT(k, r));
            const __mmask16 larger = _mm512_cmp_ps_mask(x, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, larger, x);
            a = _mm512_mask_mov_epi32(a, larger, _mm512_set1_epi32(k));
            const __mmask16 above_minus_infinity = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_GT_OQ);
            smallest = _mm512_mask_min_ps(smallest, above_minus_infinity, x, smallest);
        }
        if (_mm512_cmp_ps_mask(_mm512_sub_ps(smallest, m), _mm512_set1_ps(VEXPF_SUBNORMAL_BELOW), _CMP_LT_OQ)) {
            const __m512 zero_below = _mm512_add_ps(m, _mm512_set1_ps(VEXPF_FLOOR));
            smallest = _mm512_set1_ps(INFINITY);
            for (int k = 0; k < n_classes; k++) {
                const __m512 x = _mm512_loadu_ps(value + AT(k, r));
                const __mmask16 nonzero_exp = _mm512_cmp_ps_mask(x, zero_below, _CMP_GE_OQ);
                smallest = _mm512_mask_min_ps(smallest, nonzero_exp, x, smallest);
            }
        }
        _mm512_storeu_ps(max + r, m);
        _mm512_storeu_ps(min + r, smallest);
        _mm512_storeu_si512(argmax + r, a);
        const __mmask16 found = _mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_GT_OQ);
        _mm512_storeu_ps(x_at_argmax + r, _mm512_mask_mov_ps(_mm512_loadu_ps(value + AT(0, r)), found, m));
    }
}

/* The exps of a group: exp16_of_row, with each lane's row constants, in the lanes by_row (those of
 * rows expf_row_of takes), else exp16_difference. The constants cost about 20 operations per 16
 * rows and save 7 of exp16_difference's 21 per class, so only rows of EXP16_ROW_MIN_CLASSES classes
 * or more take them (softmax on one thread, A/B medians: with them K = 2 15%, K = 3 7% and K = 6 2%
 * slower, K = 8 the same, K = 10 2% and K = 32 5% faster); fewer classes' exps are then not quite
 * the row path's. */
#define EXP16_ROW_MIN_CLASSES 8

/* rows->careful for both forms */
static inline __m512 group_exp16(__m512 x, __m512 m, const exp16_row *rows, __mmask16 by_row) {
    if (by_row == 0xFFFF) return exp16_of_row(x, rows);
    /* few classes, or rows with a max of 2^14 or more, inf or NaN */
    const __m512 e = exp16_difference(x, m, rows->careful);
    return by_row ? _mm512_mask_mov_ps(e, by_row, exp16_of_row(x, rows)) : e;
}

/* the exps of 16 rows (from r), and their rest in low and high; careful, a constant, made the rows' */
static inline void group_exps_of_16(__m512d *low, __m512d *high, float *e, const float *value, __m512 m, __m512i a,
                                    exp16_row rows, __mmask16 by_row, int r, int n_classes, int careful) {
    rows.careful = careful;
    for (int k = 0; k < n_classes; k++) {
        const __m512 e_k = group_exp16(_mm512_loadu_ps(value + AT(k, r)), m, &rows, by_row);
        _mm512_storeu_ps(e + AT(k, r), e_k);
        const __m512 term = _mm512_maskz_mov_ps(_mm512_cmpneq_epi32_mask(a, _mm512_set1_epi32(k)), e_k);
        *low = _mm512_add_pd(*low, _mm512_cvtps_pd(_mm512_castps512_ps256(term)));
        *high = _mm512_add_pd(*high, _mm512_cvtps_pd(_mm512_extractf32x8_ps(term, 1)));
    }
}

/* group_exps' loop without a softcap: e = exp(x - max), and rest in double, the argmax's term left
 * out; 16 rows with one whose exps may be subnormal (careful_exps: its min, group_max's, more than
 * 87 below its max) are all scaled in double, which gives the others the same bits */
static inline void group_exps_16(double *rest, float *e, const float *value, const float *max, const float *min,
                                 const int *argmax, int n_classes) {
    for (int r = 0; r < ROW_GROUP; r += LANES_16) {
        const __m512 m = _mm512_loadu_ps(max + r);
        const __m512i a = _mm512_loadu_si512(argmax + r);
        const __m512 spread = _mm512_sub_ps(_mm512_loadu_ps(min + r), m);
        const int careful = _mm512_cmp_ps_mask(spread, _mm512_set1_ps(VEXPF_SUBNORMAL_BELOW), _CMP_LT_OQ) != 0;
        exp16_row rows = {0}; /* only careful is read with few classes */
        const __mmask16 by_row = n_classes >= EXP16_ROW_MIN_CLASSES ? exp16_rows_of(&rows, m) : 0;
        __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd(); /* rows r.. r + 7, r + 8.. r + 15 */
        if (careful)
            group_exps_of_16(&low, &high, e, value, m, a, rows, by_row, r, n_classes, 1);
        else
            group_exps_of_16(&low, &high, e, value, m, a, rows, by_row, r, n_classes, 0);
        _mm512_storeu_pd(rest + r, low);
        _mm512_storeu_pd(rest + r + 8, high);
    }
}

/* each row's value at its class index (at class 0 where the index is -1): two gathers, where GCC 12
 * does the portable loop's gathers one scalar load at a time (some 160 instructions per group) */
static inline void group_value_at_index_16(float *at_index, const float *value, const int *index) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int r = 0; r < ROW_GROUP; r += LANES_16) {
        const __m512i k = _mm512_max_epi32(_mm512_loadu_si512(index + r), _mm512_setzero_si512());
        const __m512i at = _mm512_add_epi32(_mm512_mullo_epi32(k, _mm512_set1_epi32(ROW_GROUP)),
                                            _mm512_add_epi32(lane, _mm512_set1_epi32(r))); /* AT(k, r + lane) */
        _mm512_storeu_ps(at_index + r, _mm512_i32gather_ps(at, value, sizeof(float)));
    }
}

/* The gradient of rows with a lone class index: at_argmax at the argmax, at the other classes
 * e probability - c_target, c_target at_index at the index, else elsewhere; 0 on rows not counted. */
static inline void lone_index_gradient_16(float *grad, const float *e, const int *argmax, const int *index,
                                          const int *counted, const float *probability, const float *at_argmax,
                                          const float *at_index, const float *elsewhere, int n_classes) {
    for (int r = 0; r < ROW_GROUP; r += LANES_16) {
        const __m512i a = _mm512_loadu_si512(argmax + r), y = _mm512_loadu_si512(index + r);
        const __m512i counted_r = _mm512_loadu_si512(counted + r);
        const __mmask16 rows_counted = _mm512_test_epi32_mask(counted_r, counted_r);
        const __m512 p = _mm512_loadu_ps(probability + r), g_a = _mm512_loadu_ps(at_argmax + r);
        const __m512 g_y = _mm512_loadu_ps(at_index + r), g_0 = _mm512_loadu_ps(elsewhere + r);
        for (int k = 0; k < n_classes; k++) {
            const __m512i class_k = _mm512_set1_epi32(k);
            const __m512 c_target = _mm512_mask_mov_ps(g_0, _mm512_cmpeq_epi32_mask(y, class_k), g_y);
            const __m512 e_k = _mm512_loadu_ps(e + AT(k, r));
            const __m512 g = _mm512_mask_mov_ps(_mm512_sub_ps(_mm512_mul_ps(e_k, p), c_target),
                                                _mm512_cmpeq_epi32_mask(a, class_k), g_a);
            _mm512_storeu_ps(grad + AT(k, r), _mm512_maskz_mov_ps(rows_counted, g));
        }
    }
}
