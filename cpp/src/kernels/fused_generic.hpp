// The fused kernels of docs/spec.md sections 9 (dropout + residual add, with bias, and the
// grad_bias sum of its backward pass) and 10 (alpha dropout), written once over the
// vocabulary of vec_<isa>.hpp and included by dropout_generic.hpp, inside the same
// per-ISA anonymous namespace (so BitStream, load_bits, apply_group, ... are in scope).
//
// Every group of 64 elements is computed in arrays of the "compute type" C (float for
// float16, bfloat16 and float32; double for float64) that stay in L1: one loop per
// operation, which the compiler vectorises with the TU's flags, and the ISA's 64-wide
// select/scale primitives for the mask. For the 16-bit types each operation's float32
// result is rounded back to the element type before the next one (round64), which is
// exactly how NumPy (and ml_dtypes) evaluate a composition of float16/bfloat16
// operations: widen, operate in float32, narrow, one operation at a time.
// -ffp-contract=off keeps (x * A) + B two roundings, never a fused multiply-add.

#ifndef FASTDROPOUT_ISA
#error "include fused_generic.hpp through dropout_generic.hpp"
#endif

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// ---- the 64-wide select/scale primitives, by compute type --------------------------
FASTDROPOUT_INLINE void scale64c(std::uint64_t b, const float* x, float* y, float s) {
    scale64_f32(b, x, y, s);
}
FASTDROPOUT_INLINE void scale64c(std::uint64_t b, const double* x, double* y, double s) {
    scale64_f64(b, x, y, s);
}
FASTDROPOUT_INLINE void select64c(std::uint64_t b, const float* x, float* y) {
    select64_f32(b, x, y);
}
FASTDROPOUT_INLINE void select64c(std::uint64_t b, const double* x, double* y) {
    select64_f64(b, x, y);
}
#if defined(FASTDROPOUT_VEC_F16_NATIVE)
FASTDROPOUT_INLINE void scale64c(std::uint64_t b, const _Float16* x, _Float16* y, _Float16 s) {
    scale64_ph(b, x, y, s);
}
FASTDROPOUT_INLINE void select64c(std::uint64_t b, const _Float16* x, _Float16* y) {
    std::uint16_t xb[64];
    std::uint16_t yb[64];
    std::memcpy(xb, x, sizeof xb);
    select64_f16(b, xb, yb);
    std::memcpy(y, yb, sizeof yb);
}
#endif

// t[k] = bit k of b ? t[k] : d[k], through the ISA's selects: the kept values (+0.0
// elsewhere) OR-ed with d's dropped values (+0.0 elsewhere), on the bit patterns.
template <class C, class U>
FASTDROPOUT_INLINE void blend64(std::uint64_t b, C* t, const C* d) {
    C dd[64];
    select64c(b, t, t);
    select64c(~b, d, dd);
    U tu[64];
    U du[64];
    std::memcpy(tu, t, sizeof tu);
    std::memcpy(du, dd, sizeof du);
    for (int k = 0; k < 64; ++k) {
        tu[k] = static_cast<U>(tu[k] | du[k]);
    }
    std::memcpy(t, tu, sizeof tu);
}

// ---- element types ------------------------------------------------------------------
//   in(p, buf):  64 elements as C values (p itself when T is C)
//   round(t):    each of 64 C values rounded to the element type, in place
//   out(t, y):   64 C values (already representable, or rounded here) stored as T
//   wide(v):     one element as a double
struct EF32 {
    using T = float;
    using C = float;
    using UC = std::uint32_t;
    using Ops = OpsF32;
    static FASTDROPOUT_INLINE const C* in(const T* p, C*) { return p; }
    static FASTDROPOUT_INLINE void round(C*) {}
    static FASTDROPOUT_INLINE void out(const C* t, T* y) { std::memcpy(y, t, 64 * sizeof(T)); }
    static FASTDROPOUT_INLINE double wide(T v) { return static_cast<double>(v); }
};
struct EF64 {
    using T = double;
    using C = double;
    using UC = std::uint64_t;
    using Ops = OpsF64;
    static FASTDROPOUT_INLINE const C* in(const T* p, C*) { return p; }
    static FASTDROPOUT_INLINE void round(C*) {}
    static FASTDROPOUT_INLINE void out(const C* t, T* y) { std::memcpy(y, t, 64 * sizeof(T)); }
    static FASTDROPOUT_INLINE double wide(T v) { return v; }
};
// The 16-bit types: widened to float32 64 at a time, rounded back the same way.
#if !defined(FASTDROPOUT_VEC_BF16_64)
FASTDROPOUT_INLINE void widen64_bf16(const std::uint16_t* h, float* f) {
    for (int k = 0; k < 64; ++k) {
        f[k] = bf16_bits_to_float(h[k]);
    }
}
FASTDROPOUT_INLINE void narrow64_bf16(const float* f, std::uint16_t* h) {
    for (int k = 0; k < 64; ++k) {
        h[k] = bf16_round_bits(float_bits(f[k]));
    }
}
#endif

