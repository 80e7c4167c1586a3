/* kernel_double_runs.h: the exps of double logits (and of float16, widened, on AVX2) in AVX-512
 * or AVX2 intrinsics, with compensated sums;
 * part of kernel_template.h, which includes the parts in order. */

/* Double logits (and float16's, widened, in the AVX2 version) without a softcap, where the vector
 * exps take the row (its max below 2^14): exp_blocks in intrinsics, runs of DOUBLE_RUN blocks added
 * per lane in plain double before TwoSum (within 3 2^-53 of their sum; 6% faster at 8192x1000 on
 * AVX-512 than runs of COMPENSATED_RUN), the lanes' sums and carries in registers. AVX-512 and AVX2
 * give the same bits. */
#if defined(STORAGE_IS_DOUBLE) && defined(__AVX512F__)
#include "vector_exp_double_avx512.h"
#define DOUBLE_ROW_EXPS 1

typedef exp8_row double_exp_row;

static inline int double_exp_row_of(double_exp_row *row, double m) { return exp8_row_of(row, m); }

typedef struct {
    __m512d sum[2], carry[2]; /* lanes 0-7, 8-15 */
} double_run_sums;

#define NO_DOUBLE_RUN_SUMS {{_mm512_setzero_pd(), _mm512_setzero_pd()}, {_mm512_setzero_pd(), _mm512_setzero_pd()}}

/* count <= DOUBLE_RUN * PARTIAL_SUMS logits from x; lines (or NULL) takes a line per 8 exps */
SPECIALISED void exp_double_run(double_run_sums *sums, double *restrict e, const double *x, const double *next_row,
                                int64_t count, int64_t skip, const double_exp_row *row, streamed_lines *lines,
                                int store) {
    for (int half = 0; half < 2; half++) {
        __m512d lane_sum = _mm512_setzero_pd();
        for (int64_t k = half * 8; k < count; k += PARTIAL_SUMS) {
            if (next_row && half == 0) prefetch_block(next_row + k);
            if (lines) stream_next_line(lines);
            /* lanes past the row's end: not read (a masked load does not fault), stored or summed */
            const __mmask8 valid = count - k >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (count - k)) - 1);
            const __m512d term = exp8_of_row(_mm512_maskz_loadu_pd(valid, x + k), row);
            if (store) _mm512_mask_storeu_pd(e + k, valid, term);
            const __mmask8 at_skip = skip >= k && skip < k + 8 ? (__mmask8)(1u << (skip - k)) : 0;
            lane_sum = _mm512_mask_add_pd(lane_sum, valid & ~at_skip, lane_sum, term);
        }
        /* add_with_carry, lane by lane */
        const __m512d sum = _mm512_add_pd(sums->sum[half], lane_sum), term_part = _mm512_sub_pd(sum, sums->sum[half]);
        const __m512d error = _mm512_add_pd(_mm512_sub_pd(sums->sum[half], _mm512_sub_pd(sum, term_part)),
                                            _mm512_sub_pd(lane_sum, term_part));
        sums->carry[half] = _mm512_add_pd(sums->carry[half], error);
        sums->sum[half] = sum;
    }
}

static inline double double_run_total(const double_run_sums *sums) {
    partial_sums lanes;
    for (int half = 0; half < 2; half++) {
        _mm512_storeu_pd(lanes.sum + 8 * half, sums->sum[half]);
        _mm512_storeu_pd(lanes.carry + 8 * half, sums->carry[half]);
    }
    return total_of(&lanes);
}
#elif (defined(STORAGE_IS_DOUBLE) || defined(LOAD_4_AS_DOUBLES)) && defined(__AVX2__) && defined(__FMA__)
#include "vector_exp_double_avx2.h"
#define DOUBLE_ROW_EXPS 1

/* the 4 logits at x (of which the first left are read: valid, their lanes) as doubles */
static inline __m256d load_4_as_doubles(const STORAGE *x, int64_t left, __m256i valid) {
#ifdef STORAGE_IS_DOUBLE
    return left >= 4 ? _mm256_loadu_pd(x) : _mm256_maskload_pd(x, valid);
#else
    (void)valid;
    return LOAD_4_AS_DOUBLES(x, left);
#endif
}

typedef exp4_row double_exp_row;

static inline int double_exp_row_of(double_exp_row *row, double m) { return exp4_row_of(row, m); }

typedef struct {
    __m256d sum[4], carry[4]; /* lanes 4j to 4j + 3 in [j] */
} double_run_sums;

#define NO_DOUBLE_RUN_SUMS                                                                                     \
    {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()},                     \
     {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()}}

/* the AVX-512 exp_double_run's additions: a lane past the row's end or at skip adds 0, which leaves
 * its sum of terms >= 0 as it is */
