/* transpose_16.h: groups of rows of at most FEW_CLASSES floats to and from lanes, 16 rows at a time
 * in AVX-512 registers; included by kernel_few_classes_layout.h for float32 logits on AVX-512.
 *
 * The few-classes path keeps class k of a group's row r at lanes[k * ROW_GROUP + r]. A gather per
 * class (what the compiler makes of the strided loop) costs about as much as the rest of the
 * group's work; row loads and a 16 x 16 transpose in registers (64 shuffles per 16 classes) take a
 * fraction of it. Rows are n_classes floats apart; masked loads and stores touch no element past a
 * row, but for four_classes_to_lanes' loads, which stay within the rows the caller may read.
 *
 * The shuffles, all on one port, were a fifth of a call at 65536x10. Loads and masked stores now do
 * the work of those across 128-bit lanes: four_classes_to_lanes on the way in (the 16 x 16 transpose
 * is left for blocks of fewer than 16 rows, or whose loads would pass the rows the caller may read),
 * eight_classes_to_rows on the way back (whole blocks of 2 classes have their own both ways). 65536
 * rows, float32 one thread, bench/ab_builds.py: 3 and 4 classes 12-19% less time for the loss and
 * gradient, 26-30% for softmax; 5 to 8 classes 6-12%; 10 classes 0-3% (the loss alone 2-10%); 13 to
 * 32 0-5%.
 * For more than 8 classes the way back in parts of 8 then measured the same as the 16 x 16
 * transpose (0.98-1.04), though faster in a loop of its own; it was kept as the one way back. */
#include <immintrin.h>

