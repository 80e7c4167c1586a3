/* kernel_subnormal_rows.h: the rows whose exps or gradient products may be subnormal, told apart
 * by their min (careful_exps, tiny_products);
 * part of kernel_template.h, which includes the parts in order. */

/* Intel's cores take a microcode assist, about 45 ns for a multiplication or an FMA and 80 for a
 * vscalefps, for each vector instruction whose result is subnormal (or underflows from just above)
 * or that takes a subnormal operand; additions, conversions and masked-off lanes take none. Float32
 * rows whose logits spread over more than about 60 met them on every few vectors and ran up to 16x
 * slower (bench/input_sweep.py). Two kinds of row are told apart by their min (logit_max):
 *   careful_exps: some exps may be subnormal (x - max < -87.3): exp16_of_row (AVX-512) and
 *     expf_of_row_with then apply 2^k in double, rounded once to float by the conversion, the same
 *     bits as before;
 *   tiny_products: some e_k factor (e_k >= exp(min - max) but for the exps that are 0, unless
 *     min only shows the row spread: see logit_max) may be below 2^-100, where scaled()'s low
 *     product (2^-24 of it, or less) or the gradient is subnormal: such rows take the double loops
 *     for the gradient (15-25% slower than the float ones). Masks of -inf or -1e4 leave a row as
 *     it is (logit_max's min leaves them out).
 * The few-classes groups (kernel_few_classes.h) tell them apart in the same way, a group (or 16 rows
 * on AVX-512) for the exps, a row for the gradient, and softcapped logits there (x' - max' >=
 * -softcap - max') from softcaps above about 43. Not covered, on the row path: the exps of rows
 * whose max is 2^14 or more, or of any row on baseline x86-64, which has no FMA (both take
 * exp_difference_in_float, not expf_of_row), and softcaps above about 43 in the portable loop
 * (expf_of_double, baseline; the AVX-512 and AVX2 capped exps are double). Passing the flag to
 * those made GCC vectorise the portable exp loop 16 bytes wide, for plain rows too (AVX2 out= 25-35%
 * slower). */
SPECIALISED int careful_exps(double min, double max) { return FLOAT_EXP && min - max < VEXPF_SUBNORMAL_BELOW; }

/* floor(log2 |x|) for x below 1 (ilogb's, not its call), else 0: what bounds e x from below for the
 * exps e <= 1, or a subnormal e itself */
SPECIALISED int binary_exponent_below_1(double x) {
    const int exponent = (int)(vexp_to_bits(x) >> 52 & 0x7FF) - 1023;
    return exponent < 0 ? exponent : 0;
}

/* factor's low part in scaled() is usually 2^-24 of it, but may be far smaller (a factor 1 - 1e-20,
 * as with reduction "sum" and a confident row, has a low part of -1e-20): its product is checked too */
SPECIALISED int tiny_products(double min, double max, double factor) {
    /* a factor beyond float's range (or NaN) takes the double loops anyway, and has no float part */
    if (!FLOAT_EXP || factor == 0 || !fits_float(factor)) return 0;
    const double smallest_exp = (min - max) * VEXP_LOG2E; /* log2 of the smallest e_k but the zeros */
    const double low = factor - (float)factor;
    return smallest_exp + binary_exponent_below_1(factor) < -100 ||
           (low != 0 && smallest_exp + binary_exponent_below_1(low) < -124);
}
