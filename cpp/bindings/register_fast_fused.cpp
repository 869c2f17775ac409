// _core.alpha, _core.add, _core.add_backward, _core.alpha_regen: the one-call fast
// paths of alpha_dropout, dropout_add, dropout_add_backward (with a bias gradient)
// and dropout_backward(mode="alpha") with a regenerated mask, as register_fast.cpp
// does for dropout, spatial_dropout and dropout_backward (see there for "plain").
// Each returns None for any argument that is not plain, and the Python layer then
// takes its general path, which validates everything and raises the documented
// errors; so these never raise for bad input (only MemoryError when an output
// cannot be allocated, and then nothing was written).
//
// In addition to register_fast.cpp's rules: residual is a plain array of x's dtype
// and shape; bias None or a plain array of x's dtype whose shape is trailing axes of
// x's; out (or the new y) is residual itself or disjoint from it, and disjoint from
// the bias. The bias gradient's rounding is _rowsum.round_sums's (NumPy's cast for
// float16/32, docs/spec.md section 8's single rounding for bfloat16).
//
// alpha and add also take a block of a larger array (docs/spec.md section 11):
// window None (a plain call) or a plain window (fast_window.hpp; x, residual and the
// bias are the block's, the mask the block's window of the global mask), with
// return_mask then True or False, not the _mask_maker sentinel (the Python layer
// makes the Mask, which records the window), as register_fast.cpp's dense_window.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"
#include "../src/parallel_fused.hpp"
#include "../src/window.hpp"
#include "array_view.hpp"
#include "fast_common.hpp"
#include "fast_window.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

using namespace fast;  // NOLINT(google-build-using-namespace): the shared helpers

// "alpha", the mode an alpha dropout Mask records (made at import).
PyObject* g_alpha_mode = nullptr;

StreamArgs stream_of(std::uint64_t seed, std::uint64_t offset, double p) {
    return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32), offset,
            threshold_of(p)};
}

// The dense training pass of a fused op (no broadcast axis) on x's n elements: the
// mask is generated in the same pass, into bits when given. w (null: no window) is
// the window of the mask of a block (x's shape) of a larger array; a.stream.offset is
// then the stream position of the block's first element.
bool run_dense_fused(Dtype dt, FusedOp op, const FusedArgs& a, std::size_t n,
                     const py::detail::PyArray_Proxy* xa, const WindowLayout* w) {
    const KernelTable& table = active_table();
    return run_released(n, [&] {
        if (w == nullptr) {
            run_fused_forward(table, dt, op, a, {n}, {false}, n);
            return;
        }
        const auto nd = static_cast<std::size_t>(xa->nd);
        std::vector<std::size_t> dims(nd);
        for (std::size_t k = 0; k < nd; ++k) {
            dims[k] = static_cast<std::size_t>(xa->dimensions[k]);
        }
        run_window_fused(table, dt, op, a, dims, std::vector<bool>(nd, false), *w);
    });
}

// The window argument of alpha() and add(): None (w stays null, first = offset), or a
// plain window for x's shape with want not Want::kMask (w points to layout, first is
// the block's stream position). False for anything else: the general path decides.
bool plain_window_arg(PyObject* window, const py::detail::PyArray_Proxy* xa, Want want,
                      std::uint64_t offset, WindowLayout& layout, const WindowLayout*& w,
                      std::uint64_t& first) {
    w = nullptr;
    first = offset;
    if (window == Py_None) {
        return true;
    }
    if (want == Want::kMask ||
        !plain_window(window, xa->dimensions, xa->nd, offset, nullptr, layout, first)) {
        return false;
    }
    w = &layout;
    return true;
}

