/* smoothing_distance.h: part of kernel_template.h (one copy per logit type and instruction set).
 *
 * D = sum_k w_k (max - x_k) over a row (w all 1 without weights), the label smoothing's share of a
 * class-index row's distance: spread * D. A zero weight adds nothing, even at x_k = -inf. Lane j of
 * the partial sums takes element j of every block, as everywhere in the kernel (the AVX-512 version
 * in two sums per lane, even and odd blocks, so its last bits may differ from the others'). Without a
 * softcap only (x' = x). The exp pass of float32 and bfloat16 logits on AVX-512 takes the same sums
 * in the same order as it goes (FUSED_SMOOTHING; the split path still takes them here): a second
 * read of the row saved, 5-7% of 256x128256 with label smoothing; rows of 1000 classes, read from
 * L1 either way, measured no faster. There the weights are read as floats when every one is a float
 * exactly (class_weights.narrow): the same doubles, half the bytes. */

/* The class weights the smoothing sums read, from some class on: narrow, the weights as floats, or
 * else wide, the doubles; both NULL without weights. With zero (some weight is 0) each term is
 * masked by w_k != 0; without, w_k (max - x_k) is the term as it stands. */
typedef struct {
    const double *wide;
    const float *narrow;
    int zero;
} class_weights;

/* the weights from class k on */
static inline class_weights weights_from(class_weights weights, int64_t k) {
    return (class_weights){weights.wide ? weights.wide + k : NULL, weights.narrow ? weights.narrow + k : NULL,
                           weights.zero};
}

#if defined(LOAD_16_AS_FLOATS_MASKED) && defined(__AVX512F__) /* float-like logits */
/* the terms of 16 logits from x (lanes past the row's end: 0, and not read: a masked load does not
 * fault), added to sums (lanes 0-7 and 8-15) */
static inline void add_smoothing_block(__m512d sums[2], class_weights weights, const STORAGE *x, int64_t left,
                                       __m512d max) {
    const __m512d zero = _mm512_setzero_pd();
    const __mmask16 valid = left >= PARTIAL_SUMS ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    const __m512 logits = LOAD_16_AS_FLOATS_MASKED(valid, x);
    __m512d d[2] = {_mm512_sub_pd(max, _mm512_cvtps_pd(_mm512_castps512_ps256(logits))),
                    _mm512_sub_pd(max, _mm512_cvtps_pd(_mm512_extractf32x8_ps(logits, 1)))};
    const __m512 narrow = weights.narrow ? _mm512_maskz_loadu_ps(valid, weights.narrow) : _mm512_setzero_ps();
    for (int half = 0; half < 2; half++) {
        const __mmask8 lanes = (__mmask8)(valid >> (8 * half));
        if (weights.wide || weights.narrow) { /* w != 0 is true for a NaN weight, as _CMP_NEQ_UQ */
            const __m512d w = weights.narrow ? _mm512_cvtps_pd(half ? _mm512_extractf32x8_ps(narrow, 1)
                                                                    : _mm512_castps512_ps256(narrow))
                                             : _mm512_maskz_loadu_pd(lanes, weights.wide + 8 * half);
            d[half] = weights.zero ? _mm512_maskz_mul_pd(_mm512_cmp_pd_mask(w, zero, _CMP_NEQ_UQ), w, d[half])
                                   : _mm512_mul_pd(w, d[half]);
        }
        sums[half] = _mm512_mask_add_pd(sums[half], lanes, sums[half], d[half]);
    }
}

/* The sums kept in registers (GCC keeps the portable version's partial sums in memory: a
 * load-add-store chain per block, which made this pass as slow as the exp pass), even and odd
 * blocks in sums of their own (one chain of additions waits on the adder's latency); lane j is then
 * its even blocks' sum plus its odd blocks'. */
#define FUSED_SMOOTHING FLOAT_EXP

typedef struct {
    __m512d even[2], odd[2];
} smoothing_sums;

#define SMOOTHING_SUMS_ZERO {{_mm512_setzero_pd(), _mm512_setzero_pd()}, {_mm512_setzero_pd(), _mm512_setzero_pd()}}

/* the block of 16 logits at x, class k of the row (k a multiple of 16, left of them in the row),
 * added to its sums */
static inline void add_smoothing_block_at(smoothing_sums *sums, class_weights weights, const STORAGE *x, int64_t k,
                                          int64_t left, __m512d max) {
    add_smoothing_block((k / PARTIAL_SUMS) % 2 ? sums->odd : sums->even, weights_from(weights, k), x, left, max);
}

static double smoothing_total(const smoothing_sums *sums) {
    partial_sums lanes = {{0.0}, {0.0}};
    _mm512_storeu_pd(lanes.sum, _mm512_add_pd(sums->even[0], sums->odd[0]));
    _mm512_storeu_pd(lanes.sum + 8, _mm512_add_pd(sums->even[1], sums->odd[1]));
    return total_of(&lanes);
}

SPECIALISED double smoothing_distance_of(const double *weight, int zero_weight, const STORAGE *x, int64_t n_classes,
                                         double max) {
    const __m512d m = _mm512_set1_pd(max);
    const class_weights weights = {weight, NULL, zero_weight};
    smoothing_sums sums = SMOOTHING_SUMS_ZERO;
    int64_t k = 0;
    for (; k + 2 * PARTIAL_SUMS <= n_classes; k += 2 * PARTIAL_SUMS) {
        add_smoothing_block(sums.even, weights_from(weights, k), x + k, PARTIAL_SUMS, m);
        add_smoothing_block(sums.odd, weights_from(weights, k + PARTIAL_SUMS), x + k + PARTIAL_SUMS, PARTIAL_SUMS, m);
    }
    for (; k < n_classes; k += PARTIAL_SUMS) add_smoothing_block_at(&sums, weights, x + k, k, n_classes - k, m);
    return smoothing_total(&sums);
}
#else
#define FUSED_SMOOTHING 0
typedef partial_sums smoothing_sums; /* not taken in the exp pass here */
#define SMOOTHING_SUMS_ZERO {{0.0}, {0.0}}
static double smoothing_total(const smoothing_sums *sums) { return total_of(sums); }

#if FLOAT_EXP && defined(__AVX2__)
/* The portable loop's sums (below; for float-like logits a block at a time, in plain double) in AVX2
 * registers, lanes 4j to 4j + 3 in sums[j], the same bits but for the sign of a NaN sum (a row
 * mixing NaNs of both signs: the additions' operands come in another order): GCC kept the portable
 * sums in memory, a load-add-store chain per block. A block's lanes from lanes on (the row's last
 * block) add +0, which changes no sum (none is -0), and their weights are not read. zero_weight:
 * some weight is 0, whose terms are masked (max - x_k may be infinite); calls without one skip the
 * mask (Zen 3, one thread, weights with smoothing, A/B medians of the whole call: 8192x1000 0.90,
 * 256x128256 0.96; an FMA for the product and sum measured 0.99 of that, not kept for the bits). */
SPECIALISED void add_smoothing_block(__m256d sums[PARTIAL_SUMS / 4], const double *weight, int zero_weight,
                                     floats16 logits, int lanes, __m256d max) {
    const __m256d zero = _mm256_setzero_pd();
    for (int j = 0; j < PARTIAL_SUMS / 4; j++) {
        const __m256 eight = logits.half[j / 2];
        const __m128 four = j % 2 ? _mm256_extractf128_ps(eight, 1) : _mm256_castps256_ps128(eight);
        __m256d distance = _mm256_sub_pd(max, _mm256_cvtps_pd(four));
        const __m256i valid =
            _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes - 4 * j), _mm256_setr_epi64x(0, 1, 2, 3));
        if (lanes < PARTIAL_SUMS) distance = _mm256_and_pd(_mm256_castsi256_pd(valid), distance);
        if (!weight) {
            sums[j] = _mm256_add_pd(sums[j], distance);
            continue;
        }
        const __m256d w =
            lanes == PARTIAL_SUMS ? _mm256_loadu_pd(weight + 4 * j) : _mm256_maskload_pd(weight + 4 * j, valid);
        /* w != 0 is true for a NaN weight, as _CMP_NEQ_UQ */
        if (zero_weight) distance = _mm256_and_pd(_mm256_cmp_pd(w, zero, _CMP_NEQ_UQ), distance);
        sums[j] = _mm256_add_pd(sums[j], _mm256_mul_pd(w, distance));
    }
}

SPECIALISED double smoothing_distance_of(const double *weight, int zero_weight, const STORAGE *x, int64_t n_classes,
                                         double max) {
    const __m256d m = _mm256_set1_pd(max), zero = _mm256_setzero_pd();
    __m256d sums[PARTIAL_SUMS / 4] = {zero, zero, zero, zero};
    int64_t k = 0;
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS)
        add_smoothing_block(sums, weight ? weight + k : NULL, zero_weight, LOAD_16_AS_FLOATS(x + k), PARTIAL_SUMS, m);
    if (k < n_classes) {
        const int lanes = (int)(n_classes - k);
        add_smoothing_block(sums, weight ? weight + k : NULL, zero_weight, load_block(x + k, lanes), lanes, m);
    }
    partial_sums lanes = {{0.0}, {0.0}};
    for (int j = 0; j < PARTIAL_SUMS / 4; j++) _mm256_storeu_pd(lanes.sum + 4 * j, sums[j]);
    return total_of(&lanes);
}
#else
/* blocks whole blocks, or the last one (lanes < PARTIAL_SUMS): the weights (or NULL) and logits from
 * the first block's start; each lane's terms added in plain double first (see COMPENSATED_RUN);
 * zero_weight: some weight is 0, whose terms are masked (max - x_k may be infinite) */
SPECIALISED void smoothing_blocks(partial_sums *sums, const double *weight, int zero_weight, const block_value *x,
                                  int lanes, int blocks, double max) {
    for (int j = 0; j < lanes; j++) {
        double lane_sum = 0.0;
        for (int b = 0; b < blocks; b++) {
            const int i = b * PARTIAL_SUMS + j;
            /* the product selected, not computed in the select: GCC 12's AVX2 vectoriser paired the
             * w != 0 masks of `w != 0 ? w * d : 0` with the wrong lanes (a zero weight in lane j < 8
             * left out lane j + 8's term instead) */
            const double w = weight ? weight[i] : 1.0, term = w * (max - block_logit(x[i]));
            lane_sum += !zero_weight || w != 0 ? term : 0.0;
        }
        add_to_lane(sums, j, lane_sum);
    }
}

SPECIALISED double smoothing_distance_of(const double *weight, int zero_weight, const STORAGE *x, int64_t n_classes,
                                         double max) {
    partial_sums sums = {{0.0}, {0.0}};
    block_value buffer[PARTIAL_SUMS];
    const int64_t run = COMPENSATED_RUN * PARTIAL_SUMS;
    int64_t k = 0;
    for (; k + run <= n_classes; k += run)
        smoothing_blocks(&sums, weight ? weight + k : NULL, zero_weight, block_values(buffer, x + k, PARTIAL_SUMS),
                         PARTIAL_SUMS, COMPENSATED_RUN, max);
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS) /* what is left of a run */
        smoothing_blocks(&sums, weight ? weight + k : NULL, zero_weight, block_values(buffer, x + k, PARTIAL_SUMS),
                         PARTIAL_SUMS, 1, max);
    smoothing_blocks(&sums, weight ? weight + k : NULL, zero_weight, block_values(buffer, x + k, (int)(n_classes - k)),
                     (int)(n_classes - k), 1, max);
    return total_of(&sums);
}
#endif
#endif

/* zero_weight: some weight is 0 (each term then masked by w_k != 0) */
static double smoothing_distance(const double *weight, int zero_weight, const STORAGE *x, int64_t n_classes,
                                 double max) {
    if (!weight) return smoothing_distance_of(NULL, 0, x, n_classes, max);
    return zero_weight ? smoothing_distance_of(weight, 1, x, n_classes, max)
                       : smoothing_distance_of(weight, 0, x, n_classes, max);
}
