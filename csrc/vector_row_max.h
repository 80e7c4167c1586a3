/* vector_row_max.h: the row max of logits that are floats or narrower (float32, float16, bfloat16),
 * in AVX-512 or AVX2 registers; included by kernel_template.h, which defines PARTIAL_SUMS, STORAGE
 * and LOAD_16_AS_FLOATS (one of the loaders below: 16 logits as 16 floats, exactly).
 *
 * max_blocks_of_floats does what max_block does over the whole blocks of a row (GCC does not
 * vectorise max_block's select-reduction) and returns where it stopped. Lane maxima stay floats,
 * exactly; block starts are int32, so a row longer than 2^31 finishes in max_block. A compare and a
 * select chained on one register would take several cycles per block: CHAINS registers take turns,
 * and are merged at the end (the larger value, or the same value seen in an earlier block). */
#include <immintrin.h>

_Static_assert(PARTIAL_SUMS == 16, "the vector row max keeps 16 float lanes");

#define CHAINS 4

#if defined(__AVX512F__)
typedef __m512 floats16;

static inline floats16 load_16_floats(const float *x) { return _mm512_loadu_ps(x); }

/* bfloat16 is the top half of a float */
static inline floats16 load_16_bf16(const uint16_t *x) {
    const __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)x));
    return _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));
}

static inline floats16 load_16_f16(const uint16_t *x) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x));
}

typedef struct {
    __m512 max;
    __m512i block;
} max_chain;

static inline max_chain new_chain(void) { return (max_chain){_mm512_set1_ps(-INFINITY), _mm512_setzero_si512()}; }

static inline void chain_step(max_chain *chain, floats16 value, int64_t k) {
    const __mmask16 larger = _mm512_cmp_ps_mask(value, chain->max, _CMP_GT_OQ); /* false for NaN */
    chain->max = _mm512_mask_mov_ps(chain->max, larger, value);
    chain->block = _mm512_mask_mov_epi32(chain->block, larger, _mm512_set1_epi32((int32_t)k));
}

static inline void chain_store(float maxima[16], int32_t blocks[16], const max_chain *chain) {
    _mm512_storeu_ps(maxima, chain->max);
    _mm512_storeu_si512(blocks, chain->block);
}
#else
typedef struct {
    __m256 half[2];
} floats16;

static inline floats16 load_16_floats(const float *x) {
    return (floats16){{_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)}};
}

static inline __m256 bf16_to_floats(__m128i bits) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

static inline floats16 load_16_bf16(const uint16_t *x) {
    return (floats16){{bf16_to_floats(_mm_loadu_si128((const __m128i *)x)),
                       bf16_to_floats(_mm_loadu_si128((const __m128i *)(x + 8)))}};
}

static inline floats16 load_16_f16(const uint16_t *x) { /* F16C, part of the avx2 build */
    return (floats16){{_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x)),
                       _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 8)))}};
}

typedef struct {
    __m256 max[2];
    __m256i block[2];
} max_chain;

static inline max_chain new_chain(void) {
    const __m256 low = _mm256_set1_ps(-INFINITY);
    return (max_chain){{low, low}, {_mm256_setzero_si256(), _mm256_setzero_si256()}};
}

static inline void chain_step(max_chain *chain, floats16 value, int64_t k) {
    const __m256i start = _mm256_set1_epi32((int32_t)k);
    for (int half = 0; half < 2; half++) {
        const __m256 larger = _mm256_cmp_ps(value.half[half], chain->max[half], _CMP_GT_OQ); /* false for NaN */
        chain->max[half] = _mm256_blendv_ps(chain->max[half], value.half[half], larger);
        chain->block[half] = _mm256_blendv_epi8(chain->block[half], start, _mm256_castps_si256(larger));
    }
}

static inline void chain_store(float maxima[16], int32_t blocks[16], const max_chain *chain) {
    for (int half = 0; half < 2; half++) {
        _mm256_storeu_ps(maxima + 8 * half, chain->max[half]);
        _mm256_storeu_si256((__m256i *)(blocks + 8 * half), chain->block[half]);
    }
}
#endif

static void merge_chain(double lane_max[PARTIAL_SUMS], int64_t lane_block[PARTIAL_SUMS], const float maxima[16],
                        const int32_t blocks[16]) {
    for (int j = 0; j < 16; j++)
        if (maxima[j] > lane_max[j] || (maxima[j] == lane_max[j] && blocks[j] < lane_block[j])) {
            lane_max[j] = maxima[j];
            lane_block[j] = blocks[j];
        }
}

static int64_t max_blocks_of_floats(double lane_max[PARTIAL_SUMS], int64_t lane_block[PARTIAL_SUMS],
                                    const STORAGE *x, int64_t n_classes) {
    max_chain chains[CHAINS];
    for (int c = 0; c < CHAINS; c++) chains[c] = new_chain();
    int64_t k = 0;
    for (; k + 16 * CHAINS <= n_classes && k + 16 * CHAINS < INT32_MAX; k += 16 * CHAINS)
        for (int c = 0; c < CHAINS; c++) chain_step(&chains[c], LOAD_16_AS_FLOATS(x + k + 16 * c), k + 16 * c);
    for (; k + 16 <= n_classes && k + 16 < INT32_MAX; k += 16) chain_step(&chains[0], LOAD_16_AS_FLOATS(x + k), k);
    for (int c = 0; c < CHAINS; c++) {
        float maxima[16];
        int32_t blocks[16];
        chain_store(maxima, blocks, &chains[c]);
        merge_chain(lane_max, lane_block, maxima, blocks);
    }
    return k;
}
