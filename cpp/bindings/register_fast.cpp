// _core.dense, _core.dense_window, _core.spatial, _core.spatial_window,
// _core.backward: the whole of a plain call (dropout and spatial_dropout, each also
// of a block with a plain window; dropout_backward with a stored mask) in one C++
// function, so that
// small arrays do not pay for Python-level checks, np.empty and pybind11's argument
// conversion (together several microseconds, against ~0.5 us of Philox for 1024
// elements).
//
// "Plain" means: x (or g) an exact numpy.ndarray of float16/32/64 in native byte
// order or of ml_dtypes.bfloat16 (recognised by dtype equality), C-contiguous and
// aligned; p an exact float in [0, 1] (with a scale that does not overflow the
// dtype); mode "inverted" or
// "classic"; seed and offset exact ints in [0, 2**64); out None or an exact ndarray
// of x's dtype and shape, C-contiguous, aligned, writeable, and either x itself or
// disjoint from it; flags True or False. For anything else these functions return
// None and the Python layer takes its general path, which validates everything and
// raises the documented errors. So they never raise for bad input; they can only
// raise MemoryError when an output cannot be allocated, and then nothing was written.
//
// Registered as METH_FASTCALL functions (positional only, no pybind11 argument
// casting); see kMethods at the end for the signatures.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"
#include "../src/window.hpp"
#include "array_view.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

using npy_api = py::detail::npy_api;

// NumPy's type numbers for the three element types (stable across NumPy 1.x and 2.x).
constexpr int kNpyHalf = 23;
constexpr int kNpyFloat = npy_api::NPY_FLOAT_;
constexpr int kNpyDouble = npy_api::NPY_DOUBLE_;

// Below this many elements the kernel runs with the GIL held: releasing and
// re-taking it costs more than the work (about 10 us of kernel at this size).
constexpr std::size_t kReleaseGilElements = std::size_t{1} << 14;

// The element type of a plain array's descriptor, or false.
bool plain_dtype(PyObject* descr, Dtype& dt) {
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
bool plain_u64(PyObject* v, std::uint64_t& out) {
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
std::uint64_t threshold_of(double p) {
    const double v = p * 4294967296.0;
    const double whole = std::floor(v);
    auto t = static_cast<std::uint64_t>(whole);
    const double frac = v - whole;
    if (frac > 0.5 || (frac == 0.5 && (t & 1u) != 0)) {
        ++t;
    }
    return t;
}

// s (>= 1) rounded once to float16, round half to even, as NumPy's float64 ->
// float16 cast does; [65520, inf] overflows to inf.
double half_rounded(double s) {
    if (!(s < 65520.0)) {
        return HUGE_VAL;
    }
    int e = 0;
    (void)std::frexp(s, &e);                        // s in [2**(e-1), 2**e)
    const double ulp = std::ldexp(1.0, e - 1 - 10);  // 10 fraction bits
    const double q = s / ulp;                        // exact, in [1024, 2048)
    double whole = std::floor(q);
    const double frac = q - whole;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(whole, 2.0) != 0.0)) {
        whole += 1.0;
    }
    return whole * ulp;
}

// s (>= 1, at most 2**53) rounded once to bfloat16 (8 significant bits), round half
// to even, straight from float64 (docs/spec.md section 8: not through float32).
double bfloat16_rounded(double s) {
    if (std::isinf(s)) {
        return s;
    }
    int e = 0;
    (void)std::frexp(s, &e);
    const double ulp = std::ldexp(1.0, e - 1 - 7);  // 7 fraction bits
    const double q = s / ulp;                       // exact, in [128, 256)
    double whole = std::floor(q);
    const double frac = q - whole;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(whole, 2.0) != 0.0)) {
        whole += 1.0;
    }
    return whole * ulp;
}

// docs/spec.md section 3: dtype(1 / (1 - p)) computed in float64, rounded once; p == 1
// drops everything, the scale is then never used.
double inverted_scale(double p, Dtype dt) {
    const double s = p == 1.0 ? HUGE_VAL : 1.0 / (1.0 - p);
    switch (dt) {
        case kF16: return half_rounded(s);
        case kBF16: return bfloat16_rounded(s);
        case kF32: return static_cast<double>(static_cast<float>(s));
        default: return s;
    }
}

