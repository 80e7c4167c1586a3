/* vector_row_max.h: the row max of logits that are floats or narrower (float32, float16, bfloat16),
 * and the first index holding it, in AVX-512 or AVX2 registers; included by kernel_template.h,
 * which defines logit_max, STORAGE and LOAD_16_AS_FLOATS (one of the loaders below: 16 logits as 16
 * floats, exactly). GCC does not vectorise find_max's select-reduction; this is its vector form.
 *
 * Each lane keeps its max (a float, exactly) and the int32 start of the block where it first saw
 * it. A compare and a select chained on one register would take several cycles per block: CHAINS
 * registers take turns, and are merged at the end (the larger value, or the same value seen in an
 * earlier block). A row's last partial block is read as the 16 logits that end the row, overlapping
 * the block before: an index seen twice is still its own index, and the first of the largest wins.
 * Rows longer than a PIECE are done piece by piece (int32 block starts). */
#include <immintrin.h>

#define CHAINS 4
#define PIECE ((int64_t)1 << 30)

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

/* the same for the lanes of valid, others 0, not read (a masked load does not fault): a row's end */
static inline floats16 load_16_floats_masked(__mmask16 valid, const float *x) { return _mm512_maskz_loadu_ps(valid, x); }

static inline floats16 load_16_bf16_masked(__mmask16 valid, const uint16_t *x) {
    const __m512i words = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(valid, x));
    return _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));
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

/* other's lanes into chain where they hold a larger max, or the same max from an earlier block */
static inline void chain_merge(max_chain *chain, const max_chain *other) {
    const __mmask16 larger = _mm512_cmp_ps_mask(other->max, chain->max, _CMP_GT_OQ);
    const __mmask16 earlier = _mm512_cmp_ps_mask(other->max, chain->max, _CMP_EQ_OQ) &
                              _mm512_cmplt_epi32_mask(other->block, chain->block);
    chain->max = _mm512_mask_mov_ps(chain->max, larger | earlier, other->max);
    chain->block = _mm512_mask_mov_epi32(chain->block, larger | earlier, other->block);
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

static inline void chain_merge(max_chain *chain, const max_chain *other) {
    for (int half = 0; half < 2; half++) {
        const __m256 larger = _mm256_cmp_ps(other->max[half], chain->max[half], _CMP_GT_OQ);
        const __m256i earlier = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(other->max[half], chain->max[half], _CMP_EQ_OQ)),
            _mm256_cmpgt_epi32(chain->block[half], other->block[half]));
        const __m256 take = _mm256_or_ps(larger, _mm256_castsi256_ps(earlier));
        chain->max[half] = _mm256_blendv_ps(chain->max[half], other->max[half], take);
        chain->block[half] = _mm256_blendv_epi8(chain->block[half], other->block[half], _mm256_castps_si256(take));
    }
}

static inline void chain_store(float maxima[16], int32_t blocks[16], const max_chain *chain) {
    for (int half = 0; half < 2; half++) {
        _mm256_storeu_ps(maxima + 8 * half, chain->max[half]);
        _mm256_storeu_si256((__m256i *)(blocks + 8 * half), chain->block[half]);
    }
}
#endif

/* the max of x[0, n) and the first index holding it, n <= PIECE; n >= 16, or x is preceded by
 * 16 - n logits of the same row (a last piece), which the overlapping last block reads */
static logit_max piece_max(const STORAGE *x, int64_t n) {
    max_chain chains[CHAINS];
    for (int c = 0; c < CHAINS; c++) chains[c] = new_chain();
    int64_t k = 0;
    for (; k + 16 * CHAINS <= n; k += 16 * CHAINS)
        for (int c = 0; c < CHAINS; c++) chain_step(&chains[c], LOAD_16_AS_FLOATS(x + k + 16 * c), k + 16 * c);
    for (; k + 16 <= n; k += 16) chain_step(&chains[0], LOAD_16_AS_FLOATS(x + k), k);
    if (k < n) chain_step(&chains[0], LOAD_16_AS_FLOATS(x + n - 16), n - 16);
    for (int c = 1; c < CHAINS; c++) chain_merge(&chains[0], &chains[c]);
    float maxima[16];
    int32_t blocks[16];
    chain_store(maxima, blocks, &chains[0]);
    float max = maxima[0];
    for (int j = 1; j < 16; j++) max = maxima[j] > max ? maxima[j] : max;
    int64_t index = INT64_MAX; /* some lane holds max: at worst -inf, in block 0 */
    for (int j = 0; j < 16; j++)
        if (maxima[j] == max && blocks[j] + j < index) index = blocks[j] + j;
    return (logit_max){max, index};
}

static logit_max vector_row_max(const STORAGE *x, int64_t n_classes) {
    logit_max max = piece_max(x, n_classes < PIECE ? n_classes : PIECE);
    for (int64_t start = PIECE; start < n_classes; start += PIECE) {
        const int64_t length = n_classes - start < PIECE ? n_classes - start : PIECE;
        logit_max piece = piece_max(x + start, length);
        piece.index += start;
        if (piece.value > max.value) max = piece; /* an equal max of a later piece is not the first */
    }
    return max;
}
