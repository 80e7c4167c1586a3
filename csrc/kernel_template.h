/* kernel_template.h: the row kernels, written once for one logit type and one instruction set.
 *
 * softmax_ce_c/_build.py makes one translation unit per (instruction set, type): it includes an
 * isa_*.h (a target pragma, ISA_NAME), a type_*.h, then this file. A type_*.h defines
 *   STORAGE           the element type of logits and outputs (float, double, or uint16_t bits)
 *   TARGET            the element type of probability targets (float, or double for double logits)
 *   LOAD(v), STORE(d) STORAGE to double and back (one rounding)
 *   TYPE_NAME         f32, f64, f16 or bf16
 *   EXP_DIFFERENCE    exp(x - m) accurate for that type (exp_difference.h)
 *   COMPENSATED_SUMS  1 to keep the rounding errors of row sums (needed for double logits)
 *   FLOAT_EXP         1 to evaluate exp in float when the logits are uncapped floats (float32 only)
 * The functions defined here are named sce_<function>_<type>_<isa>; dispatch.c exports them under
 * the names of softmax_ce.h, choosing the instruction set once. All arithmetic is in double (but the
 * exp of float32 logits, see FLOAT_EXP); STORAGE is only what is read and written. Rows are shared
 * out to threads in chunks (thread_pool.h); each row's result is independent of the chunking.
 *
 * Every row goes through the same statistics of its logits x' (after the optional softcap): the max
 * m, the first index a holding it (its exp is exactly 1) and rest = sum over k != a of exp(x'_k - m).
 * The row's sum is 1 + rest, its log is log1p(rest), and 1 - softmax_a is rest / (1 + rest): all
 * accurate when rest is tiny, which is exactly when a confident model's loss and target gradient
 * would otherwise cancel.
 *
 * The loss of a row is sum_k c_k (lse - x'_k) for target coefficients c_k (a class index, label
 * smoothing and class weights all reduce to some c), and its gradient is p_k T - c_k with T = sum c_k.
 * Writing (lse - x'_k) as (m - x'_k) + log1p(rest) keeps every term >= 0: no cancellation. */

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "exp_difference.h"
#include "softmax_ce.h"
#include "thread_pool.h"

#define KERNEL_CONCAT(name, type, isa) name##_##type##_##isa
#define KERNEL_EXPAND(name, type, isa) KERNEL_CONCAT(name, type, isa)
#define KERNEL_NAME(name) KERNEL_EXPAND(name, TYPE_NAME, ISA_NAME)

/* Blocks of the row loops are inlined with constant arguments (the lane count, store 0 or 1, softcap
 * 0 or not) so that each use gets a branch-free, vectorisable copy. */
#define SPECIALISED static inline __attribute__((always_inline))

/* Row sums are kept in PARTIAL_SUMS independent lanes: that fixes the order of the additions, whatever
 * the compiler, and lets it keep several in flight. With COMPENSATED_SUMS (double logits) each lane
 * also keeps its rounding error (TwoSum), since a double sum of double terms would otherwise lose
 * about sqrt(K) ulp; float logits have 29 spare bits in a double and need no such care. */
#define PARTIAL_SUMS 16

typedef struct {
    double sum[PARTIAL_SUMS];
    double carry[PARTIAL_SUMS]; /* the rounding errors of sum; zero unless COMPENSATED_SUMS */
} partial_sums;

/* sum + term, its rounding error (Knuth's TwoSum) added to carry */
static inline void add_with_carry(double *sum, double *carry, double term) {
    const double s = *sum + term, term_part = s - *sum;
    *carry += (*sum - (s - term_part)) + (term - term_part);
    *sum = s;
}

static inline void add_to_sum(double *sum, double *carry, double term) {
    if (COMPENSATED_SUMS)
        add_with_carry(sum, carry, term);
    else
        *sum += term;
}

/* an infinite term leaves a NaN carry; the sum alone is then the answer */
static inline double with_carry(double sum, double carry) {
    return isfinite(sum) ? sum + carry : sum;
}

/* The loops below visit a row in blocks of PARTIAL_SUMS elements, element j of a block going to
 * lane j: a fixed order, and a block body the compiler can vectorise. */
static inline void add_to_lane(partial_sums *sums, int lane, double term) {
    add_to_sum(&sums->sum[lane], &sums->carry[lane], term);
}

static double total_of(const partial_sums *sums) {
    double sum = 0.0, carry = 0.0;
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        add_to_sum(&sum, &carry, sums->sum[j]);
        carry += sums->carry[j];
    }
    return with_carry(sum, carry);
}

