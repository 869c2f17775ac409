// window_forward, window_add_forward, window_alpha_forward: the forward passes (and
// the regenerated backward) of a block whose mask elements are numbered over a larger
// array's mask (docs/spec.md section 11). Like
// register_dropout.cpp it re-checks its arguments and releases the GIL only after every
// check, so an error never leaves a partial write.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"
#include "../src/window.hpp"
#include "array_view.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

std::vector<bool> broadcast_flags(const py::tuple& axes, std::size_t ndim) {
    std::vector<bool> flags(ndim, false);
    long last = -1;
    for (const py::handle h : axes) {
        if (!py::isinstance<py::int_>(h)) {
            throw py::type_error("broadcast axes must be integers");
        }
        const long a = h.cast<long>();
        if (a <= last || a >= static_cast<long>(ndim)) {
            throw py::value_error("broadcast axes must be sorted, unique and in range");
        }
        flags[static_cast<std::size_t>(a)] = true;
        last = a;
    }
    return flags;
}

// What every window entry checks: x (the block, C-contiguous) and y (where the result
// goes: x itself or disjoint from it) of one dtype and shape; strides: per axis of x,
// the stride of that axis in the global mask (mod 2**64; ignored on broadcast axes);
// bits: None or a uint8 buffer for the window's mask (required with a broadcast axis).
struct Prepared {
    Dtype dt;
    std::vector<std::size_t> dims;
    std::vector<bool> broadcast;
    WindowLayout w;  // the window of the mask
    std::uint8_t* bits;
};

Prepared prepare(const py::array& x, const py::array& y, const py::tuple& strides,
                 const py::object& bits, const py::tuple& axes) {
    Prepared c;
    c.dt = dtype_of(x, "x");
    if (dtype_of(y, "out") != c.dt) {
        throw py::value_error("out must have the input's dtype");
    }
    c.dims = shape_of(x);
    if (shape_of(y) != c.dims) {
        throw py::value_error("out must have the input's shape");
    }
    require_c_contiguous(x, "x");
    require_c_contiguous(y, "out");
    require_aligned(x, "x");
    require_aligned(y, "out");
    require_writeable(y, "out");
    require_same_or_disjoint(x, y);
    if (c.dims.size() > kMaxWindowDims) {
        throw py::value_error("window: at most 64 axes");
    }
    c.broadcast = broadcast_flags(axes, c.dims.size());
    if (strides.size() != c.dims.size()) {
        throw py::value_error("window strides: one per axis of x");
    }
    c.w.dims = c.dims;
    for (std::size_t k = 0; k < c.dims.size(); ++k) {
        c.w.gstride.push_back(to_u64(strides[k], "window stride"));
        if (c.broadcast[k]) {
            c.w.dims[k] = 1;  // the window of the mask: one decision along this axis
        }
    }
    const std::size_t mask_size = product(c.w.dims);
    c.bits = nullptr;
    if (!bits.is_none()) {
        auto arr = py::cast<py::array>(bits);
        if (arr.dtype().kind() != 'u' || arr.dtype().itemsize() != 1) {
            throw py::type_error("mask bits must be a uint8 array");
        }
        require_c_contiguous(arr, "mask bits");
        require_writeable(arr, "mask bits");
        if (static_cast<std::size_t>(arr.size()) != (mask_size + 7) / 8) {
            throw py::value_error("mask bits must hold ceil(n/8) = " +
                                  std::to_string((mask_size + 7) / 8) + " bytes, got " +
                                  std::to_string(arr.size()));
        }
        c.bits = static_cast<std::uint8_t*>(arr.mutable_data());
    }
    if (c.bits == nullptr && has_broadcast(c.dims, c.broadcast)) {
        throw py::value_error("a mask bits buffer is required here");
    }
    return c;
}

StreamArgs stream_of(const py::object& seed, const py::object& offset,
                     const py::object& threshold) {
    const std::uint64_t s = to_u64(seed, "seed");
    const std::uint64_t t = to_u64(threshold, "threshold");
    if (t > (std::uint64_t{1} << 32)) {
        throw py::value_error("threshold must be in [0, 2**32]");
    }
    return {static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32),
            to_u64(offset, "offset"), t};
}

// A read-only operand of x's dtype: C-contiguous, aligned, `n` elements.
const void* operand(const py::array& a, Dtype dt, std::size_t n, const char* name) {
    if (dtype_of(a, name) != dt) {
        throw py::type_error(std::string(name) + " must have x's dtype");
    }
    require_c_contiguous(a, name);
    require_aligned(a, name);
    if (static_cast<std::size_t>(a.size()) != n) {
        throw py::value_error(std::string(name) + " has the wrong number of elements");
    }
    return a.data();
}