// alpha(x, p, seed, offset, out, return_mask, window)
//   -> y | (y, bits) | (y, Mask) | None (with a window: y | (y, bits) | None)
PyObject* alpha(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 7, "alpha(x, p, seed, offset, out, return_mask, window)")) {
        return nullptr;
    }
    const py::detail::PyArray_Proxy* xa = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
    Want want = Want::kY;
    FusedArgs a{};
    WindowLayout layout;
    const WindowLayout* w = nullptr;
    std::uint64_t first = 0;
    if (!plain_input(args[0], xa, dt, n) || !plain_p(args[1], p) || !plain_u64(args[2], seed) ||
        !plain_u64(args[3], offset) || !plain_want(args[5], want) ||
        !alpha_coefficients(p, dt, a.scale, a.shift, a.dropped) ||
        !plain_window_arg(args[6], xa, want, offset, layout, w, first)) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], xa, dt, n, args[4], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    PyObject* bits = nullptr;
    PyObject* second = nullptr;
    const MaskSpec spec{args[1], g_alpha_mode, args[2], args[3], xa->dimensions, xa->nd, 0};
    if (want != Want::kY &&
        ((bits = new_bits(*g_api, n)) == nullptr || !second_result(bits, want, spec, &second))) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        return nullptr;
    }
    a.stream = stream_of(seed, first, p);
    a.x = xa->data;
    a.y = data_of(y);
    a.bits = bits == nullptr ? nullptr : reinterpret_cast<std::uint8_t*>(data_of(bits));
    a.scaled = true;
    if (!run_dense_fused(dt, FusedOp::kAlpha, a, n, xa, w)) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        Py_XDECREF(second);
        return nullptr;
    }
    return result(y, bits, second);
}

// The bias of an add call: None, or a plain array of x's dtype whose shape equals x's
// trailing axes. Sets data (nullptr for None) and the element count the kernels
// cycle through (at least 1).
bool plain_bias(PyObject* b, const py::detail::PyArray_Proxy* xa, Dtype dt, const void*& data,
                std::size_t& count, std::size_t& nbytes) {
    data = nullptr;
    count = 0;
    nbytes = 0;
    if (b == Py_None) {
        return true;
    }
    const py::detail::PyArray_Proxy* ba = nullptr;
    Dtype bdt = kF32;
    std::size_t nb = 0;
    if (!plain_input(b, ba, bdt, nb) || bdt != dt || ba->nd > xa->nd) {
        return false;
    }
    const int lead = xa->nd - ba->nd;
    for (int k = 0; k < ba->nd; ++k) {
        if (ba->dimensions[k] != xa->dimensions[lead + k]) {
            return false;
        }
    }
    data = ba->data;
    count = nb == 0 ? 1 : nb;
    nbytes = nb * dtype_size(dt);
    return true;
}

// Whether [a, a + na) and [b, b + nb) share a byte.
bool ranges_overlap(const void* a, std::size_t na, const void* b, std::size_t nb) {
    const auto* pa = static_cast<const char*>(a);
    const auto* pb = static_cast<const char*>(b);
    return na != 0 && nb != 0 && pa < pb + nb && pb < pa + na;
}

// add(x, residual, bias, p, mode, seed, offset, out, return_mask, window)
//   -> y | (y, bits) | (y, Mask) | None (with a window: y | (y, bits) | None)
PyObject* add(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 10,
                     "add(x, residual, bias, p, mode, seed, offset, out, return_mask, window)")) {
        return nullptr;
    }
    const py::detail::PyArray_Proxy* xa = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    bool scaled = false;
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
    Want want = Want::kY;
    FusedArgs a{};
    std::size_t bias_bytes = 0;
    WindowLayout layout;
    const WindowLayout* w = nullptr;
    std::uint64_t first = 0;
    if (!plain_input(args[0], xa, dt, n) || !plain_like(args[1], xa, dt) ||
        !plain_bias(args[2], xa, dt, a.bias, a.bias_n, bias_bytes) || !plain_p(args[3], p) ||
        !plain_mode(args[4], scaled) || !plain_u64(args[5], seed) ||
        !plain_u64(args[6], offset) || !plain_want(args[8], want) ||
        !plain_window_arg(args[9], xa, want, offset, layout, w, first)) {
        return none();
    }
    a.scale = scaled ? inverted_scale(p, dt) : 1.0;
    if (scaled && scale_overflows(p, a.scale)) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], xa, dt, n, args[7], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    const std::size_t nbytes = n * dtype_size(dt);
    const char* res = data_of(args[1]);
    char* yd = data_of(y);
    if ((res != yd && ranges_overlap(res, nbytes, yd, nbytes)) ||
        ranges_overlap(a.bias, bias_bytes, yd, nbytes)) {
        Py_DECREF(y);
        return none();  // the general path reads them through copies
    }
    PyObject* bits = nullptr;
    PyObject* second = nullptr;
    const MaskSpec spec{args[3], args[4], args[5], args[6], xa->dimensions, xa->nd, 0};
    if (want != Want::kY &&
        ((bits = new_bits(*g_api, n)) == nullptr || !second_result(bits, want, spec, &second))) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        return nullptr;
    }
    a.stream = stream_of(seed, first, p);
    a.x = xa->data;
    a.residual = res;
    a.y = yd;
    a.bits = bits == nullptr ? nullptr : reinterpret_cast<std::uint8_t*>(data_of(bits));
    a.scaled = scaled;
    if (!run_dense_fused(dt, FusedOp::kAdd, a, n, xa, w)) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        Py_XDECREF(second);
        return nullptr;
    }
    return result(y, bits, second);
}

