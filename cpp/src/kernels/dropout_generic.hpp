// THE dropout kernel, written once against the small vocabulary of vec_<isa>.hpp
// (U32, kLanes, kSets, set1, load, store, iota, add, xor2, xor3, mulhilo, keep_bits
// or a fused last_round_keep_bits, and the 64-element scale64_* / select64_*
// operations). kernels/<isa>.cpp defines
// FASTDROPOUT_ISA, includes its vec header and then this file, stamping the kernel
// out in namespace fastdropout::<isa>. Everything but kernel_table() has internal
// linkage (anonymous namespace), so no two ISAs can ever share a symbol.
//
// Only <cstddef>, <cstdint>, <cstring> and intrinsics are used here: no std::
// templates, whose instantiations would be emitted as weak symbols (STYLE.md).

#ifndef FASTDROPOUT_ISA
#error "define FASTDROPOUT_ISA before including dropout_generic.hpp"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#if !defined(__GNUC__) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>  // _mm_prefetch (MSVC)
#endif

#include "fastdropout/kernel_table.hpp"
#include "fastdropout/philox.hpp"
#include "half.hpp"

#if defined(_MSC_VER) && !defined(__clang__)
#define FASTDROPOUT_NOINLINE __declspec(noinline)
#else
#define FASTDROPOUT_NOINLINE __attribute__((noinline))
#endif

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// Block numbers of a 2**64-position stream live in [0, 2**62): position j uses block
// j >> 2 (docs/spec.md section 2), so the block counter wraps at 2**62.
constexpr std::uint64_t kStreamBlockMask = (std::uint64_t{1} << 62) - 1;
constexpr std::uint64_t kAllBlocksMask = ~std::uint64_t{0};

struct RoundKeys {
    std::uint32_t k0[kPhiloxRounds];
    std::uint32_t k1[kPhiloxRounds];
};

FASTDROPOUT_INLINE RoundKeys make_round_keys(std::uint32_t k0, std::uint32_t k1) {
    RoundKeys rk{};
    for (int r = 0; r < kPhiloxRounds; ++r) {  // round r uses key + r * Weyl increment
        rk.k0[r] = k0;
        rk.k1[r] = k1;
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
    }
    return rk;
}

// The round keys broadcast once per stream: the rounds then read them as memory
// operands (a load each) instead of broadcasting a scalar on every use, which costs
// a shuffle-port uop on x86, the port the rounds are bound by.
struct RoundKeyVecs {
    U32 k0[kPhiloxRounds];
    U32 k1[kPhiloxRounds];
};

FASTDROPOUT_INLINE void broadcast_keys(const RoundKeys& rk, RoundKeyVecs& kv) {
    for (int r = 0; r < kPhiloxRounds; ++r) {
        kv.k0[r] = set1(rk.k0[r]);
        kv.k1[r] = set1(rk.k1[r]);
    }
}

// Philox rounds `first`..9 on kSets independent vectors of kLanes blocks each. The
// sets are interleaved round by round: one set alone is bound by the multiply
// latency of the round's dependency chain; kSets of them keep the multiplier busy.
template <std::size_t N>
FASTDROPOUT_INLINE void philox_rounds(U32 (&c)[N][4], const RoundKeyVecs& kv, int first,
                                      int end = kPhiloxRounds) {
    const U32 m0 = set1(kPhiloxM0);
    const U32 m1 = set1(kPhiloxM1);
    for (int r = first; r < end; ++r) {
        const U32 k0 = kv.k0[r];
        const U32 k1 = kv.k1[r];
        for (std::size_t s = 0; s < N; ++s) {
            U32 hi0, lo0, hi1, lo1;
            mulhilo(c[s][0], m0, hi0, lo0);
            mulhilo(c[s][2], m1, hi1, lo1);
            c[s][0] = xor3(hi1, c[s][1], k0);
            c[s][2] = xor3(hi0, c[s][3], k1);
            c[s][1] = lo1;
            c[s][3] = lo0;
        }
    }
}

template <std::size_t N>
FASTDROPOUT_INLINE void philox10(U32 (&c)[N][4], const RoundKeyVecs& kv) {
    philox_rounds(c, kv, 0);
}