/* The logit as the loss sees it, x' = softcap tanh(x / softcap), and its slope dx'/dx = 1 - tanh^2.
 * From m = expm1(-2 |u|), u = x / softcap: tanh |u| = -m / (2 + m) and 1 - tanh^2 = 4 (1 + m) /
 * (2 + m)^2, both free of cancellation, and in plain arithmetic the compiler can vectorise. */
typedef struct {
    double value, slope;
} capped_logit;

static inline capped_logit softcapped(double x, double softcap) {
    const double u = x / softcap, m = expm1_of_nonpositive(-2.0 * fabs(u)), two_plus_m = 2.0 + m;
    return (capped_logit){softcap * copysign(-m / two_plus_m, u), 4.0 * (1.0 + m) / (two_plus_m * two_plus_m)};
}

/* x' (x itself when softcap is 0) */
static inline double capped(double x, double softcap) {
    return softcap > 0 ? softcapped(x, softcap).value : x;
}

typedef struct {
    double max;     /* the row max of x'; NaN is skipped here and reaches the result through rest */
    int64_t argmax; /* the first index holding max */
    double rest;    /* sum of exp(x'_k - max) over k != argmax; NaN when max is not finite (a +inf
                       logit, or none finite), which makes the whole row NaN */
    double log_sum; /* log1p(rest): lse = max + log_sum */
} row_stats;

/* Per lane j: the largest x[k + j] seen, and the k of the block where it was first seen. */
SPECIALISED void max_block(double lane_max[PARTIAL_SUMS], int64_t lane_block[PARTIAL_SUMS], const STORAGE *x,
                           int64_t block, int lanes) {
    for (int j = 0; j < lanes; j++) {
        const double value = LOAD(x[block + j]);
        const int larger = value > lane_max[j];
        lane_max[j] = larger ? value : lane_max[j];
        lane_block[j] = larger ? block : lane_block[j];
    }
}

#if FLOAT_EXP && (defined(__AVX512F__) || defined(__AVX2__))
#include <immintrin.h>
#define VECTOR_ROW_MAX 1
_Static_assert(PARTIAL_SUMS == 16, "the vector row max keeps 16 float lanes");

/* max_block over the whole blocks of float logits with 16 float lanes in registers (GCC does not
 * vectorise max_block's select-reduction); returns where it stopped. Lane maxima stay floats,
 * exactly; block starts are int32, so a row longer than 2^31 finishes in max_block. A compare and
 * a select chained on one register would take several cycles per block: CHAINS registers take
 * turns, and are merged at the end (the larger value, or the same value seen in an earlier block). */
#define CHAINS 4

static void merge_chain(double lane_max[PARTIAL_SUMS], int64_t lane_block[PARTIAL_SUMS], const float maxima[16],
                        const int32_t blocks[16]) {
    for (int j = 0; j < 16; j++)
        if (maxima[j] > lane_max[j] || (maxima[j] == lane_max[j] && blocks[j] < lane_block[j])) {
            lane_max[j] = maxima[j];
            lane_block[j] = blocks[j];
        }
}

#if defined(__AVX512F__)
typedef struct {
    __m512 max;
    __m512i block;
} max_chain;

static inline max_chain new_chain(void) { return (max_chain){_mm512_set1_ps(-INFINITY), _mm512_setzero_si512()}; }

static inline void chain_step(max_chain *chain, const float *x, int64_t k) {
    const __m512 value = _mm512_loadu_ps(x + k);
    const __mmask16 larger = _mm512_cmp_ps_mask(value, chain->max, _CMP_GT_OQ); /* false for NaN */
    chain->max = _mm512_mask_mov_ps(chain->max, larger, value);
    chain->block = _mm512_mask_mov_epi32(chain->block, larger, _mm512_set1_epi32((int32_t)k));
}

static inline void chain_store(float maxima[16], int32_t blocks[16], const max_chain *chain) {
    _mm512_storeu_ps(maxima, chain->max);
    _mm512_storeu_si512(blocks, chain->block);
}
#else
typedef struct {
    __m256 max[2];
    __m256i block[2];
} max_chain;

static inline max_chain new_chain(void) {
    const __m256 low = _mm256_set1_ps(-INFINITY);
    return (max_chain){{low, low}, {_mm256_setzero_si256(), _mm256_setzero_si256()}};
}

static inline void chain_step(max_chain *chain, const float *x, int64_t k) {
    const __m256i start = _mm256_set1_epi32((int32_t)k);
    for (int half = 0; half < 2; half++) {
        const __m256 value = _mm256_loadu_ps(x + k + 8 * half);
        const __m256 larger = _mm256_cmp_ps(value, chain->max[half], _CMP_GT_OQ); /* false for NaN */
        chain->max[half] = _mm256_blendv_ps(chain->max[half], value, larger);
        chain->block[half] = _mm256_blendv_epi8(chain->block[half], start, _mm256_castps_si256(larger));
    }
}

static inline void chain_store(float maxima[16], int32_t blocks[16], const max_chain *chain) {
    for (int half = 0; half < 2; half++) {
        _mm256_storeu_ps(maxima + 8 * half, chain->max[half]);
        _mm256_storeu_si256((__m256i *)(blocks + 8 * half), chain->block[half]);
    }
}
#endif

static int64_t max_blocks_of_floats(double lane_max[PARTIAL_SUMS], int64_t lane_block[PARTIAL_SUMS],
                                    const float *x, int64_t n_classes) {
    max_chain chains[CHAINS];
    for (int c = 0; c < CHAINS; c++) chains[c] = new_chain();
    int64_t k = 0;
    for (; k + 16 * CHAINS <= n_classes && k + 16 * CHAINS < INT32_MAX; k += 16 * CHAINS)
        for (int c = 0; c < CHAINS; c++) chain_step(&chains[c], x, k + 16 * c);
    for (; k + 16 <= n_classes && k + 16 < INT32_MAX; k += 16) chain_step(&chains[0], x, k);
    for (int c = 0; c < CHAINS; c++) {
        float maxima[16];
        int32_t blocks[16];
        chain_store(maxima, blocks, &chains[c]);
        merge_chain(lane_max, lane_block, maxima, blocks);
    }
    return k;
}
#endif

/* The max and the first index holding it, in one pass: each lane keeps its own max and where it
 * first saw it, and the first index is the smallest among the lanes holding the max. (GCC 12 keeps
 * this select-reduction scalar; float logits take the vector path above on AVX2 and AVX-512.)
 * Comparisons with NaN are false, so NaN is never the max (it reaches the result through rest); a
 * row of NaN and -inf has max -inf, which makes it NaN. softcap is monotonic: the max of x' is the
 * capped max of x. */
static void find_row_max(row_stats *stats, const STORAGE *x, int64_t n_classes, double softcap) {
    double lane_max[PARTIAL_SUMS];
    int64_t lane_block[PARTIAL_SUMS];
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        lane_max[j] = -INFINITY;
        lane_block[j] = 0;
    }
    int64_t k = 0;
#ifdef VECTOR_ROW_MAX
    k = max_blocks_of_floats(lane_max, lane_block, x, n_classes);
#endif
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS) max_block(lane_max, lane_block, x, k, PARTIAL_SUMS);
    max_block(lane_max, lane_block, x, k, (int)(n_classes - k));
    double max = lane_max[0];
    for (int j = 1; j < PARTIAL_SUMS; j++) max = lane_max[j] > max ? lane_max[j] : max;
    int64_t argmax = n_classes;
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        const int64_t index = lane_block[j] + j;
        if (lane_max[j] == max && index < argmax) argmax = index;
    }
    stats->max = capped(max, softcap);
    stats->argmax = argmax < n_classes ? argmax : 0;
}


/* exp(x' - max); for uncapped float logits max is a float too, and the exp can run in float */
static inline double exp_term(double value, double max, int with_softcap) {
    return FLOAT_EXP && !with_softcap ? exp_difference_in_float((float)value, (float)max) : EXP_DIFFERENCE(value, max);
}

SPECIALISED void exp_block(partial_sums *sums, double *restrict e, double *restrict slope, const STORAGE *x,
                           int lanes, double max, double softcap, int store) {
    for (int j = 0; j < lanes; j++) {
        const capped_logit logit = softcap > 0 ? softcapped(LOAD(x[j]), softcap) : (capped_logit){LOAD(x[j]), 1.0};
        const double term = exp_term(logit.value, max, softcap > 0);
        if (store) e[j] = term;
        if (store && softcap > 0) slope[j] = logit.slope;
        add_to_lane(sums, j, term);
    }
}

/* The exp pass computes while the row max pass waits on memory: asking for the next row's block k
 * while computing this row's block k gives the memory system work during the exp pass, and the next
 * row's max pass finds its data in cache. */
static inline void prefetch_block(const STORAGE *block) {
    for (size_t byte = 0; byte < PARTIAL_SUMS * sizeof(STORAGE); byte += 64) /* 64: a cache line */
        __builtin_prefetch((const char *)block + byte, 0, 1); /* 1: into L2, not L1 */
}

