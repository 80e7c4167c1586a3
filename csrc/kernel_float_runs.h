/* kernel_float_runs.h: the exps of float32 and bfloat16 logits (FLOAT_EXP) in float, runs of
 * blocks summed in float first: AVX-512, AVX2 and portable forms, softcapped logits too;
 * part of kernel_template.h, which includes the parts in order. */

/* FLOAT_EXP logits: their exps are floats, and runs of up to FLOAT_RUN blocks of them (count
 * logits, the last run of a row shorter) are summed per lane in float before the double sums take
 * them (converting every block costs a sixth of the pass). A run's sum of positive terms is within
 * (FLOAT_RUN - 1) 2^-24 relative, its exps within 1.13 ulp, up to 2.26 2^-24 relative: a tiny loss
 * (log1p(rest) = rest) is within (3.26 2^-24) / (its ulp, >= 2^-24 of it) + 0.5 rounding = 3.76 ulp
 * of float32. With runs of 4 that was 5.76, and a row built for it measured 4.3 (a review found
 * it); runs of 2 cost 5-12% of the pass. With a softcap, x' and its slope are double and the exps
 * those of the differences x' - max: expf_of_double's (0.91 ulp), on AVX-512 and AVX2 capped_exp8's
 * and capped_exp4_finish's (0.55). */
#define FLOAT_RUN 2

/* Softcapped logits take two passes over each batch of CAPPED_BATCH (cap_batch, then the runs): x'
 * and its slope, then the exps of x' - max. In one pass, each 16 logits' chain of both, about 100
 * operations deep in AVX-512, left the lanes waiting (one thread, float32: 8192x1000 13.3 -> 10.7 ms,
 * 256x128256 50 -> 41 ms). */
#define CAPPED_BATCH 256

/* The runs one exp_float_run call may take where AVX2's lanes take the row: their exps together
 * (exp_float_run_in_lanes); the portable loop takes one */
#if FLOAT_EXP && defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define LANE_RUNS 2
#else
#define LANE_RUNS 1
#endif

#if FLOAT_EXP && defined(__AVX512F__)
#include "vector_exp_avx512.h"

#include "vector_softcap_avx512.h"

/* the same in AVX-512 intrinsics (vector_exp_avx512.h, vector_softcap_avx512.h); the exps by
 * capped_exp16 with a softcap, by exp16_of_row where the row has its constants (row not NULL),
 * else by exp16_difference. The lanes' double sums stay in two registers (in partial_sums they went
 * through memory after every run). */
_Static_assert(!COMPENSATED_SUMS, "FLOAT_EXP types' sums are not compensated");

typedef exp16_row float_exp_row;

static inline int float_exp_row_of(float_exp_row *row, float m, int careful) { return exp16_row_of(row, m, careful); }

typedef struct {
    __m512d low, high; /* lanes 0-7, 8-15 */
} float_run_sums;
#define NO_FLOAT_RUN_SUMS {_mm512_setzero_pd(), _mm512_setzero_pd()}

/* the lanes added pairwise, a fixed tree: 4 additions' latency where total_of's order takes 16 */
static inline double float_run_total(const float_run_sums *sums) {
    const __m512d eight = _mm512_add_pd(sums->low, sums->high);
    const __m256d four = _mm256_add_pd(_mm512_castpd512_pd256(eight), _mm512_extractf64x4_pd(eight, 1));
    const __m128d two = _mm_add_pd(_mm256_castpd256_pd128(four), _mm256_extractf128_pd(four, 1));
    return _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)));
}

/* lanes past a row's end: not read (a masked load does not fault), stored or summed */
static inline __mmask16 lanes_before(int64_t count) {
    return count >= PARTIAL_SUMS ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
}

/* x' of x[0, count) into capped, 16 at a time (lanes past count: x' of 0), and with store their
 * slopes, times SLOPE_SCALE, into slope */