// Each of 64 float32 values rounded to the 16-bit type and widened back, through a
// 16-bit buffer (a type whose ISA has no shortcut for it).
template <void (*Narrow)(const float*, std::uint16_t*), void (*Widen)(const std::uint16_t*, float*)>
FASTDROPOUT_INLINE void round64_via(float* t) {
    std::uint16_t h[64];
    Narrow(t, h);
    Widen(h, t);
}
#if !defined(FASTDROPOUT_VEC_BF16_ROUND64)
FASTDROPOUT_INLINE void round64_bf16(float* t) { round64_via<narrow64_bf16, widen64_bf16>(t); }
#endif

template <class O, void (*Widen)(const std::uint16_t*, float*),
          void (*Narrow)(const float*, std::uint16_t*), float (*ToFloat)(std::uint16_t),
          void (*Round)(float*) = round64_via<Narrow, Widen>>
struct E16 {
    using T = std::uint16_t;
    using C = float;
    using UC = std::uint32_t;
    using Ops = O;
    static FASTDROPOUT_INLINE const C* in(const T* p, C* buf) {
        Widen(p, buf);
        return buf;
    }
    static FASTDROPOUT_INLINE void round(C* t) { Round(t); }
    static FASTDROPOUT_INLINE void out(const C* t, T* y) { Narrow(t, y); }
    static FASTDROPOUT_INLINE double wide(T v) { return static_cast<double>(ToFloat(v)); }
};
#if defined(FASTDROPOUT_VEC_F16_NATIVE)
// float16 computed in float16 where the ISA has the arithmetic (vec_avx512.hpp on the
// avx512fp16 level): each operation rounded once, the same bits as E16's float32 round
// trip (see scale64_ph), with no widening and no rounding pass.
struct EF16 {
    using T = std::uint16_t;
    using C = _Float16;
    using UC = std::uint16_t;
    using Ops = OpsF16;
    static FASTDROPOUT_INLINE const C* in(const T* p, C* buf) {
        std::memcpy(buf, p, 64 * sizeof(T));
        return buf;
    }
    static FASTDROPOUT_INLINE void round(C*) {}
    static FASTDROPOUT_INLINE void out(const C* t, T* y) { std::memcpy(y, t, 64 * sizeof(T)); }
    static FASTDROPOUT_INLINE double wide(T v) {
        return static_cast<double>(half_bits_to_float(v));
    }
};
#else
using EF16 = E16<OpsF16, widen64_f16, narrow64_f16, half_bits_to_float>;
#endif
using EBF16 = E16<OpsBF16, widen64_bf16, narrow64_bf16, bf16_bits_to_float, round64_bf16>;

