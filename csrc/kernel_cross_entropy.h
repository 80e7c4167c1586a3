/* kernel_cross_entropy.h: the cross-entropy call: the class targets checked and counted, a row's
 * loss and gradient (cross_entropy_row) in its scratch, the rows shared out to threads in chunks
 * (CHUNK_ELEMENTS; ROW_GROUP rows of few classes at a time, kernel_few_classes.h), or their classes
 * (kernel_split_classes.h), and the sums of the losses;
 * part of kernel_template.h, which includes the parts in order. */

/* Copies the class targets into copy, checks them and computes the mean's denominators, before
 * anything is written. The kernel reads only the copy after this: target_index may change meanwhile
 * (by another thread, or by this call's gradient written over it) without taking a row out of range.
 * The copy, count and check are one pass without branches (vectorised); only a call with a target
 * out of range looks for the first, and only weights need the chain of compensated additions. */
static int count_targets(sce_result *result, const sce_params *params, const int64_t *target_index, int64_t *copy) {
    const int64_t n_rows = params->n_rows, n_classes = params->n_classes, ignore_index = params->ignore_index;
    if (!target_index) { /* probability targets: every row counts once */
        result->ce_denominator = result->z_denominator = (double)n_rows;
        return SCE_OK;
    }
    int64_t counted = 0, out_of_range = 0;
    for (int64_t n = 0; n < n_rows; n++) {
        const int64_t y = target_index[n];
        copy[n] = y;
        counted += y != ignore_index;
        out_of_range |= y != ignore_index && (y < 0 || y >= n_classes);
    }
    for (int64_t n = 0; out_of_range && n < n_rows; n++) {
        const int64_t y = copy[n];
        if (y != ignore_index && (y < 0 || y >= n_classes)) {
            result->bad_row = n;
            result->bad_value = y;
            return SCE_ERR_TARGET_RANGE;
        }
    }
    double weight_sum = (double)counted, weight_carry = 0.0; /* without weights, the count (exact below 2^53) */
    if (params->weight) { /* compensated: a mean over many rows */
        weight_sum = 0.0;
        for (int64_t n = 0; n < n_rows; n++) {
            const int64_t y = copy[n];
            if (y != ignore_index) add_with_carry(&weight_sum, &weight_carry, params->weight[y]);
        }
    }
    result->ce_denominator = with_carry(weight_sum, weight_carry);
    result->z_denominator = (double)counted;
    return SCE_OK;
}

static int check_cross_entropy_arguments(const sce_result *result, const sce_params *params,
                                         const int64_t *target_index, const TARGET *target_prob) {
    if (params->n_rows < 0 || params->n_classes < 1) return SCE_ERR_SHAPE;
    const int missing = (!target_index && !target_prob) || !result->row_loss ||
                        (params->z_loss != 0 && !result->row_z_loss);
    const int out_of_range = params->n_threads < 1 ||
                             !(params->label_smoothing >= 0 && params->label_smoothing <= 1) ||
                             !(params->z_loss >= 0 && isfinite(params->z_loss)) ||
                             !(params->softcap >= 0 && isfinite(params->softcap)) ||
                             params->reduction < SCE_MEAN || params->reduction > SCE_NONE;
    return missing || out_of_range ? SCE_ERR_ARGUMENT : SCE_OK;
}

static double sum_of_weights(const sce_params *params) {
    if (!params->weight) return (double)params->n_classes;
    partial_sums sums = {{0.0}, {0.0}};
    for (int64_t k = 0; k < params->n_classes; k++) add_to_lane(&sums, (int)(k % PARTIAL_SUMS), params->weight[k]);
    return total_of(&sums);
}

static int has_zero_weight(const sce_params *params) {
    for (int64_t k = 0; params->weight && k < params->n_classes; k++)
        if (params->weight[k] == 0) return 1;
    return 0;
}

/* Scratch space starts on a cache line, and so does each thread's (or row's) part of it: vectors of
 * scratch values that split lines cost 2-6% (one thread, 2048x1000 float32, 4096x1000 double). */
