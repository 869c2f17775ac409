// The window kernel (see fastdropout/window_kernels.hpp), written once against the
// vec_<isa>.hpp vocabulary and dropout_generic.hpp's Philox helpers. kernels/<isa>.cpp
// includes it right after dropout_generic.hpp, in the same translation unit, so it
// shares that file's internal helpers and its rules: internal linkage for everything
// but window_kernels(), and no std:: templates (no weak symbols across ISAs).
//
// Why a kernel of its own: the dense kernels compute the stream in fills of
// kFillBlocks Philox blocks from a run's first block, so a run shorter than a fill
// pays for a whole one (plus a straddled block at each end). Here the blocks that a
// list of runs needs are collected first, each once, then computed kPassBlocks at a
// time with every lane in use, and the runs' bits are copied out of the result.

#ifndef FASTDROPOUT_ISA
#error "define FASTDROPOUT_ISA before including window_generic.hpp"
#endif

#include <cstddef>
#include <cstdint>

#include "fastdropout/window_kernels.hpp"

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// Blocks collected before one Philox pass over them (a multiple of kPassBlocks), and
// runs (or pieces of runs) waiting for those blocks.
constexpr std::size_t kRunBlocks = 1024;
constexpr std::size_t kRunPending = 512;
constexpr std::size_t kKeepWords = kRunBlocks * 4 / 64;
static_assert(kRunBlocks % static_cast<std::size_t>(kPassBlocks) == 0,
              "kRunBlocks must be a multiple of kPassBlocks");

// Writes bits one after another from bit 0 of `out` (little-endian bit order, byte by
// byte through store_bits, so the layout does not depend on the host).
class BitWriter {
  public:
    explicit BitWriter(std::uint8_t* out) : out_(out) {}

    // The low `count` (1..64) bits of v, whose higher bits are 0.
    FASTDROPOUT_INLINE void put(std::uint64_t v, std::size_t count) {
        acc_ |= v << used_;
        used_ += count;
        if (used_ >= 64) {
            store_bits(out_, acc_, 8);
            out_ += 8;
            used_ -= 64;
            acc_ = used_ == 0 ? 0 : v >> (count - used_);
        }
    }

    // The last partial word: ceil(used / 8) bytes.
    FASTDROPOUT_INLINE void finish() {
        if (used_ != 0) {
            store_bits(out_, acc_, (used_ + 7) / 8);
        }
    }

  private:
    std::uint8_t* out_;
    std::uint64_t acc_ = 0;
    std::size_t used_ = 0;  // bits in acc_, < 64 between calls
};

// The runs' bits, collected block by block (see the file comment).
class RunBits {
  public:
    FASTDROPOUT_INLINE RunBits(const StreamArgs& s, std::uint8_t* out)
        : rk_(make_round_keys(s.k0, s.k1)), out_(out) {
        broadcast_keys(rk_, kv_);
        if (s.threshold == 0) {
            constant_ = true;  // p == 0: all kept
            const_bits_ = ~std::uint64_t{0};
        } else if (s.threshold > 0xFFFFFFFFu) {
            constant_ = true;  // threshold 2**32: all dropped
            const_bits_ = 0;
        } else {
            t_ = set1(static_cast<std::uint32_t>(s.threshold));
        }
        // Counter slots past the last collected block are computed too (a pass is
        // always whole); give them defined values.
        for (std::size_t k = 0; k < kRunBlocks + static_cast<std::size_t>(kLanes); ++k) {
            lo_[k] = 0;
            hi_[k] = 0;
        }
    }

    // The next `len` bits: stream positions pos, pos + 1, ... (mod 2**64).
    FASTDROPOUT_INLINE void append(std::uint64_t pos, std::size_t len) {
        if (constant_) {
            for (; len >= 64; len -= 64) {
                out_.put(const_bits_, 64);
            }
            if (len != 0) {
                out_.put(const_bits_ & low_bits(len), len);
            }
            return;
        }
        while (len != 0) {
            const std::uint64_t block = pos >> 2;  // < 2**62
            const auto shift = static_cast<std::size_t>(pos & 3u);
            // The previous run may have ended in this very block: use it again.
            const bool reuse = nblocks_ != 0 && block == last_;
            const std::size_t first = reuse ? nblocks_ - 1 : nblocks_;
            if (first == kRunBlocks || npending_ == kRunPending) {
                flush();
                continue;
            }
            const std::size_t room = 4 * (kRunBlocks - first) - shift;
            const std::size_t m = len < room ? len : room;
            const std::size_t need = (shift + m + 3) / 4;  // blocks from `block`
            if (reuse) {
                if (need > 1) {
                    push_blocks((block + 1) & kStreamBlockMask, need - 1);
                }
            } else {
                push_blocks(block, need);
            }
            last_ = (block + need - 1) & kStreamBlockMask;
            pending_[npending_].bit = 4 * first + shift;
            pending_[npending_].len = m;
            ++npending_;
            pos += m;
            len -= m;
        }
    }

