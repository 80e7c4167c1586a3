/* transpose_4_avx2.h: a group of rows of few classes, as floats, to and from lanes in AVX2 registers,
 * 8 rows by 4 classes at a time; included by kernel_few_classes_layout.h on AVX2 for float32 logits and for
 * 16-bit ones widened to floats (ROWS_AS_FLOATS).
 *
 * The few-classes path keeps class k of a group's row r at lanes[k * ROW_GROUP + r]. GCC made the
 * strided copies gathers (one element each, on Zen 2 a tenth of a call at 65536x10 each way); here
 * a register holds 4 classes of row r in its low half and of row r + 4 in its high half, two 16-byte
 * loads or stores, and a 4 x 4 transpose within the halves (8 shuffles per 32 floats) turns 4 such
 * registers into 4 classes of 8 rows. A row's last 4 classes are taken as a block that may overlap
 * the one before (rows of at least 4 classes): the same values loaded or stored again. */
#include <immintrin.h>

_Static_assert(ROW_GROUP % 8 == 0, "whole blocks of 8 rows");

/* in each 128-bit half: v[j] float i becomes v[i] float j */
static inline void transpose_4x4_in_halves(__m256 v[4]) {
    const __m256d t0 = _mm256_castps_pd(_mm256_unpacklo_ps(v[0], v[1])), /* pairs interleaved: 2 x 2 */
        t1 = _mm256_castps_pd(_mm256_unpackhi_ps(v[0], v[1])), t2 = _mm256_castps_pd(_mm256_unpacklo_ps(v[2], v[3])),
        t3 = _mm256_castps_pd(_mm256_unpackhi_ps(v[2], v[3]));
    v[0] = _mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2)); /* pairs of floats moved as doubles: 4 x 4 */
    v[1] = _mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2));
    v[2] = _mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3));
    v[3] = _mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3));
}

/* the first class of each block of 4 of a row of n_classes >= 4: the last block ends the row */
static inline int block_of_4_at(int k, int n_classes) { return k + 4 <= n_classes ? k : n_classes - 4; }

/* ROW_GROUP rows of n_classes >= 4 floats to lanes */
static void rows_to_lanes_4(float *lanes, const float *rows, int n_classes) {
    for (int r = 0; r < ROW_GROUP; r += 8)
        for (int k = 0; k < n_classes; k += 4) {
            const int at = block_of_4_at(k, n_classes);
            __m256 v[4];
            for (int j = 0; j < 4; j++)
                v[j] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows + (r + j) * n_classes + at)),
                                            _mm_loadu_ps(rows + (r + j + 4) * n_classes + at), 1);
            transpose_4x4_in_halves(v);
            for (int i = 0; i < 4; i++) _mm256_storeu_ps(lanes + (at + i) * ROW_GROUP + r, v[i]);
        }
}

/* and back */
static void lanes_to_rows_4(float *rows, const float *lanes, int n_classes) {
    for (int r = 0; r < ROW_GROUP; r += 8)
        for (int k = 0; k < n_classes; k += 4) {
            const int at = block_of_4_at(k, n_classes);
            __m256 v[4];
            for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(lanes + (at + i) * ROW_GROUP + r);
            transpose_4x4_in_halves(v);
            for (int j = 0; j < 4; j++) {
                _mm_storeu_ps(rows + (r + j) * n_classes + at, _mm256_castps256_ps128(v[j]));
                _mm_storeu_ps(rows + (r + j + 4) * n_classes + at, _mm256_extractf128_ps(v[j], 1));
            }
        }
}
