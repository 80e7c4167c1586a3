/* kernel_alongside_exps.h: what a row's exp pass does alongside its exps: it writes the previous
 * row's gradient (pipelined rows; on AVX-512 a line at a time), and takes label smoothing's
 * distance (row_smoothing, its state per row); with the gradient's element formulas, which those
 * lines and every other gradient loop share (fits_float, scaling, scaled, scaled_minus);
 * part of kernel_template.h, which includes the parts in order. */

/* Pipelined rows: a row's streamed gradient waits until the next row's exp pass, which writes it a
 * part every WAITING_STEP classes (exp_float_runs, exp_double_runs): the writes, bound by memory,
 * then overlap the exps, bound by arithmetic, where one row's passes took turns (float32 out=, A/B
 * medians: 256x128256 one thread 10.6 -> 9.9 ms, two 6.9 -> 6.6; 1024x32000 9.5 -> 9.1 and 6.9 ->
 * 6.5; parts of 256 or 512 classes were slower, the call per part costing more than it saved; rows
 * of one part or less are pipelined only where lines are streamed, see pipelines_rows). The two
 * rows take the two halves of the thread's scratch. Each thread writes what waits after its last
 * chunk (cross_entropy_finish). Not in the AVX2 build: see pipelines_rows. */
#define WAITING_STEP 2048
typedef struct waiting_gradient waiting_gradient;
static void write_waiting_gradient(waiting_gradient *waiting, int64_t until);

/* Float32 and float64 on AVX-512 stream a waiting row's whole lines instead, one per 64 bytes of the
 * next row's exp pass (stream_next_line), where its gradient takes scaled_minus_values' loop (a
 * class index, smoothed with the call's spread weights or none, factors within float's range; see
 * lines_of_row): the memory then takes a line at a time, not bursts of 128 (a Xeon at 2 GHz, whose
 * memory takes fewer lines at once than the Zen 5 that chose WAITING_STEP). out= A/B medians, one
 * thread then two: float32 1024x32000 56.8 -> 45.4 ms, 37.6 -> 31.2; 256x128256 71.5 -> 66.1, 39.1
 * -> 36.4; float64 1024x32000 189 -> 145, 102 -> 88; 256x128256 203 -> 166, 108 -> 92; float32 with
 * label smoothing 0.1 1024x32000 62 -> 53, 39 -> 35; 256x128256 77 -> 58, 42 -> 34; the same with
 * weights and an ignore_index 69 -> 59, 45 -> 39; 92 -> 81, 48 -> 40. Rows of fewer classes are
 * pipelined too (see pipelines_rows). bfloat16 lines streamed so (a line from two vectors of exps,
 * or half a line per vector) were slower on that Xeon (out=, 256x128256 one thread 68-76 -> 91-92
 * ms, two 38-42 -> 47-48; 1024x32000 alike): its rows keep the parts of WAITING_STEP. */
#if (defined(STORAGE_IS_FLOAT) || defined(STORAGE_IS_DOUBLE)) && defined(__AVX512F__)
#define LINES_IN_EXP_PASS 1
#else
#define LINES_IN_EXP_PASS 0
#endif

/* whether FLOAT_EXP types' float products can take a value (a gradient factor, a target term c_k
 * t): beyond float's range it would turn a finite e * factor - c into inf, -inf or NaN; such rows
 * are computed in double instead */
SPECIALISED int fits_float(double value) { return !FLOAT_EXP || fabs(value) <= FLT_MAX; }

/* e * factor rounded once to STORAGE. FLOAT_EXP types keep their exps in float, and with FMA the
 * product stays in float too: factor split into two floats, e hi + e lo rounded once (the low part's
 * own rounding is 2^-24 of a 2^-24 correction), as the double product rounded to float would be
 * (bfloat16 then rounds that float: within its 1 ulp). */
#if FLOAT_EXP && (defined(__FMA__) || defined(__aarch64__))
typedef struct {
    float hi, lo;
} scaling;

SPECIALISED scaling scaling_of(double factor) {
    const float hi = (float)factor;
    return (scaling){hi, (float)(factor - hi)};
}

SPECIALISED STORAGE scaled(SCRATCH e, scaling factor) { return STORE_FLOAT(VEXPF_FMA(e, factor.hi, e * factor.lo)); }

