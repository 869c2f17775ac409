// add_forward, add_eval, alpha_forward, backward_sum, scale_all, _stream_add: the
// private entry points of dropout_add / dropout_add_backward (SPEC section 9), alpha
// dropout (section 10) and bfloat16 classic evaluation (section 8). Each re-checks its
// arrays cheaply (the Python layer validated them), releases the GIL only after every
// check, and calls parallel_fused.hpp with the active kernel table.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"
#include "../src/parallel_fused.hpp"
#include "array_view.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

struct Layout {
    Dtype dt;
    std::vector<std::size_t> dims;
    std::vector<bool> broadcast;
    std::size_t n;
    std::size_t mask_size;
};

// x and y: same dtype and shape, C-contiguous, aligned; y writeable and either x or
// disjoint from it.
Layout check_io(const py::array& x, const py::array& y, const py::tuple& axes) {
    Layout c;
    c.dt = dtype_of(x, "x");
    if (dtype_of(y, "out") != c.dt) {
        throw py::type_error("out must have the input's dtype");
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
    c.n = product(c.dims);
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

std::uint8_t* bits_out(const py::object& bits, std::size_t mask_size) {
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
                              std::to_string((mask_size + 7) / 8) + " bytes");
    }
    return static_cast<std::uint8_t*>(arr.mutable_data());
}

StreamArgs stream_args(const py::object& seed, const py::object& offset,
                       const py::object& threshold) {
    const std::uint64_t s = to_u64(seed, "seed");
    const std::uint64_t t = to_u64(threshold, "threshold");
    if (t > (std::uint64_t{1} << 32)) {
        throw py::value_error("threshold must be in [0, 2**32]");
    }
    return {static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32),
            to_u64(offset, "offset"), t};
}

// residual and bias of an add call; y may be residual (in place) but not overlap it
// otherwise, and must not overlap the bias.
void add_operands(FusedArgs& a, const Layout& c, const py::array& x, const py::array& residual,
                  const py::object& bias, const py::array& y) {
    a.x = x.data();
    a.residual = operand(residual, c.dt, c.n, "residual");
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
        if (nb == 0 ? c.n != 0 : c.n % nb != 0) {
            throw py::value_error("bias must cover x's trailing axes");
        }
        const auto* pb = static_cast<const unsigned char*>(b.data());
        const auto* py_ = static_cast<const unsigned char*>(y.data());
        const std::size_t bytes_b = nb * dtype_size(c.dt);
        const std::size_t bytes_y = c.n * dtype_size(c.dt);
        if (bytes_b != 0 && bytes_y != 0 && pb < py_ + bytes_y && py_ < pb + bytes_b) {
            throw py::value_error("out must not overlap the bias");
        }
        a.bias = b.data();
        a.bias_n = nb == 0 ? 1 : nb;
    }
    a.y = const_cast<void*>(y.data());
}

void add_forward(const py::array& x, const py::array& residual, const py::object& bias,
                 const py::array& y, const py::object& seed, const py::object& offset,
                 const py::object& threshold, double scale, bool scaled, const py::object& bits,
                 const py::tuple& axes) {
    const Layout c = check_io(x, y, axes);
    FusedArgs a{};
    add_operands(a, c, x, residual, bias, y);
    a.stream = stream_args(seed, offset, threshold);
    a.bits = bits_out(bits, c.mask_size);
    a.scale = scale;
    a.scaled = scaled;
    if (has_broadcast(c.dims, c.broadcast) && a.bits == nullptr) {
        throw py::value_error("a mask bits buffer is required with broadcast axes");
    }
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_fused_forward(table, c.dt, FusedOp::kAdd, a, c.dims, c.broadcast, c.mask_size);
}

void add_eval(const py::array& x, const py::array& residual, const py::object& bias,
              const py::array& y, double scale, bool scaled) {
    const Layout c = check_io(x, y, py::tuple());
    FusedArgs a{};
    add_operands(a, c, x, residual, bias, y);
    a.scale = scale;
    a.scaled = scaled;
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_fused_all_kept(table, c.dt, FusedOp::kAdd, a, c.n);
}

void alpha_forward(const py::array& x, const py::array& y, const py::object& seed,
                   const py::object& offset, const py::object& threshold, double coef_a,
                   double coef_b, double coef_d, const py::object& bits, const py::tuple& axes) {
    const Layout c = check_io(x, y, axes);
    FusedArgs a{};
    a.x = x.data();
    a.y = const_cast<void*>(y.data());
    a.stream = stream_args(seed, offset, threshold);
    a.bits = bits_out(bits, c.mask_size);
    a.scale = coef_a;
    a.shift = coef_b;
    a.dropped = coef_d;
    a.scaled = true;
    if (has_broadcast(c.dims, c.broadcast) && a.bits == nullptr) {
        throw py::value_error("a mask bits buffer is required with broadcast axes");
    }
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_fused_forward(table, c.dt, FusedOp::kAlpha, a, c.dims, c.broadcast, c.mask_size);
}