SPECIALISED void cap_batch(double *capped, SCRATCH *restrict slope, const STORAGE *x, int64_t count, double softcap,
                           int store) {
    const softcap8 cap = softcap8_of(softcap, SLOPE_SCALE);
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        const __mmask16 valid = lanes_before(count - k);
        const __m512 logits = LOAD_16_AS_FLOATS_MASKED(valid, x + k);
        const __m512d low_x = _mm512_cvtps_pd(_mm512_castps512_ps256(logits));
        const __m512d high_x = _mm512_cvtps_pd(_mm512_extractf32x8_ps(logits, 1));
        const __m512d low_s = squared_u8(low_x, &cap), high_s = squared_u8(high_x, &cap);
        /* a block whose lanes are all near by the polynomial, others by exps (as AVX2's cap_block) */
        const int near = (near_lanes8(low_s) & near_lanes8(high_s)) == 0xFF;
        const capped8 low = near ? softcapped8_near(low_x, low_s, &cap) : softcapped8(low_x, &cap);
        const capped8 high = near ? softcapped8_near(high_x, high_s, &cap) : softcapped8(high_x, &cap);
        const __m512 slopes =
            _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(low.slope)), _mm512_cvtpd_ps(high.slope), 1);
        if (store) _mm512_mask_storeu_ps(slope + k, valid, slopes);
        _mm512_storeu_pd(capped + k, low.value);
        _mm512_storeu_pd(capped + k + 8, high.value);
    }
}

/* the exps of 16 softcapped logits from their x' */
static inline __m512 capped_exp16(const double *capped, __m512d max) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(capped_exp8(_mm512_sub_pd(_mm512_loadu_pd(capped), max))),
                              capped_exp8(_mm512_sub_pd(_mm512_loadu_pd(capped + 8), max)), 1);
}

/* lines (or NULL) takes a line per block */
SPECIALISED void exp_float_run(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x, const STORAGE *next_row,
                               int64_t count, int64_t skip, double max, const float_exp_row *row,
                               const double *capped, smoothing_sums *smoothing, class_weights weights,
                               streamed_lines *lines, int store) {
    const __m512 m = _mm512_set1_ps((float)max);
    const __m512d capped_max = _mm512_set1_pd(max);
    __m512 run = _mm512_setzero_ps();
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + k);
#if LINES_IN_EXP_PASS
        if (lines) stream_next_line(lines);
#endif
        const __mmask16 valid = lanes_before(count - k);
        const __m512 term = capped ? capped_exp16(capped + k, capped_max)
                            : row  ? exp16_of_row(LOAD_16_AS_FLOATS_MASKED(valid, x + k), row)
                                   : exp16_difference(LOAD_16_AS_FLOATS_MASKED(valid, x + k), m, 0);
        if (store) _mm512_mask_storeu_ps(e + k, valid, term);
        if (smoothing) add_smoothing_block_at(smoothing, weights, x + k, k, count - k, capped_max);
        const __mmask16 at_skip = skip >= k && skip < k + PARTIAL_SUMS ? (__mmask16)(1u << (skip - k)) : 0;
        run = _mm512_mask_add_ps(run, valid & ~at_skip, run, term);
    }
    sums->low = _mm512_add_pd(sums->low, _mm512_cvtps_pd(_mm512_castps512_ps256(run)));
    sums->high = _mm512_add_pd(sums->high, _mm512_cvtps_pd(_mm512_extractf32x8_ps(run, 1)));
}
#else
typedef expf_row float_exp_row;

static inline int float_exp_row_of(float_exp_row *row, float m, int careful) {
    if (!expf_row_of(row, m)) return 0;
    row->careful = careful;
    return 1;
}

#if FLOAT_EXP && defined(__AVX2__) && defined(__FMA__)
#include "vector_exp_avx2.h"

#include "vector_softcap_avx2.h"

/* the lanes' double sums in registers, lanes 4j to 4j + 3 in lane[j] (as partial_sums they went
 * through memory after every run) */
typedef struct {
    __m256d lane[PARTIAL_SUMS / 4];
} float_run_sums;

/* (as {0} it was a memset, and rep stosq: see isa_avx2.h) */
#define NO_FLOAT_RUN_SUMS {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()}}

/* a run's float sums added to the lanes' double sums, each as add_to_lane adds it */
static inline void add_run(float_run_sums *sums, const float run[PARTIAL_SUMS]) {
    for (int half = 0; half < 2; half++) {
        const __m256 floats = _mm256_loadu_ps(run + 8 * half);
        sums->lane[2 * half] = _mm256_add_pd(sums->lane[2 * half], _mm256_cvtps_pd(_mm256_castps256_ps128(floats)));
        sums->lane[2 * half + 1] =
            _mm256_add_pd(sums->lane[2 * half + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(floats, 1)));
    }
}

