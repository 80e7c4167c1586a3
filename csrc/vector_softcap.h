/* vector_softcap.h: what the vector softcaps of float logits share (AVX-512:
 * vector_softcap_avx512.h, AVX2: vector_softcap_avx2.h, the same bits).
 *
 * softcapped8 (AVX2: softcapped4_reduce, then _finish) is softcapped (kernel_template.h) cut to what
 * float results need: x' = softcap tanh(u), u = x / softcap, and its slope 1 - tanh^2(u), from e =
 * exp(-2 |u|) and m = expm1(-2 |u|) as tanh |u| = -m / (2 + m) and 1 - tanh^2 = 4 e / (2 + m)^2. The
 * reduction is vexp_reduce's, the polynomial its Taylor series to degree 10, not 13, evaluated by
 * Estrin's scheme (the latency of a Horner chain left the lanes waiting). Measured against long
 * double: x' within 2^-40 relative, the slope 2^-41. For the exps x' feeds that is an absolute error,
 * at most softcap 2^-40: up to SOFTCAP_VECTOR_MAX = 2^10 a 2^-6 part of a float ulp. 2 / softcap is
 * rounded once more than 2 (x / softcap), which the same bound takes.
 *
 * capped_exp8 (AVX2: capped_exp4_reduce, then _finish) is exp(x' - m'), m' the row's max x', rounded
 * to float: the reduction of the float exp and expf_of_nonpositive_sum's polynomial, in double: its
 * fit (4e-9 relative) and one rounding to float, at most 0.55 float ulp measured against expl over
 * 3.2e8 differences (expf_of_double 0.91), and no split of the difference into floats. */
#ifndef VECTOR_SOFTCAP_H
#define VECTOR_SOFTCAP_H

#include "exp_difference.h"

/* other softcaps take the portable loop: above, x' would be off by more than 2^-30; below, 2 /
 * softcap nears overflow (from 2^-1023 it is inf, and a zero logit would give 0 inf = NaN) */
#define SOFTCAP_VECTOR_MIN 0x1p-1000
#define SOFTCAP_VECTOR_MAX 0x1p10

/* whether the vector softcaps take a call's softcap (the float runs of kernel_template.h) */
static inline int float_runs_take_softcap(double softcap) {
    return softcap >= SOFTCAP_VECTOR_MIN && softcap <= SOFTCAP_VECTOR_MAX;
}

/* e underflows to 0 below this -2 |u| (the floor VEXP_FLOOR is for x = -inf): such lanes are zeroed
 * by a mask, and on AVX2 scaled by 2^0 first: a vscalefpd whose result underflows, or a product that
 * rounds to 0 from just below the subnormals, takes a microcode assist on Intel (exp16_of_row,
 * times_power_of_2_4). The mask changes no bit. */
#define SOFTCAP_E_ZERO_BELOW (-746.0)

#endif
