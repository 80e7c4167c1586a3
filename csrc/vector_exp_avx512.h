/* vector_exp_avx512.h: exp_difference_in_float (exp_difference.h) for 16 float lanes in AVX-512
 * intrinsics. The same TwoSum split, reduction and polynomial (vector_exp.h); k comes from
 * vrndscaleps and 2^k is applied by vscalefps in one step, with one rounding also for subnormal
 * results: the integer work GCC vectorises for the portable version (two halves of 2^k built from
 * bits) is 7 of its ~34 instructions per block. Measured against expl like the portable version:
 * at most 0.88 float ulp. */
#ifndef VECTOR_EXP_AVX512_H
#define VECTOR_EXP_AVX512_H

#include <immintrin.h>
#include <math.h>

#include "vector_exp.h"

static inline __m512 exp16_difference(__m512 x, __m512 m) {
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
    return _mm512_scalef_ps(p, k);
}

/* The same exps for a row whose max m is below EXP16_ROW_LIMIT in magnitude, in 14 operations
 * instead of 21: the difference is taken in base 2 by FMAs, which are exact where TwoSum took six
 * operations. With s = m log2(e) split into s_hi (on a 2^-8 grid) + s_lo, and x clamped to
 * m - 110 (exp rounds to 0 there):
 *   d = x LOG2E_HI - s_hi, k = round(d),
 *   r = (x LOG2E_HI - (k + s_hi)) + (x LOG2E_LO - s_lo) = (x - m) log2(e) - k, |r| <= 0.503,
 * where k + s_hi is exact (|k + s_hi| < 2^15 on the 2^-8 grid) and so is the product in the first
 * FMA, which rounds once; then 2^r by the same polynomial in r ln 2 and 2^k by vscalefps.
 * Measured against expl over 3.2e8 differences: at most 1.13 float ulp (the two roundings of r;
 * exp16_difference 0.91 by the same measure). Not shift-invariant like exp16_difference: x + c
 * and m + c, both exact, may give exps a bit apart. */
#define EXP16_ROW_LIMIT 0x1p14f
#define EXP2F_LOG2E_HI 1.442695e+00f /* log2(e) rounded to float ... */
#define EXP2F_LOG2E_LO 1.925963e-08f /* ... and the rest */
/* 2^r = 1 + r (C1 + r (C2 + ...)), C_j = VEXPF_C_j ln2^j */
#define EXP2F_C1 6.931472e-01f
#define EXP2F_C2 2.4022648e-01f
#define EXP2F_C3 5.5503625e-02f
#define EXP2F_C4 9.618527e-03f
#define EXP2F_C5 1.3390217e-03f
#define EXP2F_C6 1.532106e-04f

typedef struct {
    __m512 floor, shift_hi, shift_lo;
} exp16_row;

/* whether exp16_of_row takes the row of max m, and if so its constants */
static inline int exp16_row_of(exp16_row *row, float m) {
    if (!(fabsf(m) < EXP16_ROW_LIMIT)) return 0; /* also a max that is NaN or infinite */
    const double shift = (double)m * VEXP_LOG2E;
    const double shift_hi = floor(shift * 256.0) / 256.0;
    *row = (exp16_row){_mm512_set1_ps(m - 110.0f), _mm512_set1_ps((float)shift_hi),
                       _mm512_set1_ps((float)(shift - shift_hi))};
    return 1;
}

static inline __m512 exp16_of_row(__m512 x, const exp16_row *row) {
    x = _mm512_max_ps(row->floor, x); /* NaN, the second operand, passes through */
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
    return _mm512_scalef_ps(p, k);
}

#endif