static inline double float_run_total(const float_run_sums *sums) {
    partial_sums lanes = {{0.0}, {0.0}};
    for (int j = 0; j < PARTIAL_SUMS / 4; j++) _mm256_storeu_pd(lanes.sum + 4 * j, sums->lane[j]);
    return total_of(&lanes);
}

/* the slopes of a block (lanes of them), in stores of 8: a load of 8 from two stores of 4 waits for
 * them (perf put about 20% of the exp pass's samples there) */
SPECIALISED void store_slopes(SCRATCH *restrict slope, const __m128 quarters[4], int lanes) {
    float slopes[PARTIAL_SUMS];
    for (int half = 0; half < 2; half++)
        _mm256_storeu_ps(lanes == PARTIAL_SUMS ? slope + 8 * half : slopes + 8 * half,
                         _mm256_set_m128(quarters[2 * half + 1], quarters[2 * half]));
    if (lanes < PARTIAL_SUMS)
        for (int j = 0; j < lanes; j++) slope[j] = slopes[j];
}

/* x' of a block of 16 logits (lanes of them, in four quarters) into capped, and with store their
 * slopes into slope: by softcapped4_near where every lane is near (s <= 1), else by exps (the four
 * quarters' steps interleaved) */
SPECIALISED void cap_block(double *capped, SCRATCH *restrict slope, const __m256d four[4], const __m256d s[4],
                           int lanes, const softcap4 *cap, int near, int store) {
    __m128 slopes[4];
    if (near)
        for (int quarter = 0; quarter < 4; quarter++) {
            const capped4 logit = softcapped4_near(four[quarter], s[quarter], cap);
            _mm256_storeu_pd(capped + 4 * quarter, logit.value);
            slopes[quarter] = _mm256_cvtpd_ps(logit.slope);
        }
    else {
        softcap4_reduced reduced[4];
        for (int quarter = 0; quarter < 4; quarter++) reduced[quarter] = softcapped4_reduce(four[quarter], cap);
        const int normal = powers_of_2_normal(reduced[0].k, reduced[1].k, reduced[2].k, reduced[3].k);
        for (int quarter = 0; quarter < 4; quarter++) {
            const capped4 logit = normal ? softcapped4_finish(reduced[quarter], four[quarter], cap, 1)
                                         : softcapped4_finish(reduced[quarter], four[quarter], cap, 0);
            _mm256_storeu_pd(capped + 4 * quarter, logit.value);
            slopes[quarter] = _mm256_cvtpd_ps(logit.slope);
        }
    }
    if (store) store_slopes(slope, slopes, lanes);
}

/* x' of x[0, count) into capped, 16 at a time (lanes past count: x' of 0), and with store their
 * slopes, times SLOPE_SCALE, into slope */
SPECIALISED void cap_batch(double *capped, SCRATCH *restrict slope, const STORAGE *x, int64_t count, double softcap,
                           int store) {
    const softcap4 cap = softcap4_of(softcap, SLOPE_SCALE);
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const floats16 logits = load_block(x + k, lanes);
        __m256d four[4], s[4], near = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
        for (int quarter = 0; quarter < 4; quarter++) {
            const __m256 half = logits.half[quarter / 2];
            const __m128 lanes_of_quarter =
                quarter % 2 ? _mm256_extractf128_ps(half, 1) : _mm256_castps256_ps128(half);
            four[quarter] = _mm256_cvtps_pd(lanes_of_quarter);
            s[quarter] = squared_u(four[quarter], &cap);
            near = _mm256_and_pd(near, near_lanes(s[quarter]));
        }
        if (_mm256_movemask_pd(near) == 0xF)
            cap_block(capped + k, store ? slope + k : NULL, four, s, lanes, &cap, 1, store);
        else
            cap_block(capped + k, store ? slope + k : NULL, four, s, lanes, &cap, 0, store);
    }
}

/* the exps of a block of 16 softcapped logits from their x', in two registers of 8; the four
 * quarters' steps interleaved */
