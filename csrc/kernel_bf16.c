/* kernel_bf16.c: the kernels for bfloat16 logits (kernel_template.h), computed in double. */
#include "half_precision.h"
#define STORAGE uint16_t
#define TARGET float
#define LOAD(value) bf16_to_double(value)
#define STORE(value) bf16_from_double(value)
#define SUFFIX(name) name##_bf16
#define EXP_DIFFERENCE exp_difference_of_floats
#define COMPENSATED_SUMS 0
#include "kernel_template.h"
