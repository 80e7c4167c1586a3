/* kernel_row_functions.h: logsumexp, log_softmax and softmax, row by row;
 * part of kernel_template.h, which includes the parts in order. */

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

/* logsumexp = max + log1p(rest) cancels where it is near 0. Exps in double leave log1p(rest) an
 * absolute error of a few 2^-53 (|max| + 1), which a result of float's precision absorbs; float
 * exps (FLOAT_EXP) up to about 3.3 2^-24 rest / (1 + rest) (1.13 ulp each, and on the row path a
 * float rounding per two blocks), plus half a subnormal unit per exp that is subnormal: more than 2
 * float32 ulps (or a quarter of a bfloat16 ulp) of a result below LOGSUMEXP_REDO_BELOW (rest / (1 +
 * rest) + K 2^-126) (type_*.h). Such a row's rest is taken again from exps in double
 * (rest_in_double), and so is that of a row whose result is below 2^-24 (|max| + 1), so that every
 * result that near 0 has the double sums' absolute error (README): float32 logsumexp near 0 was
 * thousands of ulps off, of the wrong sign in places. */
#if FLOAT_EXP
static inline int logsumexp_cancels(double value, double max, double rest, int64_t n_classes) {
    return fabs(value) < LOGSUMEXP_REDO_BELOW * (rest / (1.0 + rest) + (double)n_classes * 0x1p-126) ||
           fabs(value) < 0x1p-24 * (fabs(max) + 1.0);
}
#else
static inline int logsumexp_cancels(double value, double max, double rest, int64_t n_classes) {
    (void)value, (void)max, (void)rest, (void)n_classes;
    return 0;
}
#endif

/* rest = the sum of exp(x_k - max) over the row but its argmax, from exps in double, compensated, in
 * DOUBLE_EXP_LANES lanes (16 lanes, whose sums GCC kept on the stack, took 1.06x the time in an A/B) */
#define DOUBLE_EXP_LANES 8
static double rest_in_double(const STORAGE *x, int64_t n_classes, int64_t argmax, double max) {
    double sum[DOUBLE_EXP_LANES] = {0.0}, carry[DOUBLE_EXP_LANES] = {0.0};
    int64_t k = 0;
    for (; k + DOUBLE_EXP_LANES <= n_classes; k += DOUBLE_EXP_LANES)
        for (int j = 0; j < DOUBLE_EXP_LANES; j++) {
            const double term = exp_of_nonpositive_term(LOAD(x[k + j]) - max);
            add_with_carry(&sum[j], &carry[j], k + j == argmax ? 0.0 : term);
        }
    double total = 0.0, total_carry = 0.0;
    for (; k < n_classes; k++) {
        const double term = exp_of_nonpositive_term(LOAD(x[k]) - max);
        add_with_carry(&total, &total_carry, k == argmax ? 0.0 : term);
    }
    for (int j = 0; j < DOUBLE_EXP_LANES; j++) {
        add_with_carry(&total, &total_carry, sum[j]);
        total_carry += carry[j];
    }
    return with_carry(total, total_carry);
}

static void logsumexp_row(STORAGE *lse, SCRATCH *scratch, const STORAGE *row, const STORAGE *next_row,
                          int64_t n_classes, int64_t n, int stream_output) {
    (void)scratch, (void)stream_output;
    const row_stats stats = compute_row_stats(NULL, row, next_row, NULL, n_classes, 0.0, NULL);
    double value = stats.max + log1p_of_nonnegative(stats.rest);
    if (logsumexp_cancels(value, stats.max, stats.rest, n_classes))
        value = stats.max + log1p_of_nonnegative(rest_in_double(row, n_classes, stats.argmax, stats.max));
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