#define SCRATCH_LINE (CACHE_LINE / (int64_t)sizeof(SCRATCH))

static int64_t on_whole_lines(int64_t n_values) {
    return (n_values + SCRATCH_LINE - 1) / SCRATCH_LINE * SCRATCH_LINE;
}

/* A row whose gradient is streamed writes it in whole cache lines: its scratch values then start at
 * the same place in a line as its gradient row (a thread's scratch has a line to spare for this), so
 * that those lines read whole lines of scratch (8192x1000 float32, one thread: 3% faster; gradients
 * that are not streamed are written from their row's start, best with the scratch on a line). */
static SCRATCH *scratch_in_line_with(SCRATCH *scratch, const STORAGE *grad_row) {
    return scratch + (int64_t)((uintptr_t)grad_row / sizeof(STORAGE) % SCRATCH_LINE);
}

/* Each thread's (or row's) part of the cross-entropy's scratch: two halves of K values on whole
 * lines and a line to spare for scratch_in_line_with; a row takes one half for its exps (pipelined
 * rows, see waiting_gradient, take turns), or with a softcap both, for its exps and slopes. */
static int64_t scratch_half(int64_t n_classes) {
    return on_whole_lines(n_classes) + SCRATCH_LINE;
}

static int64_t scratch_stride(int64_t n_classes) {
    return 2 * scratch_half(n_classes);
}

/* n_values of scratch on whole cache lines; free() releases it */
static SCRATCH *new_scratch(int64_t n_values) {
    return aligned_alloc(CACHE_LINE, sizeof(SCRATCH) * (size_t)on_whole_lines(n_values));
}

/* A row's loss is distance + total log1p(rest), and log1p, the slow part of a row that its
 * gradient does not wait for (without a z-loss), is taken LOSS_BATCH rows at a time, in vectors
 * (rows of 64 float32 classes 22% faster, of 1000 7%): a row leaves its row_loss at distance and
 * its total and rest in the batch, and add_log_sums adds total log1p(rest) to it. */
#define LOSS_BATCH 32

typedef struct {
    double total[LOSS_BATCH], rest[LOSS_BATCH];
} loss_batch;

static void add_log_sums(double *row_loss, const loss_batch *batch, int count) {
    for (int i = 0; i < count; i++) row_loss[i] += batch->total[i] * log1p_of_nonnegative(batch->rest[i]);
}

/* The whole of one row: its loss (and z-loss term), and with grad its gradient; the loss's log1p
 * left to add_log_sums, from batch[slot]. With waiting (pipelined rows) the gradient waits there,
 * and the previous row's is written. */
