// AVX-512 vocabulary for dropout_generic.hpp: eight Philox blocks per vector (two
// vectors per 64 stream positions), opmask registers for the select. Compiled in
// kernels/avx512.cpp (-mavx512f -mavx512bw -mavx512dq -mavx512vl + the avx2 set) and
// kernels/avx512fp16.cpp (the same plus -mavx512fp16, which turns on the float16
// paths under __AVX512FP16__).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastdropout/philox.hpp"
#include "half.hpp"
#include "vec_x86_common.hpp"

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// ---- Philox lanes -----------------------------------------------------------------
// Each 64-bit lane carries one Philox block's 32-bit word in its low half, 8 blocks
// per register. vpmuludq then yields the full 64-bit product in place: its low half
// is `lo` as it stands and its high half is brought down by one vpshufd (port 5),
// so a round costs one multiply (port 0) and one shuffle per word pair, and no
// blends. The upper halves carry garbage that nothing reads: vpmuludq and the final
// compare look at the low dwords only.
using U32 = __m512i;
// Independent vectors in flight per Philox pass (hides the multiply latency).
constexpr int kSets = 4;
constexpr int kLanes = 8;

FASTDROPOUT_INLINE U32 set1(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
FASTDROPOUT_INLINE U32 load(const std::uint32_t* p) {
    return _mm512_cvtepu32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
FASTDROPOUT_INLINE void store(std::uint32_t* p, U32 v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi64_epi32(v));
}
FASTDROPOUT_INLINE U32 iota() { return _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7); }
FASTDROPOUT_INLINE U32 add(U32 a, U32 b) { return _mm512_add_epi32(a, b); }
FASTDROPOUT_INLINE U32 xor3(U32 a, U32 b, U32 c) {
    return _mm512_ternarylogic_epi32(a, b, c, 0x96);  // a ^ b ^ c in one instruction
}
FASTDROPOUT_INLINE U32 xor2(U32 a, U32 b) { return _mm512_xor_si512(a, b); }
FASTDROPOUT_INLINE void mulhilo(U32 a, U32 m, U32& hi, U32& lo) {
    lo = _mm512_mul_epu32(a, m);
    hi = _mm512_shuffle_epi32(lo, _MM_PERM_CDAB);
}
// Philox's round 9 fused with the keep bits (this ISA has no separate keep_bits).
// Lane l of word w is stream position 4*l + w. The shuffle that brings a product's
// high half down also moves its low half (the round's word 1 or 3) up into the odd
// dword beside word 0 (or 2); a merge-masked ternlog writes word 0 (or 2) into the
// even dwords only. So two compares give bit 2*l + w, and two pdeps spread them to
// 4*l + w: the same bits as round 9 followed by a keep_bits, with no shuffle of its
// own.
#define FASTDROPOUT_VEC_LAST_ROUND_KEEP_BITS 1
FASTDROPOUT_INLINE std::uint64_t last_round_keep_bits(const U32 (&c)[4], U32 k0, U32 k1, U32 t) {
    const __m512i p0 = _mm512_mul_epu32(c[0], set1(kPhiloxM0));      // hi0 : lo0
    const __m512i p1 = _mm512_mul_epu32(c[2], set1(kPhiloxM1));      // hi1 : lo1
    const __m512i s0 = _mm512_shuffle_epi32(p0, _MM_PERM_CDAB);      // lo0 : hi0
    const __m512i s1 = _mm512_shuffle_epi32(p1, _MM_PERM_CDAB);      // lo1 : hi1
    const __m512i v01 = _mm512_mask_ternarylogic_epi32(s1, 0x5555, c[1], k0, 0x96);  // w1 : w0
    const __m512i v23 = _mm512_mask_ternarylogic_epi32(s0, 0x5555, c[3], k1, 0x96);  // w3 : w2
    const std::uint32_t m01 = _mm512_cmpge_epu32_mask(v01, t);
    const std::uint32_t m23 = _mm512_cmpge_epu32_mask(v23, t);
    return _pdep_u32(m01, 0x33333333u) | _pdep_u32(m23, 0xCCCCCCCCu);
}

