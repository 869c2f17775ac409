// AVX2 vocabulary for dropout_generic.hpp: four Philox blocks per vector, four
// vectors per 64 stream positions.
// Compiled only in kernels/avx2.cpp (-mavx2 -mfma -mf16c -mbmi -mbmi2).
#pragma once

#include <cstddef>
#include <cstdint>

#include "half.hpp"
#include "vec_x86_common.hpp"

namespace fastdropout {
namespace avx2 {
namespace {

// ---- Philox lanes -----------------------------------------------------------------
// Each 64-bit lane carries one block's 32-bit word in its low half (4 blocks per
// register): vpmuludq gives the whole product in place, `lo` as it stands and `hi`
// after one vpshufd, with no blends. Upper halves hold garbage nothing reads
// (vpmuludq and the final compare use the low dwords only).
using U32 = __m256i;
// Independent vectors in flight per Philox pass (hides the multiply latency).
constexpr int kSets = 4;
constexpr int kLanes = 4;

FASTDROPOUT_INLINE U32 set1(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
FASTDROPOUT_INLINE U32 load(const std::uint32_t* p) {
    return _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
FASTDROPOUT_INLINE void store(std::uint32_t* p, U32 v) {
    // gather the low dwords: 0,2 of each 128-bit half, then the halves together
    const __m256i packed = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
FASTDROPOUT_INLINE U32 iota() { return _mm256_setr_epi64x(0, 1, 2, 3); }
FASTDROPOUT_INLINE U32 add(U32 a, U32 b) { return _mm256_add_epi32(a, b); }
FASTDROPOUT_INLINE U32 xor3(U32 a, U32 b, U32 c) {
    return _mm256_xor_si256(_mm256_xor_si256(a, b), c);
}
FASTDROPOUT_INLINE U32 xor2(U32 a, U32 b) { return _mm256_xor_si256(a, b); }
FASTDROPOUT_INLINE void mulhilo(U32 a, U32 m, U32& hi, U32& lo) {
    lo = _mm256_mul_epu32(a, m);
    hi = _mm256_shuffle_epi32(lo, 0xB1);
}
// 4 bits, lane l -> bit l, from the low dwords.
FASTDROPOUT_INLINE std::uint32_t ge_bits(U32 r, U32 t) {
    // Unsigned r >= t  <=>  max(r, t) == r (AVX2 has no unsigned compare).
    const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(r, t), r);
    return _pext_u32(static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(ge))), 0x55u);
}
// Lane l of word w is stream position 4*l + w: interleave the four 4-bit masks.
FASTDROPOUT_INLINE std::uint64_t keep_bits(U32 r0, U32 r1, U32 r2, U32 r3, U32 t) {
    return _pdep_u32(ge_bits(r0, t), 0x1111u) | _pdep_u32(ge_bits(r1, t), 0x2222u) |
           _pdep_u32(ge_bits(r2, t), 0x4444u) | _pdep_u32(ge_bits(r3, t), 0x8888u);
}

// ---- 64-element groups: bit k of b decides element k --------------------------------
// Lane masks (all ones where kept) from bits; AND-ing with them gives +0.0 where
// dropped whatever the value was (NaN and Inf included): a select, not a multiply.
FASTDROPOUT_INLINE __m256i lanes32(std::uint32_t b8) {
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(b8)), sel),
                              sel);
}
FASTDROPOUT_INLINE __m256i lanes64(std::uint32_t b4) {
    const __m256i sel = _mm256_setr_epi64x(1, 2, 4, 8);
    return _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(b4), sel), sel);
}
FASTDROPOUT_INLINE __m256i lanes16(std::uint32_t b16) {
    const __m256i sel = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                          4096, 8192, 16384, -32768);
    return _mm256_cmpeq_epi16(
        _mm256_and_si256(_mm256_set1_epi16(static_cast<short>(b16)), sel), sel);
}

