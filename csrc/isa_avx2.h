/* isa_avx2.h: compile the kernels for AVX2 with FMA (chosen at run time when the CPU has them). */
#pragma GCC target("avx2,fma,f16c")
/* GCC turned the loops that zero a group's arrays into memsets, inlined as rep stosq, whose start-up
 * costs tens of cycles for a few hundred bytes (Zen 2: a twentieth of the few-classes groups); the
 * AVX-512 build stores vectors instead */
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#define ISA_NAME avx2
