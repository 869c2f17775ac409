// The window kernel (see fastdropout/window_kernels.hpp), written once against the
// vec_<isa>.hpp vocabulary and dropout_generic.hpp's Philox helpers. dropout_generic.hpp
// includes it before its kernel table, in the same translation unit, so it shares that
// file's internal helpers and its rules: internal linkage for everything (the record
// kWindowKernels is reached through KernelTable::window), and no std:: templates (no
// weak symbols across ISAs).
//
// Why a kernel of its own: the dense kernels compute the stream in fills of
// kFillBlocks Philox blocks from a run's first block, so a run shorter than a fill
// pays for a whole one (plus a straddled block at each end). Here runs of one length
// (a block's rows) take one SIMD lane each (window_lanes.hpp); for the others the
// blocks they need are collected first, each once, then computed kPassBlocks at a
// time with every lane in use, and the runs' bits are copied out of the result.

#ifndef FASTDROPOUT_ISA
#error "define FASTDROPOUT_ISA before including window_generic.hpp"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fastdropout/window_kernels.hpp"
#include "window_lanes.hpp"

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// Blocks collected before one Philox pass over them (a multiple of kPassBlocks), and
// runs (or pieces of runs) waiting for those blocks. Small, so that the forward
// kernel's Philox work and its loads and stores interleave closely, as in the dense
// kernel.
constexpr std::size_t kRunBlocks = 128;
constexpr std::size_t kRunPending = 128;
constexpr std::size_t kKeepWords = kRunBlocks * 4 / 64;
// Words a constant stream (p = 0, or every element dropped) hands out per refill.
constexpr std::size_t kConstWords = 64;
static_assert(kConstWords <= kLaneRuns * kLaneMaxRun / 64, "RunStream::words_ holds them");
static_assert(kRunBlocks % static_cast<std::size_t>(kPassBlocks) == 0,
              "kRunBlocks must be a multiple of kPassBlocks");

// The keep bits of a list of runs, one after another, 64 at a time (like BitStream
// for one run): the blocks the runs need are collected (see the file comment),
// computed, and their bits copied out in order.
class RunStream {
  public:
    FASTDROPOUT_INLINE RunStream(const StreamArgs& s, const BitRun* runs, std::size_t nruns)
        : rk_(make_round_keys(s.k0, s.k1)), runs_(runs), nruns_(nruns), offset_(s.offset) {
        broadcast_keys(rk_, kv_);
        if (s.threshold == 0 || s.threshold > 0xFFFFFFFFu) {
            // p == 0 (all kept) or threshold 2**32 (all dropped): words of one value,
            // handed out by refill() again and again
            constant_ = true;
            const std::uint64_t w = s.threshold == 0 ? ~std::uint64_t{0} : 0;
            for (std::size_t i = 0; i < kConstWords; ++i) {
                words_[i] = w;
            }
        } else {
            t_ = set1(static_cast<std::uint32_t>(s.threshold));
        }
        if (nruns_ != 0) {
            pos_ = offset_ + runs_[0].pos;
            left_ = runs_[0].len;
        }
    }

    // The next 64 bits (past the runs' total: 0, except for a constant stream).
    FASTDROPOUT_INLINE std::uint64_t next() {
        if (used_ == nwords_) {
            refill();
            if (used_ == nwords_) {
                return 0;
            }
        }
        const std::uint64_t w = src_[used_++];
        if (used_ == row_at_) {
            // Two of the next lane group's rows (one Philox pass alone is short next
            // to the call), spread over this group's words; finish() computes
            // whatever is left.
            lanes_.compute_rows(kv_, uhi_, rk_, t_, 2);
            row_at_ += row_step_;
        }
        return w;
    }

  private:
    struct Pending {
        std::size_t bit;  // first bit of the piece in keep_
        std::size_t len;
    };

