/* vector_softcap.h: what the vector softcaps of float logits share (AVX-512:
 * vector_softcap_avx512.h, AVX2: vector_softcap_avx2.h, the same bits).
 *
 * softcapped8 (AVX2: softcapped4_reduce, then _finish) is softcapped (kernel_softcap.h) cut to what
 * float results need: x' = softcap tanh(u), u = x / softcap, and its slope 1 - tanh^2(u), from e =
 * exp(-2 |u|) and m = expm1(-2 |u|) as tanh |u| = -m / (2 + m) and 1 - tanh^2 = 4 e / (2 + m)^2. The
 * reduction is vexp_reduce's, the polynomial its Taylor series to degree 10, not 13, evaluated by
 * Estrin's scheme (the latency of a Horner chain left the lanes waiting). Measured against long
 * double: x' within 2^-40 relative, the slope 2^-41. For the exps x' feeds that is an absolute error,
 * at most softcap 2^-40: up to SOFTCAP_VECTOR_MAX = 2^10 a 2^-6 part of a float ulp. 2 / softcap is
 * rounded once more than 2 (x / softcap), which the same bound takes.
 *
 * A block of 16 logits all within the softcap (|u| <= 1, as a softcap is meant to be used) takes
 * softcapped8_near (AVX2: softcapped4_near) instead: x' = x P(u^2) and 1 - tanh^2 = 1 - u^2 P^2, P
 * the polynomial below for tanh(u) / u, about half the operations of the exp, its division and
 * products (A/B on Zen 3, float32 z_loss + softcap 30 of standard normal logits, the whole call,
 * one and two threads: 8192x1000 0.72-0.74, 256x128256 0.74, bfloat16 0.77-0.78). Measured against
 * long double over 8e7 values (softcaps 2^-20 to 2^20, a third of them at |u| near 1): x' within
 * 2^-41.97 relative, the slope 2^-40.5 (tanh^2 is 0.58 at |u| = 1, its error doubled by P's square
 * and 1.4 times larger relative to 1 - tanh^2). Other blocks keep softcapped8, 1.01-1.03x their
 * time before (the test): the choice is a block's, as lane by lane it would take both (1.23x slower
 * where every block had lanes of both). Float results mostly keep their bits (300 random calls
 * against the exps alone: 12 of 4.3e6 gradient elements changed, no loss).
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

/* whether the vector softcaps take a call's softcap (kernel_float_runs.h) */
static inline int float_runs_take_softcap(double softcap) {
    return softcap >= SOFTCAP_VECTOR_MIN && softcap <= SOFTCAP_VECTOR_MAX;
}

/* tanh(u) / u = 1 + sum_j TANH_Pj s^j, s = u^2 <= 1 (|x| <= softcap): a minimax polynomial for the
 * relative error (Remez, at 60 digits, the constant term fixed at 1 so that tiny logits pass
 * unchanged), 2.3e-13 (2^-42) with the coefficients rounded to double */
#define TANH_P1 -0.33333333329049103
#define TANH_P2 0.13333333082185111
#define TANH_P3 -0.05396820250742402
#define TANH_P4 0.02186895918679839
#define TANH_P5 -0.008860044150313095
#define TANH_P6 0.0035798804320880885
#define TANH_P7 -0.0014244717741339237
#define TANH_P8 0.0005350192609326454
#define TANH_P9 -0.00017217671425719144
#define TANH_P10 3.992947656852026e-05
#define TANH_P11 -4.734786031825013e-06

/* e underflows to 0 below this -2 |u| (the floor VEXP_FLOOR is for x = -inf): such lanes are zeroed
 * by a mask, and on AVX2 scaled by 2^0 first: a vscalefpd whose result underflows, or a product that
 * rounds to 0 from just below the subnormals, takes a microcode assist on Intel (exp16_of_row,
 * times_power_of_2_4). The mask changes no bit. */
#define SOFTCAP_E_ZERO_BELOW (-746.0)

#endif