FASTDROPOUT_INLINE void scale64_f32(std::uint64_t b, const float* x, float* y, float s) {
    const __m256 vs = _mm256_set1_ps(s);
    for (int j = 0; j < 8; ++j) {
        const __m256 m = _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> (8 * j)) & 0xffu));
        _mm256_storeu_ps(y + 8 * j, _mm256_and_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), vs), m));
    }
}
FASTDROPOUT_INLINE void select64_f32(std::uint64_t b, const float* x, float* y) {
    for (int j = 0; j < 8; ++j) {
        const __m256 m = _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> (8 * j)) & 0xffu));
        _mm256_storeu_ps(y + 8 * j, _mm256_and_ps(_mm256_loadu_ps(x + 8 * j), m));
    }
}
FASTDROPOUT_INLINE void scale64_f64(std::uint64_t b, const double* x, double* y, double s) {
    const __m256d vs = _mm256_set1_pd(s);
    for (int j = 0; j < 16; ++j) {
        const __m256d m = _mm256_castsi256_pd(lanes64(static_cast<std::uint32_t>(b >> (4 * j)) & 0xfu));
        _mm256_storeu_pd(y + 4 * j, _mm256_and_pd(_mm256_mul_pd(_mm256_loadu_pd(x + 4 * j), vs), m));
    }
}
FASTDROPOUT_INLINE void select64_f64(std::uint64_t b, const double* x, double* y) {
    for (int j = 0; j < 16; ++j) {
        const __m256d m = _mm256_castsi256_pd(lanes64(static_cast<std::uint32_t>(b >> (4 * j)) & 0xfu));
        _mm256_storeu_pd(y + 4 * j, _mm256_and_pd(_mm256_loadu_pd(x + 4 * j), m));
    }
}
// float16: widen (exact), multiply in float32 (exact: 11-bit x 11-bit significands),
// narrow once with round-to-nearest-even -- the same value NumPy's float16 multiply
// gives.
FASTDROPOUT_INLINE void scale64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float s) {
    const __m256 vs = _mm256_set1_ps(s);
    // two narrowed halves stored as one 32-byte register (see vec_avx512.hpp: a wider
    // load of two narrower stores is not forwarded)
    for (int j = 0; j < 4; ++j) {
        __m128i half[2];
        for (int h = 0; h < 2; ++h) {
            const int e = 16 * j + 8 * h;
            const __m256 m = _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> e) & 0xffu));
            const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + e)));
            half[h] = _mm256_cvtps_ph(_mm256_and_ps(_mm256_mul_ps(v, vs), m),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 16 * j),
                            _mm256_inserti128_si256(_mm256_castsi128_si256(half[0]), half[1], 1));
    }
}
FASTDROPOUT_INLINE void select64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y) {
    for (int j = 0; j < 4; ++j) {
        const __m256i m = lanes16(static_cast<std::uint32_t>(b >> (16 * j)) & 0xffffu);
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16 * j));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 16 * j), _mm256_and_si256(v, m));
    }
}

// float16 <-> float32 for 64 elements (fused kernels of docs/spec.md sections 9-10); F16C
// narrows with round-to-nearest-even, as NumPy does.
FASTDROPOUT_INLINE void widen64_f16(const std::uint16_t* h, float* f) {
    for (int j = 0; j < 8; ++j) {
        _mm256_storeu_ps(f + 8 * j,
                         _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 8 * j))));
    }
}
FASTDROPOUT_INLINE void narrow64_f16(const float* f, std::uint16_t* h) {
    for (int j = 0; j < 8; ++j) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 8 * j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(f + 8 * j),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

// bfloat16 (docs/spec.md section 8): widen (a shift), multiply in float32 (exact for two
// bfloat16 values; AND-ed with the lane mask, so dropped lanes are +0.0), then round
// to nearest even in integer arithmetic; a NaN becomes the quiet NaN with its sign
// and top payload bits.
FASTDROPOUT_INLINE __m256i bf16_round8(__m256i p) {
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(p, 16), one);
    const __m256i r = _mm256_add_epi32(p, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
    const __m256i nan = _mm256_cmpgt_epi32(
        _mm256_and_si256(p, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    const __m256i q = _mm256_or_si256(p, _mm256_set1_epi32(0x00400000));
    return _mm256_srli_epi32(_mm256_blendv_epi8(r, q, nan), 16);
}
FASTDROPOUT_INLINE void scale64_bf16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                     float s) {
    const __m256 vs = _mm256_set1_ps(s);
    for (int j = 0; j < 4; ++j) {
        __m256i r[2];
        for (int h = 0; h < 2; ++h) {
            const int e = 16 * j + 8 * h;
            const __m256 m = _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> e) & 0xffu));
            const __m256i w = _mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + e))), 16);
            const __m256 prod = _mm256_and_ps(_mm256_mul_ps(_mm256_castsi256_ps(w), vs), m);
            r[h] = bf16_round8(_mm256_castps_si256(prod));
        }
        // packus interleaves the 128-bit halves; permute them back into order
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 16 * j), packed);
    }
}