// a + b for 64 elements, the sum of two NaNs being the first one, quieted (docs/spec.md
// section 9). IEEE 754 leaves that choice open: x86 returns its first source operand,
// but a compiler may swap the operands of a commutative addition, and aarch64 prefers
// a signalling NaN. So wherever a is NaN the result is set to a with its quiet bit,
// on the bit patterns (a loop the compiler turns into vector compares and blends).
template <class U>
struct NanBits;
template <>
struct NanBits<std::uint16_t> {  // float16
    static constexpr std::uint16_t kAbs = 0x7fff, kInf = 0x7c00, kQuiet = 0x0200;
};
template <>
struct NanBits<std::uint32_t> {
    static constexpr std::uint32_t kAbs = 0x7fffffffu, kInf = 0x7f800000u, kQuiet = 0x00400000u;
};
template <>
struct NanBits<std::uint64_t> {
    static constexpr std::uint64_t kAbs = 0x7fffffffffffffffu, kInf = 0x7ff0000000000000u,
                                   kQuiet = 0x0008000000000000u;
};
template <class C, class U>
FASTDROPOUT_INLINE void add64_first_nan(const C* a, const C* b, C* t) {
    using N = NanBits<U>;
    for (int k = 0; k < 64; ++k) {
        t[k] = a[k] + b[k];
    }
    U au[64];
    U tu[64];
    std::memcpy(au, a, sizeof au);
    std::memcpy(tu, t, sizeof tu);
    for (int k = 0; k < 64; ++k) {
        const U quiet = static_cast<U>(au[k] | N::kQuiet);
        tu[k] = (au[k] & N::kAbs) > N::kInf ? quiet : tu[k];
    }
    std::memcpy(t, tu, sizeof tu);
}

// The bias of 64 elements from column col (< a.bias_n) on: a view into bias when
// those columns do not wrap, else gathered (with wrap-around) into tb first.
template <class E>
FASTDROPOUT_INLINE const typename E::T* bias_bits_at(const FusedArgs& a, std::size_t col,
                                                     typename E::T* tb) {
    using T = typename E::T;
    const T* bias = static_cast<const T*>(a.bias);
    if (col + 64 <= a.bias_n) {
        return bias + col;
    }
    for (int k = 0; k < 64; ++k) {
        tb[k] = bias[col];
        if (++col == a.bias_n) {
            col = 0;
        }
    }
    return tb;
}
template <class E>
FASTDROPOUT_INLINE const typename E::C* bias_at(const FusedArgs& a, std::size_t col,
                                                typename E::T* tb, typename E::C* cb) {
    return E::in(bias_bits_at<E>(a, col, tb), cb);
}

// Whether E's fused groups are computed in registers (vec_<isa>.hpp's add64_* and
// alpha64_*), which can then store y themselves, streaming or not.
template <class E>
constexpr bool in_registers() {
#if defined(FASTDROPOUT_VEC_BF16_FUSED64)
    if (std::is_same<E, EBF16>::value) {
        return true;
    }
#endif
#if defined(FASTDROPOUT_VEC_F32_FUSED64)
    if (std::is_same<E, EF32>::value) {
        return true;
    }
#endif
#if defined(FASTDROPOUT_VEC_F16_FUSED64)
    if (std::is_same<E, EF16>::value) {
        return true;
    }
#endif
#if defined(FASTDROPOUT_VEC_F64_FUSED64)
    if (std::is_same<E, EF64>::value) {
        return true;
    }
#endif
    return false;
}

