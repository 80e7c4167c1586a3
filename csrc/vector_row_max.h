/* vector_row_max.h: the row max of logits that are floats or narrower (float32, float16, bfloat16),
 * and the first index holding it, in AVX-512 or AVX2 registers; included by kernel_row_max.h,
 * which defines logit_max, after the type_*.h that defines STORAGE and LOAD_16_AS_FLOATS (one of
 * the loaders below: 16 logits as 16 floats, exactly). GCC does not vectorise find_max's
 * select-reduction; this is its vector form.
 *
 * Two passes, the second over data the first brought into cache (as vector_row_max_double.h): the
 * max, in CHAINS independent registers (NaN is skipped: maxps returns its second operand, the
 * running max, when the logit is NaN); then the first index holding it, compared a vector at a time
 * (a compare-and-select of the index in the first pass cost twice as much: measured). A row's last
 * partial block is read as the 16 logits that end the row, overlapping the block before, and a row
 * that starts inside a vector's alignment has its first 16 read as they come, the rest from the
 * first aligned block (see classes_before_aligned). A max of
 * -inf (no logit larger) is at index 0, as in find_max. The first pass also takes the min (NaN
 * skipped as for the max), and where that is more than 87 below the max a pass between the two
 * takes logit_max's min instead (the smallest logit of exp_floor or more, or one that shows the row
 * spread). The loaders also widen 16-bit logits for block_values (kernel_exp_blocks.h). */
#include <immintrin.h>

#if defined(__AVX512F__)
#define CHAINS 4

typedef __m512 floats16;

static inline floats16 load_16_floats(const float *x) { return _mm512_loadu_ps(x); }

/* bfloat16 is the top half of a float: 16 of them moved there, the low halves zeroed, by one vpermw
 * (a zero-extension and a shift took two operations) */
static inline floats16 bf16_to_floats(__m256i bits) {
    const __m512i to_top_halves = _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0, 7, 0, 6, 0, 5,
                                                   0, 4, 0, 3, 0, 2, 0, 1, 0, 0, 0);
    const __mmask32 top_halves = 0xAAAAAAAAu;
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(top_halves, to_top_halves, _mm512_castsi256_si512(bits)));
}

static inline floats16 load_16_bf16(const uint16_t *x) {
    return bf16_to_floats(_mm256_loadu_si256((const __m256i *)x));
}

static inline floats16 load_16_f16(const uint16_t *x) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x));
}

/* the same for the lanes of valid, others 0, not read (a masked load does not fault): a row's end */
static inline floats16 load_16_floats_masked(__mmask16 valid, const float *x) { return _mm512_maskz_loadu_ps(valid, x); }

static inline floats16 load_16_bf16_masked(__mmask16 valid, const uint16_t *x) {
    return bf16_to_floats(_mm256_maskz_loadu_epi16(valid, x));
}

static inline floats16 load_16_f16_masked(__mmask16 valid, const uint16_t *x) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(valid, x));
}

static inline void store_16_floats(float *out, floats16 values) { _mm512_storeu_ps(out, values); }

static inline floats16 all_lanes(float value) { return _mm512_set1_ps(value); }
static inline floats16 larger_of(floats16 value, floats16 max) { return _mm512_max_ps(value, max); }
static inline float largest_lane(floats16 max) { return _mm512_reduce_max_ps(max); }

static inline floats16 smaller_of(floats16 value, floats16 min) { return _mm512_min_ps(value, min); }

/* the smaller of value and min in each lane, value taken only if it is floor or more (NaN never) */
static inline floats16 smaller_at_least_of(floats16 value, floats16 min, floats16 floor) {
    return _mm512_mask_min_ps(min, _mm512_cmp_ps_mask(value, floor, _CMP_GE_OQ), value, min);
}
static inline float smallest_lane(floats16 min) { return _mm512_reduce_min_ps(min); }
static inline int any_lane_below(floats16 value, floats16 bound) {
    return _mm512_cmp_ps_mask(value, bound, _CMP_LT_OQ) != 0;
}

/* the mask of the lanes equal to value */
static inline unsigned lanes_equal(floats16 x, floats16 value) { return _mm512_cmp_ps_mask(x, value, _CMP_EQ_OQ); }
#else
/* floats16 is two registers here: with 4 chains (8 registers of the max, 8 of the min, and the
 * logits: more than AVX2's 16) GCC kept some in memory, a store and a load in their chains */
#define CHAINS 2

typedef struct {
    __m256 half[2];
} floats16;

static inline floats16 load_16_floats(const float *x) {
    return (floats16){{_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)}};
}

/* 8 bfloat16 at x, loaded into both 128-bit lanes (a load, no shuffle), to the top halves of 8
 * floats by one byte shuffle, each lane taking its own 4 (a zero-extension and a shift took two
 * operations) */
static inline __m256 load_8_bf16(const uint16_t *x) {
    const __m256i to_top_halves = _mm256_setr_epi8(-1, -1, 0, 1, -1, -1, 2, 3, -1, -1, 4, 5, -1, -1, 6, 7, /* */
                                                   -1, -1, 8, 9, -1, -1, 10, 11, -1, -1, 12, 13, -1, -1, 14, 15);
    const __m256i both_lanes = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x));
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(both_lanes, to_top_halves));
}

static inline floats16 load_16_bf16(const uint16_t *x) { return (floats16){{load_8_bf16(x), load_8_bf16(x + 8)}}; }

static inline floats16 load_16_f16(const uint16_t *x) { /* F16C, part of the avx2 build */
    return (floats16){{_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x)),
                       _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 8)))}};
}

static inline void store_16_floats(float *out, floats16 values) {
    _mm256_storeu_ps(out, values.half[0]);
    _mm256_storeu_ps(out + 8, values.half[1]);
}

static inline floats16 all_lanes(float value) {
    return (floats16){{_mm256_set1_ps(value), _mm256_set1_ps(value)}};
}

static inline floats16 larger_of(floats16 value, floats16 max) {
    return (floats16){{_mm256_max_ps(value.half[0], max.half[0]), _mm256_max_ps(value.half[1], max.half[1])}};
}

/* the lanes halved three times (a chain of 4 operations where a scan of 16 lanes took 15; lanes hold
 * no NaN: the chains skip them) */
static inline float largest_lane(floats16 max) {
    const __m256 eight = _mm256_max_ps(max.half[0], max.half[1]);
    __m128 four = _mm_max_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    four = _mm_max_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_max_ss(four, _mm_movehdup_ps(four)));
}

static inline floats16 smaller_of(floats16 value, floats16 min) {
    return (floats16){{_mm256_min_ps(value.half[0], min.half[0]), _mm256_min_ps(value.half[1], min.half[1])}};
}

/* (a NaN value is kept by the blend, and minps then returns its second operand, min) */
static inline __m256 smaller_at_least_of_8(__m256 value, __m256 min, __m256 floor) {
    return _mm256_min_ps(_mm256_blendv_ps(value, min, _mm256_cmp_ps(value, floor, _CMP_LT_OQ)), min);
}

static inline floats16 smaller_at_least_of(floats16 value, floats16 min, floats16 floor) {
    const __m256 low = smaller_at_least_of_8(value.half[0], min.half[0], floor.half[0]);
    return (floats16){{low, smaller_at_least_of_8(value.half[1], min.half[1], floor.half[1])}};
}

static inline float smallest_lane(floats16 min) { /* as largest_lane */
    const __m256 eight = _mm256_min_ps(min.half[0], min.half[1]);
    __m128 four = _mm_min_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    four = _mm_min_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_min_ss(four, _mm_movehdup_ps(four)));
}

static inline int any_lane_below(floats16 value, floats16 bound) {
    const __m256 low = _mm256_cmp_ps(value.half[0], bound.half[0], _CMP_LT_OQ);
    return _mm256_movemask_ps(_mm256_or_ps(low, _mm256_cmp_ps(value.half[1], bound.half[1], _CMP_LT_OQ))) != 0;
}

static inline unsigned lanes_equal(floats16 x, floats16 value) {
    const unsigned low = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x.half[0], value.half[0], _CMP_EQ_OQ));
    const unsigned high = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x.half[1], value.half[1], _CMP_EQ_OQ));
    return low | high << 8;
}
#endif

/* The first index of the max, 16 logits at a time: 16-bit logits on AVX2 by their bits
 * (STORAGE_OF_FLOAT: a float that is a logit's value to its bits), one comparison where widening
 * them took four more operations, for a max that is not +-0 (a zero max is found by value, either
 * sign: find_max). */
#if !defined(__AVX512F__) && defined(STORAGE_OF_FLOAT)
#define FIRST_EQUAL_BY_BITS 1
#endif

/* the first of the 16 logits at x equal to the max (in every lane of target; by_bits: its bits in
 * every 16-bit lane of bits, where FIRST_EQUAL_BY_BITS), -1 if none */
static inline int first_equal(const STORAGE *x, floats16 target, __m256i bits, int by_bits) {
#ifdef FIRST_EQUAL_BY_BITS
    if (by_bits) { /* two mask bits per logit */
        const __m256i equal = _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)x), bits);
        const unsigned bytes = (unsigned)_mm256_movemask_epi8(equal);
        return bytes ? __builtin_ctz(bytes) / 2 : -1;
    }