// The fused bfloat16 kernels (docs/spec.md sections 9 and 10) in registers, as
// vec_avx512.hpp does them (see there why the roundings need no NaN select and the
// additions keep their operand order with an asm statement): 16 elements per register,
// the even ones widened with a shift, the odd ones with a mask, 8 of each.
#if defined(__GNUC__)
#define FASTDROPOUT_VEC_BF16_FUSED64 1
FASTDROPOUT_INLINE __m256 add_first_nan_ps(__m256 a, __m256 b) {
    __m256 r;
    __asm__("vaddps %2, %1, %0" : "=x"(r) : "x"(a), "x"(b));
    return r;
}
FASTDROPOUT_INLINE __m256i bf16_round_hi8(__m256i p) {  // rounded value in the high halves
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(p, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(p, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
}
FASTDROPOUT_INLINE __m256i bf16_high8() { return _mm256_set1_epi32(static_cast<int>(0xffff0000u)); }
FASTDROPOUT_INLINE __m256 bf16_round_f32(__m256 v) {
    return _mm256_castsi256_ps(
        _mm256_and_si256(bf16_round_hi8(_mm256_castps_si256(v)), bf16_high8()));
}
FASTDROPOUT_INLINE __m256 bf16_even(__m256i v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
FASTDROPOUT_INLINE __m256 bf16_odd(__m256i v) {
    return _mm256_castsi256_ps(_mm256_and_si256(v, bf16_high8()));
}
FASTDROPOUT_INLINE __m256i bf16_pack(__m256 even, __m256 odd) {
    const __m256i re = bf16_round_hi8(_mm256_castps_si256(even));
    const __m256i ro = bf16_round_hi8(_mm256_castps_si256(odd));
    return _mm256_or_si256(_mm256_srli_epi32(re, 16), _mm256_and_si256(ro, bf16_high8()));
}
// A 32-byte store of the fused kernels: a normal one, or (kStream, y 32-byte aligned)
// a non-temporal one, straight from the register.
template <bool kStream>
FASTDROPOUT_INLINE void put32(void* y, __m256i v) {
    if (kStream) {
        _mm256_stream_si256(static_cast<__m256i*>(y), v);
    } else {
        _mm256_storeu_si256(static_cast<__m256i*>(y), v);
    }
}
FASTDROPOUT_INLINE __m256i load16(const std::uint16_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
// y = residual + (keep ? (x + bias) * s : +0.0) for 64 elements, each operation rounded
// to bfloat16 (no "+ bias" when bias is null, no "* s" when !scaled).
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_bf16(std::uint64_t b, const std::uint16_t* x,
                                   const std::uint16_t* bias, const std::uint16_t* r,
                                   std::uint16_t* y, float s, bool scaled) {
    const __m256 vs = _mm256_set1_ps(s);
    // the keep bits of the even and of the odd elements, 8 of each per 16 elements
    const std::uint64_t keep_even = _pext_u64(b, 0x5555555555555555u);
    const std::uint64_t keep_odd = _pext_u64(b, 0xaaaaaaaaaaaaaaaau);
    for (int j = 0; j < 4; ++j) {
        const __m256i v = load16(x + 16 * j);
        __m256 te = bf16_even(v);
        __m256 to = bf16_odd(v);
        if (bias != nullptr) {
            const __m256i bv = load16(bias + 16 * j);
            te = bf16_round_f32(add_first_nan_ps(te, bf16_even(bv)));
            to = bf16_round_f32(add_first_nan_ps(to, bf16_odd(bv)));
        }
        if (scaled) {
            te = bf16_round_f32(_mm256_mul_ps(te, vs));
            to = bf16_round_f32(_mm256_mul_ps(to, vs));
        }
        const auto ke = static_cast<std::uint32_t>(keep_even >> (8 * j)) & 0xffu;
        const auto ko = static_cast<std::uint32_t>(keep_odd >> (8 * j)) & 0xffu;
        te = _mm256_and_ps(te, _mm256_castsi256_ps(lanes32(ke)));  // +0.0 where dropped
        to = _mm256_and_ps(to, _mm256_castsi256_ps(lanes32(ko)));
        const __m256i rv = load16(r + 16 * j);
        const __m256 ye = add_first_nan_ps(bf16_even(rv), te);
        const __m256 yo = add_first_nan_ps(bf16_odd(rv), to);
        put32<kStream>(y + 16 * j, bf16_pack(ye, yo));
    }
}
// y = keep ? (x * A) + B : D for 64 elements, two bfloat16 roundings; d is D's bits.
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_bf16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                     float coef_a, float coef_b, std::uint16_t d) {
    const __m256 va = _mm256_set1_ps(coef_a);
    const __m256 vb = _mm256_set1_ps(coef_b);
    const __m256i vd = _mm256_set1_epi16(static_cast<short>(d));
    for (int j = 0; j < 4; ++j) {
        const __m256i v = load16(x + 16 * j);
        const __m256 te = bf16_round_f32(_mm256_mul_ps(bf16_even(v), va));
        const __m256 to = bf16_round_f32(_mm256_mul_ps(bf16_odd(v), va));
        const __m256i packed = bf16_pack(_mm256_add_ps(te, vb), _mm256_add_ps(to, vb));
        const __m256i keep = lanes16(static_cast<std::uint32_t>(b >> (16 * j)) & 0xffffu);
        put32<kStream>(y + 16 * j, _mm256_blendv_epi8(vd, packed, keep));
    }
}
// The same two kernels in float16: 8 elements per register, widened with vcvtph2ps
// (exact) and each operation's float32 result rounded with vcvtps2ph (nearest even,
// NumPy's float16 operation: see vec_avx512.hpp) and widened back where another
// operation follows.
#define FASTDROPOUT_VEC_F16_FUSED64 1
FASTDROPOUT_INLINE __m256 f16_load8(const std::uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
FASTDROPOUT_INLINE __m128i f16_narrow8(__m256 v) {
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
FASTDROPOUT_INLINE __m256 f16_round_f32(__m256 v) { return _mm256_cvtph_ps(f16_narrow8(v)); }
FASTDROPOUT_INLINE __m256i f16_join(__m128i low, __m128i high) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
}
// y = residual + (keep ? (x + bias) * s : +0.0) for 64 elements, each operation rounded
// to float16 (no "+ bias" when bias is null, no "* s" when !scaled).
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_f16(std::uint64_t b, const std::uint16_t* x,
                                  const std::uint16_t* bias, const std::uint16_t* r,
                                  std::uint16_t* y, float s, bool scaled) {
    const __m256 vs = _mm256_set1_ps(s);
    for (int j = 0; j < 4; ++j) {
        __m128i half[2];
        for (int h = 0; h < 2; ++h) {
            const int e = 16 * j + 8 * h;
            __m256 t = f16_load8(x + e);
            if (bias != nullptr) {
                t = f16_round_f32(add_first_nan_ps(t, f16_load8(bias + e)));
            }
            if (scaled) {
                t = f16_round_f32(_mm256_mul_ps(t, vs));
            }
            // +0.0 where dropped
            t = _mm256_and_ps(t, _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> e) & 0xffu)));
            half[h] = f16_narrow8(add_first_nan_ps(f16_load8(r + e), t));
        }
        put32<kStream>(y + 16 * j, f16_join(half[0], half[1]));
    }
}
// y = keep ? (x * A) + B : D for 64 elements, two float16 roundings; d is D's bits.
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float coef_a, float coef_b, std::uint16_t d) {
    const __m256 va = _mm256_set1_ps(coef_a);
    const __m256 vb = _mm256_set1_ps(coef_b);
    const __m256i vd = _mm256_set1_epi16(static_cast<short>(d));
    for (int j = 0; j < 4; ++j) {
        __m128i half[2];
        for (int h = 0; h < 2; ++h) {
            const __m256 t = f16_round_f32(_mm256_mul_ps(f16_load8(x + 16 * j + 8 * h), va));
            half[h] = f16_narrow8(_mm256_add_ps(t, vb));
        }
        const __m256i keep = lanes16(static_cast<std::uint32_t>(b >> (16 * j)) & 0xffffu);
        put32<kStream>(y + 16 * j, _mm256_blendv_epi8(vd, f16_join(half[0], half[1]), keep));
    }
}
// The float32 and float64 forms of the same two kernels (every operation in the
// element type: no rounding step), 8 and 4 elements per register.
#define FASTDROPOUT_VEC_F32_FUSED64 1
#define FASTDROPOUT_VEC_F64_FUSED64 1
FASTDROPOUT_INLINE __m256d add_first_nan_pd(__m256d a, __m256d b) {
    __m256d r;
    __asm__("vaddpd %2, %1, %0" : "=x"(r) : "x"(a), "x"(b));
    return r;
}
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_f32(std::uint64_t b, const float* x, const float* bias,
                                  const float* r, float* y, float s, bool scaled) {
    const __m256 vs = _mm256_set1_ps(s);
    for (int j = 0; j < 8; ++j) {
        __m256 t = _mm256_loadu_ps(x + 8 * j);
        if (bias != nullptr) {
            t = add_first_nan_ps(t, _mm256_loadu_ps(bias + 8 * j));
        }
        if (scaled) {
            t = _mm256_mul_ps(t, vs);
        }
        t = _mm256_and_ps(t, _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> (8 * j)) & 0xffu)));
        put32<kStream>(y + 8 * j, _mm256_castps_si256(add_first_nan_ps(_mm256_loadu_ps(r + 8 * j), t)));
    }
}
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_f32(std::uint64_t b, const float* x, float* y, float coef_a,
                                    float coef_b, float d) {
    const __m256 va = _mm256_set1_ps(coef_a);
    const __m256 vb = _mm256_set1_ps(coef_b);
    const __m256 vd = _mm256_set1_ps(d);
    for (int j = 0; j < 8; ++j) {
        const __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), va), vb);
        const __m256 keep = _mm256_castsi256_ps(lanes32(static_cast<std::uint32_t>(b >> (8 * j)) & 0xffu));
        put32<kStream>(y + 8 * j, _mm256_castps_si256(_mm256_blendv_ps(vd, t, keep)));
    }
}
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_f64(std::uint64_t b, const double* x, const double* bias,
                                  const double* r, double* y, double s, bool scaled) {
    const __m256d vs = _mm256_set1_pd(s);
    for (int j = 0; j < 16; ++j) {
        __m256d t = _mm256_loadu_pd(x + 4 * j);
        if (bias != nullptr) {
            t = add_first_nan_pd(t, _mm256_loadu_pd(bias + 4 * j));
        }
        if (scaled) {
            t = _mm256_mul_pd(t, vs);
        }
        t = _mm256_and_pd(t, _mm256_castsi256_pd(lanes64(static_cast<std::uint32_t>(b >> (4 * j)) & 0xfu)));
        put32<kStream>(y + 4 * j, _mm256_castpd_si256(add_first_nan_pd(_mm256_loadu_pd(r + 4 * j), t)));
    }
}
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_f64(std::uint64_t b, const double* x, double* y, double coef_a,
                                    double coef_b, double d) {
    const __m256d va = _mm256_set1_pd(coef_a);
    const __m256d vb = _mm256_set1_pd(coef_b);
    const __m256d vd = _mm256_set1_pd(d);
    for (int j = 0; j < 16; ++j) {
        const __m256d t = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(x + 4 * j), va), vb);
        const __m256d keep = _mm256_castsi256_pd(lanes64(static_cast<std::uint32_t>(b >> (4 * j)) & 0xfu));
        put32<kStream>(y + 4 * j, _mm256_castpd_si256(_mm256_blendv_pd(vd, t, keep)));
    }
}
#endif