// offset: stream position of the window's first mask element (the call's offset plus
// the window's start, mod 2**64).
void window_forward(const py::array& x, const py::array& y, const py::object& seed,
                    const py::object& offset, const py::tuple& strides,
                    const py::object& threshold, double scale, bool scaled,
                    const py::object& bits, const py::tuple& axes) {
    const Prepared c = prepare(x, y, strides, bits, axes);
    ForwardArgs a{};
    a.stream = stream_of(seed, offset, threshold);
    a.x = x.data();
    a.y = const_cast<void*>(y.data());
    a.bits = c.bits;
    a.n = product(c.dims);
    a.scale = scale;
    a.scaled = scaled;
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    if (!has_broadcast(c.dims, c.broadcast)) {
        run_window_forward(table, c.dt, a, c.w);
        return;
    }
    // The (small) window of the mask first, then one streaming pass over the block.
    run_window_gen_bits(table, a.stream, c.bits, c.w);
    ApplyArgs ap{};
    ap.x = a.x;
    ap.y = a.y;
    ap.bits = c.bits;
    ap.scale = scale;
    ap.scaled = scaled;
    run_apply(table, c.dt, ap, c.dims, c.broadcast);
}

// dropout_add of a block: residual and y as in add_forward (y may be residual), bias
// (None or covering x's trailing axes) must not overlap y.
void window_add_forward(const py::array& x, const py::array& residual, const py::object& bias,
                        const py::array& y, const py::object& seed, const py::object& offset,
                        const py::tuple& strides, const py::object& threshold, double scale,
                        bool scaled, const py::object& bits, const py::tuple& axes) {
    const Prepared c = prepare(x, y, strides, bits, axes);
    const std::size_t n = product(c.dims);
    FusedArgs a{};
    a.stream = stream_of(seed, offset, threshold);
    a.x = x.data();
    a.residual = operand(residual, c.dt, n, "residual");
    require_same_or_disjoint(residual, y);
    a.bias = nullptr;
    a.bias_n = 0;
    if (!bias.is_none()) {
        const auto b = py::cast<py::array>(bias);
        const auto nb = static_cast<std::size_t>(b.size());
        if (dtype_of(b, "bias") != c.dt) {
            throw py::type_error("bias must have x's dtype");
        }
        require_c_contiguous(b, "bias");
        require_aligned(b, "bias");
        if (nb == 0 ? n != 0 : n % nb != 0) {
            throw py::value_error("bias must cover x's trailing axes");
        }
        const std::size_t es = dtype_size(c.dt);
        const auto* pb = static_cast<const unsigned char*>(b.data());
        const auto* py_ = static_cast<const unsigned char*>(y.data());
        if (nb != 0 && n != 0 && pb < py_ + n * es && py_ < pb + nb * es) {
            throw py::value_error("out must not overlap the bias");
        }
        a.bias = b.data();
        a.bias_n = nb == 0 ? 1 : nb;
    }
    a.y = const_cast<void*>(y.data());
    a.bits = c.bits;
    a.scale = scale;
    a.scaled = scaled;
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_window_fused(table, c.dt, FusedOp::kAdd, a, c.dims, c.broadcast, c.w);
}

void window_alpha_forward(const py::array& x, const py::array& y, const py::object& seed,
                          const py::object& offset, const py::tuple& strides,
                          const py::object& threshold, double coef_a, double coef_b,
                          double coef_d, const py::object& bits, const py::tuple& axes) {
    const Prepared c = prepare(x, y, strides, bits, axes);
    FusedArgs a{};
    a.stream = stream_of(seed, offset, threshold);
    a.x = x.data();
    a.y = const_cast<void*>(y.data());
    a.bits = c.bits;
    a.scale = coef_a;
    a.shift = coef_b;
    a.dropped = coef_d;
    a.scaled = true;
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_window_fused(table, c.dt, FusedOp::kAlpha, a, c.dims, c.broadcast, c.w);
}

}  // namespace

void register_window(py::module_& m) {
    m.def("window_forward", &window_forward,
          "Forward pass of a block of a larger array (private; see fastdropout's "
          "window= argument).");
    m.def("window_add_forward", &window_add_forward,
          "dropout_add of a block of a larger array (private).");
    m.def("window_alpha_forward", &window_alpha_forward,
          "alpha_dropout of a block of a larger array (private).");
}

}  // namespace fastdropout
