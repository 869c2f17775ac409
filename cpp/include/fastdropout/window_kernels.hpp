// Per-ISA kernels behind windows (docs/spec.md section 11): each kernels/<isa>.cpp
// stamps kernels/window_generic.hpp (through dropout_generic.hpp), and its KernelTable
// points at the record (KernelTable::window), so the window kernels always belong to
// the active table.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastdropout/kernel_args.hpp"

namespace fastdropout {

// A run of `len` consecutive mask elements whose first one is at stream position
// stream.offset + pos (mod 2**64, as the stream wraps).
struct BitRun {
    std::uint64_t pos;
    std::size_t len;
};

struct WindowKernels {
    const char* name;  // the KernelTable's name
    // The keep bits of runs[0], runs[1], ... runs[nruns-1], one after another from bit
    // 0 of `bits` (bit k of byte j is bit 8j + k): ceil(total / 8) bytes are written,
    // the unused high bits of the last one 0. The Philox blocks the runs need are
    // computed together, full SIMD vectors at a time: a short run costs its own
    // blocks, not a whole fill. Runs of one length (32 to 1024 elements) take one
    // lane each (kernels/window_lanes.hpp); others are collected so that each block is
    // computed once even when two neighbouring runs share it.
    void (*gen_bits_runs)(const StreamArgs& s, const BitRun* runs, std::size_t nruns,
                          std::uint8_t* bits);
    // The forward pass (docs/spec.md sections 2-3) with those bits: elements 0 ..
    // total-1 of a.x and a.y (a.n is not used; a.stream_stores, a.prefetch_end and
    // a.fence as for the dense kernel), the mask bits to a.bits from bit 0 when it is
    // not null, as gen_bits_runs writes them.
    void (*forward_runs[kNumDtypes])(const ForwardArgs& a, const BitRun* runs,
                                     std::size_t nruns);
    // dropout_add and alpha_dropout (docs/spec.md sections 9 and 10) with those bits:
    // elements i0 .. i0+total-1 of a.x, a.residual and a.y, the bias column of element
    // i being i mod a.bias_n as in the dense kernels; the mask bits to a.bits from
    // bit 0 when it is not null, as gen_bits_runs writes them.
    void (*add_runs[kNumDtypes])(const FusedArgs& a, std::size_t i0, const BitRun* runs,
                                 std::size_t nruns);
    void (*alpha_runs[kNumDtypes])(const FusedArgs& a, std::size_t i0, const BitRun* runs,
                                   std::size_t nruns);
};

}  // namespace fastdropout
