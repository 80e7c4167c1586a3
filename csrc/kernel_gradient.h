/* kernel_gradient.h: a row's gradient: its factors, its values (their element formulas:
 * kernel_alongside_exps.h) and their writing (streamed past the caches for large outputs, or
 * waiting for the next row's exp pass);
 * part of kernel_template.h, which includes the parts in order. */

/* out[j] = scaled_minus(e[j], factor, c_j) for j < count, c_j = c[j], or c_constant where c is NULL
 * (with c_constant +0 that is scaled's value: e lo - +0 changes no bit; e lo - -0 turns -0 to +0).
 * With ROUND_16_FLOATS (bfloat16 on avx512bf16) in intrinsics, 16 values rounded at a time. */
#ifdef ROUND_16_FLOATS
#if !FLOAT_EXP || !defined(__FMA__)
#error "ROUND_16_FLOATS takes float exps and the FMA form of scaling"
#endif
/* 16 values from 16 e and c (masked: lanes past a row's end are not read or written) */
SPECIALISED void scaled_minus_16(STORAGE *out, const SCRATCH *e, __m512 hi, __m512 lo, const SCRATCH *c,
                                 __m512 c_constant, __mmask16 valid) {
    const __m512 e16 = valid == 0xFFFF ? _mm512_loadu_ps(e) : _mm512_maskz_loadu_ps(valid, e);
    const __m512 c16 = !c ? c_constant : valid == 0xFFFF ? _mm512_loadu_ps(c) : _mm512_maskz_loadu_ps(valid, c);
    const __m256i rounded = ROUND_16_FLOATS(_mm512_fmadd_ps(e16, hi, _mm512_fmsub_ps(e16, lo, c16)));
    if (valid == 0xFFFF)
        _mm256_storeu_si256((__m256i *)out, rounded);
    else
        _mm256_mask_storeu_epi16(out, valid, rounded);
}

SPECIALISED void scaled_minus_values(STORAGE *out, const SCRATCH *e, scaling factor, const SCRATCH *c,
                                     double c_constant, int64_t count) {
    const __m512 hi = _mm512_set1_ps(factor.hi), lo = _mm512_set1_ps(factor.lo);
    const __m512 constant = _mm512_set1_ps((float)c_constant);
    int64_t j = 0;
    for (; j + 16 <= count; j += 16) scaled_minus_16(out + j, e + j, hi, lo, c ? c + j : NULL, constant, 0xFFFF);
    if (j < count)
        scaled_minus_16(out + j, e + j, hi, lo, c ? c + j : NULL, constant, (__mmask16)((1u << (count - j)) - 1));
}
#else
/* one value at a time (GCC vectorises the loops) */
SPECIALISED void scaled_minus_each(STORAGE *out, const SCRATCH *e, scaling factor, const SCRATCH *c,
                                   double c_constant, int64_t count) {
    if (c) /* separate loops: see FOR_TARGET_ARRAYS */
        for (int64_t j = 0; j < count; j++) out[j] = scaled_minus(e[j], factor, c[j]);
    else if (c_constant != 0 || signbit(c_constant))
        for (int64_t j = 0; j < count; j++) out[j] = scaled_minus(e[j], factor, c_constant);
    else
        for (int64_t j = 0; j < count; j++) out[j] = scaled(e[j], factor);
}

/* With SCALED_MINUS_16 (bfloat16 and float16 on AVX2), 16 values at a time in intrinsics, then the rest */
SPECIALISED void scaled_minus_values(STORAGE *out, const SCRATCH *e, scaling factor, const SCRATCH *c,
                                     double c_constant, int64_t count) {
    int64_t j = 0;
#ifdef SCALED_MINUS_16
    for (; j + 16 <= count; j += 16) SCALED_MINUS_16(out + j, e + j, factor, c ? c + j : NULL, c_constant);
#endif
    scaled_minus_each(out + j, e + j, factor, c ? c + j : NULL, c_constant, count - j);
}
#endif