/* in each 128-bit lane: v[j] float i becomes v[i] float j */
static inline void transpose_4x4_in_lanes(__m512 v[4]) {
    const __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(v[0], v[1])), /* pairs interleaved: 2 x 2 */
        t1 = _mm512_castps_pd(_mm512_unpackhi_ps(v[0], v[1])), t2 = _mm512_castps_pd(_mm512_unpacklo_ps(v[2], v[3])),
        t3 = _mm512_castps_pd(_mm512_unpackhi_ps(v[2], v[3]));
    v[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)); /* pairs of floats moved as doubles: 4 x 4 */
    v[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    v[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    v[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
}

/* v[j] lane i becomes v[i] lane j */
static inline void transpose_16x16(__m512 v[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 4) transpose_4x4_in_lanes(v + i);
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

/* Classes [begin, begin + 4) of 16 rows (n_classes apart) to lanes without the 16 x 16 transpose's
 * shuffles across 128-bit lanes: the loads put the four classes of row 4 L + q in 128-bit lane L of
 * register q (a broadcast, then three masked ones), and the 4 x 4 transposes within the lanes leave
 * class begin + j of row 4 L + q in lane 4 L + q of register j. It reads four floats of every row,
 * past the row's classes where fewer are left. 16 rows of 10 classes, in a loop of their own: 16 ns, 42
 * with the 16 x 16 transpose (8 shuffles per 4 classes, where that takes 64 per 16). */
static inline void four_classes_to_lanes(float *lanes, const float *rows, int n_classes, int begin) {
    __m512 v[4];
    for (int q = 0; q < 4; q++) {
        const float *row = rows + q * n_classes + begin;
        v[q] = _mm512_broadcast_f32x4(_mm_loadu_ps(row));
        for (int lane = 1; lane < 4; lane++)
            v[q] = _mm512_mask_broadcast_f32x4(v[q], (__mmask16)(0xF << (4 * lane)),
                                               _mm_loadu_ps(row + 4 * lane * n_classes));
    }
    transpose_4x4_in_lanes(v);
    for (int j = 0; j < 4 && begin + j < n_classes; j++) _mm512_storeu_ps(lanes + (begin + j) * ROW_GROUP, v[j]);
}

/* lanes[k * ROW_GROUP + r] = rows[r * n_classes + k] for k < n_classes (with the 16 x 16 transpose 0
 * up to the next multiple of 16); rows past n_rows repeat row 0. readable: the floats from rows on
 * that may be read, which four_classes_to_lanes' reads past a row's classes must stay within. */
static void transpose_to_lanes(float *lanes, const float *rows, int n_rows, int n_classes, int64_t readable) {
    const int64_t past_last_row = 4 * ((n_classes + 3) / 4) - n_classes; /* of four_classes_to_lanes */
    for (int first = 0; first < ROW_GROUP; first += 16) {
        if (n_classes == 2 && first + 16 <= n_rows) {
            two_classes_to_lanes(lanes + first, rows + first * n_classes);
            continue;
        }
        if (first + 16 <= n_rows && (int64_t)(first + 16) * n_classes + past_last_row <= readable) {
            for (int begin = 0; begin < n_classes; begin += 4)
                four_classes_to_lanes(lanes + first, rows + first * n_classes, n_classes, begin);
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

/* Classes [begin, begin + count) (count <= 8) of the first n_rows (<= 16) of 16 rows back from the
 * lanes, without the 16 x 16 transpose's shuffles across 128-bit lanes but one per two rows: the
 * transposes within 128-bit lanes leave four rows of at most 4 classes in a register, a lane each;
 * with at most 8, a shuffle of 128-bit lanes between two registers makes two rows of one, a half
 * each. A masked store then writes each row's part. In a loop of their own, 16 rows took 17 ns for
 * 4 classes (47 with the 16 x 16 transpose), 33-44 for 10 (40-52), 67-84 for 24 (136-165), 95-116 for
 * 32 (111-125); four stores of a 128-bit lane per row of 10 classes took 63-79. */
static inline void eight_classes_to_rows(float *rows, const float *lanes, int n_classes, int begin, int count,
                                         int n_rows) {
    __m512 v[8];
    for (int j = 0; j < 8; j++)
        v[j] = j < count ? _mm512_loadu_ps(lanes + (begin + j) * ROW_GROUP) : _mm512_setzero_ps();
    const unsigned classes = (1u << count) - 1;
    float *part = rows + begin; /* of row 0 */
    transpose_4x4_in_lanes(v); /* v[q] lane L: the first 4 classes of row 4 L + q */
    if (count <= 4) {
        for (int q = 0; q < 4; q++)
            for (int lane = 0; lane < 4; lane++) { /* where the lane lands on its row */
                const int r = 4 * lane + q;
                if (r < n_rows)
                    _mm512_mask_storeu_ps(part + r * n_classes - 4 * lane, (__mmask16)(classes << (4 * lane)), v[q]);
            }
        return;
    }
    transpose_4x4_in_lanes(v + 4); /* v[4 + q] lane L: the next 4 of row 4 L + q */
    for (int q = 0; q < 4; q++) {
        /* lanes 0 and 2 of both (rows q and 8 + q), and lanes 1 and 3 (rows 4 + q and 12 + q) */
        const __m512 pairs[2] = {_mm512_mask_shuffle_f32x4(v[q], 0xF0F0, v[4 + q], v[4 + q], 0x80),
                                 _mm512_mask_shuffle_f32x4(v[4 + q], 0x0F0F, v[q], v[q], 0x31)};
        for (int pair = 0; pair < 2; pair++) {
            const int r = 4 * pair + q;
            if (r < n_rows) _mm512_mask_storeu_ps(part + r * n_classes, (__mmask16)classes, pairs[pair]);
            if (r + 8 < n_rows)
                _mm512_mask_storeu_ps(part + (r + 8) * n_classes - 8, (__mmask16)(classes << 8), pairs[pair]);
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
        const int block_rows = n_rows - first < 16 ? n_rows - first : 16;
        for (int begin = 0; begin < n_classes; begin += 8)
            eight_classes_to_rows(rows + first * n_classes, lanes + first, n_classes, begin,
                                  n_classes - begin < 8 ? n_classes - begin : 8, block_rows);
    }
}
