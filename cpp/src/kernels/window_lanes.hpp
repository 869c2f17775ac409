// Keep bits of many runs of one length, one SIMD lane per run. window_generic.hpp
// includes it (same translation unit, same rules: internal linkage, no std::
// templates); its RunStream uses it for stretches of equal runs.
//
// Why: a window of a chunked array is mostly runs of one length (a block's rows),
// each starting anywhere in the stream. The collector in window_generic.hpp packs
// their Philox blocks tightly, but pays scalar bookkeeping per run (storing counters,
// cutting each run's bits out of the result at a bit offset, stitching) that cost as
// much as the Philox work itself on 64-element runs. Here lane l of set s computes
// the blocks of run s * kLanes + l, block k of every run in the same pass: the
// counters are one vector add per pass, nothing is stored per block, and pass k gives
// row k, whose nibble j is run j's block k. A nibble transpose (16 rows at a time,
// transpose16: vectorised where the ISA defines FASTDROPOUT_VEC_TRANSPOSE16) turns
// the rows into each run's own bit string, from which its bits are read at its
// shift within the first block.

#ifndef FASTDROPOUT_ISA
#error "define FASTDROPOUT_ISA before including window_lanes.hpp"
#endif

#include <cstddef>
#include <cstdint>

namespace fastdropout {
namespace FASTDROPOUT_ISA {
namespace {

// Runs per group (one Philox pass computes one block of each), and the run lengths
// this path takes: shorter runs would waste too much of their last block row (the
// collector packs them), longer ones go to the dense kernels anyway (window.cpp).
constexpr std::size_t kLaneRuns = static_cast<std::size_t>(kSets) * static_cast<std::size_t>(kLanes);
constexpr std::size_t kLaneMinRun = 32;
constexpr std::size_t kLaneMaxRun = 1024;
// Block rows a group needs at most (a run at shift 3), in whole transposes of 16.
constexpr std::size_t kLaneChunks = (kLaneMaxRun + 3 + 3) / 4 / 16 + 1;
constexpr std::size_t kLaneRows = 16 * kLaneChunks;
static_assert(4 * kLanes <= 32, "a row of keep bits must fit 32 bits");
static_assert(kLaneRows * 4 >= kLaneMaxRun + 3, "rows for the longest run");

#if !defined(FASTDROPOUT_VEC_TRANSPOSE16)
// rows[0..nrows-1] (nrows <= 16) hold 4 * kLanes keep bits each, nibble l for lane
// l; out[l] gets nibble l of rows[0], rows[1], ..., rows[nrows-1] as its nibbles 0,
// 1, ..., nrows - 1, the higher ones 0.
FASTDROPOUT_INLINE void transpose16(const std::uint32_t* rows, std::size_t nrows,
                                    std::uint64_t* out) {
    for (int l = 0; l < kLanes; ++l) {
        std::uint64_t w = 0;
        for (std::size_t k = 0; k < nrows; ++k) {
            w |= static_cast<std::uint64_t>((rows[k] >> (4 * l)) & 0xFu) << (4 * k);
        }
        out[l] = w;
    }
}
#endif

// One group of runs: begin() takes the runs, compute_rows() computes block rows a few
// at a time (so that a caller can interleave them with its loads and stores, as the
// dense kernels interleave their fills), finish() computes the rest and transposes.
class LaneGroup {
  public:
    // g runs (g a multiple of kLanes, at most kLaneRuns) of `len` elements (kLaneMinRun
    // .. kLaneMaxRun) whose first elements sit at stream positions offset + runs[j].pos.
    FASTDROPOUT_INLINE void begin(const BitRun* runs, std::uint64_t offset, std::size_t g,
                                  std::size_t len) {
        // One loop without branches: the shifts and blocks, and what decides the rows
        // and the counter path (the largest shift and low word, any other high word).
        const std::uint64_t hi0 = (offset + runs[0].pos) >> 34;  // block_[0] >> 32
        std::uint64_t max_shift = 0;
        std::uint64_t max_lo = 0;
        std::uint64_t other_hi = 0;
        for (std::size_t j = 0; j < g; ++j) {
            const std::uint64_t pos = offset + runs[j].pos;  // mod 2**64
            const std::uint64_t shift = pos & 3u;
            const std::uint64_t block = pos >> 2;  // < 2**62
            shift_[j] = shift;
            block_[j] = block;
            lo_[j] = static_cast<std::uint32_t>(block);
            max_shift = shift > max_shift ? shift : max_shift;
            max_lo = (block & 0xFFFFFFFFu) > max_lo ? (block & 0xFFFFFFFFu) : max_lo;
            other_hi |= (block >> 32) ^ hi0;
        }
        g_ = g;
        len_ = len;
        shifted_ = max_shift != 0;
        nrows_ = (static_cast<std::size_t>(max_shift) + len + 3) / 4;
        k_ = 0;
        // One high counter word for every block of every run, and no carry out of the
        // low word (so no wrap at 2**62 either): the cheaper first rounds apply.
        hi_ = static_cast<std::uint32_t>(hi0);
        uniform_ = other_hi == 0 && max_lo + (nrows_ - 1) <= 0xFFFFFFFFu;
    }

