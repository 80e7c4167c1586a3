/* kernel_template.h: the row kernels, written once for one logit type and one instruction set.
 *
 * softmax_ce_c/_build.py makes one translation unit per (instruction set, type): it includes an
 * isa_*.h (a target pragma, ISA_NAME), a type_*.h, then this file. A type_*.h defines
 *   STORAGE           the element type of logits and outputs (float, double, or uint16_t bits)
 *   TARGET            the element type of probability targets (float, or double for double logits)
 *   LOAD(v), STORE(d) STORAGE to double and back (one rounding); STORE_FLOAT(f) from a float
 *                     (FLOAT_EXP types only)
 *   TYPE_NAME         f32, f64, f16 or bf16
 *   EXP_DIFFERENCE    exp(x - m) accurate for that type (exp_difference.h)
 *   COMPENSATED_SUMS  1 to keep the rounding errors of row sums (needed for double logits)
 *   FLOAT_EXP         1 to evaluate exp in float (float32, and bfloat16, whose 8 bits are far from
 *                     float's 24); its scratch is float then
 *   LOAD_16_AS_FLOATS for logits that floats hold exactly, the loader of the vector row max
 *                     (vector_row_max.h), and LOAD_16_AS_FLOATS_MASKED, its AVX-512 form for a
 *                     row's end; both left undefined for double logits
 *   WIDENED_BLOCKS    defined for 16-bit logits (see block_values)
 *   ROUND_16_FLOATS   optional, STORE_FLOAT of 16 floats in an __m512 to 16 STORAGE in an __m256i
 *   SCALED_MINUS_16   optional (AVX2), scaled_minus_values' loop for 16 values in intrinsics
 *   LOAD_4_AS_DOUBLES optional (AVX2), 4 logits as doubles, for exp_double_run (float16)
 *   LOG_SOFTMAX_16    optional (AVX2), log_softmax_values' loop for 16 values in intrinsics (float16)
 *   STORAGE_OF_FLOAT  optional (16-bit logits), the bits of a float that is a logit's value, for
 *                     AVX2's row max
 *   STORE_16_FLOATS   optional (16-bit logits), 16 floats (two __m256) to 16 STORAGE as STORE
 *                     rounds them (float16: floats rounded to odd, float_rounded_to_odd); for AVX2's
 *                     few-classes groups
 *   SCRATCH           the type a row's exps (and softcap slopes) are kept in between passes: float
 *                     for FLOAT_EXP types (their exps are floats already), double where the gradient
 *                     must be exact to more bits (float64, and float16's correct rounding)
 * The entry points (kernel_cross_entropy.h, kernel_row_functions.h: the parts included at the end,
 * in order) are named sce_<function>_<type>_<isa>; dispatch.c exports them under
 * the names of softmax_ce.h, choosing the instruction set once. All arithmetic is in double (but the
 * exps of FLOAT_EXP types, and their gradient products); STORAGE is only what is read and written.
 * Rows are shared out to threads in chunks (thread_pool.h), or with fewer rows than threads their
 * classes are (kernel_split_classes.h); rows of few classes (takes_groups: float32 88 on AVX-512, 72
 * elsewhere; 48 the others, and 48 with options) are computed ROW_GROUP at a time, across vector
 * lanes. A row's result depends on none of this: not on the threads, the chunks or its neighbours.
 *
 * Every row goes through the same statistics of its logits x' (after the optional softcap): the max
 * m, the first index a holding it (its exp is exactly 1) and rest = sum over k != a of exp(x'_k - m).
 * The row's sum is 1 + rest, its log is log1p(rest), and 1 - softmax_a is rest / (1 + rest): all
 * accurate when rest is tiny, which is exactly when a confident model's loss and target gradient
 * would otherwise cancel.
 *
 * The loss of a row is sum_k c_k (lse - x'_k) for target coefficients c_k (a class index, label
 * smoothing and class weights all reduce to some c), and its gradient is p_k T - c_k with T = sum c_k.
 * Writing (lse - x'_k) as (m - x'_k) + log1p(rest) keeps every term >= 0: no cancellation. */

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "exp_difference.h"
#include "vector_log.h"
#include "softmax_ce.h"
#include "stream_store.h"
#include "thread_pool.h"

#define KERNEL_CONCAT(name, type, isa) name##_##type##_##isa
#define KERNEL_EXPAND(name, type, isa) KERNEL_CONCAT(name, type, isa)
#define KERNEL_NAME(name) KERNEL_EXPAND(name, TYPE_NAME, ISA_NAME)

/* Blocks of the row loops are inlined with constant arguments (the lane count, store 0 or 1, softcap
 * 0 or not) so that each use gets a branch-free, vectorisable copy. */
#define SPECIALISED static inline __attribute__((always_inline))

/* The kernels, each part building on the ones before it: */
#include "kernel_row_sums.h"
#include "kernel_softcap.h"
#include "kernel_row_max.h"
#include "kernel_exp_blocks.h"
#include "kernel_alongside_exps.h"
#include "kernel_subnormal_rows.h"
#include "kernel_float_runs.h"
#include "kernel_double_runs.h"
#include "kernel_row_stats.h"
#include "kernel_targets.h"
#include "kernel_gradient.h"
#include "kernel_cross_entropy.h"
#include "kernel_row_functions.h"
