/* softmax_ce.h: the kernel's public interface.
 *
 * The part between the cdef markers is also what cffi is told (softmax_ce_c/_build.py reads it), so
 * every declaration lives here once. It must stay plain C that cffi's parser accepts: no macros, no
 * includes.
 *
 * Layout: every array is C-contiguous; a (N, K) array is N rows of K classes. Sizes are int64_t.
 * Half-precision arrays are passed as their bit patterns (uint16_t): IEEE binary16 for _f16,
 * bfloat16 for _bf16; they are computed in double inside, like float. Every function may be called
 * from many threads at once (the only global state, the instruction-set choice and the thread pool,
 * is thread-safe) and returns an sce_status.
 */
#ifndef SOFTMAX_CE_H
#define SOFTMAX_CE_H

#include <stdint.h>

/* cdef-begin */
typedef enum {
    SCE_OK = 0,
    SCE_ERR_TARGET_RANGE = 1, /* a class target outside [0, K) that is not ignore_index */
    SCE_ERR_SHAPE = 2,        /* n_rows < 0 or n_classes < 1 */
    SCE_ERR_ARGUMENT = 3,     /* a target or row_z_loss buffer the call needs is NULL, or an option
                                 is out of its range (other pointers must be valid) */
    SCE_ERR_MEMORY = 4        /* the work space could not be allocated */
} sce_status;

typedef enum { SCE_MEAN = 0, SCE_SUM = 1, SCE_NONE = 2 } sce_reduction;

typedef struct {
    int64_t n_rows;                /* N: independent rows */
    int64_t n_classes;             /* K: length of each row (the class axis) */
    int reduction;                 /* sce_reduction: how the gradient is scaled */
    int64_t ignore_index;          /* class-index rows with this target: loss 0, gradient 0 */
    double label_smoothing;        /* eps in [0, 1]: targets become (1 - eps) target + eps / K */
    double z_loss;                 /* >= 0: adds z_loss * lse^2 to every row that is not ignored */
    double softcap;                /* > 0: logits become softcap * tanh(x / softcap); 0: off */
    double grad_scale;             /* the upstream gradient of the returned loss */
    const double *weight;          /* (K) class weights, or NULL for all ones */
    const double *row_grad_scale;  /* (N) upstream gradient per row (reduction none), or NULL */
    int n_threads;                 /* >= 1: threads the rows are shared out to (results do not depend on it) */
    int64_t *target_copy;          /* (N) work space for the private copy of class-index targets, apart
                                      from every other argument (its contents afterwards are
                                      unspecified), or NULL for the kernel to allocate one */
} sce_params;

typedef struct {
    double *row_loss;      /* (N) out: each row's cross-entropy, in double so reductions lose nothing */
    double *row_z_loss;    /* (N) out: each row's z-loss term, or NULL when z_loss is 0 */
    double ce_denominator; /* out: what a mean divides the summed cross-entropy by (the total target
                              weight of the rows not ignored; N for probability targets) */
    double z_denominator;  /* out: what a mean divides the summed z-loss by (rows not ignored) */
    double loss_sum;       /* out: the sum of row_loss, compensated, in a fixed order */
    double z_loss_sum;     /* out: the sum of row_z_loss (0 without z_loss) */
    int64_t bad_row;       /* out, with SCE_ERR_TARGET_RANGE: the first row out of range */
    int64_t bad_value;     /* out, with SCE_ERR_TARGET_RANGE: its target */
} sce_result;

/* Softmax cross-entropy of each row and, unless grad is NULL, the gradient of the reduced loss.
 *   grad          (N, K)  out: the gradient, or NULL for the loss alone; may be logits itself
 *   result                out: row losses and the mean's denominators (see sce_result)
 *   logits        (N, K)
 *   target_index  (N)     class indices; or NULL, then target_prob is used
 *   target_prob   (N, K)  class probabilities (need not sum to 1); NULL when target_index is given
 * Targets are all checked before anything is written. Class indices are read once each, into a
 * private copy (params->target_copy, or one the kernel allocates) that is checked and then used: the
 * gradient may be written over target_index, and another thread changing it meanwhile cannot take a
 * row out of range. The work space (2K values per thread, on whole cache lines, or per row when the
 * class axis is shared out; none for rows of few classes: K <= 48, or for float32 rows whose only
 * target is a class index K <= 72, 88 on AVX-512) is allocated once per call. */
int sce_cross_entropy_f32(float *grad, sce_result *result, const sce_params *params,
                          const float *logits, const int64_t *target_index, const float *target_prob);
int sce_cross_entropy_f64(double *grad, sce_result *result, const sce_params *params,
                          const double *logits, const int64_t *target_index,
                          const double *target_prob);
int sce_cross_entropy_f16(uint16_t *grad, sce_result *result,
                          const sce_params *params, const uint16_t *logits,
                          const int64_t *target_index, const float *target_prob);
int sce_cross_entropy_bf16(uint16_t *grad, sce_result *result,
                           const sce_params *params, const uint16_t *logits,
                           const int64_t *target_index, const float *target_prob);

/* Row-wise log-sum-exp: lse (N) out, x (N, K). Only n_rows, n_classes and n_threads of params are
 * read (the rows are shared out to threads, as the cross-entropy's). */
int sce_logsumexp_f32(float *lse, const sce_params *params, const float *x);
int sce_logsumexp_f64(double *lse, const sce_params *params, const double *x);
int sce_logsumexp_f16(uint16_t *lse, const sce_params *params, const uint16_t *x);
int sce_logsumexp_bf16(uint16_t *lse, const sce_params *params, const uint16_t *x);

/* Row-wise log-softmax and softmax: out (N, K), x (N, K). */
int sce_log_softmax_f32(float *out, const sce_params *params, const float *x);
int sce_log_softmax_f64(double *out, const sce_params *params, const double *x);
int sce_log_softmax_f16(uint16_t *out, const sce_params *params, const uint16_t *x);
int sce_log_softmax_bf16(uint16_t *out, const sce_params *params, const uint16_t *x);
int sce_softmax_f32(float *out, const sce_params *params, const float *x);
int sce_softmax_f64(double *out, const sce_params *params, const double *x);
int sce_softmax_f16(uint16_t *out, const sce_params *params, const uint16_t *x);
int sce_softmax_bf16(uint16_t *out, const sce_params *params, const uint16_t *x);

/* The plain forms, which the Python layer calls: the functions above with the sizes (and the few
 * options of a plain call) as arguments instead of an sce_params, whose construction from Python
 * costs a small call about 0.3 us. The other fields of sce_params are 0 or NULL: for the
 * cross-entropy no weight, label smoothing, z-loss or softcap, one grad_scale for every row, and
 * class-index targets (float32 and float64 logits only). Its row_loss (N, out) becomes
 * result->row_loss; NULL when only the sums are wanted (the row losses then go to a work space of
 * their own). result->row_z_loss is NULL. target_copy is params->target_copy. */
int sce_cross_entropy_plain_f32(float *grad, sce_result *result, double *row_loss, const float *logits,
                                const int64_t *target_index, int64_t *target_copy, int64_t n_rows,
                                int64_t n_classes, int reduction, int64_t ignore_index, double grad_scale,
                                int n_threads);
int sce_cross_entropy_plain_f64(double *grad, sce_result *result, double *row_loss, const double *logits,
                                const int64_t *target_index, int64_t *target_copy, int64_t n_rows,
                                int64_t n_classes, int reduction, int64_t ignore_index, double grad_scale,
                                int n_threads);
int sce_logsumexp_plain_f32(float *lse, const float *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_logsumexp_plain_f64(double *lse, const double *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_logsumexp_plain_f16(uint16_t *lse, const uint16_t *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_logsumexp_plain_bf16(uint16_t *lse, const uint16_t *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_log_softmax_plain_f32(float *out, const float *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_log_softmax_plain_f64(double *out, const double *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_log_softmax_plain_f16(uint16_t *out, const uint16_t *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_log_softmax_plain_bf16(uint16_t *out, const uint16_t *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_softmax_plain_f32(float *out, const float *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_softmax_plain_f64(double *out, const double *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_softmax_plain_f16(uint16_t *out, const uint16_t *x, int64_t n_rows, int64_t n_classes, int n_threads);
int sce_softmax_plain_bf16(uint16_t *out, const uint16_t *x, int64_t n_rows, int64_t n_classes, int n_threads);

/* The instruction set the kernels run with: "avx512bf16", "avx512", "avx2" or "baseline" (the
 * build's default), the best this CPU has, or a lower one named by the environment variable
 * SOFTMAX_CE_C_ISA. */
const char *sce_isa(void);
/* Switches every kernel to the named instruction set if this CPU has it (SCE_OK), else returns
 * SCE_ERR_ARGUMENT and changes nothing. For tests and benchmarks; calls already running finish
 * with the instruction set they started with. */
int sce_select_isa(const char *name);
/* The names of the instruction sets this build has, best first, for index 0, 1, ...; NULL past the
 * last (baseline, which every build has). */
const char *sce_isa_name(int index);
/* cdef-end */

#endif
