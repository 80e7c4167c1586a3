/* type_bf16.h: the logit type macros of kernel_template.h for bfloat16 logits: their exps in float
 * as float32's (a bfloat16 ulp is 2^16 float ulps: each gradient element is within 1 ulp, correctly
 * rounded but near a tie), the rest in double. */
#include "half_precision.h"
#define STORAGE uint16_t
#define TARGET float
#define LOAD(value) bf16_to_double(value)
#define STORE(value) bf16_from_double(value)
#define STORE_FLOAT(value) bf16_from_float(value) /* a float result, rounded once (FLOAT_EXP) */
#define TYPE_NAME bf16
#define EXP_DIFFERENCE exp_difference_of_floats
#define COMPENSATED_SUMS 0
#define FLOAT_EXP 1
#define LOGSUMEXP_REDO_BELOW 0x1p-12 /* kernel_row_functions.h: float exps' error within 1/4 ulp of the result */
#define LOAD_16_AS_FLOATS load_16_bf16 /* the vector row max (vector_row_max.h) */
#define LOAD_16_AS_FLOATS_MASKED load_16_bf16_masked /* AVX-512 only */
#define SCRATCH float
#define WIDENED_BLOCKS /* the row loops read these logits widened to floats (block_values) */
#define STORAGE_OF_FLOAT(value) bf16_from_float(value) /* exact for a logit's value (vector_row_max.h) */
#if defined(__AVX512BF16__) /* the avx512bf16 build (isa_avx512bf16.h) */
#include "bf16_round_avx512.h"
#define ROUND_16_FLOATS bf16_round_16 /* the gradient loops' STORE_FLOAT, 16 at a time */
#elif defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#include "bf16_round_avx2.h"
/* scaled_minus_values' loop, 16 at a time */
#define SCALED_MINUS_16(out, e, scaling, c, c_constant)                                                            \
    bf16_scaled_minus_16(out, e, _mm256_set1_ps((scaling).hi), _mm256_set1_ps((scaling).lo), c,                    \
                         _mm256_set1_ps((float)(c_constant)))
#define STORE_16_FLOATS bf16_store_16 /* the few-classes gradient (kernel_few_classes_transposes.h) */
#endif
