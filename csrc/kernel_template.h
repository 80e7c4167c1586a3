/* kernel_template.h: the row kernels, written once for one logit type and one instruction set.
 *
 * softmax_ce_c/_build.py makes one translation unit per (instruction set, type): it includes an
 * isa_*.h (a target pragma, ISA_NAME), a type_*.h, then this file. A type_*.h defines
 *   STORAGE           the element type of logits and outputs (float, double, or uint16_t bits)
 *   TARGET            the element type of probability targets (float, or double for double logits)
 *   LOAD(v), STORE(d) STORAGE to double and back (one rounding); STORE_FLOAT(f) from a float
 *                     (FLOAT_EXP types only)
 *   TYPE_NAME         f32, f64, f16 or bf16
 *   EXP_DIFFERENCE    exp(x - m) accurate for that type (exp_difference.h)
 *   COMPENSATED_SUMS  1 to keep the rounding errors of row sums (needed for double logits)
 *   FLOAT_EXP         1 to evaluate exp in float (float32, and bfloat16, whose 8 bits are far from
 *                     float's 24); its scratch is float then
 *   LOAD_16_AS_FLOATS for logits that floats hold exactly, the loader of the vector row max
 *                     (vector_row_max.h), and LOAD_16_AS_FLOATS_MASKED, its AVX-512 form for a
 *                     row's end; both left undefined for double logits
 *   WIDENED_BLOCKS    defined for 16-bit logits (see block_values)
 *   ROUND_16_FLOATS   optional, STORE_FLOAT of 16 floats in an __m512 to 16 STORAGE in an __m256i
 *   SCALED_MINUS_16   optional (AVX2), scaled_minus_values' loop for 16 values in intrinsics
 *   LOAD_4_AS_DOUBLES optional (AVX2), 4 logits as doubles, for exp_double_run (float16)
 *   LOG_SOFTMAX_16    optional (AVX2), log_softmax_values' loop for 16 values in intrinsics (float16)
 *   STORAGE_OF_FLOAT  optional (16-bit logits), the bits of a float that is a logit's value, for
 *                     AVX2's row max
 *   STORE_16_FLOATS   optional (16-bit logits), 16 floats (two __m256) to 16 STORAGE as STORE
 *                     rounds them (float16: floats rounded to odd, float_rounded_to_odd); for AVX2's
 *                     few-classes groups
 *   SCRATCH           the type a row's exps (and softcap slopes) are kept in between passes: float
 *                     for FLOAT_EXP types (their exps are floats already), double where the gradient
 *                     must be exact to more bits (float64, and float16's correct rounding)
 * The functions defined here are named sce_<function>_<type>_<isa>; dispatch.c exports them under
 * the names of softmax_ce.h, choosing the instruction set once. All arithmetic is in double (but the
 * exps of FLOAT_EXP types, and their gradient products); STORAGE is only what is read and written.
 * Rows are shared out to threads in chunks (thread_pool.h), or with fewer rows than threads their
 * classes are (kernel_split_classes.h); rows of few classes (takes_groups: float32 88 on AVX-512, 72
 * elsewhere; 48 the others, and 48 with options) are computed ROW_GROUP at a time, across vector
 * lanes. A row's result depends on none of this: not on the threads, the chunks or its neighbours.
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

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "exp_difference.h"
#include "vector_log.h"
#include "softmax_ce.h"
#include "stream_store.h"
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
 * From e = exp(-2 |u|), u = x / softcap, and m = e - 1 = expm1(-2 |u|): tanh |u| = -m / (2 + m) and
 * 1 - tanh^2 = 4 e / (2 + m)^2, both free of cancellation (also near saturation, where e is tiny),
 * and in plain arithmetic the compiler can vectorise. */
typedef struct {
    double value, slope;
} capped_logit;

SPECIALISED capped_logit softcapped(double x, double softcap) {
    const double u = x / softcap;
    const vexp_pair e = exp_and_expm1_of_nonpositive(-2.0 * fabs(u));
    const double inverse = 1.0 / (2.0 + e.expm1); /* one division: they are slow */
    return (capped_logit){softcap * copysign(-e.expm1 * inverse, u), 4.0 * e.exp * inverse * inverse};
}

/* tanh(u) / u = 1 + sum_j TANH_DOUBLE_Pj s^j, s = u^2 <= 1: a minimax polynomial for the relative
 * error (Remez at 60 digits, the constant term fixed at 1), 2.2e-17 (2^-55.4) with its coefficients
 * rounded; the float vector paths fit the same function to degree 11 (TANH_P, vector_softcap.h) */
#define TANH_DOUBLE_P1 -0.33333333333332943
#define TANH_DOUBLE_P2 0.13333333333292868
#define TANH_DOUBLE_P3 -0.0539682539534263
#define TANH_DOUBLE_P4 0.02186948825982455
#define TANH_DOUBLE_P5 -0.00886323245172253
#define TANH_DOUBLE_P6 0.0035921056065366963
#define TANH_DOUBLE_P7 -0.0014557213277444844
#define TANH_DOUBLE_P8 0.0005896186877134715
#define TANH_DOUBLE_P9 -0.00023804386607898702
#define TANH_DOUBLE_P10 9.476817102603895e-05
#define TANH_DOUBLE_P11 -3.6086621816495795e-05
#define TANH_DOUBLE_P12 1.234132959725971e-05
#define TANH_DOUBLE_P13 -3.4196804262498946e-06
#define TANH_DOUBLE_P14 6.544959589797327e-07
#define TANH_DOUBLE_P15 -6.269327632012473e-08

/* softcapped for |x| <= softcap (inverse = 1 / softcap): x' = x P(u^2) and 1 - tanh^2 = 1 - u^2
 * P^2, P as above; x' is all but insensitive to the rounding of u (d log P / d log s >= -0.23) */
SPECIALISED capped_logit softcapped_near(double x, double inverse) {
    const double u = x * inverse, s = u * u;
    double q = TANH_DOUBLE_P15;
    q = VEXP_FMA(q, s, TANH_DOUBLE_P14);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P13);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P12);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P11);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P10);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P9);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P8);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P7);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P6);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P5);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P4);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P3);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P2);
    q = VEXP_FMA(q, s, TANH_DOUBLE_P1);
    const double ratio = VEXP_FMA(s, q, 1.0); /* tanh(u) / u */
    return (capped_logit){x * ratio, 1.0 - (s * ratio) * ratio};
}

/* Slopes are kept in scratch times SLOPE_SCALE: a float keeps slopes down to 2^-252 to its full
 * precision (a subnormal float slope would lose digits, and the gradient it scales several of its
 * own subnormal units: fuzz seed 116935), and a double keeps them exactly either way. */
#define SLOPE_SCALE 0x1p126

/* x' (x itself when softcap is 0), in the vector loops */
SPECIALISED double capped(double x, double softcap) {
    return softcap > 0 ? softcapped(x, softcap).value : x;
}

/* the same for one value of a row (its max, its target's logit): the softcap a call, because GCC
 * computed it inline for every row, softcap or not, and selected (a division and an exp chain per
 * use, 5% of the plain pass's samples at K = 1000) */
static __attribute__((noinline)) double softcapped_value(double x, double softcap) {
    return softcapped(x, softcap).value;
}

static inline double capped_value(double x, double softcap) {
    return softcap > 0 ? softcapped_value(x, softcap) : x;
}

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

/* exp(x' - max); for FLOAT_EXP types in float (for uncapped logits, max is a float too), careful
 * (careful_exps) with 2^k applied in double */
SPECIALISED double exp_term(double value, double max, int with_softcap, int careful) {
    if (!FLOAT_EXP) return EXP_DIFFERENCE(value, max);
    return with_softcap ? expf_of_double(value - max, careful)
                        : exp_difference_in_float((float)value, (float)max, careful);
}

/* With COMPENSATED_SUMS, runs of COMPENSATED_RUN blocks are added per lane in plain double before
 * the compensated sums take them (TwoSum is about a fifth of the float64 exp pass): a run's sum of
 * two positive terms is within 2^-53 relative, the row's sum within that plus the compensated sums'
 * own error. Without, a block at a time (the order of float logits' sums stays what it was). Softcapped
 * rows take a block at a time too: GCC keeps the loop of two softcapped blocks scalar (6x slower).
 * (FLOAT_EXP logits take exp_float_runs instead, softcapped too but for the out-of-range softcaps of
 * AVX-512 and AVX2, float_runs_take_softcap.) */
#define COMPENSATED_RUN (COMPENSATED_SUMS ? 2 : 1)

/* The logits the exp pass, the target sums and the smoothing distance read, a block at a time.
 * 16-bit logits are widened to floats by the row max's vector loads first: GCC vectorises their own
 * conversion 8 logits wide, and the double loops with it (float16 ran 3x slower than float64).
 * Other logits are read where they are. */
#if defined(VECTOR_ROW_MAX) && defined(WIDENED_BLOCKS)
typedef float block_value;
_Static_assert(COMPENSATED_RUN == 1, "exp_blocks reads one widened block at a time");

SPECIALISED const float *block_values(float buffer[PARTIAL_SUMS], const STORAGE *x, int lanes) {
    if (lanes == PARTIAL_SUMS)
        store_16_floats(buffer, LOAD_16_AS_FLOATS(x));
    else
        for (int j = 0; j < lanes; j++) buffer[j] = (float)LOAD(x[j]);
    return buffer;
}

SPECIALISED double block_logit(float value) { return value; }
#else
typedef STORAGE block_value;

SPECIALISED double block_logit(STORAGE value) { return LOAD(value); }

SPECIALISED const STORAGE *block_values(STORAGE *buffer, const STORAGE *x, int lanes) {
    (void)buffer, (void)lanes;
    return x;
}
#endif

/* The blocks below leave the term of the argmax, at offset skip, out of the sums (it is the 1 of
 * 1 + rest); a compare per element is cheaper than cutting the row in two there, once skip is an
 * int of the blocks' range: AVX2 has no 64-bit compares of 8 lanes, and GCC compared the int64
 * offsets 4 at a time and packed the results (on Zen 2 a fifth of the exp pass's samples). */
SPECIALISED void exp_blocks(partial_sums *sums, SCRATCH *restrict e, SCRATCH *restrict slope, const block_value *x,
                            int lanes, int blocks, int64_t skip, double max, double softcap, int near, int store) {
    const int skip_at = skip >= 0 && skip < blocks * PARTIAL_SUMS ? (int)skip : -1;
    const double inverse = near ? 1.0 / softcap : 0.0;
    for (int j = 0; j < lanes; j++) {
        double lane_sum = 0.0; /* of the lane's terms in these blocks: see COMPENSATED_RUN */
        for (int b = 0; b < blocks; b++) {
            const int i = b * PARTIAL_SUMS + j;
            const double value = block_logit(x[i]);
            const capped_logit logit = softcap == 0 ? (capped_logit){value, 1.0}
                                       : near       ? softcapped_near(value, inverse)
                                                    : softcapped(value, softcap);
            const double term = exp_term(logit.value, max, softcap > 0, 0);
            if (store) e[i] = term;
            if (store && softcap > 0) slope[i] = logit.slope * SLOPE_SCALE;
            lane_sum += i == skip_at ? 0.0 : term;
        }
        add_to_lane(sums, j, lane_sum);
    }
}

/* whether every logit of a block is within the softcap, |x| <= softcap (not NaN) */
SPECIALISED int within_softcap(const block_value *x, int lanes, double softcap) {
    int within = 1;
    for (int j = 0; j < lanes; j++) within &= fabs(block_logit(x[j])) <= softcap;
    return within;
}

/* exp_blocks of one block; with a softcap by softcapped_near where every logit is within it (the
 * choice is the block's: lane by lane, GCC's vectors would take both ways), else by softcapped */
SPECIALISED void exp_block(partial_sums *sums, SCRATCH *restrict e, SCRATCH *restrict slope, const block_value *x,
                           int lanes, int64_t skip, double max, double softcap, int store) {
    if (softcap > 0 && within_softcap(x, lanes, softcap))
        exp_blocks(sums, e, slope, x, lanes, 1, skip, max, softcap, 1, store);
    else
        exp_blocks(sums, e, slope, x, lanes, 1, skip, max, softcap, 0, store);
}

/* The exp pass computes while the row max pass waits on memory: asking for the next row's block k
 * while computing this row's block k gives the memory system work during the exp pass, and the next
 * row's max pass finds its data in cache. Also for rows longer than L2 can hold with their exps: on
 * Zen 3 (512 KB of L2) rows of more than 256 KB without the prefetch took 1.08-1.31x the time
 * (256x128256 and 32x262144 float32, A/B medians). */
static inline void prefetch_bytes(const void *start, size_t bytes) {
    for (size_t byte = 0; byte < bytes; byte += 64) /* 64: a cache line */
        __builtin_prefetch((const char *)start + byte, 0, 1); /* 1: into L2, not L1 */
}

static inline void prefetch_block(const STORAGE *block) { prefetch_bytes(block, PARTIAL_SUMS * sizeof(STORAGE)); }

/* The row whose logits row n's exp pass prefetches (see above), or NULL: at least PREFETCH_AHEAD
 * bytes ahead, so that they have arrived when its max pass comes (the next row of 1000 float32
 * classes was too close: the loss alone ran 25% slower) */
#define PREFETCH_AHEAD 4096

static inline const STORAGE *row_to_prefetch(const STORAGE *row, int64_t n, int64_t n_rows, int64_t n_classes) {
    const int64_t ahead = 1 + PREFETCH_AHEAD / (n_classes * (int64_t)sizeof(STORAGE));
    return n + ahead < n_rows ? row + ahead * n_classes : NULL;
}

/* Pipelined rows: a row's streamed gradient waits until the next row's exp pass, which writes it a
 * part every WAITING_STEP classes (exp_float_runs, exp_double_runs): the writes, bound by memory,
 * then overlap the exps, bound by arithmetic, where one row's passes took turns (float32 out=, A/B
 * medians: 256x128256 one thread 10.6 -> 9.9 ms, two 6.9 -> 6.6; 1024x32000 9.5 -> 9.1 and 6.9 ->
 * 6.5; parts of 256 or 512 classes were slower, the call per part costing more than it saved; rows
 * of one part or less are pipelined only where lines are streamed, see pipelines_rows). The two
 * rows take the two halves of the thread's scratch. Each thread writes what waits after its last
 * chunk (cross_entropy_finish). Not in the AVX2 build: see pipelines_rows. */
#define WAITING_STEP 2048
typedef struct waiting_gradient waiting_gradient;
static void write_waiting_gradient(waiting_gradient *waiting, int64_t until);

/* Float32 and float64 on AVX-512 stream a waiting row's whole lines instead, one per 64 bytes of the
 * next row's exp pass (stream_next_line), where its gradient takes scaled_minus_values' loop (a
 * class index, smoothed with the call's spread weights or none, factors within float's range; see
 * lines_of_row): the memory then takes a line at a time, not bursts of 128 (a Xeon at 2 GHz, whose
 * memory takes fewer lines at once than the Zen 5 that chose WAITING_STEP). out= A/B medians, one
 * thread then two: float32 1024x32000 56.8 -> 45.4 ms, 37.6 -> 31.2; 256x128256 71.5 -> 66.1, 39.1
 * -> 36.4; float64 1024x32000 189 -> 145, 102 -> 88; 256x128256 203 -> 166, 108 -> 92; float32 with
 * label smoothing 0.1 1024x32000 62 -> 53, 39 -> 35; 256x128256 77 -> 58, 42 -> 34; the same with
 * weights and an ignore_index 69 -> 59, 45 -> 39; 92 -> 81, 48 -> 40. Rows of fewer classes are
 * pipelined too (see pipelines_rows). bfloat16 lines streamed so (a line from two vectors of exps,
 * or half a line per vector) were slower on that Xeon (out=, 256x128256 one thread 68-76 -> 91-92
 * ms, two 38-42 -> 47-48; 1024x32000 alike): its rows keep the parts of WAITING_STEP. */
#if (defined(STORAGE_IS_FLOAT) || defined(STORAGE_IS_DOUBLE)) && defined(__AVX512F__)
#define LINES_IN_EXP_PASS 1
#else
#define LINES_IN_EXP_PASS 0
#endif

/* whether FLOAT_EXP types' float products can take a value (a gradient factor, a target term c_k
 * t): beyond float's range it would turn a finite e * factor - c into inf, -inf or NaN; such rows
 * are computed in double instead */
SPECIALISED int fits_float(double value) { return !FLOAT_EXP || fabs(value) <= FLT_MAX; }

/* e * factor rounded once to STORAGE. FLOAT_EXP types keep their exps in float, and with FMA the
 * product stays in float too: factor split into two floats, e hi + e lo rounded once (the low part's
 * own rounding is 2^-24 of a 2^-24 correction), as the double product rounded to float would be
 * (bfloat16 then rounds that float: within its 1 ulp). */
#if FLOAT_EXP && (defined(__FMA__) || defined(__aarch64__))
typedef struct {
    float hi, lo;
} scaling;

SPECIALISED scaling scaling_of(double factor) {
    const float hi = (float)factor;
    return (scaling){hi, (float)(factor - hi)};
}

SPECIALISED STORAGE scaled(SCRATCH e, scaling factor) { return STORE_FLOAT(VEXPF_FMA(e, factor.hi, e * factor.lo)); }

/* e * factor - c: c's rounding to float and e lo - c's are within 2^-24 of c each, inside the
 * gradient's bound of 8 eps (p_k T + c_k), for c within float's range (see fits_float) */
