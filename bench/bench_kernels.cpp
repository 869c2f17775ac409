// bench_kernels: time the dropout kernels without Python, per instruction set, beside
// a multi-threaded memcpy of the same bytes.
//
// Build (off by default; no Python needed):
//   cmake -S . -B build-bench -G Ninja -DFASTDROPOUT_BUILD_BENCH=ON -DFASTDROPOUT_BUILD_MODULE=OFF
//   ninja -C build-bench bench_kernels && build-bench/bench_kernels --help
//
// Why a hand-written harness rather than Google Benchmark or nanobench: the project
// takes no dependency for an optional target, and the few things that matter for a
// memory-bound kernel are short to write and easy to check here:
// - Same-run baseline. Every (dtype, threads) block times run_copy (parallel.cpp's
//   memcpy over the same chunks and threads as the kernels) on the same buffers, and
//   reports each kernel as a ratio to it, so a noisy or throttled machine shifts both
//   sides alike.
// - Round-robin repeats. Repeat r times every case (copy and each kernel of each ISA)
//   once before repeat r+1 starts, so drift (frequency, other processes) is spread
//   over all cases instead of landing on whichever ran last.
// - Warm-up. The first rounds are discarded: they fault the pages in and warm the
//   caches, the branch predictors and the OpenMP thread pool.
// - Median of repeats (robust to the odd preempted run), with the minimum and the
//   interquartile range printed so the spread is visible.
// - Calls shorter than --min-sample are repeated inside one sample, so small sizes
//   are not measured at the resolution of the clock.
// - Threads are set with fastdropout::set_num_threads, as the Python layer does; the
//   ISA with set_isa, as _core._set_simd does.
// - Cross-check before timing: every ISA's output (values and mask bits) must equal
//   the scalar kernel's, gen_bits must equal the fused kernel's mask, and applying
//   that mask must give the fused kernel's values. The scalar kernel itself is held
//   to the NumPy reference by the Python test suite. A kernel that fails is reported
//   as MISMATCH, not timed, and the exit status is 1.
//
// Byte counts for GB/s are the bytes the operation must move: x read + y written
// (+ the mask bits written or read); gen_bits only writes the mask. Cache
// write-allocate traffic is not counted, for the copy either.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch.hpp"
#include "fastdropout/kernel_args.hpp"
#include "fastdropout/kernel_table.hpp"
#include "parallel.hpp"

namespace {

using fastdropout::Dtype;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kAlign = 64;
constexpr std::size_t kChannels = 32;  // spatial shapes: (N, C, HW) / (N, HW, C)

const char* const kUsage =
    "usage: bench_kernels [options]\n"
    "  --n N            elements per array (default 16777216 = 2**24)\n"
    "  --dtype LIST     f16,f32,f64 or all (default f32)\n"
    "  --threads LIST   thread counts, 'max' = the OpenMP default (default 1,max)\n"
    "  --isa LIST       instruction sets, or all (default all available)\n"
    "  --kernels LIST   copy is always run; from forward_mask,forward,gen_bits,apply,\n"
    "                   spatial_cf,spatial_cl (default all)\n"
    "  --repeats R      timed rounds; the median is reported (default 9)\n"
    "  --warmup W       discarded rounds (default 2)\n"
    "  --min-sample S   seconds; shorter calls are repeated inside a sample (default 2e-4)\n"
    "  --p P            drop probability (default 0.5)\n"
    "Prints a Markdown table: median ns/element, GB/s, ratio to run_copy of the same\n"
    "bytes with the same threads, minimum, and interquartile range.\n";

// ---- small utilities ------------------------------------------------------------

struct AlignedFree {
    void operator()(std::uint8_t* p) const { ::operator delete(p, std::align_val_t{kAlign}); }
};
using Buffer = std::unique_ptr<std::uint8_t, AlignedFree>;

Buffer make_buffer(std::size_t nbytes) {
    const std::size_t size = std::max<std::size_t>(nbytes, 1);
    auto* p = static_cast<std::uint8_t*>(::operator new(size, std::align_val_t{kAlign}));
    std::memset(p, 0, size);  // fault the pages in before anything is timed
    return Buffer(p);
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= s.size()) {
        const std::size_t comma = s.find(',', start);
        const std::size_t end = comma == std::string::npos ? s.size() : comma;
        if (end > start) {
            out.push_back(s.substr(start, end - start));
        }
        if (comma == std::string::npos) {
            break;
        }
        start = comma + 1;
    }
    return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) {
            const std::size_t colon = line.find(':');
            if (colon != std::string::npos) {
                return line.substr(std::min(line.size(), colon + 2));
            }
        }
    }
    return "unknown";
}

