// Plain-old-data arguments passed from the threading layer to the kernels.
// Kernels never see pybind11, NumPy or Python errors.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastdropout {

// Element types, as indices into KernelTable's per-dtype arrays. float16 and
// bfloat16 travel as their uint16_t bit patterns.
enum Dtype : int { kF16 = 0, kF32 = 1, kF64 = 2, kBF16 = 3, kNumDtypes = 4 };

constexpr std::size_t dtype_size(Dtype dt) {
    return (dt == kF16 || dt == kBF16) ? 2 : (dt == kF32 ? 4 : 8);
}

// Where the keep/drop decisions come from (docs/spec.md section 2): element i of the mask is
// kept iff philox word at stream position offset + i is >= threshold.
struct StreamArgs {
    std::uint32_t k0, k1;    // key = (seed & 0xFFFFFFFF, seed >> 32)
    std::uint64_t offset;    // stream position of mask element 0 (wraps mod 2**64)
    std::uint64_t threshold; // round_half_even(p * 2**32), in [0, 2**32]
};

// Fused forward pass over a dense (element-wise) mask.
//   y[i] = keep(i) ? (scaled ? x[i] * scale : x[i]) : +0.0
// x may equal y. bits, if not null, receives bit i of the mask (little bit order).
struct ForwardArgs {
    StreamArgs stream;
    const void* x;
    void* y;
    std::uint8_t* bits;
    std::size_t n;
    double scale;  // already rounded to the element type, so exactly representable
    bool scaled;
    bool stream_stores = false;  // y with streaming stores (large outputs; see parallel.cpp)
    // x and y go on in memory up to element prefetch_end: prefetches may run ahead
    // past the call's end up to there (a window's rows, one call each; 0: the call's end).
    std::size_t prefetch_end = 0;
    // With stream_stores: end with a store fence. false: the caller fences once after
    // a series of calls (a window's rows; a fence waits for the streamed lines to
    // drain, some hundreds of cycles per call).
    bool fence = true;
};

// Applying existing mask bits: y[i] = bit(bit0 + i) ? (scaled ? x[i]*scale : x[i]) : +0.0
// over i in [begin, end). all_kept ignores bits (every element kept).
struct ApplyArgs {
    const void* x;
    void* y;
    const std::uint8_t* bits;
    std::uint64_t bit0;
    double scale;
    bool scaled;
    bool all_kept;
    bool stream_stores = false;  // y with streaming stores (large outputs; see parallel.cpp)
    bool fence = true;           // as ForwardArgs::fence (spatial runs: one per thread chunk)
    std::size_t prefetch_end = 0;  // as ForwardArgs::prefetch_end (for x only when streaming)
};

// Where the decisions of a run of elements come from when they are not generated:
// element i (global index) is decided by bit (bit0 + i) of bits (mod 2**64), or every
// element is kept / dropped.
enum class RunKind : int { kBits = 0, kAllKept = 1, kAllDropped = 2 };
struct MaskRun {
    const std::uint8_t* bits;
    std::uint64_t bit0;
    RunKind kind;
    // x is read on, in memory order, from the run's end up to this element (the next
    // runs of the thread's chunk are read too): prefetches may run ahead up to here.
    // 0: not past the run (the next run may be a dropped map, whose x is not read).
    std::size_t ahead_end = 0;
};

// Fused dropout + residual add (docs/spec.md section 9) and alpha dropout (section 10).
//   add:   y[i] = residual[i] + (keep(i) ? ((x[i] + bias[i % bias_n]) * scale) : +0.0)
//          (no "+ bias" when bias is null, no "* scale" when !scaled), every operation
//          rounded in the element type as NumPy rounds it.
//   alpha: y[i] = keep(i) ? (x[i] * scale) + shift : dropped, two roundings.
// y may equal x or residual. bits, if not null, receives the generated mask bits.
struct FusedArgs {
    StreamArgs stream;
    const void* x;
    const void* residual;
    const void* bias;
    std::size_t bias_n;
    void* y;
    std::uint8_t* bits;
    double scale;    // already rounded to the element type
    double shift;    // alpha: B
    double dropped;  // alpha: D
    bool scaled;
    bool stream_stores = false;  // y with streaming stores (large outputs; forward kernels)
    // With stream_stores: dropout_add prefetches x and the residual 4 KiB ahead in
    // software (parallel.hpp's prefetch_paired_streams(): it depends on the CPU).
    bool prefetch_pair = true;
    bool fence = true;           // as ForwardArgs::fence
};

}  // namespace fastdropout
