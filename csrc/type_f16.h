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
#define WIDENED_BLOCKS /* the row loops read these logits widened to floats (kernel_template.h) */