struct DtypeInfo {
    const char* name;
    Dtype dt;
    std::size_t size;
};

const DtypeInfo kDtypes[] = {
    {"f16", fastdropout::kF16, 2},
    {"f32", fastdropout::kF32, 4},
    {"f64", fastdropout::kF64, 8},
};

// Distinct, finite values of every dtype: an arbitrary bit pattern could be NaN, and
// NaN payloads would make the cross-ISA comparison depend on nothing useful.
void fill_values(std::uint8_t* p, const DtypeInfo& d, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const auto k = static_cast<std::uint32_t>(i % 1000u);
        if (d.dt == fastdropout::kF16) {
            // 1.0 .. 1.999 in float16: exponent 15, 10-bit mantissa
            const auto h = static_cast<std::uint16_t>(0x3C00u | (k & 0x3FFu));
            std::memcpy(p + 2 * i, &h, 2);
        } else if (d.dt == fastdropout::kF32) {
            const float v = 1.0f + static_cast<float>(k) * 0.001f;
            std::memcpy(p + 4 * i, &v, 4);
        } else {
            const double v = 1.0 + static_cast<double>(k) * 0.001;
            std::memcpy(p + 8 * i, &v, 8);
        }
    }
}

// The scale dtype(1 / (1 - p)) as a double holding the dtype-rounded value (docs/spec.md section 3).
double rounded_scale(double p, Dtype dt) {
    const double s = 1.0 / (1.0 - p);
    if (dt == fastdropout::kF64) {
        return s;
    }
    if (dt == fastdropout::kF32) {
        return static_cast<double>(static_cast<float>(s));
    }
    // float16: round the double to 11 significant bits, half to even, as NumPy's
    // double -> float16 conversion does (s >= 1 is a normal number; from 65520 on
    // it rounds past float16's largest finite value to Inf).
    std::uint64_t u;
    std::memcpy(&u, &s, 8);
    const std::uint64_t lsb = (u >> 42) & 1u;
    u = (u + ((std::uint64_t{1} << 41) - 1) + lsb) & ~((std::uint64_t{1} << 42) - 1);
    double r;
    std::memcpy(&r, &u, 8);
    return r > 65504.0 ? HUGE_VAL : r;
}

std::uint64_t threshold_of(double p) {
    return static_cast<std::uint64_t>(std::nearbyint(p * 4294967296.0));  // exact
}

struct Stats {
    double median, min, q1, q3;
};

double quantile(const std::vector<double>& sorted, double q) {
    const double pos = q * static_cast<double>(sorted.size() - 1);
    const auto lo = static_cast<std::size_t>(pos);
    const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
    const double frac = pos - static_cast<double>(lo);
    return sorted[lo] * (1.0 - frac) + sorted[hi] * frac;
}

Stats stats_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return {quantile(v, 0.5), v.front(), quantile(v, 0.25), quantile(v, 0.75)};
}

struct Case {
    std::string kernel;
    std::string isa;  // empty for the copy
    double bytes;     // moved per call
    std::function<void()> run;
    std::size_t number = 1;  // calls per sample
    std::vector<double> samples;  // seconds per call
};

struct Options {
    std::size_t n = std::size_t{1} << 24;
    std::vector<std::string> dtypes{"f32"};
    std::vector<int> threads;
    std::vector<std::string> isas;
    std::vector<std::string> kernels{"forward_mask", "forward",    "gen_bits",
                                     "apply",        "spatial_cf", "spatial_cl"};
    int repeats = 9;
    int warmup = 2;
    double min_sample = 2e-4;
    double p = 0.5;
};

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "bench_kernels: %s\n\n%s", msg.c_str(), kUsage);
    std::exit(2);
}

std::string next_arg(int argc, char** argv, int& i) {
    if (i + 1 >= argc) {
        usage_error(std::string("missing value for ") + argv[i]);
    }
    return argv[++i];
}