// docs/spec.md section 8: a p < 1 whose scale overflows the dtype (float16 only) is an error
// that the general path raises; the fast paths decline it.
bool scale_overflows(double p, double scale) { return p < 1.0 && std::isinf(scale); }

PyObject* new_array(const npy_api& api, PyObject* descr, int nd, const Py_intptr_t* dims) {
    Py_INCREF(descr);  // PyArray_NewFromDescr steals a reference to the descriptor
    return api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, nd, dims, nullptr, nullptr, 0,
                                     nullptr);
}

PyObject* new_bits(const npy_api& api, std::size_t n_bits) {
    const auto nb = static_cast<Py_intptr_t>((n_bits + 7) / 8);
    PyObject* u8 = api.PyArray_DescrFromType_(npy_api::NPY_UBYTE_);
    if (u8 == nullptr) {
        return nullptr;
    }
    return api.PyArray_NewFromDescr_(api.PyArray_Type_, u8, 1, &nb, nullptr, nullptr, 0,
                                     nullptr);  // steals u8
}

// NumPy's C API table, looked up once at import (npy_api::get() is not free).
const npy_api* g_api = nullptr;

PyObject* none() {
    Py_INCREF(Py_None);
    return Py_None;
}

constexpr int kPlainIn = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
constexpr int kPlainOut = kPlainIn | npy_api::NPY_ARRAY_WRITEABLE_;

// x: an exact ndarray of a supported dtype, C-contiguous and aligned.
bool plain_input(PyObject* x, const py::detail::PyArray_Proxy*& xa, Dtype& dt, std::size_t& n) {
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

// An exact float in [0, 1].
bool plain_p(PyObject* v, double& p) {
    if (!PyFloat_CheckExact(v)) {
        return false;
    }
    p = PyFloat_AS_DOUBLE(v);
    return p >= 0.0 && p <= 1.0;  // NaN fails
}

// "inverted" (scaled) or "classic".
bool plain_mode(PyObject* v, bool& scaled) {
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

bool plain_flag(PyObject* v, bool& flag) {
    flag = v == Py_True;
    return v == Py_True || v == Py_False;
}

enum class Target { kNotPlain, kError, kReady };

// Where the result goes: a new array like x (out None), or out when it is an exact
// ndarray of x's dtype and shape, C-contiguous, aligned, writeable, and x itself or
// disjoint from it. *y receives a new reference when kReady.
Target output_for(PyObject* x, const py::detail::PyArray_Proxy* xa, Dtype dt, std::size_t n,
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

char* data_of(PyObject* a) { return py::detail::array_proxy(a)->data; }

// Runs work() with the GIL released for large arrays. No C++ exception crosses this
// C entry point: a std::bad_alloc becomes MemoryError, anything else RuntimeError.
// Returns false with the Python error set.
template <class Work>
bool run_released(std::size_t n, const Work& work) {
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

// y alone, or (y, bits); steals both references.
PyObject* result(PyObject* y, PyObject* bits, bool want_bits) {
    if (!want_bits) {
        Py_XDECREF(bits);
        return y;
    }
    PyObject* pair = PyTuple_Pack(2, y, bits);
    Py_DECREF(y);
    Py_DECREF(bits);
    return pair;  // nullptr (MemoryError) if the tuple could not be made
}

bool check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char* usage) {
    if (nargs == want) {
        return true;
    }
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments, got %zd", usage, want, nargs);
    return false;
}

// Shared by dense() and spatial(): everything but the mask layout.
struct ForwardCall {
    const py::detail::PyArray_Proxy* xa = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    bool scaled = false;
    bool want_mask = false;
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
};

bool plain_forward(PyObject* const* args, ForwardCall& c) {
    return plain_input(args[0], c.xa, c.dt, c.n) && plain_p(args[1], c.p) &&
           plain_mode(args[2], c.scaled) && plain_u64(args[3], c.seed) &&
           plain_u64(args[4], c.offset) && plain_flag(args[6], c.want_mask);
}

StreamArgs stream_of(const ForwardCall& c) {
    return {static_cast<std::uint32_t>(c.seed), static_cast<std::uint32_t>(c.seed >> 32), c.offset,
            threshold_of(c.p)};
}

// dense(x, p, mode, seed, offset, out, return_mask) -> y | (y, bits) | None
PyObject* dense(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 7, "dense(x, p, mode, seed, offset, out, return_mask)")) {
        return nullptr;
    }
    ForwardCall c;
    if (!plain_forward(args, c)) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], c.xa, c.dt, c.n, args[5], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    PyObject* bits = nullptr;
    if (c.want_mask && (bits = new_bits(*g_api, c.n)) == nullptr) {
        Py_DECREF(y);
        return nullptr;
    }
    if (c.scaled && scale_overflows(c.p, inverted_scale(c.p, c.dt))) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        return none();
    }
    ForwardArgs a{};
    a.stream = stream_of(c);
    a.x = c.xa->data;
    a.y = data_of(y);
    a.bits = bits == nullptr ? nullptr : reinterpret_cast<std::uint8_t*>(data_of(bits));
    a.n = c.n;
    a.scale = c.scaled ? inverted_scale(c.p, c.dt) : 1.0;
    a.scaled = c.scaled;
    const KernelTable& table = active_table();
    if (!run_released(c.n, [&] { run_forward(table, c.dt, a); })) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        return nullptr;
    }
    return result(y, bits, c.want_mask);
}

