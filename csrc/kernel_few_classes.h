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
 * on the row path.
 *
 * The parts, included in order, each building on the ones before: kernel_few_classes_layout.h (a
 * group's lanes, the transposes chosen), kernel_few_classes_constants.h (what a call's groups
 * share), kernel_few_classes_transposes.h (rows to lanes and back), kernel_few_classes_steps.h
 * (the max, exps and rests the row functions share) and kernel_few_classes_targets.h (targets and
 * the gradient's products); this file ends with a group's loss and gradient from them, and the
 * loops over a chunk's groups. */

#include "kernel_few_classes_layout.h"
#include "kernel_few_classes_constants.h"
#include "kernel_few_classes_transposes.h"
#include "kernel_few_classes_steps.h"
#include "kernel_few_classes_targets.h"

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
