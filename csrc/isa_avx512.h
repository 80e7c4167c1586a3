/* isa_avx512.h: compile the kernels for AVX-512 (F, DQ, BW, VL), chosen at run time when present. */
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")
#define ISA_NAME avx512