// A plain window (docs/spec.md section 11) for a block of dims `dims`: an exact tuple
// (global_shape, start) of two exact tuples of exact ints, one per axis, global sizes
// in [0, 2**63), the block inside the global array at start. Fills w with the window
// layout of a dense mask and `first` with the stream position of the block's first
// element (offset + the start's global index, mod 2**64), as _window.layout does.
//
// broadcast (null: none) marks the axes along which the mask is broadcast: there the
// window of the mask has size 1 and stride 0, and the axis does not count in the
// global mask's strides (the block must still fit along it).
bool plain_window(PyObject* window, const Py_intptr_t* dims, int nd, std::uint64_t offset,
                  const std::vector<bool>* broadcast, WindowLayout& w, std::uint64_t& first) {
    if (!PyTuple_CheckExact(window) || PyTuple_GET_SIZE(window) != 2) {
        return false;
    }
    PyObject* gshape = PyTuple_GET_ITEM(window, 0);
    PyObject* start = PyTuple_GET_ITEM(window, 1);
    if (!PyTuple_CheckExact(gshape) || !PyTuple_CheckExact(start) ||
        PyTuple_GET_SIZE(gshape) != nd || PyTuple_GET_SIZE(start) != nd ||
        static_cast<std::size_t>(nd) > kMaxWindowDims) {
        return false;
    }
    const auto n = static_cast<std::size_t>(nd);
    w.dims.resize(n);
    w.gstride.resize(n);
    std::uint64_t acc = 1;  // the global C strides, mod 2**64
    for (std::size_t k = n; k-- > 0;) {
        std::uint64_t g = 0;
        std::uint64_t s = 0;
        const auto item = static_cast<Py_ssize_t>(k);
        if (!plain_u64(PyTuple_GET_ITEM(gshape, item), g) ||
            !plain_u64(PyTuple_GET_ITEM(start, item), s) || g >= (std::uint64_t{1} << 63)) {
            return false;
        }
        const auto d = static_cast<std::uint64_t>(dims[k]);
        if (s > g || d > g - s) {
            return false;  // the block does not fit: the general path says so
        }
        if (broadcast != nullptr && (*broadcast)[k]) {
            w.dims[k] = 1;
            w.gstride[k] = 0;
            continue;
        }
        w.dims[k] = static_cast<std::size_t>(d);
        w.gstride[k] = acc;
        offset += s * acc;
        acc *= g;
    }
    first = offset;
    return true;
}