SPECIALISED STORAGE scaled_minus(SCRATCH e, scaling factor, double c) {
    return STORE_FLOAT(VEXPF_FMA(e, factor.hi, VEXPF_FMA(e, factor.lo, -(float)c)));
}
#else
typedef struct {
    double factor;
} scaling;

SPECIALISED scaling scaling_of(double factor) { return (scaling){factor}; }

SPECIALISED STORAGE scaled(SCRATCH e, scaling factor) { return STORE(e * factor.factor); }

SPECIALISED STORAGE scaled_minus(SCRATCH e, scaling factor, double c) { return STORE(e * factor.factor - c); }
#endif

/* The lines stream_next_line writes: what gradient_values computes from e for them */
typedef struct {
    STORAGE *grad;        /* the waiting row's gradient, or NULL: not written line by line */
    const SCRATCH *e;     /* its exps */
    int64_t next, end;    /* the next line, and the end of the whole lines */
    int64_t index;        /* the class index, whose value is at_index */
    int64_t argmax;       /* whose value is at_argmax */
    scaling probability;
    const SCRATCH *minus; /* c_k target (smoothing): minus[k], or where NULL minus_constant */
    SCRATCH minus_constant;
    STORAGE at_index, at_argmax;
} streamed_lines;

/* the waiting row's lines to stream (grad NULL if none), and after the exp pass the next line */
static streamed_lines lines_to_stream(const waiting_gradient *waiting);
static void lines_streamed_until(waiting_gradient *waiting, int64_t next);

enum { LINE = CACHE_LINE / sizeof(STORAGE) }; /* the elements of a cache line of output (grad, softmax) */

#if LINES_IN_EXP_PASS
/* the next whole line of the waiting gradient, as gradient_values computes it (scaled_minus' e
 * probability - c), with the class index's and then the argmax's own values */
SPECIALISED void stream_next_line(streamed_lines *lines) {
    const int64_t k = lines->next;
    if (k >= lines->end) return;
    const uint64_t index_at = (uint64_t)(lines->index - k), argmax_at = (uint64_t)(lines->argmax - k);
#ifdef STORAGE_IS_FLOAT
    const __m512 e = _mm512_loadu_ps(lines->e + k);
    const scaling p = lines->probability;
    const __m512 c = lines->minus ? _mm512_loadu_ps(lines->minus + k) : _mm512_set1_ps(lines->minus_constant);
    __m512 g = _mm512_fmadd_ps(e, _mm512_set1_ps(p.hi), _mm512_fmsub_ps(e, _mm512_set1_ps(p.lo), c));
    if (index_at < LINE) g = _mm512_mask_mov_ps(g, (__mmask16)(1u << index_at), _mm512_set1_ps(lines->at_index));
    if (argmax_at < LINE) g = _mm512_mask_mov_ps(g, (__mmask16)(1u << argmax_at), _mm512_set1_ps(lines->at_argmax));
    _mm512_stream_ps(lines->grad + k, g);
#else
    const __m512d e = _mm512_loadu_pd(lines->e + k);
    const __m512d c = lines->minus ? _mm512_loadu_pd(lines->minus + k) : _mm512_set1_pd(lines->minus_constant);
    __m512d g = _mm512_sub_pd(_mm512_mul_pd(e, _mm512_set1_pd(lines->probability.factor)), c);
    if (index_at < LINE) g = _mm512_mask_mov_pd(g, (__mmask8)(1u << index_at), _mm512_set1_pd(lines->at_index));
    if (argmax_at < LINE) g = _mm512_mask_mov_pd(g, (__mmask8)(1u << argmax_at), _mm512_set1_pd(lines->at_argmax));
    _mm512_stream_pd(lines->grad + k, g);
#endif
    lines->next = k + LINE;
}
#endif

#include "smoothing_distance.h"

/* A row's smoothing distance taken in its exp pass (FUSED_SMOOTHING): the weights (the doubles, and
 * the floats where the call has them) and the sums, the sums as smoothing_distance takes them */
typedef struct {
    class_weights weights;
    smoothing_sums sums;
} row_smoothing;

/* Intel's cores take a microcode assist, about 45 ns for a multiplication or an FMA and 80 for a
 * vscalefps, for each vector instruction whose result is subnormal (or underflows from just above)
 * or that takes a subnormal operand; additions, conversions and masked-off lanes take none. Float32
 * rows whose logits spread over more than about 60 met them on every few vectors and ran up to 16x
 * slower (bench/input_sweep.py). Two kinds of row are told apart by their min (logit_max):
 *   careful_exps: some exps may be subnormal (x - max < -87.3): exp16_of_row (AVX-512) and
 *     expf_of_row_with then apply 2^k in double, rounded once to float by the conversion, the same
 *     bits as before;
 *   tiny_products: some e_k factor (e_k >= exp(min - max) but for the exps that are 0, unless
 *     min only shows the row spread: see logit_max) may be below 2^-100, where scaled()'s low
 *     product (2^-24 of it, or less) or the gradient is subnormal: such rows take the double loops
 *     for the gradient (15-25% slower than the float ones). Masks of -inf or -1e4 leave a row as
 *     it is (logit_max's min leaves them out).
 * The few-classes groups (kernel_few_classes.h) tell them apart in the same way, a group (or 16 rows
 * on AVX-512) for the exps, a row for the gradient, and softcapped logits there (x' - max' >=
 * -softcap - max') from softcaps above about 43. Not covered, on the row path: the exps of rows
 * whose max is 2^14 or more, or of any row on baseline x86-64, which has no FMA (both take
 * exp_difference_in_float, not expf_of_row), and softcaps above about 43 in the portable loop
 * (expf_of_double, baseline; the AVX-512 and AVX2 capped exps are double). Passing the flag to
 * those made GCC vectorise the portable exp loop 16 bytes wide, for plain rows too (AVX2 out= 25-35%
 * slower). */
SPECIALISED int careful_exps(double min, double max) { return FLOAT_EXP && min - max < VEXPF_SUBNORMAL_BELOW; }

/* floor(log2 |x|) for x below 1 (ilogb's, not its call), else 0: what bounds e x from below for the
 * exps e <= 1, or a subnormal e itself */
SPECIALISED int binary_exponent_below_1(double x) {
    const int exponent = (int)(vexp_to_bits(x) >> 52 & 0x7FF) - 1023;
    return exponent < 0 ? exponent : 0;
}

/* factor's low part in scaled() is usually 2^-24 of it, but may be far smaller (a factor 1 - 1e-20,
 * as with reduction "sum" and a confident row, has a low part of -1e-20): its product is checked too */
SPECIALISED int tiny_products(double min, double max, double factor) {
    /* a factor beyond float's range (or NaN) takes the double loops anyway, and has no float part */
    if (!FLOAT_EXP || factor == 0 || !fits_float(factor)) return 0;
    const double smallest_exp = (min - max) * VEXP_LOG2E; /* log2 of the smallest e_k but the zeros */
    const double low = factor - (float)factor;
    return smallest_exp + binary_exponent_below_1(factor) < -100 ||
           (low != 0 && smallest_exp + binary_exponent_below_1(low) < -124);
}

/* FLOAT_EXP logits: their exps are floats, and runs of up to FLOAT_RUN blocks of them (count
 * logits, the last run of a row shorter) are summed per lane in float before the double sums take
 * them (converting every block costs a sixth of the pass). A run's sum of positive terms is within
 * (FLOAT_RUN - 1) 2^-24 relative, its exps within 1.13 ulp, up to 2.26 2^-24 relative: a tiny loss
 * (log1p(rest) = rest) is within (3.26 2^-24) / (its ulp, >= 2^-24 of it) + 0.5 rounding = 3.76 ulp
 * of float32. With runs of 4 that was 5.76, and a row built for it measured 4.3 (a review found
 * it); runs of 2 cost 5-12% of the pass. With a softcap, x' and its slope are double and the exps
 * those of the differences x' - max: expf_of_double's (0.91 ulp), on AVX-512 and AVX2 capped_exp8's
 * and capped_exp4_finish's (0.55). */
#define FLOAT_RUN 2

/* Softcapped logits take two passes over each batch of CAPPED_BATCH (cap_batch, then the runs): x'
 * and its slope, then the exps of x' - max. In one pass, each 16 logits' chain of both, about 100
 * operations deep in AVX-512, left the lanes waiting (one thread, float32: 8192x1000 13.3 -> 10.7 ms,
 * 256x128256 50 -> 41 ms). */
#define CAPPED_BATCH 256

/* The runs one exp_float_run call may take where AVX2's lanes take the row: their exps together
 * (exp_float_run_in_lanes); the portable loop takes one */
#if FLOAT_EXP && defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define LANE_RUNS 2
#else
#define LANE_RUNS 1
#endif

#if FLOAT_EXP && defined(__AVX512F__)
#include "vector_exp_avx512.h"

#include "vector_softcap_avx512.h"

/* the same in AVX-512 intrinsics (vector_exp_avx512.h, vector_softcap_avx512.h); the exps by
 * capped_exp16 with a softcap, by exp16_of_row where the row has its constants (row not NULL),
 * else by exp16_difference. The lanes' double sums stay in two registers (in partial_sums they went
 * through memory after every run). */
_Static_assert(!COMPENSATED_SUMS, "FLOAT_EXP types' sums are not compensated");

typedef exp16_row float_exp_row;

static inline int float_exp_row_of(float_exp_row *row, float m, int careful) { return exp16_row_of(row, m, careful); }

typedef struct {
    __m512d low, high; /* lanes 0-7, 8-15 */
} float_run_sums;
#define NO_FLOAT_RUN_SUMS {_mm512_setzero_pd(), _mm512_setzero_pd()}

/* the lanes added pairwise, a fixed tree: 4 additions' latency where total_of's order takes 16 */
static inline double float_run_total(const float_run_sums *sums) {
    const __m512d eight = _mm512_add_pd(sums->low, sums->high);
    const __m256d four = _mm256_add_pd(_mm512_castpd512_pd256(eight), _mm512_extractf64x4_pd(eight, 1));
    const __m128d two = _mm_add_pd(_mm256_castpd256_pd128(four), _mm256_extractf128_pd(four, 1));
    return _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)));
}

/* lanes past a row's end: not read (a masked load does not fault), stored or summed */
static inline __mmask16 lanes_before(int64_t count) {
    return count >= PARTIAL_SUMS ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
}

/* x' of x[0, count) into capped, 16 at a time (lanes past count: x' of 0), and with store their
 * slopes, times SLOPE_SCALE, into slope */
SPECIALISED void cap_batch(double *capped, SCRATCH *restrict slope, const STORAGE *x, int64_t count, double softcap,
                           int store) {
    const softcap8 cap = softcap8_of(softcap, SLOPE_SCALE);
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        const __mmask16 valid = lanes_before(count - k);
        const __m512 logits = LOAD_16_AS_FLOATS_MASKED(valid, x + k);
        const __m512d low_x = _mm512_cvtps_pd(_mm512_castps512_ps256(logits));
        const __m512d high_x = _mm512_cvtps_pd(_mm512_extractf32x8_ps(logits, 1));
        const __m512d low_s = squared_u8(low_x, &cap), high_s = squared_u8(high_x, &cap);
        /* a block whose lanes are all near by the polynomial, others by exps (as AVX2's cap_block) */
        const int near = (near_lanes8(low_s) & near_lanes8(high_s)) == 0xFF;
        const capped8 low = near ? softcapped8_near(low_x, low_s, &cap) : softcapped8(low_x, &cap);
        const capped8 high = near ? softcapped8_near(high_x, high_s, &cap) : softcapped8(high_x, &cap);
        const __m512 slopes =
            _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(low.slope)), _mm512_cvtpd_ps(high.slope), 1);
        if (store) _mm512_mask_storeu_ps(slope + k, valid, slopes);
        _mm512_storeu_pd(capped + k, low.value);
        _mm512_storeu_pd(capped + k + 8, high.value);
    }
}

/* the exps of 16 softcapped logits from their x' */
static inline __m512 capped_exp16(const double *capped, __m512d max) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(capped_exp8(_mm512_sub_pd(_mm512_loadu_pd(capped), max))),
                              capped_exp8(_mm512_sub_pd(_mm512_loadu_pd(capped + 8), max)), 1);
}

/* lines (or NULL) takes a line per block */
SPECIALISED void exp_float_run(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x, const STORAGE *next_row,
                               int64_t count, int64_t skip, double max, const float_exp_row *row,
                               const double *capped, smoothing_sums *smoothing, class_weights weights,
                               streamed_lines *lines, int store) {
    const __m512 m = _mm512_set1_ps((float)max);
    const __m512d capped_max = _mm512_set1_pd(max);
    __m512 run = _mm512_setzero_ps();
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + k);
#if LINES_IN_EXP_PASS
        if (lines) stream_next_line(lines);
#endif
        const __mmask16 valid = lanes_before(count - k);
        const __m512 term = capped ? capped_exp16(capped + k, capped_max)
                            : row  ? exp16_of_row(LOAD_16_AS_FLOATS_MASKED(valid, x + k), row)
                                   : exp16_difference(LOAD_16_AS_FLOATS_MASKED(valid, x + k), m, 0);
        if (store) _mm512_mask_storeu_ps(e + k, valid, term);
        if (smoothing) add_smoothing_block_at(smoothing, weights, x + k, k, count - k, capped_max);
        const __mmask16 at_skip = skip >= k && skip < k + PARTIAL_SUMS ? (__mmask16)(1u << (skip - k)) : 0;
        run = _mm512_mask_add_ps(run, valid & ~at_skip, run, term);
    }
    sums->low = _mm512_add_pd(sums->low, _mm512_cvtps_pd(_mm512_castps512_ps256(run)));
    sums->high = _mm512_add_pd(sums->high, _mm512_cvtps_pd(_mm512_extractf32x8_ps(run, 1)));
}
#else
typedef expf_row float_exp_row;

static inline int float_exp_row_of(float_exp_row *row, float m, int careful) {
    if (!expf_row_of(row, m)) return 0;
    row->careful = careful;
    return 1;
}

#if FLOAT_EXP && defined(__AVX2__) && defined(__FMA__)
#include "vector_exp_avx2.h"

#include "vector_softcap_avx2.h"

/* the lanes' double sums in registers, lanes 4j to 4j + 3 in lane[j] (as partial_sums they went
 * through memory after every run) */
typedef struct {
    __m256d lane[PARTIAL_SUMS / 4];
} float_run_sums;

/* (as {0} it was a memset, and rep stosq: see isa_avx2.h) */
#define NO_FLOAT_RUN_SUMS {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()}}

/* a run's float sums added to the lanes' double sums, each as add_to_lane adds it */
static inline void add_run(float_run_sums *sums, const float run[PARTIAL_SUMS]) {
    for (int half = 0; half < 2; half++) {
        const __m256 floats = _mm256_loadu_ps(run + 8 * half);
        sums->lane[2 * half] = _mm256_add_pd(sums->lane[2 * half], _mm256_cvtps_pd(_mm256_castps256_ps128(floats)));
        sums->lane[2 * half + 1] =
            _mm256_add_pd(sums->lane[2 * half + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(floats, 1)));
    }
}

static inline double float_run_total(const float_run_sums *sums) {
    partial_sums lanes = {{0.0}, {0.0}};
    for (int j = 0; j < PARTIAL_SUMS / 4; j++) _mm256_storeu_pd(lanes.sum + 4 * j, sums->lane[j]);
    return total_of(&lanes);
}

/* the slopes of a block (lanes of them), in stores of 8: a load of 8 from two stores of 4 waits for
 * them (perf put about 20% of the exp pass's samples there) */
SPECIALISED void store_slopes(SCRATCH *restrict slope, const __m128 quarters[4], int lanes) {
    float slopes[PARTIAL_SUMS];
    for (int half = 0; half < 2; half++)
        _mm256_storeu_ps(lanes == PARTIAL_SUMS ? slope + 8 * half : slopes + 8 * half,
                         _mm256_set_m128(quarters[2 * half + 1], quarters[2 * half]));
    if (lanes < PARTIAL_SUMS)
        for (int j = 0; j < lanes; j++) slope[j] = slopes[j];
}

/* x' of a block of 16 logits (lanes of them, in four quarters) into capped, and with store their
 * slopes into slope: by softcapped4_near where every lane is near (s <= 1), else by exps (the four
 * quarters' steps interleaved) */
SPECIALISED void cap_block(double *capped, SCRATCH *restrict slope, const __m256d four[4], const __m256d s[4],
                           int lanes, const softcap4 *cap, int near, int store) {
    __m128 slopes[4];
    if (near)
        for (int quarter = 0; quarter < 4; quarter++) {
            const capped4 logit = softcapped4_near(four[quarter], s[quarter], cap);
            _mm256_storeu_pd(capped + 4 * quarter, logit.value);
            slopes[quarter] = _mm256_cvtpd_ps(logit.slope);
        }
    else {
        softcap4_reduced reduced[4];
        for (int quarter = 0; quarter < 4; quarter++) reduced[quarter] = softcapped4_reduce(four[quarter], cap);
        const int normal = powers_of_2_normal(reduced[0].k, reduced[1].k, reduced[2].k, reduced[3].k);
        for (int quarter = 0; quarter < 4; quarter++) {
            const capped4 logit = normal ? softcapped4_finish(reduced[quarter], four[quarter], cap, 1)
                                         : softcapped4_finish(reduced[quarter], four[quarter], cap, 0);
            _mm256_storeu_pd(capped + 4 * quarter, logit.value);
            slopes[quarter] = _mm256_cvtpd_ps(logit.slope);
        }
    }
    if (store) store_slopes(slope, slopes, lanes);
}