// ---- nibble transpose for window_lanes.hpp --------------------------------------------
// rows[k] (k < nrows <= 16, 32 bits): nibble l is lane l's keep bits of block k.
// out[l] gets nibble l of rows 0..15 as its nibbles 0..15, rows from nrows on read as
// 0 (a masked load: no zero padding stored just before a wide load, which could
// not be forwarded from the store buffer). Bytes first: a 4x4 byte transpose in
// each 128-bit lane (vpshufb) and a 4x4 transpose of dwords across the lanes (vpermd)
// leave byte k of 128-bit lane j = byte j of row k, i.e. lanes 2j (low nibble) and
// 2j + 1 (high nibble) of block k. In each 16-bit pair (blocks k, k+1) swapping the
// middle two nibbles puts lane 2j's two nibbles in the low byte and lane 2j+1's in the
// high byte; a last vpshufb gathers the low bytes into qword 2j and the high ones
// into qword 2j + 1.
#define FASTDROPOUT_VEC_TRANSPOSE16 1
FASTDROPOUT_INLINE void transpose16(const std::uint32_t* rows, std::size_t nrows,
                                    std::uint64_t* out) {
    const __m128i t4x4 = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const auto valid = static_cast<__mmask16>(nrows >= 16 ? 0xFFFFu : (1u << nrows) - 1u);
    __m512i v = _mm512_maskz_loadu_epi32(valid, rows);
    v = _mm512_shuffle_epi8(v, _mm512_broadcast_i32x4(t4x4));
    v = _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), v);
    // delta swap of nibbles 1 and 2 of every 16 bits: d = (v >> 4 ^ v) & 0x00F0
    const __m512i d = _mm512_ternarylogic_epi64(_mm512_srli_epi64(v, 4), v,
                                                _mm512_set1_epi16(0x00F0), 0x28);
    v = _mm512_ternarylogic_epi64(v, d, _mm512_slli_epi64(d, 4), 0x96);
    v = _mm512_shuffle_epi8(v, _mm512_broadcast_i32x4(split));
    _mm512_storeu_si512(out, v);
}