SPECIALISED double exp_sum_blocks(double *restrict e, double *restrict slope, const STORAGE *x,
                                  const STORAGE *next_row, int64_t begin, int64_t end, double max, double softcap,
                                  int store) {
    partial_sums sums = {{0.0}, {0.0}};
    int64_t k = begin;
    for (; k + PARTIAL_SUMS <= end; k += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + k);
        exp_block(&sums, store ? e + k : NULL, store ? slope + k : NULL, x + k, PARTIAL_SUMS, max, softcap, store);
    }
    exp_block(&sums, store ? e + k : NULL, store ? slope + k : NULL, x + k, (int)(end - k), max, softcap, store);
    return total_of(&sums);
}

/* Sum of exp(x'_k - max) for k in [begin, end); with scratch not NULL, e_k = exp(x'_k - max) is
 * also stored in scratch[k] and, with a softcap, the slope dx'_k/dx_k in scratch[K + k].
 *   scratch   (2K) out or NULL
 *   x         (K)
 *   next_row  (K) the row computed next, to prefetch, or NULL */
static double sum_exp(double *restrict scratch, const STORAGE *x, const STORAGE *next_row, int64_t n_classes,
                      int64_t begin, int64_t end, double max, double softcap) {
    double *slope = scratch ? scratch + n_classes : NULL;
    if (softcap > 0)
        return scratch ? exp_sum_blocks(scratch, slope, x, next_row, begin, end, max, softcap, 1)
                       : exp_sum_blocks(scratch, slope, x, next_row, begin, end, max, softcap, 0);
    return scratch ? exp_sum_blocks(scratch, slope, x, next_row, begin, end, max, 0.0, 1)
                   : exp_sum_blocks(scratch, slope, x, next_row, begin, end, max, 0.0, 0);
}

/* The statistics of one row; with scratch not NULL, also what sum_exp stores there, for every k.
 * next_row (or NULL) is prefetched meanwhile. */
static row_stats compute_row_stats(double *restrict scratch, const STORAGE *x, const STORAGE *next_row,
                                   int64_t n_classes, double softcap) {
    row_stats stats;
    find_row_max(&stats, x, n_classes, softcap);
    const int64_t a = stats.argmax;
    stats.rest = sum_exp(scratch, x, next_row, n_classes, 0, a, stats.max, softcap) +
                 sum_exp(scratch, x, next_row, n_classes, a + 1, n_classes, stats.max, softcap);
    if (scratch) {
        scratch[a] = 1.0;
        if (softcap > 0) scratch[n_classes + a] = softcapped(LOAD(x[a]), softcap).slope;
    }
    if (!isfinite(stats.max)) stats.rest = NAN;
    stats.log_sum = log1p(stats.rest);
    return stats;
}

/* Rows of at most FEW_CLASSES classes are too short to vectorise along, and the fixed costs of
 * find_row_max and sum_exp (16 lanes set up and reduced) would dominate them. They are taken
 * ROW_GROUP at a time instead, transposed so that a class is a vector across the rows, with the same
 * statistics as compute_row_stats (rest summed in class order). Each row's lane is computed on its
 * own, so a row's result does not depend on the rows grouped with it. */
#define FEW_CLASSES 32
#define ROW_GROUP 16
/* GCC unrolls a loop of 16 constant trips completely before its vectoriser sees it, and the
 * unrolled body then stays scalar; kept as a loop, it becomes a few vector instructions. */
#define ACROSS_ROWS _Pragma("GCC unroll 1")

/* The statistics of n_rows <= ROW_GROUP rows from x on; with scratch not NULL, what compute_row_stats
 * stores for row r at scratch + 2 K r. */
