// OpenMP chunking and broadcast-layout walking (see parallel.hpp).
//
// Every keep/drop decision is a pure function of (seed, offset + index), so any split
// of the work gives the same bits; the only rule is that two threads never write the
// same mask byte, hence chunk edges at multiples of 64 elements (8 mask bytes, and a
// whole number of cache lines of float32 output when the array is aligned).
#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>  // baseline on x86-64: streaming copies and zero fills, store_fence
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#if defined(FASTDROPOUT_OPENMP)
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FASTDROPOUT_HAVE_ATFORK 1
#endif
#endif

#include "cpu_features.hpp"

namespace fastdropout {
namespace {

// Below this many elements per thread, starting threads costs more than it saves.
constexpr std::size_t kMinPerThread = std::size_t{1} << 16;
// Channel vectors shorter than this are tiled into a repeating bit pattern
// (channels_last spatial dropout) so the kernels see long runs.
constexpr std::size_t kPatternMaxPeriod = 1024;
constexpr std::size_t kPatternBits = 4096;
// Broadcast runs shorter than this (channels_first feature maps of fewer elements)
// are spread into dense bits rather than applied one kernel call per run.
constexpr std::size_t kExpandMaxRun = 64;

// A team is never larger than this many threads per processor: the kernels are
// memory-bound, and GNU libgomp terminates the process (rather than failing the
// call) when it cannot create the threads of an absurd team.
// (At least kMinTeamCap, so that tests of odd team sizes run on small machines.)
constexpr int kMaxThreadsPerProc = 4;
constexpr int kMinTeamCap = 16;

// GNU libgomp's thread pool does not survive fork(): a child that enters a parallel
// region after its parent ran one waits forever for threads that were not copied.
// So a child forked after a team ran stays serial (LLVM's libomp would cope, but
// which runtime is loaded cannot be told portably).
std::atomic<bool> g_team_started{false};
std::atomic<bool> g_serial_after_fork{false};

#if defined(FASTDROPOUT_HAVE_ATFORK)
void on_fork_child() {
    if (g_team_started.load()) {
        g_serial_after_fork.store(true);
    }
}
#endif

void register_fork_handler() {
#if defined(FASTDROPOUT_HAVE_ATFORK)
    static const bool registered = pthread_atfork(nullptr, nullptr, &on_fork_child) == 0;
    (void)registered;
#endif
}

int max_team() {
#if defined(FASTDROPOUT_OPENMP)
    // libgomp's omp_get_num_procs() asks the kernel for the affinity mask on every
    // call (~0.25 us, as much as a whole small-array call): read it once.
    static const int team =
        std::max(kMinTeamCap, std::max(1, omp_get_num_procs()) * kMaxThreadsPerProc);
    return team;
#else
    return 1;
#endif
}

// The thread count: OpenMP's setting for the calling thread (omp_get_max_threads,
// which threadpoolctl and OMP_NUM_THREADS change), read on every large call (a
// thread-local read in libgomp and libomp), capped by set_num_threads(n) when
// that was called (0: not set). set_num_threads also calls omp_set_num_threads,
// so threadpoolctl sees it and a threadpool_limits() block inside still lowers it.
int openmp_threads() {
#if defined(FASTDROPOUT_OPENMP)
    return std::max(1, omp_get_max_threads());
#else
    return 1;
#endif
}

// OpenMP's setting before fastdropout changed it: what set_num_threads(None)
// gives back to the calling thread.
int initial_openmp_threads() {
    static const int n = openmp_threads();
    return n;
}

std::atomic<int>& thread_setting() {
    static std::atomic<int> n{0};
    return n;
}

// Team size of the last parallel_chunks call (tests: the threads that really ran).
std::atomic<int> g_last_team{1};

// How many chunks (threads) to use for n elements; reads the setting once.
std::size_t plan_threads(std::size_t n) {
    const std::size_t by_size = n / kMinPerThread;  // every thread gets >= kMinPerThread
    if (by_size < 2) {
        return 1;  // small work: no thread start-up, not even a look at the settings
    }
    if (g_serial_after_fork.load(std::memory_order_relaxed)) {
        return 1;
    }
    const std::size_t want = static_cast<std::size_t>(std::min(get_num_threads(), max_team()));
    return std::max<std::size_t>(1, std::min(want, by_size));
}

// body(t, begin, end) over [0, n) split into nt chunks, every chunk but the last a
// multiple of 64 elements long; t < nt is the chunk number.
template <class Body>
void parallel_chunks(std::size_t n, std::size_t nt, const Body& body) {
    if (n == 0) {
        return;
    }
    if (nt <= 1) {
        g_last_team.store(1, std::memory_order_relaxed);
        body(std::size_t{0}, std::size_t{0}, n);
        return;
    }
    const std::size_t chunk = ((n + nt - 1) / nt + 63) / 64 * 64;
#if defined(FASTDROPOUT_OPENMP)
    if (!g_team_started.load(std::memory_order_relaxed)) {
        register_fork_handler();
        g_team_started.store(true);
    }
#pragma omp parallel for num_threads(static_cast<int>(nt)) schedule(static, 1)
    for (long long t = 0; t < static_cast<long long>(nt); ++t) {
        if (t == 0) {
            g_last_team.store(omp_get_num_threads(), std::memory_order_relaxed);
        }
        const std::size_t begin = static_cast<std::size_t>(t) * chunk;
        if (begin < n) {
            body(static_cast<std::size_t>(t), begin, std::min(n, begin + chunk));
        }
    }
#else
    for (std::size_t t = 0; t * chunk < n; ++t) {
        body(t, t * chunk, std::min(n, t * chunk + chunk));
    }
#endif
}

template <class Body>
void parallel_chunks(std::size_t n, const Body& body) {
    parallel_chunks(n, plan_threads(n),
                    [&](std::size_t, std::size_t b, std::size_t e) { body(b, e); });
}

struct MergedDim {
    std::size_t size;
    bool broadcast;
    std::size_t mask_stride;  // 0 for broadcast dims
};

// Drop size-1 axes (they change nothing), merge neighbours of the same kind, and
// give each remaining dim its stride in the C-ordered mask.
std::vector<MergedDim> merge_dims(const std::vector<std::size_t>& dims,
                                  const std::vector<bool>& broadcast) {
    std::vector<MergedDim> m;
    for (std::size_t a = 0; a < dims.size(); ++a) {
        if (dims[a] == 1) {
            continue;
        }
        if (!m.empty() && m.back().broadcast == broadcast[a]) {
            m.back().size *= dims[a];
        } else {
            m.push_back({dims[a], static_cast<bool>(broadcast[a]), 0});
        }
    }
    std::size_t acc = 1;
    for (std::size_t k = m.size(); k-- > 0;) {
        if (!m[k].broadcast) {
            m[k].mask_stride = acc;
            acc *= m[k].size;
        }
    }
    return m;
}

// Mask index of the first element of `item`, where items enumerate the C-order
// product of outer[0..k).
std::uint64_t item_mask_index(const std::vector<MergedDim>& outer, std::size_t item) {
    if (outer.size() == 1) {  // the common case, (N*C) items: no division
        return static_cast<std::uint64_t>(item) * outer[0].mask_stride;
    }
    std::uint64_t m = 0;
    for (std::size_t k = outer.size(); k-- > 0;) {
        m += static_cast<std::uint64_t>(item % outer[k].size) * outer[k].mask_stride;
        item /= outer[k].size;
    }
    return m;
}

inline bool bit_at(const std::uint8_t* bits, std::uint64_t m) {
    return ((static_cast<unsigned>(bits[m >> 3]) >> (m & 7u)) & 1u) != 0;
}

std::uint64_t read_bits64(const std::uint8_t* p, std::size_t pos) {
    std::uint64_t v = 0;  // bytes [pos/8, pos/8 + 9) are readable by construction
    for (std::size_t k = 0; k < 8; ++k) {
        v |= static_cast<std::uint64_t>(p[pos / 8 + k]) << (8 * k);
    }
    const unsigned sh = static_cast<unsigned>(pos % 8);
    if (sh != 0) {
        v = (v >> sh) | (static_cast<std::uint64_t>(p[pos / 8 + 8]) << (64 - sh));
    }
    return v;
}

// Sets bits [pos, pos + count) of d.
void set_bits(std::uint8_t* d, std::size_t pos, std::size_t count) {
    while (count > 0) {
        const std::size_t c = std::min<std::size_t>(count, 56);  // fits shifted by <= 7
        const std::uint64_t ones = ((std::uint64_t{1} << c) - 1) << (pos & 7u);
        for (std::size_t k = 0; k * 8 < (pos & 7u) + c; ++k) {  // <= 8 bytes
            d[(pos >> 3) + k] = static_cast<std::uint8_t>(d[(pos >> 3) + k] | (ones >> (8 * k)));
        }
        pos += c;
        count -= c;
    }
}

// Bits [pos, pos + count) of `bits` (count <= 56) as an integer; reads only the
// bytes that hold them.
std::uint64_t read_bits_upto56(const std::uint8_t* bits, std::uint64_t pos, std::size_t count) {
    const std::uint8_t* p = bits + (pos >> 3);
    const auto sh = static_cast<unsigned>(pos & 7u);
    const std::size_t nbytes = (sh + count + 7) / 8;  // <= 8
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < nbytes; ++k) {
        v |= static_cast<std::uint64_t>(p[k]) << (8 * k);
    }
    return (v >> sh) & ((std::uint64_t{1} << count) - 1);
}

// A channels_last pattern holds this many bits past its last period, repeating it,
// so that a run may end past the pattern's end, on a line of the output (walk_mask).
constexpr std::size_t kPatternSlackBits = 64;

// pat[0 .. pattern_bits + kPatternSlackBits) = mask bits m0 .. m0 + period - 1,
// repeated (pattern_bits is a multiple of period). The period is first laid out bit
// by bit, once and then 64 bits past its end, in `ext`; every 64-bit word of the
// pattern is then one unaligned read from ext at the word's phase within the period.
void build_pattern(const std::uint8_t* bits, std::uint64_t m0, std::size_t period,
                   std::size_t pattern_bits, std::uint8_t* ext, std::uint8_t* pat) {
    const std::size_t ext_bits = period + 64;
    std::memset(ext, 0, ext_bits / 8 + 16);
    // Up to 56 bits at a time (a bit at a time, with a division for the phase, cost
    // more than the rest of a small channels_last call).
    for (std::size_t q = 0, r = 0; q < ext_bits;) {
        const std::size_t count = std::min({std::size_t{56}, period - r, ext_bits - q});
        const std::uint64_t v = read_bits_upto56(bits, m0 + r, count) << (q & 7u);
        for (std::size_t k = 0; k * 8 < (q & 7u) + count; ++k) {  // <= 8 bytes
            ext[(q >> 3) + k] = static_cast<std::uint8_t>(ext[(q >> 3) + k] | (v >> (8 * k)));
        }
        q += count;
        r += count;
        if (r == period) {
            r = 0;
        }
    }
    for (std::size_t w = 0, r = 0; w * 64 < pattern_bits + kPatternSlackBits; ++w) {
        const std::uint64_t v = read_bits64(ext, r);
        r = (r + 64) % period;  // (w * 64) % period
        for (std::size_t k = 0; k < 8; ++k) {
            pat[8 * w + k] = static_cast<std::uint8_t>(v >> (8 * k));
        }
    }
}

// What a walk calls when a thread has walked its whole chunk: nothing, or (run_apply)
// the one store fence of that thread's streamed runs.
struct NoChunkEnd {
    void operator()() const {}
};

// Splits [0, n) among threads and then into runs that stay inside one item of
// `unit` elements: seg(item, within_item_begin, global_begin, length, chunk's end);
// chunk_end() once each thread is done.
template <class Seg, class End>
void walk_items(std::size_t n, std::size_t unit, const Seg& seg, const End& chunk_end) {
    parallel_chunks(n, [&](std::size_t b, std::size_t e) {
        std::size_t item = b / unit;
        std::size_t w = b % unit;
        for (std::size_t i = b; i < e;) {
            const std::size_t len = std::min(unit - w, e - i);
            seg(item, w, i, len, e);
            i += len;
            ++item;
            w = 0;
        }
        chunk_end();
    });
}

// ---- streaming stores ---------------------------------------------------------------
// The last-level cache's size in bytes, 0 if the OS does not say.
//
// Linux's sysfs comes first: the kernel describes the caches this CPU reaches. glibc's
// sysconf computes its own answer from CPUID and can disagree: on an AMD EPYC (Zen 4)
// KVM guest it says 320 MiB for the L3 (seemingly the package's slices added up),
// while sysfs says 32 MiB, the slice a core uses; 64 MiB arrays there behave as
// beyond the cache (streaming stores 1.5x faster than normal ones, README
// "Performance"). sysconf is the fallback where sysfs is missing or says nothing.
std::size_t query_llc_bytes() {
    long best = 0;
#if defined(__linux__)
    // sizes read like "32768K"; index0..index3 are typically L1d, L1i, L2 and L3.
    for (int index = 0; index < 8; ++index) {
        char path[80];
        std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        if (std::FILE* f = std::fopen(path, "r")) {
            long kib = 0;
            if (std::fscanf(f, "%ldK", &kib) == 1) {
                best = std::max(best, kib * 1024);
            }
            std::fclose(f);
        }
    }
#endif
#if defined(_SC_LEVEL3_CACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    if (best <= 0) {
        best = std::max(sysconf(_SC_LEVEL3_CACHE_SIZE), sysconf(_SC_LEVEL2_CACHE_SIZE));
    }
#endif
#if defined(__APPLE__)
    for (const char* name : {"hw.l3cachesize", "hw.l2cachesize"}) {
        std::int64_t v = 0;
        std::size_t len = sizeof v;
        if (best <= 0 && sysctlbyname(name, &v, &len, nullptr, 0) == 0) {
            best = static_cast<long>(v);
        }
    }
#endif
    return best > 0 ? static_cast<std::size_t>(best) : 0;
}