    FASTDROPOUT_INLINE void finish() {
        flush();
        out_.finish();
    }

  private:
    struct Pending {
        std::size_t bit;  // first bit of the piece in keep_
        std::size_t len;
    };

    // Counters of blocks b, b+1, ..., b+count-1 (mod 2**62) into the next slots.
    FASTDROPOUT_INLINE void push_blocks(std::uint64_t b, std::size_t count) {
        const auto lo = static_cast<std::uint32_t>(b);
        const auto hi = static_cast<std::uint32_t>(b >> 32);
        if (nblocks_ == 0) {
            hi0_ = hi;
            mixed_ = false;
        }
        std::uint32_t* plo = lo_ + nblocks_;
        if (static_cast<std::uint64_t>(lo) + (count - 1) <= 0xFFFFFFFFu) {
            // No carry into the high word (so no wrap at 2**62 either): whole vectors
            // of consecutive counters; the last store may run up to kLanes - 1 slots
            // past the end, which the arrays leave room for.
            std::uint32_t* phi = hi_ + nblocks_;
            const U32 step = iota();
            const U32 vhi = set1(hi);
            for (std::size_t j = 0; j < count; j += static_cast<std::size_t>(kLanes)) {
                store(plo + j, add(set1(lo + static_cast<std::uint32_t>(j)), step));
                store(phi + j, vhi);
            }
            mixed_ = mixed_ || hi != hi0_;
        } else {
            for (std::size_t j = 0; j < count; ++j) {  // once every 2**32 blocks
                const std::uint64_t c = (b + j) & kStreamBlockMask;
                plo[j] = static_cast<std::uint32_t>(c);
                hi_[nblocks_ + j] = static_cast<std::uint32_t>(c >> 32);
            }
            mixed_ = true;
        }
        nblocks_ += count;
    }

    // Philox over the collected blocks, then the pending pieces' bits out.
    FASTDROPOUT_INLINE void flush() {
        if (nblocks_ != 0) {
            compute();
        }
        for (std::size_t r = 0; r < npending_; ++r) {
            std::size_t bit = pending_[r].bit;
            std::size_t len = pending_[r].len;
            for (; len != 0;) {
                const std::size_t k = len < 64 ? len : 64;
                out_.put(keep_at(bit, k), k);
                bit += k;
                len -= k;
            }
        }
        nblocks_ = 0;
        npending_ = 0;
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
        const std::size_t passes =
            (nblocks_ + static_cast<std::size_t>(kPassBlocks) - 1) / static_cast<std::size_t>(kPassBlocks);
        for (std::size_t w = 0; w < kKeepWords + 1; ++w) {
            keep_[w] = 0;
        }
        if (!mixed_ && uhi_.hi != hi0_) {
            set_uniform_hi(uhi_, hi0_, rk_);
        }
        const U32 zero = set1(0);
        for (std::size_t pass = 0; pass < passes; ++pass) {
            U32 c[kSets][4];
            const std::size_t base = pass * static_cast<std::size_t>(kPassBlocks);
            for (int s = 0; s < kSets; ++s) {
                const std::size_t slot = base + static_cast<std::size_t>(s * kLanes);
                c[s][0] = load(lo_ + slot);
                if (mixed_) {
                    c[s][1] = load(hi_ + slot);
                    c[s][2] = zero;
                    c[s][3] = zero;
                }
            }
            if (mixed_) {
                philox_rounds(c, kv_, 0, kPhiloxRounds - 1);
            } else {
                philox10_uniform_hi(c, uhi_, kv_);
            }
            finish_keep_bits(c, kv_, t_, keep_, static_cast<int>(4 * base));
        }
    }

    RoundKeys rk_;
    RoundKeyVecs kv_;
    UniformHi uhi_;
    U32 t_{};
    BitWriter out_;
    bool constant_ = false;
    std::uint64_t const_bits_ = 0;
    std::uint32_t lo_[kRunBlocks + static_cast<std::size_t>(kLanes)];
    std::uint32_t hi_[kRunBlocks + static_cast<std::size_t>(kLanes)];
    std::uint64_t keep_[kKeepWords + 1];  // one spare word for keep_at's second read
    Pending pending_[kRunPending];
    std::size_t nblocks_ = 0;
    std::size_t npending_ = 0;
    std::uint64_t last_ = 0;  // the last collected block
    std::uint32_t hi0_ = 0;   // the first collected block's high counter word
    bool mixed_ = false;      // some collected block has another high word
};

void gen_bits_runs_kernel(const StreamArgs& s, const BitRun* runs, std::size_t nruns,
                          std::uint8_t* bits) {
    RunBits rb(s, bits);
    for (std::size_t r = 0; r < nruns; ++r) {
        rb.append(s.offset + runs[r].pos, runs[r].len);
    }
    rb.finish();
}

const WindowKernels kWindowKernels = {
    FASTDROPOUT_ISA_NAME,
    &gen_bits_runs_kernel,
};

}  // namespace

const WindowKernels& window_kernels() { return kWindowKernels; }

}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout
