// How much of Philox arithmetic and a streaming copy one core runs at the same time.
//
// The forward pass beyond the last-level cache does two things per element: Philox
// work (the mask) and memory traffic (read x, write y). Its bound in the benchmarks
// is the slower of the two alone (gen_bits and the copy). This probe asks whether the
// machine can reach that bound at all: it times, on float32 arrays of n elements,
//   copy    y = x with AVX-512 loads and streaming stores, prefetching x 4 KiB ahead
//           (the forward kernel's memory pattern); with --inputs 2, y = x + r with
//           both inputs prefetched (dropout_add's pattern: read two, write one);
//   philox  R Philox4x32 rounds per block in the library's AVX-512 lane layout (8
//           blocks per register, 4 independent registers), 32 blocks per 128
//           elements, folded into one register: arithmetic only, no memory;
//   both    the two interleaved every 128 elements, with no dependence between them:
//           the best case for overlapping them (the forward pass adds the select
//           and the scale on top);
// for R = 4 .. 10 (fewer rounds make the arithmetic cheaper, so some R puts it level
// with the copy, as gen_bits and the copy are level on the machine the README
// measures). `both / max` is how far from "the slower of the two" the combination
// lands; 1.00 would be perfect overlap, 2.00 none.
//
// Build: cmake -DFASTDROPOUT_BUILD_BENCH=ON (target overlap_probe). Run:
//   overlap_probe [--n ELEMENTS] [--threads LIST] [--reps K] [--inputs 1|2]
//                 [--prefetch 1|0]
// (--prefetch 0: no software prefetching, the hardware prefetchers alone.)
// Threads split the array into equal contiguous parts (OpenMP). x86-64 with AVX-512F
// only; elsewhere it says so and exits 0.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PROBE_X86 1
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports the intrinsics' own undefined pass-through operands as "may be
// used uninitialized" when they are compiled through a target attribute.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define PROBE_TARGET __attribute__((target("avx512f")))
#endif

namespace {

constexpr std::size_t kGroup = 128;  // elements per Philox pass (32 blocks of 4 words)

#if defined(PROBE_X86)

// R rounds on 4 x 8 blocks whose counters start at block b; returns their xor.
PROBE_TARGET inline __m512i philox_pass(std::uint64_t b, int rounds) {
    const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
    const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
    const __m512i w0 = _mm512_set1_epi32(static_cast<int>(0x9E3779B9u));
    const __m512i w1 = _mm512_set1_epi32(static_cast<int>(0xBB67AE85u));
    __m512i k0 = _mm512_set1_epi32(0x01234567);
    __m512i k1 = _mm512_set1_epi32(0x0789ABCD);
    const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    __m512i c[4][4];
    for (int s = 0; s < 4; ++s) {
        c[s][0] = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(b + 8 * static_cast<std::uint64_t>(s))), lanes);
        c[s][1] = _mm512_setzero_si512();
        c[s][2] = _mm512_setzero_si512();
        c[s][3] = _mm512_setzero_si512();
    }
    for (int r = 0; r < rounds; ++r) {
        for (int s = 0; s < 4; ++s) {
            const __m512i p0 = _mm512_mul_epu32(c[s][0], m0);
            const __m512i p1 = _mm512_mul_epu32(c[s][2], m1);
            const __m512i h0 = _mm512_shuffle_epi32(p0, _MM_PERM_CDAB);
            const __m512i h1 = _mm512_shuffle_epi32(p1, _MM_PERM_CDAB);
            c[s][0] = _mm512_ternarylogic_epi32(h1, c[s][1], k0, 0x96);
            c[s][2] = _mm512_ternarylogic_epi32(h0, c[s][3], k1, 0x96);
            c[s][1] = p1;
            c[s][3] = p0;
        }
        k0 = _mm512_add_epi32(k0, w0);
        k1 = _mm512_add_epi32(k1, w1);
    }
    __m512i acc = _mm512_setzero_si512();
    for (int s = 0; s < 4; ++s) {
        acc = _mm512_ternarylogic_epi32(acc, c[s][0], _mm512_xor_si512(c[s][1], c[s][2]), 0x96);
    }
    return acc;
}

// One thread's part [b, e) (multiples of kGroup): mode 0 copy, 1 philox, 2 both. With
// r, the memory side is y = x + r.
PROBE_TARGET std::uint64_t part(const float* x, const float* r, float* y, std::size_t b,
                                std::size_t e, int mode, int rounds, bool prefetch) {
    __m512i acc = _mm512_setzero_si512();
    for (std::size_t i = b; i < e; i += kGroup) {
        if (mode != 0) {
            acc = _mm512_xor_si512(acc, philox_pass(i / 4, rounds));
        }
        if (mode != 1) {
            if (prefetch && i + 1024 + kGroup <= e) {
                for (std::size_t l = 0; l < kGroup * sizeof(float); l += 64) {
                    _mm_prefetch(reinterpret_cast<const char*>(x + i) + 4096 + l, _MM_HINT_T0);
                    if (r != nullptr) {
                        _mm_prefetch(reinterpret_cast<const char*>(r + i) + 4096 + l, _MM_HINT_T0);
                    }
                }
            }
            if (r != nullptr) {
                for (std::size_t j = 0; j < kGroup; j += 16) {
                    _mm512_stream_ps(y + i + j, _mm512_add_ps(_mm512_load_ps(x + i + j),
                                                              _mm512_load_ps(r + i + j)));
                }
            } else {
                for (std::size_t j = 0; j < kGroup; j += 16) {
                    _mm512_stream_ps(y + i + j, _mm512_load_ps(x + i + j));
                }
            }
        }
    }
    _mm_sfence();
    alignas(64) std::uint64_t out[8];
    _mm512_store_si512(out, acc);
    return out[0];
}