// The L1 data cache's size in bytes: sysfs's level-1 cache of type "Data", else
// sysconf; 32 KiB when neither says.
std::size_t query_l1d_bytes() {
    long bytes = 0;
#if defined(__linux__)
    for (int index = 0; index < 8 && bytes <= 0; ++index) {
        const auto read = [index](const char* file, const char* format, void* out) {
            char path[96];
            std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/%s",
                          index, file);
            bool ok = false;
            if (std::FILE* f = std::fopen(path, "r")) {
                ok = std::fscanf(f, format, out) == 1;
                std::fclose(f);
            }
            return ok;
        };
        int level = 0;
        char type[16] = {};
        long kib = 0;
        if (read("level", "%d", &level) && level == 1 && read("type", "%15s", type) &&
            std::strcmp(type, "Data") == 0 && read("size", "%ldK", &kib)) {
            bytes = kib * 1024;
        }
    }
#endif
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    if (bytes <= 0) {
        bytes = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    }
#endif
    return bytes > 0 ? static_cast<std::size_t>(bytes) : std::size_t{32} << 10;
}

// Outputs of at least this many bytes are written with streaming stores: a quarter
// of the last-level cache (input and output then fill half of it, so the output
// would not be in the cache when it is next read; below that it may, and normal
// stores leave it there). 32 MiB when the cache size is unknown.
std::size_t default_stream_threshold() {
    const std::size_t llc = query_llc_bytes();
    return llc != 0 ? llc / 4 : (std::size_t{32} << 20);
}

