// Native cross-check of every kernel table the CPU supports against the scalar table
// and against the constexpr Philox of philox.hpp. Needs no Python, so it also runs
// where the module can't (e.g. an aarch64 cross build under qemu-aarch64):
//   cmake -S . -B build/native -DFASTDROPOUT_BUILD_TESTS=ON -DFASTDROPOUT_BUILD_MODULE=OFF
//   cmake --build build/native && ctest --test-dir build/native --output-on-failure
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dispatch.hpp"
#include "fastdropout/isa.hpp"
#include "fastdropout/kernel_table.hpp"
#include "fastdropout/philox.hpp"
#include "parallel.hpp"

namespace fd = fastdropout;

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        ++g_failures;
        if (g_failures <= 20) {
            std::printf("FAIL: %s\n", what.c_str());
        }
    }
}

std::uint64_t g_state = 0x9E3779B97F4A7C15ull;
std::uint64_t rnd() {  // xorshift64*
    g_state ^= g_state >> 12;
    g_state ^= g_state << 25;
    g_state ^= g_state >> 27;
    return g_state * 0x2545F4914F6CDD1Dull;
}

// Random bytes with the special values of each width sprinkled in.
std::vector<unsigned char> random_data(std::size_t n, std::size_t esize) {
    std::vector<unsigned char> d(n * esize);
    for (auto& c : d) {
        c = static_cast<unsigned char>(rnd());
    }
    const std::uint64_t specials[3][6] = {
        {0x7e00, 0x7c00, 0xfc00, 0x8000, 0x0001, 0x7bff},  // f16 NaN, +-Inf, -0, subnormal, max
        {0x7fc00001, 0x7f800000, 0xff800000, 0x80000000, 0x00000001, 0x7f7fffff},
        {0x7ff8000000000001ull, 0x7ff0000000000000ull, 0xfff0000000000000ull,
         0x8000000000000000ull, 1ull, 0x7fefffffffffffffull}};
    const int row = esize == 2 ? 0 : (esize == 4 ? 1 : 2);
    for (std::size_t k = 0; k < 6 && k < n; ++k) {
        std::memcpy(&d[(k * 7 % n) * esize], &specials[row][k], esize);
    }
    return d;
}

void check_philox(const fd::KernelTable& t) {
    struct Kat {
        std::uint32_t c[4], k[2], r[4];
    };
    const Kat kats[3] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}};
    for (const Kat& k : kats) {
        std::uint32_t out[4];
        const std::uint64_t first = k.c[0] | (static_cast<std::uint64_t>(k.c[1]) << 32);
        t.philox_blocks(k.k[0], k.k[1], first, k.c[2], k.c[3], 1, out);
        check(std::memcmp(out, k.r, sizeof out) == 0, std::string(t.name) + " philox KAT");
    }
    // A run of blocks across the 2**32 carry and the 2**64 wrap.
    const std::uint64_t starts[] = {0, 0xFFFFFFF5ull, 0xFFFFFFFFFFFFFFF0ull, 12345};
    for (std::uint64_t first : starts) {
        std::vector<std::uint32_t> out(4 * 37);
        t.philox_blocks(7, 9, first, 0, 0, 37, out.data());
        for (std::size_t i = 0; i < 37; ++i) {
            const std::uint64_t b = first + i;
            const fd::PhiloxBlock r = fd::philox4x32_10(
                {{static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(b >> 32), 0, 0}}, 7, 9);
            check(std::memcmp(&out[4 * i], r.v, sizeof r.v) == 0,
                  std::string(t.name) + " philox run at " + std::to_string(first));
        }
    }
}

void check_kernels(const fd::KernelTable& t, const fd::KernelTable& ref) {
    const std::size_t sizes[] = {0, 1, 3, 8, 63, 64, 65, 200, 1000, 4099};
    const std::uint64_t offsets[] = {0, 1, 2, 3, 77, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFF00ull,
                                     (std::uint64_t{1} << 34) - 5};
    const std::uint64_t thresholds[] = {0, 1, 0x1999999Au, 0x80000000u, 0xFFFFFFFFu,
                                        std::uint64_t{1} << 32};
    const double scales[3][2] = {{2.0, 1.25}, {2.0, 1.1111111640930176}, {2.0, 1.0 / 0.9}};
    for (int dt = 0; dt < fd::kNumDtypes; ++dt) {
        const std::size_t es = dt == fd::kF16 ? 2 : (dt == fd::kF32 ? 4 : 8);
        for (std::size_t n : sizes) {
            for (std::uint64_t off : offsets) {
                const std::uint64_t thr = thresholds[rnd() % 6];
                const bool scaled = (rnd() & 1) != 0;
                const double scale = scales[dt][rnd() % 2];
                const auto x = random_data(n, es);
                std::vector<unsigned char> y1(n * es), y2(n * es);
                std::vector<std::uint8_t> b1((n + 7) / 8 + 1, 0xAA), b2((n + 7) / 8 + 1, 0xAA);
                fd::ForwardArgs a{};
                a.stream = {static_cast<std::uint32_t>(rnd()), static_cast<std::uint32_t>(rnd()), off, thr};
                a.x = x.data();
                a.n = n;
                a.scale = scale;
                a.scaled = scaled;
                a.y = y1.data();
                a.bits = b1.data();
                t.forward[dt](a, 0, n);
                a.y = y2.data();
                a.bits = b2.data();
                ref.forward[dt](a, 0, n);
                const std::string what = std::string(t.name) + " dtype " + std::to_string(dt) +
                                         " n " + std::to_string(n) + " offset " + std::to_string(off);
                check(y1 == y2, what + " forward values");
                check(b1 == b2, what + " forward bits");
                // gen_bits agrees with the forward's bits
                std::vector<std::uint8_t> g((n + 7) / 8 + 1, 0xAA);
                t.gen_bits(a.stream, g.data(), 0, n);
                check(g == b1, what + " gen_bits");
                // apply at an arbitrary bit offset
                const std::uint64_t bit0 = rnd() % 13;
                std::vector<std::uint8_t> src((n + 13 + 7) / 8 + 1);
                for (auto& c : src) {
                    c = static_cast<std::uint8_t>(rnd());
                }
                fd::ApplyArgs ap{};
                ap.x = x.data();
                ap.bits = src.data();
                ap.bit0 = bit0;
                ap.scale = scale;
                ap.scaled = scaled;
                ap.all_kept = (rnd() % 4) == 0;
                ap.y = y1.data();
                t.apply[dt](ap, 0, n);
                ap.y = y2.data();
                ref.apply[dt](ap, 0, n);
                check(y1 == y2, what + " apply");
            }
        }
    }
}

}  // namespace

int main() {
    const fd::KernelTable& scalar = fd::scalar::kernel_table();
    check_philox(scalar);
    for (const std::string& name : fd::available_isas()) {
        fd::set_isa(name);
        const fd::KernelTable& t = fd::active_table();
        check_philox(t);
        check_kernels(t, scalar);
        std::printf("%-7s checked against scalar\n", t.name);
    }
    if (g_failures != 0) {
        std::printf("%d failures\n", g_failures);
        return 1;
    }
    std::printf("all kernel tables agree\n");
    return 0;
}