// The bit pattern of v rounded once to a 16-bit float with `frac` fraction bits
// and smallest normal exponent `emin` (float16: 10, -14; bfloat16: 7, -126),
// round half to even, subnormals kept, overflow to a signed infinity: the value
// NumPy's float64 -> float16 cast and _bfloat16.from_float64 give (docs/spec.md
// section 8). Integer arithmetic on v's bits: no library call per element. NaN is
// the caller's.
std::uint16_t narrow_bits(double v, int frac, int emin) {
    std::uint64_t d = 0;
    std::memcpy(&d, &v, sizeof d);
    const auto sign = static_cast<std::uint16_t>((d >> 48) & 0x8000u);
    const std::uint64_t a = d & 0x7fffffffffffffffULL;
    const int bias = 1 - emin;
    const auto inf = static_cast<std::uint16_t>((2 * bias + 1) << frac);
    const int e = static_cast<int>(a >> 52) - 1023;  // double subnormals: far below emin
    if (e > bias) {
        return static_cast<std::uint16_t>(sign | inf);  // |v| >= 2**(bias + 1), inf
    }
    if (e < emin - frac - 1) {
        return sign;  // below half the smallest subnormal: a signed zero
    }
    const std::uint64_t m = (a & ((std::uint64_t{1} << 52) - 1)) | (std::uint64_t{1} << 52);
    const int shift = 52 - frac + (e < emin ? emin - e : 0);  // at most 53
    std::uint64_t q = m >> shift;
    const std::uint64_t rem = m & ((std::uint64_t{1} << shift) - 1);
    const std::uint64_t half = std::uint64_t{1} << (shift - 1);
    if (rem > half || (rem == half && (q & 1u) != 0)) {
        ++q;  // a carry out of the fraction steps the exponent (to inf at the top)
    }
    const std::uint64_t r =
        e >= emin ? (static_cast<std::uint64_t>(e + bias) << frac) + q - (std::uint64_t{1} << frac)
                  : q;
    return static_cast<std::uint16_t>(sign | r);
}

// float16 bits of v, a NaN as NumPy's cast makes it (sign and top payload bits).
std::uint16_t half_bits(double v) {
    if (std::isnan(v)) {
        std::uint64_t d = 0;
        std::memcpy(&d, &v, sizeof d);
        auto h = static_cast<std::uint16_t>(0x7c00u + ((d & 0x000fffffffffffffULL) >> 42));
        if (h == 0x7c00u) {
            ++h;
        }
        return static_cast<std::uint16_t>(((d >> 48) & 0x8000u) + h);
    }
    return narrow_bits(v, 10, -14);
}

// bfloat16 bits of v, a NaN as _bfloat16.from_float64 makes it (through float32,
// quiet, top payload bits kept).
std::uint16_t bfloat16_bits(double v) {
    if (std::isnan(v)) {
        const auto f = static_cast<float>(v);
        std::uint32_t u = 0;
        std::memcpy(&u, &f, sizeof u);
        return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
    }
    return narrow_bits(v, 7, -126);
}

// The float64 sums rounded once to dt into dst (round_sums).
void store_sums(const std::vector<double>& acc, Dtype dt, char* dst) {
    const std::size_t n = acc.size();
    if (dt == kF64) {
        std::memcpy(dst, acc.data(), n * sizeof(double));
    } else if (dt == kF32) {
        for (std::size_t i = 0; i < n; ++i) {
            const auto f = static_cast<float>(acc[i]);
            std::memcpy(dst + 4 * i, &f, 4);
        }
    } else {
        std::uint16_t (*const bits_of)(double) = dt == kF16 ? &half_bits : &bfloat16_bits;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint16_t h = bits_of(acc[i]);
            std::memcpy(dst + 2 * i, &h, 2);
        }
    }
}