SPECIALISED void group_stats_with(row_stats stats[ROW_GROUP], double *restrict scratch, const STORAGE *x,
                                  int64_t n_rows, int64_t n_classes, double softcap, int with_softcap) {
    double value[FEW_CLASSES][ROW_GROUP], slope[FEW_CLASSES][ROW_GROUP]; /* row r's class k at [k][r] */
    double max[ROW_GROUP], rest[ROW_GROUP], carry[ROW_GROUP];
    int64_t argmax[ROW_GROUP];
    for (int64_t k = 0; k < n_classes; k++)
        for (int r = 0; r < ROW_GROUP; r++) value[k][r] = r < n_rows ? LOAD(x[r * n_classes + k]) : 0.0;
    for (int r = 0; r < ROW_GROUP; r++) {
        max[r] = -INFINITY;
        argmax[r] = 0;
        rest[r] = carry[r] = 0.0;
    }
    for (int64_t k = 0; k < n_classes; k++) /* as find_row_max: the first index of the largest x */
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const int larger = value[k][r] > max[r];
            max[r] = larger ? value[k][r] : max[r];
            argmax[r] = larger ? k : argmax[r];
        }
    if (with_softcap) {
        for (int r = 0; r < ROW_GROUP; r++) max[r] = softcapped(max[r], softcap).value;
        for (int64_t k = 0; k < n_classes; k++)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
                const capped_logit logit = softcapped(value[k][r], softcap);
                value[k][r] = logit.value;
                slope[k][r] = logit.slope;
            }
    }
    for (int64_t k = 0; k < n_classes; k++) /* value becomes e = exp(x' - max), exactly 1 at argmax */
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const double term = exp_term(value[k][r], max[r], with_softcap);
            add_to_sum(&rest[r], &carry[r], k == argmax[r] ? 0.0 : term);
            value[k][r] = k == argmax[r] ? 1.0 : term;
        }
    for (int r = 0; r < n_rows; r++) {
        stats[r] = (row_stats){max[r], argmax[r], isfinite(max[r]) ? with_carry(rest[r], carry[r]) : NAN, 0.0};
        stats[r].log_sum = log1p(stats[r].rest);
        if (!scratch) continue;
        double *row_scratch = scratch + 2 * n_classes * r;
        for (int64_t k = 0; k < n_classes; k++) row_scratch[k] = value[k][r];
        if (with_softcap)
            for (int64_t k = 0; k < n_classes; k++) row_scratch[n_classes + k] = slope[k][r];
    }
}

static void compute_group_stats(row_stats stats[ROW_GROUP], double *restrict scratch, const STORAGE *x,
                                int64_t n_rows, int64_t n_classes, double softcap) {
    if (softcap > 0)
        group_stats_with(stats, scratch, x, n_rows, n_classes, softcap, 1);
    else
        group_stats_with(stats, scratch, x, n_rows, n_classes, 0.0, 0);
}

/* What one row is asked to predict, as the coefficients c_k of (lse - x'_k) in its loss:
 *   class index y:  c_k = w_k * spread + [k == y] * on_target, on_target = (1 - eps) w_y
 *   probabilities:  c_k = w_k * (keep * t_k + spread),          keep = 1 - eps
 * with spread = eps / K (label smoothing) and w the class weights (all 1 when NULL). */
typedef struct {
    int64_t index;        /* the class index, or -1 for a probability row */
    const TARGET *prob;   /* (K) the probability row, or NULL */
    double on_target;     /* (1 - eps) w_y */
    double keep;          /* 1 - eps */
    double spread;        /* eps / K */
    const double *weight; /* (K) or NULL */
} row_target;

static inline double coefficient(const row_target *target, int64_t k) {
    const double w = target->weight ? target->weight[k] : 1.0;
    if (target->prob) return w * (target->keep * target->prob[k] + target->spread);
    return w * target->spread + (k == target->index ? target->on_target : 0.0);
}

/* The parts of a row's loss that depend on its target:
 *   distance = sum_k c_k (max - x'_k), every term >= 0; a zero c_k adds nothing, even at -inf
 *   total    = T = sum_k c_k */
typedef struct {
    double distance;
    double total;
} target_sums;

SPECIALISED void target_block(partial_sums *distance, partial_sums *total, const row_target *target,
                              const STORAGE *x, int64_t begin, int lanes, double max, double softcap) {
    for (int j = 0; j < lanes; j++) {
        const double c = coefficient(target, begin + j);
        add_to_lane(total, j, c);
        add_to_lane(distance, j, c != 0 ? c * (max - capped(LOAD(x[begin + j]), softcap)) : 0.0);
    }
}

SPECIALISED target_sums target_sum_blocks(const row_target *target, const STORAGE *x, int64_t n_classes,
                                          double max, double softcap) {
    partial_sums distance = {{0.0}, {0.0}}, total = {{0.0}, {0.0}};
    int64_t k = 0;
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS)
        target_block(&distance, &total, target, x, k, PARTIAL_SUMS, max, softcap);
    target_block(&distance, &total, target, x, k, (int)(n_classes - k), max, softcap);
    return (target_sums){total_of(&distance), total_of(&total)};
}

static target_sums sum_over_target(const row_target *target, const STORAGE *x, int64_t n_classes,
                                   double max, double softcap) {
    if (!target->prob && target->spread == 0) { /* a lone class index: one term */
        const double c = target->on_target;
        return (target_sums){c != 0 ? c * (max - capped(LOAD(x[target->index]), softcap)) : 0.0, c};
    }
    return softcap > 0 ? target_sum_blocks(target, x, n_classes, max, softcap)
                       : target_sum_blocks(target, x, n_classes, max, 0.0);
}

