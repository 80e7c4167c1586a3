/* kernel_targets.h: the call's constants, and what each row is asked to predict: its target
 * coefficients c_k and their sums;
 * part of kernel_template.h, which includes the parts in order. */

/* Per-call constants of the cross-entropy. */
typedef struct {
    int64_t n_classes;
    double softcap, z_loss;
    double weight_total; /* sum of the class weights (K without weights) */
    int zero_weight;     /* with label smoothing, its one reader: some class weight is 0 (class_weights.zero) */
    int stream_gradient; /* write the gradient past the caches (see STREAM_MIN_BYTES) */
    /* (K) w_k spread target for class-index rows with weights and smoothing when every row has the
     * same upstream gradient, else NULL: read instead of the double weights, half the bytes for float
     * exps (large K reads them from L3 for every row) and the same values rounded the same way */
    const SCRATCH *spread_weights;
    /* (K) the class weights as floats where label smoothing's sums take them in the exp pass
     * (FUSED_SMOOTHING) and every one is a float exactly, else NULL: half the bytes again, where a
     * row's logits, exps and the previous row's exps fill L2 with the spread weights (256x128256,
     * one thread, out=, A/B medians: 47.4 -> 40.9 ms, the plain pass 28.9) */
    const float *narrow_weights;
} call_constants;

/* What one row is asked to predict, as the coefficients c_k of (lse - x'_k) in its loss:
 *   class index y:  c_k = w_k * spread + [k == y] * on_target, on_target = (1 - eps) w_y
 *   probabilities:  c_k = w_k * (keep * t_k + spread),          keep = 1 - eps
 * with spread = eps / K (label smoothing) and w the class weights (all 1 when NULL). */
typedef struct {
    int64_t index;        /* the class index, or -1 for a probability row */
    const TARGET *prob;   /* (K) the probability row, or NULL */
    double on_target;     /* (1 - eps) w_y */
    double keep;          /* 1 - eps */
    double spread;        /* eps / K */
    const double *weight; /* (K) or NULL */
    const TARGET *next_prob; /* (K) the next row's probabilities, to prefetch, or NULL */
} row_target;

/* c_k from its parts: t is 0 in a class-index row (keep t + spread is then exactly spread), and
 * at_index says whether k is its class */
static inline double coefficient_of(double w, double keep, double t, double spread, int at_index, double on_target) {
    return w * (keep * t + spread) + (at_index ? on_target : 0.0);
}

/* c_k, whether the row has weights and probabilities given as constants in loops over k (see
 * FOR_TARGET_ARRAYS) */
SPECIALISED double coefficient_with(const row_target *target, int64_t k, int with_weight, int with_prob) {
    return coefficient_of(with_weight ? target->weight[k] : 1.0, target->keep, with_prob ? target->prob[k] : 0.0,
                          target->spread, k == target->index, target->on_target);
}

static inline double coefficient(const row_target *target, int64_t k) {
    return coefficient_with(target, k, target->weight != NULL, target->prob != NULL);
}

/* expression(with_weight, with_prob) with both constants, for a loop of coefficient_with: with the
 * pointers tested inside the loop, GCC reads through a NULL one with masked loads, and a masked
 * load whose masked-off lanes would fault costs an assist of hundreds of cycles (bfloat16's
 * softcapped gradient ran 30x slower than float32's) */
#define FOR_TARGET_ARRAYS(target, expression)                                                                          \
    ((target)->weight ? ((target)->prob ? expression(1, 1) : expression(1, 0))                                       \
                      : ((target)->prob ? expression(0, 1) : expression(0, 0)))

/* The target of row n; 0 when the row is ignored. */
static int target_of_row(row_target *target, const sce_params *params, const int64_t *target_index,
                         const TARGET *target_prob, int64_t n) {
    const double eps = params->label_smoothing;
    *target = (row_target){-1, NULL, 0.0, 1.0 - eps, eps / (double)params->n_classes, params->weight, NULL};
    if (!target_index) {
        target->prob = target_prob + n * params->n_classes;
        if (n + 1 < params->n_rows) target->next_prob = target->prob + params->n_classes;
        return 1;
    }
    if (target_index[n] == params->ignore_index) return 0;
    target->index = target_index[n];
    target->on_target = (1.0 - eps) * (params->weight ? params->weight[target->index] : 1.0);
    if (eps == 0) target->weight = NULL; /* no class but y has a share: an inf or NaN weight elsewhere adds nothing */
    return 1;
}