// The keep bits of one vector of blocks after Philox round 8: round 9, then the
// threshold. An ISA can fuse the two (FASTDROPOUT_VEC_LAST_ROUND_KEEP_BITS, see
// vec_avx512.hpp); this is the plain composition.
#if !defined(FASTDROPOUT_VEC_LAST_ROUND_KEEP_BITS)
FASTDROPOUT_INLINE std::uint64_t last_round_keep_bits(const U32 (&c)[4], U32 k0, U32 k1, U32 t) {
    U32 hi0, lo0, hi1, lo1;
    mulhilo(c[0], set1(kPhiloxM0), hi0, lo0);
    mulhilo(c[2], set1(kPhiloxM1), hi1, lo1);
    return keep_bits(xor3(hi1, c[1], k0), lo1, xor3(hi0, c[3], k1), lo0, t);
}
#endif

// Keep bits of N vectors of blocks after round 8: vector s sets the 4*kLanes bits
// from bit `bit` + 4*kLanes*s of `words`.
template <std::size_t N>
FASTDROPOUT_INLINE void finish_keep_bits(const U32 (&c)[N][4], const RoundKeyVecs& kv, U32 t,
                                         std::uint64_t* words, int bit) {
    for (std::size_t s = 0; s < N; ++s) {
        const int b = bit + 4 * kLanes * static_cast<int>(s);
        words[b / 64] |=
            last_round_keep_bits(c[s], kv.k0[kPhiloxRounds - 1], kv.k1[kPhiloxRounds - 1], t)
            << (b % 64);
    }
}

// Round 1's constants for one high counter word (see philox10_uniform_hi).
struct UniformHi {
    std::uint64_t hi = ~std::uint64_t{0};  // no high word yet
    U32 c2_1{};
    U32 c3_1{};
};

FASTDROPOUT_INLINE void set_uniform_hi(UniformHi& u, std::uint32_t hi, const RoundKeys& rk) {
    // round 0 gives c0 = hi ^ k0[0] and c1 = 0 in every lane; round 1 multiplies it:
    const std::uint64_t a = std::uint64_t{hi ^ rk.k0[0]} * kPhiloxM0;
    u.hi = hi;
    u.c2_1 = set1(static_cast<std::uint32_t>(a >> 32) ^ rk.k1[1]);
    u.c3_1 = set1(static_cast<std::uint32_t>(a));
}

// Philox4x32-10 of the stream's counters (lo, hi, 0, 0) when the high word `hi` is
// the same in every lane of every set (all but one fill in 2**32 / kFillBlocks).
// Then the first two rounds are cheaper: with c2 = c3 = 0, round 0 multiplies one
// word, and round 1's second product (hi ^ k0) * M0 is one scalar for all lanes.
// Rounds 0-8 of philox10 (round 9 is fused with the threshold in
// finish_keep_bits); on entry c[s][0] holds the low counter words.
template <std::size_t N>
FASTDROPOUT_INLINE void philox10_uniform_hi(U32 (&c)[N][4], const UniformHi& u,
                                            const RoundKeyVecs& kv) {
    const U32 m0 = set1(kPhiloxM0);
    const U32 m1 = set1(kPhiloxM1);
    for (std::size_t s = 0; s < N; ++s) {
        U32 hi0, lo0, hi1, lo1;
        mulhilo(c[s][0], m0, hi0, lo0);      // round 0: c3 = lo0
        const U32 c2 = xor2(hi0, kv.k1[0]);  //          c2 = hi0 ^ 0 ^ k1
        mulhilo(c2, m1, hi1, lo1);           // round 1
        c[s][0] = xor2(hi1, kv.k0[1]);       //          c0 = hi1 ^ c1 (= 0) ^ k0
        c[s][1] = lo1;
        c[s][2] = xor2(lo0, u.c2_1);         //          c2 = hi(a) ^ c3 ^ k1
        c[s][3] = u.c3_1;                    //          c3 = lo(a)
    }
    philox_rounds(c, kv, 2, kPhiloxRounds - 1);  // round 9 is left to finish_keep_bits
}

// Counter words 0 and 1 of blocks first, first+1, ..., first+kLanes-1 (mod wrap+1).
// The carry from word 0 into word 1 is rare (once every 2**32 blocks), so the common
// case is one broadcast and one add; the rare case builds the lanes one by one.
FASTDROPOUT_INLINE void counters(std::uint64_t first, std::uint64_t wrap, U32& c0, U32& c1) {
    const auto lo = static_cast<std::uint32_t>(first);
    if (lo <= 0xFFFFFFFFu - static_cast<std::uint32_t>(kLanes - 1)) {
        c0 = add(set1(lo), iota());
        c1 = set1(static_cast<std::uint32_t>(first >> 32));
        return;
    }
    std::uint32_t a0[kLanes];
    std::uint32_t a1[kLanes];
    for (int l = 0; l < kLanes; ++l) {
        const std::uint64_t b = (first + static_cast<std::uint64_t>(l)) & wrap;
        a0[l] = static_cast<std::uint32_t>(b);
        a1[l] = static_cast<std::uint32_t>(b >> 32);
    }
    c0 = load(a0);
    c1 = load(a1);
}

