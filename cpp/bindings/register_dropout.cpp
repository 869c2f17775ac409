// forward / backward_mask: thin wrappers that re-check their arguments, release the
// GIL only after every check (so an error never leaves a partial write), and call
// the threading layer with the active kernel table.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"
#include "array_view.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

struct Checked {
    Dtype dt;
    std::vector<std::size_t> dims;
    std::vector<bool> broadcast;
    std::size_t mask_size;
};

Checked check_pair(const py::array& x, const py::array& y, const py::tuple& axes) {
    Checked c;
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
    c.broadcast.assign(c.dims.size(), false);
    long last = -1;
    for (const py::handle h : axes) {
        if (!py::isinstance<py::int_>(h)) {
            throw py::type_error("broadcast axes must be integers");
        }
        const long a = h.cast<long>();
        if (a <= last || a >= static_cast<long>(c.dims.size())) {
            throw py::value_error("broadcast axes must be sorted, unique and in range");
        }
        c.broadcast[static_cast<std::size_t>(a)] = true;
        last = a;
    }
    c.mask_size = 1;
    for (std::size_t k = 0; k < c.dims.size(); ++k) {
        c.mask_size *= c.broadcast[k] ? 1 : c.dims[k];
    }
    return c;
}

std::uint8_t* bits_buffer(const py::object& bits, std::size_t mask_size) {
    if (bits.is_none()) {
        return nullptr;
    }
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
    return static_cast<std::uint8_t*>(arr.mutable_data());
}

void forward(const py::array& x, const py::array& y, const py::object& seed, const py::object& offset,
             const py::object& threshold, double scale, bool scaled, const py::object& bits,
             const py::tuple& axes) {
    const Checked c = check_pair(x, y, axes);
    const std::uint64_t s = to_u64(seed, "seed");
    const std::uint64_t t = to_u64(threshold, "threshold");
    if (t > (std::uint64_t{1} << 32)) {
        throw py::value_error("threshold must be in [0, 2**32]");
    }
    std::uint8_t* b = bits_buffer(bits, c.mask_size);
    ForwardArgs a{};
    a.stream = {static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32),
                to_u64(offset, "offset"), t};
    a.x = x.data();
    a.y = const_cast<void*>(y.data());
    a.bits = b;
    a.n = product(c.dims);
    a.scale = scale;
    a.scaled = scaled;
    const bool spatial = has_broadcast(c.dims, c.broadcast);
    if (spatial && b == nullptr) {
        throw py::value_error("a mask bits buffer is required with broadcast axes");
    }
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    if (!spatial) {
        run_forward(table, c.dt, a);
        return;
    }
    // Spatial: decisions for the (small) mask first, then one streaming pass.
    run_gen_bits(table, a.stream, b, c.mask_size);
    ApplyArgs ap{};
    ap.x = a.x;
    ap.y = a.y;
    ap.bits = b;
    ap.scale = scale;
    ap.scaled = scaled;
    run_apply(table, c.dt, ap, c.dims, c.broadcast);
}

void backward_mask(const py::array& g, const py::array& y, const py::array& bits, double scale,
                   bool scaled, const py::tuple& axes) {
    const Checked c = check_pair(g, y, axes);
    if (bits.dtype().kind() != 'u' || bits.dtype().itemsize() != 1) {
        throw py::type_error("mask bits must be a uint8 array");
    }
    require_c_contiguous(bits, "mask bits");
    if (static_cast<std::size_t>(bits.size()) != (c.mask_size + 7) / 8) {
        throw py::value_error("mask bits do not match the mask shape");
    }
    ApplyArgs ap{};
    ap.x = g.data();
    ap.y = const_cast<void*>(y.data());
    ap.bits = static_cast<const std::uint8_t*>(bits.data());
    ap.scale = scale;
    ap.scaled = scaled;
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_apply(table, c.dt, ap, c.dims, c.broadcast);
}

}  // namespace

void register_dropout(py::module_& m) {
    m.def("forward", &forward, "Training forward pass (private; see fastdropout.dropout).");
    m.def("backward_mask", &backward_mask,
          "Backward pass from stored mask bits (private; see fastdropout.dropout_backward).");
}

}  // namespace fastdropout