/* Per-call constants of the cross-entropy. */
typedef struct {
    int64_t n_classes;
    double softcap, z_loss;
    double weight_total; /* sum of the class weights (K without weights) */
} call_constants;

/* The gradient of one row, given what compute_row_stats stored in scratch:
 *   grad_k = slope_k * (p_k (T ce_scale + 2 z lse z_scale) - c_k ce_scale)
 * with slope_k the softcap's derivative. x is not read: grad may be the logits (in-place). */
SPECIALISED void write_gradient_rows(STORAGE *grad, const double *restrict scratch, const row_target *target,
                                     const row_stats *stats, double total, double ce_scale, double z_scale,
                                     const call_constants *call, int with_softcap) {
    const int64_t a = stats->argmax, n_classes = call->n_classes;
    const double *slope = scratch + n_classes;
    const double sum = 1.0 + stats->rest, lse = stats->max + stats->log_sum;
    const double z_part = 2.0 * call->z_loss * lse * z_scale;
    const double p_coef = (total * ce_scale + z_part) / sum;
    for (int64_t k = 0; k < n_classes; k++) {
        const double g = scratch[k] * p_coef - coefficient(target, k) * ce_scale;
        grad[k] = STORE(with_softcap ? g * slope[k] : g);
    }
    /* p_a T - c_a = ((T - c_a) - c_a rest) / sum, free of the cancellation of p_a T against c_a
     * when p_a is near 1; for a class index on the argmax, T - c_a is exactly spread * (W - w_a) */
    const double c_a = coefficient(target, a);
    const double others = a == target->index
                              ? target->spread * (call->weight_total - (target->weight ? target->weight[a] : 1.0))
                              : total - c_a;
    const double g_a = ((others - c_a * stats->rest) / sum) * ce_scale + z_part / sum;
    grad[a] = STORE(with_softcap ? g_a * slope[a] : g_a);
}

static void write_gradient(STORAGE *grad, const double *restrict scratch, const row_target *target,
                           const row_stats *stats, double total, double ce_scale, double z_scale,
                           const call_constants *call) {
    if (call->softcap > 0)
        write_gradient_rows(grad, scratch, target, stats, total, ce_scale, z_scale, call, 1);
    else
        write_gradient_rows(grad, scratch, target, stats, total, ce_scale, z_scale, call, 0);
}

static void write_zeros(STORAGE *row, int64_t n_classes) {
    for (int64_t k = 0; k < n_classes; k++) row[k] = STORE(0.0);
}

/* Checks every class target and computes the mean's denominators, before anything is written. */
static int count_targets(sce_result *result, const sce_params *params, const int64_t *target_index) {
    const int64_t n_rows = params->n_rows, n_classes = params->n_classes;
    if (!target_index) { /* probability targets: every row counts once */
        result->ce_denominator = result->z_denominator = (double)n_rows;
        return SCE_OK;
    }
    double weight_sum = 0.0;
    int64_t counted = 0;
    for (int64_t n = 0; n < n_rows; n++) {
        const int64_t y = target_index[n];
        if (y == params->ignore_index) continue;
        if (y < 0 || y >= n_classes) {
            result->bad_row = n;
            result->bad_value = y;
            return SCE_ERR_TARGET_RANGE;
        }
        counted++;
        weight_sum += params->weight ? params->weight[y] : 1.0;
    }
    result->ce_denominator = weight_sum;
    result->z_denominator = (double)counted;
    return SCE_OK;
}

static int check_cross_entropy_arguments(const sce_result *result, const sce_params *params,
                                         const int64_t *target_index, const TARGET *target_prob) {
    if (params->n_rows < 0 || params->n_classes < 1) return SCE_ERR_SHAPE;
    const int missing = (!target_index && !target_prob) || !result->row_loss ||
                        (params->z_loss != 0 && !result->row_z_loss);
    const int out_of_range = params->n_threads < 1 ||
                             !(params->label_smoothing >= 0 && params->label_smoothing <= 1) ||
                             !(params->z_loss >= 0 && isfinite(params->z_loss)) ||
                             !(params->softcap >= 0 && isfinite(params->softcap)) ||
                             params->reduction < SCE_MEAN || params->reduction > SCE_NONE;
    return missing || out_of_range ? SCE_ERR_ARGUMENT : SCE_OK;
}

static double sum_of_weights(const sce_params *params) {
    if (!params->weight) return (double)params->n_classes;
    partial_sums sums = {{0.0}, {0.0}};
    for (int64_t k = 0; k < params->n_classes; k++) add_to_lane(&sums, (int)(k % PARTIAL_SUMS), params->weight[k]);
    return total_of(&sums);
}