/* The parts of a row's loss that depend on its target:
 *   distance = sum_k c_k (max - x'_k), every term >= 0; a zero c_k adds nothing, even at -inf
 *   total    = T = sum_k c_k */
typedef struct {
    double distance;
    double total;
} target_sums;

/* the block of lanes classes from begin; x from there too */
SPECIALISED void target_block(partial_sums *distance, partial_sums *total, const row_target *target,
                              const block_value *x, int64_t begin, int lanes, double max, double softcap,
                              int with_weight, int with_prob) {
    for (int j = 0; j < lanes; j++) {
        const double c = coefficient_with(target, begin + j, with_weight, with_prob);
        add_to_lane(total, j, c);
        add_to_lane(distance, j, c != 0 ? c * (max - capped(block_logit(x[j]), softcap)) : 0.0);
    }
}

SPECIALISED target_sums target_sum_blocks(const row_target *target, const STORAGE *x, int64_t n_classes,
                                          double max, double softcap, int with_weight, int with_prob) {
    partial_sums distance = {{0.0}, {0.0}}, total = {{0.0}, {0.0}};
    block_value buffer[PARTIAL_SUMS];
    int64_t k = 0;
    for (; k + PARTIAL_SUMS <= n_classes; k += PARTIAL_SUMS) {
        /* the probabilities come from memory here, the logits from cache (see prefetch_block) */
        if (with_prob && target->next_prob) prefetch_bytes(target->next_prob + k, PARTIAL_SUMS * sizeof(TARGET));
        target_block(&distance, &total, target, block_values(buffer, x + k, PARTIAL_SUMS), k, PARTIAL_SUMS, max,
                     softcap, with_weight, with_prob);
    }
    target_block(&distance, &total, target, block_values(buffer, x + k, (int)(n_classes - k)), k,
                 (int)(n_classes - k), max, softcap, with_weight, with_prob);
    return (target_sums){total_of(&distance), total_of(&total)};
}

#if defined(__AVX2__) && !defined(__AVX512F__) && defined(LOAD_16_AS_FLOATS)
#define PROB_TARGET_SUMS_IN_LANES 1
_Static_assert(!COMPENSATED_SUMS, "float-like logits' lane sums are plain");

/* target_sum_blocks' sums for a probability row without a softcap in AVX2 registers, lanes 4j to 4j
 * + 3 in [j], the same bits: GCC kept the portable loop's sums in memory (a load-add-store chain
 * per block, and the pass took about as long as the exp pass on Zen 3). Its c_k is w (keep t +
 * spread) as coefficient_with's but for its + 0.0, which only turns a -0 into +0; neither changes
 * the sums, which start at +0 (and a sum from +0 is never -0), nor c_k != 0. So without smoothing
 * (keep 1, spread 0) c_k is w t. A lane past the row's end adds +0. */
