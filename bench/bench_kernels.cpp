// bench_kernels: the dropout kernels timed without Python, on Google Benchmark.
//
// Build (off by default; needs Google Benchmark, e.g. Debian's libbenchmark-dev):
//   cmake -S . -B build/bench -G Ninja -DFASTDROPOUT_BUILD_BENCH=ON -DFASTDROPOUT_BUILD_MODULE=OFF
//   ninja -C build/bench bench_kernels && build/bench/bench_kernels --help
//
// One benchmark per (kernel, dtype, ISA, n, threads), named
//   <kernel>/<dtype>/<isa>/n:<n>/threads:<t>
// so that runs can be compared with Google Benchmark's tools/compare.py
// (`compare.py benchmarks old.json new.json`, JSON from --benchmark_out=FILE
// --benchmark_out_format=json).
//
// What matters for a memory-bound kernel, and how it is kept here:
// - Same-run baselines. Every timed iteration runs the kernel, then run_copy
//   (parallel.cpp's copy over the same chunks, threads and stores as the kernels) of the
//   same bytes, then, for the kernels that generate a mask, gen_bits (the mask-only
//   Philox of the same elements, same ISA). Only the kernel's time is the
//   benchmark's (manual) time; the baselines go into counters: copy_ns_el,
//   gen_ns_el, x_copy = kernel / copy, x_gen = kernel / gen_bits and
//   x_bound = kernel / max(copy, gen_bits), the issue-15 bound. A drift of the
//   machine's speed hits the kernel and its baselines alike.
// - Repetitions with aggregates and random interleaving: by default this program
//   adds --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
//   --benchmark_display_aggregates_only=true before the user's flags (which win).
//   Read the *_median rows.
// - Cross-check before timing: for every (dtype, n), every ISA's forward (values
//   and mask bits), forward without mask, gen_bits, apply, both spatial layouts and
//   the window:R kernels must give the scalar kernel's bytes, at every requested
//   thread count, with normal and with streaming stores. The scalar kernel itself is
//   held to the NumPy reference by the Python tests. A
//   mismatch is printed and nothing is timed (exit status 1).
// - Short calls are timed in batches (2**16 elements per timed batch at least), so
//   the clock's overhead does not show; the reported time is per call.
// - Sizes, threads, dtypes, ISAs and kernels come from the command line; the cache
//   sizes and CPU count are queried (Google Benchmark prints them in its context)
//   and the default sizes are chosen from them: one that fits half the last-level
//   cache and one four times larger than it (capped by --max-bytes).
// - Windows (docs/spec.md section 11): window:R is the forward pass (no mask kept) of
//   a block of n / R rows of R elements inside a global array 16 times as wide, its
//   rows R * 16 apart in the stream (cpp/src/window.cpp: short rows go through the
//   window kernels, rows of 1024 and more through the dense ones). Its extra
//   baseline, in the same iteration, is the plain forward pass over the same n
//   elements: plain_ns_el and x_plain = window / plain (issue 14: <= 1.1x for runs of
//   64 and more). --offset moves every stream (1: each row straddles a Philox block).
//
// GB/s (bytes_per_second) counts the bytes the operation must move: x read + y
// written (+ mask bits written or read); gen_bits only writes the mask.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch.hpp"
#include "fastdropout/kernel_args.hpp"
#include "fastdropout/kernel_table.hpp"
#include "parallel.hpp"
#include "window.hpp"

