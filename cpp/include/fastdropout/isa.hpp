// The instruction-set vocabulary, defined once: names and what each level requires.
#pragma once

namespace fastdropout {

enum class Isa { scalar, avx2, avx512, avx512fp16, neon };

constexpr const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
        case Isa::avx512fp16: return "avx512fp16";
        case Isa::neon: return "neon";
    }
    return "?";
}

// What each level means (also in README "SIMD levels"):
//   avx2   ~ x86-64-v3: AVX, AVX2, FMA, F16C, BMI1, BMI2, and the OS saves YMM state
//            (OSXSAVE + XCR0 bits 1-2).
//   avx512 ~ x86-64-v4: the avx2 set plus AVX-512 F/BW/DQ/VL, and the OS saves
//            opmask/ZMM state (XCR0 bits 5-7).
//   avx512fp16: the avx512 set plus AVX512-FP16 (Intel Sapphire Rapids and later):
//            float16 arithmetic on 32 lanes, so float16 no longer widens to float32.
//   neon   : baseline on aarch64 (Advanced SIMD is mandatory there).
//   scalar : portable C++, any CPU.

}  // namespace fastdropout