    // Fills words_ with the next output words: a group of equal runs through the lane
    // path when one starts here, else pieces of runs through the collector (until the
    // blocks or the pending list are full, the runs end, or such a group starts),
    // whose blocks are computed and whose pieces' bits are written to words_.
    FASTDROPOUT_INLINE void refill() {
        used_ = 0;
        if (constant_) {  // the constructor's words, once more
            nwords_ = kConstWords;
            return;
        }
        nwords_ = 0;
        src_ = words_;
        while (nwords_ == 0 && (run_ < nruns_ || acc_used_ != 0)) {
            // a group begun ahead (lane_refill) starts here and has its size
            const std::size_t g = ahead_ ? lanes_.runs() : lane_group();
            if (g != 0) {
                lane_refill(g);
            } else {
                collect();
                if (nblocks_ != 0) {
                    compute();
                }
                for (std::size_t r = 0; r < npending_; ++r) {
                    std::size_t bit = pending_[r].bit;
                    std::size_t len = pending_[r].len;
                    for (; len >= 64; len -= 64, bit += 64) {  // whole words
                        emit(keep_at(bit, 64));
                    }
                    if (len != 0) {
                        put(keep_at(bit, len), len);
                    }
                }
                nblocks_ = 0;
                npending_ = 0;
            }
            if (run_ == nruns_ && acc_used_ != 0) {  // the last, partial word
                words_[nwords_++] = acc_;
                acc_ = 0;
                acc_used_ = 0;
            }
        }
    }

    // Runs for the lane path from run_ on: 0 unless run_ has not been started and it
    // and the next kLanes - 1 runs have one length in kLaneMinRun .. kLaneMaxRun; then
    // as many runs of that length as follow, at most kLaneRuns, in whole sets.
    FASTDROPOUT_INLINE std::size_t lane_group() const {
        const std::size_t lanes = static_cast<std::size_t>(kLanes);
        if (run_ + lanes > nruns_ || left_ != runs_[run_].len) {
            return 0;
        }
        const std::size_t len = left_;
        if (len < kLaneMinRun || len > kLaneMaxRun) {
            return 0;
        }
        const std::size_t most = nruns_ - run_ < kLaneRuns ? nruns_ - run_ : kLaneRuns;
        // A block's rows all have one length: check them all in a loop without a
        // branch per run (an OR of differences, which the compiler vectorises), and
        // count run by run only when one differs.
        const BitRun* r = runs_ + run_;
        std::size_t diff = 0;
        for (std::size_t j = 1; j < most; ++j) {
            diff |= r[j].len ^ len;
        }
        std::size_t g = most;
        if (diff != 0) {
            g = 1;
            while (runs_[run_ + g].len == len) {
                ++g;
            }
        }
        return g - g % lanes;
    }

    // The lane path for runs run_ .. run_ + g - 1 (see window_lanes.hpp). When another
    // lane group follows, it is begun here and next() computes its rows while the
    // caller works through this group's words.
    FASTDROPOUT_INLINE void lane_refill(std::size_t g) {
        const std::size_t len = left_;
        if (!ahead_) {  // else begun by the previous lane group, for these very runs
            lanes_.begin(runs_ + run_, offset_, g, len);
        }
        ahead_ = false;
        lanes_.finish(kv_, uhi_, rk_, t_);
        const std::size_t whole = len / 64;
        const std::size_t rem = len % 64;
        if (len == 64 && acc_used_ == 0 && nwords_ == 0) {
            // the runs' words are the output words: read where they are (the next
            // group's rows, computed meanwhile, do not touch them)
            src_ = lanes_.first_words();
            nwords_ = g;
        } else if (rem == 0 && acc_used_ == 0) {  // whole words, nothing to stitch
            std::uint64_t* out = words_ + nwords_;
            for (std::size_t j = 0; j < g; ++j) {
                for (std::size_t i = 0; i < whole; ++i) {
                    out[j * whole + i] = lanes_.bits(j, i);
                }
            }
            nwords_ += g * whole;
        } else {
            for (std::size_t j = 0; j < g; ++j) {
                for (std::size_t i = 0; i < whole; ++i) {
                    emit(lanes_.bits(j, i));
                }
                if (rem != 0) {
                    put(lanes_.bits(j, whole) & low_bits(rem), rem);
                }
            }
        }
        row_at_ = 0;  // no group ahead (yet)
        run_ += g;
        if (run_ == nruns_) {
            left_ = 0;
            return;
        }
        pos_ = offset_ + runs_[run_].pos;
        left_ = runs_[run_].len;
        const std::size_t next = lane_group();
        if (next != 0) {
            lanes_.begin(runs_ + run_, offset_, next, left_);
            ahead_ = true;
            // every row_step_-th word of this group computes two rows ahead
            const std::size_t pairs = (lanes_.nrows() + 1) / 2;
            row_step_ = nwords_ > pairs ? nwords_ / pairs : 1;
            row_at_ = row_step_;
        }
    }

