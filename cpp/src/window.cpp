// The run walk behind windows (see window.hpp).
//
// Threads split the window's elements [0, n) exactly as the dense kernels do (chunk
// edges at multiples of 64, so no two threads write one mask byte); inside its chunk a
// thread walks the runs with an odometer over the outer axes (no division per run).
// Long runs (kDirectRun elements or more) go to the kernel one by one, with x, y and
// the stream rebased to the run's start: the kernel then always starts at element 0,
// the alignment it asks for. Shorter runs are gathered into batches of consecutive
// elements handed to the window kernels in one call (window_kernels.hpp: each Philox
// block once, whole vectors at a time): the fused forward_runs, or gen_bits_runs for
// the mask alone; outputs large enough for streaming stores get them in the fused
// kernel too.
// A run or batch whose first mask bit is not at a byte boundary gets its bits through
// a small per-thread buffer and is merged in with a shift.
#include "window.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "fastdropout/window_kernels.hpp"
#include "parallel.hpp"

namespace fastdropout {
namespace {

// Mask bits of one run go through the per-thread buffer in pieces of this many
// elements (a multiple of 64: 8 KiB of bits).
constexpr std::size_t kPieceBits = std::size_t{1} << 16;

// Runs at least this long go to the dense kernels by themselves: their fills waste
// at most one fill's worth of Philox blocks at the run's end (128 positions on
// AVX-512), while the fused dense kernel overlaps the Philox work with the loads and
// stores better than the window kernel can (measured crossover: about 1024).
constexpr std::size_t kDirectRun = 1024;

// Elements per batch of short runs (a multiple of 64).
constexpr std::size_t kBatchBits = 65536;
static_assert(kBatchBits % 64 == 0 && kBatchBits <= kPieceBits, "batch size");

// The window kernels that belong to the active kernel table.
const WindowKernels& window_kernels_of(const KernelTable& t) { return *t.window; }

// Runs per batch at most (a batch of many one-element runs is cut short).
constexpr std::size_t kBatchRuns = 2048;

// One thread's scratch: the runs of a batch and a bit buffer (a batch's or a long
// run's piece's bits when they do not start at a mask byte boundary). Left
// uninitialised (written before read) and sized for the call, so that a small call
// does not pay for clearing buffers sized for a large one.
struct ThreadBuf {
    explicit ThreadBuf(std::size_t n)
        : runs(new BitRun[std::min(n, kBatchRuns)]),
          bits(new std::uint8_t[(std::min(n, kPieceBits) + 7) / 8]) {}
    std::unique_ptr<BitRun[]> runs;
    std::unique_ptr<std::uint8_t[]> bits;
};

// Per-thread scratch for a call on n elements, allocated before the parallel region
// so that nothing in it throws.
std::vector<ThreadBuf> thread_bufs(std::size_t nt, std::size_t n) {
    std::vector<ThreadBuf> bufs;
    bufs.reserve(nt);
    for (std::size_t t = 0; t < nt; ++t) {
        bufs.emplace_back(n);
    }
    return bufs;
}

struct OuterDim {
    std::size_t size;
    std::uint64_t gstride;
};

// Runs of the window: drop size-1 axes, merge neighbours that are contiguous in the
// global stream (memory is C-contiguous anyway); the innermost axis is the run when its
// global stride is 1, else every run is one element long.
struct Runs {
    std::vector<OuterDim> outer;  // outer axes, C order
    std::size_t run = 1;          // elements per run
};

Runs plan_runs(const WindowLayout& w) {
    std::vector<OuterDim> m;
    for (std::size_t k = 0; k < w.dims.size(); ++k) {
        if (w.dims[k] == 1) {
            continue;
        }
        const OuterDim d{w.dims[k], w.gstride[k]};
        if (!m.empty() && m.back().gstride == d.gstride * d.size) {
            m.back().size *= d.size;
            m.back().gstride = d.gstride;
        } else {
            m.push_back(d);
        }
    }
    Runs r;
    if (!m.empty() && m.back().gstride == 1) {
        r.run = m.back().size;
        m.pop_back();
    }
    r.outer = m;
    return r;
}

// seg(i, g, len) for the runs (or parts of runs) covering elements [b, e): element i
// of the window (C order) is global mask index g, and the next len elements follow it
// in memory and in the stream. Whole runs one after another along the last outer
// axis go to many(i, g, stride, len, count) instead, count > 1 of them at once: run
// j of them is elements i + j * len, at global index g + j * stride (mod 2**64).
template <class Seg, class Many>
void walk_runs(const Runs& r, std::size_t b, std::size_t e, const Seg& seg, const Many& many) {
    if (b >= e) {
        return;
    }
    const std::size_t nd = r.outer.size();  // <= kMaxWindowDims (checked by the caller)
    std::size_t coord[kMaxWindowDims] = {};
    std::size_t item = b / r.run;
    std::size_t w = b % r.run;
    std::uint64_t g = 0;
    for (std::size_t k = nd; k-- > 0;) {
        coord[k] = item % r.outer[k].size;
        item /= r.outer[k].size;
        g += static_cast<std::uint64_t>(coord[k]) * r.outer[k].gstride;
    }
    for (std::size_t i = b; i < e;) {
        std::size_t steps = 1;  // runs the odometer moves on along the last axis
        if (w == 0 && nd != 0) {
            const OuterDim& last = r.outer[nd - 1];
            const std::size_t count = std::min(last.size - coord[nd - 1], (e - i) / r.run);
            if (count > 1) {
                many(i, g, last.gstride, r.run, count);
                i += count * r.run;
                steps = count;
            }
        }
        if (steps == 1) {
            const std::size_t len = std::min(r.run - w, e - i);
            seg(i, g + w, len);
            i += len;
            w = 0;
        }
        // next run: odometer over the outer axes
        if (nd == 0) {
            continue;
        }
        g += steps * r.outer[nd - 1].gstride;
        coord[nd - 1] += steps;
        if (coord[nd - 1] < r.outer[nd - 1].size) {
            continue;
        }
        g -= static_cast<std::uint64_t>(coord[nd - 1]) * r.outer[nd - 1].gstride;
        coord[nd - 1] = 0;
        for (std::size_t k = nd - 1; k-- > 0;) {
            g += r.outer[k].gstride;
            if (++coord[k] < r.outer[k].size) {
                break;
            }
            g -= static_cast<std::uint64_t>(coord[k]) * r.outer[k].gstride;
            coord[k] = 0;
        }
    }
}

// Writes bits [pos, pos + n) of dst from bits [0, n) of src (whose unused high bits
// are 0): the bits below pos in the first byte are kept, those above pos + n in the
// last byte are set to 0 (a later run of the same thread fills them).
void put_bits(std::uint8_t* dst, std::size_t pos, const std::uint8_t* src, std::size_t n) {
    const std::size_t src_bytes = (n + 7) / 8;
    std::uint8_t* d = dst + pos / 8;
    const unsigned sh = static_cast<unsigned>(pos % 8);
    if (sh == 0) {
        std::memcpy(d, src, src_bytes);
        return;
    }
    const std::size_t out_bytes = (sh + n + 7) / 8;
    unsigned carry = d[0] & ((1u << sh) - 1u);
    for (std::size_t k = 0; k < out_bytes; ++k) {
        const unsigned s = k < src_bytes ? src[k] : 0u;
        d[k] = static_cast<std::uint8_t>(carry | (s << sh));
        carry = s >> (8 - sh);
    }
}

// Short runs of one thread, gathered into batches of at most kBatchBits consecutive
// elements [i0, i0 + count), each handed to done(i0, count, runs, nruns, scratch)
// (scratch: kPieceBits / 8 bytes of the thread's own).
class Batch {
  public:
    explicit Batch(ThreadBuf& buf) : buf_(buf) {}

    // Elements [i, i + len), at global mask index g onwards.
    template <class Done>
    void add(std::size_t i, std::uint64_t g, std::size_t len, const Done& done) {
        if (len < kBatchBits - total_ && nruns_ + 1 < kBatchRuns) {  // fits, no flush due
            i0_ = total_ == 0 ? i : i0_;
            buf_.runs[nruns_++] = BitRun{g, len};
            total_ += len;
            return;
        }
        while (len != 0) {
            if (total_ == 0) {
                i0_ = i;
            }
            const std::size_t m = std::min(len, kBatchBits - total_);
            buf_.runs[nruns_++] = BitRun{g, m};
            total_ += m;
            i += m;
            g += m;
            len -= m;
            if (total_ == kBatchBits || nruns_ == kBatchRuns) {
                flush(done);
            }
        }
    }

    // count runs of len elements: elements i + j * len at global index g + j * stride,
    // j = 0 .. count - 1; the same batches as count calls of add(), with the runs
    // that fit the current batch written in one loop.
    template <class Done>
    void add_many(std::size_t i, std::uint64_t g, std::uint64_t stride, std::size_t len,
                  std::size_t count, const Done& done) {
        while (count != 0) {
            // runs that take add()'s first branch: total_ + len < kBatchBits and
            // nruns_ + 1 < kBatchRuns before each of them
            const std::size_t by_bits = total_ < kBatchBits ? (kBatchBits - total_ - 1) / len : 0;
            const std::size_t by_runs = kBatchRuns - 1 - nruns_;
            const std::size_t k = std::min(count, std::min(by_bits, by_runs));
            if (k == 0) {
                add(i, g, len, done);
                i += len;
                g += stride;
                --count;
                continue;
            }
            if (total_ == 0) {
                i0_ = i;
            }
            BitRun* runs = buf_.runs.get() + nruns_;
            for (std::size_t j = 0; j < k; ++j) {
                runs[j] = BitRun{g + j * stride, len};
            }
            nruns_ += k;
            total_ += k * len;
            i += k * len;
            g += k * stride;
            count -= k;
        }
    }

    template <class Done>
    void flush(const Done& done) {
        if (total_ == 0) {
            return;
        }
        done(i0_, total_, buf_.runs.get(), nruns_, buf_.bits.get());
        nruns_ = 0;
        total_ = 0;
    }

  private:
    ThreadBuf& buf_;
    std::size_t i0_ = 0;
    std::size_t total_ = 0;
    std::size_t nruns_ = 0;
};

// walk_runs' many() for the callers that batch short runs: a stretch of short runs
// to the batch in one go, longer runs one by one to seg (which batches or runs them).
template <class Done, class Seg>
auto batched_many(Batch& batch, const Done& done, const Seg& seg) {
    return [&batch, &done, &seg](std::size_t i, std::uint64_t g, std::uint64_t stride,
                                 std::size_t len, std::size_t count) {
        if (len < kDirectRun) {
            batch.add_many(i, g, stride, len, count, done);
            return;
        }
        for (std::size_t j = 0; j < count; ++j) {
            seg(i + j * len, g + j * stride, len);
        }
    };
}

// Where a batch's mask bits go: straight into the mask when the batch starts at a
// byte boundary, else into the scratch buffer (then merged in by put_back).
std::uint8_t* bits_for(std::uint8_t* mask, std::size_t i0, std::uint8_t* scratch) {
    return mask != nullptr && i0 % 8 == 0 ? mask + i0 / 8 : scratch;
}

void put_back(std::uint8_t* mask, std::size_t i0, const std::uint8_t* bits, std::size_t count) {
    if (mask != nullptr && i0 % 8 != 0) {
        put_bits(mask, i0, bits, count);
    }
}

// A batch of the mask bits only.
struct GenBatch {
    const WindowKernels& wk;
    const StreamArgs& s;
    std::uint8_t* mask;

    void operator()(std::size_t i0, std::size_t count, const BitRun* runs, std::size_t nruns,
                    std::uint8_t* scratch) const {
        std::uint8_t* dst = bits_for(mask, i0, scratch);
        wk.gen_bits_runs(s, runs, nruns, dst);
        put_back(mask, i0, dst, count);
    }
};

// A batch of the forward pass: the fused window kernel, with streaming stores for
// outputs large enough for them (memory-bound). The thread's chunk goes on in memory
// after the batch up to element `end`, so prefetches run on into the next batch, and
// the chunk ends with one store fence (its caller's) rather than one per batch.
struct ForwardBatch {
    const WindowKernels& wk;
    Dtype dt;
    const ForwardArgs& a;
    std::size_t es;
    bool streaming;
    std::size_t end;

