/* kernel_few_classes_row_functions.h: logsumexp, log_softmax and softmax of rows of at most
 * FEW_CLASSES classes, ROW_GROUP rows at a time across vector lanes with the steps of
 * kernel_few_classes_steps.h and the transposes of kernel_few_classes_transposes.h; part of
 * kernel_template.h (included once, by kernel_row_functions.h, before the row functions' chunk
 * function, which chooses it).
 *
 * The formulas are the row path's (logsumexp_row, log_softmax_row, softmax_row), each result
 * computed in double and rounded once to STORAGE; the sums are in class order (as the
 * cross-entropy's groups). Each row has its own lane: a row's result does not depend on the rows
 * grouped with it. */

typedef enum { GROUP_LOGSUMEXP, GROUP_LOG_SOFTMAX, GROUP_SOFTMAX } group_function_kind;

/* rest_in_double of each row of a group, from its lanes: for the rows whose logsumexp cancels
 * (logsumexp_cancels), vectorised across the rows (a row at a time, 16 classes to a vector, rows of 2
 * classes took 100 ns each) */
SPECIALISED void group_rests_in_double(double rest[ROW_GROUP], const SCRATCH *value, const double top[ROW_GROUP],
                                       const int argmax[ROW_GROUP], int n_classes) {
    double carry[ROW_GROUP];
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) rest[r] = carry[r] = 0.0;
    for (int k = 0; k < n_classes; k++)
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const double term = exp_of_nonpositive_term((double)value[AT(k, r)] - top[r]);
            add_with_carry(&rest[r], &carry[r], k == argmax[r] ? 0.0 : term);
        }
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) rest[r] = with_carry(rest[r], carry[r]);
}

/* The results of rows [first, first + n_rows) (n_rows <= ROW_GROUP) of x (N = total_rows rows) in
 * out: (N) for logsumexp, else (N, K). Reads may reach the end of x, whichever thread has those rows:
 * out is a new array, never x. */
SPECIALISED void row_function_group_with(STORAGE *out, const STORAGE *x, const group_layout *layout, int64_t first,
                                         int n_rows, int64_t total_rows, int n_classes, group_function_kind kind) {
    SCRATCH value[lanes_length(n_classes)], e[n_classes * ROW_GROUP];
    group_logits_to_lanes(value, x, layout, first, n_rows, total_rows, n_classes);
    SCRATCH max[ROW_GROUP], min[ROW_GROUP], x_at_argmax[ROW_GROUP];
    int argmax[ROW_GROUP];
    group_max(max, min, argmax, x_at_argmax, value, n_classes);
    double top[ROW_GROUP], rest[ROW_GROUP], rest_carry[ROW_GROUP];
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) top[r] = max[r];
    group_exps(rest, rest_carry, e, NULL, value, NULL, top, min, argmax, n_classes, 0);
    double rest_of_row[ROW_GROUP], log_sum[ROW_GROUP], inverse_sum[ROW_GROUP];
    group_rests(rest_of_row, rest, rest_carry, top, x_at_argmax);
    ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
        inverse_sum[r] = 1.0 / (1.0 + rest_of_row[r]);
        log_sum[r] = log1p_of_nonnegative_given(rest_of_row[r], inverse_sum[r]);
    }

    if (kind == GROUP_LOGSUMEXP) {
        /* a max of +inf or -inf is the answer, unless the row also holds a NaN (logsumexp_row) */
        int has_nan[ROW_GROUP];
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) has_nan[r] = 0;
        for (int k = 0; k < n_classes; k++)
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) has_nan[r] |= value[AT(k, r)] != value[AT(k, r)];
        STORAGE lse[ROW_GROUP];
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const double infinite = has_nan[r] ? NAN : top[r];
            lse[r] = STORE(isinf(top[r]) ? infinite : top[r] + log_sum[r]);
        }
        int cancels[ROW_GROUP], any_cancels = 0;
        for (int r = 0; r < n_rows; r++) {
            cancels[r] = logsumexp_cancels(top[r] + log_sum[r], top[r], rest_of_row[r], n_classes);
            any_cancels |= cancels[r];
        }
        if (any_cancels) {
            double rest_again[ROW_GROUP], log_rest[ROW_GROUP]; /* of every row, the padding's too: vector passes */
            group_rests_in_double(rest_again, value, top, argmax, n_classes);
            ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) log_rest[r] = log1p_of_nonnegative(rest_again[r]);
            for (int r = 0; r < n_rows; r++)
                if (cancels[r]) lse[r] = STORE(top[r] + log_rest[r]);
        }
        for (int r = 0; r < n_rows; r++) out[first + r] = lse[r];
        return;
    }
    /* log_softmax: both terms <= 0, no cancellation; softmax: the argmax's e is exactly 1 */
    lane_result result[n_classes * ROW_GROUP];
    for (int k = 0; k < n_classes; k++)
        ACROSS_ROWS for (int r = 0; r < ROW_GROUP; r++) {
            const double e_k = k == argmax[r] ? 1.0 : (double)e[AT(k, r)];
            result[AT(k, r)] = LANE_RESULT(kind == GROUP_SOFTMAX ? e_k * inverse_sum[r]
                                                                 : ((double)value[AT(k, r)] - top[r]) - log_sum[r]);
        }
    results_to_rows(out + first * n_classes, result, layout, n_rows, n_classes);
}

/* The group functions of row_function_job, one per kind: each a specialised copy. */
typedef void (*group_function)(STORAGE *out, const STORAGE *x, const group_layout *layout, int64_t first, int n_rows,
                               int64_t total_rows, int n_classes);

static void logsumexp_group(STORAGE *out, const STORAGE *x, const group_layout *layout, int64_t first, int n_rows,
                            int64_t total_rows, int n_classes) {
    row_function_group_with(out, x, layout, first, n_rows, total_rows, n_classes, GROUP_LOGSUMEXP);
}

static void log_softmax_group(STORAGE *out, const STORAGE *x, const group_layout *layout, int64_t first, int n_rows,
                              int64_t total_rows, int n_classes) {
    row_function_group_with(out, x, layout, first, n_rows, total_rows, n_classes, GROUP_LOG_SOFTMAX);
}

static void softmax_group(STORAGE *out, const STORAGE *x, const group_layout *layout, int64_t first, int n_rows,
                          int64_t total_rows, int n_classes) {
    row_function_group_with(out, x, layout, first, n_rows, total_rows, n_classes, GROUP_SOFTMAX);
}

/* rows [begin, end) of x (N = total_rows rows), whole groups but for the call's last */
static void row_function_groups(group_function function, STORAGE *out, const STORAGE *x, int64_t begin, int64_t end,
                                int64_t total_rows, int n_classes) {
    group_layout layout;
    set_up_group_layout(&layout, n_classes);
    for (int64_t first = begin; first < end; first += ROW_GROUP)
        function(out, x, &layout, first, end - first < ROW_GROUP ? (int)(end - first) : ROW_GROUP, total_rows,
                 n_classes);
}
