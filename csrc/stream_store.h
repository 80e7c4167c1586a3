/* stream_store.h: writing a cache line of output past the caches (non-temporal stores).
 *
 * A gradient much larger than the last-level cache is evicted before anyone reads it again, yet a
 * normal store first reads each line in (for ownership): a third of the memory traffic of the pass.
 * A streaming store writes the whole line without reading it. Mixing normal and streaming stores
 * on one line is very slow (the line is written out twice), so callers stream whole lines only
 * and compute every value of a line before streaming it. Streaming stores are weakly ordered:
 * stream_fence() makes them visible before the thread reports its work done. Elsewhere than
 * x86-64, plain stores. */
#ifndef STREAM_STORE_H
#define STREAM_STORE_H

#include <stdint.h>
#include <string.h>

#define CACHE_LINE 64

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* 64 bytes from line to dst, a multiple of 64 (the widest vector the instruction set has) */
static inline void stream_line(void *dst, const void *line) {
#if defined(__AVX512F__)
    _mm512_stream_si512((__m512i *)dst, _mm512_loadu_si512(line));
#elif defined(__AVX__)
    for (int half = 0; half < 2; half++)
        _mm256_stream_si256((__m256i *)dst + half, _mm256_loadu_si256((const __m256i *)line + half));
#else
    for (int quarter = 0; quarter < 4; quarter++)
        _mm_stream_si128((__m128i *)dst + quarter, _mm_loadu_si128((const __m128i *)line + quarter));
#endif
}

static inline void stream_fence(void) { _mm_sfence(); }
#else
static inline void stream_line(void *dst, const void *line) { memcpy(dst, line, CACHE_LINE); }
static inline void stream_fence(void) {}
#endif

#endif
