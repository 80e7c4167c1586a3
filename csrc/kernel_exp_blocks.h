/* kernel_exp_blocks.h: the exp pass's blocks of PARTIAL_SUMS logits (block_values, which the
 * target sums read too, and exp_blocks: the portable form the vector runs fall back on), and the
 * prefetch of a later row it makes meanwhile;
 * part of kernel_template.h, which includes the parts in order. */

/* exp(x' - max); for FLOAT_EXP types in float (for uncapped logits, max is a float too), careful
 * (careful_exps) with 2^k applied in double */
SPECIALISED double exp_term(double value, double max, int with_softcap, int careful) {
    if (!FLOAT_EXP) return EXP_DIFFERENCE(value, max);
    return with_softcap ? expf_of_double(value - max, careful)
                        : exp_difference_in_float((float)value, (float)max, careful);
}

/* With COMPENSATED_SUMS, runs of COMPENSATED_RUN blocks are added per lane in plain double before
 * the compensated sums take them (TwoSum is about a fifth of the float64 exp pass): a run's sum of
 * two positive terms is within 2^-53 relative, the row's sum within that plus the compensated sums'
 * own error. Without, a block at a time (the order of float logits' sums stays what it was). Softcapped
 * rows take a block at a time too: GCC keeps the loop of two softcapped blocks scalar (6x slower).
 * (FLOAT_EXP logits take exp_float_runs instead, softcapped too but for the out-of-range softcaps of
 * AVX-512 and AVX2, float_runs_take_softcap.) */
#define COMPENSATED_RUN (COMPENSATED_SUMS ? 2 : 1)

/* The logits the exp pass, the target sums and the smoothing distance read, a block at a time.
 * 16-bit logits are widened to floats by the row max's vector loads first: GCC vectorises their own
 * conversion 8 logits wide, and the double loops with it (float16 ran 3x slower than float64).
 * Other logits are read where they are. */
#if defined(VECTOR_ROW_MAX) && defined(WIDENED_BLOCKS)
typedef float block_value;
_Static_assert(COMPENSATED_RUN == 1, "exp_blocks reads one widened block at a time");

SPECIALISED const float *block_values(float buffer[PARTIAL_SUMS], const STORAGE *x, int lanes) {
    if (lanes == PARTIAL_SUMS)
        store_16_floats(buffer, LOAD_16_AS_FLOATS(x));
    else
        for (int j = 0; j < lanes; j++) buffer[j] = (float)LOAD(x[j]);
    return buffer;
}

SPECIALISED double block_logit(float value) { return value; }
#else
typedef STORAGE block_value;

SPECIALISED double block_logit(STORAGE value) { return LOAD(value); }

SPECIALISED const STORAGE *block_values(STORAGE *buffer, const STORAGE *x, int lanes) {
    (void)buffer, (void)lanes;
    return x;
}
#endif

/* The blocks below leave the term of the argmax, at offset skip, out of the sums (it is the 1 of
 * 1 + rest); a compare per element is cheaper than cutting the row in two there, once skip is an
 * int of the blocks' range: AVX2 has no 64-bit compares of 8 lanes, and GCC compared the int64
 * offsets 4 at a time and packed the results (on Zen 2 a fifth of the exp pass's samples). */
SPECIALISED void exp_blocks(partial_sums *sums, SCRATCH *restrict e, SCRATCH *restrict slope, const block_value *x,
                            int lanes, int blocks, int64_t skip, double max, double softcap, int near, int store) {
    const int skip_at = skip >= 0 && skip < blocks * PARTIAL_SUMS ? (int)skip : -1;
    const double inverse = near ? 1.0 / softcap : 0.0;
    for (int j = 0; j < lanes; j++) {
        double lane_sum = 0.0; /* of the lane's terms in these blocks: see COMPENSATED_RUN */
        for (int b = 0; b < blocks; b++) {
            const int i = b * PARTIAL_SUMS + j;
            const double value = block_logit(x[i]);
            const capped_logit logit = softcap == 0 ? (capped_logit){value, 1.0}
                                       : near       ? softcapped_near(value, inverse)
                                                    : softcapped(value, softcap);
            const double term = exp_term(logit.value, max, softcap > 0, 0);
            if (store) e[i] = term;
            if (store && softcap > 0) slope[i] = logit.slope * SLOPE_SCALE;
            lane_sum += i == skip_at ? 0.0 : term;
        }
        add_to_lane(sums, j, lane_sum);
    }
}

/* whether every logit of a block is within the softcap, |x| <= softcap (not NaN) */
SPECIALISED int within_softcap(const block_value *x, int lanes, double softcap) {
    int within = 1;
    for (int j = 0; j < lanes; j++) within &= fabs(block_logit(x[j])) <= softcap;
    return within;
}

/* exp_blocks of one block; with a softcap by softcapped_near where every logit is within it (the
 * choice is the block's: lane by lane, GCC's vectors would take both ways), else by softcapped */
SPECIALISED void exp_block(partial_sums *sums, SCRATCH *restrict e, SCRATCH *restrict slope, const block_value *x,
                           int lanes, int64_t skip, double max, double softcap, int store) {
    if (softcap > 0 && within_softcap(x, lanes, softcap))
        exp_blocks(sums, e, slope, x, lanes, 1, skip, max, softcap, 1, store);
    else
        exp_blocks(sums, e, slope, x, lanes, 1, skip, max, softcap, 0, store);
}

/* The exp pass computes while the row max pass waits on memory: asking for the next row's block k
 * while computing this row's block k gives the memory system work during the exp pass, and the next
 * row's max pass finds its data in cache. Also for rows longer than L2 can hold with their exps: on
 * Zen 3 (512 KB of L2) rows of more than 256 KB without the prefetch took 1.08-1.31x the time
 * (256x128256 and 32x262144 float32, A/B medians). */
static inline void prefetch_bytes(const void *start, size_t bytes) {
    for (size_t byte = 0; byte < bytes; byte += 64) /* 64: a cache line */
        __builtin_prefetch((const char *)start + byte, 0, 1); /* 1: into L2, not L1 */
}

static inline void prefetch_block(const STORAGE *block) { prefetch_bytes(block, PARTIAL_SUMS * sizeof(STORAGE)); }

/* The row whose logits row n's exp pass prefetches (see above), or NULL: at least PREFETCH_AHEAD
 * bytes ahead, so that they have arrived when its max pass comes (the next row of 1000 float32
 * classes was too close: the loss alone ran 25% slower) */
#define PREFETCH_AHEAD 4096

static inline const STORAGE *row_to_prefetch(const STORAGE *row, int64_t n, int64_t n_rows, int64_t n_classes) {
    const int64_t ahead = 1 + PREFETCH_AHEAD / (n_classes * (int64_t)sizeof(STORAGE));
    return n + ahead < n_rows ? row + ahead * n_classes : NULL;
}