// grad_x into y from dense mask bits (n bits; None: all kept) and the column sums of
// grad_x into acc (float64, ncols elements, added to).
void backward_sum(const py::array& g, const py::array& y, const py::object& bits, double scale,
                  bool scaled, const py::array& acc, std::size_t ncols) {
    const Layout c = check_io(g, y, py::tuple());
    if (ncols == 0 ? c.n != 0 : c.n % ncols != 0) {
        throw py::value_error("ncols must divide the number of elements");
    }
    if (acc.dtype().kind() != 'f' || acc.dtype().itemsize() != 8 || !native_byte_order(acc.dtype())) {
        throw py::type_error("acc must be a float64 array");
    }
    require_c_contiguous(acc, "acc");
    require_writeable(acc, "acc");
    if (static_cast<std::size_t>(acc.size()) != ncols) {
        throw py::value_error("acc must have ncols elements");
    }
    ApplyArgs ap{};
    ap.x = g.data();
    ap.y = const_cast<void*>(y.data());
    ap.scale = scale;
    ap.scaled = scaled;
    ap.bit0 = 0;
    ap.all_kept = bits.is_none();
    if (!ap.all_kept) {
        const auto b = py::cast<py::array>(bits);
        if (b.dtype().kind() != 'u' || b.dtype().itemsize() != 1) {
            throw py::type_error("mask bits must be a uint8 array");
        }
        require_c_contiguous(b, "mask bits");
        if (static_cast<std::size_t>(b.size()) != (c.n + 7) / 8) {
            throw py::value_error("mask bits do not match the data");
        }
        ap.bits = static_cast<const std::uint8_t*>(b.data());
    }
    auto* sums = static_cast<double*>(const_cast<void*>(acc.data()));
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_apply_sum(table, c.dt, ap, c.n, ncols, sums);
}

// y = x * scale, every element (bfloat16 classic evaluation, rounded by the kernels).
void scale_all(const py::array& x, const py::array& y, double scale) {
    const Layout c = check_io(x, y, py::tuple());
    ApplyArgs ap{};
    ap.x = x.data();
    ap.y = const_cast<void*>(y.data());
    ap.scale = scale;
    ap.scaled = true;
    ap.all_kept = true;
    struct Ctx {
        void (*fn)(const ApplyArgs&, std::size_t, std::size_t);
        const ApplyArgs* a;
    };
    Ctx ctx{active_table().apply[c.dt], &ap};
    py::gil_scoped_release release;
    run_chunks(c.n, plan_chunks(c.n), [](void* p, std::size_t, std::size_t b, std::size_t e) {
        const auto* k = static_cast<const Ctx*>(p);
        k->fn(*k->a, b, e);
    }, &ctx);
}

// Mask bits only: n mask elements from the stream into bits.
void gen_bits(const py::object& seed, const py::object& offset, const py::object& threshold,
              const py::array& bits, std::size_t n) {
    std::uint8_t* b = bits_out(bits, n);
    const StreamArgs s = stream_args(seed, offset, threshold);
    const KernelTable& table = active_table();
    py::gil_scoped_release release;
    run_gen_bits(table, s, b, n);
}

void stream_add(const py::array& a, const py::array& b, const py::array& out) {
    for (const auto* arr : {&a, &b, &out}) {
        if (arr->dtype().kind() != 'f' || arr->dtype().itemsize() != 4) {
            throw py::type_error("_stream_add takes float32 arrays");
        }
        require_c_contiguous(*arr, "array");
        require_aligned(*arr, "array");
    }
    require_writeable(out, "out");
    if (a.size() != out.size() || b.size() != out.size()) {
        throw py::value_error("a, b and out must have the same size");
    }
    require_same_or_disjoint(a, out);
    require_same_or_disjoint(b, out);
    const auto* pa = static_cast<const float*>(a.data());
    const auto* pb = static_cast<const float*>(b.data());
    auto* po = static_cast<float*>(const_cast<void*>(out.data()));
    const auto n = static_cast<std::size_t>(out.size());
    py::gil_scoped_release release;
    run_stream_add(pa, pb, po, n);
}

}  // namespace

void register_fused(py::module_& m) {
    m.def("add_forward", &add_forward,
          "dropout_add training pass (private; see fastdropout.dropout_add).");
    m.def("add_eval", &add_eval,
          "dropout_add evaluation pass, every element kept (private).");
    m.def("alpha_forward", &alpha_forward,
          "Alpha dropout training pass (private; see fastdropout.alpha_dropout).");
    m.def("backward_sum", &backward_sum,
          "Backward pass from dense mask bits plus float64 column sums (private; see "
          "fastdropout.dropout_add_backward).");
    m.def("gen_bits", &gen_bits, "Mask bits only (private).");
    m.def("scale_all", &scale_all, "y = x * scale for every element (private).");
    m.def("_stream_add", &stream_add,
          "out = a + b (float32) over the kernels' threads and chunks (benchmark baseline).");
}

}  // namespace fastdropout
