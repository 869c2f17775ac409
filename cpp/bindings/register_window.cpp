// window_forward: the forward pass (and the regenerated backward) of a block whose mask
// elements are numbered over a larger array's mask (docs/spec.md section 11). Like
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

// x: the block (C-contiguous); y: where the result goes (x itself or disjoint);
// offset: stream position of the window's first mask element (the call's offset plus
// the window's start, mod 2**64); strides: per axis of x, the stride of that axis in
// the global mask (mod 2**64; ignored on broadcast axes); bits: None or a uint8 buffer
// for the window's mask (required with broadcast axes).
void window_forward(const py::array& x, const py::array& y, const py::object& seed,
                    const py::object& offset, const py::tuple& strides,
                    const py::object& threshold, double scale, bool scaled,
                    const py::object& bits, const py::tuple& axes) {
    const Dtype dt = dtype_of(x, "x");
    if (dtype_of(y, "out") != dt) {
        throw py::value_error("out must have the input's dtype");
    }
    const std::vector<std::size_t> dims = shape_of(x);
    if (shape_of(y) != dims) {
        throw py::value_error("out must have the input's shape");
    }
    require_c_contiguous(x, "x");
    require_c_contiguous(y, "out");
    require_aligned(x, "x");
    require_aligned(y, "out");
    require_writeable(y, "out");
    require_same_or_disjoint(x, y);
    if (dims.size() > kMaxWindowDims) {
        throw py::value_error("window: at most 64 axes");
    }
    const std::vector<bool> broadcast = broadcast_flags(axes, dims.size());
    if (strides.size() != dims.size()) {
        throw py::value_error("window strides: one per axis of x");
    }
    WindowLayout w;
    w.dims = dims;
    for (std::size_t k = 0; k < dims.size(); ++k) {
        w.gstride.push_back(to_u64(strides[k], "window stride"));
        if (broadcast[k]) {
            w.dims[k] = 1;  // the window of the mask: one decision along this axis
        }
    }
    const std::size_t mask_size = product(w.dims);
    const std::uint64_t s = to_u64(seed, "seed");
    const std::uint64_t t = to_u64(threshold, "threshold");
    if (t > (std::uint64_t{1} << 32)) {
        throw py::value_error("threshold must be in [0, 2**32]");
    }
    std::uint8_t* b = nullptr;
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
        b = static_cast<std::uint8_t*>(arr.mutable_data());
    }
    const bool spatial = has_broadcast(dims, broadcast);
    if (spatial && b == nullptr) {
        throw py::value_error("a mask bits buffer is required with broadcast axes");
    }
    ForwardArgs a{};
    a.stream = {static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32),
                to_u64(offset, "offset"), t};
    a.x = x.data();
    a.y = const_cast<void*>(y.data());
    a.bits = b;
    a.n = product(dims);
    a.scale = scale;
    a.scaled = scaled;
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    if (!spatial) {
        run_window_forward(table, dt, a, w);
        return;
    }
    // The (small) window of the mask first, then one streaming pass over the block.
    run_window_gen_bits(table, a.stream, b, w);
    ApplyArgs ap{};
    ap.x = a.x;
    ap.y = a.y;
    ap.bits = b;
    ap.scale = scale;
    ap.scaled = scaled;
    run_apply(table, dt, ap, dims, broadcast);
}

}  // namespace

void register_window(py::module_& m) {
    m.def("window_forward", &window_forward,
          "Forward pass of a block of a larger array (private; see fastdropout's "
          "window= argument).");
}

}  // namespace fastdropout