#endif  // PROBE_X86

struct Options {
    std::size_t n = std::size_t{1} << 28;
    std::vector<int> threads;
    int reps = 5;
    int inputs = 1;
    bool prefetch = true;
};

std::size_t parse_size(const std::string& s) {
    if (s.rfind("2**", 0) == 0) {
        return std::size_t{1} << std::stoul(s.substr(3));
    }
    return static_cast<std::size_t>(std::stoull(s));
}

int max_threads() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int k = 1; k + 1 < argc; k += 2) {
        const std::string a = argv[k];
        const std::string v = argv[k + 1];
        if (a == "--n") {
            o.n = parse_size(v);
        } else if (a == "--reps") {
            o.reps = std::max(1, std::stoi(v));
        } else if (a == "--inputs" && (v == "1" || v == "2")) {
            o.inputs = std::stoi(v);
        } else if (a == "--prefetch" && (v == "0" || v == "1")) {
            o.prefetch = v == "1";
        } else if (a == "--threads") {
            std::size_t pos = 0;
            while (pos <= v.size()) {
                const std::size_t end = std::min(v.find(',', pos), v.size());
                const std::string t = v.substr(pos, end - pos);
                o.threads.push_back(t == "max" ? max_threads() : std::stoi(t));
                pos = end + 1;
            }
        } else {
            std::fprintf(stderr,
                         "usage: overlap_probe [--n N] [--threads LIST] [--reps K] [--inputs 1|2] "
                         "[--prefetch 1|0]\n");
            return 2;
        }
    }
    if (o.threads.empty()) {
        o.threads = {1, max_threads()};
        if (o.threads[1] == 1) {
            o.threads.pop_back();
        }
    }
#if !defined(PROBE_X86)
    std::printf("overlap_probe: needs x86-64 with AVX-512F; nothing measured\n");
    return 0;
#else
    if (!__builtin_cpu_supports("avx512f")) {
        std::printf("overlap_probe: this CPU has no AVX-512F; nothing measured\n");
        return 0;
    }
    const std::size_t n = (o.n + 1023) / 1024 * 1024;
    auto* x = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    auto* y = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
    auto* r = o.inputs == 2 ? static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)))
                            : nullptr;
    if (x == nullptr || y == nullptr || (o.inputs == 2 && r == nullptr)) {
        std::fprintf(stderr, "overlap_probe: out of memory\n");
        return 1;
    }
    std::memset(x, 1, n * sizeof(float));
    std::memset(y, 0, n * sizeof(float));
    if (r != nullptr) {
        std::memset(r, 0, n * sizeof(float));
    }
    std::uint64_t sink = 0;
    std::printf("n = %zu float32 (%zu MiB per array), median of %d runs, ns per element, "
                "software prefetch %s\n", n, n * sizeof(float) >> 20, o.reps,
                o.prefetch ? "4 KiB ahead" : "off");
    std::printf("| threads | rounds | %s | philox | both | both / max | both / sum |\n",
                o.inputs == 2 ? "y = x + r" : "copy");
    std::printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (const int nt : o.threads) {
        for (int rounds = 4; rounds <= 10; rounds += 2) {
            std::vector<double> t[3];
            for (int rep = 0; rep < o.reps; ++rep) {
                for (int mode = 0; mode < 3; ++mode) {  // interleaved, round by round
                    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt) reduction(^ : sink)
                    {
#if defined(_OPENMP)
                        const auto id = static_cast<std::size_t>(omp_get_thread_num());
                        const auto cnt = static_cast<std::size_t>(omp_get_num_threads());
#else
                        const std::size_t id = 0;
                        const std::size_t cnt = 1;
#endif
                        const std::size_t per = n / cnt / kGroup * kGroup;
                        const std::size_t b = id * per;
                        const std::size_t e = id + 1 == cnt ? n : b + per;
                        sink ^= part(x, r, y, b, e, mode, rounds, o.prefetch);
                    }
                    const auto t1 = std::chrono::steady_clock::now();
                    t[mode].push_back(std::chrono::duration<double>(t1 - t0).count() * 1e9 /
                                      static_cast<double>(n));
                }
            }
            double med[3];
            for (int mode = 0; mode < 3; ++mode) {
                std::sort(t[mode].begin(), t[mode].end());
                med[mode] = t[mode][t[mode].size() / 2];
            }
            std::printf("| %d | %d | %.3f | %.3f | %.3f | %.2f | %.2f |\n", nt, rounds, med[0],
                        med[1], med[2], med[2] / std::max(med[0], med[1]),
                        med[2] / (med[0] + med[1]));
        }
    }
    std::free(x);
    std::free(y);
    std::free(r);
    return sink == 42 ? 3 : 0;  // keep the arithmetic alive
#endif
}