std::atomic<std::size_t>& stream_threshold_setting() {
    static std::atomic<std::size_t> t{default_stream_threshold()};
    return t;
}

bool stream_output(std::size_t out_bytes) {
    return out_bytes >= stream_threshold_setting().load(std::memory_order_relaxed);
}

}  // namespace

std::size_t last_level_cache_bytes() {
    static const std::size_t llc = query_llc_bytes();
    return llc;
}

std::size_t l1_data_cache_bytes() {
    static const std::size_t l1d = query_l1d_bytes();
    return l1d;
}

std::size_t stream_threshold() { return stream_threshold_setting().load(); }

namespace {
std::atomic<int>& prefetch_pair_setting() {
    static std::atomic<int> mode{-1};
    return mode;
}
}  // namespace

bool prefetch_paired_streams() {
    const int mode = prefetch_pair_setting().load(std::memory_order_relaxed);
    return mode < 0 ? !cpu_is_amd() : mode != 0;
}

void set_prefetch_paired_streams(int mode) {
    prefetch_pair_setting().store(mode < 0 ? -1 : (mode != 0 ? 1 : 0));
}

void set_stream_threshold(std::size_t bytes) {
    stream_threshold_setting().store(bytes == kDefaultStreamThreshold ? default_stream_threshold()
                                                                      : bytes);
}

