/* kernel_few_classes_constants.h: what every group of a call shares (group_constants: the layout,
 * the class weights, label smoothing's coefficients, the gradient's scales), set up once per chunk;
 * part of kernel_few_classes.h, which includes the parts in order. */

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
