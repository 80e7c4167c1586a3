/* kernel_few_classes_targets.h: a group's targets (read_group_targets), each element's c_k, and
 * the tests and formula of the gradient's float products;
 * part of kernel_few_classes.h, which includes the parts in order. */

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
