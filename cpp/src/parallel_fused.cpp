// Threads and mask layouts for the fused kernels (see parallel_fused.hpp).
#include "parallel_fused.hpp"

#include <algorithm>

#include "parallel.hpp"

namespace fastdropout {
namespace {

struct ForwardCtx {
    const FusedArgs* a;
    void (*fn)(const FusedArgs&, std::size_t, std::size_t);
};

void forward_chunk(void* ctx, std::size_t, std::size_t b, std::size_t e) {
    const auto* c = static_cast<const ForwardCtx*>(ctx);
    c->fn(*c->a, b, e);
}

struct ApplyCtx {
    const FusedArgs* a;
    void (*fn)(const FusedArgs&, const MaskRun&, std::size_t, std::size_t);
};

void apply_segment(void* ctx, const MaskRun& run, std::size_t b, std::size_t e) {
    const auto* c = static_cast<const ApplyCtx*>(ctx);
    c->fn(*c->a, run, b, e);
}

void apply_all_kept(void* ctx, std::size_t, std::size_t b, std::size_t e) {
    const auto* c = static_cast<const ApplyCtx*>(ctx);
    const MaskRun run{nullptr, 0, RunKind::kAllKept};
    c->fn(*c->a, run, b, e);
}

struct SumCtx {
    const ApplyArgs* a;
    void (*fn)(const ApplyArgs&, std::size_t, std::size_t, double*, std::size_t, std::size_t);
    std::size_t rows;
    std::size_t ncols;
    double* acc;
    std::size_t esize;
    std::size_t shift;  // the threads split columns c + shift (see run_apply_sum)
};

// One block of columns [c0, c1), row after row: each column's sum runs over the rows
// in C order whatever the split.
// Each row's block is a short run in a new page, too short for the hardware
// prefetchers to ramp up: the block kPrefetchRows rows ahead is requested while the
// current one is processed.
constexpr std::size_t kPrefetchRows = 2;

void prefetch_block(const void* base, std::size_t begin_byte, std::size_t end_byte,
                    bool for_write) {
#if defined(__GNUC__) || defined(__clang__)
    const auto* p = static_cast<const char*>(base);
    for (std::size_t o = begin_byte; o < end_byte; o += 64) {
        if (for_write) {
            __builtin_prefetch(p + o, 1, 3);
        } else {
            __builtin_prefetch(p + o, 0, 3);
        }
    }
#else
    (void)base;
    (void)begin_byte;
    (void)end_byte;
    (void)for_write;
#endif
}

// Columns are summed in tiles of at most kTileColumns: a tile's float64 accumulators
// (16 KiB) stay in L1 while every row of the tile goes by, instead of streaming a
// whole row's worth of accumulators through the caches once per row. The order of
// each column's sum (row after row) does not depend on the tiling.
constexpr std::size_t kTileColumns = 2048;
// One thread sweeps the array in memory order while its sums (512 KiB) fit in L2.
constexpr std::size_t kSweepColumns = std::size_t{1} << 16;

// Columns [c0, c1) (at most kTileColumns) summed into `local`, whose element k is
// column c0 + k.
void sum_tile(const SumCtx* c, std::size_t c0, std::size_t c1, double* local) {
    for (std::size_t r = 0; r < c->rows; ++r) {
        const std::size_t base = r * c->ncols;
        if (r + kPrefetchRows < c->rows) {
            const std::size_t ahead = base + kPrefetchRows * c->ncols;
            prefetch_block(c->a->x, (ahead + c0) * c->esize, (ahead + c1) * c->esize, false);
            prefetch_block(c->a->y, (ahead + c0) * c->esize, (ahead + c1) * c->esize, true);
        }
        c->fn(*c->a, base + c0, base + c1, local, 0, c1 - c0);
    }
}

// A thread's block of columns, given as [v0, v1) of the shifted numbering. Each tile
// is summed into accumulators of the thread's own (64-byte aligned, on its stack),
// copied in and back once: threads never write to one cache line of the sums.
void sum_columns(void* ctx, std::size_t, std::size_t v0, std::size_t v1) {
    const auto* c = static_cast<const SumCtx*>(ctx);
    const std::size_t c0 = v0 > c->shift ? v0 - c->shift : 0;
    const std::size_t c1 = v1 > c->shift ? std::min(c->ncols, v1 - c->shift) : 0;
    alignas(64) double local[kTileColumns];
    for (std::size_t t0 = c0; t0 < c1; t0 += kTileColumns) {
        const std::size_t t1 = std::min(c1, t0 + kTileColumns);
        std::copy(c->acc + t0, c->acc + t1, local);
        sum_tile(c, t0, t1, local);
        std::copy(local, local + (t1 - t0), c->acc + t0);
    }
}

}  // namespace

void run_fused_forward(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                       const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                       std::size_t n_mask) {
    std::size_t n = 1;
    for (std::size_t d : dims) {
        n *= d;
    }
    if (!has_broadcast(dims, broadcast)) {
        ForwardCtx ctx{&a, op == FusedOp::kAdd ? table.add_forward[dt] : table.alpha_forward[dt]};
        run_chunks(n, plan_chunks(n), &forward_chunk, &ctx);
        return;
    }
    // The (small) broadcast mask first, then one streaming pass over the data.
    run_gen_bits(table, a.stream, a.bits, n_mask);
    ApplyCtx ctx{&a, op == FusedOp::kAdd ? table.add_apply[dt] : table.alpha_apply[dt]};
    run_masked(dims, broadcast, a.bits, &apply_segment, &ctx);
}

void run_fused_all_kept(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                        std::size_t n) {
    ApplyCtx ctx{&a, op == FusedOp::kAdd ? table.add_apply[dt] : table.alpha_apply[dt]};
    run_chunks(n, plan_chunks(n), &apply_all_kept, &ctx);
}

void run_apply_sum(const KernelTable& table, Dtype dt, const ApplyArgs& a, std::size_t n,
                   std::size_t ncols, double* acc) {
    if (n == 0 || ncols == 0) {
        return;
    }
    const std::size_t esize = dtype_size(dt);
    // When rows are whole cache lines, the threads' column blocks start on a line of
    // y, so no two threads write to one line of y (once per row otherwise): they
    // split columns c + shift at multiples of 64, and a column c is on a line
    // boundary when c = lead (mod 64 / esize).
    std::size_t shift = 0;
    const auto y_addr = reinterpret_cast<std::uintptr_t>(a.y);
    if ((ncols * esize) % 64 == 0 && y_addr % esize == 0) {
        const std::size_t per_line = 64 / esize;
        const std::size_t lead = ((64 - y_addr % 64) % 64) / esize;
        shift = (per_line - lead) % per_line;
    }
    SumCtx ctx{&a, table.apply_sum[dt], n / ncols, ncols, acc, esize, shift};
    // Threads take blocks of at least 64 columns, each summed tile by tile; one thread
    // takes the whole array in one sweep (the column index wraps inside the kernel)
    // unless its sums would not stay in L2.
    const std::size_t nt = std::min(plan_chunks(n), (ncols + shift + 63) / 64);
    if (nt <= 1 && ncols <= kSweepColumns) {
        ctx.fn(a, 0, n, acc, 0, ncols);
        return;
    }
    run_chunks(ncols + shift, nt, &sum_columns, &ctx);
}

}  // namespace fastdropout

namespace fastdropout {
namespace {

struct StreamAddCtx {
    const float* a;
    const float* b;
    float* out;
};

void stream_add_chunk(void* ctx, std::size_t, std::size_t b, std::size_t e) {
    const auto* c = static_cast<const StreamAddCtx*>(ctx);
    for (std::size_t i = b; i < e; ++i) {
        c->out[i] = c->a[i] + c->b[i];
    }
}

}  // namespace

void run_stream_add(const float* a, const float* b, float* out, std::size_t n) {
    StreamAddCtx ctx{a, b, out};
    run_chunks(n, plan_chunks(n), &stream_add_chunk, &ctx);
}

}  // namespace fastdropout
