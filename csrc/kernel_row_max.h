/* kernel_row_max.h: a row's statistics (row_stats), and the pass that reads its logits first:
 * their max, the first index holding it, and their min;
 * part of kernel_template.h, which includes the parts in order. */

typedef struct {
    double max;     /* the row max of x'; NaN is skipped here and reaches the result through rest */
    int64_t argmax; /* the first index holding max (of x: see find_max) */
    double rest;    /* sum of exp(x'_k - max) over k != argmax; NaN for a NaN row (see row_rest):
                       lse = max + log1p(rest) */
    double min;     /* logit_max's */
} row_stats;

/* Per lane j: the largest x[k + j] seen, and the k of the block where it was first seen; the
 * smallest above -inf. */
SPECIALISED void max_block(double lane_max[PARTIAL_SUMS], int64_t lane_block[PARTIAL_SUMS],
                           double lane_min[PARTIAL_SUMS], const STORAGE *x, int64_t block, int lanes) {
    for (int j = 0; j < lanes; j++) {
        const double value = LOAD(x[block + j]);
        const int larger = value > lane_max[j];
        lane_max[j] = larger ? value : lane_max[j];
        lane_block[j] = larger ? block : lane_block[j];
        lane_min[j] = value > -INFINITY && value < lane_min[j] ? value : lane_min[j];
    }
}

/* The max and the first index holding it, in one pass: each lane keeps its own max and where it
 * first saw it, and the first index is the smallest among the lanes holding the max. (GCC 12 keeps
 * this select-reduction scalar; rows of 16 or more logits take vector_row_max.h, or for double
 * logits vector_row_max_double.h, on AVX2 and AVX-512.) Comparisons with NaN are false, so NaN is
 * never the max (it reaches the result through rest, or row_rest). softcap is monotonic: the max of
 * x' is the capped max of x (found on x, so that the index is the first of the largest x). */
typedef struct {
    double value;  /* the max of x (before the softcap) */
    int64_t index; /* the first index holding it; 0 when no x is larger than -inf */
    double min;    /* FLOAT_EXP types, for tiny_products and careful_exps: the smallest x above -inf
                      (+inf if none), or where that is more than 87 below the max the smallest x of
                      exp_floor or more (masks of -inf or -1e4 are not taken for logits spread wide),
                      or any of those below spread_floor (the row is spread: both flags are set
                      whatever the min); -inf for the others, which do not need it */
} logit_max;

/* The smallest logit whose exp(x - max) may not be 0 (exp(-104) rounds to 0 in float), rounded to
 * float as the logits are (no logit lies between the two); any above -inf for a max of +inf (a NaN
 * row). A row split over threads takes each segment's min from the segment's own max, then again
 * from the row's where the segment's is below the row's exp_floor (min_of_segments): the flags,
 * which choose loops that differ in some last bits and signs of zeros, must be one thread's. */
static inline float exp_floor(double max) { return max < INFINITY ? (float)(max + VEXPF_FLOOR) : -FLT_MAX; }

/* A float below it is more than 87 below the max, so its row is spread: careful_exps and
 * tiny_products hold whatever the row's min. (float)(max - 87) itself would not do: for a max of 87
 * it is 0, and -1e-30 - 87 rounds to -87 in double. */
static inline float spread_floor(double max) { return (float)(max + VEXPF_SUBNORMAL_BELOW - 1.0); }

/* The classes before the first address in x that is a multiple of a vector of lanes logits (0 if x
 * is not aligned to its elements): fewer than lanes, so a row's first vector covers them. The row max
 * takes its vectors from there, as it may (the max does not depend on the order the logits are
 * taken in, nor on taking some twice): NumPy's large arrays start 16 bytes past a cache line, and a
 * load split over two lines costs two. */
static inline int64_t classes_before_aligned(const STORAGE *x, int lanes) {
    const uintptr_t address = (uintptr_t)x, vector = (uintptr_t)lanes * sizeof(STORAGE);
    return address % sizeof(STORAGE) ? 0 : (int64_t)((vector - address % vector) % vector / sizeof(STORAGE));
}

#if defined(__AVX512F__) || defined(__AVX2__)
#define VECTOR_ROW_MAX 1
#ifdef LOAD_16_AS_FLOATS
#include "vector_row_max.h"
#else
#include "vector_row_max_double.h"
#endif
#endif

#if defined(__AVX2__) && !defined(__AVX512F__) && defined(LOAD_16_AS_FLOATS)
/* the logits of a block of x as floats, lanes of them (lanes past them 0; AVX-512 loads masked) */
SPECIALISED floats16 load_block(const STORAGE *x, int lanes) {
    if (lanes == PARTIAL_SUMS) return LOAD_16_AS_FLOATS(x);
    float block[PARTIAL_SUMS] = {0.0f};
    for (int j = 0; j < lanes; j++) block[j] = (float)LOAD(x[j]);
    return load_16_floats(block);
}
#endif

/* logit_max's min for a row whose smallest logit is more than 87 below its max: the smallest x of
 * exp_floor(max) or more, or once one is below spread_floor(max) any such */
static double smallest_with_exp(const STORAGE *x, int64_t n_classes, double max) {
    const float floor = exp_floor(max), spread_below = spread_floor(max);
#if defined(VECTOR_ROW_MAX) && defined(LOAD_16_AS_FLOATS)
    if (n_classes >= 16) return smallest_at_least(x, n_classes, floor, spread_below);
#endif
    double min = INFINITY;
    for (int64_t k = 0; k < n_classes && !(min < spread_below); k++) {
        const double value = LOAD(x[k]);
        min = value >= floor && value < min ? value : min;
    }
    return min;
}

static logit_max find_max(const STORAGE *x, int64_t n_classes) {
#ifdef VECTOR_ROW_MAX
    if (n_classes >= 16) return vector_row_max(x, n_classes);
#endif
    double lane_max[PARTIAL_SUMS], lane_min[PARTIAL_SUMS];
    int64_t lane_block[PARTIAL_SUMS];
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        lane_max[j] = -INFINITY;
        lane_min[j] = INFINITY;
        lane_block[j] = 0;
    }
    int64_t k = 0;
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS)
        max_block(lane_max, lane_block, lane_min, x, k, PARTIAL_SUMS);
    max_block(lane_max, lane_block, lane_min, x, k, (int)(n_classes - k));
    double max = lane_max[0], min = lane_min[0];
    for (int j = 1; j < PARTIAL_SUMS; j++) {
        max = lane_max[j] > max ? lane_max[j] : max;
        min = lane_min[j] < min ? lane_min[j] : min;
    }
    int64_t argmax = n_classes;
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        const int64_t index = lane_block[j] + j;
        if (lane_max[j] == max && index < argmax) argmax = index;
    }
    if (FLOAT_EXP && min - max < VEXPF_SUBNORMAL_BELOW) min = smallest_with_exp(x, n_classes, max);
    return (logit_max){max, argmax < n_classes ? argmax : 0, FLOAT_EXP ? min : -INFINITY};
}