/* A mean over nothing (rows counted, but of total weight 0) is NaN, and so is its gradient, as in
 * PyTorch; rows ignored keep their zero gradient (so every row ignored gives a zero gradient). */
static double mean_scale(double upstream, double denominator) {
    return denominator != 0 ? upstream / denominator : NAN;
}

/* The whole of one row: its loss (and z-loss term), and with grad its gradient. known is the row's
 * statistics if computed already (with what they store in scratch), else NULL. */
static void cross_entropy_row(STORAGE *grad, double *scratch, const row_stats *known, const sce_result *result,
                              const sce_params *params, const call_constants *call, const STORAGE *logits,
                              const int64_t *target_index, const TARGET *target_prob, int64_t n) {
    const int64_t n_classes = params->n_classes;
    const double eps = params->label_smoothing;
    const STORAGE *x = logits + n * n_classes;
    STORAGE *g = grad ? grad + n * n_classes : NULL;
    double *z_term = result->row_z_loss ? &result->row_z_loss[n] : NULL;
    if (target_index && target_index[n] == params->ignore_index) {
        result->row_loss[n] = 0.0;
        if (z_term) *z_term = 0.0;
        if (g) write_zeros(g, n_classes);
        return;
    }
    row_target target = {-1, NULL, 0.0, 1.0 - eps, eps / (double)n_classes, params->weight};
    if (target_index) {
        target.index = target_index[n];
        target.on_target = (1.0 - eps) * (params->weight ? params->weight[target.index] : 1.0);
    } else {
        target.prob = target_prob + n * n_classes;
    }
    /* every read of x happens before the gradient is written: grad may be logits */
    const STORAGE *next_row = n + 1 < params->n_rows ? x + n_classes : NULL;
    const row_stats stats = known ? *known : compute_row_stats(g ? scratch : NULL, x, next_row, n_classes, call->softcap);
    const target_sums sums = sum_over_target(&target, x, n_classes, stats.max, call->softcap);
    const double lse = stats.max + stats.log_sum;
    result->row_loss[n] = sums.distance + sums.total * stats.log_sum;
    if (z_term) *z_term = call->z_loss * lse * lse;
    if (g) {
        const int mean = params->reduction == SCE_MEAN;
        const double upstream = params->row_grad_scale ? params->row_grad_scale[n] : params->grad_scale;
        const double ce_scale = mean ? mean_scale(upstream, result->ce_denominator) : upstream;
        const double z_scale = mean ? mean_scale(upstream, result->z_denominator) : upstream;
        write_gradient(g, scratch, &target, &stats, sums.total, ce_scale, z_scale, call);
    }
}

/* The sum of a call's row losses: compensated, so that the mean of a million rows is as accurate as
 * each row; in row order, whatever the threads. */
static double row_order_sum(const double *values, int64_t n) {
    double sum = 0.0, carry = 0.0;
    for (int64_t i = 0; i < n; i++) add_with_carry(&sum, &carry, values[i]);
    return with_carry(sum, carry);
}

/* Rows are shared out to threads in chunks of about CHUNK_ELEMENTS logits; a call smaller than two
 * chunks stays on the calling thread. */
#define CHUNK_ELEMENTS 32768

/* Each worker's scratch: 2K doubles per row it holds statistics for at once. */
static int64_t scratch_per_worker(int64_t n_classes) {
    return 2 * n_classes * (n_classes > FEW_CLASSES ? 1 : ROW_GROUP);
}

typedef struct {
    STORAGE *grad;
    double *scratch; /* (n_threads, scratch_per_worker): each worker's own */
    const sce_result *result;
    const sce_params *params;
    call_constants call;
    const STORAGE *logits;
    const int64_t *target_index;
    const TARGET *target_prob;
    int64_t rows_per_chunk;
} cross_entropy_job;

static void cross_entropy_chunk(void *context, int worker, int64_t chunk) {
    const cross_entropy_job *job = context;
    const int64_t begin = chunk * job->rows_per_chunk;
    const int64_t end = begin + job->rows_per_chunk < job->params->n_rows ? begin + job->rows_per_chunk
                                                                          : job->params->n_rows;
    const int64_t n_classes = job->params->n_classes;
    double *scratch = job->scratch ? job->scratch + (int64_t)worker * scratch_per_worker(n_classes) : NULL;
    if (n_classes > FEW_CLASSES) {
        for (int64_t n = begin; n < end; n++)
            cross_entropy_row(job->grad, scratch, NULL, job->result, job->params, &job->call, job->logits,
                              job->target_index, job->target_prob, n);
        return;
    }
    for (int64_t first = begin; first < end; first += ROW_GROUP) {
        const int64_t n_rows = end - first < ROW_GROUP ? end - first : ROW_GROUP;
        row_stats stats[ROW_GROUP];
        compute_group_stats(stats, scratch, job->logits + first * n_classes, n_rows, n_classes, job->call.softcap);
        for (int64_t r = 0; r < n_rows; r++)
            cross_entropy_row(job->grad, scratch ? scratch + 2 * n_classes * r : NULL, &stats[r], job->result,
                              job->params, &job->call, job->logits, job->target_index, job->target_prob, first + r);
    }
}

