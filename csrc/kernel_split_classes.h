/* kernel_split_classes.h: the cross-entropy of fewer rows than threads, the class axis shared out;
 * part of kernel_template.h (included once, by kernel_cross_entropy.h, before the entry point,
 * which chooses it).
 *
 * Each row's classes are cut into the SEGMENTs that compute_row_stats sums by, and three rounds of
 * the pool go over every (row, segment): the segment's max; its sum of exps (and the row's target
 * sums, a task of their own); its gradient. Between rounds the calling thread combines the segments
 * in order, so every value is the one cross_entropy_row computes: bitwise the same answer. */

typedef struct {
    const cross_entropy_job *job; /* its scratch: scratch_stride(K) values per row (gradient), else NULL */
    int64_t n_segments;           /* per row */
    logit_max *segment_max;       /* (N, n_segments) */
    double *segment_rest;         /* (N, n_segments) */
    row_target *target;           /* (N) */
    int *counted;                 /* (N): not ignored */
    row_stats *stats;             /* (N) */
    target_sums *sums;            /* (N) */
    gradient_factors *factors;    /* (N) */
} class_split;

static const STORAGE *row_of(const cross_entropy_job *job, int64_t n) {
    return job->logits + n * job->params->n_classes;
}

static SCRATCH *scratch_of(const cross_entropy_job *job, int64_t n) {
    return job->scratch ? job->scratch + scratch_stride(job->params->n_classes) * n : NULL;
}

static void segment_max_task(void *context, int worker, int64_t task) {
    (void)worker;
    const class_split *split = context;
    const int64_t n = task / split->n_segments, begin = (task % split->n_segments) * SEGMENT;
    const int64_t n_classes = split->job->params->n_classes;
    if (!split->counted[n]) return;
    logit_max max = find_max(row_of(split->job, n) + begin, segment_end(begin, n_classes) - begin);
    max.index += begin;
    split->segment_max[task] = max;
}

/* task n (n_segments + 1) + s: the sum of segment s, or for s = n_segments the target sums */
static void segment_sum_task(void *context, int worker, int64_t task) {
    (void)worker;
    const class_split *split = context;
    const cross_entropy_job *job = split->job;
    const int64_t n = task / (split->n_segments + 1), segment = task % (split->n_segments + 1);
    if (!split->counted[n]) return;
    const row_stats *stats = &split->stats[n];
    if (segment == split->n_segments) {
        split->sums[n] = sum_over_target(&split->target[n], row_of(job, n), &job->call, stats->max, NULL);
        return;
    }
    split->segment_rest[n * split->n_segments + segment] =
        sum_exp_of_segment(scratch_of(job, n), row_of(job, n), NULL, NULL, job->params->n_classes, segment * SEGMENT,
                           stats->argmax, stats->max, stats->min, job->call.softcap, NULL);
}

static void segment_gradient_task(void *context, int worker, int64_t task) {
    (void)worker;
    const class_split *split = context;
    const cross_entropy_job *job = split->job;
    const int64_t n = task / split->n_segments, begin = (task % split->n_segments) * SEGMENT;
    const int64_t n_classes = job->params->n_classes, end = segment_end(begin, n_classes);
    STORAGE *grad = job->grad + n * n_classes;
    if (!split->counted[n]) {
        write_zeros(grad + begin, end - begin);
        return;
    }
    write_gradient(grad, scratch_of(job, n), &split->target[n], split->stats[n].argmax, split->factors[n], &job->call,
                   begin, end);
    if (job->call.stream_gradient) stream_fence();
}

/* The row's min from its segments', which find_max took from each segment's own max (exp_floor): a
 * segment whose min is below the row's exp_floor is searched again from that, as one thread searches
 * the row (rarely: a segment far below the row's max, or masked), so that the flags are one thread's. */
static double min_of_segments(const class_split *split, int64_t n, double row_max) {
    const int64_t n_classes = split->job->params->n_classes;
    double min = INFINITY;
    for (int64_t s = 0; s < split->n_segments; s++) {
        double segment_min = split->segment_max[n * split->n_segments + s].min;
        if (FLOAT_EXP && segment_min < exp_floor(row_max)) {
            const int64_t begin = s * SEGMENT;
            const int64_t length = segment_end(begin, n_classes) - begin;
            segment_min = smallest_with_exp(row_of(split->job, n) + begin, length, row_max);
        }
        min = segment_min < min ? segment_min : min;
    }
    return min;
}