    FASTDROPOUT_INLINE void collect() {
        while (run_ < nruns_) {
            if (left_ == 0) {
                if (++run_ < nruns_) {
                    pos_ = offset_ + runs_[run_].pos;
                    left_ = runs_[run_].len;
                    if (lane_group() != 0) {
                        return;  // refill hands this run on to the lane path
                    }
                }
                continue;
            }
            const std::uint64_t block = pos_ >> 2;  // < 2**62
            const auto shift = static_cast<std::size_t>(pos_ & 3u);
            // The previous piece may have ended in this very block: use it again.
            const bool reuse = nblocks_ != 0 && block == last_;
            const std::size_t first = reuse ? nblocks_ - 1 : nblocks_;
            if (first == kRunBlocks || npending_ == kRunPending) {
                return;
            }
            const std::size_t room = 4 * (kRunBlocks - first) - shift;
            const std::size_t m = left_ < room ? left_ : room;
            const std::size_t need = (shift + m + 3) / 4;  // blocks from `block`
            if (!reuse) {
                push_blocks(block, need);
            } else if (need > 1) {
                push_blocks((block + 1) & kStreamBlockMask, need - 1);
            }
            last_ = (block + need - 1) & kStreamBlockMask;
            pending_[npending_].bit = 4 * first + shift;
            pending_[npending_].len = m;
            ++npending_;
            pos_ += m;
            left_ -= m;
        }
    }

    // Appends 64 bits to the output words.
    FASTDROPOUT_INLINE void emit(std::uint64_t v) {
        words_[nwords_++] = acc_ | (v << acc_used_);
        acc_ = acc_used_ == 0 ? 0 : v >> (64 - acc_used_);
    }

    // Appends the low `count` (1..64) bits of v (higher bits 0) to the output words.
    FASTDROPOUT_INLINE void put(std::uint64_t v, std::size_t count) {
        acc_ |= v << acc_used_;
        acc_used_ += count;
        if (acc_used_ >= 64) {
            words_[nwords_++] = acc_;
            acc_used_ -= 64;
            acc_ = acc_used_ == 0 ? 0 : v >> (count - acc_used_);
        }
    }

    // Counters of blocks b, b+1, ..., b+count-1 (mod 2**62) into the next slots. The
    // high words are stored only once some block's differs from the first one's
    // (mixed_), which is rare: until then hi_ is not needed.
    FASTDROPOUT_INLINE void push_blocks(std::uint64_t b, std::size_t count) {
        const auto lo = static_cast<std::uint32_t>(b);
        const auto hi = static_cast<std::uint32_t>(b >> 32);
        if (nblocks_ == 0) {
            hi0_ = hi;
            mixed_ = false;
        }
        const bool carry = static_cast<std::uint64_t>(lo) + (count - 1) > 0xFFFFFFFFu;
        if (!mixed_ && (carry || hi != hi0_)) {
            for (std::size_t j = 0; j < nblocks_; ++j) {
                hi_[j] = hi0_;
            }
            mixed_ = true;
        }
        std::uint32_t* plo = lo_ + nblocks_;
        std::uint32_t* phi = hi_ + nblocks_;
        if (!carry) {
            // No carry into the high word (so no wrap at 2**62 either): whole vectors
            // of consecutive counters; the last store may run up to kLanes - 1 slots
            // past the end, which the arrays leave room for.
            const U32 step = iota();
            for (std::size_t j = 0; j < count; j += static_cast<std::size_t>(kLanes)) {
                store(plo + j, add(set1(lo + static_cast<std::uint32_t>(j)), step));
            }
            if (mixed_) {
                const U32 vhi = set1(hi);
                for (std::size_t j = 0; j < count; j += static_cast<std::size_t>(kLanes)) {
                    store(phi + j, vhi);
                }
            }
        } else {
            for (std::size_t j = 0; j < count; ++j) {  // once every 2**32 blocks
                const std::uint64_t c = (b + j) & kStreamBlockMask;
                plo[j] = static_cast<std::uint32_t>(c);
                phi[j] = static_cast<std::uint32_t>(c >> 32);
            }
        }
        nblocks_ += count;
    }

    // keep_ bits [bit, bit + k), k in 1..64.
    FASTDROPOUT_INLINE std::uint64_t keep_at(std::size_t bit, std::size_t k) const {
        const std::size_t w = bit / 64;
        const auto o = static_cast<unsigned>(bit % 64);
        std::uint64_t v = keep_[w] >> o;
        if (o != 0) {
            v |= keep_[w + 1] << (64 - o);
        }
        return v & low_bits(k);
    }