// dense_window(x, p, mode, seed, offset, out, return_mask, window)
//   -> y | (y, bits) | None: dense() of a block with window=(global_shape, start).
PyObject* dense_window(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 8,
                     "dense_window(x, p, mode, seed, offset, out, return_mask, window)")) {
        return nullptr;
    }
    ForwardCall c;
    if (!plain_forward(args, c)) {
        return none();
    }
    WindowLayout w;
    std::uint64_t first = 0;
    if (!plain_window(args[7], c.xa->dimensions, c.xa->nd, c.offset, nullptr, w, first)) {
        return none();
    }
    if (c.scaled && scale_overflows(c.p, inverted_scale(c.p, c.dt))) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], c.xa, c.dt, c.n, args[5], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    PyObject* bits = nullptr;
    if (c.want_mask && (bits = new_bits(*g_api, c.n)) == nullptr) {
        Py_DECREF(y);
        return nullptr;
    }
    ForwardArgs a{};
    a.stream = stream_of(c);
    a.stream.offset = first;
    a.x = c.xa->data;
    a.y = data_of(y);
    a.bits = bits == nullptr ? nullptr : reinterpret_cast<std::uint8_t*>(data_of(bits));
    a.n = c.n;
    a.scale = c.scaled ? inverted_scale(c.p, c.dt) : 1.0;
    a.scaled = c.scaled;
    const KernelTable& table = active_table();
    if (!run_released(c.n, [&] { run_window_forward(table, c.dt, a, w); })) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        return nullptr;
    }
    return result(y, bits, c.want_mask);
}

// spatial() and spatial_window(): window is null for a plain call.
PyObject* spatial_call(PyObject* const* args, PyObject* window) {
    ForwardCall c;
    bool channels_last = false;
    if (!plain_forward(args, c) || !plain_flag(args[7], channels_last) || c.xa->nd < 3 ||
        c.xa->nd > 5) {
        return none();
    }
    if (c.scaled && scale_overflows(c.p, inverted_scale(c.p, c.dt))) {
        return none();
    }
    const auto nd = static_cast<std::size_t>(c.xa->nd);
    std::vector<std::size_t> dims(nd);
    std::vector<bool> broadcast(nd, true);
    for (std::size_t k = 0; k < nd; ++k) {
        dims[k] = static_cast<std::size_t>(c.xa->dimensions[k]);
    }
    const std::size_t channel_axis = channels_last ? nd - 1 : 1;
    broadcast[0] = false;  // one decision per (n, c): docs/spec.md section 4
    broadcast[channel_axis] = false;
    WindowLayout w;  // the window of the (N, C) mask (docs/spec.md section 11)
    std::uint64_t first = c.offset;
    if (window != nullptr &&
        !plain_window(window, c.xa->dimensions, c.xa->nd, c.offset, &broadcast, w, first)) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], c.xa, c.dt, c.n, args[5], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    const std::size_t n_mask = dims[0] * dims[channel_axis];
    PyObject* bits = new_bits(*g_api, n_mask);  // the mask is made first, even if not returned
    if (bits == nullptr) {
        Py_DECREF(y);
        return nullptr;
    }
    ApplyArgs ap{};
    ap.x = c.xa->data;
    ap.y = data_of(y);
    ap.bits = reinterpret_cast<const std::uint8_t*>(data_of(bits));
    ap.scale = c.scaled ? inverted_scale(c.p, c.dt) : 1.0;
    ap.scaled = c.scaled;
    StreamArgs stream = stream_of(c);
    stream.offset = first;
    auto* bits_out = reinterpret_cast<std::uint8_t*>(data_of(bits));
    const KernelTable& table = active_table();
    if (!run_released(c.n, [&] {
            if (window == nullptr) {
                run_gen_bits(table, stream, bits_out, n_mask);
            } else {
                run_window_gen_bits(table, stream, bits_out, w);
            }
            run_apply(table, c.dt, ap, dims, broadcast);
        })) {
        Py_DECREF(y);
        Py_DECREF(bits);
        return nullptr;
    }
    return result(y, bits, c.want_mask);
}

// spatial(x, p, mode, seed, offset, out, return_mask, channels_last)
//   -> y | (y, bits) | None; x of rank 3, 4 or 5 (else None).
PyObject* spatial(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 8,
                     "spatial(x, p, mode, seed, offset, out, return_mask, channels_last)")) {
        return nullptr;
    }
    return spatial_call(args, nullptr);
}

// spatial_window(x, p, mode, seed, offset, out, return_mask, channels_last, window)
//   -> y | (y, bits) | None: spatial() of a block with window=(global_shape, start);
//   the bits are the block's window of the (N, C) mask.
PyObject* spatial_window(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 9,
                     "spatial_window(x, p, mode, seed, offset, out, return_mask, "
                     "channels_last, window)")) {
        return nullptr;
    }
    return spatial_call(args, args[8]);
}

