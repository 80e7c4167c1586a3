/* transpose_16.h: groups of rows of at most 32 floats to and from lanes, 16 rows at a time in AVX-512
 * registers; included by kernel_few_classes.h for float32 logits on AVX-512.
 *
 * The few-classes path keeps class k of a group's row r at lanes[k * ROW_GROUP + r]. A gather per
 * class (what the compiler makes of the strided loop) costs about as much as the rest of the
 * group's work; row loads and a 16 x 16 transpose in registers (64 shuffles per 16 classes) take a
 * fraction of it. Rows are n_classes floats apart; masked loads and stores touch no element past a
 * row. */
#include <immintrin.h>

/* v[j] lane i becomes v[i] lane j */
static inline void transpose_16x16(__m512 v[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) { /* pairs of rows interleaved: 2 x 2 blocks */
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) /* 4 x 4 blocks: pairs of floats moved as doubles */
        for (int half = 0; half < 2; half++) {
            const __m512d low = _mm512_castps_pd(t[i + half]), high = _mm512_castps_pd(t[i + half + 2]);
            v[i + 2 * half] = _mm512_castpd_ps(_mm512_unpacklo_pd(low, high));
            v[i + 2 * half + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(low, high));
        }
    for (int i = 0; i < 4; i++) { /* 128-bit blocks: 8 x 8, then 16 x 16 */
        t[i] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(v[i], v[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        v[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        v[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        v[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        v[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

/* the lanes of a 16-class block that hold classes of the row: mask of n_classes - begin, at most 16 */
static inline __mmask16 block_mask(int begin, int n_classes) {
    const int n = n_classes - begin < 16 ? n_classes - begin : 16;
    return (__mmask16)((1u << n) - 1);
}

/* 16 whole rows of 2 classes are 2 vectors in memory: class 0 is their even floats, class 1 the odd
 * ones, one vpermt2ps each, in place of the 16 x 16 transpose with its 16 masked loads and its
 * stores (65536x2 float32 one thread: softmax 51 -> 26 ns per 16 rows, the cross-entropy with its
 * gradient 98 -> 76). Rows of 4 and 8 classes by rounds of the same (2 and 3) measured slower than
 * the transpose. */
static void two_classes_to_lanes(float *lanes, const float *rows) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 rows_0_to_7 = _mm512_loadu_ps(rows), rows_8_to_15 = _mm512_loadu_ps(rows + 16);
    _mm512_storeu_ps(lanes, _mm512_permutex2var_ps(rows_0_to_7, even, rows_8_to_15));
    _mm512_storeu_ps(lanes + ROW_GROUP, _mm512_permutex2var_ps(rows_0_to_7, odd, rows_8_to_15));
}

static void two_classes_to_rows(float *rows, const float *lanes) {
    const __m512i low = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
    const __m512 class_0 = _mm512_loadu_ps(lanes), class_1 = _mm512_loadu_ps(lanes + ROW_GROUP);
    _mm512_storeu_ps(rows, _mm512_permutex2var_ps(class_0, low, class_1));
    _mm512_storeu_ps(rows + 16, _mm512_permutex2var_ps(class_0, high, class_1));
}

/* Groups of ROW_GROUP rows are transposed 16 rows at a time. */
_Static_assert(ROW_GROUP % 16 == 0, "transpose_16.h moves blocks of 16 rows");

/* lanes[k * ROW_GROUP + r] = rows[r * n_classes + k] for k < n_classes (0 up to the next multiple
 * of 16); rows past n_rows repeat row 0 */
static void transpose_to_lanes(float *lanes, const float *rows, int n_rows, int n_classes) {
    for (int first = 0; first < ROW_GROUP; first += 16) {
        if (n_classes == 2 && first + 16 <= n_rows) {
            two_classes_to_lanes(lanes + first, rows + first * n_classes);
            continue;
        }
        for (int begin = 0; begin < n_classes; begin += 16) {
            const __mmask16 mask = block_mask(begin, n_classes);
            __m512 v[16];
            for (int r = 0; r < 16; r++)
                v[r] = _mm512_maskz_loadu_ps(mask, rows + (first + r < n_rows ? first + r : 0) * n_classes + begin);
            transpose_16x16(v);
            for (int j = 0; j < 16; j++) _mm512_storeu_ps(lanes + (begin + j) * ROW_GROUP + first, v[j]);
        }
    }
}

/* rows[r * n_classes + k] = lanes[k * ROW_GROUP + r] for r < n_rows, k < n_classes */
static void transpose_to_rows(float *rows, const float *lanes, int n_rows, int n_classes) {
    for (int first = 0; first < n_rows; first += 16) {
        if (n_classes == 2 && first + 16 <= n_rows) {
            two_classes_to_rows(rows + first * n_classes, lanes + first);
            continue;
        }
        for (int begin = 0; begin < n_classes; begin += 16) {
            const __mmask16 mask = block_mask(begin, n_classes);
            __m512 v[16];
            for (int j = 0; j < 16; j++)
                v[j] = begin + j < n_classes ? _mm512_loadu_ps(lanes + (begin + j) * ROW_GROUP + first)
                                             : _mm512_setzero_ps();
            transpose_16x16(v);
            for (int r = 0; r < 16 && first + r < n_rows; r++)
                _mm512_mask_storeu_ps(rows + (first + r) * n_classes + begin, mask, v[r]);
        }
    }
}