/* A gradient of at least this size is written past the caches (stream_store.h): it would not stay
 * in them anyway (the last-level cache here is 32 MiB, shared), and streaming saves the read for
 * ownership of each line: 1024x32000 float32 on one thread 0.47 -> 0.42 ns per element, 8192x1000
 * unchanged (measured). So are softmax's and log_softmax's outputs.
 * Not rows of fewer than STREAM_MIN_ROW_BYTES that share lines with their neighbours (rows not a
 * whole number of lines, or out not on a line): the shared lines take normal stores, whose reads
 * for ownership then wait behind the streamed lines. Written with normal stores only, float32 out=
 * from np.empty_like (16 bytes past a line), one thread, A/B medians: 128000x64 32.0 -> 20.4 ms,
 * 63503x129 23.3 -> 15.0 (no longer pipelined), 32000x256 17.2 -> 12.1; at 512 classes the two
 * were about the same, from 1000 streaming was faster (5.8 against 8.4 ms at 8192x1000), and so it
 * was for rows of whole lines on a line. */
#define STREAM_MIN_BYTES (16.0 * 1024 * 1024)
#define STREAM_MIN_ROW_BYTES 2048

static int streams_output(const STORAGE *out, int64_t n_rows, int64_t n_classes) {
    const int64_t row_bytes = (int64_t)sizeof(STORAGE) * n_classes;
    const int whole_lines = (uintptr_t)out % CACHE_LINE == 0 && row_bytes % CACHE_LINE == 0;
    return (double)row_bytes * (double)n_rows >= STREAM_MIN_BYTES && (whole_lines || row_bytes >= STREAM_MIN_ROW_BYTES);
}

/* The gradient of a row is grad_k = slope_k (e_k probability - c_k target) but at the argmax, with
 * e_k = exp(x'_k - max) and slope_k the softcap's derivative:
 *   probability = (T ce_scale + 2 z lse z_scale) / sum, target = ce_scale. */
typedef struct {
    double probability, target;
    double at_argmax;   /* grad_a / slope_a */
    int float_products; /* whether scaled()'s float products take them (fits_float; tiny_products) */
} gradient_factors;

/* A mean over nothing (rows counted, but of total weight 0) is NaN, and so is its gradient, as in
 * PyTorch; rows ignored keep their zero gradient (so every row ignored gives a zero gradient). */
static inline double mean_scale(double upstream, double denominator) {
    return denominator != 0 ? upstream / denominator : NAN;
}

/* A mean's scales of the gradient (upstream / denominator), else the upstream gradient. */
typedef struct {
    double ce, z;
} gradient_scales;

static inline gradient_scales scales_of(double upstream, const sce_result *result, int reduction) {
    if (reduction != SCE_MEAN) return (gradient_scales){upstream, upstream};
    return (gradient_scales){mean_scale(upstream, result->ce_denominator), mean_scale(upstream, result->z_denominator)};
}

static inline double upstream_of_row(const sce_params *params, int64_t n) {
    return params->row_grad_scale ? params->row_grad_scale[n] : params->grad_scale;
}

/* The factors from a row's statistics, its target total T, c_a and others = T - c_a (see below). */
static inline gradient_factors factors_of(double rest, double inverse_sum, double lse, double total, double c_a,
                                          double others, gradient_scales scales, double z_loss) {
    const double sum = 1.0 + rest;
    const double z_part = 2.0 * z_loss * lse * scales.z;
    /* p_a T - c_a = ((T - c_a) - c_a rest) / sum, free of the cancellation of p_a T against c_a
     * when p_a is near 1. FLOAT_EXP types multiply by inverse_sum = 1 / sum (rounded), which the
     * few-classes path shares with log1p: divisions were a tenth of its time, and a double's extra
     * rounding, 2^-53, is far below the float precision of their results. */
    gradient_factors factors;
    if (FLOAT_EXP)
        factors = (gradient_factors){(total * scales.ce + z_part) * inverse_sum, scales.ce,
                                     ((others - c_a * rest) * inverse_sum) * scales.ce + z_part * inverse_sum, 0};
    else
        factors = (gradient_factors){(total * scales.ce + z_part) / sum, scales.ce,
                                     ((others - c_a * rest) / sum) * scales.ce + z_part / sum, 0};
    factors.float_products = fits_float(factors.probability) && fits_float(factors.target);
    return factors;
}

/* T - c_a; for a class index on the argmax exactly spread * (W - w_a), W the sum of the weights
 * (0 without smoothing, whatever the weights) */
static inline double others_than_argmax(double total, double c_a, int argmax_is_index, double spread,
                                        double weight_total, double w_a) {
    if (!argmax_is_index) return total - c_a;
    return spread != 0 ? spread * (weight_total - w_a) : 0.0;
}