Options parse(int argc, char** argv) {
    Options o;
    const int max_threads = fastdropout::get_num_threads();
    std::string threads = "1,max";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        try {
            if (a == "-h" || a == "--help") {
                std::fputs(kUsage, stdout);
                std::exit(0);
            } else if (a == "--n") {
                o.n = static_cast<std::size_t>(std::stoull(next_arg(argc, argv, i)));
            } else if (a == "--dtype") {
                o.dtypes = split(next_arg(argc, argv, i));
                if (contains(o.dtypes, "all")) {
                    o.dtypes = {"f32", "f64", "f16"};
                }
            } else if (a == "--threads") {
                threads = next_arg(argc, argv, i);
            } else if (a == "--isa") {
                o.isas = split(next_arg(argc, argv, i));
                if (contains(o.isas, "all")) {
                    o.isas.clear();
                }
            } else if (a == "--kernels") {
                o.kernels = split(next_arg(argc, argv, i));
            } else if (a == "--repeats") {
                o.repeats = std::stoi(next_arg(argc, argv, i));
            } else if (a == "--warmup") {
                o.warmup = std::stoi(next_arg(argc, argv, i));
            } else if (a == "--min-sample") {
                o.min_sample = std::stod(next_arg(argc, argv, i));
            } else if (a == "--p") {
                o.p = std::stod(next_arg(argc, argv, i));
            } else {
                usage_error("unknown option " + a);
            }
        } catch (const std::logic_error&) {  // stoi/stod: invalid_argument, out_of_range
            usage_error("bad value for " + a);
        }
    }
    for (const std::string& t : split(threads)) {
        const int v = (t == "max" || t == "all") ? max_threads : std::atoi(t.c_str());
        if (v < 1) {
            usage_error("bad thread count '" + t + "'");
        }
        if (std::find(o.threads.begin(), o.threads.end(), v) == o.threads.end()) {
            o.threads.push_back(v);
        }
    }
    const std::vector<std::string> avail = fastdropout::available_isas();
    if (o.isas.empty()) {
        o.isas = avail;
    }
    for (const std::string& isa : o.isas) {
        if (!contains(avail, isa)) {
            usage_error("instruction set '" + isa + "' is not available here");
        }
    }
    for (const std::string& d : o.dtypes) {
        if (d != "f16" && d != "f32" && d != "f64") {
            usage_error("unknown dtype '" + d + "' (f16, f32, f64, all)");
        }
    }
    for (const std::string& k : o.kernels) {
        if (k != "copy" && k != "forward_mask" && k != "forward" && k != "gen_bits" &&
            k != "apply" && k != "spatial_cf" && k != "spatial_cl") {
            usage_error("unknown kernel '" + k + "'");
        }
    }
    if (o.n == 0 || o.repeats < 1 || o.warmup < 0 || !(o.p >= 0.0 && o.p < 1.0)) {
        usage_error("need n >= 1, repeats >= 1, warmup >= 0 and 0 <= p < 1");
    }
    return o;
}

// Spatial layout for n elements: C = 32 channels, HW = the largest power of two
// <= n / C, capped at 4096, N = n / (C * HW). Zero N when n is not a multiple.
struct SpatialShape {
    std::size_t n_items = 0, hw = 0;
};

SpatialShape spatial_shape(std::size_t n) {
    SpatialShape s;
    if (n < kChannels) {
        return s;
    }
    std::size_t hw = 1;
    while (hw * 2 <= std::min<std::size_t>(n / kChannels, 4096)) {
        hw *= 2;
    }
    if (n % (kChannels * hw) == 0) {
        s.hw = hw;
        s.n_items = n / (kChannels * hw);
    }
    return s;
}

// ---- one (dtype, threads) block ---------------------------------------------------

struct Block {
    const DtypeInfo& d;
    const Options& o;
    std::size_t n;
    Buffer x, y, y_ref, bits, bits_ref, sbits;
    fastdropout::StreamArgs stream{};
    double scale;
    SpatialShape sp;
    int failures = 0;

    Block(const DtypeInfo& dt, const Options& opt)
        : d(dt), o(opt), n(opt.n), x(make_buffer(opt.n * dt.size)),
          y(make_buffer(opt.n * dt.size)), y_ref(make_buffer(opt.n * dt.size)),
          bits(make_buffer((opt.n + 7) / 8)), bits_ref(make_buffer((opt.n + 7) / 8)),
          scale(rounded_scale(opt.p, dt.dt)), sp(spatial_shape(opt.n)) {
        fill_values(x.get(), d, n);
        const std::uint64_t seed = 0x0123456789ABCDEFull;
        stream.k0 = static_cast<std::uint32_t>(seed);
        stream.k1 = static_cast<std::uint32_t>(seed >> 32);
        stream.offset = 0;
        stream.threshold = threshold_of(o.p);
        sbits = make_buffer((sp.n_items * kChannels + 7) / 8);
        // Spatial mask bits from the scalar generator; the same bits serve every ISA.
        fastdropout::set_isa("scalar");
        fastdropout::run_gen_bits(fastdropout::active_table(), stream, sbits.get(),
                                  sp.n_items * kChannels);
    }