static inline void capped_exps_of_block(__m256 exps[2], const double *capped, __m256d max) {
    softcap4_reduced reduced[4];
    for (int quarter = 0; quarter < 4; quarter++)
        reduced[quarter] = capped_exp4_reduce(_mm256_sub_pd(_mm256_loadu_pd(capped + 4 * quarter), max));
    __m128 quarters[4];
    for (int quarter = 0; quarter < 4; quarter++) quarters[quarter] = capped_exp4_finish(reduced[quarter]);
    for (int half = 0; half < 2; half++) exps[half] = _mm256_set_m128(quarters[2 * half + 1], quarters[2 * half]);
}

/* exp_float_run_with's run in intrinsics, the same bits, for a row vector_exp_avx2.h's exps take (not
 * careful, no softcap; row) or, with a softcap, for x' (capped, as AVX-512's capped_exp16 takes it):
 * blocks of 16 lanes in two registers, the row's last partial block through a buffer. The exps of
 * the call's runs (at most LANE_RUNS, from exp_float_runs; the last may be shorter) are taken
 * together, their first steps before their second (see vector_exp_avx2.h), and each run's sums
 * added as it ends. On Zen 3, one thread, A/B medians: a block at a time took 1.05x the time of a
 * run at a time (8192x1000, 1024x32000); two runs at a time took 0.99x that with out=, 0.92-0.93x
 * for the loss alone. */
SPECIALISED void exp_float_run_in_lanes(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x,
                                        const STORAGE *next_row, int64_t count, int64_t skip, const expf8_row *row,
                                        const double *capped, double max, int store) {
    const __m256i lane_of = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int blocks = (int)((count + PARTIAL_SUMS - 1) / PARTIAL_SUMS);
    __m256 exps[LANE_RUNS * FLOAT_RUN][2];
    if (capped) {
        const __m256d capped_max = _mm256_set1_pd(max);
        for (int b = 0; b < blocks; b++) capped_exps_of_block(exps[b], capped + PARTIAL_SUMS * b, capped_max);
    } else {
        expf8_reduced reduced[LANE_RUNS * FLOAT_RUN][2];
        for (int b = 0; b < blocks; b++) {
            const int64_t k = PARTIAL_SUMS * b;
            const floats16 logits = load_block(x + k, count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS);
            for (int half = 0; half < 2; half++) reduced[b][half] = expf8_reduce(logits.half[half], row);
        }
        for (int b = 0; b < blocks; b++)
            for (int half = 0; half < 2; half++)
                exps[b][half] = expf8_finish(reduced[b][half]);
    }
    __m256 run[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < blocks; b++) {
        const int64_t k = PARTIAL_SUMS * b;
        if (next_row) prefetch_block(next_row + k);
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const int skip_lane = skip >= k && skip < k + PARTIAL_SUMS ? (int)(skip - k) : -1;
        /* (with a softcap, x' of the lanes past count are there too: cap_batch) */
        float terms[PARTIAL_SUMS];
        for (int half = 0; half < 2; half++) {
            __m256 term = exps[b][half];
            if (store) _mm256_storeu_ps(lanes == PARTIAL_SUMS ? e + k + 8 * half : terms + 8 * half, term);
            if (lanes < PARTIAL_SUMS || skip_lane >= 0) { /* lanes past the row's end add 0, as the skipped one */
                const __m256i lane = _mm256_add_epi32(lane_of, _mm256_set1_epi32(8 * half));
                const __m256i kept = _mm256_andnot_si256(_mm256_cmpeq_epi32(lane, _mm256_set1_epi32(skip_lane)),
                                                         _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), lane));
                term = _mm256_and_ps(term, _mm256_castsi256_ps(kept));
            }
            run[half] = _mm256_add_ps(run[half], term);
        }
        if (store && lanes < PARTIAL_SUMS)
            for (int j = 0; j < lanes; j++) e[k + j] = terms[j];
        if (b == FLOAT_RUN - 1 && blocks > FLOAT_RUN) { /* the first run's end */
            float sums_of_run[PARTIAL_SUMS];
            _mm256_storeu_ps(sums_of_run, run[0]);
            _mm256_storeu_ps(sums_of_run + 8, run[1]);
            add_run(sums, sums_of_run);
            run[0] = run[1] = _mm256_setzero_ps();
        }
    }
    float sums_of_run[PARTIAL_SUMS];
    _mm256_storeu_ps(sums_of_run, run[0]);
    _mm256_storeu_ps(sums_of_run + 8, run[1]);
    add_run(sums, sums_of_run);
}
#else
static inline int float_runs_take_softcap(double softcap) { return (void)softcap, 1; }

typedef partial_sums float_run_sums;
#define NO_FLOAT_RUN_SUMS {{0.0}, {0.0}}

static inline void add_run(float_run_sums *sums, const float run[PARTIAL_SUMS]) {
    for (int j = 0; j < PARTIAL_SUMS; j++) add_to_lane(sums, j, run[j]);
}

static inline double float_run_total(const float_run_sums *sums) { return total_of(sums); }

/* x' of a block (lanes of it) into capped, and with store their slopes, times SLOPE_SCALE, into slope;
 * near: every logit is within the softcap (as exp_block) */
SPECIALISED void cap_block(double *capped, SCRATCH *restrict slope, const block_value *x, int lanes, double softcap,
                           int near, int store) {
    const double inverse = 1.0 / softcap;
    for (int j = 0; j < lanes; j++) {
        const double value = block_logit(x[j]);
        const capped_logit logit = near ? softcapped_near(value, inverse) : softcapped(value, softcap);
        capped[j] = logit.value;
        if (store) slope[j] = logit.slope * SLOPE_SCALE;
    }
}

/* x' of x[0, count) into capped, and with store their slopes, times SLOPE_SCALE, into slope */
SPECIALISED void cap_batch(double *capped, SCRATCH *restrict slope, const STORAGE *x, int64_t count, double softcap,
                           int store) {
    block_value buffer[PARTIAL_SUMS];
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const block_value *values = block_values(buffer, x + k, lanes);
        if (within_softcap(values, lanes, softcap))
            cap_block(capped + k, store ? slope + k : NULL, values, lanes, softcap, 1, store);
        else
            cap_block(capped + k, store ? slope + k : NULL, values, lanes, softcap, 0, store);
    }
}
#endif

/* careful: row's (a constant, so that the loop is vectorised for one kind of exp) */
SPECIALISED void exp_float_run_with(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x,
                                    const STORAGE *next_row, int64_t count, int64_t skip, double max,
                                    const float_exp_row *row, const double *capped, int careful, int store) {
    float run[PARTIAL_SUMS] = {0.0f};
    for (int64_t k = 0; k < count; k += PARTIAL_SUMS) {
        if (next_row) prefetch_block(next_row + k);
        const int lanes = count - k < PARTIAL_SUMS ? (int)(count - k) : PARTIAL_SUMS;
        const int skip_lane = skip >= k && skip < k + PARTIAL_SUMS ? (int)(skip - k) : -1; /* see exp_blocks */
        for (int j = 0; j < lanes; j++) {
            float term;
            if (capped) {
                term = expf_of_double(capped[k + j] - max, 0);
            } else {
                const float logit = (float)LOAD(x[k + j]);
                term = row ? expf_of_row_with(logit, row, careful) : exp_difference_in_float(logit, (float)max, 0);
            }
            if (store) e[k + j] = term;
            run[j] += j == skip_lane ? 0.0f : term;
        }
    }
    add_run(sums, run);
}

SPECIALISED void exp_float_run(float_run_sums *sums, SCRATCH *restrict e, const STORAGE *x, const STORAGE *next_row,
                               int64_t count, int64_t skip, double max, const float_exp_row *row,
                               const double *capped, smoothing_sums *smoothing, class_weights weights,
                               streamed_lines *lines, int store) {
    (void)smoothing, (void)weights, (void)lines; /* NULL: FLOAT_EXP types stream no lines without AVX-512 */
#if FLOAT_EXP && defined(__AVX2__) && defined(__FMA__)
    if (capped) { /* (float_runs_take_softcap) */
        exp_float_run_in_lanes(sums, e, x, next_row, count, skip, NULL, capped, max, store);
        return;
    }
    if (row && !row->careful) {
        const expf8_row lanes = expf8_row_of(row);
        exp_float_run_in_lanes(sums, e, x, next_row, count, skip, &lanes, NULL, max, store);
        return;
    }
#endif
    if (row && row->careful)
        exp_float_run_with(sums, e, x, next_row, count, skip, max, row, capped, 1, store);
    else
        exp_float_run_with(sums, e, x, next_row, count, skip, max, row, capped, 0, store);
}
#endif

