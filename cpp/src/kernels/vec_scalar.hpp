// One-lane "vectors" for the portable kernel: the same vocabulary as vec_avx2.hpp and
// vec_avx512.hpp, so dropout_generic.hpp is one algorithm for every ISA.
// Compiled with baseline flags only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "half.hpp"

#define FASTDROPOUT_INLINE inline

namespace fastdropout {
namespace scalar {
namespace {

// ---- Philox lanes -----------------------------------------------------------------
using U32 = std::uint32_t;
// Independent vectors in flight per Philox pass (hides the multiply latency).
constexpr int kSets = 4;
constexpr int kLanes = 1;

FASTDROPOUT_INLINE U32 set1(std::uint32_t v) { return v; }
FASTDROPOUT_INLINE U32 load(const std::uint32_t* p) { return *p; }
FASTDROPOUT_INLINE void store(std::uint32_t* p, U32 v) { *p = v; }
FASTDROPOUT_INLINE U32 iota() { return 0; }
FASTDROPOUT_INLINE U32 add(U32 a, U32 b) { return a + b; }
FASTDROPOUT_INLINE U32 xor3(U32 a, U32 b, U32 c) { return a ^ b ^ c; }
FASTDROPOUT_INLINE U32 xor2(U32 a, U32 b) { return a ^ b; }
FASTDROPOUT_INLINE void mulhilo(U32 a, U32 m, U32& hi, U32& lo) {
    const std::uint64_t p = static_cast<std::uint64_t>(a) * m;
    hi = static_cast<U32>(p >> 32);
    lo = static_cast<U32>(p);
}
// Keep bits of one block's four words, in stream order (word w -> bit w).
FASTDROPOUT_INLINE std::uint64_t keep_bits(U32 r0, U32 r1, U32 r2, U32 r3, U32 t) {
    return static_cast<std::uint64_t>(r0 >= t) | (static_cast<std::uint64_t>(r1 >= t) << 1) |
           (static_cast<std::uint64_t>(r2 >= t) << 2) | (static_cast<std::uint64_t>(r3 >= t) << 3);
}

// ---- 64-element groups: bit k of b decides element k --------------------------------
// Branch-free: the product (or x itself) is AND-ed with an all-ones / all-zeros word,
// so a dropped element is +0.0 whatever it was, and compilers can vectorise the loop
// with the baseline instruction set (SSE2 on x86-64).
template <class T, class U>
FASTDROPOUT_INLINE void and_store(T* y, int k, T v, std::uint64_t b) {
    U u;
    std::memcpy(&u, &v, sizeof u);
    u &= static_cast<U>(0) - static_cast<U>((b >> k) & 1u);
    std::memcpy(y + k, &u, sizeof u);
}
FASTDROPOUT_INLINE void scale64_f32(std::uint64_t b, const float* x, float* y, float s) {
    for (int k = 0; k < 64; ++k) {
        and_store<float, std::uint32_t>(y, k, x[k] * s, b);
    }
}
FASTDROPOUT_INLINE void select64_f32(std::uint64_t b, const float* x, float* y) {
    for (int k = 0; k < 64; ++k) {
        and_store<float, std::uint32_t>(y, k, x[k], b);
    }
}
FASTDROPOUT_INLINE void scale64_f64(std::uint64_t b, const double* x, double* y, double s) {
    for (int k = 0; k < 64; ++k) {
        and_store<double, std::uint64_t>(y, k, x[k] * s, b);
    }
}
FASTDROPOUT_INLINE void select64_f64(std::uint64_t b, const double* x, double* y) {
    for (int k = 0; k < 64; ++k) {
        and_store<double, std::uint64_t>(y, k, x[k], b);
    }
}
FASTDROPOUT_INLINE void scale64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float s) {
    for (int k = 0; k < 64; ++k) {
        if ((b >> k) & 1u) {
            y[k] = float_to_half_bits(half_bits_to_float(x[k]) * s);
        } else {
            y[k] = 0;
        }
    }
}
FASTDROPOUT_INLINE void select64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y) {
    for (int k = 0; k < 64; ++k) {
        y[k] = static_cast<std::uint16_t>(x[k] & (0u - static_cast<unsigned>((b >> k) & 1u)));
    }
}

// float16 <-> float32 for 64 elements (fused kernels of SPEC sections 9-10).
FASTDROPOUT_INLINE void widen64_f16(const std::uint16_t* h, float* f) {
    for (int k = 0; k < 64; ++k) {
        f[k] = half_bits_to_float(h[k]);
    }
}
FASTDROPOUT_INLINE void narrow64_f16(const float* f, std::uint16_t* h) {
    for (int k = 0; k < 64; ++k) {
        h[k] = float_to_half_bits(f[k]);
    }
}

// bfloat16 (SPEC section 8): widen (exact), multiply in float32 (exact for two
// bfloat16 values), round once to bfloat16 with integer round-half-even; dropped
// lanes are +0.0 before the rounding, which keeps them +0.0.
FASTDROPOUT_INLINE void scale64_bf16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                     float s) {
    float f[64];
    for (int k = 0; k < 64; ++k) {
        f[k] = bf16_bits_to_float(x[k]);
    }
    scale64_f32(b, f, f, s);
    for (int k = 0; k < 64; ++k) {
        y[k] = bf16_round_bits(float_bits(f[k]));
    }
}

}  // namespace
}  // namespace scalar
}  // namespace fastdropout