int KERNEL_NAME(sce_cross_entropy)(STORAGE *grad, sce_result *result, const sce_params *params,
                                   const STORAGE *logits, const int64_t *target_index,
                                   const TARGET *target_prob) {
    int status = check_cross_entropy_arguments(result, params, target_index, target_prob);
    if (status == SCE_OK) status = count_targets(result, params, target_index);
    if (status != SCE_OK) return status;

    const int64_t n_rows = params->n_rows, n_classes = params->n_classes;
    const int64_t rows_per_chunk = n_classes >= CHUNK_ELEMENTS ? 1 : CHUNK_ELEMENTS / n_classes;
    const int64_t n_chunks = (n_rows + rows_per_chunk - 1) / rows_per_chunk;
    const int n_threads = pool_threads_for(params->n_threads, n_chunks);
    double *scratch = NULL;
    if (grad && n_rows > 0) {
        scratch = malloc(sizeof(double) * (size_t)scratch_per_worker(n_classes) * (size_t)n_threads);
        if (!scratch) return SCE_ERR_MEMORY;
    }
    const cross_entropy_job job = {grad, scratch, result, params,
                                   {n_classes, params->softcap, params->z_loss, sum_of_weights(params)},
                                   logits, target_index, target_prob, rows_per_chunk};
    pool_run(n_threads, cross_entropy_chunk, (void *)&job, n_chunks);
    free(scratch);
    result->loss_sum = row_order_sum(result->row_loss, n_rows);
    result->z_loss_sum = result->row_z_loss ? row_order_sum(result->row_z_loss, n_rows) : 0.0;
    return SCE_OK;
}

static int check_shape(const sce_params *params) {
    return params->n_rows < 0 || params->n_classes < 1 ? SCE_ERR_SHAPE : SCE_OK;
}

int KERNEL_NAME(sce_logsumexp)(STORAGE *lse, const sce_params *params, const STORAGE *x) {
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    const int64_t n_classes = params->n_classes;
    for (int64_t n = 0; n < params->n_rows; n++) {
        const STORAGE *row = x + n * n_classes;
        const row_stats stats = compute_row_stats(NULL, row, NULL, n_classes, 0.0);
        double value = stats.max + stats.log_sum;
        if (isinf(stats.max)) {
            /* +inf or -inf is the answer, unless the row also holds a NaN */
            value = stats.max;
            for (int64_t k = 0; k < n_classes; k++)
                if (isnan(LOAD(row[k]))) value = NAN;
        }
        lse[n] = STORE(value);
    }
    return SCE_OK;
}

int KERNEL_NAME(sce_log_softmax)(STORAGE *out, const sce_params *params, const STORAGE *x) {
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    const int64_t n_classes = params->n_classes;
    for (int64_t n = 0; n < params->n_rows; n++) {
        const STORAGE *row = x + n * n_classes;
        STORAGE *o = out + n * n_classes;
        const row_stats stats = compute_row_stats(NULL, row, NULL, n_classes, 0.0);
        /* both terms <= 0: no cancellation */
        for (int64_t k = 0; k < n_classes; k++)
            o[k] = STORE((LOAD(row[k]) - stats.max) - stats.log_sum);
    }
    return SCE_OK;
}

int KERNEL_NAME(sce_softmax)(STORAGE *out, const sce_params *params, const STORAGE *x) {
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    const int64_t n_classes = params->n_classes;
    double *scratch = malloc(sizeof(double) * (size_t)n_classes);
    if (!scratch) return SCE_ERR_MEMORY;
    for (int64_t n = 0; n < params->n_rows; n++) {
        STORAGE *o = out + n * n_classes;
        const row_stats stats = compute_row_stats(scratch, x + n * n_classes, NULL, n_classes, 0.0);
        const double inverse_sum = 1.0 / (1.0 + stats.rest);
        for (int64_t k = 0; k < n_classes; k++) o[k] = STORE(scratch[k] * inverse_sum);
    }
    free(scratch);
    return SCE_OK;
}