    fastdropout::ForwardArgs forward_args(bool with_mask) {
        return {stream, x.get(), y.get(), with_mask ? bits.get() : nullptr, n, scale, true};
    }

    void forward(bool with_mask) {
        fastdropout::run_forward(fastdropout::active_table(), d.dt, forward_args(with_mask));
    }

    void apply_dense() {
        fastdropout::ApplyArgs a{x.get(), y.get(), bits_ref.get(), 0, scale, true, false};
        fastdropout::run_apply(fastdropout::active_table(), d.dt, a, {n}, {false});
    }

    void apply_spatial(bool channels_first) {
        fastdropout::ApplyArgs a{x.get(), y.get(), sbits.get(), 0, scale, true, false};
        if (channels_first) {
            fastdropout::run_apply(fastdropout::active_table(), d.dt, a,
                                   {sp.n_items, kChannels, sp.hw}, {false, false, true});
        } else {
            fastdropout::run_apply(fastdropout::active_table(), d.dt, a,
                                   {sp.n_items, sp.hw, kChannels}, {false, true, false});
        }
    }

    bool same(const Buffer& a, const Buffer& b, std::size_t nbytes) const {
        return std::memcmp(a.get(), b.get(), nbytes) == 0;
    }

    // The scalar kernel's results, the yardstick of the cross-check.
    void make_reference() {
        fastdropout::set_isa("scalar");
        forward(true);
        std::memcpy(y_ref.get(), y.get(), n * d.size);
        std::memcpy(bits_ref.get(), bits.get(), (n + 7) / 8);
    }

    // Whether `kernel` under the active ISA gives the scalar kernel's result.
    bool check(const std::string& kernel, std::vector<Buffer>& spatial_ref) {
        const std::size_t nb = n * d.size;
        std::memset(y.get(), 0xA5, nb);
        std::memset(bits.get(), 0xA5, (n + 7) / 8);
        if (kernel == "forward_mask") {
            forward(true);
            return same(y, y_ref, nb) && same(bits, bits_ref, (n + 7) / 8);
        }
        if (kernel == "forward") {
            forward(false);
            return same(y, y_ref, nb);
        }
        if (kernel == "gen_bits") {
            fastdropout::run_gen_bits(fastdropout::active_table(), stream, bits.get(), n);
            return same(bits, bits_ref, (n + 7) / 8);
        }
        if (kernel == "apply") {
            apply_dense();
            return same(y, y_ref, nb);
        }
        const bool cf = kernel == "spatial_cf";
        Buffer& ref = spatial_ref[cf ? 0 : 1];
        apply_spatial(cf);
        if (!ref) {  // first ISA checked is scalar (see main): keep its result
            ref = make_buffer(nb);
            std::memcpy(ref.get(), y.get(), nb);
            return true;
        }
        return same(y, ref, nb);
    }

    std::function<void()> runner(const std::string& kernel) {
        if (kernel == "forward_mask") {
            return [this] { forward(true); };
        }
        if (kernel == "forward") {
            return [this] { forward(false); };
        }
        if (kernel == "gen_bits") {
            return [this] {
                fastdropout::run_gen_bits(fastdropout::active_table(), stream, bits.get(), n);
            };
        }
        if (kernel == "apply") {
            return [this] { apply_dense(); };
        }
        const bool cf = kernel == "spatial_cf";
        return [this, cf] { apply_spatial(cf); };
    }

    double bytes_of(const std::string& kernel) const {
        const auto data = static_cast<double>(2 * n * d.size);
        const auto mask = static_cast<double>((n + 7) / 8);
        if (kernel == "forward_mask" || kernel == "apply") {
            return data + mask;
        }
        if (kernel == "gen_bits") {
            return mask;
        }
        if (kernel == "spatial_cf" || kernel == "spatial_cl") {
            return data + static_cast<double>((sp.n_items * kChannels + 7) / 8);
        }
        return data;  // copy, forward
    }
};

