/* kernel_f64.c: the kernels for double logits (kernel_template.h). */
#define STORAGE double
#define TARGET double
#define LOAD(value) (value)
#define STORE(value) (value)
#define SUFFIX(name) name##_f64
#define EXP_DIFFERENCE exp_difference_of_doubles
#define COMPENSATED_SUMS 1
#include "kernel_template.h"