// ---- 64-element groups: bit k of b decides element k --------------------------------
// Zero-masking gives +0.0 in dropped lanes whatever x was: a select, not a multiply.
FASTDROPOUT_INLINE void scale64_f32(std::uint64_t b, const float* x, float* y, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int j = 0; j < 4; ++j) {
        const auto k = static_cast<__mmask16>(b >> (16 * j));
        _mm512_storeu_ps(y + 16 * j, _mm512_maskz_mul_ps(k, _mm512_loadu_ps(x + 16 * j), vs));
    }
}
FASTDROPOUT_INLINE void select64_f32(std::uint64_t b, const float* x, float* y) {
    for (int j = 0; j < 4; ++j) {
        const auto k = static_cast<__mmask16>(b >> (16 * j));
        _mm512_storeu_ps(y + 16 * j, _mm512_maskz_mov_ps(k, _mm512_loadu_ps(x + 16 * j)));
    }
}
FASTDROPOUT_INLINE void scale64_f64(std::uint64_t b, const double* x, double* y, double s) {
    const __m512d vs = _mm512_set1_pd(s);
    for (int j = 0; j < 8; ++j) {
        const auto k = static_cast<__mmask8>(b >> (8 * j));
        _mm512_storeu_pd(y + 8 * j, _mm512_maskz_mul_pd(k, _mm512_loadu_pd(x + 8 * j), vs));
    }
}
FASTDROPOUT_INLINE void select64_f64(std::uint64_t b, const double* x, double* y) {
    for (int j = 0; j < 8; ++j) {
        const auto k = static_cast<__mmask8>(b >> (8 * j));
        _mm512_storeu_pd(y + 8 * j, _mm512_maskz_mov_pd(k, _mm512_loadu_pd(x + 8 * j)));
    }
}
#if defined(__AVX512FP16__)
// ---- float16 in hardware (the avx512fp16 level) ---------------------------------------
// vmulph/vaddph round the exact result once to nearest even, which is what NumPy's
// widen-operate-narrow gives: float32 carries more than 2 * 11 + 2 significant bits, so
// its first rounding never changes the float16 one (for +, -, *). A NaN operand comes
// out quieted with its payload, as the float32 round trip leaves it, and the FP16
// instructions ignore MXCSR's DAZ/FTZ: subnormals are exact. The exhaustive float16
// tests hold this level to the reference like every other.
#define FASTDROPOUT_VEC_F16_NATIVE 1
FASTDROPOUT_INLINE __m512h load_ph(const void* p) {
    return _mm512_castsi512_ph(_mm512_loadu_si512(p));
}
FASTDROPOUT_INLINE void store_ph(void* p, __m512h v) {
    _mm512_storeu_si512(p, _mm512_castph_si512(v));
}
FASTDROPOUT_INLINE void scale64_ph(std::uint64_t b, const void* x, void* y, _Float16 s) {
    const __m512h vs = _mm512_set1_ph(s);
    const auto* xb = static_cast<const std::uint16_t*>(x);
    auto* yb = static_cast<std::uint16_t*>(y);
    for (int j = 0; j < 2; ++j) {
        const auto k = static_cast<__mmask32>(b >> (32 * j));
        store_ph(yb + 32 * j, _mm512_maskz_mul_ph(k, load_ph(xb + 32 * j), vs));
    }
}
FASTDROPOUT_INLINE void scale64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float s) {
    scale64_ph(b, x, y, static_cast<_Float16>(s));  // s is a float16 value: exact
}
// 64 column sums advanced by 64 float16 values (see accumulate8 below).
FASTDROPOUT_INLINE void accumulate8(double* acc, __m512d v);
FASTDROPOUT_INLINE void accumulate64(double* acc, const _Float16* c) {
    for (int j = 0; j < 8; ++j) {
        accumulate8(acc + 8 * j, _mm512_cvtph_pd(_mm_castsi128_ph(
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 8 * j)))));
    }
}
#else
// Elements e .. e + 15 of x times s, +0.0 where b's bits e .. e + 15 are clear, narrowed.
FASTDROPOUT_INLINE __m256i scale16_f16(std::uint64_t b, const std::uint16_t* x, int e,
                                       __m512 vs) {
    const auto k = static_cast<__mmask16>(b >> e);
    const __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + e)));
    return _mm512_cvtps_ph(_mm512_maskz_mul_ps(k, v, vs),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// float16: widen (exact), multiply in float32 (exact for two halves), narrow once
// with round-to-nearest-even: NumPy's float16 product, bit for bit. Two narrowed
// halves are joined and stored as one 64-byte register: the streaming loops read
// their group back from an L1 buffer in 64-byte loads, and a load that spans two
// narrower stores cannot be forwarded from the store buffer (it waits for both to
// reach L1).
FASTDROPOUT_INLINE void scale64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float s) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int j = 0; j < 2; ++j) {
        const __m256i low = scale16_f16(b, x, 32 * j, vs);
        const __m256i high = scale16_f16(b, x, 32 * j + 16, vs);
        _mm512_storeu_si512(y + 32 * j, _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1));
    }
}
#endif
FASTDROPOUT_INLINE void select64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y) {
    for (int j = 0; j < 2; ++j) {
        const auto k = static_cast<__mmask32>(b >> (32 * j));
        _mm512_storeu_si512(y + 32 * j, _mm512_maskz_mov_epi16(k, _mm512_loadu_si512(x + 32 * j)));
    }
}

