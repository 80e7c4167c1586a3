/* kernel_row_sums.h: row sums in PARTIAL_SUMS lanes, in a fixed order, compensated for
 * double logits;
 * part of kernel_template.h, which includes the parts in order. */

/* Row sums are kept in PARTIAL_SUMS independent lanes: that fixes the order of the additions, whatever
 * the compiler, and lets it keep several in flight. With COMPENSATED_SUMS (double logits) each lane
 * also keeps its rounding error (TwoSum), since a double sum of double terms would otherwise lose
 * about sqrt(K) ulp; float logits have 29 spare bits in a double and need no such care. */
#define PARTIAL_SUMS 16

typedef struct {
    double sum[PARTIAL_SUMS];
    double carry[PARTIAL_SUMS]; /* the rounding errors of sum; zero unless COMPENSATED_SUMS */
} partial_sums;

/* sum + term, its rounding error (Knuth's TwoSum) added to carry */
static inline void add_with_carry(double *sum, double *carry, double term) {
    const double s = *sum + term, term_part = s - *sum;
    *carry += (*sum - (s - term_part)) + (term - term_part);
    *sum = s;
}

static inline void add_to_sum(double *sum, double *carry, double term) {
    if (COMPENSATED_SUMS)
        add_with_carry(sum, carry, term);
    else
        *sum += term;
}

/* an infinite term leaves a NaN carry; the sum alone is then the answer */
static inline double with_carry(double sum, double carry) {
    return isfinite(sum) ? sum + carry : sum;
}

/* The row loops visit a row in blocks of PARTIAL_SUMS elements, element j of a block going to
 * lane j: a fixed order, and a block body the compiler can vectorise. */
static inline void add_to_lane(partial_sums *sums, int lane, double term) {
    add_to_sum(&sums->sum[lane], &sums->carry[lane], term);
}

static double total_of(const partial_sums *sums) {
    double sum = 0.0, carry = 0.0;
    for (int j = 0; j < PARTIAL_SUMS; j++) {
        add_to_sum(&sum, &carry, sums->sum[j]);
        carry += sums->carry[j];
    }
    return with_carry(sum, carry);
}