void set_num_threads(int n) {
    initial_openmp_threads();  // remember OpenMP's own setting before changing it
    const int v = n > 0 ? std::min(n, max_num_threads()) : 0;
    thread_setting().store(v);
#if defined(FASTDROPOUT_OPENMP)
    omp_set_num_threads(v > 0 ? v : initial_openmp_threads());
#endif
}

int get_num_threads() {
#if defined(FASTDROPOUT_OPENMP)
    if (g_serial_after_fork.load(std::memory_order_relaxed)) {
        return 1;
    }
    const int set = thread_setting().load(std::memory_order_relaxed);
    const int omp = openmp_threads();
    return std::min(set > 0 ? std::min(set, omp) : omp, max_team());
#else
    return 1;
#endif
}

int max_num_threads() { return max_team(); }

int default_num_threads() { return std::min(initial_openmp_threads(), max_team()); }

int last_team_size() { return g_last_team.load(std::memory_order_relaxed); }

bool has_openmp() {
#if defined(FASTDROPOUT_OPENMP)
    return true;
#else
    return false;
#endif
}

void run_forward(const KernelTable& table, Dtype dt, const ForwardArgs& a) {
    const auto fn = table.forward[dt];
    ForwardArgs args = a;
    args.stream_stores = stream_output(a.n * dtype_size(dt));
    parallel_chunks(a.n, [&](std::size_t b, std::size_t e) { fn(args, b, e); });
}

