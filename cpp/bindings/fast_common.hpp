// Shared by the one-call fast paths (register_fast.cpp: dropout, spatial_dropout,
// dropout_backward; register_fast_fused.cpp: alpha_dropout, dropout_add and
// dropout_add_backward): recognising plain arguments without raising, the dtype
// rounding of the constants (docs/spec.md sections 3, 8 and 10), and allocating the
// results through NumPy's C API. See register_fast.cpp for what "plain" means.
// Every function here runs with the GIL held.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "array_view.hpp"
#include "fastdropout/kernel_args.hpp"

namespace fastdropout {
namespace fast {

namespace py = pybind11;
using npy_api = py::detail::npy_api;

// NumPy's type numbers for the three element types (stable across NumPy 1.x and 2.x).
constexpr int kNpyHalf = 23;
constexpr int kNpyFloat = npy_api::NPY_FLOAT_;
constexpr int kNpyDouble = npy_api::NPY_DOUBLE_;

// Below this many elements the kernel runs with the GIL held: releasing and
// re-taking it costs more than the work (about 10 us of kernel at this size).
constexpr std::size_t kReleaseGilElements = std::size_t{1} << 14;

// The element type of a plain array's descriptor, or false.
inline bool plain_dtype(PyObject* descr, Dtype& dt) {
    const auto* d = py::detail::array_descriptor_proxy(descr);
    if (!native_byte_order(d->byteorder)) {
        return false;
    }
    switch (d->type_num) {
        case kNpyHalf: dt = kF16; return true;
        case kNpyFloat: dt = kF32; return true;
        case kNpyDouble: dt = kF64; return true;
        default: break;
    }
    if (is_bfloat16(descr)) {  // by dtype equality: its type number is not fixed
        dt = kBF16;
        return true;
    }
    return false;
}

// An exact Python int in [0, 2**64), or false (with no exception left set).
inline bool plain_u64(PyObject* v, std::uint64_t& out) {
    if (!PyLong_CheckExact(v)) {
        return false;
    }
    const unsigned long long r = PyLong_AsUnsignedLongLong(v);
    if (r == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr) {
        PyErr_Clear();  // negative or >= 2**64: the general path says so
        return false;
    }
    out = static_cast<std::uint64_t>(r);
    return true;
}

// docs/spec.md section 2: round_half_even(p * 2**32); p * 2**32 is exact, so is the split.
inline std::uint64_t threshold_of(double p) {
    const double v = p * 4294967296.0;
    const double whole = std::floor(v);
    auto t = static_cast<std::uint64_t>(whole);
    const double frac = v - whole;
    if (frac > 0.5 || (frac == 0.5 && (t & 1u) != 0)) {
        ++t;
    }
    return t;
}

// The float64 v rounded once to dt, round half to even: float32 by the C cast
// (NumPy's), float16 and bfloat16 at the quantum of v's binade (11 and 8
// significant bits; 2**-24 and 2**-133 below the normal range, so subnormals are
// kept), overflow (|v| rounding to 2**16 or 2**128) giving a signed infinity. The
// same values as NumPy's float64 -> float16 cast and _bfloat16.from_float64
// (docs/spec.md section 8). NaN and infinities pass unchanged.
inline double round_to(double v, Dtype dt) {
    if (dt == kF64) {
        return v;
    }
    if (dt == kF32) {
        return static_cast<double>(static_cast<float>(v));
    }
    if (!std::isfinite(v)) {
        return v;
    }
    const bool half = dt == kF16;
    int e = 0;
    (void)std::frexp(v, &e);  // |v| in [2**(e-1), 2**e)
    const int q = std::max(e - (half ? 11 : 8), half ? -24 : -133);
    const double r = std::ldexp(std::nearbyint(std::ldexp(v, -q)), q);  // ties to even
    return std::fabs(r) >= (half ? 65536.0 : std::ldexp(1.0, 128)) ? std::copysign(HUGE_VAL, v)
                                                                    : r;
}

// docs/spec.md section 3: dtype(1 / (1 - p)) computed in float64, rounded once; p == 1
// drops everything, the scale is then never used.
inline double inverted_scale(double p, Dtype dt) {
    return round_to(p == 1.0 ? HUGE_VAL : 1.0 / (1.0 - p), dt);
}

// docs/spec.md section 10: alpha dropout's A, B, D for p in [0, 1), computed in
// float64 as _scales._alpha_values writes them (with the C library's pow, which
// Python's ** calls; no contraction: -ffp-contract=off) and each rounded once to dt.
// False where p is outside [0, 1) or a coefficient is not finite in dt (the general
// path raises there).
inline bool alpha_coefficients(double p, Dtype dt, double& a_out, double& b_out, double& d_out) {
    constexpr double kAlphaPrime = -1.7580993408473766;
    if (!(p >= 0.0 && p < 1.0)) {
        return false;
    }
    static const double ap2 = [] {
        volatile double two = 2.0;  // pow at run time, as Python's ALPHA_PRIME**2
        return std::pow(kAlphaPrime, two);
    }();
    const double a = std::pow((1.0 - p) * (1.0 + p * ap2), -0.5);
    const double b = -a * kAlphaPrime * p;
    const double d = a * kAlphaPrime + b;
    a_out = round_to(a, dt);
    b_out = round_to(b, dt);
    d_out = round_to(d, dt);
    return std::isfinite(a_out) && std::isfinite(b_out) && std::isfinite(d_out);
}

// The scale of a backward pass (docs/spec.md sections 3 and 10): mode "inverted"
// (s), "classic" (none) or, when alpha is allowed, "alpha" (A). False for another
// mode or an infinite scale (refused by the general path, docs/spec.md section 8).
inline bool backward_scale(PyObject* mode, double p, Dtype dt, bool allow_alpha, double& scale,
                           bool& scaled) {
    if (!PyUnicode_CheckExact(mode)) {
        return false;
    }
    scale = 1.0;
    scaled = true;
    if (PyUnicode_CompareWithASCIIString(mode, "inverted") == 0) {
        scale = inverted_scale(p, dt);
    } else if (PyUnicode_CompareWithASCIIString(mode, "classic") == 0) {
        scaled = false;
    } else if (allow_alpha && PyUnicode_CompareWithASCIIString(mode, "alpha") == 0) {
        double b = 0.0;
        double d = 0.0;
        if (!alpha_coefficients(p, dt, scale, b, d)) {
            return false;
        }
    } else {
        return false;
    }
    return std::isfinite(scale);
}

// docs/spec.md section 8: a p < 1 whose scale overflows the dtype (float16 only) is an error
// that the general path raises; the fast paths decline it.
inline bool scale_overflows(double p, double scale) { return p < 1.0 && std::isinf(scale); }

inline PyObject* new_array(const npy_api& api, PyObject* descr, int nd, const Py_intptr_t* dims) {
    Py_INCREF(descr);  // PyArray_NewFromDescr steals a reference to the descriptor
    return api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, nd, dims, nullptr, nullptr, 0,
                                     nullptr);
}

inline PyObject* new_bits(const npy_api& api, std::size_t n_bits) {
    const auto nb = static_cast<Py_intptr_t>((n_bits + 7) / 8);
    PyObject* u8 = api.PyArray_DescrFromType_(npy_api::NPY_UBYTE_);
    if (u8 == nullptr) {
        return nullptr;
    }
    return api.PyArray_NewFromDescr_(api.PyArray_Type_, u8, 1, &nb, nullptr, nullptr, 0,
                                     nullptr);  // steals u8
}

// NumPy's C API table, looked up once at import (npy_api::get() is not free).
inline const npy_api* g_api = nullptr;

inline PyObject* none() {
    Py_INCREF(Py_None);
    return Py_None;
}

constexpr int kPlainIn = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
constexpr int kPlainOut = kPlainIn | npy_api::NPY_ARRAY_WRITEABLE_;

// x: an exact ndarray of a supported dtype, C-contiguous and aligned.
inline bool plain_input(PyObject* x, const py::detail::PyArray_Proxy*& xa, Dtype& dt, std::size_t& n) {
    if (Py_TYPE(x) != g_api->PyArray_Type_) {
        return false;
    }
    xa = py::detail::array_proxy(x);
    if ((xa->flags & kPlainIn) != kPlainIn || !plain_dtype(xa->descr, dt)) {
        return false;
    }
    n = 1;
    for (int k = 0; k < xa->nd; ++k) {
        n *= static_cast<std::size_t>(xa->dimensions[k]);
    }
    return true;
}

// a: an exact ndarray of dtype dt and of xa's shape, C-contiguous and aligned.
inline bool plain_like(PyObject* a, const py::detail::PyArray_Proxy* xa, Dtype dt) {
    const py::detail::PyArray_Proxy* aa = nullptr;
    Dtype adt = kF32;
    std::size_t n = 0;
    if (!plain_input(a, aa, adt, n) || adt != dt || aa->nd != xa->nd) {
        return false;
    }
    for (int k = 0; k < xa->nd; ++k) {
        if (aa->dimensions[k] != xa->dimensions[k]) {
            return false;
        }
    }
    return true;
}

// An exact float in [0, 1].
inline bool plain_p(PyObject* v, double& p) {
    if (!PyFloat_CheckExact(v)) {
        return false;
    }
    p = PyFloat_AS_DOUBLE(v);
    return p >= 0.0 && p <= 1.0;  // NaN fails
}

// "inverted" (scaled) or "classic".
inline bool plain_mode(PyObject* v, bool& scaled) {
    if (!PyUnicode_CheckExact(v)) {
        return false;
    }
    if (PyUnicode_CompareWithASCIIString(v, "inverted") == 0) {
        scaled = true;
        return true;
    }
    scaled = false;
    return PyUnicode_CompareWithASCIIString(v, "classic") == 0;
}

inline bool plain_flag(PyObject* v, bool& flag) {
    flag = v == Py_True;
    return v == Py_True || v == Py_False;
}

enum class Target { kNotPlain, kError, kReady };

// Where the result goes: a new array like x (out None), or out when it is an exact
// ndarray of x's dtype and shape, C-contiguous, aligned, writeable, and x itself or
// disjoint from it. *y receives a new reference when kReady.
inline Target output_for(PyObject* x, const py::detail::PyArray_Proxy* xa, Dtype dt, std::size_t n,
                  PyObject* out, PyObject** y) {
    if (out == Py_None) {
        *y = new_array(*g_api, xa->descr, xa->nd, xa->dimensions);
        return *y == nullptr ? Target::kError : Target::kReady;  // MemoryError from NumPy
    }
    if (Py_TYPE(out) != g_api->PyArray_Type_) {
        return Target::kNotPlain;
    }
    const auto* oa = py::detail::array_proxy(out);
    Dtype odt = kF32;
    if ((oa->flags & kPlainOut) != kPlainOut || !plain_dtype(oa->descr, odt) || odt != dt ||
        oa->nd != xa->nd) {
        return Target::kNotPlain;
    }
    for (int k = 0; k < xa->nd; ++k) {
        if (oa->dimensions[k] != xa->dimensions[k]) {
            return Target::kNotPlain;
        }
    }
    if (out != x) {
        const std::size_t nbytes = n * dtype_size(dt);
        const char* xb = xa->data;
        const char* ob = oa->data;
        if (overlapping(xb, ob, nbytes)) {
            return Target::kNotPlain;  // the same memory through another view, or a partial overlap
        }
    }
    Py_INCREF(out);
    *y = out;
    return Target::kReady;
}

inline char* data_of(PyObject* a) { return py::detail::array_proxy(a)->data; }

// Runs work() with the GIL released for large arrays. No C++ exception crosses this
// C entry point: a std::bad_alloc becomes MemoryError, anything else RuntimeError.
// Returns false with the Python error set.
template <class Work>
inline bool run_released(std::size_t n, const Work& work) {
    int failure = 0;  // 1: out of memory, 2: other
    auto guarded = [&]() noexcept {
        try {
            work();
        } catch (const std::bad_alloc&) {
            failure = 1;
        } catch (...) {
            failure = 2;
        }
    };
    if (n < kReleaseGilElements) {
        guarded();
    } else {
        Py_BEGIN_ALLOW_THREADS guarded();
        Py_END_ALLOW_THREADS
    }
    if (failure == 1) {
        PyErr_NoMemory();
    } else if (failure == 2) {
        PyErr_SetString(PyExc_RuntimeError, "fastdropout: the native kernel failed");
    }
    return failure == 0;
}

// What a forward fast path returns: y alone (return_mask False), (y, bits) (True:
// the layers keep the bits and make their Mask lazily), or (y, Mask) (the sentinel
// _core._mask_maker returned: the public functions' return_mask=True).
enum class Want { kY, kBits, kMask };

// fastdropout.Mask, its `_s` slot and the sentinel asking for one, registered once
// by _mask_maker (register_fast.cpp); strong references kept for the process.
inline PyTypeObject* g_mask_type = nullptr;
inline PyObject* g_mask_slot = nullptr;
inline PyObject* g_want_mask = nullptr;

inline bool plain_want(PyObject* v, Want& want) {
    if (v == Py_False) {
        want = Want::kY;
    } else if (v == Py_True) {
        want = Want::kBits;
    } else if (v == g_want_mask && v != nullptr) {
        want = Want::kMask;
    } else {
        return false;
    }
    return true;
}

// What a Mask records besides its bits (docs/spec.md section 5): the call's p, mode,
// seed and offset objects (borrowed; exact float, str and ints, as the general path
// records them) and the layout: the input's dims and its broadcast axes (bit k of
// broadcast set for axis k).
struct MaskSpec {
    PyObject* p;
    PyObject* mode;
    PyObject* seed;
    PyObject* offset;
    const Py_intptr_t* dims;
    int nd;
    std::uint64_t broadcast;
};

// The empty tuple (for tp_new's arguments), made once.
inline PyObject* empty_tuple() {
    static PyObject* empty = PyTuple_New(0);
    return empty;
}

inline bool broadcast_axis(const MaskSpec& s, int k) {
    return k < 64 && ((s.broadcast >> k) & 1u) != 0;
}

// A Mask around `bits` (made read-only, as Mask._new does), with _s = (bits, shape,
// size, p, mode, seed, offset, axes, None). New reference, or nullptr with
// MemoryError set.
inline PyObject* new_mask(PyObject* bits, const MaskSpec& s) {
    int n_axes = 0;
    for (int k = 0; k < s.nd; ++k) {
        n_axes += broadcast_axis(s, k) ? 1 : 0;
    }
    PyObject* shape = PyTuple_New(s.nd);
    PyObject* axes = PyTuple_New(n_axes);
    PyObject* state = nullptr;
    PyObject* mask = nullptr;
    std::size_t size = 1;
    bool ok = shape != nullptr && axes != nullptr;
    for (int k = 0, j = 0; ok && k < s.nd; ++k) {
        const bool b = broadcast_axis(s, k);
        const Py_intptr_t m = b ? 1 : s.dims[k];
        size *= static_cast<std::size_t>(m);
        PyObject* dim = PyLong_FromSsize_t(m);
        ok = dim != nullptr;
        if (ok) {
            PyTuple_SET_ITEM(shape, k, dim);
        }
        if (ok && b) {
            PyObject* axis = PyLong_FromLong(k);
            ok = axis != nullptr;
            if (ok) {
                PyTuple_SET_ITEM(axes, j++, axis);
            }
        }
    }
    PyObject* size_obj = ok ? PyLong_FromSize_t(size) : nullptr;
    if (size_obj != nullptr) {
        state = PyTuple_Pack(9, bits, shape, size_obj, s.p, s.mode, s.seed, s.offset, axes,
                             Py_None);
    }
    if (state != nullptr) {
        mask = g_mask_type->tp_new(g_mask_type, empty_tuple(), nullptr);  // Mask.__new__(Mask)
    }
    if (mask != nullptr && Py_TYPE(g_mask_slot)->tp_descr_set(g_mask_slot, mask, state) != 0) {
        Py_CLEAR(mask);
    }
    Py_XDECREF(shape);
    Py_XDECREF(axes);
    Py_XDECREF(size_obj);
    Py_XDECREF(state);
    if (mask != nullptr) {
        py::detail::array_proxy(bits)->flags &= ~npy_api::NPY_ARRAY_WRITEABLE_;
    }
    return mask;
}

// The second result before the kernel runs (so that nothing is written when it
// cannot be made): nullptr for Want::kY, else a new reference to bits or to a Mask
// around them. False with MemoryError set on failure.
inline bool second_result(PyObject* bits, Want want, const MaskSpec& spec, PyObject** second) {
    *second = nullptr;
    if (want == Want::kY) {
        return true;
    }
    if (want == Want::kBits) {
        Py_INCREF(bits);
        *second = bits;
        return true;
    }
    *second = new_mask(bits, spec);
    return *second != nullptr;
}

// y alone, or (y, second); steals the three references (bits and second may be null).
inline PyObject* result(PyObject* y, PyObject* bits, PyObject* second) {
    Py_XDECREF(bits);
    if (second == nullptr) {
        return y;
    }
    PyObject* pair = PyTuple_Pack(2, y, second);
    Py_DECREF(y);
    Py_DECREF(second);
    return pair;  // nullptr (MemoryError) if the tuple could not be made
}

inline bool check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char* usage) {
    if (nargs == want) {
        return true;
    }
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", usage, want, nargs);
    return false;
}
// The broadcast flags of a mask of shape `mask_shape` (an exact tuple of exact ints)
// with broadcast `axes` (an exact tuple of exact ints, sorted, as Mask keeps them)
// for an array of dims `dims`: every mask dim equals the array's, or is 1 on a
// broadcast axis. Returns false if anything does not fit (or is not plain).
inline bool mask_layout(PyObject* mask_shape, PyObject* axes, const std::vector<std::size_t>& dims,
                 std::vector<bool>& broadcast, std::size_t& n_mask) {
    if (!PyTuple_CheckExact(mask_shape) || !PyTuple_CheckExact(axes) ||
        static_cast<std::size_t>(PyTuple_GET_SIZE(mask_shape)) != dims.size()) {
        return false;
    }
    broadcast.assign(dims.size(), false);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(axes); ++i) {
        std::uint64_t a = 0;
        if (!plain_u64(PyTuple_GET_ITEM(axes, i), a) || a >= dims.size()) {
            return false;
        }
        broadcast[static_cast<std::size_t>(a)] = true;
    }
    n_mask = 1;
    for (std::size_t k = 0; k < dims.size(); ++k) {
        std::uint64_t m = 0;
        if (!plain_u64(PyTuple_GET_ITEM(mask_shape, static_cast<Py_ssize_t>(k)), m) ||
            m != (broadcast[k] ? 1 : dims[k])) {
            return false;
        }
        n_mask *= static_cast<std::size_t>(m);
    }
    return true;
}