static void cross_entropy_row(STORAGE *grad, SCRATCH *scratch, waiting_gradient *waiting, const sce_result *result,
                              const sce_params *params, const call_constants *call, const STORAGE *logits,
                              const int64_t *target_index, const TARGET *target_prob, int64_t n, loss_batch *batch,
                              int slot) {
    const int64_t n_classes = params->n_classes;
    const STORAGE *x = logits + n * n_classes;
    STORAGE *g = grad ? grad + n * n_classes : NULL;
    const int half = waiting ? waiting->next_half : 0;
    scratch += half * scratch_half(n_classes);
    if (g && call->stream_gradient) scratch = scratch_in_line_with(scratch, g);
    double *z_term = result->row_z_loss ? &result->row_z_loss[n] : NULL;
    row_target target;
    if (!target_of_row(&target, params, target_index, target_prob, n)) {
        result->row_loss[n] = batch->total[slot] = batch->rest[slot] = 0.0;
        if (z_term) *z_term = 0.0;
        if (g) write_zeros(g, n_classes);
        return;
    }
    /* every read of x happens before the gradient is written: grad may be logits */
    const STORAGE *next_row = row_to_prefetch(x, n, params->n_rows, n_classes);
    row_smoothing smoothing = {{target.weight, target.weight ? call->narrow_weights : NULL, call->zero_weight},
                               SMOOTHING_SUMS_ZERO};
    /* without a softcap exp_sum_blocks takes FLOAT_EXP logits through exp_float_runs, the loop that
     * adds to the smoothing sums */
    const int fused = FUSED_SMOOTHING && !target.prob && target.spread != 0 && call->softcap == 0;
    const row_stats stats = compute_row_stats(g ? scratch : NULL, x, next_row, waiting, n_classes, call->softcap,
                                              fused ? &smoothing : NULL);
    const target_sums sums = sum_over_target(&target, x, call, stats.max, fused ? &smoothing : NULL);
    result->row_loss[n] = sums.distance;
    batch->total[slot] = sums.total;
    batch->rest[slot] = stats.rest;
    const double lse = lse_for_z_loss(call, &stats);
    if (z_term) *z_term = call->z_loss * lse * lse;
    if (!g) return;
    const gradient_factors factors = factors_of_row(&target, &stats, lse, sums.total, result, params, call, n);
    if (!waiting) {
        write_gradient(g, scratch, &target, stats.argmax, factors, call, 0, n_classes);
        return;
    }
    write_waiting_gradient(waiting, n_classes); /* what is left of the previous row's, freeing its half */
    *waiting = (waiting_gradient){
        .grad = g,
        .scratch = scratch,
        .target = target,
        .argmax = stats.argmax,
        .factors = factors,
        .call = call,
        .written = 0,
        .next_half = !half,
    };
    waiting->lines = lines_of_row(waiting);
    /* the classes before the first whole line now, the lines then from there */
    if (waiting->lines.grad) write_waiting_gradient(waiting, waiting->lines.next);
}

/* A compensated sum, its carry not yet added: the sums of the row losses are kept so, per chunk of
 * rows, until sum_of_chunks adds the chunks up in order. */
typedef struct {
    double sum, carry;
} compensated_sum;

/* The sum of the row losses of a chunk, in a fixed order: row begin + i in lane i % SUM_LANES, the
 * lanes then added in order. The lanes are independent chains of additions (a vector's worth, where
 * one chain would take an addition's latency per row). */
#define SUM_LANES 8

static compensated_sum row_order_sum(const double *values, int64_t n) {
    double sum[SUM_LANES] = {0.0}, carry[SUM_LANES] = {0.0};
    int64_t i = 0;
    for (; i + SUM_LANES <= n; i += SUM_LANES)
#pragma GCC unroll 1 /* kept a loop, which GCC vectorises (unrolled, it stays scalar) */
        for (int j = 0; j < SUM_LANES; j++) add_with_carry(&sum[j], &carry[j], values[i + j]);
    for (; i < n; i++) add_with_carry(&sum[i % SUM_LANES], &carry[i % SUM_LANES], values[i]);
    compensated_sum total = {0.0, 0.0};
    for (int j = 0; j < SUM_LANES; j++) {
        add_with_carry(&total.sum, &total.carry, sum[j]);
        total.carry += carry[j];
    }
    return total;
}

/* The sum of a call's row losses: compensated, so that the mean of a million rows is as accurate as
 * each row; the chunks' sums added in chunk order, whichever threads computed them. */
static double sum_of_chunks(const compensated_sum *chunks, int64_t n_chunks) {
    double sum = 0.0, carry = 0.0;
    for (int64_t c = 0; c < n_chunks; c++) {
        add_with_carry(&sum, &carry, chunks[c].sum);
        carry += chunks[c].carry;
    }
    return with_carry(sum, carry);
}

