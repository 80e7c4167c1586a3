/* kernel_few_classes_layout.h: where a group's elements are in its lanes (AT, lanes_length), the
 * register transposes or gathers chosen per logit type and instruction set, the gathers' index
 * tables (group_layout), and ACROSS_ROWS, the loops over a group's rows;
 * part of kernel_few_classes.h, which includes the parts in order. */

/* GCC unrolls a loop of 16 or 32 constant trips completely before its vectoriser sees it, and the
 * unrolled body then stays scalar; kept as a loop, it becomes a few vector instructions. */
#define ACROSS_ROWS _Pragma("GCC unroll 1")

/* The group transposed: class k of its row r at [AT(k, r)] of an array of n_classes * ROW_GROUP
 * (flat, so that a lane's own k can be gathered: GCC 12 gathers from no 2-D array). The arrays are
 * on the stack, sized by the call's K rather than FEW_CLASSES (variable-length arrays): 34 KB for
 * float32 rows of 88 classes, 60 KB for 48 with a softcap (float16's double lanes: about 90 KB),
 * 5 KB at 10 classes. Arrays of a fixed size would take the most at every K (they measured about 1%
 * faster at K = 2 and 10, a C harness). The logits and exps are kept as SCRATCH, which holds them
 * exactly (floats for float32). AT is pointer-sized: with -fwrapv (in Python's build flags) an int
 * index would not be affine in the class loops, and GCC would vectorise none of them; GATHER_AT,
 * for a k of each lane's own, is an int: gathers take 32-bit indices. */
#define AT(k, r) ((ptrdiff_t)(k) * ROW_GROUP + (r))
#define GATHER_AT(k, r) ((k) * ROW_GROUP + (r))

/* Float32 logits on AVX-512 and AVX2 go to lanes and back by transposes in registers (AVX2: rows of
 * at least 4 classes, and groups of fewer rows back by gathers); others by gathers, through index
 * tables, so that the rows are read and the gradient written in memory order. The AVX-512 build
 * takes the class loops of the max, the exps and a lone index's gradient in registers too
 * (few_classes_avx512.h), the AVX2 build those of the max and the exps (few_classes_avx2.h).
 * 16-bit logits on AVX2 take the AVX2 build's transposes (ROWS_AS_FLOATS): their rows widened to
 * floats before, the gradient and the row functions' results as floats (float16's rounded to odd)
 * after, rounded to STORAGE 16 at a time (STORE_16_FLOATS), where gathers moved and rounded one
 * element at a time; bfloat16, whose lanes are floats too, its class loops as well (it took 1.6x
 * float32's time at 65536x10). A/B medians on Zen 3, one thread: bfloat16's gradient 0.61-0.71, with
 * label smoothing 0.77, its row functions 0.65-0.71; float16's gradient 0.81-0.84, its row functions
 * 0.70-0.86. */
#if defined(__AVX512F__) && defined(STORAGE_IS_FLOAT)
_Static_assert(sizeof(STORAGE) == sizeof(float) && sizeof(SCRATCH) == sizeof(float) && sizeof(TARGET) == sizeof(float),
               "transpose_16.h moves floats");
#define TRANSPOSE_16 1
#include "transpose_16.h"
#include "few_classes_avx512.h"
#elif defined(__AVX2__) && !defined(__AVX512F__) && (defined(STORAGE_IS_FLOAT) || defined(STORE_16_FLOATS))
_Static_assert(sizeof(TARGET) == sizeof(float), "transpose_4_avx2.h moves floats");
#define TRANSPOSE_4 1
#ifndef STORAGE_IS_FLOAT
#define ROWS_AS_FLOATS 1 /* 16-bit logits, see above */
#endif
#include "transpose_4_avx2.h"
#if FLOAT_EXP
_Static_assert(sizeof(SCRATCH) == sizeof(float), "few_classes_avx2.h takes float lanes");
#include "few_classes_avx2.h"
#endif
#endif

/* The length of an array of a group's logits or targets in lanes: the 16 x 16 register transpose
 * fills whole blocks of 16 classes (transpose_to_lanes). */
static inline int lanes_length(int n_classes) {
#ifdef TRANSPOSE_16
    return (n_classes + 15) / 16 * 16 * ROW_GROUP;
#else
    return n_classes * ROW_GROUP;
#endif
}

/* Where the lanes' elements are in the rows, for the gathers (nothing with the register transpose);
 * set up once per chunk. */
typedef struct {
#ifndef TRANSPOSE_16
    int of_rows[FEW_CLASSES * ROW_GROUP];       /* [AT(k, r)] is element r K + k of the rows */
    int of_transposed[FEW_CLASSES * ROW_GROUP]; /* and the other way */
#else
    char unused; /* C allows no empty struct */
#endif
} group_layout;

static void set_up_group_layout(group_layout *layout, int n_classes) {
#ifndef TRANSPOSE_16
    for (int r = 0; r < ROW_GROUP; r++)
        for (int k = 0; k < n_classes; k++) {
            layout->of_rows[AT(k, r)] = r * n_classes + k;
            layout->of_transposed[r * n_classes + k] = AT(k, r);
        }
#else
    (void)layout;
    (void)n_classes;
#endif
}