/* With a softcap (else NULL), x' of the run from k in [begin, end): computed a batch at a time, at
 * the batch's first run (slope: the row's, or NULL) */
SPECIALISED const double *capped_of_run(double capped[CAPPED_BATCH], SCRATCH *restrict slope, const STORAGE *x,
                                        int64_t begin, int64_t k, int64_t end, double softcap, int store) {
    if (softcap == 0) return NULL;
    const int64_t at = (k - begin) % CAPPED_BATCH;
    const int64_t count = end - k < CAPPED_BATCH ? end - k : CAPPED_BATCH;
    if (at == 0) cap_batch(capped, store ? slope + k : NULL, x + k, count, softcap, store);
    return capped + at;
}

/* runs from begin, a multiple of FLOAT_RUN blocks: a block's run position is its parity, which
 * add_smoothing_block_at reads; waiting (or NULL) is written as they go (see WAITING_STEP), or its
 * lines streamed (LINES_IN_EXP_PASS) */
SPECIALISED double exp_float_runs(SCRATCH *restrict e, SCRATCH *restrict slope, const STORAGE *x,
                                  const STORAGE *next_row, waiting_gradient *waiting, int64_t begin, int64_t end,
                                  int64_t skip, double max, const float_exp_row *row, double softcap,
                                  row_smoothing *smoothing, int store) {
    _Static_assert(FLOAT_RUN == 2, "runs of an even and an odd block");
    float_run_sums sums = NO_FLOAT_RUN_SUMS;
    /* the smoothing sums in registers meanwhile (through smoothing, in memory, they made a chain of
     * loads and stores) */
    smoothing_sums smoothing_here = smoothing ? smoothing->sums : (smoothing_sums)SMOOTHING_SUMS_ZERO;
    smoothing_sums *smoothing_sums_of = smoothing ? &smoothing_here : NULL;
    const class_weights weights = smoothing ? smoothing->weights : (class_weights){NULL, NULL};
    const int64_t run = FLOAT_RUN * PARTIAL_SUMS;
    _Static_assert(CAPPED_BATCH % (LANE_RUNS * FLOAT_RUN * PARTIAL_SUMS) == 0, "batches of whole calls");
    _Static_assert(WAITING_STEP % (LANE_RUNS * FLOAT_RUN * PARTIAL_SUMS) == 0, "steps of whole calls");
    double capped[CAPPED_BATCH];
    streamed_lines lines = LINES_IN_EXP_PASS && waiting ? lines_to_stream(waiting) : (streamed_lines){.grad = NULL};
    streamed_lines *lines_of = lines.grad ? &lines : NULL;
/* the call of count classes from k, then what waits written where a step ends there */
#define FLOAT_RUNS_AT(k, count)                                                                                        \
    exp_float_run(&sums, store ? e + (k) : NULL, x + (k), next_row ? next_row + (k) : NULL, count, skip - (k), max,   \
                  row, capped_of_run(capped, slope, x, begin, k, end, softcap, store), smoothing_sums_of,             \
                  weights_from(weights, k), lines_of, store);                                                         \
    if (waiting && !lines_of && ((k) + (count)) % WAITING_STEP == 0) write_waiting_gradient(waiting, (k) + (count))
    /* calls of LANE_RUNS runs where the lanes take them, then of one, then what is left: each
     * specialised */
    int64_t k = begin;
#if LANE_RUNS > 1
    if (softcap > 0 || (row && !row->careful))
        for (; k + LANE_RUNS * run <= end; k += LANE_RUNS * run) {
            FLOAT_RUNS_AT(k, LANE_RUNS * run);
        }
#endif
    for (; k + run <= end; k += run) {
        FLOAT_RUNS_AT(k, run);
    }
    if (k < end) {
        FLOAT_RUNS_AT(k, end - k);
    }
#undef FLOAT_RUNS_AT
    if (lines_of) lines_streamed_until(waiting, lines.next);
    if (smoothing) smoothing->sums = smoothing_here;
    return float_run_total(&sums);
}
