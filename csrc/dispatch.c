/* dispatch.c: the exported kernel functions of softmax_ce.h. Each forwards to the same function
 * compiled for the best instruction set this CPU has (chosen once, when the library loads), or a
 * lower one named by the environment variable SOFTMAX_CE_C_ISA. */
#include <stdlib.h>
#include <string.h>

#include "softmax_ce.h"

/* type name, logit storage type, probability target type */
#define FOR_EACH_TYPE(X, isa)        \
    X(f32, float, float, isa)        \
    X(f64, double, double, isa)      \
    X(f16, uint16_t, float, isa)     \
    X(bf16, uint16_t, float, isa)

#define DECLARE_KERNELS(type, storage, target, isa)                                                  \
    int sce_cross_entropy_##type##_##isa(storage *, sce_result *, const sce_params *, const storage *, \
                                         const int64_t *, const target *);                           \
    int sce_logsumexp_##type##_##isa(storage *, const sce_params *, const storage *);                \
    int sce_log_softmax_##type##_##isa(storage *, const sce_params *, const storage *);              \
    int sce_softmax_##type##_##isa(storage *, const sce_params *, const storage *);

#define KERNEL_SET(type, storage, target, isa)                                                       \
    struct {                                                                                         \
        int (*cross_entropy)(storage *, sce_result *, const sce_params *, const storage *,            \
                             const int64_t *, const target *);                                       \
        int (*logsumexp)(storage *, const sce_params *, const storage *);                            \
        int (*log_softmax)(storage *, const sce_params *, const storage *);                          \
        int (*softmax)(storage *, const sce_params *, const storage *);                              \
    } type;

#define KERNELS_OF(type, storage, target, isa)                                                       \
    {sce_cross_entropy_##type##_##isa, sce_logsumexp_##type##_##isa, sce_log_softmax_##type##_##isa, \
     sce_softmax_##type##_##isa},

typedef struct {
    const char *name;
    FOR_EACH_TYPE(KERNEL_SET, unused)
} isa_kernels;

#define ISA_KERNELS(isa) {#isa, FOR_EACH_TYPE(KERNELS_OF, isa)}

FOR_EACH_TYPE(DECLARE_KERNELS, baseline)
#if defined(__x86_64__)
FOR_EACH_TYPE(DECLARE_KERNELS, avx2)
FOR_EACH_TYPE(DECLARE_KERNELS, avx512)
DECLARE_KERNELS(bf16, uint16_t, float, avx512bf16)
#endif

/* best first; avx512bf16 has a bfloat16 kernel of its own (isa_avx512bf16.h), the others' are avx512's */
static const isa_kernels ALL_ISAS[] = {
#if defined(__x86_64__)
    {"avx512bf16", KERNELS_OF(f32, float, float, avx512) KERNELS_OF(f64, double, double, avx512)
                   KERNELS_OF(f16, uint16_t, float, avx512) KERNELS_OF(bf16, uint16_t, float, avx512bf16)},
    ISA_KERNELS(avx512),
    ISA_KERNELS(avx2),
#endif
    ISA_KERNELS(baseline),
};
#define N_ISAS ((int)(sizeof ALL_ISAS / sizeof ALL_ISAS[0]))

static int cpu_has(const isa_kernels *isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    /* every feature the isa_*.h target pragma enables */
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (strcmp(isa->name, "avx512bf16") == 0) return avx512 && __builtin_cpu_supports("avx512bf16");
    if (strcmp(isa->name, "avx512") == 0) return avx512;
    if (strcmp(isa->name, "avx2") == 0) return avx2;
#endif
    return 1;
}

static const isa_kernels *active = &ALL_ISAS[N_ISAS - 1];

static const isa_kernels *current(void) { return __atomic_load_n(&active, __ATOMIC_ACQUIRE); }

/* The best instruction set the CPU has, at or below the one named (all of them for NULL). */
static const isa_kernels *best_at_or_below(const char *name) {
    int i = 0;
    if (name)
        while (i < N_ISAS && strcmp(ALL_ISAS[i].name, name) != 0) i++;
    if (i == N_ISAS) return NULL;
    while (!cpu_has(&ALL_ISAS[i])) i++; /* baseline, last, always qualifies */
    return &ALL_ISAS[i];
}

__attribute__((constructor)) static void choose_isa(void) {
    const isa_kernels *chosen = best_at_or_below(getenv("SOFTMAX_CE_C_ISA"));
    if (!chosen) chosen = best_at_or_below(NULL); /* an unknown name forces nothing */
    __atomic_store_n(&active, chosen, __ATOMIC_RELEASE);
}

const char *sce_isa(void) { return current()->name; }

const char *sce_isa_name(int index) { return index >= 0 && index < N_ISAS ? ALL_ISAS[index].name : NULL; }

int sce_select_isa(const char *name) {
    for (int i = 0; name && i < N_ISAS; i++) {
        if (strcmp(ALL_ISAS[i].name, name) == 0 && cpu_has(&ALL_ISAS[i])) {
            __atomic_store_n(&active, &ALL_ISAS[i], __ATOMIC_RELEASE);
            return SCE_OK;
        }
    }
    return SCE_ERR_ARGUMENT;
}

#define DEFINE_EXPORTS(type, storage, target, unused)                                                \
    int sce_cross_entropy_##type(storage *grad, sce_result *result, const sce_params *params,         \
                                 const storage *logits, const int64_t *target_index,                 \
                                 const target *target_prob) {                                        \
        return current()->type.cross_entropy(grad, result, params, logits, target_index, target_prob); \
    }                                                                                                \
    int sce_logsumexp_##type(storage *lse, const sce_params *params, const storage *x) {             \
        return current()->type.logsumexp(lse, params, x);                                            \
    }                                                                                                \
    int sce_log_softmax_##type(storage *out, const sce_params *params, const storage *x) {           \
        return current()->type.log_softmax(out, params, x);                                          \
    }                                                                                                \
    int sce_softmax_##type(storage *out, const sce_params *params, const storage *x) {               \
        return current()->type.softmax(out, params, x);                                              \
    }