/* e * factor - c: c's rounding to float and e lo - c's are within 2^-24 of c each, inside the
 * gradient's bound of 8 eps (p_k T + c_k), for c within float's range (see fits_float) */
SPECIALISED STORAGE scaled_minus(SCRATCH e, scaling factor, double c) {
    return STORE_FLOAT(VEXPF_FMA(e, factor.hi, VEXPF_FMA(e, factor.lo, -(float)c)));
}
#else
typedef struct {
    double factor;
} scaling;

SPECIALISED scaling scaling_of(double factor) { return (scaling){factor}; }

SPECIALISED STORAGE scaled(SCRATCH e, scaling factor) { return STORE(e * factor.factor); }

SPECIALISED STORAGE scaled_minus(SCRATCH e, scaling factor, double c) { return STORE(e * factor.factor - c); }
#endif

/* The lines stream_next_line writes: what gradient_values computes from e for them */
typedef struct {
    STORAGE *grad;        /* the waiting row's gradient, or NULL: not written line by line */
    const SCRATCH *e;     /* its exps */
    int64_t next, end;    /* the next line, and the end of the whole lines */
    int64_t index;        /* the class index, whose value is at_index */
    int64_t argmax;       /* whose value is at_argmax */
    scaling probability;
    const SCRATCH *minus; /* c_k target (smoothing): minus[k], or where NULL minus_constant */
    SCRATCH minus_constant;
    STORAGE at_index, at_argmax;
} streamed_lines;

/* the waiting row's lines to stream (grad NULL if none), and after the exp pass the next line */
static streamed_lines lines_to_stream(const waiting_gradient *waiting);
static void lines_streamed_until(waiting_gradient *waiting, int64_t next);

enum { LINE = CACHE_LINE / sizeof(STORAGE) }; /* the elements of a cache line of output (grad, softmax) */

#if LINES_IN_EXP_PASS
/* the next whole line of the waiting gradient, as gradient_values computes it (scaled_minus' e
 * probability - c), with the class index's and then the argmax's own values */
SPECIALISED void stream_next_line(streamed_lines *lines) {
    const int64_t k = lines->next;
    if (k >= lines->end) return;
    const uint64_t index_at = (uint64_t)(lines->index - k), argmax_at = (uint64_t)(lines->argmax - k);
#ifdef STORAGE_IS_FLOAT
    const __m512 e = _mm512_loadu_ps(lines->e + k);
    const scaling p = lines->probability;
    const __m512 c = lines->minus ? _mm512_loadu_ps(lines->minus + k) : _mm512_set1_ps(lines->minus_constant);
    __m512 g = _mm512_fmadd_ps(e, _mm512_set1_ps(p.hi), _mm512_fmsub_ps(e, _mm512_set1_ps(p.lo), c));
    if (index_at < LINE) g = _mm512_mask_mov_ps(g, (__mmask16)(1u << index_at), _mm512_set1_ps(lines->at_index));
    if (argmax_at < LINE) g = _mm512_mask_mov_ps(g, (__mmask16)(1u << argmax_at), _mm512_set1_ps(lines->at_argmax));
    _mm512_stream_ps(lines->grad + k, g);
#else
    const __m512d e = _mm512_loadu_pd(lines->e + k);
    const __m512d c = lines->minus ? _mm512_loadu_pd(lines->minus + k) : _mm512_set1_pd(lines->minus_constant);
    __m512d g = _mm512_sub_pd(_mm512_mul_pd(e, _mm512_set1_pd(lines->probability.factor)), c);
    if (index_at < LINE) g = _mm512_mask_mov_pd(g, (__mmask8)(1u << index_at), _mm512_set1_pd(lines->at_index));
    if (argmax_at < LINE) g = _mm512_mask_mov_pd(g, (__mmask8)(1u << argmax_at), _mm512_set1_pd(lines->at_argmax));
    _mm512_stream_pd(lines->grad + k, g);
#endif
    lines->next = k + LINE;
}
#endif

#include "smoothing_distance.h"

/* A row's smoothing distance taken in its exp pass (FUSED_SMOOTHING): the weights (the doubles, and
 * the floats where the call has them) and the sums, the sums as smoothing_distance takes them */
typedef struct {
    class_weights weights;
    smoothing_sums sums;
} row_smoothing;