    // Bits 4j .. 4j+3 of keep_ for collected block j, whole passes of kPassBlocks.
    FASTDROPOUT_INLINE void compute() {
        const std::size_t pass_blocks = static_cast<std::size_t>(kPassBlocks);
        const std::size_t passes = (nblocks_ + pass_blocks - 1) / pass_blocks;
        for (std::size_t w = 0; w < kKeepWords + 1; ++w) {
            keep_[w] = 0;
        }
        // The last pass is whole: the slots after the last collected block get defined
        // values (their bits are never read).
        for (std::size_t k = nblocks_; k < passes * pass_blocks; ++k) {
            lo_[k] = 0;
            hi_[k] = 0;
        }
        const std::size_t lanes = static_cast<std::size_t>(kLanes);
        if (!mixed_) {  // one high counter word: the cheaper first rounds
            if (uhi_.hi != hi0_) {
                set_uniform_hi(uhi_, hi0_, rk_);
            }
            for (std::size_t pass = 0; pass < passes; ++pass) {
                const std::size_t base = pass * pass_blocks;
                U32 c[kSets][4];
                for (std::size_t s = 0; s < static_cast<std::size_t>(kSets); ++s) {
                    c[s][0] = load(lo_ + base + s * lanes);
                }
                philox10_uniform_hi(c, uhi_, kv_);
                finish_keep_bits(c, kv_, t_, keep_, static_cast<int>(4 * base));
            }
            return;
        }
        const U32 zero = set1(0);
        for (std::size_t pass = 0; pass < passes; ++pass) {
            const std::size_t base = pass * pass_blocks;
            U32 c[kSets][4];
            for (std::size_t s = 0; s < static_cast<std::size_t>(kSets); ++s) {
                c[s][0] = load(lo_ + base + s * lanes);
                c[s][1] = load(hi_ + base + s * lanes);
                c[s][2] = zero;
                c[s][3] = zero;
            }
            philox_rounds(c, kv_, 0, kPhiloxRounds - 1);
            finish_keep_bits(c, kv_, t_, keep_, static_cast<int>(4 * base));
        }
    }

    RoundKeys rk_;
    RoundKeyVecs kv_;
    UniformHi uhi_;
    U32 t_{};
    const BitRun* runs_;
    std::size_t nruns_;
    std::uint64_t offset_;
    bool constant_ = false;
    // the run being collected: index, next stream position, elements left
    std::size_t run_ = 0;
    std::uint64_t pos_ = 0;
    std::size_t left_ = 0;
    std::uint32_t lo_[kRunBlocks + static_cast<std::size_t>(kLanes)];
    std::uint32_t hi_[kRunBlocks + static_cast<std::size_t>(kLanes)];
    std::uint64_t keep_[kKeepWords + 1];  // one spare word for keep_at's second read
    Pending pending_[kRunPending];
    std::size_t nblocks_ = 0;
    std::size_t npending_ = 0;
    std::uint64_t last_ = 0;  // the last collected block
    std::uint32_t hi0_ = 0;   // the first collected block's high counter word
    bool mixed_ = false;      // some collected block has another high word
    LaneGroup lanes_;
    bool ahead_ = false;         // lanes_ holds the group that starts at run_, begun
    std::size_t row_at_ = 0;     // next() computes two of its rows when used_ gets here
    std::size_t row_step_ = 1;   // (0: never) and then moves this many words on
    // output words of the last refill (a lane group's or a collection's), and the
    // partial word being assembled
    std::uint64_t words_[kLaneRuns * kLaneMaxRun / 64 + kKeepWords + 1];
    const std::uint64_t* src_ = words_;  // words_, or a lane group's own words
    std::size_t nwords_ = 0;
    std::size_t used_ = 0;
    std::uint64_t acc_ = 0;
    std::size_t acc_used_ = 0;
};

std::size_t total_of(const BitRun* runs, std::size_t nruns) {
    std::size_t n = 0;
    for (std::size_t r = 0; r < nruns; ++r) {
        n += runs[r].len;
    }
    return n;
}

void gen_bits_runs_kernel(const StreamArgs& s, const BitRun* runs, std::size_t nruns,
                          std::uint8_t* bits) {
    const std::size_t n = total_of(runs, nruns);
    RunStream stream(s, runs, nruns);
    std::size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        store_bits(bits + i / 8, stream.next(), 8);
    }
    if (i < n) {
        const std::size_t rem = n - i;
        store_bits(bits + i / 8, stream.next() & low_bits(rem), (rem + 7) / 8);
    }
}

