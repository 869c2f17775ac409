// Threads and mask layouts for the fused kernels (see parallel_fused.hpp).
#include "parallel_fused.hpp"

#include <algorithm>
#include <vector>

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
    const KernelTable* table;
    Dtype dt;
    std::size_t rows;
    std::size_t ncols;
    double* acc;
    std::size_t rot;        // the threads split rotated columns u = (c + rot) mod ncols
    std::size_t band_rows;  // whole rows per band kernel call
    std::size_t tile;       // columns per tile (at most kTileColumns unless `wide`)
    double* wide;           // one thread: a tile of every column (acc itself when rot == 0)
};

// The sums of a thread's columns are kept in tiles of at most kTileColumns (16 KiB of
// float64, in L1) while the rows go by. The order of each column's sum (row after
// row) does not depend on the tiling, the banding or the split.
constexpr std::size_t kTileColumns = 2048;
// One thread's rotated copy of every sum, at most 512 KiB (in L2).
constexpr std::size_t kSweepColumns = std::size_t{1} << 16;

// Rows per band kernel call. With more than one thread each thread reads a part of
// every row, and walking its part of 8 rows at once, 64 columns at a time, ran
// 1.3-1.8x as fast as row after row on a Zen 4 guest (2 threads, 2**24 float32 in
// rows of 1024 and 4096; bands of 4-16 rows alike). One thread sweeps whole rows: row
// after row while its sums take at most a quarter of L1 (rows of 512 and 1024 float32
// took 1.3-2.3x as long in bands of 8), in bands of 8 beyond that, where the sums
// loaded and stored once per row would leave L1 (rows of 2048-16384: 1.1-1.7x as
// fast in bands). README "Performance", "dropout_add_backward's grad_bias".
constexpr std::size_t kBandRows = 8;

// Rotated columns [u0, u1) (a tile) summed into `sums`, whose element j is rotated
// column u0 + j. In memory, rotated row r of those columns is the flat range
// starting at r * ncols + u0 - rot: with rot > 0 the first rot rotated columns are
// the last columns of the row before, so rotated rows run from 0 to rows inclusive,
// clipped to the array. Rows the array clips go through the sweep kernel one by one;
// whole ones through the band kernel.
void sum_tile(const SumCtx* c, std::size_t u0, std::size_t u1, double* sums) {
    const std::size_t n = c->rows * c->ncols;
    const std::size_t width = u1 - u0;
    const auto whole = [&](std::size_t r) {
        const std::size_t shifted = r * c->ncols + u0;  // flat start + rot
        return shifted >= c->rot && shifted + width <= n + c->rot;
    };
    for (std::size_t r = 0; r <= c->rows;) {
        const std::size_t shifted = r * c->ncols + u0;
        if (whole(r)) {
            std::size_t count = 1;
            while (count < c->band_rows && r + count <= c->rows && whole(r + count)) {
                ++count;
            }
            c->table->apply_sum_band[c->dt](*c->a, shifted - c->rot, c->ncols, count, width,
                                            sums);
            r += count;
            continue;
        }
        if (shifted + width > c->rot && shifted < n + c->rot) {
            const std::size_t b = shifted > c->rot ? shifted - c->rot : 0;
            const std::size_t e = std::min(n, shifted + width - c->rot);
            c->table->apply_sum[c->dt](*c->a, b, e, sums + (b + c->rot - shifted), 0, e - b);
        }
        ++r;
    }
}

// A thread's block of rotated columns [u0, u1). Each tile is summed into
// accumulators of the thread's own (64-byte aligned, on its stack), copied in and
// back once: threads never write to one cache line of the sums. One thread sums every
// column in one tile: in acc itself, or in a rotated copy.
void sum_columns(void* ctx, std::size_t, std::size_t u0, std::size_t u1) {
    const auto* c = static_cast<const SumCtx*>(ctx);
    if (c->wide == c->acc) {
        sum_tile(c, u0, u1, c->acc + u0);
    } else {
        alignas(64) double local[kTileColumns];
        double* sums = c->wide != nullptr ? c->wide : local;
        const auto column = [c](std::size_t u) { return (u + c->ncols - c->rot) % c->ncols; };
        for (std::size_t t0 = u0; t0 < u1; t0 += c->tile) {
            const std::size_t t1 = std::min(u1, t0 + c->tile);
            for (std::size_t j = 0; j < t1 - t0; ++j) {
                sums[j] = c->acc[column(t0 + j)];
            }
            sum_tile(c, t0, t1, sums);
            for (std::size_t j = 0; j < t1 - t0; ++j) {
                c->acc[column(t0 + j)] = sums[j];
            }
        }
    }
    if (c->a->stream_stores) {
        store_fence();
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
    // Threads take blocks of at least 64 columns; rows narrower than one group of 64
    // go in one sweep whose column index wraps inside the kernel.
    const std::size_t nt = std::min(plan_chunks(n), (ncols + 63) / 64);
    if (ncols < 64) {
        table.apply_sum[dt](a, 0, n, acc, 0, ncols);
        return;
    }
    // When rows are whole lines but y is not line-aligned, each row's first line also
    // holds the last `rot` elements of the row before. The threads then split the
    // rotated columns u = (c + rot) mod ncols at multiples of 64, which fall on line
    // boundaries: the thread that owns column 0 also owns the columns that share its
    // line (split plainly, two threads fought over that line once per row: float16
    // rows of 1024 took four times as long on two threads as on one), and every
    // group of 64 rotated columns starts a line, so large outputs can be streamed.
    std::size_t rot = 0;
    const auto y_addr = reinterpret_cast<std::uintptr_t>(a.y);
    const bool whole_lines = (ncols * esize) % 64 == 0 && y_addr % esize == 0;
    if (whole_lines) {
        rot = (y_addr % 64) / esize;
    }
    ApplyArgs s = a;
    s.stream_stores = whole_lines && n * esize >= stream_threshold();
    SumCtx ctx{&s, &table, dt, n / ncols, ncols, acc, rot, kBandRows, kTileColumns, nullptr};
    // One thread sweeps whole rows in memory order, its sums in acc itself, or (rows
    // rotated to stream) in a rotated copy of acc while that stays in L2 (wider rows
    // go tile by tile).
    std::vector<double> rotated;
    if (nt <= 1) {
        if (!s.stream_stores) {
            ctx.rot = 0;  // cache-resident: no line to share, nothing to align
        }
        if (ncols * sizeof(double) <= l1_data_cache_bytes() / 4) {
            ctx.band_rows = 1;
        }
        if (ctx.rot == 0) {
            ctx.tile = ncols;
            ctx.wide = acc;
        } else if (ncols <= kSweepColumns) {
            rotated.resize(ncols + 8);  // 64-byte aligned below, as the stack tiles are
            const auto address = reinterpret_cast<std::uintptr_t>(rotated.data());
            ctx.tile = ncols;
            ctx.wide = rotated.data() + (64 - address % 64) % 64 / sizeof(double);
        }
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