/* The row's lse where a z-loss needs it (its term and gradient), else 0: the row path and the split
 * path give the same z-loss terms (0, also for a NaN row) without a z-loss. */
static inline double lse_for_z_loss(const call_constants *call, const row_stats *stats) {
    return call->z_loss != 0 ? stats->max + log1p_of_nonnegative(stats->rest) : 0.0;
}

/* lse counts only with a z-loss (0 will do without) */
static gradient_factors factors_of_row(const row_target *target, const row_stats *stats, double lse, double total,
                                       const sce_result *result, const sce_params *params, const call_constants *call,
                                       int64_t n) {
    const int64_t a = stats->argmax;
    const double c_a = coefficient(target, a);
    const double others = others_than_argmax(total, c_a, a == target->index, target->spread, call->weight_total,
                                             target->weight ? target->weight[a] : 1.0);
    gradient_factors factors = factors_of(stats->rest, 1.0 / (1.0 + stats->rest), lse, total, c_a, others,
                                          scales_of(upstream_of_row(params, n), result, params->reduction),
                                          call->z_loss);
    factors.float_products &= !tiny_products(stats->min, stats->max, factors.probability);
    return factors;
}

/* The targets gradient_values has a loop of its own for. A class index without a softcap has grad_j
 * = e_j probability - w_j spread target but at the index and the argmax, which are patched after;
 * probabilities without a softcap, grad_j = e_j probability - c_j target but at the argmax. */
enum { ANY_TARGET, INDEX_TARGET /* and no smoothing */, SMOOTHED_INDEX_TARGET, PROB_TARGET };

#if FLOAT_EXP && defined(__AVX2__) && !defined(__AVX512F__)
#define PROB_COEFFICIENTS_IN_LANES 1
/* prob_coefficients' values for j < count, a multiple of 4, in AVX2 intrinsics (GCC compared every
 * k with the row's class index, -1, and packed each vector's fits_float flags); whether all fit.
 * Without smoothing (keep 1, spread 0) keep t + spread is t but for the sign of a zero t, which the +
 * 0.0 after makes +0 either way. */
SPECIALISED int prob_coefficients_in_lanes(SCRATCH *restrict c, const row_target *target, double target_scale,
                                           int64_t k, int64_t count, int with_weight, int with_smoothing) {
    const __m256d keep = _mm256_set1_pd(target->keep), spread = _mm256_set1_pd(target->spread);
    const __m256d scale = _mm256_set1_pd(target_scale), zero = _mm256_setzero_pd();
    const __m256d magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX)), largest = _mm256_set1_pd(FLT_MAX);
    __m256d beyond = zero; /* lanes of values beyond float's range, or NaN (_CMP_NLE_UQ) */
    for (int64_t j = 0; j < count; j += 4) {
        const __m256d t = _mm256_cvtps_pd(_mm_loadu_ps(target->prob + k + j));
        __m256d value = with_smoothing ? _mm256_add_pd(_mm256_mul_pd(keep, t), spread) : t;
        if (with_weight) value = _mm256_mul_pd(_mm256_loadu_pd(target->weight + k + j), value);
        value = _mm256_mul_pd(_mm256_add_pd(value, zero), scale); /* (+ 0.0 as coefficient_of's) */
        beyond = _mm256_or_pd(beyond, _mm256_cmp_pd(_mm256_and_pd(value, magnitude), largest, _CMP_NLE_UQ));
        _mm_storeu_ps(c + j, _mm256_cvtpd_ps(value));
    }
    return _mm256_movemask_pd(beyond) == 0;
}
#else
#define PROB_COEFFICIENTS_IN_LANES 0
#endif

/* c_j target_scale of a probability row into c (rounded to SCRATCH, as scaled_minus rounds it),
 * j < count; whether every one fits float (fits_float) */
SPECIALISED int prob_coefficients(SCRATCH *restrict c, const row_target *target, double target_scale, int64_t k,
                                  int64_t count, int with_weight) {
    int64_t j = 0;
    int fits = 1;
#if PROB_COEFFICIENTS_IN_LANES
    j = count / 4 * 4;
    fits = target->keep != 1 || target->spread != 0
               ? prob_coefficients_in_lanes(c, target, target_scale, k, j, with_weight, 1)
               : prob_coefficients_in_lanes(c, target, target_scale, k, j, with_weight, 0);
#endif
    for (; j < count; j++) {
        const double value = coefficient_with(target, k + j, with_weight, 1) * target_scale;
        fits &= fits_float(value);
        c[j] = (SCRATCH)value;
    }
    return fits;
}

/* e_j probability - c_j target_scale for a probability row, j < count (scaled_minus: float32's
 * products in float, as the smoothed index's), PROB_BATCH at a time: the coefficients first, then
 * scaled_minus_values' loop (in one loop GCC kept float and double lanes side by side). Not where
 * FLOAT_EXP types' scaled_minus takes c in double (no FMA: the baseline build), whose c rounded to a
 * float SCRATCH first would change the values: one loop there. */
#define PROB_BATCH 512
SPECIALISED int prob_target_values(STORAGE *out, const SCRATCH *restrict e, scaling probability,
                                   const row_target *target, double target_scale, int64_t k, int64_t count,
                                   int with_weight) {
    int fits = 1;
#if FLOAT_EXP && !defined(__FMA__) && !defined(__aarch64__)
    for (int64_t j = 0; j < count; j++) {
        const double c = coefficient_with(target, k + j, with_weight, 1) * target_scale;
        fits &= fits_float(c);
        out[j] = scaled_minus(e[j], probability, c);
    }
#else
    SCRATCH c[PROB_BATCH];
    for (int64_t j = 0; j < count; j += PROB_BATCH) {
        const int64_t n = count - j < PROB_BATCH ? count - j : PROB_BATCH;
        fits &= prob_coefficients(c, target, target_scale, k + j, n, with_weight);
        scaled_minus_values(out + j, e + j, probability, c, 0.0, n);
    }
#endif
    return fits;
}

/* grad_j = slope_j (e_j probability - c_j target), j < count, the general case of gradient_values */
SPECIALISED void any_target_values(STORAGE *out, const SCRATCH *restrict e, const SCRATCH *restrict slope,
                                   const row_target *target, gradient_factors factors, int64_t k, int64_t count,
                                   int with_softcap, int with_weight, int with_prob) {
    for (int64_t j = 0; j < count; j++) {
        const double g = e[j] * factors.probability - coefficient_with(target, k + j, with_weight, with_prob) * factors.target;
        out[j] = STORE(with_softcap ? g * (slope[j] / SLOPE_SCALE) : g);
    }
}

/* any_target_values' values for a lone class index with a softcap off its index, c_j = +0 (0 target
 * keeps their sign of zero) without computing c_j: the same bits (the whole call's A/B medians on
 * Zen 3, 8192x1000 and 256x128256: 0.93-0.97) */
SPECIALISED void capped_index_values(STORAGE *out, const SCRATCH *restrict e, const SCRATCH *restrict slope,
                                     gradient_factors factors, int64_t count) {
    const double zero_target = 0.0 * factors.target;
    for (int64_t j = 0; j < count; j++)
        out[j] = STORE((e[j] * factors.probability - zero_target) * (slope[j] / SLOPE_SCALE));
}

#if defined(STORAGE_IS_FLOAT) && defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define CAPPED_INDEX_IN_FLOAT 1
/* capped_index_values' values in float lanes (float32 on AVX2), each where that is as accurate:
 * g_j = a_j (probability 2^-63), a_j = (e_j slope_j SLOPE_SCALE) 2^-63, the first product rounded
 * once and its scaling exact where e_j slope_j SLOPE_SCALE >= 2^-62, the second rounded once from
 * probability 2^-63 in two floats (hi normal and a_j hi finite: see capped_index_in_float): about one
 * rounding more than the double loop's, inside the 8 eps bound. Where that product is smaller, or
 * |g_j| < 2^-100 (where the low part's absolute error could show), or either is NaN, the element
 * takes the double loop's value. Each element's path is its own, so the bits do not depend on where
 * the row is split. */
static inline int capped_index_in_float(double probability) {
    return fabs(probability) >= 0x1p-60 && fabs(probability) <= 0x1p126;
}

/* one element's float value, or NaN where it takes the double one */
static inline float capped_index_value_in_float(float e, float slope, float hi, float lo) {
    const float product = e * slope, a = product * 0x1p-63f, g = __builtin_fmaf(a, hi, a * lo);
    return product >= 0x1p-62f && fabsf(g) >= 0x1p-100f ? g : NAN;
}

SPECIALISED void capped_index_values_in_float(STORAGE *out, const SCRATCH *restrict e, const SCRATCH *restrict slope,
                                              gradient_factors factors, int64_t count) {
    const double scaled = factors.probability * 0x1p-63;
    const float hi = (float)scaled, lo = (float)(scaled - hi);
    const __m256 hi8 = _mm256_set1_ps(hi), lo8 = _mm256_set1_ps(lo), down = _mm256_set1_ps(0x1p-63f);
    const __m256 product_floor = _mm256_set1_ps(0x1p-62f), g_floor = _mm256_set1_ps(0x1p-100f);
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t j = 0; j < count; j += 8) {
        if (count - j < 8) { /* the same values one at a time */
            for (int64_t i = j; i < count; i++) {
                const float g = capped_index_value_in_float(e[i], slope[i], hi, lo);
                if (g == g)
                    out[i] = g;
                else
                    capped_index_values(out + i, e + i, slope + i, factors, 1);
            }
            break;
        }
        const __m256 product = _mm256_mul_ps(_mm256_loadu_ps(e + j), _mm256_loadu_ps(slope + j));
        const __m256 a = _mm256_mul_ps(product, down), g = _mm256_fmadd_ps(a, hi8, _mm256_mul_ps(a, lo8));
        const __m256 kept = _mm256_and_ps(_mm256_cmp_ps(product, product_floor, _CMP_GE_OQ),
                                          _mm256_cmp_ps(_mm256_and_ps(g, magnitude), g_floor, _CMP_GE_OQ));
        _mm256_storeu_ps(out + j, g);
        const int lanes = _mm256_movemask_ps(kept);
        if (lanes != 0xFF)
            for (int i = 0; i < 8; i++)
                if (!(lanes >> i & 1)) capped_index_values(out + j + i, e + j + i, slope + j + i, factors, 1);
    }
}
#else
#define CAPPED_INDEX_IN_FLOAT 0
#endif

/* The gradient at a class index without a softcap, from the row's exps (scratch): patched over the
 * values of the loops for any class (gradient_values, stream_next_line's lines) */
static inline STORAGE gradient_at_index(const SCRATCH *scratch, const row_target *target, gradient_factors factors) {
    const int64_t y = target->index;
    return STORE(scratch[y] * factors.probability - coefficient(target, y) * factors.target);
}

/* The gradient of a row over [k, k + count) into out, from what compute_row_stats stored in
 * scratch; spread_weights: the call's w_j spread target (see call_constants), or NULL. */
SPECIALISED void gradient_values(STORAGE *out, const SCRATCH *restrict scratch, const row_target *target,
                                 int64_t argmax, gradient_factors factors, int64_t n_classes, int64_t k, int64_t count,
                                 int with_softcap, int target_kind, const SCRATCH *spread_weights) {
    const SCRATCH *e = scratch + k, *slope = scratch + n_classes + k;
#define ANY_TARGET_VALUES(with_weight, with_prob)                                                                       \
    any_target_values(out, e, slope, target, factors, k, count, with_softcap, with_weight, with_prob)
    if (with_softcap && target_kind == INDEX_TARGET) {
#if CAPPED_INDEX_IN_FLOAT
        if (capped_index_in_float(factors.probability))
            capped_index_values_in_float(out, e, slope, factors, count);
        else
#endif
            capped_index_values(out, e, slope, factors, count);
        const int64_t y = target->index;
        if (y >= k && y < k + count)
            out[y - k] = STORE((scratch[y] * factors.probability - coefficient(target, y) * factors.target) *
                               (slope[y - k] / SLOPE_SCALE));
    } else if (target_kind != ANY_TARGET) {
        const scaling probability = scaling_of(factors.probability);
        int fits = 1; /* every c_j target fit scaled_minus; if not, the values are computed again */
        if (target_kind == INDEX_TARGET) {
            scaled_minus_values(out, e, probability, NULL, 0.0, count);
        } else if (target_kind == PROB_TARGET) { /* two loops: see FOR_TARGET_ARRAYS */
            fits = target->weight ? prob_target_values(out, e, probability, target, factors.target, k, count, 1)
                                  : prob_target_values(out, e, probability, target, factors.target, k, count, 0);
        } else if (spread_weights) {
            scaled_minus_values(out, e, probability, spread_weights + k, 0.0, count);
        } else if (target->weight) { /* two loops: see FOR_TARGET_ARRAYS */
            const double spread = target->spread * factors.target;
            for (int64_t j = 0; j < count; j++) {
                fits &= fits_float(target->weight[k + j] * spread);
                out[j] = scaled_minus(e[j], probability, target->weight[k + j] * spread);
            }
        } else {
            const double spread = target->spread * factors.target;
            scaled_minus_values(out, e, probability, NULL, spread, count);
            fits = fits_float(spread);
        }
        if (!fits) /* the general loop, in double */
            FOR_TARGET_ARRAYS(target, ANY_TARGET_VALUES);
        const int64_t y = target->index;
        if (y >= k && y < k + count) out[y - k] = gradient_at_index(scratch, target, factors);
    } else {
        FOR_TARGET_ARRAYS(target, ANY_TARGET_VALUES);
    }
#undef ANY_TARGET_VALUES
    if (argmax >= k && argmax < k + count)
        out[argmax - k] = STORE(with_softcap ? factors.at_argmax * (slope[argmax - k] / SLOPE_SCALE) : factors.at_argmax);
}

