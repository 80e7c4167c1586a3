/* type_f32.h: the logit type macros of kernel_template.h for float logits. */
#define STORAGE float
#define STORAGE_IS_FLOAT 1 /* kernel_few_classes_layout.h: register transposes of floats on AVX-512 and AVX2 */
#define TARGET float
#define LOAD(value) ((double)(value))
#define STORE(value) ((float)(value))
#define STORE_FLOAT(value) (value) /* a float result, as it is (FLOAT_EXP) */
#define TYPE_NAME f32
#define EXP_DIFFERENCE exp_difference_of_floats
#define COMPENSATED_SUMS 0
#define FLOAT_EXP 1
#define LOGSUMEXP_REDO_BELOW 2.0 /* kernel_row_functions.h: float exps' error within 2 ulp of the result */
#define LOAD_16_AS_FLOATS load_16_floats /* the vector row max (vector_row_max.h) */
#define LOAD_16_AS_FLOATS_MASKED load_16_floats_masked /* AVX-512 only */
#define SCRATCH float /* kernel_template.h: its exps are floats already */