/* Rows are shared out to threads in chunks of about CHUNK_ELEMENTS logits; a call smaller than two
 * chunks stays on the calling thread. Rows of at most FEW_CLASSES classes are computed ROW_GROUP at
 * a time (kernel_few_classes.h): their chunks are whole groups. Groups of 32 rows give each step
 * twice the independent work of 16 (float32 5-8% faster, float16 and bfloat16 5-30%, their row
 * functions most); double logits keep 16, whose group arrays at 32 rows outgrew L1 (K = 32 ran
 * 10-25% slower).
 * FEW_CLASSES was 32. One thread, A/B medians of the gradient, the loss alone and softmax, their
 * time with groups over the row path's: float32 at K = 33 0.28-0.45 (AVX-512), 0.48-0.61 (AVX2),
 * 0.31-0.51 (baseline); K = 48 0.38-0.60, 0.63-0.82, 0.38-0.54; K = 64 0.58-0.98, 0.78-1.03,
 * 0.40-0.56; K = 72 0.47-0.78 (AVX-512), 0.75-1.03 (AVX2); K = 88 0.57-0.87, 0.93-1.18; K = 96
 * 0.63-1.18, 0.99-1.29; K = 128 0.76-1.52, 1.19-1.48; baseline 0.37-0.58 up to 128. Float64 and
 * half precision gained as much at K = 33 and 0.68-0.95 at 48 (but bfloat16's softmax, 1.2 there),
 * and lost at 64 (1.04-1.60 on AVX-512 and AVX2).
 * That is for rows whose only target is a class index (and the row functions). Other rows (label
 * smoothing, probability targets, a softcap) keep more group arrays (a softcap's three in double),
 * and lost from 64 classes with groups: float32 out=, a softcap 1.01-1.15 (AVX-512), smoothing and
 * probabilities 1.06-1.34 (AVX2), where at 40 classes they all gained (0.52-0.83); they stop at
 * FEW_CLASSES_WITH_OPTIONS, which also keeps a softcap's group under 64 KB of stack. */
#define CHUNK_ELEMENTS 32768
#ifdef STORAGE_IS_DOUBLE
#define ROW_GROUP 16
#else
#define ROW_GROUP 32
#endif
#if defined(STORAGE_IS_FLOAT) && defined(__AVX512F__)
#define FEW_CLASSES 88
#elif defined(STORAGE_IS_FLOAT)
#define FEW_CLASSES 72
#else
#define FEW_CLASSES 48
#endif
#define FEW_CLASSES_WITH_OPTIONS 48

/* whether rows of the call are computed in groups (kernel_few_classes.h) */
static int takes_groups(const sce_params *params, const int64_t *target_index) {
    const int lone_index = target_index && params->label_smoothing == 0 && params->softcap == 0;
    return params->n_classes <= (lone_index ? FEW_CLASSES : FEW_CLASSES_WITH_OPTIONS);
}

/* grouped: chunks of whole groups */
static int64_t rows_per_chunk_of(int64_t n_classes, int grouped) {
    if (n_classes >= CHUNK_ELEMENTS) return 1;
    const int64_t rows = CHUNK_ELEMENTS / n_classes;
    return grouped ? rows - rows % ROW_GROUP : rows;
}

/* the row after the last one of the chunk that starts at begin */
static int64_t chunk_end(int64_t begin, int64_t rows_per_chunk, int64_t n_rows) {
    return begin + rows_per_chunk < n_rows ? begin + rows_per_chunk : n_rows;
}

typedef struct {
    STORAGE *grad;
    SCRATCH *scratch; /* scratch_stride(K) values per worker (per row when the classes are shared out);
                         NULL for the loss alone or few classes */
    SCRATCH *spread_weight_space; /* K values for call.spread_weights, or NULL */
    float *narrow_weight_space;   /* K values for call.narrow_weights, or NULL */
    sce_result *result;
    const sce_params *params;
    call_constants call;
    const STORAGE *logits;
    const int64_t *target_index; /* the caller's, until prepare_cross_entropy makes it target_copy */
    int64_t *target_copy;        /* (N) */
    const TARGET *target_prob;
    int64_t rows_per_chunk;
    int grouped; /* takes_groups */
    compensated_sum *loss_sums, *z_loss_sums; /* (n_chunks): each chunk's, z_loss_sums NULL without z-loss */
    waiting_gradient *waiting; /* one per worker for pipelined rows (see waiting_gradient), else NULL */
} cross_entropy_job;