    FASTDROPOUT_INLINE std::size_t nrows() const { return nrows_; }
    FASTDROPOUT_INLINE std::size_t runs() const { return g_; }

    // The next `count` block rows (fewer when fewer are left).
    FASTDROPOUT_INLINE void compute_rows(const RoundKeyVecs& kv, UniformHi& uhi,
                                         const RoundKeys& rk, U32 t, std::size_t count) {
        if (k_ >= nrows_) {
            return;
        }
        const std::size_t end = nrows_ - k_ < count ? nrows_ : k_ + count;
        if (uniform_ && uhi.hi != hi_) {
            set_uniform_hi(uhi, hi_, rk);
        }
        switch (g_ / static_cast<std::size_t>(kLanes)) {
            case 1: rows<1>(kv, uhi, t, k_, end); break;
            case 2: rows<2>(kv, uhi, t, k_, end); break;
            case 3: rows<3>(kv, uhi, t, k_, end); break;
            default: rows<4>(kv, uhi, t, k_, end); break;
        }
        k_ = end;
    }

    // The rows left, the transpose, and each run's bits moved down by its shift: after
    // this, bits() reads the group.
    FASTDROPOUT_INLINE void finish(const RoundKeyVecs& kv, UniformHi& uhi, const RoundKeys& rk,
                                   U32 t) {
        compute_rows(kv, uhi, rk, t, nrows_);
        // Rows past nrows read as 0, and one more chunk is 0 (the shift below reads
        // the chunk after the last).
        const std::size_t nchunks = (nrows_ + 15) / 16;
        const std::size_t nsets = g_ / static_cast<std::size_t>(kLanes);
        for (std::size_t s = 0; s < nsets; ++s) {
            for (std::size_t c = 0; c < nchunks; ++c) {
                const std::size_t n = nrows_ - 16 * c < 16 ? nrows_ - 16 * c : 16;
                transpose16(&rows_[s][16 * c], n, &trans_[c][s * static_cast<std::size_t>(kLanes)]);
            }
        }
        if (!shifted_) {
            // every run starts at its first block's first element: the chunks are
            // the runs' bits as they stand (the first ceil(len_ / 64) of them hold
            // the run, and bits() reads no further)
            return;
        }
        for (std::size_t j = 0; j < g_; ++j) {
            trans_[nchunks][j] = 0;
        }
        // Chunk c of run j from bit shift_[j] on; (v << 1) << (63 - s) is v << (64 - s)
        // without the undefined shift by 64 when s is 0. A loop the compiler
        // vectorises (variable shifts) where the ISA has them.
        // Only the chunks that hold run bits (len_ of them from the shift on) are
        // moved; the group size is read once (the stores could alias the member).
        const std::size_t g = g_;
        const std::size_t nout = (len_ + 63) / 64;
        for (std::size_t c = 0; c < nout; ++c) {
            std::uint64_t* cur = trans_[c];
            const std::uint64_t* nxt = trans_[c + 1];
            for (std::size_t j = 0; j < g; ++j) {
                const std::uint64_t sh = shift_[j];
                cur[j] = (cur[j] >> sh) | ((nxt[j] << 1) << (63 - sh));
            }
        }
    }