/* x' of x[0, count) into capped, 16 at a time (lanes past count: x' of 0), and with store their
 * slopes, times SLOPE_SCALE, into slope */
SPECIALISED void cap_batch(double *capped, SCRATCH *restrict slope, const STORAGE *x, int64_t count, double softcap,
                           int store) {
    const softcap4 cap = softcap4_of(softcap, SLOPE_SCALE);
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const floats16 logits = load_block(x + k, lanes);
        __m256d four[4], s[4], near = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
        for (int quarter = 0; quarter < 4; quarter++) {
            const __m256 half = logits.half[quarter / 2];
            const __m128 lanes_of_quarter =
                quarter % 2 ? _mm256_extractf128_ps(half, 1) : _mm256_castps256_ps128(half);
            four[quarter] = _mm256_cvtps_pd(lanes_of_quarter);
            s[quarter] = squared_u(four[quarter], &cap);
            near = _mm256_and_pd(near, near_lanes(s[quarter]));
        }
        if (_mm256_movemask_pd(near) == 0xF)
            cap_block(capped + k, store ? slope + k : NULL, four, s, lanes, &cap, 1, store);
        else
            cap_block(capped + k, store ? slope + k : NULL, four, s, lanes, &cap, 0, store);
    }
}

/* the exps of a block of 16 softcapped logits from their x', in two registers of 8; the four
 * quarters' steps interleaved */
static inline void capped_exps_of_block(__m256 exps[2], const double *capped, __m256d max) {
    softcap4_reduced reduced[4];
    for (int quarter = 0; quarter < 4; quarter++)
        reduced[quarter] = capped_exp4_reduce(_mm256_sub_pd(_mm256_loadu_pd(capped + 4 * quarter), max));
    __m128 quarters[4];
    for (int quarter = 0; quarter < 4; quarter++) quarters[quarter] = capped_exp4_finish(reduced[quarter]);
    for (int half = 0; half < 2; half++) exps[half] = _mm256_set_m128(quarters[2 * half + 1], quarters[2 * half]);
}

/* exp_float_run_with's run in intrinsics, the same bits, for a row vector_exp_avx2.h's exps take (not
 * careful, no softcap; row) or, with a softcap, for x' (capped, as AVX-512's capped_exp16 takes it):
 * blocks of 16 lanes in two registers, the row's last partial block through a buffer. The exps of
 * the call's runs (at most LANE_RUNS, from exp_float_runs; the last may be shorter) are taken
 * together, their first steps before their second (see vector_exp_avx2.h), and each run's sums
 * added as it ends. On Zen 3, one thread, A/B medians: a block at a time took 1.05x the time of a
 * run at a time (8192x1000, 1024x32000); two runs at a time took 0.99x that with out=, 0.92-0.93x
 * for the loss alone. */
SPECIALISED void exp_float_run_in_lanes(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x,
                                        const STORAGE *next_row, int64_t count, int64_t skip, const expf8_row *row,
                                        const double *capped, double max, int store) {
    const __m256i lane_of = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int blocks = (int)((count + PARTIAL_SUMS - 1) / PARTIAL_SUMS);
    __m256 exps[LANE_RUNS * FLOAT_RUN][2];
    if (capped) {
        const __m256d capped_max = _mm256_set1_pd(max);
        for (int b = 0; b < blocks; b++) capped_exps_of_block(exps[b], capped + PARTIAL_SUMS * b, capped_max);
    } else {
        expf8_reduced reduced[LANE_RUNS * FLOAT_RUN][2];
        for (int b = 0; b < blocks; b++) {
            const int64_t k = PARTIAL_SUMS * b;
            const floats16 logits = load_block(x + k, count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS);
            for (int half = 0; half < 2; half++) reduced[b][half] = expf8_reduce(logits.half[half], row);
        }
        for (int b = 0; b < blocks; b++)
            for (int half = 0; half < 2; half++)
                exps[b][half] = expf8_finish(reduced[b][half]);
    }
    __m256 run[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < blocks; b++) {
        const int64_t k = PARTIAL_SUMS * b;
        if (next_row) prefetch_block(next_row + k);
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const int skip_lane = skip >= k && skip < k + PARTIAL_SUMS ? (int)(skip - k) : -1;
        /* (with a softcap, x' of the lanes past count are there too: cap_batch) */
        float terms[PARTIAL_SUMS];
        for (int half = 0; half < 2; half++) {
            __m256 term = exps[b][half];
            if (store) _mm256_storeu_ps(lanes == PARTIAL_SUMS ? e + k + 8 * half : terms + 8 * half, term);
            if (lanes < PARTIAL_SUMS || skip_lane >= 0) { /* lanes past the row's end add 0, as the skipped one */
                const __m256i lane = _mm256_add_epi32(lane_of, _mm256_set1_epi32(8 * half));
                const __m256i kept = _mm256_andnot_si256(_mm256_cmpeq_epi32(lane, _mm256_set1_epi32(skip_lane)),
                                                         _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), lane));
                term = _mm256_and_ps(term, _mm256_castsi256_ps(kept));
            }
            run[half] = _mm256_add_ps(run[half], term);
        }
        if (store && lanes < PARTIAL_SUMS)
            for (int j = 0; j < lanes; j++) e[k + j] = terms[j];
        if (b == FLOAT_RUN - 1 && blocks > FLOAT_RUN) { /* the first run's end */
            float sums_of_run[PARTIAL_SUMS];
            _mm256_storeu_ps(sums_of_run, run[0]);
            _mm256_storeu_ps(sums_of_run + 8, run[1]);
            add_run(sums, sums_of_run);
            run[0] = run[1] = _mm256_setzero_ps();
        }
    }
    float sums_of_run[PARTIAL_SUMS];
    _mm256_storeu_ps(sums_of_run, run[0]);
    _mm256_storeu_ps(sums_of_run + 8, run[1]);
    add_run(sums, sums_of_run);
}
#else
static inline int float_runs_take_softcap(double softcap) { return (void)softcap, 1; }

typedef partial_sums float_run_sums;
#define NO_FLOAT_RUN_SUMS {{0.0}, {0.0}}

static inline void add_run(float_run_sums *sums, const float run[PARTIAL_SUMS]) {
    for (int j = 0; j < PARTIAL_SUMS; j++) add_to_lane(sums, j, run[j]);
}

static inline double float_run_total(const float_run_sums *sums) { return total_of(sums); }

/* x' of a block (lanes of it) into capped, and with store their slopes, times SLOPE_SCALE, into slope;
 * near: every logit is within the softcap (as exp_block) */
SPECIALISED void cap_block(double *capped, SCRATCH *restrict slope, const block_value *x, int lanes, double softcap,
                           int near, int store) {
    const double inverse = 1.0 / softcap;
    for (int j = 0; j < lanes; j++) {
        const double value = block_logit(x[j]);
        const capped_logit logit = near ? softcapped_near(value, inverse) : softcapped(value, softcap);
        capped[j] = logit.value;
        if (store) slope[j] = logit.slope * SLOPE_SCALE;
    }
}

/* x' of x[0, count) into capped, and with store their slopes, times SLOPE_SCALE, into slope */
SPECIALISED void cap_batch(double *capped, SCRATCH *restrict slope, const STORAGE *x, int64_t count, double softcap,
                           int store) {
    block_value buffer[PARTIAL_SUMS];
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const block_value *values = block_values(buffer, x + k, lanes);
        if (within_softcap(values, lanes, softcap))
            cap_block(capped + k, store ? slope + k : NULL, values, lanes, softcap, 1, store);
        else
            cap_block(capped + k, store ? slope + k : NULL, values, lanes, softcap, 0, store);
    }
}
#endif

/* careful: row's (a constant, so that the loop is vectorised for one kind of exp) */
SPECIALISED void exp_float_run_with(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x,
                                    const STORAGE *next_row, int64_t count, int64_t skip, double max,
                                    const float_exp_row *row, const double *capped, int careful, int store) {
    float run[PARTIAL_SUMS] = {0.0f};
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + k);
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const int skip_lane = skip >= k && skip < k + PARTIAL_SUMS ? (int)(skip - k) : -1; /* see exp_blocks */
        for (int j = 0; j < lanes; j++) {
            float term;
            if (capped) {
                term = expf_of_double(capped[k + j] - max, 0);
            } else {
                const float logit = (float)LOAD(x[k + j]);
                term = row ? expf_of_row_with(logit, row, careful) : exp_difference_in_float(logit, (float)max, 0);
            }
            if (store) e[k + j] = term;
            run[j] += j == skip_lane ? 0.0f : term;
        }
    }
    add_run(sums, run);
}

SPECIALISED void exp_float_run(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x, const STORAGE *next_row,
                               int64_t count, int64_t skip, double max, const float_exp_row *row,
                               const double *capped, smoothing_sums *smoothing, class_weights weights,
                               streamed_lines *lines, int store) {
    (void)smoothing, (void)weights, (void)lines; /* NULL: FLOAT_EXP types stream no lines without AVX-512 */
#if FLOAT_EXP && defined(__AVX2__) && defined(__FMA__)
    if (capped) { /* (float_runs_take_softcap) */
        exp_float_run_in_lanes(sums, e, x, next_row, count, skip, NULL, capped, max, store);
        return;
    }
    if (row && !row->careful) {
        const expf8_row lanes = expf8_row_of(row);
        exp_float_run_in_lanes(sums, e, x, next_row, count, skip, &lanes, NULL, max, store);
        return;
    }
#endif
    if (row && row->careful)
        exp_float_run_with(sums, e, x, next_row, count, skip, max, row, capped, 1, store);
    else
        exp_float_run_with(sums, e, x, next_row, count, skip, max, row, capped, 0, store);
}
#endif

/* With a softcap (else NULL), x' of the run from k in [begin, end): computed a batch at a time, at
 * the batch's first run (slope: the row's, or NULL) */
SPECIALISED const double *capped_of_run(double capped[CAPPED_BATCH], SCRATCH *restrict slope, const STORAGE *x,
                                        int64_t begin, int64_t k, int64_t end, double softcap, int store) {
    if (softcap == 0) return NULL;
    const int64_t at = (k - begin) % CAPPED_BATCH;
    const int64_t count = end - k < CAPPED_BATCH ? end - k : CAPPED_BATCH;
    if (at == 0) cap_batch(capped, store ? slope + k : NULL, x + k, count, softcap, store);
    return capped + at;
}

/* runs from begin, a multiple of FLOAT_RUN blocks: a block's run position is its parity, which
 * add_smoothing_block_at reads; waiting (or NULL) is written as they go (see WAITING_STEP), or its
 * lines streamed (LINES_IN_EXP_PASS) */
SPECIALISED double exp_float_runs(SCRATCH *restrict e, SCRATCH *restrict slope, const STORAGE *x,
                                  const STORAGE *next_row, waiting_gradient *waiting, int64_t begin, int64_t end,
                                  int64_t skip, double max, const float_exp_row *row, double softcap,
                                  row_smoothing *smoothing, int store) {
    _Static_assert(FLOAT_RUN == 2, "runs of an even and an odd block");
    float_run_sums sums = NO_FLOAT_RUN_SUMS;
    /* the smoothing sums in registers meanwhile (through smoothing, in memory, they made a chain of
     * loads and stores) */
    smoothing_sums smoothing_here = smoothing ? smoothing->sums : (smoothing_sums)SMOOTHING_SUMS_ZERO;
    smoothing_sums *smoothing_sums_of = smoothing ? &smoothing_here : NULL;
    const class_weights weights = smoothing ? smoothing->weights : (class_weights){NULL, NULL};
    const int64_t run = FLOAT_RUN * PARTIAL_SUMS;
    _Static_assert(CAPPED_BATCH % (LANE_RUNS * FLOAT_RUN * PARTIAL_SUMS) == 0, "batches of whole calls");
    _Static_assert(WAITING_STEP % (LANE_RUNS * FLOAT_RUN * PARTIAL_SUMS) == 0, "steps of whole calls");
    double capped[CAPPED_BATCH];
    streamed_lines lines = LINES_IN_EXP_PASS && waiting ? lines_to_stream(waiting) : (streamed_lines){.grad = NULL};
    streamed_lines *lines_of = lines.grad ? &lines : NULL;
/* the call of count classes from k, then what waits written where a step ends there */
#define FLOAT_RUNS_AT(k, count)                                                                                        \
    exp_float_run(&sums, store ? e + (k) : NULL, x + (k), next_row ? next_row + (k) : NULL, count, skip - (k), max,   \
                  row, capped_of_run(capped, slope, x, begin, k, end, softcap, store), smoothing_sums_of,             \
                  weights_from(weights, k), lines_of, store);                                                         \
    if (waiting && !lines_of && ((k) + (count)) % WAITING_STEP == 0) write_waiting_gradient(waiting, (k) + (count))
    /* calls of LANE_RUNS runs where the lanes take them, then of one, then what is left: each
     * specialised */
    int64_t k = begin;
#if LANE_RUNS > 1
    if (softcap > 0 || (row && !row->careful))
        for (; k + LANE_RUNS * run <= end; k += LANE_RUNS * run) {
            FLOAT_RUNS_AT(k, LANE_RUNS * run);
        }
#endif
    for (; k + run <= end; k += run) {
        FLOAT_RUNS_AT(k, run);
    }
    if (k < end) {
        FLOAT_RUNS_AT(k, end - k);
    }
#undef FLOAT_RUNS_AT
    if (lines_of) lines_streamed_until(waiting, lines.next);
    if (smoothing) smoothing->sums = smoothing_here;
    return float_run_total(&sums);
}

/* Double logits (and float16's, widened, in the AVX2 version) without a softcap, where the vector
 * exps take the row (its max below 2^14): exp_blocks in intrinsics, runs of DOUBLE_RUN blocks added
 * per lane in plain double before TwoSum (within 3 2^-53 of their sum; 6% faster at 8192x1000 on
 * AVX-512 than runs of COMPENSATED_RUN), the lanes' sums and carries in registers. AVX-512 and AVX2
 * give the same bits. */
#if defined(STORAGE_IS_DOUBLE) && defined(__AVX512F__)
#include "vector_exp_double_avx512.h"
#define DOUBLE_ROW_EXPS 1

typedef exp8_row double_exp_row;

static inline int double_exp_row_of(double_exp_row *row, double m) { return exp8_row_of(row, m); }

typedef struct {
    __m512d sum[2], carry[2]; /* lanes 0-7, 8-15 */
} double_run_sums;

#define NO_DOUBLE_RUN_SUMS {{_mm512_setzero_pd(), _mm512_setzero_pd()}, {_mm512_setzero_pd(), _mm512_setzero_pd()}}

/* count <= DOUBLE_RUN * PARTIAL_SUMS logits from x; lines (or NULL) takes a line per 8 exps */
SPECIALISED void exp_double_run(double_run_sums *sums, double *restrict e, const double *x, const double *next_row,
                                int64_t count, int64_t skip, const double_exp_row *row, streamed_lines *lines,
                                int store) {
    for (int half = 0; half < 2; half++) {
        __m512d lane_sum = _mm512_setzero_pd();
        for (int64_t k = half * 8; k < count; k += PARTIAL_SUMS) {
            if (next_row && half == 0) prefetch_block(next_row + k);
            if (lines) stream_next_line(lines);
            /* lanes past the row's end: not read (a masked load does not fault), stored or summed */
            const __mmask8 valid = count - k >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (count - k)) - 1);
            const __m512d term = exp8_of_row(_mm512_maskz_loadu_pd(valid, x + k), row);
            if (store) _mm512_mask_storeu_pd(e + k, valid, term);
            const __mmask8 at_skip = skip >= k && skip < k + 8 ? (__mmask8)(1u << (skip - k)) : 0;
            lane_sum = _mm512_mask_add_pd(lane_sum, valid & ~at_skip, lane_sum, term);
        }
        /* add_with_carry, lane by lane */
        const __m512d sum = _mm512_add_pd(sums->sum[half], lane_sum), term_part = _mm512_sub_pd(sum, sums->sum[half]);
        const __m512d error = _mm512_add_pd(_mm512_sub_pd(sums->sum[half], _mm512_sub_pd(sum, term_part)),
                                            _mm512_sub_pd(lane_sum, term_part));
        sums->carry[half] = _mm512_add_pd(sums->carry[half], error);
        sums->sum[half] = sum;
    }
}

static inline double double_run_total(const double_run_sums *sums) {
    partial_sums lanes;
    for (int half = 0; half < 2; half++) {
        _mm512_storeu_pd(lanes.sum + 8 * half, sums->sum[half]);
        _mm512_storeu_pd(lanes.carry + 8 * half, sums->carry[half]);
    }
    return total_of(&lanes);
}
#elif (defined(STORAGE_IS_DOUBLE) || defined(LOAD_4_AS_DOUBLES)) && defined(__AVX2__) && defined(__FMA__)
#include "vector_exp_double_avx2.h"
#define DOUBLE_ROW_EXPS 1

/* the 4 logits at x (of which the first left are read: valid, their lanes) as doubles */
static inline __m256d load_4_as_doubles(const STORAGE *x, int64_t left, __m256i valid) {
#ifdef STORAGE_IS_DOUBLE
    return left >= 4 ? _mm256_loadu_pd(x) : _mm256_maskload_pd(x, valid);
#else
    (void)valid;
    return LOAD_4_AS_DOUBLES(x, left);
#endif
}

typedef exp4_row double_exp_row;

static inline int double_exp_row_of(double_exp_row *row, double m) { return exp4_row_of(row, m); }