// One Philox pass makes kSets * kLanes blocks; a refill makes at least 16 blocks
// (64 stream positions, one 64-bit word of keep bits).
constexpr int kPassBlocks = kLanes * kSets;
constexpr int kFillBlocks = kPassBlocks > 16 ? kPassBlocks : 16;
constexpr int kFillWords = kFillBlocks / 16;
static_assert(kFillBlocks % kPassBlocks == 0 && kFillBlocks % 16 == 0 && 64 % (4 * kLanes) == 0,
              "kLanes and kSets must be powers of two");

// The keep bits of consecutive mask elements, 64 at a time, starting at element
// `index`. Element i sits at stream position offset + i; when that is not a multiple
// of 4 the element groups straddle Philox blocks, so each group is stitched from two
// block-aligned groups (the later one is carried to the next call).
class BitStream {
  public:
    FASTDROPOUT_INLINE BitStream(const StreamArgs& s, std::uint64_t index)
        : rk_(make_round_keys(s.k0, s.k1)) {
        broadcast_keys(rk_, kv_);
        const std::uint64_t pos = s.offset + index;  // wraps mod 2**64, as docs/spec.md section 2 says
        shift_ = static_cast<unsigned>(pos & 3u);
        block_ = pos >> 2;
        if (s.threshold == 0) {
            constant_ = true;  // p == 0: every word is >= 0, all kept
            bits_ = ~std::uint64_t{0};
        } else if (s.threshold > 0xFFFFFFFFu) {
            constant_ = true;  // threshold 2**32: no word reaches it, all dropped
            bits_ = 0;
        } else {
            constant_ = false;
            t_ = set1(static_cast<std::uint32_t>(s.threshold));
            if (shift_ != 0) {
                bits_ = aligned_next();
            }
        }
    }

    FASTDROPOUT_INLINE std::uint64_t next() {
        if (constant_) {
            return bits_;
        }
        if (shift_ == 0) {
            return aligned_next();
        }
        const std::uint64_t later = aligned_next();
        const std::uint64_t out = (bits_ >> shift_) | (later << (64 - shift_));
        bits_ = later;
        return out;
    }

  private:
    // Keep bits of the next 64 block-aligned stream positions.
    FASTDROPOUT_INLINE std::uint64_t aligned_next() {
        if (used_ == kFillWords) {
            fill();
            used_ = 0;
        }
        return words_[used_++];
    }

    // kFillBlocks blocks from block_: bit q of the fill is stream position
    // 4 * block_ + q. Out of line on purpose: inlined into a kernel whose loop keeps
    // its own vectors live (the fused kernels: bias, coefficients, 64-element
    // temporaries), the Philox rounds lost their registers and spilled (805 register
    // moves in float16 alpha_forward_kernel on avx512fp16). As a call once per fill
    // (128 stream positions on AVX-512) they get all 32 registers: float16
    // alpha_dropout went from 1.62x to 1.44x gen_bits and dropout_add from 1.80x to
    // 1.57x (2**24, one thread), the plain forward pass unchanged within the noise.
    FASTDROPOUT_NOINLINE void fill() {
        for (int w = 0; w < kFillWords; ++w) {
            words_[w] = 0;
        }
        const auto lo = static_cast<std::uint32_t>(block_);
        // No carry from the low counter word within this fill (so no wrap at 2**62
        // either): one high word for every block, and counters by adding constants.
        const bool uniform = lo <= 0xFFFFFFFFu - static_cast<std::uint32_t>(kFillBlocks - 1);
        const auto hi = static_cast<std::uint32_t>(block_ >> 32);
        if (uniform && uhi_.hi != hi) {
            set_uniform_hi(uhi_, hi, rk_);
        }
        const U32 base = add(set1(lo), iota());
        const U32 zero = set1(0);
        for (int pass = 0; pass < kFillBlocks / kPassBlocks; ++pass) {
            U32 c[kSets][4];
            if (uniform) {
                for (int s = 0; s < kSets; ++s) {
                    const int first = pass * kPassBlocks + s * kLanes;
                    c[s][0] = add(base, set1(static_cast<std::uint32_t>(first)));
                }
                philox10_uniform_hi(c, uhi_, kv_);
            } else {
                for (int s = 0; s < kSets; ++s) {
                    const int first = pass * kPassBlocks + s * kLanes;
                    counters((block_ + static_cast<std::uint64_t>(first)) & kStreamBlockMask,
                             kStreamBlockMask, c[s][0], c[s][1]);
                    c[s][2] = zero;
                    c[s][3] = zero;
                }
                philox_rounds(c, kv_, 0, kPhiloxRounds - 1);
            }
            finish_keep_bits(c, kv_, t_, words_, 4 * pass * kPassBlocks);
        }
        block_ = (block_ + static_cast<std::uint64_t>(kFillBlocks)) & kStreamBlockMask;
    }