static void sum_chunk(const cross_entropy_job *job, int64_t chunk) {
    const int64_t begin = chunk * job->rows_per_chunk;
    const int64_t n = chunk_end(begin, job->rows_per_chunk, job->params->n_rows) - begin;
    job->loss_sums[chunk] = row_order_sum(job->result->row_loss + begin, n);
    if (job->z_loss_sums) job->z_loss_sums[chunk] = row_order_sum(job->result->row_z_loss + begin, n);
}

#include "kernel_few_classes.h"

static void cross_entropy_chunk(void *context, int worker, int64_t chunk) {
    const cross_entropy_job *job = context;
    const int64_t begin = chunk * job->rows_per_chunk;
    const int64_t end = chunk_end(begin, job->rows_per_chunk, job->params->n_rows);
    const int64_t n_classes = job->params->n_classes;
    if (job->grouped) {
        cross_entropy_groups(job, begin, end);
        sum_chunk(job, chunk);
        return;
    }
    SCRATCH *scratch = job->scratch ? job->scratch + worker * scratch_stride(n_classes) : NULL;
    waiting_gradient *waiting = job->waiting ? &job->waiting[worker] : NULL;
    for (int64_t first = begin; first < end; first += LOSS_BATCH) {
        const int count = end - first < LOSS_BATCH ? (int)(end - first) : LOSS_BATCH;
        loss_batch batch;
        for (int i = 0; i < count; i++)
            cross_entropy_row(job->grad, scratch, waiting, job->result, job->params, &job->call, job->logits,
                              job->target_index, job->target_prob, first + i, &batch, i);
        add_log_sums(job->result->row_loss + first, &batch, count);
    }
    sum_chunk(job, chunk);
}

/* after a thread's last chunk: the gradient still waiting, and the fence for the streamed lines
 * (one per thread: see write_gradient_with) */
static void cross_entropy_finish(void *context, int worker) {
    const cross_entropy_job *job = context;
    if (job->waiting) write_waiting_gradient(&job->waiting[worker], job->params->n_classes);
    if (job->call.stream_gradient) stream_fence();
}

/* Rows are pipelined (waiting_gradient) when their gradient is streamed, their exps take
 * exp_float_runs or exp_double_runs, without a softcap (which takes the whole scratch), and they
 * are longer than a part (shorter rows would wait for nothing: 65536x256 float32 out= was 5-8%
 * slower pipelined in parts, a review found) or, where lines are streamed (LINES_IN_EXP_PASS),
 * than LINE_PIPELINE_CLASSES: allocating, A/B medians on the Xeon, one thread then two, float32
 * 8192x1000 15.4 -> 13.0 ms, 9.2 -> 8.7; 4096x2000 14.1 -> 11.4, 9.3 -> 7.9; float64 8192x1000
 * 34.6 -> 28.4, 20.1 -> 18.3; 65536x256 39.6 -> 36.9, 22.2 -> 20.1; but 131072x64 39.5 -> 43.4 on
 * one thread. Rows whose lines are not streamed then wait one row (probability targets at
 * 8192x1000: the same speed). Not in the AVX2 build: on Zen 3 a row's gradient written right after
 * its own exp pass measured faster than in parts of the next row's (out= A/B medians, one thread
 * then two: float32 1024x32000 0.90-0.92 and 0.90-0.95, 256x128256 0.97-0.98 and 0.96-0.97,
 * 32x262144 0.97 and 0.93, 2048x4099 0.97-1.01 and 0.97-1.02; float64 256x128256 0.92-1.05 and
 * 0.95-0.98, 1024x32000 0.98-1.02 and 0.92-0.97; bfloat16 256x128256 0.99 and 0.93; float32 with
 * weights and smoothing 0.95 and 0.91); stream_next_line taken to AVX2 (two 256-bit streaming
 * stores per line, rows of more than 128 classes pipelined) was slower still: 1.14-1.47x the time,
 * 1.22-1.43x with plain stores instead (perf put the exps' samples on the stores, which stalled
 * them). Baseline x86-64, bound by its exps, measured the same either way. */
