// Threads and mask layouts for the fused kernels of SPEC sections 9 (dropout + residual
// add, grad_bias) and 10 (alpha dropout), on top of parallel.hpp's chunking and layout
// walk. No intrinsics here; baseline flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fastdropout/kernel_table.hpp"

namespace fastdropout {

enum class FusedOp : int { kAdd = 0, kAlpha = 1 };

// Training forward of x (C-contiguous, shape dims): with no broadcast axis the mask is
// generated in the same pass (a.bits optional); otherwise a.bits (required, n_mask
// bits) receives the mask first and a second, streaming pass applies it.
void run_fused_forward(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                       const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                       std::size_t n_mask);

// Every element kept (evaluation of dropout_add): n elements.
void run_fused_all_kept(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                        std::size_t n);

// grad_x = apply(a) over n elements with a dense mask (a.bits, or a.all_kept), and
// acc[c] = sum over rows, in row order, of grad_x[row, c] as float64, for rows of
// ncols elements (n a multiple of ncols). Threads split the columns, so the sums are
// the same for any thread count.
void run_apply_sum(const KernelTable& table, Dtype dt, const ApplyArgs& a, std::size_t n,
                   std::size_t ncols, double* acc);

}  // namespace fastdropout

namespace fastdropout {

// out[i] = a[i] + b[i] for n float32 values over the kernels' threads and chunks: the
// benchmarks' read-two-write-one baseline for dropout_add.
void run_stream_add(const float* a, const float* b, float* out, std::size_t n);

}  // namespace fastdropout
