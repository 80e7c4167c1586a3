/* vector_exp_avx512.h: exp_difference_in_float and expf_of_row (exp_difference.h) for 16 float lanes
 * in AVX-512 intrinsics. The same splits, reductions and polynomials; k comes from vrndscaleps and
 * 2^k is applied by vscalefps in one step, with one rounding also for subnormal results: the integer
 * work GCC vectorises for the portable versions (two halves of 2^k built from bits) is 7 of their
 * ~34 instructions per block. Measured against expl like the portable versions: 0.91 and 1.13 float
 * ulp at most. */
#ifndef VECTOR_EXP_AVX512_H
#define VECTOR_EXP_AVX512_H

#include <immintrin.h>

#include "exp_difference.h"

/* p 2^k for the lanes kept, else 0, as vscalefps rounds it (once, subnormal results too) but in
 * double, converted to float: without the microcode assist vscalefps takes on Intel for a result
 * that is subnormal (about 80 ns for each instruction) */
static inline __m512 exp16_scaled_in_double(__mmask16 kept, __m512 p, __m512 k) {
    const __m512d low = _mm512_maskz_scalef_pd((__mmask8)kept, _mm512_cvtps_pd(_mm512_castps512_ps256(p)),
                                               _mm512_cvtps_pd(_mm512_castps512_ps256(k)));
    const __m512d high = _mm512_maskz_scalef_pd((__mmask8)(kept >> 8), _mm512_cvtps_pd(_mm512_extractf32x8_ps(p, 1)),
                                                _mm512_cvtps_pd(_mm512_extractf32x8_ps(k, 1)));
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(low)), _mm512_cvtpd_ps(high), 1);
}

/* careful (for results that may be subnormal) scales in double, as exp16_of_row */
static inline __m512 exp16_difference(__m512 x, __m512 m, int careful) {
    const __m512 hi = _mm512_sub_ps(x, m);
    const __m512 x_part = _mm512_add_ps(hi, m);
    const __m512 lo = _mm512_sub_ps(_mm512_sub_ps(x, x_part), _mm512_add_ps(m, _mm512_sub_ps(hi, x_part)));
    /* below the floor the result is 0 (and lo may be NaN: x = -inf); NaN passes through */
    const __mmask16 underflows = _mm512_cmp_ps_mask(hi, _mm512_set1_ps(VEXPF_FLOOR), _CMP_LT_OQ);
    const __m512 d = _mm512_mask_mov_ps(hi, underflows, _mm512_set1_ps(VEXPF_FLOOR));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(VEXPF_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_add_ps(_mm512_fnmadd_ps(k, _mm512_set1_ps(VEXPF_LN2_HI), d),
                                   _mm512_fnmadd_ps(k, _mm512_set1_ps(VEXPF_LN2_LO), _mm512_maskz_mov_ps(~underflows, lo)));
    __m512 p = _mm512_set1_ps(VEXPF_C6);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(VEXPF_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(VEXPF_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(VEXPF_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(VEXPF_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return careful ? exp16_scaled_in_double(~underflows, p, k) : _mm512_maskz_scalef_ps(~underflows, p, k);
}

/* expf_of_row (exp_difference.h) for 16 lanes: the exps of a row whose max expf_row_of takes, in 14
 * operations instead of exp16_difference's 21; 2^k by vscalefps. */
typedef struct {
    __m512 zero_below, shift_hi, shift_lo;
    int careful; /* whether results may be subnormal (see exp16_of_row) */
} exp16_row;

static inline int exp16_row_of(exp16_row *row, float m, int careful) {
    expf_row scalar;
    if (!expf_row_of(&scalar, m)) return 0;
    *row = (exp16_row){_mm512_set1_ps(scalar.zero_below), _mm512_set1_ps(scalar.shift_hi),
                       _mm512_set1_ps(scalar.shift_lo), careful};
    return 1;
}

/* vrndscalepd's rounding down to a multiple of 2^-8 (8 fraction bits): expf_row_of's
 * floor(shift * 256) / 256 */
#define DOWN_TO_2_MINUS_8 ((8 << 4) | _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)

/* exp16_row_of for 16 rows at once, one to a lane, m their maxima: the lanes whose rows it takes
 * (the others' constants are of no use) */
static inline __mmask16 exp16_rows_of(exp16_row *rows, __m512 m) {
    const __m512d log2e = _mm512_set1_pd(VEXP_LOG2E);
    const __m512d shift_low = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(m)), log2e);
    const __m512d shift_high = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(m, 1)), log2e);
    const __m512d hi_low = _mm512_roundscale_pd(shift_low, DOWN_TO_2_MINUS_8);
    const __m512d hi_high = _mm512_roundscale_pd(shift_high, DOWN_TO_2_MINUS_8);
    rows->shift_hi = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(hi_low)), _mm512_cvtpd_ps(hi_high), 1);
    rows->shift_lo = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(_mm512_sub_pd(shift_low, hi_low))),
                                        _mm512_cvtpd_ps(_mm512_sub_pd(shift_high, hi_high)), 1);
    rows->zero_below = _mm512_add_ps(m, _mm512_set1_ps(VEXPF_FLOOR));
    rows->careful = 0;
    return _mm512_cmp_ps_mask(_mm512_abs_ps(m), _mm512_set1_ps(EXPF_ROW_LIMIT), _CMP_LT_OQ); /* not NaN either */
}

/* Lanes below zero_below (exp rounds to 0) are zeroed by the mask of vscalefps, not clamped to a
 * floor: a vscalefps whose result is subnormal or underflows to 0 takes a microcode assist on Intel
 * (about 80 ns per instruction), and masked lanes take none; a careful row's results, which may be
 * subnormal, are scaled in double. -inf logits give NaN in the lanes masked off; NaN logits pass
 * through (the comparison is unordered). */
static inline __m512 exp16_of_row(__m512 x, const exp16_row *row) {
    const __mmask16 kept = _mm512_cmp_ps_mask(x, row->zero_below, _CMP_NLT_UQ);
    const __m512 k = _mm512_roundscale_ps(_mm512_fmsub_ps(x, _mm512_set1_ps(EXP2F_LOG2E_HI), row->shift_hi),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_add_ps(_mm512_fmsub_ps(x, _mm512_set1_ps(EXP2F_LOG2E_HI), _mm512_add_ps(k, row->shift_hi)),
                                   _mm512_fmsub_ps(x, _mm512_set1_ps(EXP2F_LOG2E_LO), row->shift_lo));
    __m512 p = _mm512_set1_ps(EXP2F_C6);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP2F_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP2F_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP2F_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP2F_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP2F_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return row->careful ? exp16_scaled_in_double(kept, p, k) : _mm512_maskz_scalef_ps(kept, p, k);
}

#endif
