/* kernel_few_classes_transposes.h: a group's rows (padded to ROW_GROUP) to lanes and back: the
 * logits and probability targets in, the gradient and the row functions' results out;
 * part of kernel_few_classes.h, which includes the parts in order. */

/* The ROW_GROUP rows of a group from rows: rows itself when all are real (n_rows), else a copy in
 * padded with row 0 repeated (so that every lane computes something, and loads need no bounds) */
static const void *group_rows(void *padded, const void *rows, int n_rows, size_t row_bytes) {
    if (n_rows == ROW_GROUP) return rows;
    memcpy(padded, rows, (size_t)n_rows * row_bytes);
    for (int r = n_rows; r < ROW_GROUP; r++) memcpy((char *)padded + (size_t)r * row_bytes, rows, row_bytes);
    return padded;
}

/* The group's logits and probability targets to lanes, [AT(k, r)] = class k of row r (rows past
 * n_rows repeat row 0, so that every lane computes something), and its gradient back to rows, made
 * STORAGE there; lanes_to_rows moves lanes that are STORAGE already (the row functions' results, but
 * see lane_result).
 * readable: the values from rows on that may be read: the rows of the calling chunk, past which
 * another thread may be writing its gradient over its logits. */
#ifdef TRANSPOSE_16
static void logits_to_lanes(SCRATCH *lanes, const STORAGE *rows, const group_layout *layout, int n_rows,
                            int n_classes, int64_t readable) {
    (void)layout;
    transpose_to_lanes(lanes, rows, n_rows, n_classes, readable);
}

static void targets_to_lanes(TARGET *lanes, const TARGET *rows, const group_layout *layout, int n_rows,
                             int n_classes, int64_t readable) {
    (void)layout;
    transpose_to_lanes(lanes, rows, n_rows, n_classes, readable);
}

static void lanes_to_rows(STORAGE *rows, const STORAGE *lanes, const group_layout *layout, int n_rows,
                          int n_classes) {
    (void)layout;
    transpose_to_rows(rows, lanes, n_rows, n_classes);
}

/* SCRATCH is STORAGE (float) */
static void gradient_to_rows(STORAGE *rows, const SCRATCH *lanes, const group_layout *layout, int n_rows,
                             int n_classes) {
    lanes_to_rows(rows, lanes, layout, n_rows, n_classes);
}
#else
#ifdef ROWS_AS_FLOATS
_Static_assert(ROW_GROUP % 16 == 0, "a group's logits are a multiple of 16");

/* floats[i] = x[i] widened, i < count (a multiple of 16) */
static inline void widen_to_floats(float *floats, const STORAGE *x, int count) {
    /* a group of 4 classes or more: said, or GCC 12 warns that the caller's floats may be left unset */
    if (count < 16) __builtin_unreachable();
    for (int i = 0; i < count; i += 16) store_16_floats(floats + i, LOAD_16_AS_FLOATS(x + i));
}
#endif

static void logits_to_lanes(SCRATCH *lanes, const STORAGE *rows, const group_layout *layout, int n_rows,
                            int n_classes, int64_t readable) {
    (void)readable;
    STORAGE padded[n_classes * ROW_GROUP];
    const STORAGE *x = group_rows(padded, rows, n_rows, n_classes * sizeof(STORAGE));
#ifdef TRANSPOSE_4
    if (n_classes >= 4) {
#ifdef ROWS_AS_FLOATS
        float floats[n_classes * ROW_GROUP];
        widen_to_floats(floats, x, n_classes * ROW_GROUP);
#else
        const float *floats = x;
#endif
#if FLOAT_EXP /* float lanes */
        rows_to_lanes_4(lanes, floats, n_classes);
#else /* float16's double lanes: transposed as floats, then widened */
        float transposed[n_classes * ROW_GROUP];
        rows_to_lanes_4(transposed, floats, n_classes);
        for (int i = 0; i < n_classes * ROW_GROUP; i++) lanes[i] = transposed[i];
#endif
        return;
    }
#endif
    STORAGE transposed[n_classes * ROW_GROUP];
    /* moved, then converted in a loop of its own: half precision has no gathers, but converts in vectors */
    for (int i = 0; i < n_classes * ROW_GROUP; i++) transposed[i] = x[layout->of_rows[i]];
    for (int i = 0; i < n_classes * ROW_GROUP; i++) lanes[i] = (SCRATCH)LOAD(transposed[i]);
}

static void targets_to_lanes(TARGET *lanes, const TARGET *rows, const group_layout *layout, int n_rows,
                             int n_classes, int64_t readable) {
    (void)readable;
    TARGET padded[n_classes * ROW_GROUP];
    const TARGET *t = group_rows(padded, rows, n_rows, n_classes * sizeof(TARGET));
#ifdef TRANSPOSE_4
    if (n_classes >= 4) {
        rows_to_lanes_4(lanes, t, n_classes);
        return;
    }
#endif
    for (int i = 0; i < n_classes * ROW_GROUP; i++) lanes[i] = t[layout->of_rows[i]];
}

#ifndef ROWS_AS_FLOATS /* (whose results go to rows by float_lanes_to_rows) */
/* (rows past n_rows are not written: a group of fewer rows takes the gathers) */
static void lanes_to_rows(STORAGE *rows, const STORAGE *lanes, const group_layout *layout, int n_rows,
                          int n_classes) {
#ifdef TRANSPOSE_4 /* (float32 here) */
    if (n_rows == ROW_GROUP && n_classes >= 4) {
        lanes_to_rows_4(rows, lanes, n_classes);
        return;
    }
#endif
    for (int i = 0; i < n_rows * n_classes; i++) rows[i] = lanes[layout->of_transposed[i]];
}
#endif

#ifdef ROWS_AS_FLOATS
/* float lanes to rows made STORAGE: floats in rows, then rounded (K ROW_GROUP of them) */
static void float_lanes_to_rows(STORAGE *rows, const float *lanes, const group_layout *layout, int n_rows,
                                int n_classes) {
    if (n_rows == ROW_GROUP && n_classes >= 4) {
        float values[n_classes * ROW_GROUP];
        lanes_to_rows_4(values, lanes, n_classes);
        for (int i = 0; i < n_classes * ROW_GROUP; i += 16)
            STORE_16_FLOATS(rows + i, _mm256_loadu_ps(values + i), _mm256_loadu_ps(values + i + 8));
        return;
    }
    for (int i = 0; i < n_rows * n_classes; i++) rows[i] = STORE(lanes[layout->of_transposed[i]]);
}
#endif

static void gradient_to_rows(STORAGE *rows, const SCRATCH *lanes, const group_layout *layout, int n_rows,
                             int n_classes) {
#if defined(ROWS_AS_FLOATS) && FLOAT_EXP
    float_lanes_to_rows(rows, lanes, layout, n_rows, n_classes);
#elif defined(ROWS_AS_FLOATS) /* float16's double lanes, rounded to odd floats (STORE's first rounding) */
    float odd[n_classes * ROW_GROUP];
    for (int i = 0; i < n_classes * ROW_GROUP; i++) odd[i] = float_rounded_to_odd(lanes[i]);
    float_lanes_to_rows(rows, odd, layout, n_rows, n_classes);
#elif defined(TRANSPOSE_4) /* SCRATCH is STORAGE */
    lanes_to_rows(rows, lanes, layout, n_rows, n_classes);
#else
    for (int i = 0; i < n_rows * n_classes; i++) rows[i] = STORE(lanes[layout->of_transposed[i]]);
#endif
}
#endif

/* A row function's results in lanes (LANE_RESULT of each double), moved to rows by results_to_rows:
 * STORAGE, or for 16-bit logits on AVX2 floats rounded to odd, which float_lanes_to_rows then rounds
 * 16 at a time (the two roundings of STORE, the same bits). */
#ifdef ROWS_AS_FLOATS
typedef float lane_result;
#define LANE_RESULT(value) float_rounded_to_odd(value)
#define results_to_rows float_lanes_to_rows
#else
typedef STORAGE lane_result;
#define LANE_RESULT(value) STORE(value)
#define results_to_rows lanes_to_rows
#endif
