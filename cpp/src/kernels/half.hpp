// IEEE binary16 <-> binary32 in portable C++, bit-compatible with NumPy's own
// conversions (npy_half): exact widening; narrowing rounds to nearest, ties to even,
// with subnormals, overflow to infinity, and NaN payloads truncated (kept a NaN).
// Used by the scalar kernel and by every ISA for tails. Internal linkage only.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdropout {
namespace {

inline std::uint32_t float_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float bits_float(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline float half_bits_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = h & 0x7c00u;
    std::uint32_t sig = h & 0x03ffu;
    if (exp == 0x7c00u) {  // infinity or NaN: same significand, widened
        return bits_float(sign | 0x7f800000u | (sig << 13));
    }
    if (exp != 0) {  // normal: rebias the exponent by 127 - 15 = 112
        return bits_float(sign | ((static_cast<std::uint32_t>(h & 0x7fffu) + 0x1c000u) << 13));
    }
    if (sig == 0) {
        return bits_float(sign);  // signed zero
    }
    // Subnormal half: normalise the significand; every one is a normal float.
    std::uint32_t e = 113;  // exponent (biased, float) of 2**-14
    while ((sig & 0x0400u) == 0) {
        sig <<= 1;
        --e;
    }
    return bits_float(sign | (e << 23) | ((sig & 0x03ffu) << 13));
}

inline std::uint16_t float_to_half_bits(float f) {
    const std::uint32_t u = float_bits(f);
    const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t exp = u & 0x7f800000u;
    const std::uint32_t man = u & 0x007fffffu;
    if (exp == 0x7f800000u) {
        if (man == 0) {
            return static_cast<std::uint16_t>(sign | 0x7c00u);
        }
        // NaN: keep the top ten payload bits; never let it collapse to infinity.
        std::uint32_t h = 0x7c00u | (man >> 13);
        if (h == 0x7c00u) {
            h = 0x7c01u;
        }
        return static_cast<std::uint16_t>(sign | h);
    }
    if (exp >= 0x47800000u) {  // |f| >= 2**16: overflow
        return static_cast<std::uint16_t>(sign | 0x7c00u);
    }
    if (exp <= 0x38000000u) {  // |f| < 2**-14: subnormal half or zero
        if (exp < 0x33000000u) {  // below half the smallest subnormal: rounds to 0
            return sign;
        }
        const std::uint32_t e = exp >> 23;      // 102 .. 112
        const std::uint32_t full = man | 0x00800000u;
        const std::uint32_t shift = 126 - e;    // 14 .. 24 bits to drop
        std::uint32_t h = full >> shift;
        const std::uint32_t rest = full & ((1u << shift) - 1u);
        const std::uint32_t half = 1u << (shift - 1);
        if (rest > half || (rest == half && (h & 1u))) {
            ++h;  // may carry into the exponent field: 2**-14, which is right
        }
        return static_cast<std::uint16_t>(sign | h);
    }
    // Normal range: rebias, then round the 13 dropped bits to nearest even. A carry
    // out of the significand bumps the exponent, up to infinity, which is right.
    std::uint32_t h = ((exp - 0x38000000u) >> 13) | (man >> 13);
    const std::uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
        ++h;
    }
    return static_cast<std::uint16_t>(sign | h);
}

// bfloat16 (the top half of a binary32) <-> binary32: widening is exact; narrowing
// rounds to nearest, ties to even, in integer arithmetic (SPEC section 8), keeps
// subnormals, overflows to infinity, and turns a NaN into a quiet NaN with the same
// sign and top payload bits. Not VCVTNEPS2BF16, which flushes subnormals to zero.
inline float bf16_bits_to_float(std::uint16_t h) {
    return bits_float(static_cast<std::uint32_t>(h) << 16);
}

inline std::uint16_t bf16_round_bits(std::uint32_t u) {
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t quiet = (u >> 16) | 0x0040u;
    return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

inline std::uint16_t float_to_bf16_bits(float f) { return bf16_round_bits(float_bits(f)); }

}  // namespace
}  // namespace fastdropout