// y = residual + select(keep, (x + bias) * s, +0.0), for 64 elements whose bias starts
// at column col. kStream (register forms only): y is 64-byte aligned and written with
// streaming stores.
template <class E, bool kStream = false>
FASTDROPOUT_INLINE void add_group(std::uint64_t b, const FusedArgs& a, std::size_t col,
                                  const typename E::T* x, const typename E::T* r,
                                  typename E::T* y) {
    using T = typename E::T;
    using C = typename E::C;
    static_assert(!kStream || in_registers<E>(), "streaming groups are register forms");
#if defined(FASTDROPOUT_VEC_BF16_FUSED64)
    if constexpr (std::is_same<E, EBF16>::value) {  // in registers (vec_<isa>.hpp)
        T tb[64];
        const T* bias = a.bias != nullptr ? bias_bits_at<E>(a, col, tb) : nullptr;
        add64_bf16<kStream>(b, x, bias, r, y, static_cast<float>(a.scale), a.scaled);
        return;
    }
#endif
#if defined(FASTDROPOUT_VEC_F32_FUSED64)
    if constexpr (std::is_same<E, EF32>::value) {  // in registers (vec_<isa>.hpp)
        T tb[64];
        const T* bias = a.bias != nullptr ? bias_bits_at<E>(a, col, tb) : nullptr;
        add64_f32<kStream>(b, x, bias, r, y, static_cast<float>(a.scale), a.scaled);
        return;
    }
#endif
#if defined(FASTDROPOUT_VEC_F16_FUSED64)
    if constexpr (std::is_same<E, EF16>::value) {  // in registers (vec_<isa>.hpp)
        T tb[64];
        const T* bias = a.bias != nullptr ? bias_bits_at<E>(a, col, tb) : nullptr;
        add64_f16<kStream>(b, x, bias, r, y, static_cast<float>(a.scale), a.scaled);
        return;
    }
#endif
#if defined(FASTDROPOUT_VEC_F64_FUSED64)
    if constexpr (std::is_same<E, EF64>::value) {  // in registers (vec_<isa>.hpp)
        T tb[64];
        const T* bias = a.bias != nullptr ? bias_bits_at<E>(a, col, tb) : nullptr;
        add64_f64<kStream>(b, x, bias, r, y, a.scale, a.scaled);
        return;
    }
#endif
    C xs[64];
    C t[64];
    const C* src = E::in(x, xs);
    if (a.bias != nullptr) {
        T tb[64];
        C cb[64];
        const C* bc = bias_at<E>(a, col, tb, cb);
        add64_first_nan<C, typename E::UC>(src, bc, t);
        E::round(t);
        src = t;
    }
    if (a.scaled) {
        scale64c(b, src, t, static_cast<C>(a.scale));
        E::round(t);
    } else {
        select64c(b, src, t);
    }
    C rs[64];
    const C* rc = E::in(r, rs);
    add64_first_nan<C, typename E::UC>(rc, t, t);  // residual + (+0.0) where dropped
    E::out(t, y);
}

// y = keep ? (x * A) + B : D, for 64 elements (two roundings, no FMA); dvec holds
// 64 copies of D.
template <class E, bool kStream = false>
FASTDROPOUT_INLINE void alpha_group(std::uint64_t b, const FusedArgs& a,
                                    const typename E::C* dvec, const typename E::T* x,
                                    typename E::T* y) {
    using C = typename E::C;
    static_assert(!kStream || in_registers<E>(), "streaming groups are register forms");
#if defined(FASTDROPOUT_VEC_BF16_FUSED64)
    if constexpr (std::is_same<E, EBF16>::value) {  // in registers (vec_<isa>.hpp)
        alpha64_bf16<kStream>(b, x, y, static_cast<float>(a.scale),
                              static_cast<float>(a.shift), bf16_round_bits(float_bits(dvec[0])));
        return;
    }
#endif
#if defined(FASTDROPOUT_VEC_F32_FUSED64)
    if constexpr (std::is_same<E, EF32>::value) {  // in registers (vec_<isa>.hpp)
        alpha64_f32<kStream>(b, x, y, static_cast<float>(a.scale), static_cast<float>(a.shift),
                             dvec[0]);
        return;
    }
#endif
#if defined(FASTDROPOUT_VEC_F16_FUSED64)
    if constexpr (std::is_same<E, EF16>::value) {  // in registers (vec_<isa>.hpp)
        alpha64_f16<kStream>(b, x, y, static_cast<float>(a.scale), static_cast<float>(a.shift),
                             float_to_half_bits(dvec[0]));
        return;
    }
#endif
#if defined(FASTDROPOUT_VEC_F64_FUSED64)
    if constexpr (std::is_same<E, EF64>::value) {  // in registers (vec_<isa>.hpp)
        alpha64_f64<kStream>(b, x, y, a.scale, a.shift, dvec[0]);
        return;
    }
#endif
    C xs[64];
    C t[64];
    const C* xc = E::in(x, xs);
    const C coef_a = static_cast<C>(a.scale);
    const C coef_b = static_cast<C>(a.shift);
    for (int k = 0; k < 64; ++k) {
        t[k] = xc[k] * coef_a;
    }
    E::round(t);
    for (int k = 0; k < 64; ++k) {
        t[k] = t[k] + coef_b;
    }
    E::round(t);
    blend64<C, typename E::UC>(b, t, dvec);
    E::out(t, y);
}

// Bias column col moved on by count <= 64 elements (mod a.bias_n): no division unless
// the bias is narrower than that.
FASTDROPOUT_INLINE void advance_column(const FusedArgs& a, std::size_t& col, std::size_t count) {
    if (a.bias != nullptr) {
        col += count;
        if (col >= a.bias_n) {
            col = col - a.bias_n < a.bias_n ? col - a.bias_n : col % a.bias_n;
        }
    }
}