namespace {

using fastdropout::Dtype;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kAlign = 64;
constexpr std::size_t kChannels = 32;          // spatial shapes: (N, C, HW) / (N, HW, C)
constexpr std::size_t kBatchElements = 1 << 16;  // elements per timed batch, at least

const char* const kUsage =
    "usage: bench_kernels [Google Benchmark flags] [options]\n"
    "  --sizes LIST     element counts: 16777216, 2**24, 1<<24 (default: half the\n"
    "                   last-level cache and 4x it, in float32 elements)\n"
    "  --dtypes LIST    f16,bf16,f32,f64 or all (default f32)\n"
    "  --threads LIST   thread counts, 'max' = the OpenMP default (default 1,max)\n"
    "  --isa LIST       instruction sets, or all (default all available)\n"
    "  --kernels LIST   from copy,forward_mask,forward,gen_bits,apply,spatial_cf,\n"
    "                   spatial_cl, window:R (rows of R elements; default all, with\n"
    "                   window:64 and window:256)\n"
    "  --offset K       stream offset of every kernel (default 0)\n"
    "  --p P            drop probability (default 0.5)\n"
    "  --min-time S     seconds of kernel time per repetition (default 0.2)\n"
    "  --max-bytes B    cap on one array's bytes for the default sizes (default 2**30)\n"
    "  --stores LIST    default (the library's choice by size), normal, stream: how y\n"
    "                   is written; several register each kernel once per choice,\n"
    "                   named .../stores:<choice> (default: default)\n"
    "Google Benchmark flags (--benchmark_filter, --benchmark_repetitions,\n"
    "--benchmark_out=FILE --benchmark_out_format=json, ...) pass through; see\n"
    "--benchmark_help or the library's documentation. Defaults added here:\n"
    "--benchmark_repetitions=5 --benchmark_enable_random_interleaving=true\n"
    "--benchmark_display_aggregates_only=true.\n";

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

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "bench_kernels: %s\n\n%s", msg.c_str(), kUsage);
    std::exit(2);
}

// "16777216", "2**24", "2^24" or "1<<24"; refuses anything else and overflow.
std::size_t parse_size(const std::string& text) {
    std::size_t base = 0, exp = 0;
    std::size_t pos = 0;
    auto number = [&](const std::string& t) {
        if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos) {
            usage_error("not a size: '" + text + "'");
        }
        return static_cast<std::size_t>(std::stoull(t));
    };
    if ((pos = text.find("**")) != std::string::npos) {
        base = number(text.substr(0, pos));
        exp = number(text.substr(pos + 2));
    } else if ((pos = text.find('^')) != std::string::npos) {
        base = number(text.substr(0, pos));
        exp = number(text.substr(pos + 1));
    } else if ((pos = text.find("<<")) != std::string::npos) {
        const std::size_t v = number(text.substr(0, pos));
        exp = number(text.substr(pos + 2));
        if (exp >= 63 || (v >> (63 - exp)) != 0) {
            usage_error("size too large: '" + text + "'");
        }
        return v << exp;
    } else {
        return number(text);
    }
    std::size_t v = 1;
    for (std::size_t k = 0; k < exp; ++k) {
        if (base != 0 && v > (std::size_t{1} << 62) / base) {
            usage_error("size too large: '" + text + "'");
        }
        v *= base;
    }
    return v;
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
    {"bf16", fastdropout::kBF16, 2},
};

const DtypeInfo& dtype_info(const std::string& name) {
    for (const DtypeInfo& d : kDtypes) {
        if (name == d.name) {
            return d;
        }
    }
    usage_error("unknown dtype '" + name + "' (f16, bf16, f32, f64, all)");
}