void run_block(const DtypeInfo& d, int threads, const Options& o, int& failures) {
    fastdropout::set_num_threads(threads);
    Block b(d, o);
    b.make_reference();

    std::vector<Case> cases;
    const std::size_t nb = b.n * d.size;
    cases.push_back({"copy", "", b.bytes_of("copy"),
                     [&b, nb] { fastdropout::run_copy(b.x.get(), b.y.get(), nb); }, 1, {}});

    // Check every kernel of every ISA before anything is timed; scalar first, so
    // that the spatial results of the other ISAs have a yardstick.
    std::vector<std::string> isas = o.isas;
    std::stable_partition(isas.begin(), isas.end(),
                          [](const std::string& s) { return s == "scalar"; });
    if (!contains(isas, "scalar")) {
        isas.insert(isas.begin(), "scalar");  // checked, not timed
    }
    std::vector<Buffer> spatial_ref(2);
    for (const std::string& isa : isas) {
        fastdropout::set_isa(isa);
        for (const std::string& k : o.kernels) {
            if (k == "copy") {
                continue;
            }
            if ((k == "spatial_cf" || k == "spatial_cl") && b.sp.n_items == 0) {
                continue;
            }
            if (!b.check(k, spatial_ref)) {
                std::printf("| %s | %d | %s | %s | MISMATCH with the scalar kernel: not timed |"
                            " | | | |\n",
                            d.name, threads, isa.c_str(), k.c_str());
                ++failures;
                continue;
            }
            if (contains(o.isas, isa)) {
                cases.push_back({k, isa, b.bytes_of(k), b.runner(k), 1, {}});
            }
        }
    }

    // Warm-up rounds, then calibrate calls per sample, then round-robin timed rounds.
    auto time_call = [](Case& c, std::size_t number) {
        if (!c.isa.empty()) {
            fastdropout::set_isa(c.isa);
        }
        const auto t0 = Clock::now();
        for (std::size_t k = 0; k < number; ++k) {
            c.run();
        }
        const auto t1 = Clock::now();
        return std::chrono::duration<double>(t1 - t0).count() / static_cast<double>(number);
    };
    for (int w = 0; w < o.warmup; ++w) {
        for (Case& c : cases) {
            time_call(c, 1);
        }
    }
    for (Case& c : cases) {
        const double t = std::max(time_call(c, 1), 1e-9);
        c.number = static_cast<std::size_t>(std::max(1.0, std::ceil(o.min_sample / t)));
    }
    for (int r = 0; r < o.repeats; ++r) {
        for (Case& c : cases) {
            c.samples.push_back(time_call(c, c.number));
        }
    }

    const Stats copy = stats_of(cases.front().samples);
    const auto n = static_cast<double>(b.n);
    for (const Case& c : cases) {
        const Stats s = stats_of(c.samples);
        std::printf("| %s | %d | %s | %s | %.3f | %.2f | %.2f | %.3f | %.1f |\n", d.name,
                    threads, c.isa.empty() ? "-" : c.isa.c_str(), c.kernel.c_str(),
                    s.median * 1e9 / n, c.bytes / s.median * 1e-9, s.median / copy.median,
                    s.min * 1e9 / n, (s.q3 - s.q1) / s.median * 100.0);
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        fastdropout::init_dispatch();  // honours FASTDROPOUT_SIMD, as the module does
        const Options o = parse(argc, argv);
        const SpatialShape sp = spatial_shape(o.n);
        std::string isas;
        for (const std::string& s : o.isas) {
            isas += (isas.empty() ? "" : " ") + s;
        }
        std::printf("# bench_kernels: n = %zu, p = %g, median of %d rounds (+%d warm-up)\n",
                    o.n, o.p, o.repeats, o.warmup);
        std::printf("# cpu: %s; OpenMP %s, default threads %d; ISAs: %s\n",
                    cpu_model().c_str(), fastdropout::has_openmp() ? "yes" : "no",
                    fastdropout::get_num_threads(), isas.c_str());
        if (sp.n_items != 0) {
            std::printf("# spatial: (N, C, HW) = (%zu, %zu, %zu) channels_first and "
                        "(N, HW, C) channels_last\n",
                        sp.n_items, kChannels, sp.hw);
        } else {
            std::printf("# spatial: skipped (n is not a multiple of C * HW)\n");
        }
        std::printf("# x copy: median time / run_copy median (same bytes, same threads); "
                    "checked against the scalar kernel before timing\n\n");
        std::printf("| dtype | threads | isa | kernel | ns/elem | GB/s | x copy | min ns/elem |"
                    " IQR %% |\n");
        std::printf("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
        int failures = 0;
        for (const std::string& name : o.dtypes) {
            for (const DtypeInfo& d : kDtypes) {
                if (name == d.name) {
                    for (int t : o.threads) {
                        run_block(d, t, o, failures);
                    }
                }
            }
        }
        if (failures != 0) {
            std::fprintf(stderr, "bench_kernels: %d kernel(s) disagree with the scalar kernel\n",
                         failures);
            return 1;
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_kernels: %s\n", e.what());
        return 2;
    }
}
