// NEON (Advanced SIMD, aarch64 baseline) vocabulary for dropout_generic.hpp: four
// Philox blocks per vector. Compiled only in kernels/neon.cpp, on aarch64.
#pragma once

#include <arm_neon.h>

#include <cstddef>
#include <cstdint>

#include "half.hpp"

#define FASTDROPOUT_INLINE inline __attribute__((always_inline))

namespace fastdropout {
namespace neon {
namespace {

// ---- Philox lanes -----------------------------------------------------------------
using U32 = uint32x4_t;
// Independent vectors in flight per Philox pass (hides the multiply latency).
constexpr int kSets = 4;
constexpr int kLanes = 4;

FASTDROPOUT_INLINE U32 set1(std::uint32_t v) { return vdupq_n_u32(v); }
FASTDROPOUT_INLINE U32 load(const std::uint32_t* p) { return vld1q_u32(p); }
FASTDROPOUT_INLINE void store(std::uint32_t* p, U32 v) { vst1q_u32(p, v); }
FASTDROPOUT_INLINE U32 iota() {
    static const std::uint32_t k[4] = {0, 1, 2, 3};
    return vld1q_u32(k);
}
FASTDROPOUT_INLINE U32 add(U32 a, U32 b) { return vaddq_u32(a, b); }
FASTDROPOUT_INLINE U32 xor3(U32 a, U32 b, U32 c) { return veorq_u32(veorq_u32(a, b), c); }
FASTDROPOUT_INLINE U32 xor2(U32 a, U32 b) { return veorq_u32(a, b); }
// umull/umull2 give the four 64-bit products; uzp1/uzp2 split them into low and
// high words.
FASTDROPOUT_INLINE void mulhilo(U32 a, U32 m, U32& hi, U32& lo) {
    const uint32x4_t p01 = vreinterpretq_u32_u64(vmull_u32(vget_low_u32(a), vget_low_u32(m)));
    const uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_u32(a, m));
    lo = vuzp1q_u32(p01, p23);
    hi = vuzp2q_u32(p01, p23);
}
// Lane l of word w is stream position 4*l + w: weight each compare result by its
// bit and add across lanes.
FASTDROPOUT_INLINE std::uint64_t keep_bits(U32 r0, U32 r1, U32 r2, U32 r3, U32 t) {
    static const std::uint32_t w[4][4] = {{0x1u, 0x10u, 0x100u, 0x1000u},
                                          {0x2u, 0x20u, 0x200u, 0x2000u},
                                          {0x4u, 0x40u, 0x400u, 0x4000u},
                                          {0x8u, 0x80u, 0x800u, 0x8000u}};
    const uint32x4_t b = vorrq_u32(
        vorrq_u32(vandq_u32(vcgeq_u32(r0, t), vld1q_u32(w[0])),
                  vandq_u32(vcgeq_u32(r1, t), vld1q_u32(w[1]))),
        vorrq_u32(vandq_u32(vcgeq_u32(r2, t), vld1q_u32(w[2])),
                  vandq_u32(vcgeq_u32(r3, t), vld1q_u32(w[3]))));
    return vaddvq_u32(b);
}

// ---- 64-element groups: bit k of b decides element k --------------------------------
// Lane masks from bits (vtst: all ones where the bit is set); AND-ing with them
// gives +0.0 where dropped whatever the value was: a select, not a multiply.
FASTDROPOUT_INLINE uint32x4_t lanes32(std::uint64_t b4) {
    static const std::uint32_t sel[4] = {1, 2, 4, 8};
    return vtstq_u32(vdupq_n_u32(static_cast<std::uint32_t>(b4)), vld1q_u32(sel));
}
FASTDROPOUT_INLINE uint64x2_t lanes64(std::uint64_t b2) {
    static const std::uint64_t sel[2] = {1, 2};
    return vtstq_u64(vdupq_n_u64(b2), vld1q_u64(sel));
}
FASTDROPOUT_INLINE uint16x8_t lanes16(std::uint64_t b8) {
    static const std::uint16_t sel[8] = {1, 2, 4, 8, 16, 32, 64, 128};
    return vtstq_u16(vdupq_n_u16(static_cast<std::uint16_t>(b8)), vld1q_u16(sel));
}

FASTDROPOUT_INLINE void scale64_f32(std::uint64_t b, const float* x, float* y, float s) {
    for (int j = 0; j < 16; ++j) {
        const uint32x4_t v = vreinterpretq_u32_f32(vmulq_n_f32(vld1q_f32(x + 4 * j), s));
        vst1q_f32(y + 4 * j, vreinterpretq_f32_u32(vandq_u32(v, lanes32(b >> (4 * j)))));
    }
}
FASTDROPOUT_INLINE void select64_f32(std::uint64_t b, const float* x, float* y) {
    for (int j = 0; j < 16; ++j) {
        const uint32x4_t v = vreinterpretq_u32_f32(vld1q_f32(x + 4 * j));
        vst1q_f32(y + 4 * j, vreinterpretq_f32_u32(vandq_u32(v, lanes32(b >> (4 * j)))));
    }
}
FASTDROPOUT_INLINE void scale64_f64(std::uint64_t b, const double* x, double* y, double s) {
    for (int j = 0; j < 32; ++j) {
        const uint64x2_t v = vreinterpretq_u64_f64(vmulq_n_f64(vld1q_f64(x + 2 * j), s));
        vst1q_f64(y + 2 * j, vreinterpretq_f64_u64(vandq_u64(v, lanes64(b >> (2 * j)))));
    }
}
FASTDROPOUT_INLINE void select64_f64(std::uint64_t b, const double* x, double* y) {
    for (int j = 0; j < 32; ++j) {
        const uint64x2_t v = vreinterpretq_u64_f64(vld1q_f64(x + 2 * j));
        vst1q_f64(y + 2 * j, vreinterpretq_f64_u64(vandq_u64(v, lanes64(b >> (2 * j)))));
    }
}
// float16: widen (exact), multiply in float32 (exact for two halves), narrow once
// with the default round-to-nearest-even: NumPy's float16 product.
FASTDROPOUT_INLINE void scale64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float s) {
    for (int j = 0; j < 16; ++j) {
        const float32x4_t v = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + 4 * j)));
        const uint32x4_t r = vandq_u32(vreinterpretq_u32_f32(vmulq_n_f32(v, s)), lanes32(b >> (4 * j)));
        vst1_u16(y + 4 * j, vreinterpret_u16_f16(vcvt_f16_f32(vreinterpretq_f32_u32(r))));
    }
}
FASTDROPOUT_INLINE void select64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y) {
    for (int j = 0; j < 8; ++j) {
        vst1q_u16(y + 8 * j, vandq_u16(vld1q_u16(x + 8 * j), lanes16(b >> (8 * j))));
    }
}

// float16 <-> float32 for 64 elements (fused kernels of SPEC sections 9-10).
FASTDROPOUT_INLINE void widen64_f16(const std::uint16_t* h, float* f) {
    for (int j = 0; j < 16; ++j) {
        vst1q_f32(f + 4 * j, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + 4 * j))));
    }
}
FASTDROPOUT_INLINE void narrow64_f16(const float* f, std::uint16_t* h) {
    for (int j = 0; j < 16; ++j) {
        vst1_u16(h + 4 * j, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(f + 4 * j))));
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
}  // namespace neon
}  // namespace fastdropout
