// Shared by vec_avx2.hpp and vec_avx512.hpp: the inline macro and pdep.
// Only included from TUs compiled with at least AVX2 + BMI2 flags.
#pragma once

#include <immintrin.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define FASTDROPOUT_INLINE __forceinline
#else
#define FASTDROPOUT_INLINE inline __attribute__((always_inline))
#endif

#include <cstddef>

namespace fastdropout {
namespace {  // internal linkage: each ISA's TU has its own copy (STYLE.md, ODR safety)

// Non-temporal ("streaming") stores for outputs too large to stay in the caches: a
// normal store first reads the line it writes into the cache (write-allocate), so a
// kernel that streams x into y moves 3 bytes for every 2 it must; a streaming store
// writes whole lines straight to memory. dst must be aligned to 64 bytes and nbytes
// a multiple of 64; src is an aligned, cache-resident buffer. The widest store the
// TU's flags allow (the line is combined in a write-combining buffer either way).
#define FASTDROPOUT_VEC_STREAM 1
FASTDROPOUT_INLINE void stream_store(void* dst, const void* src, std::size_t nbytes) {
    auto* d = static_cast<char*>(dst);
    const auto* s = static_cast<const char*>(src);
#if defined(__AVX512F__)
    for (std::size_t k = 0; k < nbytes; k += 64) {
        _mm512_stream_si512(reinterpret_cast<__m512i*>(d + k),
                            _mm512_load_si512(reinterpret_cast<const __m512i*>(s + k)));
    }
#else
    for (std::size_t k = 0; k < nbytes; k += 32) {
        _mm256_stream_si256(reinterpret_cast<__m256i*>(d + k),
                            _mm256_load_si256(reinterpret_cast<const __m256i*>(s + k)));
    }
#endif
}
// Streaming stores are weakly ordered: fence them before the kernel returns.
FASTDROPOUT_INLINE void stream_fence() { _mm_sfence(); }

}  // namespace
}  // namespace fastdropout
