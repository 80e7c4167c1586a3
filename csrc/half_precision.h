/* half_precision.h: IEEE binary16 and bfloat16 values, kept as uint16_t bit patterns, to and from
 * double. Each conversion to half precision rounds once, to nearest even, so a gradient computed in
 * double lands on the correctly rounded half-precision value. */
#ifndef HALF_PRECISION_H
#define HALF_PRECISION_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* binary16 through the compiler's _Float16 (GCC >= 12 and clang on x86-64 and aarch64), whose
 * conversion from double rounds once. */
static inline double f16_to_double(uint16_t bits) {
    _Float16 half;
    memcpy(&half, &bits, sizeof half);
    return (double)half;
}

static inline uint16_t f16_from_double(double value) {
    const _Float16 half = (_Float16)value;
    uint16_t bits;
    memcpy(&bits, &half, sizeof bits);
    return bits;
}

/* bfloat16 is the top half of a float. */
static inline double bf16_to_double(uint16_t bits) {
    const uint32_t word = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &word, sizeof value);
    return value;
}

/* double -> float rounded to odd (an inexact result gets an odd last bit, so it can never look like
 * a tie), then float -> bfloat16 to nearest even: together, one correct rounding of the double. */
static inline uint16_t bf16_from_double(double value) {
    const float single = (float)value;
    uint32_t word;
    memcpy(&word, &single, sizeof word);
    if (isnan(single)) return (uint16_t)((word >> 16) | 0x0040); /* a quiet NaN, sign kept */
    if ((double)single != value && isfinite(value)) {
        if (fabs((double)single) > fabs(value)) word -= 1; /* toward zero instead of nearest */
        word |= 1;
    }
    word += 0x7FFF + ((word >> 16) & 1);
    return (uint16_t)(word >> 16);
}

#endif