/* Combines the segments' maxima of each row in order: the first index of the largest x; and their
 * mins (min_of_segments). */
static void combine_maxima(class_split *split, int64_t n_rows) {
    for (int64_t n = 0; n < n_rows; n++) {
        logit_max max = {-INFINITY, 0, INFINITY};
        for (int64_t s = 0; s < split->n_segments && split->counted[n]; s++) {
            const logit_max segment = split->segment_max[n * split->n_segments + s];
            if (segment.value > max.value) max = segment;
        }
        max.min = split->counted[n] ? min_of_segments(split, n, max.value) : INFINITY;
        split->segment_max[n * split->n_segments] = max; /* the row's, kept for combine_sums */
        split->stats[n].max = capped_value(max.value, split->job->call.softcap);
        split->stats[n].argmax = max.index;
        split->stats[n].min = max.min;
    }
}

/* Adds up each row's segments in order, then its loss, as cross_entropy_row. */
static void combine_sums(class_split *split, int64_t n_rows) {
    const cross_entropy_job *job = split->job;
    const int64_t n_classes = job->params->n_classes;
    for (int64_t n = 0; n < n_rows; n++) {
        double *z_term = job->result->row_z_loss ? &job->result->row_z_loss[n] : NULL;
        if (!split->counted[n]) {
            job->result->row_loss[n] = 0.0;
            if (z_term) *z_term = 0.0;
            continue;
        }
        double rest = 0.0;
        for (int64_t s = 0; s < split->n_segments; s++) rest += split->segment_rest[n * split->n_segments + s];
        const row_stats stats = finish_row_stats(scratch_of(job, n), row_of(job, n), n_classes,
                                                 split->segment_max[n * split->n_segments], rest, job->call.softcap);
        const target_sums sums = split->sums[n];
        const double lse = lse_for_z_loss(&job->call, &stats);
        job->result->row_loss[n] = sums.distance + sums.total * log1p_of_nonnegative(stats.rest);
        if (z_term) *z_term = job->call.z_loss * lse * lse;
        if (job->grad)
            split->factors[n] = factors_of_row(&split->target[n], &stats, lse, sums.total, job->result, job->params,
                                               &job->call, n);
    }
}

/* Every row of job, classes shared out to n_threads; SCE_ERR_MEMORY if its bookkeeping fails. */
static int cross_entropy_split(const cross_entropy_job *job, int n_threads) {
    const int64_t n_rows = job->params->n_rows, n_segments = (job->params->n_classes + SEGMENT - 1) / SEGMENT;
    class_split split = {job,
                         n_segments,
                         malloc(sizeof(logit_max) * (size_t)(n_rows * n_segments)),
                         malloc(sizeof(double) * (size_t)(n_rows * n_segments)),
                         malloc(sizeof(row_target) * (size_t)n_rows),
                         malloc(sizeof(int) * (size_t)n_rows),
                         malloc(sizeof(row_stats) * (size_t)n_rows),
                         malloc(sizeof(target_sums) * (size_t)n_rows),
                         malloc(sizeof(gradient_factors) * (size_t)n_rows)};
    const int ready = split.segment_max && split.segment_rest && split.target && split.counted && split.stats &&
                      split.sums && split.factors;
    if (ready) {
        for (int64_t n = 0; n < n_rows; n++)
            split.counted[n] =
                target_of_row(&split.target[n], job->params, job->target_index, job->target_prob, n);
        pool_run(n_threads, segment_max_task, &split, n_rows * n_segments);
        combine_maxima(&split, n_rows);
        pool_run(n_threads, segment_sum_task, &split, n_rows * (n_segments + 1));
        combine_sums(&split, n_rows);
        if (job->grad) pool_run(n_threads, segment_gradient_task, &split, n_rows * n_segments);
    }
    free(split.segment_max);
    free(split.segment_rest);
    free(split.target);
    free(split.counted);
    free(split.stats);
    free(split.sums);
    free(split.factors);
    return ready ? SCE_OK : SCE_ERR_MEMORY;
}