// The sums of a single row (n elements of float32 or float64 at src) into dst:
// each is 0.0 + one element, exact in T as in float64 (only a -0.0 changes, to
// +0.0; a NaN is quieted either way), so the value run_apply_sum and store_sums give.
// Kept out of line: compiled on its own, with its restrict parameters, the loop is
// vectorized (inlined into add_backward it was not).
#if defined(__GNUC__) || defined(__clang__)
#define FASTDROPOUT_NOINLINE __attribute__((noinline))
#else
#define FASTDROPOUT_NOINLINE
#endif
template <class T>
FASTDROPOUT_NOINLINE void store_row(const T* __restrict src, std::size_t n, T* __restrict dst) {
    for (std::size_t i = 0; i < n; ++i) {  // distinct buffers
        dst[i] = src[i] + T(0);
    }
}

// The shape of grad_bias for dropout_add_backward's bias argument: True (the last
// axis of g; () for a 0-d g) or an exact tuple of exact ints equal to trailing axes
// of g. False for anything else (the general path decides).
bool plain_bias_shape(PyObject* bias, const py::detail::PyArray_Proxy* ga,
                      std::vector<Py_intptr_t>& shape, std::size_t& ncols) {
    const int nd = ga->nd;
    shape.clear();
    if (bias == Py_True) {
        if (nd > 0) {
            shape.push_back(ga->dimensions[nd - 1]);
        }
    } else if (PyTuple_CheckExact(bias) && PyTuple_GET_SIZE(bias) <= nd) {
        const auto len = static_cast<int>(PyTuple_GET_SIZE(bias));
        for (int k = 0; k < len; ++k) {
            std::uint64_t s = 0;
            if (!plain_u64(PyTuple_GET_ITEM(bias, k), s) ||
                s != static_cast<std::uint64_t>(ga->dimensions[nd - len + k])) {
                return false;
            }
            shape.push_back(static_cast<Py_intptr_t>(s));
        }
    } else {
        return false;
    }
    ncols = 1;
    for (const Py_intptr_t s : shape) {
        ncols *= static_cast<std::size_t>(s);
    }
    return true;
}

// add_backward(g, bits, p, mode, out, mask_shape, axes, bias) -> (grad_x, grad_bias)
//   | None: dropout_add_backward from a stored dense mask (no broadcast axis) with a
// bias gradient; bias True or the bias's shape.
PyObject* add_backward(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 8, "add_backward(g, bits, p, mode, out, mask_shape, axes, bias)")) {
        return nullptr;
    }
    const py::detail::PyArray_Proxy* ga = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    ApplyArgs ap{};
    if (!plain_input(args[0], ga, dt, n) || !plain_p(args[2], p) ||
        !backward_scale(args[3], p, dt, true, ap.scale, ap.scaled) ||
        !PyTuple_CheckExact(args[6]) || PyTuple_GET_SIZE(args[6]) != 0) {
        return none();
    }
    std::vector<std::size_t> dims(static_cast<std::size_t>(ga->nd));
    for (std::size_t k = 0; k < dims.size(); ++k) {
        dims[k] = static_cast<std::size_t>(ga->dimensions[k]);
    }
    std::vector<bool> broadcast;
    std::size_t n_mask = 0;
    std::vector<Py_intptr_t> bshape;
    std::size_t ncols = 0;
    if (!mask_layout(args[5], args[6], dims, broadcast, n_mask) ||
        (ap.bits = plain_bits(args[1], n_mask)) == nullptr ||
        !plain_bias_shape(args[7], ga, bshape, ncols)) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], ga, dt, n, args[4], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    PyObject* gb = new_array(*g_api, ga->descr, static_cast<int>(bshape.size()), bshape.data());
    if (gb == nullptr) {
        Py_DECREF(y);
        return nullptr;
    }
    std::vector<double> acc;
    ap.x = ga->data;
    ap.y = data_of(y);
    ap.bit0 = 0;
    ap.all_kept = false;
    const KernelTable& table = active_table();
    // One row (a bias as large as grad_y, e.g. (1, cols)): each sum is 0.0 + one
    // element, so grad_x is applied as a dense mask and the sums read back from it.
    const bool one_row = n == ncols && (dt == kF32 || dt == kF64);
    if (!run_released(n, [&] {
            if (one_row) {
                run_apply(table, dt, ap, {n}, {false});
            } else {
                acc.assign(ncols, 0.0);
                run_apply_sum(table, dt, ap, n, ncols, acc.data());
            }
        })) {
        Py_DECREF(y);
        Py_DECREF(gb);
        return nullptr;
    }
    if (one_row) {
        if (dt == kF32) {
            store_row(reinterpret_cast<const float*>(data_of(y)), n,
                      reinterpret_cast<float*>(data_of(gb)));  // NumPy buffers, aligned
        } else {
            store_row(reinterpret_cast<const double*>(data_of(y)), n,
                      reinterpret_cast<double*>(data_of(gb)));
        }
    } else {
        store_sums(acc, dt, data_of(gb));
    }
    PyObject* pair = PyTuple_Pack(2, y, gb);
    Py_DECREF(y);
    Py_DECREF(gb);
    return pair;
}