// The broadcast flags of a mask of shape `mask_shape` (an exact tuple of exact ints)
// with broadcast `axes` (an exact tuple of exact ints, sorted, as Mask keeps them)
// for an array of dims `dims`: every mask dim equals the array's, or is 1 on a
// broadcast axis. Returns false if anything does not fit (or is not plain).
bool mask_layout(PyObject* mask_shape, PyObject* axes, const std::vector<std::size_t>& dims,
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

// backward(g, bits, p, inverted, out, mask_shape, axes) -> grad_x | None: the
// backward pass from the bits of a stored mask (ceil(n_mask/8) uint8 bytes,
// C-contiguous, 1-D) whose shape and broadcast axes fit g.
PyObject* backward(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 7, "backward(g, bits, p, inverted, out, mask_shape, axes)")) {
        return nullptr;
    }
    const py::detail::PyArray_Proxy* ga = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    bool scaled = false;
    PyObject* bits = args[1];
    if (!plain_input(args[0], ga, dt, n) || !plain_p(args[2], p) || !plain_flag(args[3], scaled) ||
        Py_TYPE(bits) != g_api->PyArray_Type_) {
        return none();
    }
    std::vector<std::size_t> dims(static_cast<std::size_t>(ga->nd));
    for (std::size_t k = 0; k < dims.size(); ++k) {
        dims[k] = static_cast<std::size_t>(ga->dimensions[k]);
    }
    std::vector<bool> broadcast;
    std::size_t n_mask = 0;
    if (!mask_layout(args[5], args[6], dims, broadcast, n_mask)) {
        return none();
    }
    const auto* ba = py::detail::array_proxy(bits);
    if (py::detail::array_descriptor_proxy(ba->descr)->type_num != npy_api::NPY_UBYTE_ ||
        (ba->flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_) == 0 || ba->nd != 1 ||
        static_cast<std::size_t>(ba->dimensions[0]) != (n_mask + 7) / 8) {
        return none();
    }
    // An infinite scale (float16 overflow, or a hand-made mask with p == 1 and kept
    // bits) is refused by the general path (docs/spec.md section 8).
    if (scaled && std::isinf(inverted_scale(p, dt))) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], ga, dt, n, args[4], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    ApplyArgs ap{};
    ap.x = ga->data;
    ap.y = data_of(y);
    ap.bits = reinterpret_cast<const std::uint8_t*>(ba->data);
    ap.scale = scaled ? inverted_scale(p, dt) : 1.0;
    ap.scaled = scaled;
    const KernelTable& table = active_table();
    if (!run_released(n, [&] { run_apply(table, dt, ap, dims, broadcast); })) {
        Py_DECREF(y);
        return nullptr;
    }
    return y;
}

PyMethodDef kMethods[] = {
    {"dense", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&dense)), METH_FASTCALL,
     "dense(x, p, mode, seed, offset, out, return_mask) -> y, (y, bits) or None.\n\n"
     "A plain dense training forward pass, checked and allocated in C++ (private; see\n"
     "fastdropout.dropout). None means 'not plain': take the general path."},
    {"dense_window", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&dense_window)),
     METH_FASTCALL,
     "dense_window(x, p, mode, seed, offset, out, return_mask, window) -> y, (y, bits)\n"
     "or None: the same for a block with window=(global_shape, start), both exact tuples\n"
     "of ints (private; see fastdropout.dropout's window=)."},
    {"spatial", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&spatial)),
     METH_FASTCALL,
     "spatial(x, p, mode, seed, offset, out, return_mask, channels_last) -> y, (y, bits)\n"
     "or None: the same for spatial dropout of a rank-3/4/5 x (private; see\n"
     "fastdropout.spatial_dropout)."},
    {"spatial_window",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&spatial_window)), METH_FASTCALL,
     "spatial_window(x, p, mode, seed, offset, out, return_mask, channels_last, window)\n"
     "-> y, (y, bits) or None: spatial() of a block with a plain window (private)."},
    {"backward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&backward)),
     METH_FASTCALL,
     "backward(g, bits, p, inverted, out, mask_shape, axes) -> grad_x or None: the\n"
     "backward pass from a stored mask's bits, shape and broadcast axes (private; see\n"
     "fastdropout.dropout_backward)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

void register_fast(py::module_& m) {
    g_api = &npy_api::get();
    if (PyModule_AddFunctions(m.ptr(), kMethods) != 0) {
        throw py::error_already_set();
    }
}

}  // namespace fastdropout