void run_gen_bits(const KernelTable& table, const StreamArgs& s, std::uint8_t* bits,
                  std::size_t n) {
    const auto fn = table.gen_bits;
    parallel_chunks(n, [&](std::size_t b, std::size_t e) { fn(s, bits, b, e); });
}

void run_copy(const void* src, void* dst, std::size_t nbytes) {
    const auto* s = static_cast<const unsigned char*>(src);
    auto* d = static_cast<unsigned char*>(dst);
#if defined(__SSE2__) || defined(_M_X64)
    // The kernels' store policy: outputs past the streaming threshold go out with
    // non-temporal stores. glibc's memcpy picks its own threshold from its own idea of
    // the cache (320 MiB of L3 on an EPYC guest whose cores reach 32 MiB), below which
    // it writes through the cache and pays the write-allocate read; a copy slower
    // than the kernels' own stores would be no bound at all.
    const bool nt = stream_output(nbytes);
#endif
    // Same chunking as a float32 kernel over nbytes / 4 elements.
    parallel_chunks(nbytes / 4, [&](std::size_t b, std::size_t e) {
        std::size_t i = 4 * b;
        const std::size_t end = 4 * e;
#if defined(__SSE2__) || defined(_M_X64)
        if (nt) {
            const std::size_t to_line = (64 - reinterpret_cast<std::uintptr_t>(d + i) % 64) % 64;
            const std::size_t head = std::min(end - i, to_line);
            std::memcpy(d + i, s + i, head);
            i += head;
            for (; i + 64 <= end; i += 64) {  // a line per step, x read 4 KiB ahead as the kernels do
                _mm_prefetch(reinterpret_cast<const char*>(s + i + 4096), _MM_HINT_T0);
                const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
                const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
                const __m128i v2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
                const __m128i v3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
                _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), v0);
                _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), v1);
                _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), v2);
                _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), v3);
            }
            _mm_sfence();
        }
#endif
        std::memcpy(d + i, s + i, end - i);
    });
    const std::size_t done = nbytes / 4 * 4;
    std::memcpy(d + done, s + done, nbytes - done);
}