typedef struct {
    __m256d sum[4], carry[4]; /* lanes 4j to 4j + 3 in [j] */
} double_run_sums;

#define NO_DOUBLE_RUN_SUMS                                                                                     \
    {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()},                     \
     {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()}}

/* the AVX-512 exp_double_run's additions: a lane past the row's end or at skip adds 0, which leaves
 * its sum of terms >= 0 as it is */
SPECIALISED void exp_double_run(double_run_sums *sums, double *restrict e, const STORAGE *x,
                                const STORAGE *next_row, int64_t count, int64_t skip, const double_exp_row *row,
                                streamed_lines *lines, int store) {
    (void)lines; /* NULL: lines are streamed on AVX-512 only */
    const __m256i lane_of = _mm256_setr_epi64x(0, 1, 2, 3);
    /* the four quarters of each block at a time, their exps' steps interleaved (exp4_reduce; two at a
     * time measured 5-9% slower on Zen 2); a lane past the row's end adds +0, which leaves its sum as
     * it was */
    __m256d lane_sum[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    for (int64_t block = 0; block < count; block += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + block);
        __m256d logits[4];
        __m256i valid[4];
        exp4_reduced reduced[4];
        int64_t at[4]; /* a quarter's first class, or for one wholly past the row's end the block's */
        for (int j = 0; j < 4; j++) {
            const int64_t k = block + 4 * j;
            at[j] = k < count ? k : block; /* (no pointer past the row's end is formed) */
            /* lanes past the row's end: not read (a masked load does not fault), stored or summed */
            valid[j] = _mm256_cmpgt_epi64(_mm256_set1_epi64x(count - k), lane_of);
            logits[j] = load_4_as_doubles(x + at[j], count - k, valid[j]);
            reduced[j] = exp4_reduce(logits[j], row);
        }
        __m256d exps[4];
        exp4_finish_block(exps, reduced, logits, row);
        for (int j = 0; j < 4; j++) {
            const int64_t k = block + 4 * j;
            const int whole = count - k >= 4;
            __m256d term = exps[j];
            if (store && whole) _mm256_storeu_pd(e + k, term);
            if (store && !whole) _mm256_maskstore_pd(e + at[j], valid[j], term);
            if (!whole) term = _mm256_and_pd(term, _mm256_castsi256_pd(valid[j]));
            if (skip >= k && skip < k + 4)
                term = _mm256_andnot_pd(
                    _mm256_castsi256_pd(_mm256_cmpeq_epi64(lane_of, _mm256_set1_epi64x(skip - k))), term);
            lane_sum[j] = _mm256_add_pd(lane_sum[j], term);
        }
    }
    for (int quarter = 0; quarter < 4; quarter++) {
        const __m256d old = sums->sum[quarter], sum = _mm256_add_pd(old, lane_sum[quarter]);
        const __m256d term_part = _mm256_sub_pd(sum, old);
        const __m256d error = _mm256_add_pd(_mm256_sub_pd(old, _mm256_sub_pd(sum, term_part)),
                                            _mm256_sub_pd(lane_sum[quarter], term_part));
        sums->carry[quarter] = _mm256_add_pd(sums->carry[quarter], error);
        sums->sum[quarter] = sum;
    }
}

static inline double double_run_total(const double_run_sums *sums) {
    partial_sums lanes;
    for (int quarter = 0; quarter < 4; quarter++) {
        _mm256_storeu_pd(lanes.sum + 4 * quarter, sums->sum[quarter]);
        _mm256_storeu_pd(lanes.carry + 4 * quarter, sums->carry[quarter]);
    }
    return total_of(&lanes);
}
#endif

#ifdef DOUBLE_ROW_EXPS
#define DOUBLE_RUN 4

SPECIALISED double exp_double_runs(double *restrict e, const STORAGE *x, const STORAGE *next_row,
                                   waiting_gradient *waiting, int64_t begin, int64_t end, int64_t skip,
                                   const double_exp_row *row, int store) {
    double_run_sums sums = NO_DOUBLE_RUN_SUMS;
    streamed_lines lines = LINES_IN_EXP_PASS && waiting ? lines_to_stream(waiting) : (streamed_lines){.grad = NULL};
    streamed_lines *lines_of = lines.grad ? &lines : NULL;
    const int64_t run = DOUBLE_RUN * PARTIAL_SUMS; /* runs, blocks, then what is left */
    int64_t k = begin;
    for (; k + run <= end; k += run) {
        exp_double_run(&sums, store ? e + k : NULL, x + k, next_row ? next_row + k : NULL, run, skip - k, row, lines_of,
                       store);
        if (waiting && !lines_of && (k + run) % WAITING_STEP == 0) write_waiting_gradient(waiting, k + run);
    }
    for (; k + PARTIAL_SUMS <= end; k += PARTIAL_SUMS)
        exp_double_run(&sums, store ? e + k : NULL, x + k, next_row ? next_row + k : NULL, PARTIAL_SUMS, skip - k, row,
                       lines_of, store);
    if (k < end)
        exp_double_run(&sums, store ? e + k : NULL, x + k, next_row ? next_row + k : NULL, end - k, skip - k, row,
                       lines_of, store);
    if (lines_of) lines_streamed_until(waiting, lines.next);
    return double_run_total(&sums);
}
#endif

SPECIALISED double exp_sum_blocks(SCRATCH *restrict e, SCRATCH *restrict slope, const STORAGE *x,
                                  const STORAGE *next_row, waiting_gradient *waiting, int64_t begin, int64_t end,
                                  int64_t skip, double max, int careful, double softcap, row_smoothing *smoothing,
                                  int store) {
#ifdef DOUBLE_ROW_EXPS
    double_exp_row row;
    if (softcap == 0 && double_exp_row_of(&row, max))
        return store ? exp_double_runs(e, x, next_row, waiting, begin, end, skip, &row, 1)
                     : exp_double_runs(e, x, next_row, waiting, begin, end, skip, &row, 0);
#endif
    if (FLOAT_EXP && (softcap == 0 || float_runs_take_softcap(softcap))) {
        float_exp_row row;
        if (softcap > 0)
            return exp_float_runs(e, slope, x, next_row, waiting, begin, end, skip, max, NULL, softcap, NULL, store);
        return float_exp_row_of(&row, (float)max, careful)
                   ? exp_float_runs(e, slope, x, next_row, waiting, begin, end, skip, max, &row, 0.0, smoothing, store)
                   : exp_float_runs(e, slope, x, next_row, waiting, begin, end, skip, max, NULL, 0.0, smoothing, store);
    }
    partial_sums sums = {{0.0}, {0.0}};
    int64_t k = begin;
    block_value buffer[PARTIAL_SUMS];
    const int64_t run = COMPENSATED_RUN * PARTIAL_SUMS;
    for (; softcap == 0 && k + run <= end; k += run) {
        if (next_row)
            for (int64_t block = k; block < k + run; block += PARTIAL_SUMS) prefetch_block(next_row + block);
        exp_blocks(&sums, store ? e + k : NULL, store ? slope + k : NULL, block_values(buffer, x + k, PARTIAL_SUMS),
                   PARTIAL_SUMS, COMPENSATED_RUN, skip - k, max, 0.0, 0, store);
    }
    for (; k + PARTIAL_SUMS <= end; k += PARTIAL_SUMS) { /* what is left of a run, then of a block */
        if (next_row) prefetch_block(next_row + k);
        exp_block(&sums, store ? e + k : NULL, store ? slope + k : NULL, block_values(buffer, x + k, PARTIAL_SUMS),
                  PARTIAL_SUMS, skip - k, max, softcap, store);
    }
    exp_block(&sums, store ? e + k : NULL, store ? slope + k : NULL, block_values(buffer, x + k, (int)(end - k)),
              (int)(end - k), skip - k, max, softcap, store);
    return total_of(&sums);
}

/* Sum of exp(x'_k - max) for k in [begin, end) but k = skip; with scratch not NULL, e_k = exp(x'_k -
 * max) is also stored in scratch[k] and, with a softcap, the slope dx'_k/dx_k in scratch[K + k].
 * min: the row's (logit_max), for careful_exps.
 *   scratch   (K, with a softcap 2K) out or NULL
 *   x         (K)
 *   next_row  (K) the row to prefetch (row_to_prefetch), or NULL
 *   waiting   the previous row's gradient to write meanwhile (see pipelines_rows), or NULL
 *   smoothing the row's smoothing sums to add to (FUSED_SMOOTHING, no softcap), or NULL */
static double sum_exp(SCRATCH *restrict scratch, const STORAGE *x, const STORAGE *next_row, waiting_gradient *waiting,
                      int64_t n_classes, int64_t begin, int64_t end, int64_t skip, double max, double min,
                      double softcap, row_smoothing *smoothing) {
    SCRATCH *slope = scratch ? scratch + n_classes : NULL;
    /* with a softcap x' - max' >= -2 softcap; the AVX-512 and AVX2 capped exps round in double (no
     * careful exps there; the portable expf_of_double meets the assists for softcaps above about 43) */
    if (softcap > 0)
        return scratch ? exp_sum_blocks(scratch, slope, x, next_row, NULL, begin, end, skip, max, 0, softcap, NULL, 1)
                       : exp_sum_blocks(scratch, slope, x, next_row, NULL, begin, end, skip, max, 0, softcap, NULL, 0);
    const int careful = careful_exps(min, max);
    if (scratch)
        return exp_sum_blocks(scratch, slope, x, next_row, waiting, begin, end, skip, max, careful, 0.0, smoothing, 1);
    return exp_sum_blocks(scratch, slope, x, next_row, waiting, begin, end, skip, max, careful, 0.0, smoothing, 0);
}

/* A row longer than SEGMENT classes is summed segment by segment, each in its own partial sums, and
 * the segment totals added in order: the same sums whether one thread takes the row or several
 * share its segments (cross_entropy_split). */
#define SEGMENT 32768
_Static_assert(SEGMENT % (FLOAT_RUN * PARTIAL_SUMS) == 0, "segments start runs (exp_float_runs)");

/* where the segment from begin ends */
static inline int64_t segment_end(int64_t begin, int64_t n_classes) {
    return begin + SEGMENT < n_classes ? begin + SEGMENT : n_classes;
}

/* sum_exp over the segment from begin, leaving out the argmax a (whose term is the 1 of 1 + rest) */
static double sum_exp_of_segment(SCRATCH *restrict scratch, const STORAGE *x, const STORAGE *next_row,
                                 waiting_gradient *waiting, int64_t n_classes, int64_t begin, int64_t a, double max,
                                 double min, double softcap, row_smoothing *smoothing) {
    return sum_exp(scratch, x, next_row, waiting, n_classes, begin, segment_end(begin, n_classes), a, max, min,
                   softcap, smoothing);
}

/* rest, or NaN for a row that is NaN: a max that is not finite (a +inf logit, or none finite), or a
 * NaN at the argmax, whose term rest leaves out (with a softcap, -inf is a finite x' = -softcap, and
 * a row of NaN and -inf has max -inf at index 0, which may hold the NaN) */
static inline double row_rest(double rest, double capped_max, double x_at_argmax) {
    return isfinite(capped_max) && x_at_argmax == x_at_argmax ? rest : NAN;
}

/* The statistics from the max and rest; the argmax's own entries of scratch. */
static row_stats finish_row_stats(SCRATCH *restrict scratch, const STORAGE *x, int64_t n_classes, logit_max max,
                                  double rest, double softcap) {
    const double capped_max = capped_value(max.value, softcap);
    const row_stats stats = {capped_max, max.index, row_rest(rest, capped_max, LOAD(x[max.index])), max.min};
    if (scratch) {
        scratch[max.index] = 1.0;
        if (softcap > 0) scratch[n_classes + max.index] = softcapped(LOAD(x[max.index]), softcap).slope * SLOPE_SCALE;
    }
    return stats;
}

/* The statistics of one row; with scratch not NULL, also what sum_exp stores there, for every k.
 * next_row (or NULL) is prefetched meanwhile, and waiting (or NULL) written; smoothing (or NULL)
 * takes the row's smoothing sums. */
static row_stats compute_row_stats(SCRATCH *restrict scratch, const STORAGE *x, const STORAGE *next_row,
                                   waiting_gradient *waiting, int64_t n_classes, double softcap,
                                   row_smoothing *smoothing) {
    const logit_max max = find_max(x, n_classes);
    double rest = 0.0;
    for (int64_t begin = 0; begin < n_classes; begin += SEGMENT)
        rest += sum_exp_of_segment(scratch, x, next_row, waiting, n_classes, begin, max.index,
                                   capped_value(max.value, softcap), max.min, softcap, smoothing);
    return finish_row_stats(scratch, x, n_classes, max, rest, softcap);
}

/* Per-call constants of the cross-entropy. */
typedef struct {
    int64_t n_classes;
    double softcap, z_loss;
    double weight_total; /* sum of the class weights (K without weights) */
    int zero_weight;     /* with label smoothing, its one reader: some class weight is 0 (class_weights.zero) */
    int stream_gradient; /* write the gradient past the caches (see STREAM_MIN_BYTES) */
    /* (K) w_k spread target for class-index rows with weights and smoothing when every row has the
     * same upstream gradient, else NULL: read instead of the double weights, half the bytes for float
     * exps (large K reads them from L3 for every row) and the same values rounded the same way */
    const SCRATCH *spread_weights;
    /* (K) the class weights as floats where label smoothing's sums take them in the exp pass
     * (FUSED_SMOOTHING) and every one is a float exactly, else NULL: half the bytes again, where a
     * row's logits, exps and the previous row's exps fill L2 with the spread weights (256x128256,
     * one thread, out=, A/B medians: 47.4 -> 40.9 ms, the plain pass 28.9) */
    const float *narrow_weights;
} call_constants;

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
    const TARGET *next_prob; /* (K) the next row's probabilities, to prefetch, or NULL */
} row_target;

/* c_k from its parts: t is 0 in a class-index row (keep t + spread is then exactly spread), and
 * at_index says whether k is its class */
static inline double coefficient_of(double w, double keep, double t, double spread, int at_index, double on_target) {
    return w * (keep * t + spread) + (at_index ? on_target : 0.0);
}

/* c_k, whether the row has weights and probabilities given as constants in loops over k (see
 * FOR_TARGET_ARRAYS) */
SPECIALISED double coefficient_with(const row_target *target, int64_t k, int with_weight, int with_prob) {
    return coefficient_of(with_weight ? target->weight[k] : 1.0, target->keep, with_prob ? target->prob[k] : 0.0,
                          target->spread, k == target->index, target->on_target);
}

static inline double coefficient(const row_target *target, int64_t k) {
    return coefficient_with(target, k, target->weight != NULL, target->prob != NULL);
}

/* expression(with_weight, with_prob) with both constants, for a loop of coefficient_with: with the
 * pointers tested inside the loop, GCC reads through a NULL one with masked loads, and a masked
 * load whose masked-off lanes would fault costs an assist of hundreds of cycles (bfloat16's
 * softcapped gradient ran 30x slower than float32's) */
#define FOR_TARGET_ARRAYS(target, expression)                                                                          \
    ((target)->weight ? ((target)->prob ? expression(1, 1) : expression(1, 0))                                       \
                      : ((target)->prob ? expression(0, 1) : expression(0, 0)))

/* The target of row n; 0 when the row is ignored. */
static int target_of_row(row_target *target, const sce_params *params, const int64_t *target_index,
                         const TARGET *target_prob, int64_t n) {
    const double eps = params->label_smoothing;
    *target = (row_target){-1, NULL, 0.0, 1.0 - eps, eps / (double)params->n_classes, params->weight, NULL};
    if (!target_index) {
        target->prob = target_prob + n * params->n_classes;
        if (n + 1 < params->n_rows) target->next_prob = target->prob + params->n_classes;
        return 1;
    }
    if (target_index[n] == params->ignore_index) return 0;
    target->index = target_index[n];
    target->on_target = (1.0 - eps) * (params->weight ? params->weight[target->index] : 1.0);
    if (eps == 0) target->weight = NULL; /* no class but y has a share: an inf or NaN weight elsewhere adds nothing */
    return 1;
}

/* The parts of a row's loss that depend on its target:
 *   distance = sum_k c_k (max - x'_k), every term >= 0; a zero c_k adds nothing, even at -inf
 *   total    = T = sum_k c_k */
typedef struct {
    double distance;
    double total;
} target_sums;

/* the block of lanes classes from begin; x from there too */
SPECIALISED void target_block(partial_sums *distance, partial_sums *total, const row_target *target,
                              const block_value *x, int64_t begin, int lanes, double max, double softcap,
                              int with_weight, int with_prob) {
    for (int j = 0; j < lanes; j++) {
        const double c = coefficient_with(target, begin + j, with_weight, with_prob);
        add_to_lane(total, j, c);
        add_to_lane(distance, j, c != 0 ? c * (max - capped(block_logit(x[j]), softcap)) : 0.0);
    }
}

SPECIALISED target_sums target_sum_blocks(const row_target *target, const STORAGE *x, int64_t n_classes,
                                          double max, double softcap, int with_weight, int with_prob) {
    partial_sums distance = {{0.0}, {0.0}}, total = {{0.0}, {0.0}};
    block_value buffer[PARTIAL_SUMS];
    int64_t k = 0;
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS) {
        /* the probabilities come from memory here, the logits from cache (see prefetch_block) */
        if (with_prob && target->next_prob) prefetch_bytes(target->next_prob + k, PARTIAL_SUMS * sizeof(TARGET));
        target_block(&distance, &total, target, block_values(buffer, x + k, PARTIAL_SUMS), k, PARTIAL_SUMS, max,
                     softcap, with_weight, with_prob);
    }
    target_block(&distance, &total, target, block_values(buffer, x + k, (int)(n_classes - k)), k,
                 (int)(n_classes - k), max, softcap, with_weight, with_prob);
    return (target_sums){total_of(&distance), total_of(&total)};
}