// float16 <-> float32 for 64 elements (fused kernels of docs/spec.md sections 9-10).
FASTDROPOUT_INLINE void widen64_f16(const std::uint16_t* h, float* f) {
    for (int j = 0; j < 4; ++j) {
        _mm512_storeu_ps(f + 16 * j, _mm512_cvtph_ps(_mm256_loadu_si256(
                                         reinterpret_cast<const __m256i*>(h + 16 * j))));
    }
}
FASTDROPOUT_INLINE void narrow64_f16(const float* f, std::uint16_t* h) {
    for (int j = 0; j < 4; ++j) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + 16 * j),
                            _mm512_cvtps_ph(_mm512_loadu_ps(f + 16 * j),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

// bfloat16 (docs/spec.md section 8), 32 elements per register: the even elements
// (low halves of the 32-bit lanes) widen with a shift, the odd ones with a mask, both
// multiply in float32 (exact for two bfloat16 values), round to nearest even in integer
// arithmetic -- not VCVTNEPS2BF16, which flushes subnormals -- and pack back with
// one ternlog; the keep bits then zero dropped elements 16 bits at a time (+0.0).
// No NaN fix-up is needed: a NaN product is the NaN operand quieted (x86 keeps the
// first NaN's payload) or the default NaN, and either has 16 zero low bits, so the
// rounding increment cannot carry into the kept half -- the result is the quiet NaN
// with x's sign and top payload bits, as the reference's rule gives.
FASTDROPOUT_INLINE __m512i bf16_round_hi(__m512i p) {  // rounded value in the high halves
    const __m512i half_minus_one = _mm512_set1_epi32(0x7fff);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(p, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(p, _mm512_add_epi32(half_minus_one, odd));
}
FASTDROPOUT_INLINE void scale64_bf16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                     float s) {
    const __m512 vs = _mm512_set1_ps(s);
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    for (int j = 0; j < 2; ++j) {
        const auto k = static_cast<__mmask32>(b >> (32 * j));
        const __m512i v = _mm512_loadu_si512(x + 32 * j);
        const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(v, high));
        const __m512i re = bf16_round_hi(_mm512_castps_si512(_mm512_mul_ps(even, vs)));
        const __m512i ro = bf16_round_hi(_mm512_castps_si512(_mm512_mul_ps(odd, vs)));
        // (re >> 16) | (ro & high): even results to the low halves, odd ones stay high
        const __m512i packed = _mm512_ternarylogic_epi32(_mm512_srli_epi32(re, 16), ro, high, 0xf8);
        _mm512_storeu_si512(y + 32 * j, _mm512_maskz_mov_epi16(k, packed));
    }
}

// bfloat16 <-> float32 for 64 elements (the fused kernels). Narrowing is
// bf16_round_bits (half.hpp) sixteen lanes at a time, NaN rule included: there the
// value may come from any float32 arithmetic, so the quiet-NaN select stays.
#define FASTDROPOUT_VEC_BF16_64 1
FASTDROPOUT_INLINE void widen64_bf16(const std::uint16_t* h, float* f) {
    for (int j = 0; j < 4; ++j) {
        const __m512i w = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 16 * j)));
        _mm512_storeu_si512(f + 16 * j, _mm512_slli_epi32(w, 16));
    }
}
FASTDROPOUT_INLINE void narrow64_bf16(const float* f, std::uint16_t* h) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x00400000);
    for (int j = 0; j < 4; ++j) {
        const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(f + 16 * j));
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        const __m512i r = _mm512_mask_mov_epi32(bf16_round_hi(u), nan, _mm512_or_si512(u, quiet));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + 16 * j),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
}
// narrow64_bf16 then widen64_bf16 in one pass: a bfloat16 is a float32 with the low
// 16 bits zero, so the round trip is the rounded (or quieted NaN) bits with the low
// half cleared, and no packing to 16 bits and back is needed.
#define FASTDROPOUT_VEC_BF16_ROUND64 1
FASTDROPOUT_INLINE void round64_bf16(float* f) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x00400000);
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    for (int j = 0; j < 4; ++j) {
        const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(f + 16 * j));
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        const __m512i r = _mm512_mask_mov_epi32(bf16_round_hi(u), nan, _mm512_or_si512(u, quiet));
        _mm512_storeu_ps(f + 16 * j, _mm512_castsi512_ps(_mm512_and_si512(r, high)));
    }
}

