// Threads and array layout around a KernelTable: OpenMP over chunks whose edges are
// multiples of 64 elements, and the walk over broadcast (spatial) layouts. No
// intrinsics here; baseline flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fastdropout/kernel_table.hpp"

namespace fastdropout {

// n > 0: at most n threads (capped at max_num_threads()); n <= 0: back to OpenMP's
// own setting. Both also set OpenMP's setting of the calling thread.
void set_num_threads(int n);
// Threads a large call from the calling thread will use.
int get_num_threads();
// OpenMP's setting when first asked (at import): what set_num_threads(0) restores.
int default_num_threads();
// The largest team: a few threads per processor.
int max_num_threads();
// Threads of the last multi-chunk kernel call (1 when it ran serially).
int last_team_size();
bool has_openmp();

// Dense, fused: a.n elements of x/y, a.bits (optional) gets a.n mask bits.
void run_forward(const KernelTable& table, Dtype dt, const ForwardArgs& a);

// Mask bits only: n mask elements into bits.
void run_gen_bits(const KernelTable& table, const StreamArgs& s, std::uint8_t* bits,
                  std::size_t n);

// Apply mask bits laid out in the mask shape (dims with the broadcast axes set to 1,
// C order) to C-contiguous x of shape `dims`. a.bits/a.scale/a.scaled are used;
// a.bit0 and a.all_kept are set here.
void run_apply(const KernelTable& table, Dtype dt, const ApplyArgs& a,
               const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast);
// run_apply for a dense mask (mask element i is bit i of a.bits) of n elements: the
// same chunks and kernel calls, with no layout to walk.
void run_apply_dense(const KernelTable& table, Dtype dt, const ApplyArgs& a, std::size_t n);

// Streaming stores for large outputs: the forward and apply kernels write outputs of
// at least stream_threshold() bytes with non-temporal stores (by default a quarter of
// the last-level cache, last_level_cache_bytes(), 0 if unknown).
// set_stream_threshold(kDefaultStreamThreshold) restores the default (tests set 0 to
// stream every output).
constexpr std::size_t kDefaultStreamThreshold = ~std::size_t{0};
std::size_t last_level_cache_bytes();
// The L1 data cache of one core, in bytes (32 KiB if the OS does not say).
std::size_t l1_data_cache_bytes();
std::size_t stream_threshold();
void set_stream_threshold(std::size_t bytes);

// Whether dropout_add's streaming loop (two input streams, FusedArgs::prefetch_pair)
// prefetches x and the residual 4 KiB ahead in software, as the one-input streaming
// loops always do. On an AMD Zen 4 guest beyond its L3 the hardware prefetchers alone
// did better there (float32: 0.73-0.90x the time, one run in six 0.99x); the one-input
// loops measured the same or better with prefetching (kPrefetchBytes in
// dropout_generic.hpp). So by default: not on AMD CPUs, yes elsewhere.
// set_prefetch_paired_streams(-1) restores the default, 0 / 1 force it off / on
// (tests cover both loops).
bool prefetch_paired_streams();
void set_prefetch_paired_streams(int mode);

// The layout walk of run_apply with a caller's segment function: seg(ctx, run, begin,
// end) for runs of elements [begin, end) whose decisions `run` gives, split over the
// threads (fused kernels of docs/spec.md sections 9 and 10 with broadcast masks).
using SegmentFn = void (*)(void* ctx, const MaskRun& run, std::size_t begin, std::size_t end);
void run_masked(const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                const std::uint8_t* bits, SegmentFn seg, void* ctx);

// How many chunks (threads) the kernels use for n elements, and fn(ctx, t, begin, end)
// over [0, n) split into nt chunks whose edges are multiples of 64 (t < nt).
using ChunkFn = void (*)(void* ctx, std::size_t t, std::size_t begin, std::size_t end);
std::size_t plan_chunks(std::size_t n);
void run_chunks(std::size_t n, std::size_t nt, ChunkFn fn, void* ctx);

// dst = a XOR b over nbytes, split like run_copy: the bound of a kernel that reads two
// arrays and writes one (dropout_add), streaming stores for outputs as large as the
// kernels stream.
void run_stream2(const void* a, const void* b, void* dst, std::size_t nbytes);

// A copy of nbytes split over the same threads as the kernels: the benchmarks'
// physical-limit baseline (same bytes moved, same thread count, same stores: streaming
// on x86 for outputs of at least stream_threshold() bytes, memcpy otherwise).
void run_copy(const void* src, void* dst, std::size_t nbytes);

// Orders the streaming stores of the kernel calls that left their fence to the caller
// (ForwardArgs::fence, ApplyArgs::fence, FusedArgs::fence): one per thread, after its
// last such call.
void store_fence();

// Whether any axis of size != 1 is broadcast, i.e. whether the mask differs from
// a dense one.
bool has_broadcast(const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast);

}  // namespace fastdropout
