// CPUID + XGETBV probing (x86-64), after simdjson's isadetection.h: a feature counts
// only if the CPU has it AND the OS saves the register state it needs (XCR0).
// Compiled with baseline flags.
#include "cpu_features.hpp"

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define FASTDROPOUT_X86 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <immintrin.h>
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace fastdropout {
namespace {

#if defined(FASTDROPOUT_X86)
struct Regs {
    std::uint32_t eax, ebx, ecx, edx;
};

Regs cpuid(std::uint32_t leaf, std::uint32_t subleaf) {
    Regs r{0, 0, 0, 0};
#if defined(_MSC_VER) && !defined(__clang__)
    int out[4];
    __cpuidex(out, static_cast<int>(leaf), static_cast<int>(subleaf));
    r = {static_cast<std::uint32_t>(out[0]), static_cast<std::uint32_t>(out[1]),
         static_cast<std::uint32_t>(out[2]), static_cast<std::uint32_t>(out[3])};
#else
    __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#endif
    return r;
}

std::uint64_t xgetbv0() {
#if defined(_MSC_VER) && !defined(__clang__)
    return _xgetbv(0);
#else
    std::uint32_t lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
#endif
}

struct X86Features {
    bool avx2 = false;    // x86-64-v3 subset we need
    bool avx512 = false;  // x86-64-v4 subset we need
    bool avx512fp16 = false;  // that plus AVX512-FP16
};

X86Features probe() {
    X86Features f;
    const Regs r0 = cpuid(0, 0);
    if (r0.eax < 7) {
        return f;
    }
    const Regs r1 = cpuid(1, 0);
    const Regs r7 = cpuid(7, 0);
    const bool osxsave = (r1.ecx >> 27) & 1u;
    const bool avx = (r1.ecx >> 28) & 1u;
    const bool fma = (r1.ecx >> 12) & 1u;
    const bool f16c = (r1.ecx >> 29) & 1u;
    const bool bmi1 = (r7.ebx >> 3) & 1u;
    const bool avx2 = (r7.ebx >> 5) & 1u;
    const bool bmi2 = (r7.ebx >> 8) & 1u;
    const bool avx512f = (r7.ebx >> 16) & 1u;
    const bool avx512dq = (r7.ebx >> 17) & 1u;
    const bool avx512bw = (r7.ebx >> 30) & 1u;
    const bool avx512vl = (r7.ebx >> 31) & 1u;
    const bool avx512fp16 = (r7.edx >> 23) & 1u;
    if (!osxsave || !avx) {
        return f;  // without OSXSAVE we may not even execute xgetbv
    }
    const std::uint64_t xcr0 = xgetbv0();
    const bool os_ymm = (xcr0 & 0x6u) == 0x6u;     // SSE + AVX state
    const bool os_zmm = (xcr0 & 0xE6u) == 0xE6u;   // + opmask, ZMM_Hi256, Hi16_ZMM
    f.avx2 = os_ymm && avx2 && fma && f16c && bmi1 && bmi2;
    f.avx512 = f.avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
    f.avx512fp16 = f.avx512 && avx512fp16;
    return f;
}

bool probe_amd() {
    const Regs r0 = cpuid(0, 0);  // vendor string in ebx, edx, ecx
    return r0.ebx == 0x68747541u && r0.edx == 0x69746e65u && r0.ecx == 0x444d4163u;
}

const X86Features& features() {
    static const X86Features f = probe();  // thread-safe, once (C++11 magic statics)
    return f;
}
#endif

}  // namespace

bool cpu_supports(Isa isa) {
    switch (isa) {
        case Isa::scalar:
            return true;
#if defined(FASTDROPOUT_X86)
        case Isa::avx2:
            return features().avx2;
        case Isa::avx512:
            return features().avx512;
        case Isa::avx512fp16:
            return features().avx512fp16;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
        case Isa::neon:
            return true;  // Advanced SIMD is part of the aarch64 baseline
#endif
        default:
            return false;
    }
}

bool cpu_is_amd() {
#if defined(FASTDROPOUT_X86)
    static const bool amd = probe_amd();
    return amd;
#else
    return false;
#endif
}

}  // namespace fastdropout