// The fused bfloat16 kernels (docs/spec.md sections 9 and 10) in registers, 32
// elements at a time in the even/odd halves of scale64_bf16: every value they round is
// a float32 sum or product of bfloat16 values (x, residual, bias, and the scale and
// alpha constants, which are bfloat16 too), so a NaN among them has 16 zero low bits
// and bf16_round_hi needs no NaN select (see scale64_bf16). The additions keep their
// first operand first with an asm statement: for x86 a NaN first source comes out as
// itself quieted, which is the "first NaN" rule of section 9, and the compiler would
// otherwise be free to swap the operands of _mm512_add_ps. (Without the asm, or with
// MSVC, fused_generic.hpp's float32 passes do the same with a NaN select.)
#if defined(__GNUC__)
#define FASTDROPOUT_VEC_BF16_FUSED64 1
FASTDROPOUT_INLINE __m512 add_first_nan_ps(__m512 a, __m512 b) {
    __m512 r;
    __asm__("vaddps %2, %1, %0" : "=v"(r) : "v"(a), "v"(b));
    return r;
}
// A 64-byte store of the fused kernels: a normal one, or (kStream, y 64-byte aligned)
// a non-temporal one, straight from the register.
template <bool kStream>
FASTDROPOUT_INLINE void put64(void* y, __m512i v) {
    if (kStream) {
        _mm512_stream_si512(static_cast<__m512i*>(y), v);
    } else {
        _mm512_storeu_si512(y, v);
    }
}
// A bfloat16-rounded float32 (low half cleared), from an exact-input value.
FASTDROPOUT_INLINE __m512 bf16_round_f32(__m512 v) {
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    return _mm512_castsi512_ps(_mm512_and_si512(bf16_round_hi(_mm512_castps_si512(v)), high));
}
// The 32 bfloat16 values of a register as float32: even elements, odd elements.
FASTDROPOUT_INLINE __m512 bf16_even(__m512i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
FASTDROPOUT_INLINE __m512 bf16_odd(__m512i v) {
    return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}
// Even and odd float32 results rounded and packed back into 32 bfloat16 values.
FASTDROPOUT_INLINE __m512i bf16_pack(__m512 even, __m512 odd) {
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    const __m512i re = bf16_round_hi(_mm512_castps_si512(even));
    const __m512i ro = bf16_round_hi(_mm512_castps_si512(odd));
    return _mm512_ternarylogic_epi32(_mm512_srli_epi32(re, 16), ro, high, 0xf8);
}
// y = residual + (keep ? (x + bias) * s : +0.0) for 64 elements, each operation rounded
// to bfloat16 (no "+ bias" when bias is null, no "* s" when !scaled).
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_bf16(std::uint64_t b, const std::uint16_t* x,
                                   const std::uint16_t* bias, const std::uint16_t* r,
                                   std::uint16_t* y, float s, bool scaled) {
    const __m512 vs = _mm512_set1_ps(s);
    // the keep bits of the even and of the odd elements, 16 of each per 32 elements
    const std::uint64_t keep_even = _pext_u64(b, 0x5555555555555555u);
    const std::uint64_t keep_odd = _pext_u64(b, 0xaaaaaaaaaaaaaaaau);
    for (int j = 0; j < 2; ++j) {
        const __m512i v = _mm512_loadu_si512(x + 32 * j);
        __m512 te = bf16_even(v);
        __m512 to = bf16_odd(v);
        if (bias != nullptr) {
            const __m512i bv = _mm512_loadu_si512(bias + 32 * j);
            te = bf16_round_f32(add_first_nan_ps(te, bf16_even(bv)));
            to = bf16_round_f32(add_first_nan_ps(to, bf16_odd(bv)));
        }
        const auto ke = static_cast<__mmask16>(keep_even >> (16 * j));
        const auto ko = static_cast<__mmask16>(keep_odd >> (16 * j));
        if (scaled) {
            te = bf16_round_f32(_mm512_maskz_mul_ps(ke, te, vs));
            to = bf16_round_f32(_mm512_maskz_mul_ps(ko, to, vs));
        } else {
            te = _mm512_maskz_mov_ps(ke, te);
            to = _mm512_maskz_mov_ps(ko, to);
        }
        const __m512i rv = _mm512_loadu_si512(r + 32 * j);
        const __m512 ye = add_first_nan_ps(bf16_even(rv), te);
        const __m512 yo = add_first_nan_ps(bf16_odd(rv), to);
        put64<kStream>(y + 32 * j, bf16_pack(ye, yo));
    }
}
// y = keep ? (x * A) + B : D for 64 elements, two bfloat16 roundings; d is D's bits.
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_bf16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                     float coef_a, float coef_b, std::uint16_t d) {
    const __m512 va = _mm512_set1_ps(coef_a);
    const __m512 vb = _mm512_set1_ps(coef_b);
    const __m512i vd = _mm512_set1_epi16(static_cast<short>(d));
    for (int j = 0; j < 2; ++j) {
        const __m512i v = _mm512_loadu_si512(x + 32 * j);
        const __m512 te = bf16_round_f32(_mm512_mul_ps(bf16_even(v), va));
        const __m512 to = bf16_round_f32(_mm512_mul_ps(bf16_odd(v), va));
        const __m512i packed = bf16_pack(_mm512_add_ps(te, vb), _mm512_add_ps(to, vb));
        const auto k = static_cast<__mmask32>(b >> (32 * j));
        put64<kStream>(y + 32 * j, _mm512_mask_mov_epi16(vd, k, packed));
    }
}
// The float32 forms of the same two kernels, 16 elements per register (each
// operation is a float32 one: no rounding step).
#define FASTDROPOUT_VEC_F32_FUSED64 1
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_f32(std::uint64_t b, const float* x, const float* bias,
                                  const float* r, float* y, float s, bool scaled) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int j = 0; j < 4; ++j) {
        __m512 t = _mm512_loadu_ps(x + 16 * j);
        if (bias != nullptr) {
            t = add_first_nan_ps(t, _mm512_loadu_ps(bias + 16 * j));
        }
        const auto k = static_cast<__mmask16>(b >> (16 * j));
        t = scaled ? _mm512_maskz_mul_ps(k, t, vs) : _mm512_maskz_mov_ps(k, t);
        put64<kStream>(y + 16 * j,
                       _mm512_castps_si512(add_first_nan_ps(_mm512_loadu_ps(r + 16 * j), t)));
    }
}
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_f32(std::uint64_t b, const float* x, float* y, float coef_a,
                                    float coef_b, float d) {
    const __m512 va = _mm512_set1_ps(coef_a);
    const __m512 vb = _mm512_set1_ps(coef_b);
    const __m512 vd = _mm512_set1_ps(d);
    for (int j = 0; j < 4; ++j) {
        const __m512 t = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), va), vb);
        const auto k = static_cast<__mmask16>(b >> (16 * j));
        put64<kStream>(y + 16 * j, _mm512_castps_si512(_mm512_mask_mov_ps(vd, k, t)));
    }
}

#if !defined(__AVX512FP16__)
// The same two kernels in float16, for the level without float16 arithmetic: 16
// elements per register, widened with vcvtph2ps (exact), and each operation's float32
// result rounded to float16 with vcvtps2ph (nearest even: float32 carries more than
// 2 * 11 + 2 bits, so this is NumPy's float16 operation) and widened back where
// another operation follows. A NaN comes out quieted with its top payload bits. These
// are the instructions fused_generic.hpp's buffered float16 path runs, on 64 values
// at a time in L1; here they stay in registers, and y can be streamed.
#define FASTDROPOUT_VEC_F16_FUSED64 1
FASTDROPOUT_INLINE __m512 f16_load16(const std::uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
FASTDROPOUT_INLINE __m256i f16_narrow16(__m512 v) {
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
FASTDROPOUT_INLINE __m512 f16_round_f32(__m512 v) { return _mm512_cvtph_ps(f16_narrow16(v)); }
FASTDROPOUT_INLINE __m512i f16_join(__m256i low, __m256i high) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
}
// y = residual + (keep ? (x + bias) * s : +0.0) for 64 elements, each operation rounded
// to float16 (no "+ bias" when bias is null, no "* s" when !scaled).
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_f16(std::uint64_t b, const std::uint16_t* x,
                                  const std::uint16_t* bias, const std::uint16_t* r,
                                  std::uint16_t* y, float s, bool scaled) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int j = 0; j < 2; ++j) {
        __m256i half[2];
        for (int h = 0; h < 2; ++h) {
            const int e = 32 * j + 16 * h;
            __m512 t = f16_load16(x + e);
            if (bias != nullptr) {
                t = f16_round_f32(add_first_nan_ps(t, f16_load16(bias + e)));
            }
            const auto k = static_cast<__mmask16>(b >> e);
            t = scaled ? f16_round_f32(_mm512_maskz_mul_ps(k, t, vs)) : _mm512_maskz_mov_ps(k, t);
            half[h] = f16_narrow16(add_first_nan_ps(f16_load16(r + e), t));
        }
        put64<kStream>(y + 32 * j, f16_join(half[0], half[1]));
    }
}
// y = keep ? (x * A) + B : D for 64 elements, two float16 roundings; d is D's bits.
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_f16(std::uint64_t b, const std::uint16_t* x, std::uint16_t* y,
                                    float coef_a, float coef_b, std::uint16_t d) {
    const __m512 va = _mm512_set1_ps(coef_a);
    const __m512 vb = _mm512_set1_ps(coef_b);
    const __m512i vd = _mm512_set1_epi16(static_cast<short>(d));
    for (int j = 0; j < 2; ++j) {
        __m256i half[2];
        for (int h = 0; h < 2; ++h) {
            const __m512 t = f16_round_f32(_mm512_mul_ps(f16_load16(x + 32 * j + 16 * h), va));
            half[h] = f16_narrow16(_mm512_add_ps(t, vb));
        }
        const auto k = static_cast<__mmask32>(b >> (32 * j));
        put64<kStream>(y + 32 * j, _mm512_mask_mov_epi16(vd, k, f16_join(half[0], half[1])));
    }
}
#endif

// grad_x of dropout_add_backward and its grad_bias sums (docs/spec.md section 9) in
// registers, for 64 columns over consecutive rows: SumRegs64 holds the 64 float64 sums,
// and each row's group is computed, stored (streamed when kStream, y 64-byte aligned)
// and added from the same registers, without reading y back. The sum is the first
// operand of every addition, so a NaN sum stays itself (x86 returns the first NaN
// source), which is add_keeping_nan's rule: every NaN a sum can hold is already quiet
// (an addition's result, or a value widened by vcvtps2pd, which quiets).
#define FASTDROPOUT_VEC_SUM_REGS64 1
FASTDROPOUT_INLINE __m512d add_first_nan_pd(__m512d a, __m512d b) {
    __m512d r;
    __asm__("vaddpd %2, %1, %0" : "=v"(r) : "v"(a), "v"(b));
    return r;
}
struct SumRegs64 {
    __m512d v[8];
    FASTDROPOUT_INLINE explicit SumRegs64(const double* acc) {
        for (int j = 0; j < 8; ++j) {
            v[j] = _mm512_loadu_pd(acc + 8 * j);
        }
    }
    FASTDROPOUT_INLINE void store(double* acc) const {
        for (int j = 0; j < 8; ++j) {
            _mm512_storeu_pd(acc + 8 * j, v[j]);
        }
    }
    // 64 float32 values (bfloat16's grad_x, widened) added, column k to sum k.
    FASTDROPOUT_INLINE void add(const float* c) {
        for (int j = 0; j < 8; ++j) {
            v[j] = add_first_nan_pd(v[j], _mm512_cvtps_pd(_mm256_loadu_ps(c + 8 * j)));
        }
    }
};
template <bool kStream>
FASTDROPOUT_INLINE void apply_sum64(std::uint64_t b, const float* x, float* y, float s,
                                    bool scaled, SumRegs64& sums) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int j = 0; j < 4; ++j) {
        const auto k = static_cast<__mmask16>(b >> (16 * j));
        const __m512 v = _mm512_loadu_ps(x + 16 * j);
        const __m512 t = scaled ? _mm512_maskz_mul_ps(k, v, vs) : _mm512_maskz_mov_ps(k, v);
        put64<kStream>(y + 16 * j, _mm512_castps_si512(t));
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1));
        sums.v[2 * j] = add_first_nan_pd(sums.v[2 * j], _mm512_cvtps_pd(_mm512_castps512_ps256(t)));
        sums.v[2 * j + 1] = add_first_nan_pd(sums.v[2 * j + 1], _mm512_cvtps_pd(hi));
    }
}
template <bool kStream>
FASTDROPOUT_INLINE void apply_sum64(std::uint64_t b, const double* x, double* y, double s,
                                    bool scaled, SumRegs64& sums) {
    const __m512d vs = _mm512_set1_pd(s);
    for (int j = 0; j < 8; ++j) {
        const auto k = static_cast<__mmask8>(b >> (8 * j));
        const __m512d v = _mm512_loadu_pd(x + 8 * j);
        const __m512d t = scaled ? _mm512_maskz_mul_pd(k, v, vs) : _mm512_maskz_mov_pd(k, v);
        put64<kStream>(y + 8 * j, _mm512_castpd_si512(t));
        sums.v[j] = add_first_nan_pd(sums.v[j], t);
    }
}
#if !defined(__AVX512FP16__)
// float16's grad_x and sums in registers, 32 elements per register: each half of 16
// is computed as scale64_f16 computes it (select64_f16's zeroing when !scaled),
// stored from the register, and its narrowed values widened again (vcvtph2ps, as
// widen64_f16 widens them) and added as float64, without the trips through L1 buffers
// of apply_group and a widening pass: the same instructions on the same values.
#define FASTDROPOUT_VEC_F16_SUM64 1
template <bool kStream>
FASTDROPOUT_INLINE void apply_sum64_f16(std::uint64_t b, const std::uint16_t* x,
                                        std::uint16_t* y, float s, bool scaled,
                                        SumRegs64& sums) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int j = 0; j < 2; ++j) {
        __m256i half[2];
        for (int h = 0; h < 2; ++h) {
            const int e = 32 * j + 16 * h;
            half[h] = scaled ? scale16_f16(b, x, e, vs)
                             : _mm256_maskz_mov_epi16(static_cast<__mmask16>(b >> e),
                                                      _mm256_loadu_si256(
                                                          reinterpret_cast<const __m256i*>(x + e)));
        }
        put64<kStream>(y + 32 * j, f16_join(half[0], half[1]));
        for (int h = 0; h < 2; ++h) {
            const __m512 w = _mm512_cvtph_ps(half[h]);
            const __m256 top = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w), 1));
            const int r = 4 * j + 2 * h;
            sums.v[r] = add_first_nan_pd(sums.v[r], _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
            sums.v[r + 1] = add_first_nan_pd(sums.v[r + 1], _mm512_cvtps_pd(top));
        }
    }
}
#endif
// The fused float64 kernels (docs/spec.md sections 9 and 10), as add64_f32 and
// alpha64_f32 above: 8 elements per register, every operation a float64 one.
#define FASTDROPOUT_VEC_F64_FUSED64 1
template <bool kStream = false>
FASTDROPOUT_INLINE void add64_f64(std::uint64_t b, const double* x, const double* bias,
                                  const double* r, double* y, double s, bool scaled) {
    const __m512d vs = _mm512_set1_pd(s);
    for (int j = 0; j < 8; ++j) {
        __m512d t = _mm512_loadu_pd(x + 8 * j);
        if (bias != nullptr) {
            t = add_first_nan_pd(t, _mm512_loadu_pd(bias + 8 * j));
        }
        const auto k = static_cast<__mmask8>(b >> (8 * j));
        t = scaled ? _mm512_maskz_mul_pd(k, t, vs) : _mm512_maskz_mov_pd(k, t);
        put64<kStream>(y + 8 * j,
                       _mm512_castpd_si512(add_first_nan_pd(_mm512_loadu_pd(r + 8 * j), t)));
    }
}
template <bool kStream = false>
FASTDROPOUT_INLINE void alpha64_f64(std::uint64_t b, const double* x, double* y, double coef_a,
                                    double coef_b, double d) {
    const __m512d va = _mm512_set1_pd(coef_a);
    const __m512d vb = _mm512_set1_pd(coef_b);
    const __m512d vd = _mm512_set1_pd(d);
    for (int j = 0; j < 8; ++j) {
        const __m512d t = _mm512_add_pd(_mm512_mul_pd(_mm512_loadu_pd(x + 8 * j), va), vb);
        const auto k = static_cast<__mmask8>(b >> (8 * j));
        put64<kStream>(y + 8 * j, _mm512_castpd_si512(_mm512_mask_mov_pd(vd, k, t)));
    }
}
#endif

// 64 column sums advanced by one row (the grad_bias pass, docs/spec.md section 9): a
// sum that is NaN keeps its NaN; any other sum adds the widened value.
#define FASTDROPOUT_VEC_ACCUMULATE64 1
FASTDROPOUT_INLINE void accumulate8(double* acc, __m512d v) {
    const __m512d a = _mm512_loadu_pd(acc);
    const __mmask8 nan = _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q);
    _mm512_storeu_pd(acc, _mm512_mask_mov_pd(_mm512_add_pd(a, v), nan, a));
}
FASTDROPOUT_INLINE void accumulate64(double* acc, const float* c) {
    for (int j = 0; j < 8; ++j) {
        accumulate8(acc + 8 * j, _mm512_cvtps_pd(_mm256_loadu_ps(c + 8 * j)));
    }
}
FASTDROPOUT_INLINE void accumulate64(double* acc, const double* c) {
    for (int j = 0; j < 8; ++j) {
        accumulate8(acc + 8 * j, _mm512_loadu_pd(c + 8 * j));
    }
}

}  // namespace
}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout
