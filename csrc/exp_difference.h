/* exp_difference.h: exp(x - m) for a logit x and its row max m, accurate to the last bit that matters.
 *
 * The softmax of x_k is exp(x_k - m) / sum. If x_k - m were rounded first, its rounding error
 * |x_k - m| * eps would become a relative error of exp; for a spread of 100 that is 100 ulp. */
#ifndef EXP_DIFFERENCE_H
#define EXP_DIFFERENCE_H

#include "vector_exp.h"

/* float logits: the difference of two floats is exact in double (or off by 2^-53 relative), so plain
 * double arithmetic already gives exp of the exact difference. */
static inline double exp_difference_of_floats(double x, double m) { return exp_of_nonpositive(x - m); }

/* float logits in float arithmetic (twice the vector lanes): x - m split exactly into hi + lo
 * (TwoSum in float), then exp(hi) (1 + lo) with expf_of_nonpositive's 1.2 ulp. Used for float32
 * logits, whose contract has room for it; half precision, rounded bit-exactly, keeps the double. */
static inline double exp_difference_in_float(float x, float m) {
    const float hi = x - m;
    const float x_part = hi + m;
    const float lo = (x - x_part) - (m + (hi - x_part));
    const float e = expf_of_nonpositive(hi);
    const float e_lo = lo == lo ? VEXPF_FMA(e, lo, e) : e; /* selected in float: one conversion, not two */
    return e_lo;
}

/* double logits: split x - m into hi + lo exactly (Knuth's TwoSum) and use exp(hi + lo) =
 * exp(hi) * (1 + lo), exact to first order since |lo| <= ulp(hi) / 2. lo is NaN when x is -inf;
 * exp(hi) is then 0, which is the answer. */
static inline double exp_difference_of_doubles(double x, double m) {
    double hi = x - m;
    double x_part = hi + m;
    double lo = (x - x_part) - (m + (hi - x_part));
    double e = exp_of_nonpositive(hi);
    return lo == lo ? e + e * lo : e;
}

#endif
