/* half_precision.h: IEEE binary16 and bfloat16 values, kept as uint16_t bit patterns, to and from
 * double. Each conversion to half precision is one correct rounding (to nearest even) of the double,
 * so a gradient computed in double lands on the correctly rounded half-precision value. */
#ifndef HALF_PRECISION_H
#define HALF_PRECISION_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Inlined whatever the size of the loop calling them (a call per element, once GCC stopped inlining
 * f16_from_double into a grown gradient loop, made float16 3.7x slower) */
#if defined(__GNUC__)
#define HALF_CONVERSION static inline __attribute__((always_inline))
#else
#define HALF_CONVERSION static inline
#endif

/* double -> float rounded to odd: an inexact result gets an odd last bit, so it can never look
 * like a tie to a second rounding. Rounding that float to nearest even at 16 bits then gives the
 * correctly rounded binary16 or bfloat16 (float has at least 2 * 11 + 2 significant bits). Plain
 * selects, so that the compiler can vectorise it. */
HALF_CONVERSION float float_rounded_to_odd(double value) {
    const float single = (float)value;
    uint32_t word;
    memcpy(&word, &single, sizeof word);
    const uint32_t toward_zero = fabs((double)single) > fabs(value) ? word - 1 : word;
    const int inexact = (double)single != value && isfinite(value);
    word = inexact ? toward_zero | 1 : word;
    float result;
    memcpy(&result, &word, sizeof result);
    return result;
}

/* binary16 to double, exactly: its magnitude bits, moved into a float's place, are the value
 * times 2^-112 for normal and subnormal numbers alike; exponent 31 is inf or NaN. (The compiler's
 * own conversion is a library call per element.) */
HALF_CONVERSION double f16_to_double(uint16_t bits) {
    const uint32_t magnitude = (uint32_t)(bits & 0x7FFF) << 13;
    const uint32_t special = magnitude | 0x7F800000; /* inf or NaN with the same payload */
    float scaled, infinite_or_nan;
    memcpy(&scaled, &magnitude, sizeof scaled);
    memcpy(&infinite_or_nan, &special, sizeof infinite_or_nan);
    const float value = magnitude >= 0x0F800000 ? infinite_or_nan : scaled * 0x1p112f;
    return (bits & 0x8000) ? -(double)value : (double)value;
}

/* a float rounded once, to nearest even, to binary16, in integer operations: the compiler's
 * _Float16 conversion has no vector type without AVX512-FP16, so that every loop storing float16
 * stayed scalar (float16 ran 7x slower than bfloat16). Checked against _Float16 for all 2^32 floats,
 * NaN payloads included. */
HALF_CONVERSION uint16_t f16_from_float(float value) {
    uint32_t word;
    memcpy(&word, &value, sizeof word);
    const uint32_t sign = (word >> 16) & 0x8000, magnitude = word & 0x7FFFFFFF;
    /* normal: the exponent rebiased (127 - 15), the 13 bits dropped rounded to nearest even; a carry
     * out of the largest binary16 makes inf */
    const uint32_t normal = (magnitude - (112u << 23) + 0xFFF + ((magnitude >> 13) & 1)) >> 13;
    /* below 2^-14, a subnormal: adding 0.5 leaves the value in units of 2^-24 (a binary16
     * subnormal's) in the float's last bits, rounded to nearest even by the addition itself */
    float absolute, aligned;
    memcpy(&absolute, &magnitude, sizeof absolute);
    aligned = absolute + 0.5f;
    uint32_t aligned_word;
    memcpy(&aligned_word, &aligned, sizeof aligned_word);
    const uint32_t subnormal = aligned_word - 0x3F000000; /* the bits of 0.5 */
    const uint32_t special = magnitude > 0x7F800000 ? 0x7E00 | ((magnitude >> 13) & 0x3FF) : 0x7C00; /* NaN, inf */
    return (uint16_t)(sign | (magnitude >= 0x47800000 ? special : magnitude < 0x38800000 ? subnormal : normal));
}

HALF_CONVERSION uint16_t f16_from_double(double value) { return f16_from_float(float_rounded_to_odd(value)); }

/* bfloat16 is the top half of a float. */
HALF_CONVERSION double bf16_to_double(uint16_t bits) {
    const uint32_t word = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &word, sizeof value);
    return value;
}

/* a float rounded once, to nearest even, to bfloat16 */
HALF_CONVERSION uint16_t bf16_from_float(float value) {
    uint32_t word;
    memcpy(&word, &value, sizeof word);
    const uint32_t rounded = word + 0x7FFF + ((word >> 16) & 1);
    return (uint16_t)((value != value ? word | 0x00400000 : rounded) >> 16); /* NaN stays a quiet NaN */
}

HALF_CONVERSION uint16_t bf16_from_double(double value) { return bf16_from_float(float_rounded_to_odd(value)); }

#endif