// The count < 64 elements from element i of x, r (dropout_add only: alpha has no
// residual, and no offset is applied to its null pointer) and y, bias from column
// col: through zero-padded copies, so that add_group / alpha_group read and write 64.
template <class E, bool kAdd>
FASTDROPOUT_INLINE void fused_partial(std::uint64_t b, const FusedArgs& a, std::size_t col,
                                      const typename E::C* dvec, const typename E::T* x,
                                      const typename E::T* r, typename E::T* y, std::size_t i,
                                      std::size_t count) {
    using T = typename E::T;
    T xt[64] = {};
    T rt[64] = {};
    T yt[64];
    std::memcpy(xt, x + i, count * sizeof(T));
    if (kAdd) {
        std::memcpy(rt, r + i, count * sizeof(T));
        add_group<E>(b, a, col, xt, rt, yt);
    } else {
        alpha_group<E>(b, a, dvec, xt, yt);
    }
    std::memcpy(y + i, yt, count * sizeof(T));
}

// Elements [begin, end) in groups of 64, word(i, count) giving each group's decisions;
// a last group of fewer than 64 goes through zero-padded copies.
template <class E, bool kAdd, class Word>
FASTDROPOUT_INLINE void fused_loop(const FusedArgs& args, std::size_t begin, std::size_t end,
                                   Word& word, bool prefetch) {
    // A copy the stores below cannot alias (vector stores may alias anything), so
    // the scale and the pointers stay in registers.
    const FusedArgs a = args;
    // element i's bias column, i mod a.bias_n, followed without a division per group
    std::size_t col = a.bias != nullptr ? begin % a.bias_n : 0;
    using T = typename E::T;
    const T* x = static_cast<const T*>(a.x);
    const T* r = static_cast<const T*>(a.residual);
    T* y = static_cast<T*>(a.y);
    using C = typename E::C;
    C dvec[64];
    for (int k = 0; k < 64; ++k) {
        dvec[k] = static_cast<C>(a.dropped);
    }
    std::size_t i = begin;
    for (; i + 64 <= end; i += 64) {
        if (prefetch) {
            prefetch_ahead(x, y, i, end);
            if (kAdd && i + kPrefetchBytes / sizeof(T) + 64 <= end) {
                const auto pr = reinterpret_cast<std::uintptr_t>(r + i) + kPrefetchBytes;
                for (std::size_t l = 0; l < 64 * sizeof(T); l += 64) {
                    prefetch_line(pr + l, false);
                }
            }
        }
        const std::uint64_t b = word(i, 64);
        if (kAdd) {
            add_group<E>(b, a, col, x + i, r + i, y + i);
            advance_column(a, col, 64);
        } else {
            alpha_group<E>(b, a, dvec, x + i, y + i);
        }
    }
    if (i < end) {
        const std::size_t rem = end - i;
        fused_partial<E, kAdd>(word(i, rem), a, col, dvec, x, r, y, i, rem);
    }
}

// Decisions generated from the stream (and stored to a.bits when asked).
struct StreamWord {
    BitStream stream;
    std::uint8_t* bits;
    FASTDROPOUT_INLINE StreamWord(const FusedArgs& a, std::size_t begin)
        : stream(a.stream, begin), bits(a.bits) {}
    FASTDROPOUT_INLINE std::uint64_t operator()(std::size_t i, std::size_t count) {
        const std::uint64_t b = stream.next() & low_bits(count);
        if (bits != nullptr) {
            store_bits(bits + i / 8, b, (count + 7) / 8);
        }
        return b;
    }
};

// Decisions from a MaskRun.
struct RunWord {
    const MaskRun& run;
    FASTDROPOUT_INLINE std::uint64_t operator()(std::size_t i, std::size_t count) const {
        switch (run.kind) {
            case RunKind::kAllKept: return low_bits(count);
            case RunKind::kAllDropped: return 0;
            default: return load_bits(run.bits, run.bit0 + i, count);
        }
    }
};

