// Small broadcast (spatial) masks applied in one kernel call: the mask's decisions
// are spread into dense bits (bit i = the decision of element i) on the stack, a
// run of elements at a time with word operations that do not branch on the
// decisions, then the dense apply kernel runs once over all elements.
//
// The general layout walk (parallel.cpp's run_apply) branches on every decision of
// a channels_first map while it spreads them; with a fresh mask each call (a
// training loop, where the offset advances) those branches are unpredictable, and at
// 2**10 elements they cost about as much as the rest of the call. The results are
// the same: kept elements go through the same apply kernel, dropped ones are +0.0
// in both (docs/spec.md section 4).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastdropout/kernel_table.hpp"

namespace fastdropout {
namespace fast {

// Calls of at most this many elements are spread here (2 KiB of dense bits on the
// stack); larger ones, and ones with more than kSpreadMaxRuns runs, take run_apply.
constexpr std::size_t kSpreadMaxElements = std::size_t{1} << 14;
constexpr std::size_t kSpreadMaxRuns = 2048;
// Bytes past the last bit that readers may touch: 64-bit loads at any byte.
constexpr std::size_t kSpreadPad = 16;

// Little-endian 64-bit word at p (any alignment, any host byte order).
inline std::uint64_t load_le64(const std::uint8_t* p) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::uint64_t w = 0;
    std::memcpy(&w, p, sizeof w);
    return w;
#else
    std::uint64_t w = 0;
    for (int k = 7; k >= 0; --k) {
        w = (w << 8) | p[k];
    }
    return w;
#endif
}

inline void store_le64(std::uint8_t* p, std::uint64_t w) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::memcpy(p, &w, sizeof w);
#else
    for (int k = 0; k < 8; ++k) {
        p[k] = static_cast<std::uint8_t>(w >> (8 * k));
    }
#endif
}

// Appends bit strings to a buffer, LSB first, a 64-bit word at a time (no
// read-modify-write of memory, which would stall on the previous store).
class BitWriter {
public:
    explicit BitWriter(std::uint8_t* out) : out_(out) {}

    // The low len (1..56) bits of v.
    void put(std::uint64_t v, unsigned len) {
        v &= (std::uint64_t{1} << len) - 1;
        acc_ |= v << nacc_;  // nacc_ < 64
        const unsigned total = nacc_ + len;
        if (total >= 64) {  // then nacc_ >= 8, so 8 <= used < 64
            store_le64(out_, acc_);
            out_ += 8;
            const unsigned used = 64 - nacc_;
            acc_ = v >> used;
            nacc_ = total - 64;
        } else {
            nacc_ = total;
        }
    }

    // len copies of bit (0 or 1), without branching on it.
    void fill(unsigned bit, std::size_t len) {
        const std::uint64_t v = std::uint64_t{0} - static_cast<std::uint64_t>(bit & 1u);
        for (; len > 56; len -= 56) {
            put(v, 56);
        }
        put(v, static_cast<unsigned>(len));
    }

    // src[pos, pos + len) (src readable 8 bytes past its last bit).
    void copy(const std::uint8_t* src, std::size_t pos, std::size_t len) {
        for (; len > 56; len -= 56, pos += 56) {
            put(load_le64(src + pos / 8) >> (pos % 8), 56);
        }
        put(load_le64(src + pos / 8) >> (pos % 8), static_cast<unsigned>(len));
    }

    // The last partial word (the buffer has room for a whole one).
    void flush() {
        if (nacc_ != 0) {
            store_le64(out_, acc_);
        }
    }

private:
    std::uint8_t* out_;
    std::uint64_t acc_ = 0;
    unsigned nacc_ = 0;
};

struct SpreadDim {
    std::size_t size;
    bool broadcast;
    std::size_t mask_stride;  // kept dims: mask elements per step
};

// Applies the mask `bits` (shape dims with the broadcast axes set to 1, C order) to
// the n elements of a.x into a.y with one call of the dense apply kernel, if the call
// is small enough (see above); returns false, having done nothing, otherwise.
// Runs with the GIL held, on the calling thread.
inline bool apply_spread(const KernelTable& table, Dtype dt, const ApplyArgs& a_in,
                         const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                         std::size_t n, std::size_t n_mask, bool stream_stores) {
    if (n == 0 || n > kSpreadMaxElements) {
        return false;
    }
    // Merged dims: size-1 axes dropped, neighbours of the same kind joined.
    SpreadDim m[64];
    std::size_t nm = 0;
    for (std::size_t k = 0; k < dims.size(); ++k) {
        if (dims[k] == 1) {
            continue;
        }
        if (nm != 0 && m[nm - 1].broadcast == broadcast[k]) {
            m[nm - 1].size *= dims[k];
        } else if (nm < 64) {
            m[nm++] = {dims[k], static_cast<bool>(broadcast[k]), 0};
        } else {
            return false;
        }
    }
    std::size_t stride = 1;
    for (std::size_t k = nm; k-- > 0;) {
        if (!m[k].broadcast) {
            m[k].mask_stride = stride;
            stride *= m[k].size;
        }
    }
    if (nm <= 1 && (nm == 0 || !m[0].broadcast)) {
        return false;  // a dense mask: run_apply reads it as it is
    }
    const SpreadDim inner = m[nm - 1];
    const std::size_t runs = n / inner.size;
    if (runs > kSpreadMaxRuns) {
        return false;
    }
    alignas(8) std::uint8_t src[kSpreadMaxElements / 8 + kSpreadPad];
    alignas(8) std::uint8_t dense[kSpreadMaxElements / 8 + kSpreadPad];
    const std::size_t mask_bytes = (n_mask + 7) / 8;
    std::memcpy(src, a_in.bits, mask_bytes);  // n_mask <= n: fits, zero-padded below
    std::memset(src + mask_bytes, 0, kSpreadPad);
    // Walk the runs of inner.size elements in C order; idx: the outer multi-index.
    BitWriter out(dense);
    std::size_t idx[64] = {};
    std::size_t base = 0;  // mask index of the run's first element
    const std::size_t outer = nm - 1;
    for (std::size_t r = 0; r < runs; ++r) {
        if (inner.broadcast) {
            out.fill((src[base / 8] >> (base % 8)) & 1u, inner.size);
        } else {
            out.copy(src, base, inner.size);
        }
        for (std::size_t k = outer; k-- > 0;) {  // the next outer index (odometer)
            const std::size_t step = m[k].broadcast ? 0 : m[k].mask_stride;
            if (++idx[k] < m[k].size) {
                base += step;
                break;
            }
            idx[k] = 0;
            base -= step * (m[k].size - 1);
        }
    }
    out.flush();
    ApplyArgs a = a_in;
    a.bits = dense;
    a.bit0 = 0;
    a.all_kept = false;
    a.stream_stores = stream_stores;
    table.apply[dt](a, 0, n);
    return true;
}

}  // namespace fast
}  // namespace fastdropout