#if defined(__AVX2__) && !defined(__AVX512F__) && defined(LOAD_16_AS_FLOATS)
#define PROB_TARGET_SUMS_IN_LANES 1
_Static_assert(!COMPENSATED_SUMS, "float-like logits' lane sums are plain");

/* target_sum_blocks' sums for a probability row without a softcap in AVX2 registers, lanes 4j to 4j
 * + 3 in [j], the same bits: GCC kept the portable loop's sums in memory (a load-add-store chain
 * per block, and the pass took about as long as the exp pass on Zen 3). Its c_k is w (keep t +
 * spread) as coefficient_with's but for its + 0.0, which only turns a -0 into +0; neither changes
 * the sums, which start at +0 (and a sum from +0 is never -0), nor c_k != 0. So without smoothing
 * (keep 1, spread 0) c_k is w t. A lane past the row's end adds +0. */
SPECIALISED target_sums prob_target_sums(const row_target *target, const STORAGE *x, int64_t n_classes, double max,
                                         int with_weight, int with_smoothing) {
    const __m256d zero = _mm256_setzero_pd(), m = _mm256_set1_pd(max);
    const __m256d keep = _mm256_set1_pd(target->keep), spread = _mm256_set1_pd(target->spread);
    __m256d distance[PARTIAL_SUMS / 4] = {zero, zero, zero, zero}, total[PARTIAL_SUMS / 4] = {zero, zero, zero, zero};
    for (int64_t k = 0; k < n_classes; k += PARTIAL_SUMS) {
        /* the probabilities come from memory here, the logits from cache (see prefetch_block) */
        if (target->next_prob) prefetch_bytes(target->next_prob + k, PARTIAL_SUMS * sizeof(TARGET));
        const int lanes = n_classes - k < PARTIAL_SUMS ? (int)(n_classes - k) : PARTIAL_SUMS;
        const floats16 logits = load_block(x + k, lanes);
        float t_block[PARTIAL_SUMS];
        if (lanes < PARTIAL_SUMS)
            for (int j = 0; j < PARTIAL_SUMS; j++) t_block[j] = j < lanes ? target->prob[k + j] : 0.0f;
        const floats16 t = load_16_floats(lanes == PARTIAL_SUMS ? target->prob + k : t_block);
        for (int j = 0; j < PARTIAL_SUMS / 4; j++) {
            const __m256i valid =
                _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes - 4 * j), _mm256_setr_epi64x(0, 1, 2, 3));
            const __m128 t4 = j % 2 ? _mm256_extractf128_ps(t.half[j / 2], 1) : _mm256_castps256_ps128(t.half[j / 2]);
            const __m128 x4 =
                j % 2 ? _mm256_extractf128_ps(logits.half[j / 2], 1) : _mm256_castps256_ps128(logits.half[j / 2]);
            __m256d c = _mm256_cvtps_pd(t4);
            if (with_smoothing) c = _mm256_add_pd(_mm256_mul_pd(keep, c), spread);
            if (with_weight) { /* (no pointer past the row's end is formed: a quarter past it reads none) */
                const double *w = target->weight + k + (4 * j < lanes ? 4 * j : 0);
                c = _mm256_mul_pd(lanes == PARTIAL_SUMS ? _mm256_loadu_pd(w) : _mm256_maskload_pd(w, valid), c);
            }
            /* c != 0 is true for a NaN c, as _CMP_NEQ_UQ */
            __m256d term = _mm256_and_pd(_mm256_cmp_pd(c, zero, _CMP_NEQ_UQ),
                                         _mm256_mul_pd(c, _mm256_sub_pd(m, _mm256_cvtps_pd(x4))));
            if (lanes < PARTIAL_SUMS) {
                c = _mm256_and_pd(_mm256_castsi256_pd(valid), c);
                term = _mm256_and_pd(_mm256_castsi256_pd(valid), term);
            }
            total[j] = _mm256_add_pd(total[j], c);
            distance[j] = _mm256_add_pd(distance[j], term);
        }
    }
    partial_sums distances = {{0.0}, {0.0}}, totals = {{0.0}, {0.0}};
    for (int j = 0; j < PARTIAL_SUMS / 4; j++) {
        _mm256_storeu_pd(distances.sum + 4 * j, distance[j]);
        _mm256_storeu_pd(totals.sum + 4 * j, total[j]);
    }
    return (target_sums){total_of(&distances), total_of(&totals)};
}
#else
#define PROB_TARGET_SUMS_IN_LANES 0
#endif

/* A class index has T = on_target + spread W (W the weights' sum) and distance on_target (max - x'_y)
 * + spread D (smoothing_distance.h, without a softcap; from smoothing when the exp pass took it) */
static target_sums sum_over_target(const row_target *target, const STORAGE *x, const call_constants *call,
                                   double max, const row_smoothing *smoothing) {
    const int64_t n_classes = call->n_classes;
    const double softcap = call->softcap;
    if (!target->prob && (target->spread == 0 || softcap == 0)) {
        const double c = target->on_target;
        const double on_index = c != 0 ? c * (max - capped_value(LOAD(x[target->index]), softcap)) : 0.0;
        if (target->spread == 0) return (target_sums){on_index, c};
        const double distance =
            smoothing ? smoothing_total(&smoothing->sums)
                      : smoothing_distance(target->weight, call->zero_weight, x, n_classes, max);
        return (target_sums){on_index + target->spread * distance, c + target->spread * call->weight_total};
    }
#if PROB_TARGET_SUMS_IN_LANES
    if (target->prob && softcap == 0) {
        const int smoothed = target->keep != 1 || target->spread != 0;
#define PROB_TARGET_SUMS(with_weight, with_smoothing)                                                                  \
    prob_target_sums(target, x, n_classes, max, with_weight, with_smoothing)
        if (smoothed) return target->weight ? PROB_TARGET_SUMS(1, 1) : PROB_TARGET_SUMS(0, 1);
        return target->weight ? PROB_TARGET_SUMS(1, 0) : PROB_TARGET_SUMS(0, 0);
#undef PROB_TARGET_SUMS
    }
#endif
#define TARGET_SUMS(with_weight, with_prob)                                                                             \
    (softcap > 0 ? target_sum_blocks(target, x, n_classes, max, softcap, with_weight, with_prob)                      \
                 : target_sum_blocks(target, x, n_classes, max, 0.0, with_weight, with_prob))
    return FOR_TARGET_ARRAYS(target, TARGET_SUMS);
#undef TARGET_SUMS
}

/* out[j] = scaled_minus(e[j], factor, c_j) for j < count, c_j = c[j], or c_constant where c is NULL
 * (with c_constant +0 that is scaled's value: e lo - +0 changes no bit; e lo - -0 turns -0 to +0).
 * With ROUND_16_FLOATS (bfloat16 on avx512bf16) in intrinsics, 16 values rounded at a time. */
#ifdef ROUND_16_FLOATS
#if !FLOAT_EXP || !defined(__FMA__)
#error "ROUND_16_FLOATS takes float exps and the FMA form of scaling"
#endif
/* 16 values from 16 e and c (masked: lanes past a row's end are not read or written) */
SPECIALISED void scaled_minus_16(STORAGE *out, const SCRATCH *e, __m512 hi, __m512 lo, const SCRATCH *c,
                                 __m512 c_constant, __mmask16 valid) {
    const __m512 e16 = valid == 0xFFFF ? _mm512_loadu_ps(e) : _mm512_maskz_loadu_ps(valid, e);
    const __m512 c16 = !c ? c_constant : valid == 0xFFFF ? _mm512_loadu_ps(c) : _mm512_maskz_loadu_ps(valid, c);
    const __m256i rounded = ROUND_16_FLOATS(_mm512_fmadd_ps(e16, hi, _mm512_fmsub_ps(e16, lo, c16)));
    if (valid == 0xFFFF)
        _mm256_storeu_si256((__m256i *)out, rounded);
    else
        _mm256_mask_storeu_epi16(out, valid, rounded);
}

SPECIALISED void scaled_minus_values(STORAGE *out, const SCRATCH *e, scaling factor, const SCRATCH *c,
                                     double c_constant, int64_t count) {
    const __m512 hi = _mm512_set1_ps(factor.hi), lo = _mm512_set1_ps(factor.lo);
    const __m512 constant = _mm512_set1_ps((float)c_constant);
    int64_t j = 0;
    for (; j + 16 <= count; j += 16) scaled_minus_16(out + j, e + j, hi, lo, c ? c + j : NULL, constant, 0xFFFF);
    if (j < count)
        scaled_minus_16(out + j, e + j, hi, lo, c ? c + j : NULL, constant, (__mmask16)((1u << (count - j)) - 1));
}
#else
/* one value at a time (GCC vectorises the loops) */
SPECIALISED void scaled_minus_each(STORAGE *out, const SCRATCH *e, scaling factor, const SCRATCH *c,
                                   double c_constant, int64_t count) {
    if (c) /* separate loops: see FOR_TARGET_ARRAYS */
        for (int64_t j = 0; j < count; j++) out[j] = scaled_minus(e[j], factor, c[j]);
    else if (c_constant != 0 || signbit(c_constant))
        for (int64_t j = 0; j < count; j++) out[j] = scaled_minus(e[j], factor, c_constant);
    else
        for (int64_t j = 0; j < count; j++) out[j] = scaled(e[j], factor);
}

/* With SCALED_MINUS_16 (bfloat16 and float16 on AVX2), 16 values at a time in intrinsics, then the rest */
SPECIALISED void scaled_minus_values(STORAGE *out, const SCRATCH *e, scaling factor, const SCRATCH *c,
                                     double c_constant, int64_t count) {
    int64_t j = 0;
#ifdef SCALED_MINUS_16
    for (; j + 16 <= count; j += 16) SCALED_MINUS_16(out + j, e + j, factor, c ? c + j : NULL, c_constant);
#endif
    scaled_minus_each(out + j, e + j, factor, c ? c + j : NULL, c_constant, count - j);
}
#endif

/* A gradient of at least this size is written past the caches (stream_store.h): it would not stay
 * in them anyway (the last-level cache here is 32 MiB, shared), and streaming saves the read for
 * ownership of each line: 1024x32000 float32 on one thread 0.47 -> 0.42 ns per element, 8192x1000
 * unchanged (measured). So are softmax's and log_softmax's outputs.
 * Not rows of fewer than STREAM_MIN_ROW_BYTES that share lines with their neighbours (rows not a
 * whole number of lines, or out not on a line): the shared lines take normal stores, whose reads
 * for ownership then wait behind the streamed lines. Written with normal stores only, float32 out=
 * from np.empty_like (16 bytes past a line), one thread, A/B medians: 128000x64 32.0 -> 20.4 ms,
 * 63503x129 23.3 -> 15.0 (no longer pipelined), 32000x256 17.2 -> 12.1; at 512 classes the two
 * were about the same, from 1000 streaming was faster (5.8 against 8.4 ms at 8192x1000), and so it
 * was for rows of whole lines on a line. */
#define STREAM_MIN_BYTES (16.0 * 1024 * 1024)
#define STREAM_MIN_ROW_BYTES 2048

static int streams_output(const STORAGE *out, int64_t n_rows, int64_t n_classes) {
    const int64_t row_bytes = (int64_t)sizeof(STORAGE) * n_classes;
    const int whole_lines = (uintptr_t)out % CACHE_LINE == 0 && row_bytes % CACHE_LINE == 0;
    return (double)row_bytes * (double)n_rows >= STREAM_MIN_BYTES && (whole_lines || row_bytes >= STREAM_MIN_ROW_BYTES);
}

/* The gradient of a row is grad_k = slope_k (e_k probability - c_k target) but at the argmax, with
 * e_k = exp(x'_k - max) and slope_k the softcap's derivative:
 *   probability = (T ce_scale + 2 z lse z_scale) / sum, target = ce_scale. */
typedef struct {
    double probability, target;
    double at_argmax;   /* grad_a / slope_a */
    int float_products; /* whether scaled()'s float products take them (fits_float; tiny_products) */
} gradient_factors;

/* A mean over nothing (rows counted, but of total weight 0) is NaN, and so is its gradient, as in
 * PyTorch; rows ignored keep their zero gradient (so every row ignored gives a zero gradient). */
static inline double mean_scale(double upstream, double denominator) {
    return denominator != 0 ? upstream / denominator : NAN;
}

/* A mean's scales of the gradient (upstream / denominator), else the upstream gradient. */
typedef struct {
    double ce, z;
} gradient_scales;

static inline gradient_scales scales_of(double upstream, const sce_result *result, int reduction) {
    if (reduction != SCE_MEAN) return (gradient_scales){upstream, upstream};
    return (gradient_scales){mean_scale(upstream, result->ce_denominator), mean_scale(upstream, result->z_denominator)};
}

static inline double upstream_of_row(const sce_params *params, int64_t n) {
    return params->row_grad_scale ? params->row_grad_scale[n] : params->grad_scale;
}

/* The factors from a row's statistics, its target total T, c_a and others = T - c_a (see below). */
static inline gradient_factors factors_of(double rest, double inverse_sum, double lse, double total, double c_a,
                                          double others, gradient_scales scales, double z_loss) {
    const double sum = 1.0 + rest;
    const double z_part = 2.0 * z_loss * lse * scales.z;
    /* p_a T - c_a = ((T - c_a) - c_a rest) / sum, free of the cancellation of p_a T against c_a
     * when p_a is near 1. FLOAT_EXP types multiply by inverse_sum = 1 / sum (rounded), which the
     * few-classes path shares with log1p: divisions were a tenth of its time, and a double's extra
     * rounding, 2^-53, is far below the float precision of their results. */
    gradient_factors factors;
    if (FLOAT_EXP)
        factors = (gradient_factors){(total * scales.ce + z_part) * inverse_sum, scales.ce,
                                     ((others - c_a * rest) * inverse_sum) * scales.ce + z_part * inverse_sum, 0};
    else
        factors = (gradient_factors){(total * scales.ce + z_part) / sum, scales.ce,
                                     ((others - c_a * rest) / sum) * scales.ce + z_part / sum, 0};
    factors.float_products = fits_float(factors.probability) && fits_float(factors.target);
    return factors;
}

/* T - c_a; for a class index on the argmax exactly spread * (W - w_a), W the sum of the weights
 * (0 without smoothing, whatever the weights) */
static inline double others_than_argmax(double total, double c_a, int argmax_is_index, double spread,
                                        double weight_total, double w_a) {
    if (!argmax_is_index) return total - c_a;
    return spread != 0 ? spread * (weight_total - w_a) : 0.0;
}

/* The row's lse where a z-loss needs it (its term and gradient), else 0: the row path and the split
 * path give the same z-loss terms (0, also for a NaN row) without a z-loss. */
static inline double lse_for_z_loss(const call_constants *call, const row_stats *stats) {
    return call->z_loss != 0 ? stats->max + log1p_of_nonnegative(stats->rest) : 0.0;
}

/* lse counts only with a z-loss (0 will do without) */
static gradient_factors factors_of_row(const row_target *target, const row_stats *stats, double lse, double total,
                                       const sce_result *result, const sce_params *params, const call_constants *call,
                                       int64_t n) {
    const int64_t a = stats->argmax;
    const double c_a = coefficient(target, a);
    const double others = others_than_argmax(total, c_a, a == target->index, target->spread, call->weight_total,
                                             target->weight ? target->weight[a] : 1.0);
    gradient_factors factors = factors_of(stats->rest, 1.0 / (1.0 + stats->rest), lse, total, c_a, others,
                                          scales_of(upstream_of_row(params, n), result, params->reduction),
                                          call->z_loss);
    factors.float_products &= !tiny_products(stats->min, stats->max, factors.probability);
    return factors;
}

/* The targets gradient_values has a loop of its own for. A class index without a softcap has grad_j
 * = e_j probability - w_j spread target but at the index and the argmax, which are patched after;
 * probabilities without a softcap, grad_j = e_j probability - c_j target but at the argmax. */
enum { ANY_TARGET, INDEX_TARGET /* and no smoothing */, SMOOTHED_INDEX_TARGET, PROB_TARGET };

#if FLOAT_EXP && defined(__AVX2__) && !defined(__AVX512F__)
#define PROB_COEFFICIENTS_IN_LANES 1
/* prob_coefficients' values for j < count, a multiple of 4, in AVX2 intrinsics (GCC compared every
 * k with the row's class index, -1, and packed each vector's fits_float flags); whether all fit.
 * Without smoothing (keep 1, spread 0) keep t + spread is t but for the sign of a zero t, which the +
 * 0.0 after makes +0 either way. */