    RoundKeys rk_;
    RoundKeyVecs kv_;
    UniformHi uhi_;
    U32 t_{};
    std::uint64_t block_ = 0;
    std::uint64_t words_[kFillWords] = {};
    int used_ = kFillWords;
    std::uint64_t bits_ = 0;
    unsigned shift_ = 0;
    bool constant_ = false;
};

FASTDROPOUT_INLINE std::uint64_t low_bits(std::size_t count) {
    return count >= 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << count) - 1);
}

// Mask bytes are little-endian bit order (docs/spec.md section 5): byte k holds bits
// 8k .. 8k+7 whatever the host's endianness. A whole word on a little-endian host is
// one 8-byte store; the compiler merges the byte loop only when nbytes is a constant,
// and the streaming forward pass's count is not (it was 8 byte stores, shifts and
// branches per 64 elements there).
FASTDROPOUT_INLINE void store_bits(std::uint8_t* p, std::uint64_t b, std::size_t nbytes) {
#if (defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) || \
    defined(_M_X64) || defined(_M_IX86) || defined(_M_ARM64)
    if (nbytes == 8) {
        std::memcpy(p, &b, 8);
        return;
    }
#endif
    for (std::size_t k = 0; k < nbytes; ++k) {
        p[k] = static_cast<std::uint8_t>(b >> (8 * k));
    }
}

// 64 bits starting at bit position `pos` of `bits`; reads only bytes that hold at
// least one of the `count` (<= 64) requested bits.
FASTDROPOUT_INLINE std::uint64_t load_bits(const std::uint8_t* bits, std::uint64_t pos,
                                           std::size_t count) {
    const std::uint8_t* p = bits + (pos >> 3);
    const auto sh = static_cast<unsigned>(pos & 7u);
    const std::size_t nbytes = (sh + count + 7) / 8;  // 1 .. 9
    std::uint64_t v = 0;
    const std::size_t first = nbytes < 8 ? nbytes : 8;
    for (std::size_t k = 0; k < first; ++k) {
        v |= static_cast<std::uint64_t>(p[k]) << (8 * k);
    }
    v >>= sh;
    if (nbytes == 9) {
        v |= static_cast<std::uint64_t>(p[8]) << (64 - sh);
    }
    return v & low_bits(count);
}

// ---- element types ------------------------------------------------------------------
struct OpsF32 {
    using T = float;
    using S = float;
    static FASTDROPOUT_INLINE S scale_of(double s) { return static_cast<float>(s); }
    static FASTDROPOUT_INLINE T mul1(T x, S s) { return x * s; }
    static FASTDROPOUT_INLINE void scale64(std::uint64_t b, const T* x, T* y, S s) {
        scale64_f32(b, x, y, s);
    }
    static FASTDROPOUT_INLINE void select64(std::uint64_t b, const T* x, T* y) {
        select64_f32(b, x, y);
    }
};
struct OpsF64 {
    using T = double;
    using S = double;
    static FASTDROPOUT_INLINE S scale_of(double s) { return s; }
    static FASTDROPOUT_INLINE T mul1(T x, S s) { return x * s; }
    static FASTDROPOUT_INLINE void scale64(std::uint64_t b, const T* x, T* y, S s) {
        scale64_f64(b, x, y, s);
    }
    static FASTDROPOUT_INLINE void select64(std::uint64_t b, const T* x, T* y) {
        select64_f64(b, x, y);
    }
};
struct OpsF16 {  // float16 travels as its bit pattern
    using T = std::uint16_t;
    using S = float;  // a float16 scale is exactly a float
    static FASTDROPOUT_INLINE S scale_of(double s) { return static_cast<float>(s); }
    static FASTDROPOUT_INLINE T mul1(T x, S s) {
        return float_to_half_bits(half_bits_to_float(x) * s);
    }
    static FASTDROPOUT_INLINE void scale64(std::uint64_t b, const T* x, T* y, S s) {
        scale64_f16(b, x, y, s);
    }
    static FASTDROPOUT_INLINE void select64(std::uint64_t b, const T* x, T* y) {
        select64_f16(b, x, y);
    }
};