SPECIALISED target_sums prob_target_sums(const row_target *target, const STORAGE *x, int64_t n_classes, double max,
                                         int with_weight, int with_smoothing) {
    const __m256d zero = _mm256_setzero_pd(), m = _mm256_set1_pd(max);
    const __m256d keep = _mm256_set1_pd(target->keep), spread = _mm256_set1_pd(target->spread);
    __m256d distance[PARTIAL_SUMS / 4] = {zero, zero, zero, zero}, total[PARTIAL_SUMS / 4] = {zero, zero, zero, zero};
    for (int64_t k = 0; k < n_classes; k += PARTIAL_SUMS) {
        /* the probabilities come from memory here, the logits from cache (see prefetch_block) */
        if (target->next_prob) prefetch_bytes(target->next_prob + k, PARTIAL_SUMS * sizeof(TARGET));
        const int lanes = n_classes - k < PARTIAL_SUMS ? (int)(n_classes - k) : PARTIAL_SUMS;
        const floats16 logits = load_block(x + k, lanes);
        float t_block[PARTIAL_SUMS];
        if (lanes < PARTIAL_SUMS)
            for (int j = 0; j < PARTIAL_SUMS; j++) t_block[j] = j < lanes ? target->prob[k + j] : 0.0f;
        const floats16 t = load_16_floats(lanes == PARTIAL_SUMS ? target->prob + k : t_block);
        for (int j = 0; j < PARTIAL_SUMS / 4; j++) {
            const __m256i valid =
                _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes - 4 * j), _mm256_setr_epi64x(0, 1, 2, 3));
            const __m128 t4 = j % 2 ? _mm256_extractf128_ps(t.half[j / 2], 1) : _mm256_castps256_ps128(t.half[j / 2]);
            const __m128 x4 =
                j % 2 ? _mm256_extractf128_ps(logits.half[j / 2], 1) : _mm256_castps256_ps128(logits.half[j / 2]);
            __m256d c = _mm256_cvtps_pd(t4);
            if (with_smoothing) c = _mm256_add_pd(_mm256_mul_pd(keep, c), spread);
            if (with_weight) { /* (no pointer past the row's end is formed: a quarter past it reads none) */
                const double *w = target->weight + k + (4 * j < lanes ? 4 * j : 0);
                c = _mm256_mul_pd(lanes == PARTIAL_SUMS ? _mm256_loadu_pd(w) : _mm256_maskload_pd(w, valid), c);
            }
            /* c != 0 is true for a NaN c, as _CMP_NEQ_UQ */
            __m256d term = _mm256_and_pd(_mm256_cmp_pd(c, zero, _CMP_NEQ_UQ),
                                         _mm256_mul_pd(c, _mm256_sub_pd(m, _mm256_cvtps_pd(x4))));
            if (lanes < PARTIAL_SUMS) {
                c = _mm256_and_pd(_mm256_castsi256_pd(valid), c);
                term = _mm256_and_pd(_mm256_castsi256_pd(valid), term);
            }
            total[j] = _mm256_add_pd(total[j], c);
            distance[j] = _mm256_add_pd(distance[j], term);
        }
    }
    partial_sums distances = {{0.0}, {0.0}}, totals = {{0.0}, {0.0}};
    for (int j = 0; j < PARTIAL_SUMS / 4; j++) {
        _mm256_storeu_pd(distances.sum + 4 * j, distance[j]);
        _mm256_storeu_pd(totals.sum + 4 * j, total[j]);
    }
    return (target_sums){total_of(&distances), total_of(&totals)};
}
#else
#define PROB_TARGET_SUMS_IN_LANES 0
#endif

/* A class index has T = on_target + spread W (W the weights' sum) and distance on_target (max - x'_y)
 * + spread D (smoothing_distance.h, without a softcap; from smoothing when the exp pass took it) */
static target_sums sum_over_target(const row_target *target, const STORAGE *x, const call_constants *call,
                                   double max, const row_smoothing *smoothing) {
    const int64_t n_classes = call->n_classes;
    const double softcap = call->softcap;
    if (!target->prob && (target->spread == 0 || softcap == 0)) {
        const double c = target->on_target;
        const double on_index = c != 0 ? c * (max - capped_value(LOAD(x[target->index]), softcap)) : 0.0;
        if (target->spread == 0) return (target_sums){on_index, c};
        const double distance =
            smoothing ? smoothing_total(&smoothing->sums)
                      : smoothing_distance(target->weight, call->zero_weight, x, n_classes, max);
        return (target_sums){on_index + target->spread * distance, c + target->spread * call->weight_total};
    }
#if PROB_TARGET_SUMS_IN_LANES
    if (target->prob && softcap == 0) {
        const int smoothed = target->keep != 1 || target->spread != 0;
#define PROB_TARGET_SUMS(with_weight, with_smoothing)                                                                  \
    prob_target_sums(target, x, n_classes, max, with_weight, with_smoothing)
        if (smoothed) return target->weight ? PROB_TARGET_SUMS(1, 1) : PROB_TARGET_SUMS(0, 1);
        return target->weight ? PROB_TARGET_SUMS(1, 0) : PROB_TARGET_SUMS(0, 0);
#undef PROB_TARGET_SUMS
    }
#endif
#define TARGET_SUMS(with_weight, with_prob)                                                                             \
    (softcap > 0 ? target_sum_blocks(target, x, n_classes, max, softcap, with_weight, with_prob)                      \
                 : target_sum_blocks(target, x, n_classes, max, 0.0, with_weight, with_prob))
    return FOR_TARGET_ARRAYS(target, TARGET_SUMS);
#undef TARGET_SUMS
}
