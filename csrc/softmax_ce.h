/* softmax_ce.h: the kernel's public interface.
 *
 * The part between the cdef markers is also what cffi is told (softmax_ce_c/_build.py reads it), so
 * every declaration lives here once. It must stay plain C that cffi's parser accepts: no macros, no
 * includes.
 *
 * Layout: every array is C-contiguous; a (N, K) array is N rows of K classes. Sizes are int64_t.
 * Every function is re-entrant (no global state, no allocation) and returns an sce_status.
 */
#ifndef SOFTMAX_CE_H
#define SOFTMAX_CE_H

#include <stdint.h>

/* cdef-begin */
typedef enum {
    SCE_OK = 0,
    SCE_ERR_TARGET_RANGE = 1, /* a class target outside [0, K); sce_error names the first such row */
    SCE_ERR_SHAPE = 2,        /* n_rows < 0 or n_classes < 1 */
    SCE_ERR_ARGUMENT = 3      /* a required pointer is NULL */
} sce_status;

typedef struct {
    int64_t n_rows;    /* N: independent rows */
    int64_t n_classes; /* K: length of each row (the class axis) */
    double grad_scale; /* every gradient element is multiplied by this (1/N for a mean) */
} sce_params;

typedef struct {
    int64_t row;   /* the first row whose target is out of range */
    int64_t value; /* that row's target */
} sce_error;

/* Softmax cross-entropy of each row and, unless grad is NULL, its gradient.
 *   row_loss      (N)     out: each row's loss, in double so that reductions lose nothing
 *   grad          (N, K)  out: grad_scale * (softmax - target), or NULL for the loss alone
 *   logits        (N, K)
 *   target_index  (N)     class indices in [0, K); or NULL, then target_prob is used
 *   target_prob   (N, K)  class probabilities (need not sum to 1); NULL when target_index is given
 *   error                 filled when SCE_ERR_TARGET_RANGE is returned; nothing is written then
 */
int sce_cross_entropy_f32(float *grad, double *row_loss, sce_error *error, const sce_params *params,
                          const float *logits, const int64_t *target_index, const float *target_prob);
int sce_cross_entropy_f64(double *grad, double *row_loss, sce_error *error, const sce_params *params,
                          const double *logits, const int64_t *target_index,
                          const double *target_prob);

/* Row-wise log-sum-exp: lse (N) out, x (N, K). */
int sce_logsumexp_f32(float *lse, const sce_params *params, const float *x);
int sce_logsumexp_f64(double *lse, const sce_params *params, const double *x);

/* Row-wise log-softmax and softmax: out (N, K), x (N, K). */
int sce_log_softmax_f32(float *out, const sce_params *params, const float *x);
int sce_log_softmax_f64(double *out, const sce_params *params, const double *x);
int sce_softmax_f32(float *out, const sce_params *params, const float *x);
int sce_softmax_f64(double *out, const sce_params *params, const double *x);
/* cdef-end */

#endif