// forward_kernel with the bits of the runs: elements 0 .. total-1 of a.x / a.y, their
// mask bits (if a.bits) from bit 0; y with streaming stores if a.stream_stores (the
// dense kernel's streaming body, fed by the runs' stream: Philox and the memory
// traffic interleave as in a plain call).
template <class Ops>
void forward_runs_kernel(const ForwardArgs& a, const BitRun* runs, std::size_t nruns) {
    using T = typename Ops::T;
    const T* x = static_cast<const T*>(a.x);
    T* y = static_cast<T*>(a.y);
    const typename Ops::S s = Ops::scale_of(a.scale);
    const std::size_t n = total_of(runs, nruns);
    RunStream stream(a.stream, runs, nruns);
#if defined(FASTDROPOUT_VEC_STREAM)
    if (a.stream_stores) {
        forward_stream_body<Ops>(a, stream, 0, n);
        return;
    }
#endif
    const std::size_t ahead_end = a.prefetch_end > n ? a.prefetch_end : n;
    std::size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(x, y, i, ahead_end);
        const std::uint64_t b = stream.next();
        if (a.bits != nullptr) {
            store_bits(a.bits + i / 8, b, 8);
        }
        apply_group<Ops>(b, x + i, y + i, s, a.scaled);
    }
    if (i < n) {
        const std::size_t rem = n - i;
        const std::uint64_t b = stream.next() & low_bits(rem);
        if (a.bits != nullptr) {
            store_bits(a.bits + i / 8, b, (rem + 7) / 8);
        }
        apply_tail<Ops>(b, x + i, y + i, rem, s, a.scaled);
    }
}

// fused_loop's decisions from the runs' bits (and stored to a.bits, from bit 0 at
// element i0, when asked).
class RunsWord {
  public:
    FASTDROPOUT_INLINE RunsWord(const FusedArgs& a, std::size_t i0, const BitRun* runs,
                                std::size_t nruns)
        : stream_(a.stream, runs, nruns), bits_(a.bits), i0_(i0) {}
    FASTDROPOUT_INLINE std::uint64_t operator()(std::size_t i, std::size_t count) {
        const std::uint64_t b = stream_.next() & low_bits(count);
        if (bits_ != nullptr) {
            store_bits(bits_ + (i - i0_) / 8, b, (count + 7) / 8);
        }
        return b;
    }

  private:
    RunStream stream_;
    std::uint8_t* bits_;
    std::size_t i0_;
};

// add_forward_kernel / alpha_forward_kernel with the bits of the runs: elements i0 ..
// i0 + total - 1 of a.x, a.residual, a.y (element i's bias column is i mod a.bias_n,
// as in the dense kernels), their mask bits (if a.bits) from bit 0.
// With a.stream_stores, y goes out with streaming stores (fused_stream_body, fed by
// the runs' stream).
template <class E, bool kAdd>
FASTDROPOUT_INLINE void fused_runs(const FusedArgs& a, std::size_t i0, const BitRun* runs,
                                   std::size_t nruns) {
#if defined(FASTDROPOUT_VEC_STREAM)
    if (a.stream_stores) {
        RunStream stream(a.stream, runs, nruns);
        fused_stream_body<E, kAdd>(a, stream, i0, i0 + total_of(runs, nruns), i0);
        return;
    }
#endif
    RunsWord w(a, i0, runs, nruns);
    fused_loop<E, kAdd>(a, i0, i0 + total_of(runs, nruns), w, true);
}

template <class E>
void add_runs_kernel(const FusedArgs& a, std::size_t i0, const BitRun* runs, std::size_t nruns) {
    fused_runs<E, true>(a, i0, runs, nruns);
}

template <class E>
void alpha_runs_kernel(const FusedArgs& a, std::size_t i0, const BitRun* runs,
                       std::size_t nruns) {
    fused_runs<E, false>(a, i0, runs, nruns);
}

const WindowKernels kWindowKernels = {
    FASTDROPOUT_ISA_NAME,
    &gen_bits_runs_kernel,
    {&forward_runs_kernel<OpsF16>, &forward_runs_kernel<OpsF32>, &forward_runs_kernel<OpsF64>,
     &forward_runs_kernel<OpsBF16>},
    {&add_runs_kernel<EF16>, &add_runs_kernel<EF32>, &add_runs_kernel<EF64>,
     &add_runs_kernel<EBF16>},
    {&alpha_runs_kernel<EF16>, &alpha_runs_kernel<EF32>, &alpha_runs_kernel<EF64>,
     &alpha_runs_kernel<EBF16>},
};

}  // namespace

}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout
