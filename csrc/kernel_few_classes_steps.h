/* kernel_few_classes_steps.h: the steps of a group that the cross-entropy and the row functions
 * share: the logits to lanes, each row's max, the exps and each row's rest; and x'_y at a row's
 * class index (the cross-entropy's);
 * part of kernel_few_classes.h, which includes the parts in order. */

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
