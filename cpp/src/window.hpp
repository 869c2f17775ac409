// Windows (docs/spec.md section 11): a C-contiguous block of a larger array whose mask
// elements are numbered over the larger array's mask. The block is walked in runs, the
// longest stretches that are contiguous both in memory and in the global stream; long
// runs are handed to the active kernel table's forward / gen_bits entries with their
// own stream positions, short ones in batches to the matching window kernels
// (fastdropout/window_kernels.hpp). No intrinsics here; baseline flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fastdropout/kernel_table.hpp"
#include "parallel_fused.hpp"

namespace fastdropout {

// The window mask: its shape (C order, the order of the bits) and, per axis, the
// stride of that axis in the global mask (mod 2**64; unused for axes of size 1).
// Element c of the window sits at global mask index sum(c[k] * gstride[k]); its stream
// position is stream.offset + that index (the caller folds the window's start and the
// call's offset into stream.offset).
constexpr std::size_t kMaxWindowDims = 64;  // NumPy's limit on the number of axes

struct WindowLayout {
    std::vector<std::size_t> dims;
    std::vector<std::uint64_t> gstride;
};

// Both throw std::invalid_argument (before any work) for more than kMaxWindowDims axes
// or a stride count that differs from the axis count.
//
// Dense window, fused: a.n == product(w.dims) elements of x/y in C order; element i gets
// the decision at its global position. a.bits (optional) receives the window's mask
// bits (bit i for element i, high bits of the last byte 0).
void run_window_forward(const KernelTable& table, Dtype dt, const ForwardArgs& a,
                        const WindowLayout& w);

// Mask bits only: bits receives product(w.dims) bits, the window's mask in C order.
void run_window_gen_bits(const KernelTable& table, const StreamArgs& s, std::uint8_t* bits,
                         const WindowLayout& w);

// The fused kernels (docs/spec.md sections 9 and 10) on a block of shape dims (C
// order, broadcast as given; w is the window of the mask). Without a broadcast axis
// the mask has the block's shape: one pass computes the mask (to a.bits when it is
// not null) and the output together, as a plain call does. With one, a.bits
// (required) first receives the window's mask bits (run_window_gen_bits), then one
// pass applies them with op's kernel. The bias column of element i is i modulo the
// bias size either way: the block's own index.
void run_window_fused(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                      const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                      const WindowLayout& w);

}  // namespace fastdropout