SPECIALISED int prob_coefficients_in_lanes(SCRATCH *restrict c, const row_target *target, double target_scale,
                                           int64_t k, int64_t count, int with_weight, int with_smoothing) {
    const __m256d keep = _mm256_set1_pd(target->keep), spread = _mm256_set1_pd(target->spread);
    const __m256d scale = _mm256_set1_pd(target_scale), zero = _mm256_setzero_pd();
    const __m256d magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX)), largest = _mm256_set1_pd(FLT_MAX);
    __m256d beyond = zero; /* lanes of values beyond float's range, or NaN (_CMP_NLE_UQ) */
    for (int64_t j = 0; j < count; j += 4) {
        const __m256d t = _mm256_cvtps_pd(_mm_loadu_ps(target->prob + k + j));
        __m256d value = with_smoothing ? _mm256_add_pd(_mm256_mul_pd(keep, t), spread) : t;
        if (with_weight) value = _mm256_mul_pd(_mm256_loadu_pd(target->weight + k + j), value);
        value = _mm256_mul_pd(_mm256_add_pd(value, zero), scale); /* (+ 0.0 as coefficient_of's) */
        beyond = _mm256_or_pd(beyond, _mm256_cmp_pd(_mm256_and_pd(value, magnitude), largest, _CMP_NLE_UQ));
        _mm_storeu_ps(c + j, _mm256_cvtpd_ps(value));
    }
    return _mm256_movemask_pd(beyond) == 0;
}
#else
#define PROB_COEFFICIENTS_IN_LANES 0
#endif

/* c_j target_scale of a probability row into c (rounded to SCRATCH, as scaled_minus rounds it),
 * j < count; whether every one fits float (fits_float) */
SPECIALISED int prob_coefficients(SCRATCH *restrict c, const row_target *target, double target_scale, int64_t k,
                                  int64_t count, int with_weight) {
    int64_t j = 0;
    int fits = 1;
#if PROB_COEFFICIENTS_IN_LANES
    j = count / 4 * 4;
    fits = target->keep != 1 || target->spread != 0
               ? prob_coefficients_in_lanes(c, target, target_scale, k, j, with_weight, 1)
               : prob_coefficients_in_lanes(c, target, target_scale, k, j, with_weight, 0);
#endif
    for (; j < count; j++) {
        const double value = coefficient_with(target, k + j, with_weight, 1) * target_scale;
        fits &= fits_float(value);
        c[j] = (SCRATCH)value;
    }
    return fits;
}

/* e_j probability - c_j target_scale for a probability row, j < count (scaled_minus: float32's
 * products in float, as the smoothed index's), PROB_BATCH at a time: the coefficients first, then
 * scaled_minus_values' loop (in one loop GCC kept float and double lanes side by side). Not where
 * FLOAT_EXP types' scaled_minus takes c in double (no FMA: the baseline build), whose c rounded to a
 * float SCRATCH first would change the values: one loop there. */
#define PROB_BATCH 512
SPECIALISED int prob_target_values(STORAGE *out, const SCRATCH *restrict e, scaling probability,
                                   const row_target *target, double target_scale, int64_t k, int64_t count,
                                   int with_weight) {
    int fits = 1;
#if FLOAT_EXP && !defined(__FMA__) && !defined(__aarch64__)
    for (int64_t j = 0; j < count; j++) {
        const double c = coefficient_with(target, k + j, with_weight, 1) * target_scale;
        fits &= fits_float(c);
        out[j] = scaled_minus(e[j], probability, c);
    }
#else
    SCRATCH c[PROB_BATCH];
    for (int64_t j = 0; j < count; j += PROB_BATCH) {
        const int64_t n = count - j < PROB_BATCH ? count - j : PROB_BATCH;
        fits &= prob_coefficients(c, target, target_scale, k + j, n, with_weight);
        scaled_minus_values(out + j, e + j, probability, c, 0.0, n);
    }
#endif
    return fits;
}

/* grad_j = slope_j (e_j probability - c_j target), j < count, the general case of gradient_values */
SPECIALISED void any_target_values(STORAGE *out, const SCRATCH *restrict e, const SCRATCH *restrict slope,
                                   const row_target *target, gradient_factors factors, int64_t k, int64_t count,
                                   int with_softcap, int with_weight, int with_prob) {
    for (int64_t j = 0; j < count; j++) {
        const double g = e[j] * factors.probability - coefficient_with(target, k + j, with_weight, with_prob) * factors.target;
        out[j] = STORE(with_softcap ? g * (slope[j] / SLOPE_SCALE) : g);
    }
}

/* any_target_values' values for a lone class index with a softcap off its index, c_j = +0 (0 target
 * keeps their sign of zero) without computing c_j: the same bits (the whole call's A/B medians on
 * Zen 3, 8192x1000 and 256x128256: 0.93-0.97) */
SPECIALISED void capped_index_values(STORAGE *out, const SCRATCH *restrict e, const SCRATCH *restrict slope,
                                     gradient_factors factors, int64_t count) {
    const double zero_target = 0.0 * factors.target;
    for (int64_t j = 0; j < count; j++)
        out[j] = STORE((e[j] * factors.probability - zero_target) * (slope[j] / SLOPE_SCALE));
}

#if defined(STORAGE_IS_FLOAT) && defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define CAPPED_INDEX_IN_FLOAT 1
/* capped_index_values' values in float lanes (float32 on AVX2), each where that is as accurate:
 * g_j = a_j (probability 2^-63), a_j = (e_j slope_j SLOPE_SCALE) 2^-63, the first product rounded
 * once and its scaling exact where e_j slope_j SLOPE_SCALE >= 2^-62, the second rounded once from
 * probability 2^-63 in two floats (hi normal and a_j hi finite: see capped_index_in_float): about one
 * rounding more than the double loop's, inside the 8 eps bound. Where that product is smaller, or
 * |g_j| < 2^-100 (where the low part's absolute error could show), or either is NaN, the element
 * takes the double loop's value. Each element's path is its own, so the bits do not depend on where
 * the row is split. */
static inline int capped_index_in_float(double probability) {
    return fabs(probability) >= 0x1p-60 && fabs(probability) <= 0x1p126;
}

/* one element's float value, or NaN where it takes the double one */
static inline float capped_index_value_in_float(float e, float slope, float hi, float lo) {
    const float product = e * slope, a = product * 0x1p-63f, g = __builtin_fmaf(a, hi, a * lo);
    return product >= 0x1p-62f && fabsf(g) >= 0x1p-100f ? g : NAN;
}

SPECIALISED void capped_index_values_in_float(STORAGE *out, const SCRATCH *restrict e, const SCRATCH *restrict slope,
                                              gradient_factors factors, int64_t count) {
    const double scaled = factors.probability * 0x1p-63;
    const float hi = (float)scaled, lo = (float)(scaled - hi);
    const __m256 hi8 = _mm256_set1_ps(hi), lo8 = _mm256_set1_ps(lo), down = _mm256_set1_ps(0x1p-63f);
    const __m256 product_floor = _mm256_set1_ps(0x1p-62f), g_floor = _mm256_set1_ps(0x1p-100f);
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t j = 0; j < count; j += 8) {
        if (count - j < 8) { /* the same values one at a time */
            for (int64_t i = j; i < count; i++) {
                const float g = capped_index_value_in_float(e[i], slope[i], hi, lo);
                if (g == g)
                    out[i] = g;
                else
                    capped_index_values(out + i, e + i, slope + i, factors, 1);
            }
            break;
        }
        const __m256 product = _mm256_mul_ps(_mm256_loadu_ps(e + j), _mm256_loadu_ps(slope + j));
        const __m256 a = _mm256_mul_ps(product, down), g = _mm256_fmadd_ps(a, hi8, _mm256_mul_ps(a, lo8));
        const __m256 kept = _mm256_and_ps(_mm256_cmp_ps(product, product_floor, _CMP_GE_OQ),
                                          _mm256_cmp_ps(_mm256_and_ps(g, magnitude), g_floor, _CMP_GE_OQ));
        _mm256_storeu_ps(out + j, g);
        const int lanes = _mm256_movemask_ps(kept);
        if (lanes != 0xFF)
            for (int i = 0; i < 8; i++)
                if (!(lanes >> i & 1)) capped_index_values(out + j + i, e + j + i, slope + j + i, factors, 1);
    }
}
#else
#define CAPPED_INDEX_IN_FLOAT 0
#endif

/* The gradient at a class index without a softcap, from the row's exps (scratch): patched over the
 * values of the loops for any class (gradient_values, stream_next_line's lines) */
static inline STORAGE gradient_at_index(const SCRATCH *scratch, const row_target *target, gradient_factors factors) {
    const int64_t y = target->index;
    return STORE(scratch[y] * factors.probability - coefficient(target, y) * factors.target);
}

/* The gradient of a row over [k, k + count) into out, from what compute_row_stats stored in
 * scratch; spread_weights: the call's w_j spread target (see call_constants), or NULL. */
SPECIALISED void gradient_values(STORAGE *out, const SCRATCH *restrict scratch, const row_target *target,
                                 int64_t argmax, gradient_factors factors, int64_t n_classes, int64_t k, int64_t count,
                                 int with_softcap, int target_kind, const SCRATCH *spread_weights) {
    const SCRATCH *e = scratch + k, *slope = scratch + n_classes + k;
#define ANY_TARGET_VALUES(with_weight, with_prob)                                                                       \
    any_target_values(out, e, slope, target, factors, k, count, with_softcap, with_weight, with_prob)
    if (with_softcap && target_kind == INDEX_TARGET) {
#if CAPPED_INDEX_IN_FLOAT
        if (capped_index_in_float(factors.probability))
            capped_index_values_in_float(out, e, slope, factors, count);
        else
#endif
            capped_index_values(out, e, slope, factors, count);
        const int64_t y = target->index;
        if (y >= k && y < k + count)
            out[y - k] = STORE((scratch[y] * factors.probability - coefficient(target, y) * factors.target) *
                               (slope[y - k] / SLOPE_SCALE));
    } else if (target_kind != ANY_TARGET) {
        const scaling probability = scaling_of(factors.probability);
        int fits = 1; /* every c_j target fit scaled_minus; if not, the values are computed again */
        if (target_kind == INDEX_TARGET) {
            scaled_minus_values(out, e, probability, NULL, 0.0, count);
        } else if (target_kind == PROB_TARGET) { /* two loops: see FOR_TARGET_ARRAYS */
            fits = target->weight ? prob_target_values(out, e, probability, target, factors.target, k, count, 1)
                                  : prob_target_values(out, e, probability, target, factors.target, k, count, 0);
        } else if (spread_weights) {
            scaled_minus_values(out, e, probability, spread_weights + k, 0.0, count);
        } else if (target->weight) { /* two loops: see FOR_TARGET_ARRAYS */
            const double spread = target->spread * factors.target;
            for (int64_t j = 0; j < count; j++) {
                fits &= fits_float(target->weight[k + j] * spread);
                out[j] = scaled_minus(e[j], probability, target->weight[k + j] * spread);
            }
        } else {
            const double spread = target->spread * factors.target;
            scaled_minus_values(out, e, probability, NULL, spread, count);
            fits = fits_float(spread);
        }
        if (!fits) /* the general loop, in double */
            FOR_TARGET_ARRAYS(target, ANY_TARGET_VALUES);
        const int64_t y = target->index;
        if (y >= k && y < k + count) out[y - k] = gradient_at_index(scratch, target, factors);
    } else {
        FOR_TARGET_ARRAYS(target, ANY_TARGET_VALUES);
    }
#undef ANY_TARGET_VALUES
    if (argmax >= k && argmax < k + count)
        out[argmax - k] = STORE(with_softcap ? factors.at_argmax * (slope[argmax - k] / SLOPE_SCALE) : factors.at_argmax);
}

/* Lines to stream are computed this many at a time: a line's vector load right after the stores
 * that wrote it waits for them when they were narrower (float64 with label smoothing, 8192x1000
 * one thread: 20 -> 17 ms); a batch's first lines are in cache by the time they are read. */
#define STREAM_BATCH 8

/* the first class in [begin, end) whose element of row starts a cache line; end if none, or if row
 * is not aligned to its elements */
static inline int64_t first_whole_line(const STORAGE *row, int64_t begin, int64_t end) {
    if ((uintptr_t)row % sizeof(STORAGE) != 0) return end;
    const int64_t k = begin + classes_before_aligned(row + begin, LINE);
    return k < end ? k : end;
}

/* The gradient of one row over classes [begin, end). x is not read: grad may be the logits
 * (in-place). With streaming, the whole cache lines in the range are written past the caches (the
 * thread that wrote them calls stream_fence after its last chunk, cross_entropy_finish, or the
 * split path's task after its segment: a fence per row cost 10% at K = 1000). */
SPECIALISED void write_gradient_with(STORAGE *grad, const SCRATCH *restrict scratch, const row_target *target,
                                     int64_t argmax, gradient_factors factors, int64_t n_classes, int64_t begin,
                                     int64_t end, int with_softcap, int target_kind, int streaming,
                                     const SCRATCH *spread_weights) {
    int64_t k = begin;
    if (streaming) {
        const int64_t aligned = first_whole_line(grad, k, end);
        gradient_values(grad + k, scratch, target, argmax, factors, n_classes, k, aligned - k, with_softcap, target_kind,
                        spread_weights);
        for (k = aligned; k + LINE <= end;) {
            STORAGE lines[STREAM_BATCH * LINE];
            const int64_t count = end - k < STREAM_BATCH * LINE ? (end - k) / LINE : STREAM_BATCH;
            gradient_values(lines, scratch, target, argmax, factors, n_classes, k, count * LINE, with_softcap, target_kind,
                            spread_weights);
            for (int64_t line = 0; line < count; line++, k += LINE) stream_line(grad + k, lines + line * LINE);
        }
    }
    gradient_values(grad + k, scratch, target, argmax, factors, n_classes, k, end - k, with_softcap, target_kind, spread_weights);
}

static void write_gradient(STORAGE *grad, const SCRATCH *restrict scratch, const row_target *target, int64_t argmax,
                           gradient_factors factors, const call_constants *call, int64_t begin, int64_t end) {
    const int64_t n = call->n_classes;
    const int streaming = call->stream_gradient;
    if (call->softcap > 0)
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 1,
                            !target->prob && target->spread == 0 ? INDEX_TARGET : ANY_TARGET, streaming, NULL);
    else if (!factors.float_products) /* the loop for any target computes in double */
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, ANY_TARGET, streaming, NULL);
    else if (target->prob)
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, PROB_TARGET, streaming, NULL);
    else if (target->spread != 0)
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, SMOOTHED_INDEX_TARGET, streaming,
                            call->spread_weights);
    else if (streaming) /* the plain call's path: the streaming test out of its loop */
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, INDEX_TARGET, 1, NULL);
    else
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, INDEX_TARGET, 0, NULL);
}

/* A gradient row waiting to be written, in parts (see WAITING_STEP) */
struct waiting_gradient {
    STORAGE *grad; /* the row's gradient, or NULL: none waits */
    const SCRATCH *scratch;
    row_target target;
    int64_t argmax;
    gradient_factors factors;
    const call_constants *call;
    int64_t written; /* the classes before it are */
    int next_half;   /* the half of the thread's scratch that the next row takes */
    streamed_lines lines; /* its whole lines, if the exp pass streams them (grad not NULL), from written */
} __attribute__((aligned(CACHE_LINE))); /* one per thread, updated often: each on its own lines */

static streamed_lines lines_to_stream(const waiting_gradient *waiting) {
    streamed_lines lines = waiting->grad ? waiting->lines : (streamed_lines){.grad = NULL};
    lines.next = waiting->written;
    return lines;
}

static void lines_streamed_until(waiting_gradient *waiting, int64_t next) { waiting->written = next; }

/* The whole lines of the waiting row's gradient that the exp pass can stream (LINES_IN_EXP_PASS):
 * its values must be those of scaled_minus_values (c_k t none, the call's spread weights or one
 * constant), bit for bit, and its lines streamed (its gradient aligned to its elements); else grad
 * NULL. Not a row of NaN factors (no finite logit; fits_float rejects them for FLOAT_EXP types): a
 * product of two NaNs is the one the compiler puts first, and gradient_values' loops may put the
 * other (float64's streamed lines gave -NaN where the row's small call gave +NaN). */
static streamed_lines lines_of_row(const waiting_gradient *waiting) {
#if LINES_IN_EXP_PASS
    const row_target *target = &waiting->target;
    const gradient_factors factors = waiting->factors;
    STORAGE *grad = waiting->grad;
    const int64_t n_classes = waiting->call->n_classes;
    /* a smoothed row's c_k target: the call's spread weights, or without weights a constant */
    const int smoothed = target->spread != 0;
    const SCRATCH *minus = smoothed ? waiting->call->spread_weights : NULL;
    const double minus_constant = smoothed && !minus ? target->spread * factors.target : 0.0;
    if (waiting->call->softcap > 0 || target->prob || !factors.float_products ||
        isnan(factors.probability) || isnan(factors.target) || (uintptr_t)grad % sizeof(STORAGE) != 0 ||
        (smoothed && !minus && (target->weight || !fits_float(minus_constant))))
        return (streamed_lines){.grad = NULL};
    const int64_t first = first_whole_line(grad, 0, n_classes);
    const int64_t y = target->index;
    return (streamed_lines){
        .grad = grad,
        .e = waiting->scratch,
        .next = first,
        .end = first + (n_classes - first) / LINE * LINE,
        .index = y,
        .argmax = waiting->argmax,
        .probability = scaling_of(factors.probability),
        .minus = minus,
        .minus_constant = (SCRATCH)minus_constant,
        .at_index = gradient_at_index(waiting->scratch, target, factors),
        .at_argmax = STORE(factors.at_argmax),
    };
#else
    (void)waiting;
    return (streamed_lines){.grad = NULL};
#endif
}

/* The waiting gradient's classes up to until (all of them at K, else up to a cache line of grad
 * below until, where the next part starts: lines are streamed whole) */