#if (FLOAT_EXP || defined(DOUBLE_ROW_EXPS)) && !(defined(__AVX2__) && !defined(__AVX512F__))
#define EXP_PASS_WRITES_WAITING 1
#else
#define EXP_PASS_WRITES_WAITING 0
#endif
#define LINE_PIPELINE_CLASSES 128

static int pipelines_rows(const call_constants *call, int with_scratch) {
    return with_scratch && call->stream_gradient && EXP_PASS_WRITES_WAITING && call->softcap == 0 &&
           call->n_classes > (LINES_IN_EXP_PASS ? LINE_PIPELINE_CLASSES : WAITING_STEP);
}

/* n_threads waiting gradients, none waiting; free() releases them */
static waiting_gradient *new_waiting_gradients(int n_threads) {
    waiting_gradient *waiting = aligned_alloc(CACHE_LINE, sizeof(waiting_gradient) * (size_t)n_threads);
    for (int worker = 0; waiting && worker < n_threads; worker++) waiting[worker] = (waiting_gradient){.grad = NULL};
    return waiting;
}

#include "kernel_split_classes.h"

/* class indices with weights and label smoothing, and no softcap (whose exp pass and gradient take
 * other loops) */
static int smooths_with_weights(const sce_params *params, const int64_t *target_index) {
    return target_index && params->weight && params->label_smoothing != 0 && params->softcap == 0;
}

/* call_constants.spread_weights apply: weights and smoothing, and one upstream gradient for every row */
static int uses_spread_weights(const sce_params *params, const int64_t *target_index) {
    return smooths_with_weights(params, target_index) && !params->row_grad_scale;
}

/* the class weights as floats into space (K values); NULL unless every one is a float exactly */
static const float *narrow_weights_of(float *space, const sce_params *params) {
    int exact = 1;
    for (int64_t k = 0; k < params->n_classes; k++) {
        space[k] = (float)params->weight[k];
        exact &= (double)space[k] == params->weight[k]; /* a NaN weight too is not */
    }
    return exact ? space : NULL;
}

/* w_k spread target into space (K values), as gradient_values computes them for a row; NULL when
 * one is beyond SCRATCH's range (the rows then compute them in double) */
static const SCRATCH *spread_weights_of(SCRATCH *space, const sce_result *result, const sce_params *params) {
    const double spread = params->label_smoothing / (double)params->n_classes;
    const double target = scales_of(params->grad_scale, result, params->reduction).ce;
    int fit = 1;
    for (int64_t k = 0; k < params->n_classes; k++) {
        const double value = params->weight[k] * (spread * target);
        space[k] = (SCRATCH)value;
        fit &= !isinf(space[k]) || isinf(value);
    }
    return fit ? space : NULL;
}

/* The set-up that needs the targets copied and counted (a mean's denominators), run while the
 * workers wake (pool_run_after): the spread weights depend on them. job->target_index becomes the
 * copy. */
static int prepare_cross_entropy(void *context) {
    cross_entropy_job *job = context;
    const int status = count_targets(job->result, job->params, job->target_index, job->target_copy);
    if (job->target_index) job->target_index = job->target_copy;
    if (status == SCE_OK && job->spread_weight_space)
        job->call.spread_weights = spread_weights_of(job->spread_weight_space, job->result, job->params);
    if (job->narrow_weight_space) job->call.narrow_weights = narrow_weights_of(job->narrow_weight_space, job->params);
    return status;
}