    void operator()(std::size_t i0, std::size_t count, const BitRun* runs, std::size_t nruns,
                    std::uint8_t* scratch) const {
        ForwardArgs f = a;
        f.x = static_cast<const unsigned char*>(a.x) + i0 * es;
        f.y = static_cast<unsigned char*>(a.y) + i0 * es;
        f.bits = a.bits == nullptr ? nullptr : bits_for(a.bits, i0, scratch);
        f.n = count;
        f.stream_stores = streaming;
        f.prefetch_end = end - i0;
        f.fence = false;
        wk.forward_runs[dt](f, runs, nruns);
        put_back(a.bits, i0, f.bits, count);
    }
};

void check_layout(const WindowLayout& w) {
    if (w.dims.size() > kMaxWindowDims || w.gstride.size() != w.dims.size()) {
        throw std::invalid_argument("window layout: at most 64 axes, one stride per axis");
    }
}

// body(t, begin, end) over parallel.hpp's chunks (a lambda through run_chunks' plain
// function pointer and context).
template <class Body>
void for_each_chunk(std::size_t n, std::size_t nt, const Body& body) {
    run_chunks(
        n, nt,
        [](void* ctx, std::size_t t, std::size_t b, std::size_t e) {
            (*static_cast<const Body*>(ctx))(t, b, e);
        },
        const_cast<Body*>(&body));
}

std::size_t count_of(const WindowLayout& w) {
    std::size_t n = 1;
    for (std::size_t d : w.dims) {
        n *= d;
    }
    return n;
}

struct FusedApplyCtx {
    const FusedArgs* a;
    void (*fn)(const FusedArgs&, const MaskRun&, std::size_t, std::size_t);
};

void fused_segment(void* ctx, const MaskRun& run, std::size_t b, std::size_t e) {
    const auto* c = static_cast<const FusedApplyCtx*>(ctx);
    c->fn(*c->a, run, b, e);
}

// Whether some axis of x (of size > 1) shares its mask entries (broadcast_axes).
bool broadcasts(const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast) {
    for (std::size_t k = 0; k < dims.size() && k < broadcast.size(); ++k) {
        if (broadcast[k] && dims[k] != 1) {
            return true;
        }
    }
    return false;
}

// A batch of dropout_add / alpha_dropout: the fused window kernel, with streaming
// stores for outputs large enough for them.
struct FusedBatch {
    const WindowKernels& wk;
    Dtype dt;
    FusedOp op;
    const FusedArgs& a;
    bool streaming;

