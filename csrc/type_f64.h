/* type_f64.h: the logit type macros of kernel_template.h for double logits. */
#define STORAGE double
#define STORAGE_IS_DOUBLE 1 /* exps in AVX-512 and AVX2 intrinsics (kernel_double_runs.h) */
#define TARGET double
#define LOAD(value) (value)
#define STORE(value) (value)
#define TYPE_NAME f64
#define EXP_DIFFERENCE exp_difference_of_doubles
#define COMPENSATED_SUMS 1
#define FLOAT_EXP 0
#define SCRATCH double
