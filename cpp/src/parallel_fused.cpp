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
    std::size_t rot;  // the threads split rotated columns u = (c + rot) mod ncols
};

// A thread sums its block of columns row after row: each column's sum runs over the
// rows in C order whatever the split.
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

// Rotated columns [u0, u1) (at most kTileColumns) summed into `local`, whose element
// j is rotated column u0 + j. In memory, rotated row r of those columns is the flat
// range starting at r * ncols + u0 - rot: with rot > 0 the first rot rotated
// columns are the last columns of the row before, so rotated rows run from 0 to
// rows inclusive, clipped to the array. Each column still meets its rows in order.
void sum_tile(const SumCtx* c, std::size_t u0, std::size_t u1, double* local) {
    const std::size_t n = c->rows * c->ncols;
    const std::size_t width = u1 - u0;
    for (std::size_t r = 0; r <= c->rows; ++r) {
        const std::size_t shifted = r * c->ncols + u0;  // flat start + rot
        if (shifted + width <= c->rot || shifted >= n + c->rot) {
            continue;
        }
        const std::size_t b = shifted > c->rot ? shifted - c->rot : 0;
        const std::size_t e = std::min(n, shifted + width - c->rot);
        const std::size_t ahead = b + kPrefetchRows * c->ncols;
        if (ahead < n) {
            const std::size_t ahead_end = std::min(n, e + kPrefetchRows * c->ncols);
            prefetch_block(c->a->x, ahead * c->esize, ahead_end * c->esize, false);
            prefetch_block(c->a->y, ahead * c->esize, ahead_end * c->esize, true);
        }
        c->fn(*c->a, b, e, local + (b + c->rot - shifted), 0, e - b);
    }
}

// A thread's block of rotated columns [u0, u1). Each tile is summed into
// accumulators of the thread's own (64-byte aligned, on its stack), copied in and
// back once: threads never write to one cache line of the sums.
void sum_columns(void* ctx, std::size_t, std::size_t u0, std::size_t u1) {
    const auto* c = static_cast<const SumCtx*>(ctx);
    alignas(64) double local[kTileColumns];
    const auto column = [c](std::size_t u) { return (u + c->ncols - c->rot) % c->ncols; };
    for (std::size_t t0 = u0; t0 < u1; t0 += kTileColumns) {
        const std::size_t t1 = std::min(u1, t0 + kTileColumns);
        for (std::size_t j = 0; j < t1 - t0; ++j) {
            local[j] = c->acc[column(t0 + j)];
        }
        sum_tile(c, t0, t1, local);
        for (std::size_t j = 0; j < t1 - t0; ++j) {
            c->acc[column(t0 + j)] = local[j];
        }
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
        FusedArgs s = a;
        s.stream_stores = n * dtype_size(dt) >= stream_threshold();
        s.prefetch_pair = prefetch_paired_streams();
        ForwardCtx ctx{&s, op == FusedOp::kAdd ? table.add_forward[dt] : table.alpha_forward[dt]};
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
    // No two threads write to one cache line of y. When rows are whole lines but y
    // is not line-aligned, each row's first line also holds the last `rot` elements
    // of the row before; the threads then split the rotated columns
    // u = (c + rot) mod ncols at multiples of 64, which fall on line boundaries, so
    // the thread that owns column 0 also owns the columns that share its line.
    // (Split plainly, the two threads would fight over that line once per row:
    // float16 rows of 1024 took four times as long on two threads as on one.)
    std::size_t rot = 0;
    const auto y_addr = reinterpret_cast<std::uintptr_t>(a.y);
    if ((ncols * esize) % 64 == 0 && y_addr % esize == 0) {
        rot = (y_addr % 64) / esize;
    }
    SumCtx ctx{&a, table.apply_sum[dt], n / ncols, ncols, acc, esize, rot};
    // Threads take blocks of at least 64 columns, each summed tile by tile; one thread
    // takes the whole array in one sweep (the column index wraps inside the kernel)
    // unless its sums would not stay in L2.
    const std::size_t nt = std::min(plan_chunks(n), (ncols + 63) / 64);
    if (nt <= 1 && ncols <= kSweepColumns) {
        ctx.fn(a, 0, n, acc, 0, ncols);
        return;
    }
    run_chunks(ncols, nt, &sum_columns, &ctx);
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