// Distinct, finite values of every dtype: an arbitrary bit pattern could be NaN, and
// NaN payloads would make the cross-ISA comparison depend on nothing useful.
void fill_values(std::uint8_t* p, const DtypeInfo& d, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const auto k = static_cast<std::uint32_t>(i % 1000u);
        if (d.dt == fastdropout::kF16) {
            const auto h = static_cast<std::uint16_t>(0x3C00u | (k & 0x3FFu));  // 1 .. 2
            std::memcpy(p + 2 * i, &h, 2);
        } else if (d.dt == fastdropout::kBF16) {
            const auto h = static_cast<std::uint16_t>(0x3F80u | (k & 0x7Fu));  // 1 .. 2
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

// The scale dtype(1 / (1 - p)) as a double holding the dtype-rounded value (docs/spec.md
// section 3).
double rounded_scale(double p, Dtype dt) {
    const double s = 1.0 / (1.0 - p);
    if (dt == fastdropout::kF64) {
        return s;
    }
    if (dt == fastdropout::kF32) {
        return static_cast<double>(static_cast<float>(s));
    }
    if (dt == fastdropout::kBF16) {  // 8 significant bits, half to even
        std::uint64_t u;
        std::memcpy(&u, &s, 8);
        const std::uint64_t lsb = (u >> 45) & 1u;
        u = (u + ((std::uint64_t{1} << 44) - 1) + lsb) & ~((std::uint64_t{1} << 45) - 1);
        double r;
        std::memcpy(&r, &u, 8);
        return r;
    }
    // float16: round to 11 significant bits, half to even, as NumPy does.
    std::uint64_t u;
    std::memcpy(&u, &s, 8);
    const std::uint64_t lsb = (u >> 42) & 1u;
    u = (u + ((std::uint64_t{1} << 41) - 1) + lsb) & ~((std::uint64_t{1} << 42) - 1);
    double r;
    std::memcpy(&r, &u, 8);
    return r > 65504.0 ? HUGE_VAL : r;
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

// The row length R of a "window:R" kernel (R >= 1), else 0.
std::size_t window_run(const std::string& kernel) {
    if (kernel.rfind("window:", 0) != 0) {
        return 0;
    }
    const std::string digits = kernel.substr(7);
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
        return 0;
    }
    return static_cast<std::size_t>(std::stoul(digits));
}

// ---- options ------------------------------------------------------------------------

struct Options {
    std::vector<std::size_t> sizes;
    std::vector<std::string> dtypes{"f32"};
    std::vector<int> threads;
    std::vector<std::string> isas;
    std::vector<std::string> kernels{"copy",       "forward_mask", "forward",
                                     "gen_bits",   "apply",        "spatial_cf",
                                     "spatial_cl", "window:64",    "window:256"};
    double p = 0.5;
    std::uint64_t offset = 0;
    double min_time = 0.2;
    std::size_t max_bytes = std::size_t{1} << 30;
    std::vector<std::string> stores{"default"};
};

// The last-level cache's size in bytes as Google Benchmark reads it (0 if unknown).
std::size_t llc_bytes() {
    std::size_t best = 0;
    int level = 0;
    for (const auto& c : benchmark::CPUInfo::Get().caches) {
        if (c.type != "Instruction" && c.level >= level) {
            level = c.level;
            best = static_cast<std::size_t>(c.size);
        }
    }
    return best;
}

std::size_t pow2_at_least(std::size_t v) {
    std::size_t p = 1;
    while (p < v && p < (std::size_t{1} << 62)) {
        p *= 2;
    }
    return p;
}

Options parse(int argc, char** argv) {
    Options o;
    std::string threads = "1,max";
    auto value = [&](int& i) -> std::string {
        if (i + 1 >= argc) {
            usage_error(std::string("missing value for ") + argv[i]);
        }
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        try {
            if (a == "-h" || a == "--help") {
                std::fputs(kUsage, stdout);
                std::exit(0);
            } else if (a == "--sizes") {
                for (const std::string& s : split(value(i))) {
                    o.sizes.push_back(parse_size(s));
                }
            } else if (a == "--dtypes" || a == "--dtype") {
                o.dtypes = split(value(i));
                if (contains(o.dtypes, "all")) {
                    o.dtypes = {"f32", "f64", "f16", "bf16"};
                }
            } else if (a == "--threads") {
                threads = value(i);
            } else if (a == "--isa") {
                o.isas = split(value(i));
                if (contains(o.isas, "all")) {
                    o.isas.clear();
                }
            } else if (a == "--kernels") {
                o.kernels = split(value(i));
            } else if (a == "--p") {
                o.p = std::stod(value(i));
            } else if (a == "--offset") {
                o.offset = std::stoull(value(i));
            } else if (a == "--min-time") {
                o.min_time = std::stod(value(i));
            } else if (a == "--stores") {
                o.stores = split(value(i));
                for (const std::string& st : o.stores) {
                    if (st != "default" && st != "normal" && st != "stream") {
                        usage_error("unknown --stores choice '" + st + "'");
                    }
                }
            } else if (a == "--max-bytes") {
                o.max_bytes = parse_size(value(i));
            } else {
                usage_error("unknown option " + a);
            }
        } catch (const std::logic_error&) {  // stod: invalid_argument, out_of_range
            usage_error("bad value for " + a);
        }
    }
    const int max_threads = fastdropout::get_num_threads();
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
        (void)dtype_info(d);
    }
    for (const std::string& k : o.kernels) {
        if (k != "copy" && k != "forward_mask" && k != "forward" && k != "gen_bits" &&
            k != "apply" && k != "spatial_cf" && k != "spatial_cl" && window_run(k) == 0) {
            usage_error("unknown kernel '" + k + "'");
        }
    }
    if (o.sizes.empty()) {  // from the cache sizes: in the LLC, and beyond it
        const std::size_t llc = llc_bytes() != 0 ? llc_bytes() : (std::size_t{32} << 20);
        const std::size_t cap = std::max<std::size_t>(o.max_bytes / 4, 1 << 16);
        o.sizes = {std::min(pow2_at_least(llc / 2 / 4) / 2, cap),
                   std::min(pow2_at_least(4 * llc / 4), cap)};
        o.sizes.erase(std::unique(o.sizes.begin(), o.sizes.end()), o.sizes.end());
    }
    for (std::size_t n : o.sizes) {
        if (n == 0) {
            usage_error("sizes must be >= 1");
        }
    }
    if (!(o.p >= 0.0 && o.p < 1.0) || !(o.min_time > 0.0)) {
        usage_error("need 0 <= p < 1 and min-time > 0");
    }
    return o;
}

// ---- the arrays of one (dtype, n) ---------------------------------------------------

struct Data {
    const DtypeInfo& d;
    std::size_t n;
    Buffer x, y, bits, sbits;
    fastdropout::StreamArgs stream{};
    double scale;
    SpatialShape sp;

    Data(const DtypeInfo& dt, std::size_t count, double p, std::uint64_t offset)
        : d(dt), n(count), x(make_buffer(count * dt.size)), y(make_buffer(count * dt.size)),
          bits(make_buffer((count + 7) / 8)), scale(rounded_scale(p, dt.dt)),
          sp(spatial_shape(count)) {
        fill_values(x.get(), d, n);
        const std::uint64_t seed = 0x0123456789ABCDEFull;
        stream.k0 = static_cast<std::uint32_t>(seed);
        stream.k1 = static_cast<std::uint32_t>(seed >> 32);
        stream.offset = offset;
        stream.threshold = static_cast<std::uint64_t>(std::nearbyint(p * 4294967296.0));
        sbits = make_buffer((sp.n_items * kChannels + 7) / 8);
        fastdropout::set_isa("scalar");  // the same spatial mask serves every ISA
        fastdropout::run_gen_bits(fastdropout::active_table(), stream, sbits.get(),
                                  sp.n_items * kChannels);
    }

    bool has_spatial() const { return sp.n_items != 0; }
    // Whether `kernel` runs on these arrays (spatial ones need a spatial shape, a
    // window:R whole rows).
    bool runs(const std::string& kernel) const {
        if (kernel.rfind("spatial", 0) == 0) {
            return has_spatial();
        }
        const std::size_t r = window_run(kernel);
        return r == 0 || n % r == 0;
    }

    void forward(bool with_mask) {
        const fastdropout::ForwardArgs a{stream, x.get(), y.get(),
                                         with_mask ? bits.get() : nullptr, n, scale, true};
        fastdropout::run_forward(fastdropout::active_table(), d.dt, a);
    }
    void gen_bits() {
        fastdropout::run_gen_bits(fastdropout::active_table(), stream, bits.get(), n);
    }
    void apply_dense() {
        const fastdropout::ApplyArgs a{x.get(), y.get(), bits.get(), 0, scale, true, false};
        fastdropout::run_apply(fastdropout::active_table(), d.dt, a, {n}, {false});
    }
    void apply_spatial(bool channels_first) {
        const fastdropout::ApplyArgs a{x.get(), y.get(), sbits.get(), 0, scale, true, false};
        if (channels_first) {
            fastdropout::run_apply(fastdropout::active_table(), d.dt, a,
                                   {sp.n_items, kChannels, sp.hw}, {false, false, true});
        } else {
            fastdropout::run_apply(fastdropout::active_table(), d.dt, a,
                                   {sp.n_items, sp.hw, kChannels}, {false, true, false});
        }
    }
    void copy() { fastdropout::run_copy(x.get(), y.get(), n * d.size); }
    // The block of n / run rows (see the file comment; n a multiple of run).
    void window(std::size_t run) {
        fastdropout::ForwardArgs a{stream, x.get(), y.get(), nullptr, n, scale, true};
        a.stream.offset = stream.offset + 8 * run;  // the block's first global index
        const fastdropout::WindowLayout w{{n / run, run}, {16 * run, 1}};
        fastdropout::run_window_forward(fastdropout::active_table(), d.dt, a, w);
    }

    // Runs `kernel` under the active ISA and threads.
    void run(const std::string& kernel) {
        if (kernel == "forward_mask") {
            forward(true);
        } else if (kernel == "forward") {
            forward(false);
        } else if (kernel == "gen_bits") {
            gen_bits();
        } else if (kernel == "apply") {
            apply_dense();
        } else if (kernel == "spatial_cf" || kernel == "spatial_cl") {
            apply_spatial(kernel == "spatial_cf");
        } else if (window_run(kernel) != 0) {
            window(window_run(kernel));
        } else {
            copy();
        }
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

// Every ISA at every thread count against the scalar kernel at one thread; returns
// the number of mismatches (each printed).
int cross_check(Data& b, const Options& o) {
    const std::size_t nb = b.n * b.d.size;
    const std::size_t mb = (b.n + 7) / 8;
    std::vector<std::string> kernels{"forward_mask", "forward", "gen_bits", "apply",
                                     "spatial_cf", "spatial_cl"};
    // The scalar results: forward with mask (y, bits), both spatial layouts.
    fastdropout::set_num_threads(1);
    fastdropout::set_isa("scalar");
    b.forward(true);
    Buffer y_ref = make_buffer(nb);
    Buffer bits_ref = make_buffer(mb);
    std::memcpy(y_ref.get(), b.y.get(), nb);
    std::memcpy(bits_ref.get(), b.bits.get(), mb);
    Buffer cf_ref, cl_ref;
    if (b.has_spatial()) {
        cf_ref = make_buffer(nb);
        cl_ref = make_buffer(nb);
        b.apply_spatial(true);
        std::memcpy(cf_ref.get(), b.y.get(), nb);
        b.apply_spatial(false);
        std::memcpy(cl_ref.get(), b.y.get(), nb);
    }
    std::vector<Buffer> window_refs;  // the scalar window:R results, in kernels' order
    for (const std::string& k : o.kernels) {
        if (window_run(k) != 0 && b.runs(k)) {
            kernels.push_back(k);
            b.run(k);
            window_refs.push_back(make_buffer(nb));
            std::memcpy(window_refs.back().get(), b.y.get(), nb);
        }
    }
    int failures = 0;
    for (int t : o.threads) {
      fastdropout::set_num_threads(t);
      for (const std::size_t threshold : {~std::size_t{0} - 1, std::size_t{0}}) {
        fastdropout::set_stream_threshold(threshold);  // normal, then streaming stores
        for (const std::string& isa : o.isas) {
            fastdropout::set_isa(isa);
            for (std::size_t ki = 0; ki < kernels.size(); ++ki) {
                const std::string& k = kernels[ki];
                if (!b.runs(k)) {
                    continue;
                }
                std::memset(b.y.get(), 0xA5, nb);
                if (k == "apply") {
                    std::memcpy(b.bits.get(), bits_ref.get(), mb);  // apply reads them
                } else {
                    std::memset(b.bits.get(), 0xA5, mb);
                }
                b.run(k);
                bool ok = true;
                if (k == "gen_bits") {
                    ok = std::memcmp(b.bits.get(), bits_ref.get(), mb) == 0;
                } else {
                    const std::size_t nfixed = kernels.size() - window_refs.size();
                    const Buffer& ref = k == "spatial_cf"  ? cf_ref
                                        : k == "spatial_cl" ? cl_ref
                                        : ki >= nfixed      ? window_refs[ki - nfixed]
                                                            : y_ref;
                    ok = std::memcmp(b.y.get(), ref.get(), nb) == 0;
                    if (k == "forward_mask") {
                        ok = ok && std::memcmp(b.bits.get(), bits_ref.get(), mb) == 0;
                    }
                }
                if (!ok) {
                    std::fprintf(stderr,
                                 "bench_kernels: MISMATCH with the scalar kernel: %s %s %s "
                                 "n=%zu threads=%d stores=%s\n",
                                 k.c_str(), b.d.name, isa.c_str(), b.n, t,
                                 threshold == 0 ? "stream" : "normal");
                    ++failures;
                }
            }
        }
      }
    }
    fastdropout::set_stream_threshold(fastdropout::kDefaultStreamThreshold);
    std::memcpy(b.bits.get(), bits_ref.get(), mb);  // apply is timed on the real mask
    return failures;
}

// ---- the benchmark body -------------------------------------------------------------

struct Case {
    Data* data;
    std::string kernel;
    std::string isa;  // empty for the copy
    int threads;
    std::size_t batch;  // calls per timed iteration
    std::string stores;  // "default", "normal" or "stream"
};

double seconds_of(Data& b, const std::string& kernel, std::size_t batch) {
    const auto t0 = Clock::now();
    for (std::size_t k = 0; k < batch; ++k) {
        b.run(kernel);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool generates(const std::string& kernel) {
    return kernel == "forward_mask" || kernel == "forward" || window_run(kernel) != 0;
}

void run_case(benchmark::State& state, const Case& c) {
    Data& b = *c.data;
    fastdropout::set_num_threads(c.threads);
    // normal: no output reaches the threshold; stream: every output does.
    fastdropout::set_stream_threshold(c.stores == "normal"   ? ~std::size_t{0} - 1
                                      : c.stores == "stream" ? 0
                                                             : fastdropout::kDefaultStreamThreshold);
    fastdropout::set_isa(c.isa.empty() ? fastdropout::available_isas().front() : c.isa);
    const bool gen = generates(c.kernel);
    const bool is_copy = c.kernel == "copy";
    const bool is_window = window_run(c.kernel) != 0;
    double kernel_s = 0.0, copy_s = 0.0, gen_s = 0.0, plain_s = 0.0;
    for (auto _ : state) {
        const double t = seconds_of(b, c.kernel, c.batch);
        state.SetIterationTime(t / static_cast<double>(c.batch));
        kernel_s += t;
        if (!is_copy) {  // the baselines, same iteration, same threads
            copy_s += seconds_of(b, "copy", c.batch);
            if (gen) {
                gen_s += seconds_of(b, "gen_bits", c.batch);
            }
            if (is_window) {
                plain_s += seconds_of(b, "forward", c.batch);
            }
        }
    }
    const double calls = static_cast<double>(state.iterations()) * static_cast<double>(c.batch);
    const double elems = calls * static_cast<double>(b.n);
    state.SetBytesProcessed(static_cast<std::int64_t>(b.bytes_of(c.kernel) * calls));
    state.SetItemsProcessed(static_cast<std::int64_t>(elems));
    state.counters["ns_el"] = kernel_s * 1e9 / elems;
    if (!is_copy && copy_s > 0) {
        state.counters["copy_ns_el"] = copy_s * 1e9 / elems;
        state.counters["x_copy"] = kernel_s / copy_s;
        double bound = copy_s;
        if (gen && gen_s > 0) {
            state.counters["gen_ns_el"] = gen_s * 1e9 / elems;
            state.counters["x_gen"] = kernel_s / gen_s;
            bound = std::max(copy_s, gen_s);
        }
        state.counters["x_bound"] = kernel_s / bound;
    }
    if (is_window && plain_s > 0) {
        state.counters["plain_ns_el"] = plain_s * 1e9 / elems;
        state.counters["x_plain"] = kernel_s / plain_s;
    }
    fastdropout::set_stream_threshold(fastdropout::kDefaultStreamThreshold);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        fastdropout::init_dispatch();  // honours FASTDROPOUT_SIMD, as the module does
        // Our defaults first, so that the user's Google Benchmark flags win.
        std::vector<char*> args{argv[0]};
        static char rep[] = "--benchmark_repetitions=5";
        static char inter[] = "--benchmark_enable_random_interleaving=true";
        static char aggr[] = "--benchmark_display_aggregates_only=true";
        args.insert(args.end(), {rep, inter, aggr});
        args.insert(args.end(), argv + 1, argv + argc);
        int n_args = static_cast<int>(args.size());
        benchmark::Initialize(&n_args, args.data());
        const Options o = parse(n_args, args.data());  // what Google Benchmark left

        benchmark::AddCustomContext("fastdropout_isas", [&] {
            std::string s;
            for (const std::string& i : o.isas) {
                s += (s.empty() ? "" : ",") + i;
            }
            return s;
        }());
        benchmark::AddCustomContext("fastdropout_openmp", fastdropout::has_openmp() ? "yes" : "no");
        benchmark::AddCustomContext("fastdropout_default_threads",
                                    std::to_string(fastdropout::get_num_threads()));
        benchmark::AddCustomContext("fastdropout_llc_bytes", std::to_string(llc_bytes()));
        benchmark::AddCustomContext("fastdropout_p", std::to_string(o.p));

        std::vector<std::unique_ptr<Data>> data;
        int failures = 0;
        for (const std::string& dn : o.dtypes) {
            const DtypeInfo& d = dtype_info(dn);
            for (std::size_t n : o.sizes) {
                data.push_back(std::make_unique<Data>(d, n, o.p, o.offset));
                Data& b = *data.back();
                failures += cross_check(b, o);
                const std::size_t batch = std::max<std::size_t>(1, kBatchElements / n);
                for (int t : o.threads) {
                    for (const std::string& k : o.kernels) {
                        if (!b.runs(k)) {
                            continue;
                        }
                        const std::vector<std::string> isas =
                            k == "copy" ? std::vector<std::string>{""} : o.isas;
                        const std::vector<std::string> stores =
                            k == "copy" || k == "gen_bits" ? std::vector<std::string>{"default"}
                                                           : o.stores;
                        for (const std::string& isa : isas) {
                          for (const std::string& st : stores) {
                            const std::string name =
                                k + "/" + d.name + "/" + (isa.empty() ? "native" : isa) +
                                "/n:" + std::to_string(n) + "/threads:" + std::to_string(t) +
                                (st != "default" ? "/stores:" + st : "");
                            const Case c{&b, k, isa, t, batch, st};
                            benchmark::RegisterBenchmark(
                                name.c_str(), [c](benchmark::State& st) { run_case(st, c); })
                                ->UseManualTime()
                                ->MinTime(o.min_time / static_cast<double>(batch))
                                ->Unit(benchmark::kMicrosecond);
                          }
                        }
                    }
                }
            }
        }
        if (failures != 0) {
            std::fprintf(stderr, "bench_kernels: %d kernel(s) disagree with the scalar kernel; "
                                 "nothing timed\n", failures);
            return 1;
        }
        benchmark::RunSpecifiedBenchmarks();
        benchmark::Shutdown();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_kernels: %s\n", e.what());
        return 2;
    }
}
