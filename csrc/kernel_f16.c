/* kernel_f16.c: the kernels for IEEE binary16 logits (kernel_template.h), computed in double. */
#include "half_precision.h"
#define STORAGE uint16_t
#define TARGET float
#define LOAD(value) f16_to_double(value)
#define STORE(value) f16_from_double(value)
#define SUFFIX(name) name##_f16
#define EXP_DIFFERENCE exp_difference_of_floats
#define COMPENSATED_SUMS 0
#include "kernel_template.h"