void run_stream2(const void* a, const void* b, void* dst, std::size_t nbytes) {
    const auto* pa = static_cast<const unsigned char*>(a);
    const auto* pb = static_cast<const unsigned char*>(b);
    auto* d = static_cast<unsigned char*>(dst);
#if defined(__SSE2__) || defined(_M_X64)
    const bool nt = stream_output(nbytes);
#endif
    // dst = a XOR b, 8 bytes at a time: the traffic of a binary elementwise operation.
    // Same chunking as a float32 kernel over nbytes / 4 elements; streaming stores
    // (SSE2, 16 bytes) on aligned lines when the output is as large as the kernels'.
    parallel_chunks(nbytes / 4, [&](std::size_t lo, std::size_t hi) {
        std::size_t i = 4 * lo;
        const std::size_t end = 4 * hi;
#if defined(__SSE2__) || defined(_M_X64)
        if (nt) {
            for (; i < end && (reinterpret_cast<std::uintptr_t>(d + i) % 16) != 0; ++i) {
                d[i] = static_cast<unsigned char>(pa[i] ^ pb[i]);
            }
            for (; i + 16 <= end; i += 16) {
                const __m128i va = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + i));
                const __m128i vb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + i));
                _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_xor_si128(va, vb));
            }
            _mm_sfence();
        }
#endif
        for (; i + 8 <= end; i += 8) {
            std::uint64_t u, v;
            std::memcpy(&u, pa + i, 8);
            std::memcpy(&v, pb + i, 8);
            u ^= v;
            std::memcpy(d + i, &u, 8);
        }
        for (; i < end; ++i) {
            d[i] = static_cast<unsigned char>(pa[i] ^ pb[i]);
        }
    });
    for (std::size_t i = nbytes / 4 * 4; i < nbytes; ++i) {
        d[i] = static_cast<unsigned char>(pa[i] ^ pb[i]);
    }
}

void store_fence() {
#if defined(__SSE2__) || defined(_M_X64)
    _mm_sfence();
#endif
}

bool has_broadcast(const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast) {
    for (const MergedDim& d : merge_dims(dims, broadcast)) {
        if (d.broadcast) {
            return true;
        }
    }
    return false;
}