int KERNEL_NAME(sce_cross_entropy)(STORAGE *grad, sce_result *result, const sce_params *params,
                                   const STORAGE *logits, const int64_t *target_index,
                                   const TARGET *target_prob) {
    int status = check_cross_entropy_arguments(result, params, target_index, target_prob);
    if (status != SCE_OK) return status;

    const int64_t n_rows = params->n_rows, n_classes = params->n_classes;
    const int grouped = takes_groups(params, target_index);
    const int64_t rows_per_chunk = rows_per_chunk_of(n_classes, grouped);
    const int64_t n_chunks = (n_rows + rows_per_chunk - 1) / rows_per_chunk;
    /* fewer rows than threads, each of several segments: the threads share out the class axis */
    const int split_classes = n_rows > 0 && n_rows < params->n_threads && n_classes > SEGMENT;
    const int64_t n_segments = (n_classes + SEGMENT - 1) / SEGMENT;
    const int n_threads = pool_threads_for(params->n_threads, split_classes ? n_rows * n_segments : n_chunks);
    const int64_t scratch_rows = split_classes ? n_rows : n_threads;
    const int with_scratch = grad && n_rows > 0 && !grouped;
    const int with_spread_weights = with_scratch && uses_spread_weights(params, target_index);
    const int64_t scratch_end = scratch_rows * scratch_stride(n_classes); /* then the spread weights */
    SCRATCH *scratch = with_scratch ? new_scratch(scratch_end + with_spread_weights * n_classes) : NULL;
    compensated_sum *chunk_sums = malloc(sizeof(compensated_sum) * 2 * (size_t)(n_chunks > 0 ? n_chunks : 1));
    const int own_copy_needed = target_index && !params->target_copy;
    int64_t *own_copy = own_copy_needed ? malloc(sizeof(int64_t) * (size_t)(n_rows > 0 ? n_rows : 1)) : NULL;
    const int with_narrow_weights = FUSED_SMOOTHING && smooths_with_weights(params, target_index);
    float *narrow_weight_space = with_narrow_weights ? malloc(sizeof(float) * (size_t)n_classes) : NULL;
    const call_constants call = {
        .n_classes = n_classes,
        .softcap = params->softcap,
        .z_loss = params->z_loss,
        .weight_total = sum_of_weights(params),
        .zero_weight = params->label_smoothing != 0 && has_zero_weight(params),
        .stream_gradient = grad && streams_output(grad, n_rows, n_classes),
        .spread_weights = NULL, /* prepare_cross_entropy's, as narrow_weights */
        .narrow_weights = NULL,
    };
    const int pipelined = !split_classes && pipelines_rows(&call, with_scratch);
    cross_entropy_job job = {
        .grad = grad,
        .scratch = scratch,
        .spread_weight_space = with_spread_weights && scratch ? scratch + scratch_end : NULL,
        .narrow_weight_space = narrow_weight_space,
        .result = result,
        .params = params,
        .call = call,
        .logits = logits,
        .target_index = target_index,
        .target_copy = params->target_copy ? params->target_copy : own_copy,
        .target_prob = target_prob,
        .rows_per_chunk = rows_per_chunk,
        .grouped = grouped,
        .loss_sums = chunk_sums,
        .z_loss_sums = chunk_sums && result->row_z_loss ? chunk_sums + n_chunks : NULL,
        .waiting = pipelined ? new_waiting_gradients(n_threads) : NULL,
    };
    if ((with_scratch && !scratch) || !chunk_sums || (target_index && !job.target_copy) ||
        (pipelined && !job.waiting) || (with_narrow_weights && !narrow_weight_space)) {
        status = SCE_ERR_MEMORY;
    } else if (split_classes) {
        status = prepare_cross_entropy(&job);
        if (status == SCE_OK) status = cross_entropy_split(&job, n_threads);
        for (int64_t chunk = 0; chunk < n_chunks && status == SCE_OK; chunk++) sum_chunk(&job, chunk);
    } else {
        status = pool_run_after(n_threads, prepare_cross_entropy, cross_entropy_chunk, cross_entropy_finish, &job,
                                n_chunks);
    }
    if (status == SCE_OK) {
        result->loss_sum = sum_of_chunks(job.loss_sums, n_chunks);
        result->z_loss_sum = job.z_loss_sums ? sum_of_chunks(job.z_loss_sums, n_chunks) : 0.0;
    }
    free(scratch);
    free(chunk_sums);
    free(own_copy);
    free(narrow_weight_space);
    free(job.waiting);
    return status;
}