// True when `mask_shape` (an exact tuple of exact ints) is xa's shape.
inline bool same_shape(PyObject* mask_shape, const py::detail::PyArray_Proxy* xa) {
    if (!PyTuple_CheckExact(mask_shape) || PyTuple_GET_SIZE(mask_shape) != xa->nd) {
        return false;
    }
    for (int k = 0; k < xa->nd; ++k) {
        std::uint64_t m = 0;
        if (!plain_u64(PyTuple_GET_ITEM(mask_shape, k), m) ||
            m != static_cast<std::uint64_t>(xa->dimensions[k])) {
            return false;
        }
    }
    return true;
}

// The data of `bits` when it holds a mask of n_mask elements as the kernels read it:
// an exact 1-D uint8 ndarray of ceil(n_mask / 8) bytes, C-contiguous; else nullptr.
inline const std::uint8_t* plain_bits(PyObject* bits, std::size_t n_mask) {
    if (Py_TYPE(bits) != g_api->PyArray_Type_) {
        return nullptr;
    }
    const auto* ba = py::detail::array_proxy(bits);
    if (py::detail::array_descriptor_proxy(ba->descr)->type_num != npy_api::NPY_UBYTE_ ||
        (ba->flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_) == 0 || ba->nd != 1 ||
        static_cast<std::size_t>(ba->dimensions[0]) != (n_mask + 7) / 8) {
        return nullptr;
    }
    return reinterpret_cast<const std::uint8_t*>(ba->data);
}

}  // namespace fast
}  // namespace fastdropout
