/* kernel_template.h: the row kernels and the exported functions, written once for one logit type.
 *
 * Included by kernel_f32.c and kernel_f64.c, which first define
 *   REAL            the logit type, float or double
 *   SUFFIX(name)    name##_f32 or name##_f64, for the exported names
 *   EXP_DIFFERENCE  exp(x - m) accurate for that type (exp_difference.h)
 *   COMPENSATED_SUMS  1 to keep the rounding errors of row sums (needed for double logits)
 * All arithmetic is in double; REAL is only what is read and written.
 *
 * Every row goes through the same statistics: the max m, the first index a holding it (exp of it is
 * exactly 1) and rest = sum over k != a of exp(x_k - m). The row's sum is 1 + rest, its log is
 * log1p(rest), and 1 - softmax_a is rest / (1 + rest): all accurate when rest is tiny, which is exactly
 * when a confident model's loss and target gradient would otherwise cancel. */

#include <math.h>
#include <stddef.h>

#include "exp_difference.h"
#include "softmax_ce.h"

/* Row sums are kept in PARTIAL_SUMS independent lanes: that fixes the order of the additions, whatever
 * the compiler, and lets it keep several in flight. With COMPENSATED_SUMS (double logits) each lane
 * also keeps its rounding error (TwoSum), since a double sum of double terms would otherwise lose
 * about sqrt(K) ulp; float logits have 29 spare bits in a double and need no such care. */
#define PARTIAL_SUMS 8

typedef struct {
    double sum[PARTIAL_SUMS];
    double carry[PARTIAL_SUMS]; /* the rounding errors of sum; zero unless COMPENSATED_SUMS */
} partial_sums;

static inline void add_to_sum(double *sum, double *carry, double term) {
    if (COMPENSATED_SUMS) {
        const double s = *sum + term, term_part = s - *sum;
        *carry += (*sum - (s - term_part)) + (term - term_part);
        *sum = s;
    } else {
        *sum += term;
    }
}

static inline void add_term(partial_sums *sums, int64_t k, double term) {
    const int64_t lane = k % PARTIAL_SUMS;
    add_to_sum(&sums->sum[lane], &sums->carry[lane], term);
}

static double total_of(const partial_sums *sums) {
    double sum = 0.0, carry = 0.0;
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        add_to_sum(&sum, &carry, sums->sum[j]);
        carry += sums->carry[j];
    }
    /* an infinite term leaves a NaN carry; the sum alone is then the answer */
    return isfinite(sum) ? sum + carry : sum;
}

typedef struct {
    double max;     /* the row max; NaN is skipped here and reaches the result through rest */
    int64_t argmax; /* the first index holding max */
    double rest;    /* sum of exp(x_k - max) over k != argmax; NaN when max is not finite (a +inf
                       logit, or none finite), which makes the whole row NaN */
} row_stats;

/* Comparisons with NaN are false, so a NaN is never the max unless it is x[0] (then max is NaN). */
static void find_row_max(row_stats *stats, const REAL *x, int64_t n_classes) {
    REAL max = x[0];
    int64_t argmax = 0;
    for (int64_t k = 1; k < n_classes; k++) {
        if (x[k] > max) {
            max = x[k];
            argmax = k;
        }
    }
    stats->max = max;
    stats->argmax = argmax;
}

/* Sum of exp(x_k - max) for k < n; each term is also stored in e when e is not NULL.
 *   e  (n) out or NULL
 *   x  (n) */
static double sum_exp(REAL *restrict e, const REAL *restrict x, int64_t n, double max) {
    partial_sums sums = {{0.0}, {0.0}};
    for (int64_t k = 0; k < n; k++) {
        const double term = EXP_DIFFERENCE(x[k], max);
        if (e) e[k] = (REAL)term;
        add_term(&sums, k, term);
    }
    return total_of(&sums);
}

/* The statistics of one row; with e not NULL, also e_k = exp(x_k - max) for every k.
 *   e  (K) out or NULL
 *   x  (K) */
static row_stats compute_row_stats(REAL *restrict e, const REAL *restrict x, int64_t n_classes) {
    row_stats stats;
    find_row_max(&stats, x, n_classes);
    const int64_t a = stats.argmax, after = a + 1;
    stats.rest = sum_exp(e, x, a, stats.max) +
                 sum_exp(e ? e + after : NULL, x + after, n_classes - after, stats.max);
    if (e) e[a] = 1;
    if (!isfinite(stats.max)) stats.rest = NAN;
    return stats;
}

/* Loss of a row whose target is class y: (max - x_y) + log(sum). With y the argmax the first term is
 * exactly 0 and the loss is log1p(rest), accurate however small. With grad not NULL, also
 * grad_k = scale * (softmax_k - [k == y]).
 *   grad  (K) out or NULL
 *   x     (K) */
static double index_target_row(REAL *restrict grad, const REAL *restrict x, int64_t n_classes,
                               int64_t y, double scale) {
    const row_stats stats = compute_row_stats(grad, x, n_classes);
    const double loss = (stats.max - x[y]) + log1p(stats.rest);
    if (grad) {
        const double sum = 1.0 + stats.rest, coef = scale / sum;
        for (int64_t k = 0; k < n_classes; k++) grad[k] = (REAL)(grad[k] * coef);
        /* softmax_y - 1: from rest when y is the argmax (no cancellation); otherwise
         * softmax_y <= 1/2 and the subtraction is harmless. */
        grad[y] = (REAL)(y == stats.argmax ? (0.0 - stats.rest) * coef
                                           : (EXP_DIFFERENCE(x[y], stats.max) / sum - 1.0) * scale);
    }
    return loss;
}

/* Loss of a row with class probabilities t (any total T): sum_k t_k (max - x_k) + T log(sum), both
 * terms >= 0 for t >= 0. A zero t_k adds nothing, even on a -inf logit. With grad not NULL, also
 * grad_k = scale * (softmax_k T - t_k).
 *   grad  (K) out or NULL
 *   x, t  (K) */
static double prob_target_row(REAL *restrict grad, const REAL *restrict x, const REAL *restrict t,
                              int64_t n_classes, double scale) {
    const row_stats stats = compute_row_stats(grad, x, n_classes);
    partial_sums total_sums = {{0.0}, {0.0}}, cross_sums = {{0.0}, {0.0}};
    for (int64_t k = 0; k < n_classes; k++) {
        const double tk = t[k];
        add_term(&total_sums, k, tk);
        if (tk != 0) add_term(&cross_sums, k, tk * (stats.max - x[k]));
    }
    const double total = total_of(&total_sums);
    const double loss = total_of(&cross_sums) + total * log1p(stats.rest);
    if (grad) {
        const double sum = 1.0 + stats.rest, coef = total / sum;
        for (int64_t k = 0; k < n_classes; k++) grad[k] = (REAL)((grad[k] * coef - t[k]) * scale);
        /* softmax_a T - t_a = ((T - t_a) - t_a rest) / sum: exact cancellation-free for one-hot rows */
        const int64_t a = stats.argmax;
        grad[a] = (REAL)((((total - t[a]) - t[a] * stats.rest) / sum) * scale);
    }
    return loss;
}

static int check_shape(const sce_params *params) {
    return params->n_rows < 0 || params->n_classes < 1 ? SCE_ERR_SHAPE : SCE_OK;
}

int SUFFIX(sce_cross_entropy)(REAL *grad, double *row_loss, sce_error *error,
                              const sce_params *params, const REAL *logits,
                              const int64_t *target_index, const REAL *target_prob) {
    const int64_t n_rows = params->n_rows, n_classes = params->n_classes;
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    if (!target_index && !target_prob) return SCE_ERR_ARGUMENT;
    if (target_index) {
        /* every target is checked before anything is written */
        for (int64_t n = 0; n < n_rows; n++) {
            if (target_index[n] < 0 || target_index[n] >= n_classes) {
                error->row = n;
                error->value = target_index[n];
                return SCE_ERR_TARGET_RANGE;
            }
        }
    }
    for (int64_t n = 0; n < n_rows; n++) {
        const REAL *x = logits + n * n_classes;
        REAL *g = grad ? grad + n * n_classes : NULL;
        row_loss[n] = target_index
                          ? index_target_row(g, x, n_classes, target_index[n], params->grad_scale)
                          : prob_target_row(g, x, target_prob + n * n_classes, n_classes,
                                            params->grad_scale);
    }
    return SCE_OK;
}

int SUFFIX(sce_logsumexp)(REAL *lse, const sce_params *params, const REAL *x) {
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    const int64_t n_classes = params->n_classes;
    for (int64_t n = 0; n < params->n_rows; n++) {
        const REAL *row = x + n * n_classes;
        const row_stats stats = compute_row_stats(NULL, row, n_classes);
        double value = stats.max + log1p(stats.rest);
        if (isinf(stats.max)) {
            /* +inf or -inf is the answer, unless the row also holds a NaN */
            value = stats.max;
            for (int64_t k = 0; k < n_classes; k++)
                if (isnan(row[k])) value = NAN;
        }
        lse[n] = (REAL)value;
    }
    return SCE_OK;
}

int SUFFIX(sce_log_softmax)(REAL *out, const sce_params *params, const REAL *x) {
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    const int64_t n_classes = params->n_classes;
    for (int64_t n = 0; n < params->n_rows; n++) {
        const REAL *row = x + n * n_classes;
        REAL *o = out + n * n_classes;
        const row_stats stats = compute_row_stats(NULL, row, n_classes);
        const double log_sum = log1p(stats.rest);
        /* both terms <= 0: no cancellation */
        for (int64_t k = 0; k < n_classes; k++) o[k] = (REAL)((row[k] - stats.max) - log_sum);
    }
    return SCE_OK;
}

int SUFFIX(sce_softmax)(REAL *out, const sce_params *params, const REAL *x) {
    if (check_shape(params) != SCE_OK) return SCE_ERR_SHAPE;
    const int64_t n_classes = params->n_classes;
    for (int64_t n = 0; n < params->n_rows; n++) {
        REAL *o = out + n * n_classes;
        const row_stats stats = compute_row_stats(o, x + n * n_classes, n_classes);
        const double inv_sum = 1.0 / (1.0 + stats.rest);
        for (int64_t k = 0; k < n_classes; k++) o[k] = (REAL)(o[k] * inv_sum);
    }
    return SCE_OK;
}
