/* isa_baseline.h: compile the kernels for the build's default instruction set (x86-64: SSE2). */
#define ISA_NAME baseline