struct OpsBF16 {  // bfloat16 travels as its bit pattern (docs/spec.md section 8)
    using T = std::uint16_t;
    using S = float;  // a bfloat16 scale is exactly a float
    static FASTDROPOUT_INLINE S scale_of(double s) { return static_cast<float>(s); }
    static FASTDROPOUT_INLINE T mul1(T x, S s) {
        return float_to_bf16_bits(bf16_bits_to_float(x) * s);
    }
    static FASTDROPOUT_INLINE void scale64(std::uint64_t b, const T* x, T* y, S s) {
        scale64_bf16(b, x, y, s);
    }
    static FASTDROPOUT_INLINE void select64(std::uint64_t b, const T* x, T* y) {
        select64_f16(b, x, y);  // a select of 16-bit patterns, whatever they encode
    }
};

template <class Ops>
FASTDROPOUT_INLINE void apply_group(std::uint64_t b, const typename Ops::T* x, typename Ops::T* y,
                                    typename Ops::S s, bool scaled) {
    if (scaled) {
        Ops::scale64(b, x, y, s);
    } else {
        Ops::select64(b, x, y);
    }
}

// Fewer than 64 elements. Dropped elements get all-zero bits (+0.0). A few go one at
// a time; more go through the group kernel on a zero-padded copy in L1, which gives
// the same bits for less: one at a time, a float16 product without AVX512-FP16
// converts in software. (Streamed spatial runs have a head and a tail each when the
// output is not line-aligned, as NumPy's large arrays are not.)
constexpr std::size_t kTailOneByOne = 8;

template <class Ops>
FASTDROPOUT_INLINE void apply_tail(std::uint64_t b, const typename Ops::T* x, typename Ops::T* y,
                                   std::size_t count, typename Ops::S s, bool scaled) {
    using T = typename Ops::T;
    if (count < kTailOneByOne) {
        for (std::size_t k = 0; k < count; ++k) {
            const T v = x[k];
            y[k] = ((b >> k) & 1u) ? (scaled ? Ops::mul1(v, s) : v) : T(0);
        }
        return;
    }
    alignas(64) T in[64] = {};
    alignas(64) T out[64];
    std::memcpy(in, x, count * sizeof(T));
    apply_group<Ops>(b, in, out, s, scaled);
    std::memcpy(y, out, count * sizeof(T));
}

// ---- kernels --------------------------------------------------------------------------
// The fused forward pass spends most of its issue slots on Philox, so the hardware
// prefetchers see the x and y streams advance slowly and run too few lines ahead;
// asking for the lines kPrefetchBytes ahead keeps more memory traffic in flight
// (measured on Cascade Lake, 2 threads, 2**24 float32: about 10% faster at 4 KiB).
// Applying a stored mask gains too when the arrays live in the last-level cache
// (2**24 float32 / float16, 1-2 threads on a 2-core Xeon guest: from 1.03-1.28x a
// copy to 0.93-1.09x, bench_kernels, README Performance), and beyond it, where y is
// written with streaming stores and only x is prefetched (2**28 float32, 1-2
// threads: from 1.04-1.16x a copy to 0.98-1.08x).
// On the Xeon guest, beyond its L3, the streaming forward pass was 1.9x its bound
// without prefetching and 1.6-1.7x with it. dropout_add's streaming loop reads two
// input streams; on a Zen 4 guest it ran faster with the hardware prefetchers alone
// (FusedArgs::prefetch_pair, off on AMD CPUs: parallel.hpp), where the one-input loops
// measured the same or better with prefetching (forward 0.96-1.04x, alpha_dropout
// 1.02-1.09x, applying a stored mask 1.10-1.19x the time without it).
constexpr std::size_t kPrefetchBytes = 4096;

FASTDROPOUT_INLINE void prefetch_line(std::uintptr_t address, bool for_write) {
    const auto* p = reinterpret_cast<const char*>(address);
#if defined(__GNUC__) || defined(__clang__)
    if (for_write) {
        __builtin_prefetch(p, 1, 3);
    } else {
        __builtin_prefetch(p, 0, 3);
    }
#elif defined(_M_X64) || defined(_M_IX86)
    (void)for_write;
    _mm_prefetch(p, _MM_HINT_T0);
#else
    (void)p;
    (void)for_write;
#endif
}

