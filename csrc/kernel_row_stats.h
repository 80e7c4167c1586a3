/* kernel_row_stats.h: the exp pass over a row, its loop chosen per call (exp_sum_blocks, sum_exp:
 * the vector runs, else the blocks of kernel_exp_blocks.h), and a row's statistics (row_stats,
 * defined in kernel_row_max.h: max, argmax, rest) from its max pass and that pass, segment by
 * segment;
 * part of kernel_template.h, which includes the parts in order. */

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
