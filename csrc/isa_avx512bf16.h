/* isa_avx512bf16.h: compile the bfloat16 kernels for AVX-512 with AVX512_BF16, whose vcvtneps2bf16
 * rounds 16 floats to bfloat16 in one instruction (bf16_round_avx512.h); chosen at run time when
 * present. At this level the other logit types run their avx512 kernels (dispatch.c). */
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")
#define ISA_NAME avx512bf16