template <class T>
FASTDROPOUT_INLINE void prefetch_ahead(const T* x, T* y, std::size_t i, std::size_t end) {
    constexpr std::size_t ahead = kPrefetchBytes / sizeof(T);
    if (i + ahead + 64 > end) {
        return;  // near the end of the chunk: those lines are already on their way
    }
    const auto px = reinterpret_cast<std::uintptr_t>(x + i) + kPrefetchBytes;
    const auto py = reinterpret_cast<std::uintptr_t>(y + i) + kPrefetchBytes;
    for (std::size_t l = 0; l < 64 * sizeof(T); l += 64) {  // 64 elements, 64-byte lines
        prefetch_line(px + l, false);
        prefetch_line(py + l, true);
    }
}

#if defined(FASTDROPOUT_VEC_STREAM)
// ---- streaming stores (large outputs) ---------------------------------------------------
// parallel.cpp sets stream_stores when the output is too large to stay in the last-level
// cache. Then y is written with streaming stores (vec_x86_common.hpp), which need
// 64-byte aligned lines: the head of the chunk up to the first aligned element of y
// goes element by element, the body in 64-element groups computed into an aligned
// buffer in L1 and streamed out, the tail element by element. The keep bits stay
// those of the same elements: the forward pass stitches each group's 64 bits from two
// consecutive words of the stream (whose mask bytes are written as they come, on
// their own 64-element grid); applying a stored mask reads them at any bit position.

// Elements of y before the first 64-byte aligned one (0 if y is not aligned to its
// element size, which the core refuses anyway).
template <class T>
FASTDROPOUT_INLINE std::size_t stream_head(const T* y) {
    const auto address = reinterpret_cast<std::uintptr_t>(y);
    return (address % sizeof(T)) != 0 ? 0 : ((64 - address % 64) % 64) / sizeof(T);
}

template <class Ops>
FASTDROPOUT_INLINE void apply_group_stream(std::uint64_t b, const typename Ops::T* x,
                                           typename Ops::T* y, typename Ops::S s,
                                           bool scaled) {
    alignas(64) typename Ops::T buffer[64];
    apply_group<Ops>(b, x, buffer, s, scaled);
    stream_store(y, buffer, sizeof buffer);
}

// The stream's words on the 64-element grid from `begin`, each one's mask bytes
// stored (if wanted) as it is taken. Stream: anything whose next() gives the next 64
// keep bits (BitStream here, window_generic.hpp's RunStream for a window's runs).
// The mask bit of element i is bit i - bit0 of bits.
template <class Stream>
class GridWords {
  public:
    FASTDROPOUT_INLINE GridWords(Stream& s, std::uint8_t* bits, std::size_t begin,
                                 std::size_t end, std::size_t bit0 = 0)
        : s_(s), bits_(bits), next_(begin), end_(end), bit0_(bit0) {}
    FASTDROPOUT_INLINE bool more() const { return next_ < end_; }
    FASTDROPOUT_INLINE std::uint64_t take() {
        const std::size_t rem = end_ - next_;
        std::uint64_t w = s_.next();
        if (rem < 64) {
            w &= low_bits(rem);  // unused high bits of the last mask byte are 0
        }
        if (bits_ != nullptr) {
            store_bits(bits_ + (next_ - bit0_) / 8, w, rem < 64 ? (rem + 7) / 8 : 8);
        }
        next_ += 64;
        return w;
    }

  private:
    Stream& s_;
    std::uint8_t* bits_;
    std::size_t next_;
    std::size_t end_;
    std::size_t bit0_;
};

// The keep bits of a streaming loop's groups, which start h elements after the grid
// (h: the head before y's first 64-byte aligned element): each group's 64 bits are
// stitched from two consecutive grid words. Call head(), then group() for each whole
// group in order, then tail(rem) for the last rem < 64 elements.
template <class Stream>
class ShiftedWords {
  public:
    FASTDROPOUT_INLINE ShiftedWords(GridWords<Stream>& grid, std::size_t h)
        : grid_(grid), h_(h), cur_(grid.take()) {}
    FASTDROPOUT_INLINE std::uint64_t head() const { return cur_ & low_bits(h_); }
    FASTDROPOUT_INLINE std::uint64_t group() {
        // cur_ is the grid word of the group's first 64 - h elements
        if (h_ == 0) {
            const std::uint64_t b = cur_;
            cur_ = grid_.more() ? grid_.take() : 0;
            return b;
        }
        const std::uint64_t later = grid_.take();
        const std::uint64_t b = (cur_ >> h_) | (later << (64 - h_));
        cur_ = later;
        return b;
    }
    FASTDROPOUT_INLINE std::uint64_t tail(std::size_t rem) {
        std::uint64_t b = cur_ >> h_;
        if (h_ != 0 && rem > 64 - h_) {
            b |= grid_.take() << (64 - h_);
        }
        return b & low_bits(rem);
    }