// alpha_regen(g, p, seed, offset, out) -> grad_x | None: the backward pass of alpha
// dropout with the dense mask regenerated (grad_y * A where kept, +0.0 where
// dropped), which is the inverted forward pass with A for the scale.
PyObject* alpha_regen(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 5, "alpha_regen(g, p, seed, offset, out)")) {
        return nullptr;
    }
    const py::detail::PyArray_Proxy* ga = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
    double coef_b = 0.0;
    double coef_d = 0.0;
    ForwardArgs a{};
    if (!plain_input(args[0], ga, dt, n) || !plain_p(args[1], p) || !plain_u64(args[2], seed) ||
        !plain_u64(args[3], offset) || !alpha_coefficients(p, dt, a.scale, coef_b, coef_d)) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], ga, dt, n, args[4], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    a.stream = stream_of(seed, offset, p);
    a.x = ga->data;
    a.y = data_of(y);
    a.bits = nullptr;
    a.n = n;
    a.scaled = true;
    const KernelTable& table = active_table();
    if (!run_released(n, [&] { run_forward(table, dt, a); })) {
        Py_DECREF(y);
        return nullptr;
    }
    return y;
}

PyMethodDef kMethods[] = {
    {"alpha", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&alpha)), METH_FASTCALL,
     "alpha(x, p, seed, offset, out, return_mask, window) -> y, (y, bits) or None: a\n"
     "plain dense alpha dropout training pass (private; see fastdropout.alpha_dropout);\n"
     "window None or (global_shape, start), both exact tuples of ints, for a block\n"
     "(return_mask then True or False)."},
    {"add", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&add)), METH_FASTCALL,
     "add(x, residual, bias, p, mode, seed, offset, out, return_mask, window) -> y,\n"
     "(y, bits) or None: a plain dense dropout_add training pass (private; see\n"
     "fastdropout.dropout_add); window None or (global_shape, start), both exact\n"
     "tuples of ints, for a block (return_mask then True or False)."},
    {"add_backward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&add_backward)),
     METH_FASTCALL,
     "add_backward(g, bits, p, mode, out, mask_shape, axes, bias) -> (grad_x, grad_bias)\n"
     "or None: dropout_add_backward from a stored dense mask with a bias gradient\n"
     "(private; see fastdropout.dropout_add_backward)."},
    {"alpha_regen", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&alpha_regen)),
     METH_FASTCALL,
     "alpha_regen(g, p, seed, offset, out) -> grad_x or None: the alpha backward pass\n"
     "with the dense mask regenerated (private; see fastdropout.dropout_backward)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

void register_fast_fused(py::module_& m) {
    fast::g_api = &py::detail::npy_api::get();
    g_alpha_mode = PyUnicode_InternFromString("alpha");
    if (g_alpha_mode == nullptr) {
        throw py::error_already_set();
    }
    if (PyModule_AddFunctions(m.ptr(), kMethods) != 0) {
        throw py::error_already_set();
    }
}

}  // namespace fastdropout