#if defined(FASTDROPOUT_VEC_STREAM)
// fused_loop for outputs written with streaming stores (a.stream_stores, set for
// outputs past the streaming threshold; see dropout_generic.hpp): the elements up to
// y's first 64-byte aligned one go as a partial group, then 64-element groups are
// computed into an aligned buffer in L1 and streamed out, then the tail. Each group's
// keep bits are stitched from two consecutive words of the stream, whose mask bytes
// are stored on their own 64-element grid, as in forward_stream_body. `stream` is at
// element begin; element i's mask bit is bit i - bit0 of a.bits.
template <class E, bool kAdd, class Stream>
FASTDROPOUT_INLINE void fused_stream_body(const FusedArgs& args, Stream& stream,
                                          std::size_t begin, std::size_t end,
                                          std::size_t bit0) {
    const FusedArgs a = args;  // see fused_loop
    using T = typename E::T;
    using C = typename E::C;
    const T* x = static_cast<const T*>(a.x);
    const T* r = static_cast<const T*>(a.residual);
    T* y = static_cast<T*>(a.y);
    C dvec[64];
    for (int k = 0; k < 64; ++k) {
        dvec[k] = static_cast<C>(a.dropped);
    }
    std::size_t col = a.bias != nullptr ? begin % a.bias_n : 0;
    GridWords<Stream> grid(stream, a.bits, begin, end, bit0);
    const std::size_t h = stream_head(y + begin) < end - begin ? stream_head(y + begin)
                                                                : end - begin;
    ShiftedWords<Stream> words(grid, h);
    if (h != 0) {
        fused_partial<E, kAdd>(words.head(), a, col, dvec, x, r, y, begin, h);
        advance_column(a, col, h);
    }
    std::size_t i = begin + h;
    // the inputs only (y is not read); dropout_add's two only if a.prefetch_pair (see
    // kPrefetchBytes)
    const std::size_t ahead_end = !kAdd || a.prefetch_pair ? end : 0;
    for (; i + 64 <= end; i += 64) {
        if (i + kPrefetchBytes / sizeof(T) + 64 <= ahead_end) {
            const auto px = reinterpret_cast<std::uintptr_t>(x + i) + kPrefetchBytes;
            for (std::size_t l = 0; l < 64 * sizeof(T); l += 64) {
                prefetch_line(px + l, false);
            }
            if (kAdd) {
                const auto pr = reinterpret_cast<std::uintptr_t>(r + i) + kPrefetchBytes;
                for (std::size_t l = 0; l < 64 * sizeof(T); l += 64) {
                    prefetch_line(pr + l, false);
                }
            }
        }
        if constexpr (in_registers<E>()) {  // streamed straight from the registers
            if (kAdd) {
                add_group<E, true>(words.group(), a, col, x + i, r + i, y + i);
                advance_column(a, col, 64);
            } else {
                alpha_group<E, true>(words.group(), a, dvec, x + i, y + i);
            }
        } else {  // through an L1 buffer
            alignas(64) T buffer[64];
            if (kAdd) {
                add_group<E>(words.group(), a, col, x + i, r + i, buffer);
                advance_column(a, col, 64);
            } else {
                alpha_group<E>(words.group(), a, dvec, x + i, buffer);
            }
            stream_store(y + i, buffer, sizeof buffer);
        }
    }
    if (i < end) {
        fused_partial<E, kAdd>(words.tail(end - i), a, col, dvec, x, r, y, i, end - i);
    }
    if (a.fence) {
        stream_fence();
    }
}

template <class E, bool kAdd>
void fused_stream_loop(const FusedArgs& a, std::size_t begin, std::size_t end) {
    BitStream stream(a.stream, begin);
    fused_stream_body<E, kAdd>(a, stream, begin, end, 0);
}
#endif  // FASTDROPOUT_VEC_STREAM

template <class E>
void add_forward_kernel(const FusedArgs& a, std::size_t begin, std::size_t end) {
#if defined(FASTDROPOUT_VEC_STREAM)
    if (a.stream_stores) {
        fused_stream_loop<E, true>(a, begin, end);
        return;
    }
#endif
    StreamWord w(a, begin);
    fused_loop<E, true>(a, begin, end, w, true);
}

template <class E>
void add_apply_kernel(const FusedArgs& a, const MaskRun& run, std::size_t begin,
                      std::size_t end) {
    RunWord w{run};
    fused_loop<E, true>(a, begin, end, w, false);
}