  private:
    GridWords<Stream>& grid_;
    std::size_t h_;
    std::uint64_t cur_;
};

// Elements begin..end-1 of a.x / a.y with streaming stores, their keep bits from
// `stream` (positioned at element begin), mask bits (if a.bits) at bit `begin`.
template <class Ops, class Stream>
FASTDROPOUT_INLINE void forward_stream_body(const ForwardArgs& a, Stream& stream,
                                            std::size_t begin, std::size_t end) {
    using T = typename Ops::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
    GridWords<Stream> grid(stream, a.bits, begin, end);
    const std::size_t ahead_end = a.prefetch_end > end ? a.prefetch_end : end;
    const std::size_t h = stream_head(y + begin) < end - begin ? stream_head(y + begin)
                                                                : end - begin;
    ShiftedWords<Stream> words(grid, h);
    apply_tail<Ops>(words.head(), x + begin, y + begin, h, s, a.scaled);
    std::size_t i = begin + h;
    for (; i + 64 <= end; i += 64) {
        if (i + kPrefetchBytes / sizeof(T) + 64 <= ahead_end) {  // x only: y is not read
            const auto px = reinterpret_cast<std::uintptr_t>(x + i) + kPrefetchBytes;
            for (std::size_t l = 0; l < 64 * sizeof(T); l += 64) {
                prefetch_line(px + l, false);
            }
        }
        apply_group_stream<Ops>(words.group(), x + i, y + i, s, a.scaled);
    }
    if (i < end) {
        apply_tail<Ops>(words.tail(end - i), x + i, y + i, end - i, s, a.scaled);
    }
    if (a.fence) {
        stream_fence();
    }
}

template <class Ops>
void forward_stream_kernel(const ForwardArgs& a, std::size_t begin, std::size_t end) {
    BitStream stream(a.stream, begin);
    forward_stream_body<Ops>(a, stream, begin, end);
}

template <class Ops>
void apply_stream_kernel(const ApplyArgs& a, std::size_t begin, std::size_t end) {
    using T = typename Ops::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
    auto bits_at = [&a](std::size_t i, std::size_t count) {
        return a.all_kept ? low_bits(count) : load_bits(a.bits, a.bit0 + i, count);
    };
    const std::size_t h = stream_head(y + begin) < end - begin ? stream_head(y + begin)
                                                                : end - begin;
    if (h != 0) {
        apply_tail<Ops>(bits_at(begin, h), x + begin, y + begin, h, s, a.scaled);
    }
    std::size_t i = begin + h;
    const std::size_t ahead_end = a.prefetch_end > end ? a.prefetch_end : end;
    for (; i + 64 <= end; i += 64) {
        if (i + kPrefetchBytes / sizeof(T) + 64 <= ahead_end) {  // x only: y is not read
            const auto px = reinterpret_cast<std::uintptr_t>(x + i) + kPrefetchBytes;
            for (std::size_t l = 0; l < 64 * sizeof(T); l += 64) {
                prefetch_line(px + l, false);
            }
        }
        apply_group_stream<Ops>(bits_at(i, 64), x + i, y + i, s, a.scaled);
    }
    if (i < end) {
        apply_tail<Ops>(bits_at(i, end - i), x + i, y + i, end - i, s, a.scaled);
    }
    if (a.fence) {
        stream_fence();
    }
}
#endif  // FASTDROPOUT_VEC_STREAM

// docs/spec.md sections 2-3, fused: one pass reads x, writes y and (optionally) the mask bits.
template <class Ops>
void forward_kernel(const ForwardArgs& a, std::size_t begin, std::size_t end) {
    using T = typename Ops::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
#if defined(FASTDROPOUT_VEC_STREAM)
    if (a.stream_stores) {
        forward_stream_kernel<Ops>(a, begin, end);
        return;
    }
#endif
    BitStream stream(a.stream, begin);
    const std::size_t ahead_end = a.prefetch_end > end ? a.prefetch_end : end;
    std::size_t i = begin;
    for (; i + 64 <= end; i += 64) {
        prefetch_ahead(x, y, i, ahead_end);
        const std::uint64_t b = stream.next();
        if (a.bits != nullptr) {
            store_bits(a.bits + i / 8, b, 8);
        }
        apply_group<Ops>(b, x + i, y + i, s, a.scaled);
    }
    if (i < end) {
        const std::size_t rem = end - i;
        const std::uint64_t b = stream.next() & low_bits(rem);
        if (a.bits != nullptr) {
            store_bits(a.bits + i / 8, b, (rem + 7) / 8);  // unused high bits are 0
        }
        apply_tail<Ops>(b, x + i, y + i, rem, s, a.scaled);
    }
}

