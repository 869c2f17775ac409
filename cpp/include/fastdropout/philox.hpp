// Philox4x32-10 (Salmon et al., SC11), scalar and constexpr, following Random123's
// philox.h. docs/spec.md section 2. Everything sits in an anonymous namespace so that a
// kernel TU compiled with AVX-512 flags and the baseline TUs never share one copy
// of these functions (see STYLE.md, "ODR safety").
#pragma once

#include <cstdint>

namespace fastdropout {
namespace {

constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;  // multiplier for word 0
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;  // multiplier for word 2
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio, key bump for k0
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1, key bump for k1
constexpr int kPhiloxRounds = 10;

struct PhiloxBlock {
    std::uint32_t v[4];
};

constexpr PhiloxBlock philox4x32_round(PhiloxBlock c, std::uint32_t k0, std::uint32_t k1) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxM0) * c.v[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxM1) * c.v[2];
    const auto hi0 = static_cast<std::uint32_t>(p0 >> 32);
    const auto lo0 = static_cast<std::uint32_t>(p0);
    const auto hi1 = static_cast<std::uint32_t>(p1 >> 32);
    const auto lo1 = static_cast<std::uint32_t>(p1);
    return PhiloxBlock{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
}

// Ten rounds; the key is bumped *between* rounds, so round 0 uses the key as given
// (Random123's philox4x32_R applies _philox4x32bumpkey after each round but the last).
constexpr PhiloxBlock philox4x32_10(PhiloxBlock ctr, std::uint32_t k0, std::uint32_t k1) {
    for (int r = 0; r < kPhiloxRounds; ++r) {
        ctr = philox4x32_round(ctr, k0, k1);
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
    }
    return ctr;
}

constexpr bool philox_kat_ok(PhiloxBlock ctr, std::uint32_t k0, std::uint32_t k1,
                             PhiloxBlock expect) {
    const PhiloxBlock r = philox4x32_10(ctr, k0, k1);
    return r.v[0] == expect.v[0] && r.v[1] == expect.v[1] && r.v[2] == expect.v[2] &&
           r.v[3] == expect.v[3];
}

// Random123 kat_vectors, philox4x32 with 10 rounds (also in tests/data/philox_kat.txt).
static_assert(philox_kat_ok({{0, 0, 0, 0}}, 0, 0,
                            {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}),
              "Philox4x32-10 KAT 1");
static_assert(philox_kat_ok({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                            0xffffffffu, 0xffffffffu,
                            {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}),
              "Philox4x32-10 KAT 2");
static_assert(philox_kat_ok({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                            0xa4093822u, 0x299f31d0u,
                            {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}),
              "Philox4x32-10 KAT 3");

}  // namespace
}  // namespace fastdropout