template <class E>
void alpha_forward_kernel(const FusedArgs& a, std::size_t begin, std::size_t end) {
#if defined(FASTDROPOUT_VEC_STREAM)
    if (a.stream_stores) {
        fused_stream_loop<E, false>(a, begin, end);
        return;
    }
#endif
    StreamWord w(a, begin);
    fused_loop<E, false>(a, begin, end, w, true);
}

template <class E>
void alpha_apply_kernel(const FusedArgs& a, const MaskRun& run, std::size_t begin,
                        std::size_t end) {
    RunWord w{run};
    fused_loop<E, false>(a, begin, end, w, false);
}

// grad_x as apply_kernel computes it, and each grad_x element (as written, in the
// element type) added in float64 to its column's accumulator, in element order.
// One step of a column's sum (docs/spec.md section 9): once the sum is NaN it stays
// the first NaN it met. IEEE leaves open which payload a NaN + NaN returns, and a
// compiler may swap the operands of an addition, so this is spelled out: the same
// bits whatever the ISA, the vectoriser or the thread split.
FASTDROPOUT_INLINE double add_keeping_nan(double acc, double v) {
    const double sum = acc + v;
    return acc != acc ? acc : sum;
}

// add_keeping_nan over 64 columns: the ISA's vector form where it has one (the
// compiler keeps the select as a branch and leaves this loop scalar).
#if !defined(FASTDROPOUT_VEC_ACCUMULATE64)
template <class C>
FASTDROPOUT_INLINE void accumulate64(double* acc, const C* c) {
    for (int k = 0; k < 64; ++k) {
        acc[k] = add_keeping_nan(acc[k], static_cast<double>(c[k]));
    }
}
#endif

// Elements y[0 .. count) added to the column sums from column *col on (wrapping at
// ncols); *col is left at the column after the last one.
template <class E>
FASTDROPOUT_INLINE void accumulate_run(const typename E::T* y, std::size_t count, double* acc,
                                       std::size_t& col, std::size_t ncols) {
    using C = typename E::C;
    std::size_t k = 0;
    for (; k + 64 <= count; k += 64) {
        C buf[64];
        const C* c = E::in(y + k, buf);
        if (col + 64 <= ncols) {  // no wrap: 64 columns in vectors
            accumulate64(acc + col, c);
            col += 64;
            if (col == ncols) {
                col = 0;
            }
        } else {
            for (int j = 0; j < 64; ++j) {
                acc[col] = add_keeping_nan(acc[col], static_cast<double>(c[j]));
                if (++col == ncols) {
                    col = 0;
                }
            }
        }
    }
    for (; k < count; ++k) {
        acc[col] = add_keeping_nan(acc[col], E::wide(y[k]));
        if (++col == ncols) {
            col = 0;
        }
    }
}

template <class E>
void apply_sum_kernel(const ApplyArgs& a, std::size_t begin, std::size_t end, double* acc,
                      std::size_t col0, std::size_t ncols) {
    using Ops = typename E::Ops;
    using T = typename E::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
    std::size_t col = col0;
    std::size_t i = begin;
    for (; i + 64 <= end; i += 64) {
        prefetch_ahead(x, y, i, end);
        const std::uint64_t b = a.all_kept ? ~std::uint64_t{0} : load_bits(a.bits, a.bit0 + i, 64);
        apply_group<Ops>(b, x + i, y + i, s, a.scaled);
        accumulate_run<E>(y + i, 64, acc, col, ncols);
    }
    if (i < end) {
        const std::size_t rem = end - i;
        const std::uint64_t b = a.all_kept ? low_bits(rem) : load_bits(a.bits, a.bit0 + i, rem);
        apply_tail<Ops>(b, x + i, y + i, rem, s, a.scaled);
        accumulate_run<E>(y + i, rem, acc, col, ncols);
    }
}

