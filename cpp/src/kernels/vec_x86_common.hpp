// Shared by vec_avx2.hpp and vec_avx512.hpp: the inline macro and pdep.
// Only included from TUs compiled with at least AVX2 + BMI2 flags.
#pragma once

#include <immintrin.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define FASTDROPOUT_INLINE __forceinline
#else
#define FASTDROPOUT_INLINE inline __attribute__((always_inline))
#endif