    void operator()(std::size_t i0, std::size_t count, const BitRun* runs, std::size_t nruns,
                    std::uint8_t* scratch) const {
        FusedArgs f = a;
        f.bits = a.bits == nullptr ? nullptr : bits_for(a.bits, i0, scratch);
        f.stream_stores = streaming;
        f.fence = false;  // one fence after the thread's chunk (its caller's)
        f.prefetch_pair = prefetch_paired_streams();
        (op == FusedOp::kAdd ? wk.add_runs : wk.alpha_runs)[dt](f, i0, runs, nruns);
        put_back(a.bits, i0, f.bits, count);
    }
};

// dropout_add / alpha_dropout of a window whose mask has x's shape: mask and output
// in one pass, as in a plain call. Long runs that start at a mask byte boundary go to
// the dense fused kernel with the stream rebased so that element i of x sits at the
// run's global position (its element index also picks the bias column); every other
// run goes through batches and the fused window kernel.
void fused_window_one_pass(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                           const WindowLayout& w) {
    const std::size_t n = count_of(w);
    if (n == 0) {
        return;
    }
    const Runs r = plan_runs(w);
    const WindowKernels& wk = window_kernels_of(table);
    const auto fn = op == FusedOp::kAdd ? table.add_forward[dt] : table.alpha_forward[dt];
    // Streaming stores on the same rule as a plain call of n elements.
    const bool streaming = n * dtype_size(dt) >= stream_threshold();
    const std::size_t nt = plan_chunks(n);
    std::vector<ThreadBuf> bufs = thread_bufs(nt, n);
    for_each_chunk(n, nt, [&](std::size_t t, std::size_t b, std::size_t e) {
        Batch batch(bufs[t]);
        const FusedBatch apply_batch{wk, dt, op, a, streaming};
        const auto seg = [&](std::size_t i, std::uint64_t g, std::size_t len) {
            if (len < kDirectRun || (a.bits != nullptr && i % 8 != 0)) {
                batch.add(i, g, len, apply_batch);
                return;
            }
            batch.flush(apply_batch);
            FusedArgs run = a;
            run.stream.offset = a.stream.offset + g - i;  // mod 2**64: element i at g
            run.stream_stores = streaming;
            run.prefetch_pair = prefetch_paired_streams();
            run.fence = false;  // one fence after the chunk's last run (below)
            fn(run, i, i + len);
        };
        walk_runs(r, b, e, seg, batched_many(batch, apply_batch, seg));
        batch.flush(apply_batch);
        if (streaming) {
            store_fence();
        }
    });
}

}  // namespace

void run_window_forward(const KernelTable& table, Dtype dt, const ForwardArgs& a,
                        const WindowLayout& w) {
    check_layout(w);
    const std::size_t n = count_of(w);
    if (n == 0) {
        return;
    }
    const Runs r = plan_runs(w);
    const WindowKernels& wk = window_kernels_of(table);
    const auto fn = table.forward[dt];
    const std::size_t es = dtype_size(dt);
    // Streaming stores for y on the same rule as a plain call of n elements.
    const bool streaming = n * es >= stream_threshold();
    const auto* x = static_cast<const unsigned char*>(a.x);
    auto* y = static_cast<unsigned char*>(a.y);
    const std::size_t nt = plan_chunks(n);
    // Per-thread buffers, allocated here so nothing in the parallel region throws.
    std::vector<ThreadBuf> bufs = thread_bufs(nt, n);
    for_each_chunk(n, nt, [&](std::size_t t, std::size_t b, std::size_t e) {
        Batch batch(bufs[t]);
        const ForwardBatch apply_batch{wk, dt, a, es, streaming, e};
        const auto seg = [&](std::size_t i, std::uint64_t g, std::size_t len) {
            if (len < kDirectRun) {
                batch.add(i, g, len, apply_batch);
                return;
            }
            batch.flush(apply_batch);
            ForwardArgs run = a;
            run.stream.offset = a.stream.offset + g;  // mod 2**64, as the stream wraps
            run.stream_stores = streaming;
            run.fence = false;  // one fence after the chunk's last row (below)
            if (a.bits == nullptr || i % 8 == 0) {
                run.x = x + i * es;
                run.y = y + i * es;
                run.bits = a.bits == nullptr ? nullptr : a.bits + i / 8;
                run.n = len;
                run.prefetch_end = e - i;  // the next rows follow in memory
                fn(run, 0, len);
                return;
            }
            std::uint8_t* buf = bufs[t].bits.get();
            for (std::size_t done = 0; done < len; done += kPieceBits) {
                const std::size_t m = std::min(kPieceBits, len - done);
                run.x = x + (i + done) * es;
                run.y = y + (i + done) * es;
                run.stream.offset = a.stream.offset + g + done;
                run.bits = buf;
                run.n = m;
                fn(run, 0, m);
                put_bits(a.bits, i + done, buf, m);
            }
        };
        walk_runs(r, b, e, seg, batched_many(batch, apply_batch, seg));
        batch.flush(apply_batch);
        if (streaming) {
            store_fence();
        }
    });
}

void run_window_gen_bits(const KernelTable& table, const StreamArgs& s, std::uint8_t* bits,
                         const WindowLayout& w) {
    check_layout(w);
    const std::size_t n = count_of(w);
    if (n == 0) {
        return;
    }
    const Runs r = plan_runs(w);
    const WindowKernels& wk = window_kernels_of(table);
    const auto fn = table.gen_bits;
    const std::size_t nt = plan_chunks(n);
    std::vector<ThreadBuf> bufs = thread_bufs(nt, n);
    for_each_chunk(n, nt, [&](std::size_t t, std::size_t b, std::size_t e) {
        Batch batch(bufs[t]);
        const GenBatch keep{wk, s, bits};
        const auto seg = [&](std::size_t i, std::uint64_t g, std::size_t len) {
            if (len < kDirectRun) {
                batch.add(i, g, len, keep);
                return;
            }
            batch.flush(keep);
            StreamArgs run = s;
            if (i % 8 == 0) {
                run.offset = s.offset + g;
                fn(run, bits + i / 8, 0, len);
                return;
            }
            std::uint8_t* buf = bufs[t].bits.get();
            for (std::size_t done = 0; done < len; done += kPieceBits) {
                const std::size_t m = std::min(kPieceBits, len - done);
                run.offset = s.offset + g + done;
                fn(run, buf, 0, m);
                put_bits(bits, i + done, buf, m);
            }
        };
        walk_runs(r, b, e, seg, batched_many(batch, keep, seg));
        batch.flush(keep);
    });
}

void run_window_fused(const KernelTable& table, Dtype dt, FusedOp op, const FusedArgs& a,
                      const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                      const WindowLayout& w) {
    check_layout(w);
    if (!broadcasts(dims, broadcast)) {
        fused_window_one_pass(table, dt, op, a, w);
        return;
    }
    run_window_gen_bits(table, a.stream, a.bits, w);
    FusedApplyCtx ctx{&a, op == FusedOp::kAdd ? table.add_apply[dt] : table.alpha_apply[dt]};
    run_masked(dims, broadcast, a.bits, &fused_segment, &ctx);
}

}  // namespace fastdropout
