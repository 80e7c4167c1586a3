/* isa_avx2.h: compile the kernels for AVX2 with FMA (chosen at run time when the CPU has them). */
#pragma GCC target("avx2,fma,f16c")
#define ISA_NAME avx2