// 64 column sums advanced by one row (the grad_bias pass, docs/spec.md section 9): a
// sum that is NaN keeps its NaN; any other sum adds the widened value. With GCC and
// Clang the sum is the first operand of a vaddpd held in order by an asm statement
// (x86 returns the first NaN source, and every NaN a sum holds is already quiet: an
// addition's result), which replaces the compare and blend.
#define FASTDROPOUT_VEC_ACCUMULATE64 1
FASTDROPOUT_INLINE void accumulate4(double* acc, __m256d v) {
    const __m256d a = _mm256_loadu_pd(acc);
#if defined(__GNUC__)
    __m256d r;
    __asm__("vaddpd %2, %1, %0" : "=x"(r) : "x"(a), "x"(v));
    _mm256_storeu_pd(acc, r);
#else
    const __m256d nan = _mm256_cmp_pd(a, a, _CMP_UNORD_Q);
    _mm256_storeu_pd(acc, _mm256_blendv_pd(_mm256_add_pd(a, v), a, nan));
#endif
}
FASTDROPOUT_INLINE void accumulate64(double* acc, const float* c) {
    for (int j = 0; j < 16; ++j) {
        accumulate4(acc + 4 * j, _mm256_cvtps_pd(_mm_loadu_ps(c + 4 * j)));
    }
}
FASTDROPOUT_INLINE void accumulate64(double* acc, const double* c) {
    for (int j = 0; j < 16; ++j) {
        accumulate4(acc + 4 * j, _mm256_loadu_pd(c + 4 * j));
    }
}

}  // namespace
}  // namespace avx2
}  // namespace fastdropout