static void write_waiting_gradient(waiting_gradient *waiting, int64_t until) {
    if (!waiting->grad) return;
    const int64_t n_classes = waiting->call->n_classes;
    if (until < n_classes) until -= (int64_t)((uintptr_t)(waiting->grad + until) % CACHE_LINE / sizeof(STORAGE));
    if (until <= waiting->written) return;
    write_gradient(waiting->grad, waiting->scratch, &waiting->target, waiting->argmax, waiting->factors, waiting->call,
                   waiting->written, until);
    waiting->written = until;
    if (until == n_classes) waiting->grad = NULL;
}

static void write_zeros(STORAGE *row, int64_t n_classes) {
    for (int64_t k = 0; k < n_classes; k++) row[k] = STORE(0.0);
}

/* Copies the class targets into copy, checks them and computes the mean's denominators, before
 * anything is written. The kernel reads only the copy after this: target_index may change meanwhile
 * (by another thread, or by this call's gradient written over it) without taking a row out of range.
 * The copy, count and check are one pass without branches (vectorised); only a call with a target
 * out of range looks for the first, and only weights need the chain of compensated additions. */
static int count_targets(sce_result *result, const sce_params *params, const int64_t *target_index, int64_t *copy) {
    const int64_t n_rows = params->n_rows, n_classes = params->n_classes, ignore_index = params->ignore_index;
    if (!target_index) { /* probability targets: every row counts once */
        result->ce_denominator = result->z_denominator = (double)n_rows;
        return SCE_OK;
    }
    int64_t counted = 0, out_of_range = 0;
    for (int64_t n = 0; n < n_rows; n++) {
        const int64_t y = target_index[n];
        copy[n] = y;
        counted += y != ignore_index;
        out_of_range |= y != ignore_index && (y < 0 || y >= n_classes);
    }
    for (int64_t n = 0; out_of_range && n < n_rows; n++) {
        const int64_t y = copy[n];
        if (y != ignore_index && (y < 0 || y >= n_classes)) {
            result->bad_row = n;
            result->bad_value = y;
            return SCE_ERR_TARGET_RANGE;
        }
    }
    double weight_sum = (double)counted, weight_carry = 0.0; /* without weights, the count (exact below 2^53) */
    if (params->weight) { /* compensated: a mean over many rows */
        weight_sum = 0.0;
        for (int64_t n = 0; n < n_rows; n++) {
            const int64_t y = copy[n];
            if (y != ignore_index) add_with_carry(&weight_sum, &weight_carry, params->weight[y]);
        }
    }
    result->ce_denominator = with_carry(weight_sum, weight_carry);
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

static int has_zero_weight(const sce_params *params) {
    for (int64_t k = 0; params->weight && k < params->n_classes; k++)
        if (params->weight[k] == 0) return 1;
    return 0;
}

/* Scratch space starts on a cache line, and so does each thread's (or row's) part of it: vectors of
 * scratch values that split lines cost 2-6% (one thread, 2048x1000 float32, 4096x1000 double). */
#define SCRATCH_LINE (CACHE_LINE / (int64_t)sizeof(SCRATCH))

static int64_t on_whole_lines(int64_t n_values) {
    return (n_values + SCRATCH_LINE - 1) / SCRATCH_LINE * SCRATCH_LINE;
}

/* A row whose gradient is streamed writes it in whole cache lines: its scratch values then start at
 * the same place in a line as its gradient row (a thread's scratch has a line to spare for this), so
 * that those lines read whole lines of scratch (8192x1000 float32, one thread: 3% faster; gradients
 * that are not streamed are written from their row's start, best with the scratch on a line). */
static SCRATCH *scratch_in_line_with(SCRATCH *scratch, const STORAGE *grad_row) {
    return scratch + (int64_t)((uintptr_t)grad_row / sizeof(STORAGE) % SCRATCH_LINE);
}

/* Each thread's (or row's) part of the cross-entropy's scratch: two halves of K values on whole
 * lines and a line to spare for scratch_in_line_with; a row takes one half for its exps (pipelined
 * rows, see waiting_gradient, take turns), or with a softcap both, for its exps and slopes. */
static int64_t scratch_half(int64_t n_classes) {
    return on_whole_lines(n_classes) + SCRATCH_LINE;
}

static int64_t scratch_stride(int64_t n_classes) {
    return 2 * scratch_half(n_classes);
}

/* n_values of scratch on whole cache lines; free() releases it */
static SCRATCH *new_scratch(int64_t n_values) {
    return aligned_alloc(CACHE_LINE, sizeof(SCRATCH) * (size_t)on_whole_lines(n_values));
}

/* A row's loss is distance + total log1p(rest), and log1p, the slow part of a row that its
 * gradient does not wait for (without a z-loss), is taken LOSS_BATCH rows at a time, in vectors
 * (rows of 64 float32 classes 22% faster, of 1000 7%): a row leaves its row_loss at distance and
 * its total and rest in the batch, and add_log_sums adds total log1p(rest) to it. */
#define LOSS_BATCH 32

typedef struct {
    double total[LOSS_BATCH], rest[LOSS_BATCH];
} loss_batch;

static void add_log_sums(double *row_loss, const loss_batch *batch, int count) {
    for (int i = 0; i < count; i++) row_loss[i] += batch->total[i] * log1p_of_nonnegative(batch->rest[i]);
}

/* The whole of one row: its loss (and z-loss term), and with grad its gradient; the loss's log1p
 * left to add_log_sums, from batch[slot]. With waiting (pipelined rows) the gradient waits there,
 * and the previous row's is written. */
static void cross_entropy_row(STORAGE *grad, SCRATCH *scratch, waiting_gradient *waiting, const sce_result *result,
                              const sce_params *params, const call_constants *call, const STORAGE *logits,
                              const int64_t *target_index, const TARGET *target_prob, int64_t n, loss_batch *batch,
                              int slot) {
    const int64_t n_classes = params->n_classes;
    const STORAGE *x = logits + n * n_classes;
    STORAGE *g = grad ? grad + n * n_classes : NULL;
    const int half = waiting ? waiting->next_half : 0;
    scratch += half * scratch_half(n_classes);
    if (g && call->stream_gradient) scratch = scratch_in_line_with(scratch, g);
    double *z_term = result->row_z_loss ? &result->row_z_loss[n] : NULL;
    row_target target;
    if (!target_of_row(&target, params, target_index, target_prob, n)) {
        result->row_loss[n] = batch->total[slot] = batch->rest[slot] = 0.0;
        if (z_term) *z_term = 0.0;
        if (g) write_zeros(g, n_classes);
        return;
    }
    /* every read of x happens before the gradient is written: grad may be logits */
    const STORAGE *next_row = row_to_prefetch(x, n, params->n_rows, n_classes);
    row_smoothing smoothing = {{target.weight, target.weight ? call->narrow_weights : NULL, call->zero_weight},
                               SMOOTHING_SUMS_ZERO};
    /* without a softcap exp_sum_blocks takes FLOAT_EXP logits through exp_float_runs, the loop that
     * adds to the smoothing sums */
    const int fused = FUSED_SMOOTHING && !target.prob && target.spread != 0 && call->softcap == 0;
    const row_stats stats = compute_row_stats(g ? scratch : NULL, x, next_row, waiting, n_classes, call->softcap,
                                              fused ? &smoothing : NULL);
    const target_sums sums = sum_over_target(&target, x, call, stats.max, fused ? &smoothing : NULL);
    result->row_loss[n] = sums.distance;
    batch->total[slot] = sums.total;
    batch->rest[slot] = stats.rest;
    const double lse = lse_for_z_loss(call, &stats);
    if (z_term) *z_term = call->z_loss * lse * lse;
    if (!g) return;
    const gradient_factors factors = factors_of_row(&target, &stats, lse, sums.total, result, params, call, n);
    if (!waiting) {
        write_gradient(g, scratch, &target, stats.argmax, factors, call, 0, n_classes);
        return;
    }
    write_waiting_gradient(waiting, n_classes); /* what is left of the previous row's, freeing its half */
    *waiting = (waiting_gradient){
        .grad = g,
        .scratch = scratch,
        .target = target,
        .argmax = stats.argmax,
        .factors = factors,
        .call = call,
        .written = 0,
        .next_half = !half,
    };
    waiting->lines = lines_of_row(waiting);
    /* the classes before the first whole line now, the lines then from there */
    if (waiting->lines.grad) write_waiting_gradient(waiting, waiting->lines.next);
}

/* A compensated sum, its carry not yet added: the sums of the row losses are kept so, per chunk of
 * rows, until sum_of_chunks adds the chunks up in order. */
typedef struct {
    double sum, carry;
} compensated_sum;

/* The sum of the row losses of a chunk, in a fixed order: row begin + i in lane i % SUM_LANES, the
 * lanes then added in order. The lanes are independent chains of additions (a vector's worth, where
 * one chain would take an addition's latency per row). */
#define SUM_LANES 8

static compensated_sum row_order_sum(const double *values, int64_t n) {
    double sum[SUM_LANES] = {0.0}, carry[SUM_LANES] = {0.0};
    int64_t i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES)
#pragma GCC unroll 1 /* kept a loop, which GCC vectorises (unrolled, it stays scalar) */
        for (int j = 0; j < SUM_LANES; j++) add_with_carry(&sum[j], &carry[j], values[i + j]);
    for (; i < n; i++) add_with_carry(&sum[i % SUM_LANES], &carry[i % SUM_LANES], values[i]);
    compensated_sum total = {0.0, 0.0};
    for (int j = 0; j < SUM_LANES; j++) {
        add_with_carry(&total.sum, &total.carry, sum[j]);
        total.carry += carry[j];
    }
    return total;
}

/* The sum of a call's row losses: compensated, so that the mean of a million rows is as accurate as
 * each row; the chunks' sums added in chunk order, whichever threads computed them. */
static double sum_of_chunks(const compensated_sum *chunks, int64_t n_chunks) {
    double sum = 0.0, carry = 0.0;
    for (int64_t c = 0; c < n_chunks; c++) {
        add_with_carry(&sum, &carry, chunks[c].sum);
        carry += chunks[c].carry;
    }
    return with_carry(sum, carry);
}

/* Rows are shared out to threads in chunks of about CHUNK_ELEMENTS logits; a call smaller than two
 * chunks stays on the calling thread. Rows of at most FEW_CLASSES classes are computed ROW_GROUP at
 * a time (kernel_few_classes.h): their chunks are whole groups. Groups of 32 rows give each step
 * twice the independent work of 16 (float32 5-8% faster, float16 and bfloat16 5-30%, their row
 * functions most); double logits keep 16, whose group arrays at 32 rows outgrew L1 (K = 32 ran
 * 10-25% slower).
 * FEW_CLASSES was 32. One thread, A/B medians of the gradient, the loss alone and softmax, their
 * time with groups over the row path's: float32 at K = 33 0.28-0.45 (AVX-512), 0.48-0.61 (AVX2),
 * 0.31-0.51 (baseline); K = 48 0.38-0.60, 0.63-0.82, 0.38-0.54; K = 64 0.58-0.98, 0.78-1.03,
 * 0.40-0.56; K = 72 0.47-0.78 (AVX-512), 0.75-1.03 (AVX2); K = 88 0.57-0.87, 0.93-1.18; K = 96
 * 0.63-1.18, 0.99-1.29; K = 128 0.76-1.52, 1.19-1.48; baseline 0.37-0.58 up to 128. Float64 and
 * half precision gained as much at K = 33 and 0.68-0.95 at 48 (but bfloat16's softmax, 1.2 there),
 * and lost at 64 (1.04-1.60 on AVX-512 and AVX2).
 * That is for rows whose only target is a class index (and the row functions). Other rows (label
 * smoothing, probability targets, a softcap) keep more group arrays (a softcap's three in double),
 * and lost from 64 classes with groups: float32 out=, a softcap 1.01-1.15 (AVX-512), smoothing and
 * probabilities 1.06-1.34 (AVX2), where at 40 classes they all gained (0.52-0.83); they stop at
 * FEW_CLASSES_WITH_OPTIONS, which also keeps a softcap's group under 64 KB of stack. */
#define CHUNK_ELEMENTS 32768
#ifdef STORAGE_IS_DOUBLE
#define ROW_GROUP 16
#else
#define ROW_GROUP 32
#endif
#if defined(STORAGE_IS_FLOAT) && defined(__AVX512F__)
#define FEW_CLASSES 88
#elif defined(STORAGE_IS_FLOAT)
#define FEW_CLASSES 72
#else
#define FEW_CLASSES 48
#endif
#define FEW_CLASSES_WITH_OPTIONS 48

/* whether rows of the call are computed in groups (kernel_few_classes.h) */
static int takes_groups(const sce_params *params, const int64_t *target_index) {
    const int lone_index = target_index && params->label_smoothing == 0 && params->softcap == 0;
    return params->n_classes <= (lone_index ? FEW_CLASSES : FEW_CLASSES_WITH_OPTIONS);
}

/* grouped: chunks of whole groups */
static int64_t rows_per_chunk_of(int64_t n_classes, int grouped) {
    if (n_classes >= CHUNK_ELEMENTS) return 1;
    const int64_t rows = CHUNK_ELEMENTS / n_classes;
    return grouped ? rows - rows % ROW_GROUP : rows;
}

/* the row after the last one of the chunk that starts at begin */
static int64_t chunk_end(int64_t begin, int64_t rows_per_chunk, int64_t n_rows) {
    return begin + rows_per_chunk < n_rows ? begin + rows_per_chunk : n_rows;
}

typedef struct {
    STORAGE *grad;
    SCRATCH *scratch; /* scratch_stride(K) values per worker (per row when the classes are shared out);
                         NULL for the loss alone or few classes */
    SCRATCH *spread_weight_space; /* K values for call.spread_weights, or NULL */
    float *narrow_weight_space;   /* K values for call.narrow_weights, or NULL */
    sce_result *result;
    const sce_params *params;
    call_constants call;
    const STORAGE *logits;
    const int64_t *target_index; /* the caller's, until prepare_cross_entropy makes it target_copy */
    int64_t *target_copy;        /* (N) */
    const TARGET *target_prob;
    int64_t rows_per_chunk;
    int grouped; /* takes_groups */
    compensated_sum *loss_sums, *z_loss_sums; /* (n_chunks): each chunk's, z_loss_sums NULL without z-loss */
    waiting_gradient *waiting; /* one per worker for pipelined rows (see waiting_gradient), else NULL */
} cross_entropy_job;

static void sum_chunk(const cross_entropy_job *job, int64_t chunk) {
    const int64_t begin = chunk * job->rows_per_chunk;
    const int64_t n = chunk_end(begin, job->rows_per_chunk, job->params->n_rows) - begin;
    job->loss_sums[chunk] = row_order_sum(job->result->row_loss + begin, n);
    if (job->z_loss_sums) job->z_loss_sums[chunk] = row_order_sum(job->result->row_z_loss + begin, n);
}

#include "kernel_few_classes.h"

static void cross_entropy_chunk(void *context, int worker, int64_t chunk) {
    const cross_entropy_job *job = context;
    const int64_t begin = chunk * job->rows_per_chunk;
    const int64_t end = chunk_end(begin, job->rows_per_chunk, job->params->n_rows);
    const int64_t n_classes = job->params->n_classes;
    if (job->grouped) {
        cross_entropy_groups(job, begin, end);
        sum_chunk(job, chunk);
        return;
    }
    SCRATCH *scratch = job->scratch ? job->scratch + worker * scratch_stride(n_classes) : NULL;
    waiting_gradient *waiting = job->waiting ? &job->waiting[worker] : NULL;
    for (int64_t first = begin; first < end; first += LOSS_BATCH) {
        const int count = end - first < LOSS_BATCH ? (int)(end - first) : LOSS_BATCH;
        loss_batch batch;
        for (int i = 0; i < count; i++)
            cross_entropy_row(job->grad, scratch, waiting, job->result, job->params, &job->call, job->logits,
                              job->target_index, job->target_prob, first + i, &batch, i);
        add_log_sums(job->result->row_loss + first, &batch, count);
    }
    sum_chunk(job, chunk);
}

/* after a thread's last chunk: the gradient still waiting, and the fence for the streamed lines
 * (one per thread: see write_gradient_with) */
static void cross_entropy_finish(void *context, int worker) {
    const cross_entropy_job *job = context;
    if (job->waiting) write_waiting_gradient(&job->waiting[worker], job->params->n_classes);
    if (job->call.stream_gradient) stream_fence();
}

/* Rows are pipelined (waiting_gradient) when their gradient is streamed, their exps take
 * exp_float_runs or exp_double_runs, without a softcap (which takes the whole scratch), and they
 * are longer than a part (shorter rows would wait for nothing: 65536x256 float32 out= was 5-8%
 * slower pipelined in parts, a review found) or, where lines are streamed (LINES_IN_EXP_PASS),
 * than LINE_PIPELINE_CLASSES: allocating, A/B medians on the Xeon, one thread then two, float32
 * 8192x1000 15.4 -> 13.0 ms, 9.2 -> 8.7; 4096x2000 14.1 -> 11.4, 9.3 -> 7.9; float64 8192x1000
 * 34.6 -> 28.4, 20.1 -> 18.3; 65536x256 39.6 -> 36.9, 22.2 -> 20.1; but 131072x64 39.5 -> 43.4 on
 * one thread. Rows whose lines are not streamed then wait one row (probability targets at
 * 8192x1000: the same speed). Not in the AVX2 build: on Zen 3 a row's gradient written right after
 * its own exp pass measured faster than in parts of the next row's (out= A/B medians, one thread
 * then two: float32 1024x32000 0.90-0.92 and 0.90-0.95, 256x128256 0.97-0.98 and 0.96-0.97,
 * 32x262144 0.97 and 0.93, 2048x4099 0.97-1.01 and 0.97-1.02; float64 256x128256 0.92-1.05 and
 * 0.95-0.98, 1024x32000 0.98-1.02 and 0.92-0.97; bfloat16 256x128256 0.99 and 0.93; float32 with
 * weights and smoothing 0.95 and 0.91); stream_next_line taken to AVX2 (two 256-bit streaming
 * stores per line, rows of more than 128 classes pipelined) was slower still: 1.14-1.47x the time,
 * 1.22-1.43x with plain stores instead (perf put the exps' samples on the stores, which stalled
 * them). Baseline x86-64, bound by its exps, measured the same either way. */
#if (FLOAT_EXP || defined(DOUBLE_ROW_EXPS)) && !(defined(__AVX2__) && !defined(__AVX512F__))
#define EXP_PASS_WRITES_WAITING 1
#else
#define EXP_PASS_WRITES_WAITING 0
#endif
#define LINE_PIPELINE_CLASSES 128

static int pipelines_rows(const call_constants *call, int with_scratch) {
    return with_scratch && call->stream_gradient && EXP_PASS_WRITES_WAITING && call->softcap == 0 &&
           call->n_classes > (LINES_IN_EXP_PASS ? LINE_PIPELINE_CLASSES : WAITING_STEP);
}

/* n_threads waiting gradients, none waiting; free() releases them */
static waiting_gradient *new_waiting_gradients(int n_threads) {
    waiting_gradient *waiting = aligned_alloc(CACHE_LINE, sizeof(waiting_gradient) * (size_t)n_threads);
    for (int worker = 0; waiting && worker < n_threads; worker++) waiting[worker] = (waiting_gradient){.grad = NULL};
    return waiting;
}

#include "kernel_split_classes.h"

/* class indices with weights and label smoothing, and no softcap (whose exp pass and gradient take
 * other loops) */
static int smooths_with_weights(const sce_params *params, const int64_t *target_index) {
    return target_index && params->weight && params->label_smoothing != 0 && params->softcap == 0;
}

/* call_constants.spread_weights apply: weights and smoothing, and one upstream gradient for every row */
static int uses_spread_weights(const sce_params *params, const int64_t *target_index) {
    return smooths_with_weights(params, target_index) && !params->row_grad_scale;
}

/* the class weights as floats into space (K values); NULL unless every one is a float exactly */
static const float *narrow_weights_of(float *space, const sce_params *params) {
    int exact = 1;
    for (int64_t k = 0; k < params->n_classes; k++) {
        space[k] = (float)params->weight[k];
        exact &= (double)space[k] == params->weight[k]; /* a NaN weight too is not */
    }
    return exact ? space : NULL;
}

/* w_k spread target into space (K values), as gradient_values computes them for a row; NULL when
 * one is beyond SCRATCH's range (the rows then compute them in double) */
static const SCRATCH *spread_weights_of(SCRATCH *space, const sce_result *result, const sce_params *params) {
    const double spread = params->label_smoothing / (double)params->n_classes;
    const double target = scales_of(params->grad_scale, result, params->reduction).ce;
    int fit = 1;
    for (int64_t k = 0; k < params->n_classes; k++) {
        const double value = params->weight[k] * (spread * target);
        space[k] = (SCRATCH)value;
        fit &= !isinf(space[k]) || isinf(value);
    }
    return fit ? space : NULL;
}

/* The set-up that needs the targets copied and counted (a mean's denominators), run while the
 * workers wake (pool_run_after): the spread weights depend on them. job->target_index becomes the
 * copy. */
static int prepare_cross_entropy(void *context) {
    cross_entropy_job *job = context;
    const int status = count_targets(job->result, job->params, job->target_index, job->target_copy);
    if (job->target_index) job->target_index = job->target_copy;
    if (status == SCE_OK && job->spread_weight_space)
        job->call.spread_weights = spread_weights_of(job->spread_weight_space, job->result, job->params);
    if (job->narrow_weight_space) job->call.narrow_weights = narrow_weights_of(job->narrow_weight_space, job->params);
    return status;
}

int KERNEL_NAME(sce_cross_entropy)(STORAGE *grad, sce_result *result, const sce_params *params,
                                   const STORAGE *logits, const int64_t *target_index,
                                   const TARGET *target_prob) {
    int status = check_cross_entropy_arguments(result, params, target_index, target_prob);
    if (status != SCE_OK) return status;

    const int64_t n_rows = params->n_rows, n_classes = params->n_classes;
    const int grouped = takes_groups(params, target_index);
    const int64_t rows_per_chunk = rows_per_chunk_of(n_classes, grouped);
    const int64_t n_chunks = (n_rows + rows_per_chunk - 1) / rows_per_chunk;
    /* fewer rows than threads, each of several segments: the threads share out the class axis */
    const int split_classes = n_rows > 0 && n_rows < params->n_threads && n_classes > SEGMENT;
    const int64_t n_segments = (n_classes + SEGMENT - 1) / SEGMENT;
    const int n_threads = pool_threads_for(params->n_threads, split_classes ? n_rows * n_segments : n_chunks);
    const int64_t scratch_rows = split_classes ? n_rows : n_threads;
    const int with_scratch = grad && n_rows > 0 && !grouped;
    const int with_spread_weights = with_scratch && uses_spread_weights(params, target_index);
    const int64_t scratch_end = scratch_rows * scratch_stride(n_classes); /* then the spread weights */
    SCRATCH *scratch = with_scratch ? new_scratch(scratch_end + with_spread_weights * n_classes) : NULL;
    compensated_sum *chunk_sums = malloc(sizeof(compensated_sum) * 2 * (size_t)(n_chunks > 0 ? n_chunks : 1));
    const int own_copy_needed = target_index && !params->target_copy;
    int64_t *own_copy = own_copy_needed ? malloc(sizeof(int64_t) * (size_t)(n_rows > 0 ? n_rows : 1)) : NULL;
    const int with_narrow_weights = FUSED_SMOOTHING && smooths_with_weights(params, target_index);
    float *narrow_weight_space = with_narrow_weights ? malloc(sizeof(float) * (size_t)n_classes) : NULL;
    const call_constants call = {
        .n_classes = n_classes,
        .softcap = params->softcap,
        .z_loss = params->z_loss,
        .weight_total = sum_of_weights(params),
        .zero_weight = params->label_smoothing != 0 && has_zero_weight(params),
        .stream_gradient = grad && streams_output(grad, n_rows, n_classes),
        .spread_weights = NULL, /* prepare_cross_entropy's, as narrow_weights */
        .narrow_weights = NULL,
    };
    const int pipelined = !split_classes && pipelines_rows(&call, with_scratch);
    cross_entropy_job job = {
        .grad = grad,
        .scratch = scratch,
        .spread_weight_space = with_spread_weights && scratch ? scratch + scratch_end : NULL,
        .narrow_weight_space = narrow_weight_space,
        .result = result,
        .params = params,
        .call = call,
        .logits = logits,
        .target_index = target_index,
        .target_copy = params->target_copy ? params->target_copy : own_copy,
        .target_prob = target_prob,
        .rows_per_chunk = rows_per_chunk,
        .grouped = grouped,
        .loss_sums = chunk_sums,
        .z_loss_sums = chunk_sums && result->row_z_loss ? chunk_sums + n_chunks : NULL,
        .waiting = pipelined ? new_waiting_gradients(n_threads) : NULL,
    };
    if ((with_scratch && !scratch) || !chunk_sums || (target_index && !job.target_copy) ||
        (pipelined && !job.waiting) || (with_narrow_weights && !narrow_weight_space)) {
        status = SCE_ERR_MEMORY;
    } else if (split_classes) {
        status = prepare_cross_entropy(&job);
        if (status == SCE_OK) status = cross_entropy_split(&job, n_threads);
        for (int64_t chunk = 0; chunk < n_chunks && status == SCE_OK; chunk++) sum_chunk(&job, chunk);
    } else {
        status = pool_run_after(n_threads, prepare_cross_entropy, cross_entropy_chunk, cross_entropy_finish, &job,
                                n_chunks);
    }
    if (status == SCE_OK) {
        result->loss_sum = sum_of_chunks(job.loss_sums, n_chunks);
        result->z_loss_sum = job.z_loss_sums ? sum_of_chunks(job.z_loss_sums, n_chunks) : 0.0;
    }
    free(scratch);
    free(chunk_sums);
    free(own_copy);
    free(narrow_weight_space);
    free(job.waiting);
    return status;
}

/* logsumexp, log_softmax and softmax: a function of one row, the rows shared out to threads in
 * chunks as the cross-entropy's; next_row (or NULL) is prefetched meanwhile, as there; rows of at
 * most FEW_CLASSES classes ROW_GROUP at a time (kernel_few_classes_row_functions.h). */
typedef void (*row_function)(STORAGE *out, SCRATCH *scratch, const STORAGE *row, const STORAGE *next_row,
                             int64_t n_classes, int64_t n, int stream_output);

/* values(of, out, k, count): classes [k, k + count) of a row's output into out, of the row's values
 * (a softmax_of_row, a log_softmax_of_row) */
typedef void (*row_values)(const void *of, STORAGE *out, int64_t k, int64_t count);

/* A row's output (of K classes) from values; with stream_output its whole cache lines are streamed,
 * STREAM_BATCH at a time, as the gradient's are (write_gradient_with; softmax at 256x128256 one
 * thread with plain stores took 1.5x the gradient's time). Inlined, so that each call's values are
 * (softmax's two: as a call of a function pointer, its rows of 128 classes took 10% longer). */
SPECIALISED void write_row(STORAGE *out, int64_t n_classes, int stream_output, row_values values, const void *of) {
    int64_t k = 0;
    if (stream_output) {
        k = first_whole_line(out, 0, n_classes);
        values(of, out, 0, k);
        while (k + LINE <= n_classes) {
            STORAGE lines[STREAM_BATCH * LINE];
            const int64_t count = n_classes - k < STREAM_BATCH * LINE ? (n_classes - k) / LINE : STREAM_BATCH;
            values(of, lines, k, count * LINE);
            for (int64_t line = 0; line < count; line++, k += LINE) stream_line(out + k, lines + line * LINE);
        }
    }
    values(of, out + k, k, n_classes - k);
}

static void logsumexp_row(STORAGE *lse, SCRATCH *scratch, const STORAGE *row, const STORAGE *next_row,
                          int64_t n_classes, int64_t n, int stream_output) {
    (void)scratch, (void)stream_output;
    const row_stats stats = compute_row_stats(NULL, row, next_row, NULL, n_classes, 0.0, NULL);
    double value = stats.max + log1p_of_nonnegative(stats.rest);
    if (isinf(stats.max)) {
        /* +inf or -inf is the answer, unless the row also holds a NaN */
        value = stats.max;
        for (int64_t k = 0; k < n_classes; k++)
            if (isnan(LOAD(row[k]))) value = NAN;
    }
    lse[n] = STORE(value);
}

typedef struct {
    const STORAGE *x;
    double max, log_sum;
} log_softmax_of_row;

static void log_softmax_values(const void *of_row, STORAGE *out, int64_t k, int64_t count) {
    const log_softmax_of_row *of = of_row;
    /* both terms <= 0: no cancellation */
#if FLOAT_EXP && !defined(STORAGE_IS_FLOAT)
    /* bfloat16: in float, then rounded to bfloat16 as the gradient is (STORE_FLOAT: within its 1 ulp,
     * the float steps 2^-16 of it), where STORE rounds a double to odd first, in double lanes: the
     * loop took 2.2x the plain pass (float32's 1.2-1.35x) */
    const float max = (float)of->max, log_sum = (float)of->log_sum;
    for (int64_t j = 0; j < count; j++) out[j] = STORE_FLOAT(((float)LOAD(of->x[k + j]) - max) - log_sum);
#else
    int64_t j = 0;
#ifdef LOG_SOFTMAX_16
    for (; j + 16 <= count; j += 16) LOG_SOFTMAX_16(out + j, of->x + k + j, of->max, of->log_sum);
#endif
    for (; j < count; j++) out[j] = STORE((LOAD(of->x[k + j]) - of->max) - of->log_sum);
#endif
}

static void log_softmax_row(STORAGE *out, SCRATCH *scratch, const STORAGE *row, const STORAGE *next_row,
                            int64_t n_classes, int64_t n, int stream_output) {
    (void)scratch;
    const row_stats stats = compute_row_stats(NULL, row, next_row, NULL, n_classes, 0.0, NULL);
    const log_softmax_of_row of = {row, stats.max, log1p_of_nonnegative(stats.rest)};
    write_row(out + n * n_classes, n_classes, stream_output, log_softmax_values, &of);
}

typedef struct {
    const SCRATCH *e;
    scaling inverse_sum;
    double inverse_sum_in_double;
} softmax_of_row;

/* scaled(e, inverse_sum) each, which scaled_minus_values computes with c +0 (and in intrinsics where
 * the type has them) */
static void softmax_values(const void *of_row, STORAGE *out, int64_t k, int64_t count) {
    const softmax_of_row *of = of_row;
    scaled_minus_values(out, of->e + k, of->inverse_sum, NULL, 0.0, count);
}

/* for rows of tiny_products */
static void softmax_values_in_double(const void *of_row, STORAGE *out, int64_t k, int64_t count) {
    const softmax_of_row *of = of_row;
    for (int64_t j = 0; j < count; j++) out[j] = STORE(of->e[k + j] * of->inverse_sum_in_double);
}

static void softmax_row(STORAGE *out, SCRATCH *scratch, const STORAGE *row, const STORAGE *next_row,
                        int64_t n_classes, int64_t n, int stream_output) {
    const row_stats stats = compute_row_stats(scratch, row, next_row, NULL, n_classes, 0.0, NULL);
    const double inverse_sum = 1.0 / (1.0 + stats.rest);
    const softmax_of_row of = {scratch, scaling_of(inverse_sum), inverse_sum};
    if (tiny_products(stats.min, stats.max, inverse_sum)) /* two calls: each inlines its values */
        write_row(out + n * n_classes, n_classes, stream_output, softmax_values_in_double, &of);
    else
        write_row(out + n * n_classes, n_classes, stream_output, softmax_values, &of);
}

#include "kernel_few_classes_row_functions.h"

typedef struct {
    row_function function;
    group_function group; /* the same, for rows of at most FEW_CLASSES classes */
    STORAGE *out;
    SCRATCH *scratch; /* on_whole_lines(K) values per worker, or NULL (few classes need none) */
    const STORAGE *x;
    int64_t n_rows, n_classes, rows_per_chunk;
    int stream_output; /* write an N x K output past the caches (see STREAM_MIN_BYTES) */
} row_function_job;

static void row_function_chunk(void *context, int worker, int64_t chunk) {
    const row_function_job *job = context;
    const int64_t begin = chunk * job->rows_per_chunk;
    const int64_t end = chunk_end(begin, job->rows_per_chunk, job->n_rows);
    if (job->n_classes <= FEW_CLASSES) {
        row_function_groups(job->group, job->out, job->x, begin, end, job->n_rows, (int)job->n_classes);
        return;
    }
    SCRATCH *scratch = job->scratch ? job->scratch + worker * on_whole_lines(job->n_classes) : NULL;
    for (int64_t n = begin; n < end; n++) {
        const STORAGE *row = job->x + n * job->n_classes;
        job->function(job->out, scratch, row, row_to_prefetch(row, n, job->n_rows, job->n_classes), job->n_classes, n,
                      job->stream_output);
    }
    if (job->stream_output) stream_fence(); /* before the chunk is reported done */
}

/* function over every row, with a work space of K values per thread if it needs one; writes_rows: its
 * output is N x K (softmax, log_softmax), not one value per row */
static int run_row_function(row_function function, group_function group, int needs_scratch, int writes_rows,
                            STORAGE *out, const sce_params *params, const STORAGE *x) {
    if (params->n_rows < 0 || params->n_classes < 1) return SCE_ERR_SHAPE;
    const int64_t n_rows = params->n_rows, n_classes = params->n_classes;
    const int64_t rows_per_chunk = rows_per_chunk_of(n_classes, n_classes <= FEW_CLASSES);
    const int64_t n_chunks = (n_rows + rows_per_chunk - 1) / rows_per_chunk;
    const int n_threads = pool_threads_for(params->n_threads, n_chunks);
    SCRATCH *scratch = NULL;
    if (needs_scratch && n_rows > 0 && n_classes > FEW_CLASSES) {
        scratch = new_scratch(n_threads * on_whole_lines(n_classes));
        if (!scratch) return SCE_ERR_MEMORY;
    }
    const int stream_output = writes_rows && streams_output(out, n_rows, n_classes);
    const row_function_job job = {function, group, out, scratch, x, n_rows, n_classes, rows_per_chunk, stream_output};
    pool_run(n_threads, row_function_chunk, (void *)&job, n_chunks);
    free(scratch);
    return SCE_OK;
}

int KERNEL_NAME(sce_logsumexp)(STORAGE *lse, const sce_params *params, const STORAGE *x) {
    return run_row_function(logsumexp_row, logsumexp_group, 0, 0, lse, params, x);
}

int KERNEL_NAME(sce_log_softmax)(STORAGE *out, const sce_params *params, const STORAGE *x) {
    return run_row_function(log_softmax_row, log_softmax_group, 0, 1, out, params, x);
}

int KERNEL_NAME(sce_softmax)(STORAGE *out, const sce_params *params, const STORAGE *x) {
    return run_row_function(softmax_row, softmax_group, 1, 1, out, params, x);
}