SPECIALISED void exp_double_run(double_run_sums *sums, double *restrict e, const STORAGE *x,
                                const STORAGE *next_row, int64_t count, int64_t skip, const double_exp_row *row,
                                streamed_lines *lines, int store) {
    (void)lines; /* NULL: lines are streamed on AVX-512 only */
    const __m256i lane_of = _mm256_setr_epi64x(0, 1, 2, 3);
    /* the four quarters of each block at a time, their exps' steps interleaved (exp4_reduce; two at a
     * time measured 5-9% slower on Zen 2); a lane past the row's end adds +0, which leaves its sum as
     * it was */
    __m256d lane_sum[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    for (int64_t block = 0; block < count; block += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + block);
        __m256d logits[4];
        __m256i valid[4];
        exp4_reduced reduced[4];
        int64_t at[4]; /* a quarter's first class, or for one wholly past the row's end the block's */
        for (int j = 0; j < 4; j++) {
            const int64_t k = block + 4 * j;
            at[j] = k < count ? k : block; /* (no pointer past the row's end is formed) */
            /* lanes past the row's end: not read (a masked load does not fault), stored or summed */
            valid[j] = _mm256_cmpgt_epi64(_mm256_set1_epi64x(count - k), lane_of);
            logits[j] = load_4_as_doubles(x + at[j], count - k, valid[j]);
            reduced[j] = exp4_reduce(logits[j], row);
        }
        __m256d exps[4];
        exp4_finish_block(exps, reduced, logits, row);
        for (int j = 0; j < 4; j++) {
            const int64_t k = block + 4 * j;
            const int whole = count - k >= 4;
            __m256d term = exps[j];
            if (store && whole) _mm256_storeu_pd(e + k, term);
            if (store && !whole) _mm256_maskstore_pd(e + at[j], valid[j], term);
            if (!whole) term = _mm256_and_pd(term, _mm256_castsi256_pd(valid[j]));
            if (skip >= k && skip < k + 4)
                term = _mm256_andnot_pd(
                    _mm256_castsi256_pd(_mm256_cmpeq_epi64(lane_of, _mm256_set1_epi64x(skip - k))), term);
            lane_sum[j] = _mm256_add_pd(lane_sum[j], term);
        }
    }
    for (int quarter = 0; quarter < 4; quarter++) {
        const __m256d old = sums->sum[quarter], sum = _mm256_add_pd(old, lane_sum[quarter]);
        const __m256d term_part = _mm256_sub_pd(sum, old);
        const __m256d error = _mm256_add_pd(_mm256_sub_pd(old, _mm256_sub_pd(sum, term_part)),
                                            _mm256_sub_pd(lane_sum[quarter], term_part));
        sums->carry[quarter] = _mm256_add_pd(sums->carry[quarter], error);
        sums->sum[quarter] = sum;
    }
}

static inline double double_run_total(const double_run_sums *sums) {
    partial_sums lanes;
    for (int quarter = 0; quarter < 4; quarter++) {
        _mm256_storeu_pd(lanes.sum + 4 * quarter, sums->sum[quarter]);
        _mm256_storeu_pd(lanes.carry + 4 * quarter, sums->carry[quarter]);
    }
    return total_of(&lanes);
}
#endif

#ifdef DOUBLE_ROW_EXPS
#define DOUBLE_RUN 4

SPECIALISED double exp_double_runs(double *restrict e, const STORAGE *x, const STORAGE *next_row,
                                   waiting_gradient *waiting, int64_t begin, int64_t end, int64_t skip,
                                   const double_exp_row *row, int store) {
    double_run_sums sums = NO_DOUBLE_RUN_SUMS;
    streamed_lines lines = LINES_IN_EXP_PASS && waiting ? lines_to_stream(waiting) : (streamed_lines){.grad = NULL};
    streamed_lines *lines_of = lines.grad ? &lines : NULL;
    const int64_t run = DOUBLE_RUN * PARTIAL_SUMS; /* runs, blocks, then what is left */
    int64_t k = begin;
    for (; k + run <= end; k += run) {
        exp_double_run(&sums, store ? e + k : NULL, x + k, next_row ? next_row + k : NULL, run, skip - k, row, lines_of,
                       store);
        if (waiting && !lines_of && (k + run) % WAITING_STEP == 0) write_waiting_gradient(waiting, k + run);
    }
    for (; k + PARTIAL_SUMS <= end; k += PARTIAL_SUMS)
        exp_double_run(&sums, store ? e + k : NULL, x + k, next_row ? next_row + k : NULL, PARTIAL_SUMS, skip - k, row,
                       lines_of, store);
    if (k < end)
        exp_double_run(&sums, store ? e + k : NULL, x + k, next_row ? next_row + k : NULL, end - k, skip - k, row,
                       lines_of, store);
    if (lines_of) lines_streamed_until(waiting, lines.next);
    return double_run_total(&sums);
}
#endif
