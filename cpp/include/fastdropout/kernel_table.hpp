// One record per instruction set: its name and the kernel entry points.
// Each kernels/<isa>.cpp defines fastdropout::<isa>::kernel_table() and nothing else
// with external linkage.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastdropout/kernel_args.hpp"
#include "fastdropout/window_kernels.hpp"

namespace fastdropout {

struct KernelTable {
    const char* name;
    // Fused mask generation + select + scale (+ mask bit write) for elements
    // [begin, end); begin is a multiple of 64 (so mask bytes are never shared).
    void (*forward[kNumDtypes])(const ForwardArgs&, std::size_t begin, std::size_t end);
    // Mask bits only, for mask elements [begin, end); begin a multiple of 64.
    void (*gen_bits)(const StreamArgs&, std::uint8_t* bits, std::size_t begin,
                     std::size_t end);
    // Apply stored bits (or all-kept) to elements [begin, end); any begin.
    void (*apply[kNumDtypes])(const ApplyArgs&, std::size_t begin, std::size_t end);
    // docs/spec.md section 9, dense: mask generated for elements [begin, end) (begin a
    // multiple of 64) and applied with the residual add.
    void (*add_forward[kNumDtypes])(const FusedArgs&, std::size_t begin, std::size_t end);
    // The same with decisions from a MaskRun (broadcast masks, evaluation); any begin.
    void (*add_apply[kNumDtypes])(const FusedArgs&, const MaskRun&, std::size_t begin,
                                  std::size_t end);
    // docs/spec.md section 10, dense and from a MaskRun.
    void (*alpha_forward[kNumDtypes])(const FusedArgs&, std::size_t begin, std::size_t end);
    void (*alpha_apply[kNumDtypes])(const FusedArgs&, const MaskRun&, std::size_t begin,
                                    std::size_t end);
    // Stored bits applied as apply[] does (a.bit0, a.all_kept honoured), and each
    // result, as float64, added to acc[col] in element order, where element `begin`
    // is in column col0 and the column advances by one per element, wrapping at ncols
    // (grad_bias of docs/spec.md section 9).
    void (*apply_sum[kNumDtypes])(const ApplyArgs&, std::size_t begin, std::size_t end,
                                  double* acc, std::size_t col0, std::size_t ncols);
    // The same over a band of rows: row r < rows is elements start + r * stride +
    // [0, width), its element k added to acc[k]; each column meets the rows in order.
    // With a.stream_stores, y + start is 64-byte aligned and stride elements a whole
    // number of 64-byte lines.
    void (*apply_sum_band[kNumDtypes])(const ApplyArgs&, std::size_t start, std::size_t stride,
                                       std::size_t rows, std::size_t width, double* acc);
    // Raw Philox4x32-10 words for n blocks with counters
    // ((first + i) mod 2**64 as two words, c2, c3): out[4*i + w]. For tests and KATs.
    void (*philox_blocks)(std::uint32_t k0, std::uint32_t k1, std::uint64_t first,
                          std::uint32_t c2, std::uint32_t c3, std::size_t n,
                          std::uint32_t* out);
    // The window kernels of the same instruction set (window_kernels.hpp).
    const WindowKernels* window;
};

namespace scalar { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
namespace avx512fp16 { const KernelTable& kernel_table(); }
namespace neon { const KernelTable& kernel_table(); }

}  // namespace fastdropout