#else
    (void)bits, (void)by_bits;
#endif
    const unsigned equal = lanes_equal(LOAD_16_AS_FLOATS(x), target);
    return equal ? __builtin_ctz(equal) : -1;
}

/* the max chains and the min chains take the 16 logits at x */
static inline void take_16(floats16 *max, floats16 *min, const STORAGE *x) {
    const floats16 value = LOAD_16_AS_FLOATS(x);
    *max = larger_of(value, *max);
    *min = smaller_of(value, *min);
}

/* the min of the logits of floor or more (NaN left out), for a row whose min is far below its max
 * (masked classes, or logits spread wide), in a pass of its own (so that the others' first pass takes
 * one operation for it per 16 logits, not two), in CHAINS registers; it returns the first's min
 * once that is below spread_below (a row spread wide: any such min will do, see logit_max) */
static float smallest_at_least(const STORAGE *x, int64_t n_classes, float floor, float spread_below) {
    const floats16 floors = all_lanes(floor), spread = all_lanes(spread_below);
    floats16 chains[CHAINS];
    for (int c = 0; c < CHAINS; c++) chains[c] = all_lanes(INFINITY);
    int64_t k = 0;
    for (; k + 16 * CHAINS <= n_classes; k += 16 * CHAINS) {
        if (any_lane_below(chains[0], spread)) return smallest_lane(chains[0]);
        for (int c = 0; c < CHAINS; c++)
            chains[c] = smaller_at_least_of(LOAD_16_AS_FLOATS(x + k + 16 * c), chains[c], floors);
    }
    for (; k + 16 <= n_classes; k += 16) chains[0] = smaller_at_least_of(LOAD_16_AS_FLOATS(x + k), chains[0], floors);
    if (k < n_classes) chains[0] = smaller_at_least_of(LOAD_16_AS_FLOATS(x + n_classes - 16), chains[0], floors);
    for (int c = 1; c < CHAINS; c++) chains[0] = smaller_of(chains[c], chains[0]);
    return smallest_lane(chains[0]);
}

/* n >= 16 */
static logit_max vector_row_max(const STORAGE *x, int64_t n_classes) {
    floats16 chains[CHAINS], min_chains[CHAINS];
    for (int c = 0; c < CHAINS; c++) {
        chains[c] = all_lanes(-INFINITY);
        min_chains[c] = all_lanes(INFINITY);
    }
    int64_t k = classes_before_aligned(x, 16); /* see classes_before_aligned */
    if (k > 0) take_16(&chains[0], &min_chains[0], x);
    for (; k + 16 * CHAINS <= n_classes; k += 16 * CHAINS)
        for (int c = 0; c < CHAINS; c++) take_16(&chains[c], &min_chains[c], x + k + 16 * c);
    for (; k + 16 <= n_classes; k += 16) take_16(&chains[0], &min_chains[0], x + k);
    if (k < n_classes) take_16(&chains[0], &min_chains[0], x + n_classes - 16);
    for (int c = 1; c < CHAINS; c++) {
        chains[0] = larger_of(chains[c], chains[0]);
        min_chains[0] = smaller_of(min_chains[c], min_chains[0]);
    }
    const float max = largest_lane(chains[0]);
    if (max == -INFINITY) return (logit_max){-INFINITY, 0, INFINITY};
    float min = FLOAT_EXP ? smallest_lane(min_chains[0]) : -INFINITY; /* see logit_max */
    if (FLOAT_EXP && min - max < VEXPF_SUBNORMAL_BELOW)
        min = smallest_at_least(x, n_classes, exp_floor(max), spread_floor(max)); /* as smallest_with_exp */
    const floats16 target = all_lanes(max);
#ifdef FIRST_EQUAL_BY_BITS
    const int by_bits = max != 0;
    const __m256i bits = _mm256_set1_epi16((short)STORAGE_OF_FLOAT(max));
#else
    const int by_bits = 0;
    const __m256i bits = _mm256_setzero_si256();
#endif
    for (k = 0; k < n_classes; k += 16) {
        const int64_t start = k + 16 <= n_classes ? k : n_classes - 16;
        const int lane = first_equal(x + start, target, bits, by_bits);
        if (lane >= 0) {
            const int64_t first = start + lane;
            /* x[first], not max: a zero max has the first's sign */
            return (logit_max){LOAD(x[first]), first, min};
        }
    }
    return (logit_max){max, 0, min}; /* only if another thread changed x meanwhile: a wrong answer, not a hang */
}
