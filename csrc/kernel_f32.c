/* kernel_f32.c: the kernels for float logits (kernel_template.h). */
#define STORAGE float
#define TARGET float
#define LOAD(value) ((double)(value))
#define STORE(value) ((float)(value))
#define SUFFIX(name) name##_f32
#define EXP_DIFFERENCE exp_difference_of_floats
#define COMPENSATED_SUMS 0
#include "kernel_template.h"