namespace {

// The layout walk of a (possibly broadcast) mask over C-contiguous data of shape
// `dims`: seg(run, begin, end) for runs of elements whose decisions are given by
// `run`. Threads split the elements as parallel_chunks does; each calls chunk_end()
// after the last run of its chunk. line_elems (0: no preference) and line_skew say
// where the output's cache lines start (element i starts one when i % line_elems ==
// line_skew): runs the walk may cut anywhere (channels_last patterns) are then cut
// there, so that streamed runs meet on line boundaries instead of sharing a line
// that both write with normal stores.
template <class Seg, class End = NoChunkEnd>
void walk_mask(const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
               const std::uint8_t* bits, const Seg& seg, const End& chunk_end = End{},
               std::size_t line_elems = 0, std::size_t line_skew = 0) {
    std::size_t n = 1;
    for (std::size_t d : dims) {
        n *= d;
    }
    if (n == 0) {
        return;
    }
    std::vector<MergedDim> m = merge_dims(dims, broadcast);

    // Dense: mask element i is bit i.
    bool any_broadcast = false;
    for (const MergedDim& d : m) {
        any_broadcast = any_broadcast || d.broadcast;
    }
    if (!any_broadcast) {
        const MaskRun run{bits, 0, RunKind::kBits};
        parallel_chunks(n, [&](std::size_t b, std::size_t e) {
            seg(run, b, e);
            chunk_end();
        });
        return;
    }

    const MergedDim inner = m.back();
    if (inner.broadcast && inner.size < kExpandMaxRun) {
        // Short runs (small channels_first feature maps): a kernel call per run cost
        // more than its elements, so the runs' decisions are spread into dense bits,
        // kPatternBits elements at a time, one segment per block.
        m.pop_back();
        const std::vector<MergedDim> outer = m;
        const std::size_t unit = inner.size;
        parallel_chunks(n, [&](std::size_t b, std::size_t e) {
            alignas(8) std::uint8_t dense[kPatternBits / 8 + 8];
            std::size_t item = b / unit;
            std::size_t w = b % unit;
            for (std::size_t i = b; i < e;) {
                const std::size_t len = std::min(e - i, kPatternBits);
                std::memset(dense, 0, sizeof dense);
                for (std::size_t j = 0; j < len;) {
                    const std::size_t run = std::min(unit - w, len - j);
                    if (bit_at(bits, item_mask_index(outer, item))) {
                        set_bits(dense, j, run);
                    }
                    j += run;
                    w += run;
                    if (w == unit) {
                        w = 0;
                        ++item;
                    }
                }
                // element i is bit 0 of dense: bit0 = -i, mod 2**64 on purpose
                const MaskRun run{dense, std::uint64_t{0} - i, RunKind::kBits, e};
                seg(run, i, i + len);
                i += len;
            }
            chunk_end();
        });
        return;
    }
    if (inner.broadcast) {
        // One decision per run of inner.size elements (channels_first feature maps).
        m.pop_back();
        const std::vector<MergedDim> outer = m;
        // A kept map's prefetches run on into the next map when that one is kept too
        // (and in the same chunk).
        walk_items(n, inner.size, [&](std::size_t item, std::size_t, std::size_t i, std::size_t len,
                                      std::size_t chunk_end_at) {
            const bool kept = bit_at(bits, item_mask_index(outer, item));
            const bool next_kept = kept && i + len < chunk_end_at &&
                                   bit_at(bits, item_mask_index(outer, item + 1));
            const std::size_t ahead = next_kept ? std::min(chunk_end_at, i + len + inner.size) : 0;
            const MaskRun run{nullptr, 0, kept ? RunKind::kAllKept : RunKind::kAllDropped, ahead};
            seg(run, i, i + len);
        }, chunk_end);
        return;
    }

    const bool tile = m.size() >= 2 && m[m.size() - 2].broadcast && inner.size < kPatternMaxPeriod;
    if (!tile) {
        // Runs of inner.size elements whose decisions are consecutive mask bits.
        m.pop_back();
        const std::vector<MergedDim> outer = m;
        walk_items(n, inner.size, [&](std::size_t item, std::size_t w, std::size_t i, std::size_t len,
                                      std::size_t chunk_end_at) {
            // the kernel reads bit (bit0 + element index); element i is item bit w.
            const MaskRun run{bits, item_mask_index(outer, item) + w - i,  // mod 2**64 on purpose
                              RunKind::kBits, chunk_end_at};
            seg(run, i, i + len);
        }, chunk_end);
        return;
    }

    // Short channel vectors broadcast over many pixels (channels_last): per item,
    // tile the item's inner.size bits into a pattern of >= 4096 bits and stream the
    // item's pixels against it.
    const std::size_t period = inner.size;
    const std::size_t pixels = m[m.size() - 2].size;
    m.pop_back();
    m.pop_back();
    const std::vector<MergedDim> outer = m;
    const std::size_t unit = pixels * period;
    // A whole number of periods, about kPatternBits long, or one item if that is less
    // (small feature maps: building 4096 bits for 256 elements cost more than them).
    const std::size_t pattern_bits =
        (std::min(kPatternBits, unit) + period - 1) / period * period;
    // One pattern buffer per chunk, allocated here so nothing inside the parallel
    // region can throw.
    // Small calls use a buffer on the stack (an allocation costs as much as them).
    const std::size_t nt = plan_threads(n);
    const std::size_t pat_bytes = (pattern_bits / 8 + kPatternSlackBits / 8 + 8 + 7) / 8 * 8;
    const std::size_t ext_bytes = ((period + 64) / 8 + 16 + 7) / 8 * 8;
    alignas(8) std::uint8_t local[1024];
    std::vector<std::uint8_t> heap;
    std::uint8_t* scratch = local;
    if (nt * (pat_bytes + ext_bytes) > sizeof local) {
        heap.resize(nt * (pat_bytes + ext_bytes));
        scratch = heap.data();
    }
    parallel_chunks(n, nt, [&](std::size_t t, std::size_t b, std::size_t e) {
        std::uint8_t* pat = scratch + t * (pat_bytes + ext_bytes);
        std::uint8_t* ext = pat + pat_bytes;
        std::size_t built_for = ~std::size_t{0};
        std::size_t item = b / unit;
        std::size_t w = b % unit;
        for (std::size_t i = b; i < e;) {
            if (built_for != item) {
                build_pattern(bits, item_mask_index(outer, item), period, pattern_bits,
                              ext, pat);
                built_for = item;
            }
            const std::size_t phase = w % pattern_bits;
            std::size_t len = std::min({unit - w, e - i, pattern_bits - phase});
            if (line_elems != 0 && len == pattern_bits - phase) {
                // on to the next line start: the pattern holds 64 bits more
                const std::size_t to_line = (line_skew + line_elems - (i + len) % line_elems) %
                                            line_elems;
                len = std::min({len + to_line, unit - w, e - i});
            }
            const MaskRun run{pat, phase - i, RunKind::kBits, e};  // mod 2**64 on purpose
            seg(run, i, i + len);
            i += len;
            w += len;
            if (w == unit) {
                w = 0;
                ++item;
            }
        }
        chunk_end();
    });
}

// Zeros nbytes at dst with streaming stores where the line is whole (SSE2), the
// edges with memset; no fence (the caller's).
void stream_zero(unsigned char* dst, std::size_t nbytes) {
#if defined(__SSE2__) || defined(_M_X64)
    const std::size_t to_line = (64 - reinterpret_cast<std::uintptr_t>(dst) % 64) % 64;
    std::size_t i = std::min(nbytes, to_line);
    std::memset(dst, 0, i);
    const __m128i zero = _mm_setzero_si128();
    for (; i + 64 <= nbytes; i += 64) {
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i), zero);
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 16), zero);
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 32), zero);
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + 48), zero);
    }
    std::memset(dst + i, 0, nbytes - i);
#else
    std::memset(dst, 0, nbytes);
#endif
}

}  // namespace

void run_apply(const KernelTable& table, Dtype dt, const ApplyArgs& a_in,
               const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast) {
    const auto apply = table.apply[dt];
    const std::size_t esize = dtype_size(dt);
    std::size_t n = 1;
    for (std::size_t d : dims) {
        n *= d;
    }
    ApplyArgs a = a_in;
    a.stream_stores = stream_output(n * esize);
    // Streamed runs leave their fence to the end of the thread's chunk: spatial
    // layouts make one run per feature map (or per pattern of channels_last), and a
    // fence per run waits for its lines to drain (README "Where the bytes went").
    a.fence = !a.stream_stores;
    auto* y = static_cast<unsigned char*>(a.y);
    const auto chunk_end = [&a] {
        if (a.stream_stores) {
            store_fence();
        }
    };
    // Streamed outputs: where y's lines start, for the walk to cut its runs there.
    const auto y_addr = reinterpret_cast<std::uintptr_t>(a.y);
    const bool lines = a.stream_stores && y_addr % esize == 0;
    const std::size_t line_elems = lines ? 64 / esize : 0;
    const std::size_t line_skew = lines ? (64 - y_addr % 64) % 64 / esize : 0;
    walk_mask(dims, broadcast, a.bits, [&](const MaskRun& run, std::size_t b, std::size_t e) {
        if (run.kind == RunKind::kAllDropped) {  // a dropped feature map: zeros, x unread
            if (a.stream_stores) {
                stream_zero(y + b * esize, (e - b) * esize);
            } else {
                std::memset(y + b * esize, 0, (e - b) * esize);
            }
            return;
        }
        ApplyArgs args = a;
        args.all_kept = run.kind == RunKind::kAllKept;
        args.bits = run.bits;
        args.bit0 = run.bit0;
        args.prefetch_end = run.ahead_end;
        apply(args, b, e);
    }, chunk_end, line_elems, line_skew);
}

void run_apply_dense(const KernelTable& table, Dtype dt, const ApplyArgs& a_in, std::size_t n) {
    const auto apply = table.apply[dt];
    ApplyArgs a = a_in;
    a.stream_stores = stream_output(n * dtype_size(dt));
    a.all_kept = false;
    a.bit0 = 0;
    parallel_chunks(n, [&](std::size_t b, std::size_t e) { apply(a, b, e); });
}

void run_masked(const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                const std::uint8_t* bits, SegmentFn seg, void* ctx) {
    walk_mask(dims, broadcast, bits, [&](const MaskRun& run, std::size_t b, std::size_t e) {
        seg(ctx, run, b, e);
    });
}

std::size_t plan_chunks(std::size_t n) { return plan_threads(n); }

void run_chunks(std::size_t n, std::size_t nt, ChunkFn fn, void* ctx) {
    parallel_chunks(n, nt, [&](std::size_t t, std::size_t b, std::size_t e) { fn(ctx, t, b, e); });
}

}  // namespace fastdropout