// apply_sum_kernel over a band of rows, 64 columns at a time: row r (< rows) of the
// band is elements start + r * stride + [0, width), and its column k adds to sums[k].
// Each group of 64 columns goes down all the band's rows before the next group, its
// sums in registers where the ISA has the form (FASTDROPOUT_VEC_SUM_REGS64), so the
// sums are loaded and stored once per band, not once per row; every column still
// meets its rows in order. With a.stream_stores, y + start is 64-byte aligned and
// stride * sizeof(T) a multiple of 64 (run_apply_sum checks), and y is streamed out.
template <class E, bool kStream>
FASTDROPOUT_INLINE void sum_band_group(const ApplyArgs& a, std::size_t i0, std::size_t stride,
                                       std::size_t rows, double* sums) {
    using Ops = typename E::Ops;
    using T = typename E::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const auto bits_at = [&a](std::size_t i) {
        return a.all_kept ? ~std::uint64_t{0} : load_bits(a.bits, a.bit0 + i, 64);
    };
#if defined(FASTDROPOUT_VEC_SUM_REGS64)
    if constexpr (std::is_same<E, EF32>::value || std::is_same<E, EF64>::value) {
        SumRegs64 regs(sums);
        for (std::size_t r = 0, i = i0; r < rows; ++r, i += stride) {
            apply_sum64<kStream>(bits_at(i), x + i, y + i, static_cast<T>(a.scale), a.scaled, regs);
        }
        regs.store(sums);
        return;
    }
#if defined(FASTDROPOUT_VEC_F16_SUM64)
    if constexpr (std::is_same<E, EF16>::value) {
        SumRegs64 regs(sums);
        for (std::size_t r = 0, i = i0; r < rows; ++r, i += stride) {
            apply_sum64_f16<kStream>(bits_at(i), x + i, y + i, static_cast<float>(a.scale),
                                     a.scaled, regs);
        }
        regs.store(sums);
        return;
    }
#endif
    if constexpr (std::is_same<E, EBF16>::value) {
        // bfloat16 through L1: its group computed (scale64_bf16), then widened from
        // memory (widen64_bf16) and added. A register form like float16's ran 1.1-1.3x
        // slower here (README): widening from a register costs shuffles where this
        // costs loads.
        const typename Ops::S s = Ops::scale_of(a.scale);
        SumRegs64 regs(sums);
        for (std::size_t r = 0, i = i0; r < rows; ++r, i += stride) {
            alignas(64) T out[64];
            T* dst = kStream ? out : y + i;
            apply_group<Ops>(bits_at(i), x + i, dst, s, a.scaled);
            if (kStream) {
                stream_store(y + i, out, sizeof out);
            }
            typename E::C wide[64];
            regs.add(E::in(dst, wide));
        }
        regs.store(sums);
        return;
    }
#endif
    const typename Ops::S s = Ops::scale_of(a.scale);
    for (std::size_t r = 0, i = i0; r < rows; ++r, i += stride) {
        alignas(64) T out[64];
        T* dst = kStream ? out : y + i;
        apply_group<Ops>(bits_at(i), x + i, dst, s, a.scaled);
#if defined(FASTDROPOUT_VEC_STREAM)
        if (kStream) {
            stream_store(y + i, out, sizeof out);
        }
#endif
        std::size_t col = 0;
        accumulate_run<E>(dst, 64, sums, col, 64);
    }
}

template <class E>
void apply_sum_band_kernel(const ApplyArgs& a, std::size_t start, std::size_t stride,
                           std::size_t rows, std::size_t width, double* sums) {
    using Ops = typename E::Ops;
    using T = typename E::T;
    std::size_t k = 0;
    for (; k + 64 <= width; k += 64) {
#if defined(FASTDROPOUT_VEC_STREAM)
        if (a.stream_stores) {
            sum_band_group<E, true>(a, start + k, stride, rows, sums + k);
            continue;
        }
#endif
        sum_band_group<E, false>(a, start + k, stride, rows, sums + k);
    }
    if (k == width) {
        return;
    }
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
    const std::size_t rem = width - k;
    for (std::size_t r = 0, i = start + k; r < rows; ++r, i += stride) {
        const std::uint64_t b = a.all_kept ? low_bits(rem) : load_bits(a.bits, a.bit0 + i, rem);
        apply_tail<Ops>(b, x + i, y + i, rem, s, a.scaled);
        std::size_t col = 0;
        accumulate_run<E>(y + i, rem, sums + k, col, rem);
    }
}

}  // namespace
}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout
