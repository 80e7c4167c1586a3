/* kernel_few_classes.h: the cross-entropy of rows of at most FEW_CLASSES classes, and the pieces
 * the row functions of such rows share with it (kernel_few_classes_row_functions.h); part of
 * kernel_template.h (included once, by kernel_cross_entropy.h, before the chunk function, which
 * chooses it).
 *
 * Such rows are too short to vectorise along: the fixed costs of a row (16 lanes of sums set up and
 * reduced, loops of a few trips) would dominate them. They are taken ROW_GROUP at a time instead,
 * transposed so that a class is a vector across the rows, with the formulas of cross_entropy_row
 * (sums in class order). Each row has its own lane, so a row's result does not depend on the rows
 * grouped with it. Float32 logits, their exps and their gradient stay floats in the lanes (two
 * 512-bit vectors hold a class of the whole group); the sums and the per-row factors are double, as
 * on the row path. */

/* GCC unrolls a loop of 16 or 32 constant trips completely before its vectoriser sees it, and the
 * unrolled body then stays scalar; kept as a loop, it becomes a few vector instructions. */
#define ACROSS_ROWS _Pragma("GCC unroll 1")

/* The group transposed: class k of its row r at [AT(k, r)] of an array of n_classes * ROW_GROUP
 * (flat, so that a lane's own k can be gathered: GCC 12 gathers from no 2-D array). The arrays are
 * on the stack, sized by the call's K rather than FEW_CLASSES (variable-length arrays): 34 KB for
 * float32 rows of 88 classes, 60 KB for 48 with a softcap (float16's double lanes: about 90 KB),
 * 5 KB at 10 classes. Arrays of a fixed size would take the most at every K (they measured about 1%
 * faster at K = 2 and 10, a C harness). The logits and exps are kept as SCRATCH, which holds them
 * exactly (floats for float32). AT is pointer-sized: with -fwrapv (in Python's build flags) an int
 * index would not be affine in the class loops, and GCC would vectorise none of them; GATHER_AT,
 * for a k of each lane's own, is an int: gathers take 32-bit indices. */
#define AT(k, r) ((ptrdiff_t)(k) * ROW_GROUP + (r))
#define GATHER_AT(k, r) ((k) * ROW_GROUP + (r))

/* Float32 logits on AVX-512 and AVX2 go to lanes and back by transposes in registers (AVX2: rows of
 * at least 4 classes, and groups of fewer rows back by gathers); others by gathers, through index
 * tables, so that the rows are read and the gradient written in memory order. The AVX-512 build
 * takes the class loops of the max, the exps and a lone index's gradient in registers too
 * (few_classes_avx512.h), the AVX2 build those of the max and the exps (few_classes_avx2.h).
 * 16-bit logits on AVX2 take the AVX2 build's transposes (ROWS_AS_FLOATS): their rows widened to
 * floats before, the gradient and the row functions' results as floats (float16's rounded to odd)
 * after, rounded to STORAGE 16 at a time (STORE_16_FLOATS), where gathers moved and rounded one
 * element at a time; bfloat16, whose lanes are floats too, its class loops as well (it took 1.6x
 * float32's time at 65536x10). A/B medians on Zen 3, one thread: bfloat16's gradient 0.61-0.71, with
 * label smoothing 0.77, its row functions 0.65-0.71; float16's gradient 0.81-0.84, its row functions
 * 0.70-0.86. */
#if defined(__AVX512F__) && defined(STORAGE_IS_FLOAT)
_Static_assert(sizeof(STORAGE) == sizeof(float) && sizeof(SCRATCH) == sizeof(float) && sizeof(TARGET) == sizeof(float),
               "transpose_16.h moves floats");
#define TRANSPOSE_16 1
#include "transpose_16.h"
#include "few_classes_avx512.h"
#elif defined(__AVX2__) && !defined(__AVX512F__) && (defined(STORAGE_IS_FLOAT) || defined(STORE_16_FLOATS))
_Static_assert(sizeof(TARGET) == sizeof(float), "transpose_4_avx2.h moves floats");
#define TRANSPOSE_4 1
#ifndef STORAGE_IS_FLOAT
#define ROWS_AS_FLOATS 1 /* 16-bit logits, see above */
#endif
#include "transpose_4_avx2.h"
#if FLOAT_EXP
_Static_assert(sizeof(SCRATCH) == sizeof(float), "few_classes_avx2.h takes float lanes");
#include "few_classes_avx2.h"
#endif
#endif

/* The length of an array of a group's logits or targets in lanes: the 16 x 16 register transpose
 * fills whole blocks of 16 classes (transpose_to_lanes). */
static inline int lanes_length(int n_classes) {
#ifdef TRANSPOSE_16
    return (n_classes + 15) / 16 * 16 * ROW_GROUP;
#else
    return n_classes * ROW_GROUP;
#endif
}

/* Where the lanes' elements are in the rows, for the gathers (nothing with the register transpose);
 * set up once per chunk. */
typedef struct {
#ifndef TRANSPOSE_16
    int of_rows[FEW_CLASSES * ROW_GROUP];       /* [AT(k, r)] is element r K + k of the rows */
    int of_transposed[FEW_CLASSES * ROW_GROUP]; /* and the other way */
#else
    char unused; /* C allows no empty struct */
#endif
} group_layout;

static void set_up_group_layout(group_layout *layout, int n_classes) {
#ifndef TRANSPOSE_16
    for (int r = 0; r < ROW_GROUP; r++)
        for (int k = 0; k < n_classes; k++) {
            layout->of_rows[AT(k, r)] = r * n_classes + k;
            layout->of_transposed[r * n_classes + k] = AT(k, r);
        }
#else
    (void)layout;
    (void)n_classes;
#endif
}

/* fits_float for a value that multiplies others of any size in float (the target factor, c_k):
 * also 0 or normal, as a subnormal float keeps too few digits (the gradient of a grad_scale of
 * 1e-44 with weights of 1e30 was 2% off; the row path multiplies them in double) */
SPECIALISED int fits_float_multiplier(double value) {
    return fits_float(value) & (!FLOAT_EXP | (value == 0) | (fabs(value) >= FLT_MIN)); /* (no branches) */
}

/* What every group of a call shares, set up once per chunk. */
typedef struct {
    group_layout layout;
    double w[FEW_CLASSES]; /* the class weights of keep t + spread (all 1 where target_of_row drops them) */
    double on_target[FEW_CLASSES + 1]; /* (1 - eps) w_k, target_of_row's on_target for class index k;
                                          0 at FEW_CLASSES, for rows not counted */
    double keep, spread;           /* 1 - eps, eps / K */
    /* smoothed class indices: c_k off the index (coefficient_of's w_k spread) as the gradient takes
     * it, whether every one fits (fits_float_multiplier), and the largest |c_k| */
    SCRATCH spread_c[FEW_CLASSES];
    int spread_c_fit;
    double spread_c_largest;
    gradient_scales scales;        /* of every row, unless each has its own upstream gradient */
} group_constants;

static void set_up_groups(group_constants *constants, const cross_entropy_job *job) {
    const sce_params *params = job->params;
    const int n_classes = (int)params->n_classes;
    set_up_group_layout(&constants->layout, n_classes);
    constants->keep = 1.0 - params->label_smoothing;
    constants->spread = params->label_smoothing / (double)n_classes;
    const int weighted_spread = params->weight && (constants->spread != 0 || job->target_prob); /* as target_of_row */
    for (int k = 0; k < n_classes; k++) {
        constants->w[k] = weighted_spread ? params->weight[k] : 1.0;
        constants->on_target[k] = constants->keep * (params->weight ? params->weight[k] : 1.0);
    }
    constants->on_target[FEW_CLASSES] = 0.0;
    constants->spread_c_fit = 1;
    constants->spread_c_largest = 0.0;
    for (int k = 0; k < n_classes; k++) {
        const double c = coefficient_of(constants->w[k], constants->keep, 0.0, constants->spread, 0, 0.0);
        constants->spread_c[k] = (SCRATCH)c;
        constants->spread_c_fit &= fits_float_multiplier(c);
        constants->spread_c_largest = fabs(c) > constants->spread_c_largest ? fabs(c) : constants->spread_c_largest;
    }
    constants->scales = scales_of(params->grad_scale, job->result, params->reduction);
}

/* The ROW_GROUP rows of a group from rows: rows itself when all are real (n_rows), else a copy in
 * padded with row 0 repeated (so that every lane computes something, and loads need no bounds) */
static const void *group_rows(void *padded, const void *rows, int n_rows, size_t row_bytes) {
    if (n_rows == ROW_GROUP) return rows;
    memcpy(padded, rows, (size_t)n_rows * row_bytes);
    for (int r = n_rows; r < ROW_GROUP; r++) memcpy((char *)padded + (size_t)r * row_bytes, rows, row_bytes);
    return padded;
}

/* The group's logits and probability targets to lanes, [AT(k, r)] = class k of row r (rows past
 * n_rows repeat row 0, so that every lane computes something), and its gradient back to rows, made
 * STORAGE there; lanes_to_rows moves lanes that are STORAGE already (the row functions' results, but
 * see lane_result).
 * readable: the values from rows on that may be read: the rows of the calling chunk, past which
 * another thread may be writing its gradient over its logits. */
#ifdef TRANSPOSE_16
static void logits_to_lanes(SCRATCH *lanes, const STORAGE *rows, const group_layout *layout, int n_rows,
                            int n_classes, int64_t readable) {
    (void)layout;
    transpose_to_lanes(lanes, rows, n_rows, n_classes, readable);
}

static void targets_to_lanes(TARGET *lanes, const TARGET *rows, const group_layout *layout, int n_rows,
                             int n_classes, int64_t readable) {
    (void)layout;
    transpose_to_lanes(lanes, rows, n_rows, n_classes, readable);
}

static void lanes_to_rows(STORAGE *rows, const STORAGE *lanes, const group_layout *layout, int n_rows,
                          int n_classes) {
    (void)layout;
    transpose_to_rows(rows, lanes, n_rows, n_classes);
}

/* SCRATCH is STORAGE (float) */
static void gradient_to_rows(STORAGE *rows, const SCRATCH *lanes, const group_layout *layout, int n_rows,
                             int n_classes) {
    lanes_to_rows(rows, lanes, layout, n_rows, n_classes);
}
#else
#ifdef ROWS_AS_FLOATS
_Static_assert(ROW_GROUP % 16 == 0, "a group's logits are a multiple of 16");

/* floats[i] = x[i] widened, i < count (a multiple of 16) */
static inline void widen_to_floats(float *floats, const STORAGE *x, int count) {
    /* a group of 4 classes or more: said, or GCC 12 warns that the caller's floats may be left unset */
    if (count < 16) __builtin_unreachable();
    for (int i = 0; i < count; i += 16) store_16_floats(floats + i, LOAD_16_AS_FLOATS(x + i));
}
#endif

static void logits_to_lanes(SCRATCH *lanes, const STORAGE *rows, const group_layout *layout, int n_rows,
                            int n_classes, int64_t readable) {
    (void)readable;
    STORAGE padded[n_classes * ROW_GROUP];
    const STORAGE *x = group_rows(padded, rows, n_rows, n_classes * sizeof(STORAGE));
#ifdef TRANSPOSE_4
    if (n_classes >= 4) {
#ifdef ROWS_AS_FLOATS
        float floats[n_classes * ROW_GROUP];
        widen_to_floats(floats, x, n_classes * ROW_GROUP);
#else
        const float *floats = x;
#endif
#if FLOAT_EXP /* float lanes */
        rows_to_lanes_4(lanes, floats, n_classes);
#else /* float16's double lanes: transposed as floats, then widened */
        float transposed[n_classes * ROW_GROUP];
        rows_to_lanes_4(transposed, floats, n_classes);
        for (int i = 0; i < n_classes * ROW_GROUP; i++) lanes[i] = transposed[i];
#endif
        return;
    }
#endif
    STORAGE transposed[n_classes * ROW_GROUP];
    /* moved, then converted in a loop of its own: half precision has no gathers, but converts in vectors */
    for (int i = 0; i < n_classes * ROW_GROUP; i++) transposed[i] = x[layout->of_rows[i]];
    for (int i = 0; i < n_classes * ROW_GROUP; i++) lanes[i] = (SCRATCH)LOAD(transposed[i]);
}

static void targets_to_lanes(TARGET *lanes, const TARGET *rows, const group_layout *layout, int n_rows,
                             int n_classes, int64_t readable) {
    (void)readable;
    TARGET padded[n_classes * ROW_GROUP];
    const TARGET *t = group_rows(padded, rows, n_rows, n_classes * sizeof(TARGET));
#ifdef TRANSPOSE_4
    if (n_classes >= 4) {
        rows_to_lanes_4(lanes, t, n_classes);
        return;
    }
#endif
    for (int i = 0; i < n_classes * ROW_GROUP; i++) lanes[i] = t[layout->of_rows[i]];
}

#ifndef ROWS_AS_FLOATS /* (whose results go to rows by float_lanes_to_rows) */
/* (rows past n_rows are not written: a group of fewer rows takes the gathers) */
static void lanes_to_rows(STORAGE *rows, const STORAGE *lanes, const group_layout *layout, int n_rows,
                          int n_classes) {
#ifdef TRANSPOSE_4 /* (float32 here) */
    if (n_rows == ROW_GROUP && n_classes >= 4) {
        lanes_to_rows_4(rows, lanes, n_classes);
        return;
    }
#endif
    for (int i = 0; i < n_rows * n_classes; i++) rows[i] = lanes[layout->of_transposed[i]];
}
#endif

#ifdef ROWS_AS_FLOATS
/* float lanes to rows made STORAGE: floats in rows, then rounded (K ROW_GROUP of them) */
static void float_lanes_to_rows(STORAGE *rows, const float *lanes, const group_layout *layout, int n_rows,
                                int n_classes) {
    if (n_rows == ROW_GROUP && n_classes >= 4) {
        float values[n_classes * ROW_GROUP];
        lanes_to_rows_4(values, lanes, n_classes);
        for (int i = 0; i < n_classes * ROW_GROUP; i += 16)
            STORE_16_FLOATS(rows + i, _mm256_loadu_ps(values + i), _mm256_loadu_ps(values + i + 8));
        return;
    }
    for (int i = 0; i < n_rows * n_classes; i++) rows[i] = STORE(lanes[layout->of_transposed[i]]);
}
#endif

static void gradient_to_rows(STORAGE *rows, const SCRATCH *lanes, const group_layout *layout, int n_rows,
                             int n_classes) {
#if defined(ROWS_AS_FLOATS) && FLOAT_EXP
    float_lanes_to_rows(rows, lanes, layout, n_rows, n_classes);
#elif defined(ROWS_AS_FLOATS) /* float16's double lanes, rounded to odd floats (STORE's first rounding) */
    float odd[n_classes * ROW_GROUP];
    for (int i = 0; i < n_classes * ROW_GROUP; i++) odd[i] = float_rounded_to_odd(lanes[i]);
    float_lanes_to_rows(rows, odd, layout, n_rows, n_classes);
#elif defined(TRANSPOSE_4) /* SCRATCH is STORAGE */
    lanes_to_rows(rows, lanes, layout, n_rows, n_classes);
#else
    for (int i = 0; i < n_rows * n_classes; i++) rows[i] = STORE(lanes[layout->of_transposed[i]]);
#endif
}
#endif

/* A row function's results in lanes (LANE_RESULT of each double), moved to rows by results_to_rows:
 * STORAGE, or for 16-bit logits on AVX2 floats rounded to odd, which float_lanes_to_rows then rounds
 * 16 at a time (the two roundings of STORE, the same bits). */
#ifdef ROWS_AS_FLOATS
typedef float lane_result;
#define LANE_RESULT(value) float_rounded_to_odd(value)
#define results_to_rows float_lanes_to_rows
#else
typedef STORAGE lane_result;
#define LANE_RESULT(value) STORE(value)
#define results_to_rows lanes_to_rows
#endif

/* The steps of a group that the cross-entropy and the row functions share. */

/* The logits of rows [first, first + n_rows) of x to lanes, the next group before end prefetched
 * meanwhile (64: a cache line; 1: into L2); the reads stay before row end. */
static void group_logits_to_lanes(SCRATCH *value, const STORAGE *x, const group_layout *layout, int64_t first,
                                  int n_rows, int64_t end, int n_classes) {
    const STORAGE *rows = x + first * n_classes;
    if (first + ROW_GROUP < end)
        for (int byte = 0; byte < ROW_GROUP * n_classes * (int)sizeof(STORAGE); byte += 64)
            __builtin_prefetch((const char *)(rows + ROW_GROUP * n_classes) + byte, 0, 1);
    logits_to_lanes(value, rows, layout, n_rows, n_classes, (end - first) * n_classes);
}

/* Each row's max, as find_max: the first index of the largest x (0 when none is above -inf); and
 * x_at_argmax, what row_rest needs: the max, unless no x is above -inf (then x_0, maybe NaN); and
 * min, for careful_exps and subnormal_products. For FLOAT_EXP types min is the smallest x (a NaN
 * left out; AVX-512 leaves -inf out too), or where that is more than 87 below the max, the smallest
 * x whose exp is not 0 (x >= max - 104), so that masks of -inf or -1e4, whose exps are 0, are not
 * taken for logits spread wide (logit_max's min likewise). For the other types min is -inf. */
SPECIALISED void group_max(SCRATCH max[ROW_GROUP], SCRATCH min[ROW_GROUP], int argmax[ROW_GROUP],
                           SCRATCH x_at_argmax[ROW_GROUP], const SCRATCH *value, int n_classes) {
#ifdef TRANSPOSE_16
    group_max_16(max, min, argmax, x_at_argmax, value, n_classes);
#else
#ifdef GROUP_LOOPS_8
    group_max_classes_8(max, min, argmax, value, n_classes);
#else
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
        max[r] = -INFINITY;
        min[r] = FLOAT_EXP ? INFINITY : -INFINITY;
        argmax[r] = 0;
    }
    /* argmax by arithmetic, not a select that may keep the old value: GCC makes that a masked store,
     * which the next class's load cannot forward from */
    for (int k = 0; k < n_classes; k++)
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const SCRATCH old = max[r], x_k = value[AT(k, r)];
            const int larger = x_k > old;
            max[r] = larger ? x_k : old;
            argmax[r] += larger * (k - argmax[r]);
            if (FLOAT_EXP) min[r] = x_k < min[r] ? x_k : min[r]; /* a min instruction */
        }
#endif
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) x_at_argmax[r] = max[r] > -INFINITY ? max[r] : value[AT(0, r)];
    int spread = 0;
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) spread |= FLOAT_EXP && min[r] - max[r] < VEXPF_SUBNORMAL_BELOW;
    if (!spread) return;
    /* again for the exps that are not 0 (rare): the same min for the rows that are not spread */
    SCRATCH zero_below[ROW_GROUP];
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
        zero_below[r] = max[r] + VEXPF_FLOOR;
        min[r] = INFINITY;
    }
    for (int k = 0; k < n_classes; k++)
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const SCRATCH x_k = value[AT(k, r)];
            min[r] = x_k < min[r] && x_k >= zero_below[r] ? x_k : min[r];
        }
#endif
}

/* x' at [at]: the logit, or with_softcap its capped value */
SPECIALISED double group_logit(const SCRATCH *value, const double *capped, ptrdiff_t at, int with_softcap) {
    return with_softcap ? capped[at] : (double)value[at];
}

/* x'_y of each row, at its class index y (at class 0 for a row without: index -1) */
SPECIALISED void group_logits_at_index(double x_y[ROW_GROUP], const SCRATCH *value, const double *capped,
                                       const int index[ROW_GROUP], int with_softcap) {
#ifdef TRANSPOSE_16
    if (!with_softcap) {
        SCRATCH at_index[ROW_GROUP];
        group_value_at_index_16(at_index, value, index);
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) x_y[r] = at_index[r];
        return;
    }
#endif
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++)
        x_y[r] = group_logit(value, capped, GATHER_AT(index[r] < 0 ? 0 : index[r], r), with_softcap);
}

/* group_exps' loop; careful a constant */
SPECIALISED void group_exp_terms(double rest[ROW_GROUP], double rest_carry[ROW_GROUP], SCRATCH *e, double *capped_e,
                                 const SCRATCH *value, const double *capped, const double top[ROW_GROUP],
                                 const int argmax[ROW_GROUP], int n_classes, int with_softcap, int careful) {
    for (int k = 0; k < n_classes; k++)
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const double x_k = group_logit(value, capped, AT(k, r), with_softcap);
            const double term = exp_term(x_k, top[r], with_softcap, careful);
            add_to_sum(&rest[r], &rest_carry[r], k == argmax[r] ? 0.0 : term);
            if (with_softcap)
                capped_e[AT(k, r)] = term;
            else
                e[AT(k, r)] = (SCRATCH)term;
        }
}

/* e = exp(x' - top) of every lane (in e, or with_softcap in capped_e), and each row's rest: the sum
 * of its e but the argmax's, in class order (the gradient reads no e at the argmax). A group with a
 * row whose exps may be subnormal (careful_exps, from min: group_max's, or -softcap) has all its
 * exps scaled in double, which gives the others the same bits. */
SPECIALISED void group_exps(double rest[ROW_GROUP], double rest_carry[ROW_GROUP], SCRATCH *e, double *capped_e,
                            const SCRATCH *value, const double *capped, const double top[ROW_GROUP],
                            const SCRATCH min[ROW_GROUP], const int argmax[ROW_GROUP], int n_classes,
                            int with_softcap) {
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) rest[r] = rest_carry[r] = 0.0;
#ifdef TRANSPOSE_16
    if (!with_softcap) {
        SCRATCH max[ROW_GROUP]; /* top is the float max */
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) max[r] = (SCRATCH)top[r];
        group_exps_16(rest, e, value, max, min, argmax, n_classes);
        return;
    }
#endif
    int careful = 0;
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) careful |= careful_exps(min[r], top[r]);
#ifdef GROUP_LOOPS_8
    if (!with_softcap) {
        SCRATCH max[ROW_GROUP]; /* top is the float max */
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) max[r] = (SCRATCH)top[r];
        if (careful)
            group_exps_8(rest, e, value, max, argmax, n_classes, 1);
        else
            group_exps_8(rest, e, value, max, argmax, n_classes, 0);
        return;
    }
#endif
    if (careful)
        group_exp_terms(rest, rest_carry, e, capped_e, value, capped, top, argmax, n_classes, with_softcap, 1);
    else
        group_exp_terms(rest, rest_carry, e, capped_e, value, capped, top, argmax, n_classes, with_softcap, 0);
}

/* Each row's rest from its sums, NaN for a NaN row (row_rest). A loop of its own: in the loop of
 * the log that follows it, GCC mixed row_rest's float test into the double lanes (mask conversions,
 * a blend of each input), and the loss of 65536x10 float32 took 1.06x the time (A/B medians on
 * Zen 3; 1.04x on two threads). */
SPECIALISED void group_rests(double rest_of_row[ROW_GROUP], const double rest[ROW_GROUP],
                             const double rest_carry[ROW_GROUP], const double top[ROW_GROUP],
                             const SCRATCH x_at_argmax[ROW_GROUP]) {
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++)
        rest_of_row[r] = row_rest(with_carry(rest[r], rest_carry[r]), top[r], x_at_argmax[r]);
}

/* The targets of a group's rows, as target_of_row's parts. Lanes past the group's last row are not
 * counted. */
typedef struct {
    int counted[ROW_GROUP];      /* a row of the group, and not ignored */
    int index[ROW_GROUP];        /* the class index; -1 for a probability row or a row not counted */
    double on_target[ROW_GROUP]; /* (1 - eps) w_y; 0 where index is -1 */
    double ce_scale[ROW_GROUP], z_scale[ROW_GROUP]; /* scales_of */
} group_targets;

static void read_group_targets(group_targets *restrict targets, const cross_entropy_job *job,
                               const group_constants *constants, int64_t first, int n_rows) {
    const sce_params *params = job->params;
    const int64_t ignore_index = params->ignore_index;
    const double *on_target = constants->on_target; /* a plain pointer: a gather */
    const double keep = constants->keep; /* read through constants, it kept its loop scalar, a branch per row */
    if (job->target_index) {
        int64_t padded[ROW_GROUP];
        const int64_t *target_index = group_rows(padded, job->target_index + first, n_rows, sizeof(int64_t));
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const int64_t y = target_index[r];
            const int counted = r < n_rows && y != ignore_index;
            targets->counted[r] = counted;
            targets->index[r] = counted ? (int)y : -1;
        }
        if (params->weight)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) /* no select: a gather */
                targets->on_target[r] = on_target[targets->counted[r] ? targets->index[r] : FEW_CLASSES];
        else /* every (1 - eps) w_y is 1 - eps: no gather */
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++)
                targets->on_target[r] = targets->counted[r] ? keep : 0.0;
    } else
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            targets->counted[r] = r < n_rows;
            targets->index[r] = -1;
            targets->on_target[r] = 0.0;
        }
    /* with an upstream gradient per row, the scales of each; else the call's, for every row */
    if (params->row_grad_scale)
        for (int r = 0; r < ROW_GROUP; r++) {
            const gradient_scales scales =
                scales_of(params->row_grad_scale[first + (r < n_rows ? r : 0)], job->result, params->reduction);
            targets->ce_scale[r] = scales.ce;
            targets->z_scale[r] = scales.z;
        }
    else
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            targets->ce_scale[r] = constants->scales.ce;
            targets->z_scale[r] = constants->scales.z;
        }
}

/* c_k of row r (coefficient) from w_k (constants->w) and t[at] (the probability, 0 for class-index
 * rows); class-index targets without smoothing (lone_index), where only the class itself has a
 * share, or with it (smoothed_index): t is not filled, nor read. Rows not counted get some c too,
 * which every result of theirs leaves out. */
SPECIALISED double group_coefficient(const group_constants *constants, const group_targets *targets, double w_k,
                                     const TARGET *t, ptrdiff_t at, int k, int r, int lone_index,
                                     int smoothed_index) {
    const int at_index = k == targets->index[r];
    if (lone_index) return at_index ? targets->on_target[r] : 0.0;
    const double t_k = smoothed_index ? 0.0 : t[at];
    return coefficient_of(w_k, constants->keep, t_k, constants->spread, at_index, targets->on_target[r]);
}

/* whether the float gradient of a group's row, one product e_k p (p the factor, no low part as in
 * scaled()), may meet a subnormal e_k or product: min and max the row's (group_max). The bound
 * 2^-125 takes in every row whose exps may be subnormal (careful_exps: below 2^-125.5), whatever p
 * (from 1 on, its exponent counts as 0); a p that is not finite or too large for a float takes the
 * double pass anyway. */
SPECIALISED int subnormal_products(double min, double max, double factor) {
    const double smallest_exp = (min - max) * VEXP_LOG2E; /* log2 of the smallest e_k but the zeros */
    return FLOAT_EXP & (factor != 0) & (smallest_exp + binary_exponent_below_1(factor) < -125);
}

/* whether c_k, rounded to SCRATCH, and its product with the target factor (fits_float_multiplier)
 * rounded too fit the float products (fits_float): each rounding adds up to 2^-24 of it, so the
 * double product must stay that far below FLT_MAX (just below it, the float product was inf) */
SPECIALISED int float_product_fits(double c, double factor) {
    return fits_float_multiplier(c) & fits_float(c * factor * (1 + 0x1p-22));
}

/* grad_k / slope_k, in the precision of its operands (factors_of's gradient_factors, and c_k) */
#define LANE_GRADIENT(is_argmax, at_argmax, e, probability, c, target) \
    ((is_argmax) ? (at_argmax) : (e) * (probability) - (c) * (target))


/* The loss and z-loss term of the group of rows from first and, with a gradient, their gradient;
 * end: the end of this chunk's rows, which reads may reach (past them, another thread may be
 * writing its gradient over its logits). Class-index rows without a softcap take their sums of c_k
 * in closed form, as sum_over_target: lone_index (no smoothing), one term; smoothed_index, T =
 * on_target + spread W and the distance on_target (top - x_y) + spread D (D = sum_k w_k (top - x_k)),
 * where c_k per element, for both sums and again for the gradient, made label smoothing 1.45x the
 * plain pass (65536x10 float32, one thread; A/B: 0.77-0.83 of that time). */
SPECIALISED void cross_entropy_group_with(const cross_entropy_job *job, const group_constants *constants,
                                          int64_t first, int64_t end, int with_softcap, int lone_index,
                                          int smoothed_index) {
    const int index_sums = lone_index || smoothed_index; /* (never with a softcap: cross_entropy_groups) */
    const int n_rows = end - first < ROW_GROUP ? (int)(end - first) : ROW_GROUP;
    const sce_params *params = job->params;
    const sce_result *result = job->result;
    const int n_classes = (int)params->n_classes;
    const double softcap = job->call.softcap;
    SCRATCH value[lanes_length(n_classes)], e[n_classes * ROW_GROUP];
    /* softcap only: x', its slope, and e in double (see the gradient) */
    const int softcap_lanes = with_softcap ? n_classes * ROW_GROUP : 1;
    double capped[softcap_lanes], slope[softcap_lanes], capped_e[softcap_lanes];
    TARGET t[index_sums ? 1 : lanes_length(n_classes)];
    group_targets targets;
    const double *w = constants->w;
    /* every read of x and of the targets happens before the gradient is written: grad may be logits */
    read_group_targets(&targets, job, constants, first, n_rows);
    group_logits_to_lanes(value, job->logits, &constants->layout, first, n_rows, end, n_classes);
    if (!index_sums) { /* the probabilities t, 0 for class-index rows (with a softcap) */
        if (job->target_prob)
            targets_to_lanes(t, job->target_prob + first * n_classes, &constants->layout, n_rows, n_classes,
                             (end - first) * n_classes);
        else
            for (int i = 0; i < n_classes * ROW_GROUP; i++) t[i] = 0;
    }

    SCRATCH max[ROW_GROUP], min[ROW_GROUP], x_at_argmax[ROW_GROUP];
    int argmax[ROW_GROUP];
    group_max(max, min, argmax, x_at_argmax, value, n_classes);
    double top[ROW_GROUP]; /* the max of x' */
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) top[r] = with_softcap ? softcapped(max[r], softcap).value : max[r];
    if (with_softcap) { /* x' - top >= -softcap - top, for careful_exps (the gradient is double) */
        const SCRATCH lowest = (SCRATCH)(softcap < 0x1p100 ? -softcap : -0x1p100); /* within float's range */
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) min[r] = lowest;
    }
    if (with_softcap)
        for (int k = 0; k < n_classes; k++)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
                const capped_logit logit = softcapped(value[AT(k, r)], softcap);
                capped[AT(k, r)] = logit.value;
                slope[AT(k, r)] = logit.slope;
            }

    double rest[ROW_GROUP], rest_carry[ROW_GROUP];
    group_exps(rest, rest_carry, e, capped_e, value, capped, top, min, argmax, n_classes, with_softcap);

    /* target_sums */
    double total[ROW_GROUP], total_carry[ROW_GROUP], distance[ROW_GROUP], distance_carry[ROW_GROUP];
    double x_y[ROW_GROUP]; /* read by index_sums only */
    if (index_sums) group_logits_at_index(x_y, value, capped, targets.index, with_softcap);
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) { /* a class index's own term, as sum_over_target */
        const double c = targets.on_target[r];
        total[r] = index_sums ? c : 0.0;
        distance[r] = index_sums && c != 0 ? c * (top[r] - x_y[r]) : 0.0;
        total_carry[r] = distance_carry[r] = 0.0;
    }
    if (smoothed_index) { /* and spread W, spread D */
        const double spread = constants->spread;
        double d[ROW_GROUP], d_carry[ROW_GROUP];
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) d[r] = d_carry[r] = 0.0;
        for (int k = 0; k < n_classes; k++)
            if (w[k] != 0) /* a zero weight adds nothing, even at x_k = -inf */
                ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++)
                    add_to_sum(&d[r], &d_carry[r], w[k] * (top[r] - (double)value[AT(k, r)]));
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            total[r] += spread * job->call.weight_total;
            distance[r] += spread * with_carry(d[r], d_carry[r]);
        }
    }
    if (!index_sums)
        for (int k = 0; k < n_classes; k++)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
                const double c = group_coefficient(constants, &targets, w[k], t, AT(k, r), k, r, 0, 0);
                add_to_sum(&total[r], &total_carry[r], c);
                const double x_k = group_logit(value, capped, AT(k, r), with_softcap);
                add_to_sum(&distance[r], &distance_carry[r], c != 0 ? c * (top[r] - x_k) : 0.0);
            }

    /* per row, as cross_entropy_row: the loss, then (with a gradient) the gradient's factors */
    double loss[ROW_GROUP], z_term[ROW_GROUP], rest_of_row[ROW_GROUP], inverse_sum[ROW_GROUP], lse[ROW_GROUP],
        row_total[ROW_GROUP];
    const double z_loss = job->call.z_loss, weight_total = job->call.weight_total;
    group_rests(rest_of_row, rest, rest_carry, top, x_at_argmax);
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
        inverse_sum[r] = 1.0 / (1.0 + rest_of_row[r]);
        const double log_sum = log1p_of_nonnegative_given(rest_of_row[r], inverse_sum[r]);
        lse[r] = top[r] + log_sum;
        row_total[r] = with_carry(total[r], total_carry[r]);
        const int counted = targets.counted[r];
        loss[r] = counted ? with_carry(distance[r], distance_carry[r]) + row_total[r] * log_sum : 0.0;
        z_term[r] = counted ? z_loss * lse[r] * lse[r] : 0.0;
    }
    for (int r = 0; r < n_rows; r++) {
        result->row_loss[first + r] = loss[r];
        if (result->row_z_loss) result->row_z_loss[first + r] = z_term[r];
    }
    if (!job->grad) return;

    SCRATCH probability[ROW_GROUP], target_factor[ROW_GROUP], at_argmax[ROW_GROUP]; /* see the gradient */
    /* the same in double, for the rows whose factors SCRATCH cannot hold */
    double probability_d[ROW_GROUP], target_factor_d[ROW_GROUP], at_argmax_d[ROW_GROUP];
    int fit[ROW_GROUP], all_fit = 1;
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
        const int counted = targets.counted[r];
        const int a = argmax[r];
        const double w_a = w[a];
        const double c_a =
            group_coefficient(constants, &targets, w_a, t, GATHER_AT(a, r), a, r, lone_index, smoothed_index);
        const double others =
            others_than_argmax(row_total[r], c_a, a == targets.index[r], constants->spread, weight_total, w_a);
        const gradient_scales scales = {targets.ce_scale[r], targets.z_scale[r]};
        const gradient_factors factors =
            factors_of(rest_of_row[r], inverse_sum[r], lse[r], row_total[r], c_a, others, scales, z_loss);
        probability_d[r] = counted ? factors.probability : 0.0;
        target_factor_d[r] = counted ? factors.target : 0.0;
        at_argmax_d[r] = counted ? factors.at_argmax : 0.0;
    }
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
        probability[r] = (SCRATCH)probability_d[r];
        target_factor[r] = (SCRATCH)target_factor_d[r];
        at_argmax[r] = (SCRATCH)at_argmax_d[r];
        /* whether the row's factors can be rounded to SCRATCH (fits_float) */
        fit[r] = fits_float(probability_d[r]) & fits_float_multiplier(target_factor_d[r]) & fits_float(at_argmax_d[r]);
        const double on_target = targets.on_target[r]; /* a lone index's only c */
        if (lone_index) fit[r] &= (!targets.counted[r]) | float_product_fits(on_target, target_factor_d[r]);
    }
    /* Rows whose exps or products e_k p may be subnormal would meet Intel's assists in the float pass
     * (see careful_exps): they take the double one, and a p of 0 in the float pass (a subnormal times
     * 0 takes no assist). The test runs across the rows, vectorised: in a loop of a row at a time
     * it cost a third of the time of ordinary rows of 10 classes. */
    if (!with_softcap)
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const int subnormal = targets.counted[r] & subnormal_products(min[r], top[r], probability_d[r]);
            fit[r] &= !subnormal;
            probability[r] = subnormal ? 0 : probability[r];
        }

    /* In the precision of e: SCRATCH, floats for float32 (whose exps are floats; its factors rounded
     * to float add about an ulp to the error of e); with a softcap in double, as the exps of capped
     * logits are (rounded to float, a subnormal one would lose its digits). */
    SCRATCH grad[n_classes * ROW_GROUP]; /* 0 on rows not counted */
    if (lone_index) { /* (never with a softcap: cross_entropy_groups) */
        /* the loop below's values, with c target of each row taken out of the class loop: c is
         * on_target at the class, else 0 (0 target keeps the sign of zero that loop gives) */
        SCRATCH at_index[ROW_GROUP], elsewhere[ROW_GROUP];
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            at_index[r] = (SCRATCH)targets.on_target[r] * target_factor[r];
            elsewhere[r] = (SCRATCH)0 * target_factor[r];
        }
#ifdef TRANSPOSE_16
        lone_index_gradient_16(grad, e, argmax, targets.index, targets.counted, probability, at_argmax, at_index,
                               elsewhere, n_classes);
#else
        for (int k = 0; k < n_classes; k++)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
                const SCRATCH c_target = k == targets.index[r] ? at_index[r] : elsewhere[r];
                const SCRATCH g = k == argmax[r] ? at_argmax[r] : e[AT(k, r)] * probability[r] - c_target;
                grad[AT(k, r)] = targets.counted[r] ? g : 0;
            }
#endif
    } else if (smoothed_index) { /* c_k the row's own on its index, elsewhere the class's (set_up_groups) */
        SCRATCH c_at_index[ROW_GROUP];
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const int y = targets.index[r] < 0 ? 0 : targets.index[r]; /* (rows not counted: unused) */
            const double c = coefficient_of(w[y], constants->keep, 0.0, constants->spread, targets.index[r] >= 0,
                                            targets.on_target[r]);
            c_at_index[r] = (SCRATCH)c;
            /* every c_k times the factor within float's range: the largest is */
            fit[r] &= (!targets.counted[r]) | (float_product_fits(c, target_factor_d[r]) & constants->spread_c_fit &
                                               float_product_fits(constants->spread_c_largest, target_factor_d[r]));
        }
        for (int k = 0; k < n_classes; k++) {
            const SCRATCH c_k = constants->spread_c[k];
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
                const SCRATCH c = k == targets.index[r] ? c_at_index[r] : c_k;
                const SCRATCH g = LANE_GRADIENT(k == argmax[r], at_argmax[r], e[AT(k, r)], probability[r], c,
                                                target_factor[r]);
                grad[AT(k, r)] = targets.counted[r] ? g : 0;
            }
        }
    } else {
        for (int k = 0; k < n_classes; k++)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
                const double c = group_coefficient(constants, &targets, w[k], t, AT(k, r), k, r, 0, 0);
                fit[r] &= (!targets.counted[r]) | float_product_fits(c, target_factor_d[r]);
                const int is_argmax = k == argmax[r];
                const double g =
                    with_softcap
                        ? LANE_GRADIENT(is_argmax, at_argmax[r], capped_e[AT(k, r)], probability[r], c,
                                        target_factor[r]) * slope[AT(k, r)]
                        : LANE_GRADIENT(is_argmax, at_argmax[r], e[AT(k, r)], probability[r], (SCRATCH)c,
                                        target_factor[r]);
                grad[AT(k, r)] = targets.counted[r] ? (SCRATCH)g : 0;
            }
    }
    for (int r = 0; r < ROW_GROUP; r++) all_fit &= fit[r];
    if (!all_fit) /* the lanes of rows whose factors do not fit, again in double (each row its own way) */
        for (int k = 0; k < n_classes; k++)
            for (int r = 0; r < ROW_GROUP; r++) {
                if (fit[r]) continue;
                const double c =
                    group_coefficient(constants, &targets, w[k], t, AT(k, r), k, r, lone_index, smoothed_index);
                const double e_k = with_softcap ? capped_e[AT(k, r)] : e[AT(k, r)];
                const double g =
                    LANE_GRADIENT(k == argmax[r], at_argmax_d[r], e_k, probability_d[r], c, target_factor_d[r]);
                grad[AT(k, r)] = (SCRATCH)(with_softcap ? g * slope[AT(k, r)] : g);
            }
    gradient_to_rows(job->grad + first * n_classes, grad, &constants->layout, n_rows, n_classes);
}

SPECIALISED void cross_entropy_groups_with(const cross_entropy_job *job, const group_constants *constants,
                                           int64_t begin, int64_t end, int with_softcap, int lone_index,
                                           int smoothed_index) {
    for (int64_t first = begin; first < end; first += ROW_GROUP)
        cross_entropy_group_with(job, constants, first, end, with_softcap, lone_index, smoothed_index);
}

/* rows [begin, end) */
static void cross_entropy_groups(const cross_entropy_job *job, int64_t begin, int64_t end) {
    group_constants constants;
    set_up_groups(&constants, job);
    if (job->call.softcap > 0)
        cross_entropy_groups_with(job, &constants, begin, end, 1, 0, 0);
    else if (job->target_index && constants.spread == 0)
        cross_entropy_groups_with(job, &constants, begin, end, 0, 1, 0);
    else if (job->target_index)
        cross_entropy_groups_with(job, &constants, begin, end, 0, 0, 1);
    else
        cross_entropy_groups_with(job, &constants, begin, end, 0, 0, 0);
}