/* Lines to stream are computed this many at a time: a line's vector load right after the stores
 * that wrote it waits for them when they were narrower (float64 with label smoothing, 8192x1000
 * one thread: 20 -> 17 ms); a batch's first lines are in cache by the time they are read. */
#define STREAM_BATCH 8

/* the first class in [begin, end) whose element of row starts a cache line; end if none, or if row
 * is not aligned to its elements */
static inline int64_t first_whole_line(const STORAGE *row, int64_t begin, int64_t end) {
    if ((uintptr_t)row % sizeof(STORAGE) != 0) return end;
    const int64_t k = begin + classes_before_aligned(row + begin, LINE);
    return k < end ? k : end;
}

/* The gradient of one row over classes [begin, end). x is not read: grad may be the logits
 * (in-place). With streaming, the whole cache lines in the range are written past the caches (the
 * thread that wrote them calls stream_fence after its last chunk, cross_entropy_finish, or the
 * split path's task after its segment: a fence per row cost 10% at K = 1000). */
SPECIALISED void write_gradient_with(STORAGE *grad, const SCRATCH *restrict scratch, const row_target *target,
                                     int64_t argmax, gradient_factors factors, int64_t n_classes, int64_t begin,
                                     int64_t end, int with_softcap, int target_kind, int streaming,
                                     const SCRATCH *spread_weights) {
    int64_t k = begin;
    if (streaming) {
        const int64_t aligned = first_whole_line(grad, k, end);
        gradient_values(grad + k, scratch, target, argmax, factors, n_classes, k, aligned - k, with_softcap, target_kind,
                        spread_weights);
        for (k = aligned; k + LINE <= end;) {
            STORAGE lines[STREAM_BATCH * LINE];
            const int64_t count = end - k < STREAM_BATCH * LINE ? (end - k) / LINE : STREAM_BATCH;
            gradient_values(lines, scratch, target, argmax, factors, n_classes, k, count * LINE, with_softcap, target_kind,
                            spread_weights);
            for (int64_t line = 0; line < count; line++, k += LINE) stream_line(grad + k, lines + line * LINE);
        }
    }
    gradient_values(grad + k, scratch, target, argmax, factors, n_classes, k, end - k, with_softcap, target_kind, spread_weights);
}

static void write_gradient(STORAGE *grad, const SCRATCH *restrict scratch, const row_target *target, int64_t argmax,
                           gradient_factors factors, const call_constants *call, int64_t begin, int64_t end) {
    const int64_t n = call->n_classes;
    const int streaming = call->stream_gradient;
    if (call->softcap > 0)
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 1,
                            !target->prob && target->spread == 0 ? INDEX_TARGET : ANY_TARGET, streaming, NULL);
    else if (!factors.float_products) /* the loop for any target computes in double */
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, ANY_TARGET, streaming, NULL);
    else if (target->prob)
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, PROB_TARGET, streaming, NULL);
    else if (target->spread != 0)
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, SMOOTHED_INDEX_TARGET, streaming,
                            call->spread_weights);
    else if (streaming) /* the plain call's path: the streaming test out of its loop */
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, INDEX_TARGET, 1, NULL);
    else
        write_gradient_with(grad, scratch, target, argmax, factors, n, begin, end, 0, INDEX_TARGET, 0, NULL);
}

/* A gradient row waiting to be written, in parts (see WAITING_STEP) */
struct waiting_gradient {
    STORAGE *grad; /* the row's gradient, or NULL: none waits */
    const SCRATCH *scratch;
    row_target target;
    int64_t argmax;
    gradient_factors factors;
    const call_constants *call;
    int64_t written; /* the classes before it are */
    int next_half;   /* the half of the thread's scratch that the next row takes */
    streamed_lines lines; /* its whole lines, if the exp pass streams them (grad not NULL), from written */
} __attribute__((aligned(CACHE_LINE))); /* one per thread, updated often: each on its own lines */

static streamed_lines lines_to_stream(const waiting_gradient *waiting) {
    streamed_lines lines = waiting->grad ? waiting->lines : (streamed_lines){.grad = NULL};
    lines.next = waiting->written;
    return lines;
}

static void lines_streamed_until(waiting_gradient *waiting, int64_t next) { waiting->written = next; }

/* The whole lines of the waiting row's gradient that the exp pass can stream (LINES_IN_EXP_PASS):
 * its values must be those of scaled_minus_values (c_k t none, the call's spread weights or one
 * constant), bit for bit, and its lines streamed (its gradient aligned to its elements); else grad
 * NULL. Not a row of NaN factors (no finite logit; fits_float rejects them for FLOAT_EXP types): a
 * product of two NaNs is the one the compiler puts first, and gradient_values' loops may put the
 * other (float64's streamed lines gave -NaN where the row's small call gave +NaN). */
static streamed_lines lines_of_row(const waiting_gradient *waiting) {
#if LINES_IN_EXP_PASS
    const row_target *target = &waiting->target;
    const gradient_factors factors = waiting->factors;
    STORAGE *grad = waiting->grad;
    const int64_t n_classes = waiting->call->n_classes;
    /* a smoothed row's c_k target: the call's spread weights, or without weights a constant */
    const int smoothed = target->spread != 0;
    const SCRATCH *minus = smoothed ? waiting->call->spread_weights : NULL;
    const double minus_constant = smoothed && !minus ? target->spread * factors.target : 0.0;
    if (waiting->call->softcap > 0 || target->prob || !factors.float_products ||
        isnan(factors.probability) || isnan(factors.target) || (uintptr_t)grad % sizeof(STORAGE) != 0 ||
        (smoothed && !minus && (target->weight || !fits_float(minus_constant))))
        return (streamed_lines){.grad = NULL};
    const int64_t first = first_whole_line(grad, 0, n_classes);
    const int64_t y = target->index;
    return (streamed_lines){
        .grad = grad,
        .e = waiting->scratch,
        .next = first,
        .end = first + (n_classes - first) / LINE * LINE,
        .index = y,
        .argmax = waiting->argmax,
        .probability = scaling_of(factors.probability),
        .minus = minus,
        .minus_constant = (SCRATCH)minus_constant,
        .at_index = gradient_at_index(waiting->scratch, target, factors),
        .at_argmax = STORE(factors.at_argmax),
    };
#else
    (void)waiting;
    return (streamed_lines){.grad = NULL};
#endif
}

/* The waiting gradient's classes up to until (all of them at K, else up to a cache line of grad
 * below until, where the next part starts: lines are streamed whole) */
static void write_waiting_gradient(waiting_gradient *waiting, int64_t until) {
    if (!waiting->grad) return;
    const int64_t n_classes = waiting->call->n_classes;
    if (until < n_classes) until -= (int64_t)((uintptr_t)(waiting->grad + until) % CACHE_LINE / sizeof(STORAGE));
    if (until <= waiting->written) return;
    write_gradient(waiting->grad, waiting->scratch, &waiting->target, waiting->argmax, waiting->factors, waiting->call,
                   waiting->written, until);
    waiting->written = until;
    if (until == n_classes) waiting->grad = NULL;
}

static void write_zeros(STORAGE *row, int64_t n_classes) {
    for (int64_t k = 0; k < n_classes; k++) row[k] = STORE(0.0);
}
