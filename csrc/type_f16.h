/* type_f16.h: the logit type macros of kernel_template.h for IEEE binary16 logits, computed in double. */
#include "half_precision.h"
#define STORAGE uint16_t
#define TARGET float
#define LOAD(value) f16_to_double(value)
#define STORE(value) f16_from_double(value)
#define TYPE_NAME f16
#define EXP_DIFFERENCE exp_difference_of_floats
#define COMPENSATED_SUMS 0
#define FLOAT_EXP 0
#define LOAD_16_AS_FLOATS load_16_f16 /* the vector row max (vector_row_max.h) */
#define LOAD_16_AS_FLOATS_MASKED load_16_f16_masked /* AVX-512 only */
#define SCRATCH double
#define WIDENED_BLOCKS /* the row loops read these logits widened to floats (block_values) */
#define STORAGE_OF_FLOAT(value) f16_from_float(value) /* exact for a logit's value (vector_row_max.h) */
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "f16_round_avx2.h"
#define LOAD_4_AS_DOUBLES f16_load_4 /* the AVX2 exp pass (exp_double_run) */
#define SCALED_MINUS_16(out, e, scaling, c, c_constant)                                                            \
    f16_scaled_minus_16(out, e, _mm256_set1_pd((scaling).factor), c, _mm256_set1_pd(c_constant))
#define LOG_SOFTMAX_16(out, x, max, log_sum) f16_log_softmax_16(out, x, _mm256_set1_pd(max), _mm256_set1_pd(log_sum))
#define STORE_16_FLOATS f16_store_16_odd_floats /* the few-classes gradient (kernel_few_classes_transposes.h) */
#endif
