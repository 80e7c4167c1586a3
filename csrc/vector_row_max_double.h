/* vector_row_max_double.h: find_max for double logits in AVX-512 or AVX2 registers (GCC keeps the
 * select-reduction of find_max scalar, a third of a float64 pass); included by kernel_row_max.h,
 * which defines logit_max.
 *
 * Two passes, the second over data the first brought into cache: the max, in CHAINS independent
 * registers (NaN is skipped: maxpd returns its second operand, the running max, when the logit is
 * NaN), from the first aligned vector on (see classes_before_aligned); then the first index holding
 * it, compared a vector at a time. A max of -inf (no logit
 * larger) is at index 0, as in find_max. Double logits need no min (logit_max). */
#include <immintrin.h>

#define CHAINS 4

#if defined(__AVX512F__)
#define DOUBLE_LANES 8
typedef __m512d doubles;

static inline doubles load_doubles(const double *x) { return _mm512_loadu_pd(x); }
static inline doubles all_lanes(double value) { return _mm512_set1_pd(value); }
static inline doubles larger_of(doubles value, doubles max) { return _mm512_max_pd(value, max); }
static inline double largest_lane(doubles max) { return _mm512_reduce_max_pd(max); }

/* the mask of the lanes equal to value */
static inline unsigned lanes_equal(doubles x, doubles value) { return _mm512_cmp_pd_mask(x, value, _CMP_EQ_OQ); }
#else
#define DOUBLE_LANES 4
typedef __m256d doubles;

static inline doubles load_doubles(const double *x) { return _mm256_loadu_pd(x); }
static inline doubles all_lanes(double value) { return _mm256_set1_pd(value); }
static inline doubles larger_of(doubles value, doubles max) { return _mm256_max_pd(value, max); }

static inline double largest_lane(doubles max) {
    double lanes[DOUBLE_LANES];
    _mm256_storeu_pd(lanes, max);
    double largest = lanes[0];
    for (int j = 1; j < DOUBLE_LANES; j++) largest = lanes[j] > largest ? lanes[j] : largest;
    return largest;
}

static inline unsigned lanes_equal(doubles x, doubles value) {
    return (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(x, value, _CMP_EQ_OQ));
}
#endif

static logit_max vector_row_max(const double *x, int64_t n_classes) {
    doubles chains[CHAINS];
    for (int c = 0; c < CHAINS; c++) chains[c] = all_lanes(-INFINITY);
    int64_t k = classes_before_aligned(x, DOUBLE_LANES); /* see classes_before_aligned */
    if (k > 0) chains[0] = larger_of(load_doubles(x), chains[0]);
    for (; k + CHAINS * DOUBLE_LANES <= n_classes; k += CHAINS * DOUBLE_LANES)
        for (int c = 0; c < CHAINS; c++) chains[c] = larger_of(load_doubles(x + k + c * DOUBLE_LANES), chains[c]);
    for (; k + DOUBLE_LANES <= n_classes; k += DOUBLE_LANES) chains[0] = larger_of(load_doubles(x + k), chains[0]);
    for (int c = 1; c < CHAINS; c++) chains[0] = larger_of(chains[c], chains[0]);
    double max = largest_lane(chains[0]);
    for (; k < n_classes; k++) max = x[k] > max ? x[k] : max;
    if (max == -INFINITY) return (logit_max){-INFINITY, 0, -INFINITY};
    const doubles target = all_lanes(max);
    for (k = 0; k + DOUBLE_LANES <= n_classes; k += DOUBLE_LANES) {
        const unsigned equal = lanes_equal(load_doubles(x + k), target);
        if (equal) {
            const int64_t first = k + __builtin_ctz(equal);
            /* x[first], not max: a zero max has the first's sign */
            return (logit_max){x[first], first, -INFINITY};
        }
    }
    for (; k < n_classes; k++) /* the max is one of the last logits */
        if (x[k] == max) return (logit_max){x[k], k, -INFINITY};
    /* only if another thread changed x meanwhile: a wrong answer, not a crash */
    return (logit_max){max, 0, -INFINITY};
}