FOR_EACH_TYPE(DEFINE_EXPORTS, unused)

/* The plain forms: the sce_params built here, its other fields 0 or NULL (off). */
#define ROW_SIZES(rows, classes, threads) .n_rows = (rows), .n_classes = (classes), .n_threads = (threads)

#define DEFINE_PLAIN_CROSS_ENTROPY(type, storage)                                                    \
    int sce_cross_entropy_plain_##type(storage *grad, sce_result *result, double *row_loss,          \
                                       const storage *logits, const int64_t *target_index,           \
                                       int64_t *target_copy, int64_t n_rows, int64_t n_classes,      \
                                       int reduction, int64_t ignore_index, double grad_scale,       \
                                       int n_threads) {                                              \
        const sce_params params = {ROW_SIZES(n_rows, n_classes, n_threads), .reduction = reduction,  \
                                   .ignore_index = ignore_index, .grad_scale = grad_scale,           \
                                   .target_copy = target_copy};                                      \
        /* row losses the caller does not want go to a work space of their own */                   \
        double *own = row_loss ? NULL : malloc(sizeof(double) * (size_t)(n_rows > 0 ? n_rows : 1)); \
        if (!row_loss && !own) return SCE_ERR_MEMORY;                                                \
        *result = (sce_result){.row_loss = row_loss ? row_loss : own};                               \
        const int status = sce_cross_entropy_##type(grad, result, &params, logits, target_index, NULL); \
        result->row_loss = row_loss; /* not left pointing at freed memory */                        \
        free(own);                                                                                   \
        return status;                                                                               \
    }

DEFINE_PLAIN_CROSS_ENTROPY(f32, float)
DEFINE_PLAIN_CROSS_ENTROPY(f64, double)

#define DEFINE_PLAIN_ROW_FUNCTION(function, type, storage)                                           \
    int sce_##function##_plain_##type(storage *out, const storage *x, int64_t n_rows,                \
                                      int64_t n_classes, int n_threads) {                            \
        const sce_params params = {ROW_SIZES(n_rows, n_classes, n_threads)};                         \
        return sce_##function##_##type(out, &params, x);                                             \
    }

#define DEFINE_PLAIN_ROW_FUNCTIONS(type, storage, target, unused) \
    DEFINE_PLAIN_ROW_FUNCTION(logsumexp, type, storage)           \
    DEFINE_PLAIN_ROW_FUNCTION(log_softmax, type, storage)         \
    DEFINE_PLAIN_ROW_FUNCTION(softmax, type, storage)

FOR_EACH_TYPE(DEFINE_PLAIN_ROW_FUNCTIONS, unused)