    // Keep bits of run j's elements 64i .. 64i + 63 (bits past the run: garbage).
    FASTDROPOUT_INLINE std::uint64_t bits(std::size_t j, std::size_t i) const {
        return trans_[i][j];
    }

    // Run j's first 64 bits, j = 0 .. g-1, one after another (bits(j, 0)).
    FASTDROPOUT_INLINE const std::uint64_t* first_words() const { return trans_[0]; }

  private:
    // rows_[s][k] for k in [k0, k1): lane l of set s computes block block_[s*kLanes+l] + k.
    template <std::size_t N>
    FASTDROPOUT_NOINLINE void rows(const RoundKeyVecs& kv, const UniformHi& uhi, U32 t,
                                   std::size_t k0, std::size_t k1) {
        const std::size_t lanes = static_cast<std::size_t>(kLanes);
        const U32 rk0 = kv.k0[kPhiloxRounds - 1];
        const U32 rk1 = kv.k1[kPhiloxRounds - 1];
        if (uniform_) {
            U32 base[N];
            for (std::size_t s = 0; s < N; ++s) {
                base[s] = load(lo_ + s * lanes);
            }
            for (std::size_t k = k0; k < k1; ++k) {
#if defined(__GNUC__)
                // The round keys stay in kv, read as memory operands: left to itself
                // GCC hoists their loads out of this loop and, short of registers,
                // copies them to the stack on every call (two rows at a time: see
                // RunStream::next). Windows of 64-element runs: 1.29-1.34x -> 1.25-1.31x
                // the plain call (README, "windows' lane rows").
                __asm__ volatile("" ::: "memory");
#endif
                const U32 vk = set1(static_cast<std::uint32_t>(k));
                U32 c[N][4];
                for (std::size_t s = 0; s < N; ++s) {
                    c[s][0] = add(base[s], vk);
                }
                philox10_uniform_hi(c, uhi, kv);
                for (std::size_t s = 0; s < N; ++s) {
                    rows_[s][k] = static_cast<std::uint32_t>(last_round_keep_bits(c[s], rk0, rk1, t));
                }
            }
            return;
        }
        // Some run's blocks cross a 2**32 boundary of the counter, or the runs have
        // different high words: once in 2**32 blocks, so built lane by lane.
        const U32 zero = set1(0);
        for (std::size_t k = k0; k < k1; ++k) {
            std::uint32_t lo[N * static_cast<std::size_t>(kLanes)];
            std::uint32_t hi[N * static_cast<std::size_t>(kLanes)];
            for (std::size_t j = 0; j < N * lanes; ++j) {
                const std::uint64_t b = (block_[j] + k) & kStreamBlockMask;
                lo[j] = static_cast<std::uint32_t>(b);
                hi[j] = static_cast<std::uint32_t>(b >> 32);
            }
            U32 c[N][4];
            for (std::size_t s = 0; s < N; ++s) {
                c[s][0] = load(lo + s * lanes);
                c[s][1] = load(hi + s * lanes);
                c[s][2] = zero;
                c[s][3] = zero;
            }
            philox_rounds(c, kv, 0, kPhiloxRounds - 1);
            for (std::size_t s = 0; s < N; ++s) {
                rows_[s][k] = static_cast<std::uint32_t>(last_round_keep_bits(c[s], rk0, rk1, t));
            }
        }
    }

    std::size_t g_ = 0;
    std::size_t len_ = 0;
    std::size_t nrows_ = 0;
    std::size_t k_ = 0;  // rows computed
    std::uint32_t hi_ = 0;
    bool uniform_ = true;
    bool shifted_ = false;  // some run starts past its first block's first element
    std::uint64_t block_[kLaneRuns];
    std::uint32_t lo_[kLaneRuns];
    std::uint64_t shift_[kLaneRuns];
    std::uint32_t rows_[kSets][kLaneRows];
    std::uint64_t trans_[kLaneChunks + 1][kLaneRuns];
};

}  // namespace

}  // namespace FASTDROPOUT_ISA
}  // namespace fastdropout