void gen_bits_kernel(const StreamArgs& sa, std::uint8_t* bits, std::size_t begin,
                     std::size_t end) {
    BitStream stream(sa, begin);
    std::size_t i = begin;
    for (; i + 64 <= end; i += 64) {
        store_bits(bits + i / 8, stream.next(), 8);
    }
    if (i < end) {
        const std::size_t rem = end - i;
        store_bits(bits + i / 8, stream.next() & low_bits(rem), (rem + 7) / 8);
    }
}

// Stored mask (or all-kept) applied to x; bit0 may be any bit position.
template <class Ops>
void apply_kernel(const ApplyArgs& a, std::size_t begin, std::size_t end) {
    using T = typename Ops::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
#if defined(FASTDROPOUT_VEC_STREAM)
    if (a.stream_stores) {
        apply_stream_kernel<Ops>(a, begin, end);
        return;
    }
#endif
    const std::size_t ahead_end = a.prefetch_end > end ? a.prefetch_end : end;
    std::size_t i = begin;
    for (; i + 64 <= end; i += 64) {
        prefetch_ahead(x, y, i, ahead_end);
        const std::uint64_t b = a.all_kept ? ~std::uint64_t{0} : load_bits(a.bits, a.bit0 + i, 64);
        apply_group<Ops>(b, x + i, y + i, s, a.scaled);
    }
    if (i < end) {
        const std::size_t rem = end - i;
        const std::uint64_t b = a.all_kept ? low_bits(rem) : load_bits(a.bits, a.bit0 + i, rem);
        apply_tail<Ops>(b, x + i, y + i, rem, s, a.scaled);
    }
}

void philox_blocks_kernel(std::uint32_t k0, std::uint32_t k1, std::uint64_t first,
                          std::uint32_t c2, std::uint32_t c3, std::size_t n,
                          std::uint32_t* out) {
    RoundKeyVecs kv;
    broadcast_keys(make_round_keys(k0, k1), kv);
    for (std::size_t i = 0; i < n; i += kLanes) {
        U32 w[1][4];
        counters(first + i, kAllBlocksMask, w[0][0], w[0][1]);
        w[0][2] = set1(c2);
        w[0][3] = set1(c3);
        philox10(w, kv);
        std::uint32_t words[4][kLanes];
        for (int k = 0; k < 4; ++k) {
            store(words[k], w[0][k]);
        }
        const std::size_t lanes = (n - i) < static_cast<std::size_t>(kLanes)
                                      ? (n - i)
                                      : static_cast<std::size_t>(kLanes);
        for (std::size_t l = 0; l < lanes; ++l) {
            for (int w = 0; w < 4; ++w) {
                out[4 * (i + l) + static_cast<std::size_t>(w)] = words[w][l];
            }
        }
    }
}

}  // namespace
}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout

#include "fused_generic.hpp"
#include "window_generic.hpp"

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// Per-dtype arrays in Dtype order: float16, float32, float64, bfloat16.
const KernelTable kTable = {
    FASTDROPOUT_ISA_NAME,
    {&forward_kernel<OpsF16>, &forward_kernel<OpsF32>, &forward_kernel<OpsF64>,
     &forward_kernel<OpsBF16>},
    &gen_bits_kernel,
    {&apply_kernel<OpsF16>, &apply_kernel<OpsF32>, &apply_kernel<OpsF64>,
     &apply_kernel<OpsBF16>},
    {&add_forward_kernel<EF16>, &add_forward_kernel<EF32>, &add_forward_kernel<EF64>,
     &add_forward_kernel<EBF16>},
    {&add_apply_kernel<EF16>, &add_apply_kernel<EF32>, &add_apply_kernel<EF64>,
     &add_apply_kernel<EBF16>},
    {&alpha_forward_kernel<EF16>, &alpha_forward_kernel<EF32>, &alpha_forward_kernel<EF64>,
     &alpha_forward_kernel<EBF16>},
    {&alpha_apply_kernel<EF16>, &alpha_apply_kernel<EF32>, &alpha_apply_kernel<EF64>,
     &alpha_apply_kernel<EBF16>},
    {&apply_sum_kernel<EF16>, &apply_sum_kernel<EF32>, &apply_sum_kernel<EF64>,
     &apply_sum_kernel<EBF16>},
    {&apply_sum_band_kernel<EF16>, &apply_sum_band_kernel<EF32>, &apply_sum_band_kernel<EF64>,
     &apply_sum_band_kernel<EBF16>},
    &philox_blocks_kernel,
    &kWindowKernels,
};

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout
