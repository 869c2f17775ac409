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
#include "window.hpp"

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

// Random bytes with the special values of each dtype sprinkled in.
std::vector<unsigned char> random_data(std::size_t n, int dt) {
    const std::size_t esize = fd::dtype_size(static_cast<fd::Dtype>(dt));
    std::vector<unsigned char> d(n * esize);
    for (auto& c : d) {
        c = static_cast<unsigned char>(rnd());
    }
    const std::uint64_t specials[4][6] = {
        {0x7e00, 0x7c00, 0xfc00, 0x8000, 0x0001, 0x7bff},  // f16 NaN, +-Inf, -0, subnormal, max
        {0x7fc00001, 0x7f800000, 0xff800000, 0x80000000, 0x00000001, 0x7f7fffff},
        {0x7ff8000000000001ull, 0x7ff0000000000000ull, 0xfff0000000000000ull,
         0x8000000000000000ull, 1ull, 0x7fefffffffffffffull},
        {0x7fc1, 0x7f80, 0xff80, 0x8000, 0x0001, 0x7f7f}};  // bfloat16
    const int row = dt;
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

// Whether two element arrays are equal bit for bit, except that two NaNs count as
// equal (dropout_add adds two operands, and which NaN an addition of two NaNs
// returns depends on the compiler's operand order, in NumPy as here).
bool same_up_to_nan(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b,
                    int dt) {
    const std::size_t es = fd::dtype_size(static_cast<fd::Dtype>(dt));
    for (std::size_t i = 0; i + es <= a.size(); i += es) {
        if (std::memcmp(&a[i], &b[i], es) == 0) {
            continue;
        }
        std::uint64_t u = 0;
        std::uint64_t v = 0;
        std::memcpy(&u, &a[i], es);
        std::memcpy(&v, &b[i], es);
        std::uint64_t abs_mask = 0, inf = 0;
        switch (dt) {
            case fd::kF16: abs_mask = 0x7fff; inf = 0x7c00; break;
            case fd::kBF16: abs_mask = 0x7fff; inf = 0x7f80; break;
            case fd::kF32: abs_mask = 0x7fffffff; inf = 0x7f800000; break;
            default: abs_mask = 0x7fffffffffffffffull; inf = 0x7ff0000000000000ull; break;
        }
        if ((u & abs_mask) <= inf || (v & abs_mask) <= inf) {
            return false;
        }
    }
    return true;
}

// dropout_add, alpha dropout and the grad_bias sums against the scalar table.
void check_fused(const fd::KernelTable& t, const fd::KernelTable& ref, int dt, std::size_t n,
                 const fd::StreamArgs& stream, const std::vector<unsigned char>& x, double scale,
                 bool scaled, const std::string& what) {
    const std::size_t es = fd::dtype_size(static_cast<fd::Dtype>(dt));
    const auto r = random_data(n, dt);
    const std::size_t bias_n = 1 + rnd() % 70;
    const auto bias = random_data(bias_n, dt);
    std::vector<unsigned char> y1(n * es), y2(n * es);
    std::vector<std::uint8_t> b1((n + 7) / 8 + 1, 0xAA), b2((n + 7) / 8 + 1, 0xAA);
    fd::FusedArgs a{};
    a.stream = stream;
    a.x = x.data();
    a.residual = r.data();
    a.bias = (rnd() & 1) != 0 ? bias.data() : nullptr;
    a.bias_n = bias_n;
    a.scale = scale;
    a.scaled = scaled;
    // alpha coefficients, exact in every dtype (p = 0.5 rounded to bfloat16)
    a.shift = 0.77734375;
    a.dropped = -0.77734375;
    a.y = y1.data();
    a.bits = b1.data();
    t.add_forward[dt](a, 0, n);
    a.y = y2.data();
    a.bits = b2.data();
    ref.add_forward[dt](a, 0, n);
    check(same_up_to_nan(y1, y2, dt), what + " add_forward values");
    check(b1 == b2, what + " add_forward bits");
    const fd::MaskRun run{b1.data(), 0, fd::RunKind::kBits};
    const fd::MaskRun kept{nullptr, 0, fd::RunKind::kAllKept};
    for (const fd::MaskRun& mr : {run, kept}) {
        a.y = y1.data();
        t.add_apply[dt](a, mr, 0, n);
        a.y = y2.data();
        ref.add_apply[dt](a, mr, 0, n);
        check(same_up_to_nan(y1, y2, dt), what + " add_apply");
    }
    a.scale = 0.88671875;
    a.y = y1.data();
    a.bits = b1.data();
    t.alpha_forward[dt](a, 0, n);
    a.y = y2.data();
    a.bits = b2.data();
    ref.alpha_forward[dt](a, 0, n);
    check(y1 == y2, what + " alpha_forward values");
    check(b1 == b2, what + " alpha_forward bits");
    a.y = y1.data();
    t.alpha_apply[dt](a, run, 0, n);
    a.y = y2.data();
    ref.alpha_apply[dt](a, run, 0, n);
    check(y1 == y2, what + " alpha_apply");
    // grad_bias: sums over rows of bias_n columns, from column 0
    const std::size_t rows_n = n / bias_n * bias_n;
    fd::ApplyArgs ap{};
    ap.x = x.data();
    ap.bits = b1.data();
    ap.scale = scale;
    ap.scaled = scaled;
    std::vector<double> s1(bias_n, 0.0), s2(bias_n, 0.0);
    ap.y = y1.data();
    t.apply_sum[dt](ap, 0, rows_n, s1.data(), 0, bias_n);
    ap.y = y2.data();
    ref.apply_sum[dt](ap, 0, rows_n, s2.data(), 0, bias_n);
    check(std::memcmp(y1.data(), y2.data(), rows_n * es) == 0, what + " apply_sum values");
    bool sums_equal = true;
    for (std::size_t c = 0; c < bias_n; ++c) {
        sums_equal = sums_equal && (std::memcmp(&s1[c], &s2[c], sizeof(double)) == 0 ||
                                    (s1[c] != s1[c] && s2[c] != s2[c]));
    }
    check(sums_equal, what + " apply_sum sums");
}

void check_kernels(const fd::KernelTable& t, const fd::KernelTable& ref) {
    const std::size_t sizes[] = {0, 1, 3, 8, 63, 64, 65, 200, 1000, 4099};
    const std::uint64_t offsets[] = {0, 1, 2, 3, 77, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFF00ull,
                                     (std::uint64_t{1} << 34) - 5};
    const std::uint64_t thresholds[] = {0, 1, 0x1999999Au, 0x80000000u, 0xFFFFFFFFu,
                                        std::uint64_t{1} << 32};
    const double scales[4][2] = {
        {2.0, 1.25}, {2.0, 1.1111111640930176}, {2.0, 1.0 / 0.9}, {2.0, 1.109375}};
    for (int dt = 0; dt < fd::kNumDtypes; ++dt) {
        const std::size_t es = fd::dtype_size(static_cast<fd::Dtype>(dt));
        for (std::size_t n : sizes) {
            for (std::uint64_t off : offsets) {
                const std::uint64_t thr = thresholds[rnd() % 6];
                const bool scaled = (rnd() & 1) != 0;
                const double scale = scales[dt][rnd() % 2];
                const auto x = random_data(n, dt);
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
                check_fused(t, ref, dt, n, a.stream, x, scale, scaled, what);
            }
        }
    }
}

// Windows (window.cpp and the window kernels of window_generic.hpp): a block of R rows
// of L elements whose rows are S apart in the global stream, against the reference
// table's dense kernels run row by row. Short rows take the window kernel, long ones
// the dense kernels; offsets cover every residue mod 4, the block counter's wrap at
// 2**62 and the carry of its low word.
void check_windows(const fd::KernelTable& t, const fd::KernelTable& ref) {
    const std::size_t shapes[][3] = {{600, 1, 9},   {37, 3, 11},  {25, 63, 130},
                                     {20, 65, 130}, {50, 200, 1000}, {6, 1500, 4000}};
    const std::uint64_t offsets[] = {0, 1, 2, 3, ~std::uint64_t{0} - 2000,
                                     (std::uint64_t{1} << 34) - 130};
    for (int threads = 1; threads <= 2; ++threads) {
        fd::set_num_threads(threads);
        for (const auto& sh : shapes) {
            const std::size_t rows = sh[0];
            const std::size_t len = sh[1];
            const std::size_t n = rows * len;
            fd::WindowLayout w;
            w.dims = {rows, len};
            w.gstride = {sh[2], 1};
            for (std::uint64_t off : offsets) {
                const fd::StreamArgs s{0x12345678u, 0x9abcdef0u, off, 0x66666666u};
                // expected: each row's bits from the reference's dense kernel
                std::vector<std::uint8_t> want((n + 7) / 8, 0);
                std::vector<std::uint8_t> row((len + 7) / 8 + 8);
                for (std::size_t r = 0; r < rows; ++r) {
                    fd::StreamArgs rs = s;
                    rs.offset = off + r * sh[2];
                    ref.gen_bits(rs, row.data(), 0, len);
                    for (std::size_t j = 0; j < len; ++j) {
                        const std::size_t i = r * len + j;
                        want[i / 8] = static_cast<std::uint8_t>(
                            want[i / 8] | (((row[j / 8] >> (j % 8)) & 1u) << (i % 8)));
                    }
                }
                const std::string what = std::string(t.name) + " window " +
                                         std::to_string(rows) + "x" + std::to_string(len) +
                                         " offset " + std::to_string(off) + " threads " +
                                         std::to_string(threads);
                std::vector<std::uint8_t> got((n + 7) / 8, 0xAB);
                fd::run_window_gen_bits(t, s, got.data(), w);
                check(got == want, what + " gen_bits");
                // the forward pass: float32, y = x * 2 where kept, its mask bits
                std::vector<float> x(n);
                std::vector<float> y(n);
                for (std::size_t i = 0; i < n; ++i) {
                    x[i] = static_cast<float>(i % 1000) + 0.5f;
                }
                fd::ForwardArgs a{};
                a.stream = s;
                a.x = x.data();
                a.y = y.data();
                std::vector<std::uint8_t> bits((n + 7) / 8, 0xCD);
                a.bits = bits.data();
                a.n = n;
                a.scale = 2.0;
                a.scaled = true;
                fd::run_window_forward(t, fd::kF32, a, w);
                check(bits == want, what + " forward bits");
                bool values = true;
                for (std::size_t i = 0; i < n; ++i) {
                    const bool keep = ((want[i / 8] >> (i % 8)) & 1u) != 0;
                    values = values && y[i] == (keep ? x[i] * 2.0f : 0.0f);
                }
                check(values, what + " forward values");
            }
        }
    }
    fd::set_num_threads(0);
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
        check_windows(t, scalar);
        std::printf("%-7s checked against scalar\n", t.name);
    }
    if (g_failures != 0) {
        std::printf("%d failures\n", g_failures);
        return 1;
    }
    std::printf("all kernel tables agree\n");
    return 0;
}
