// _core.dense, _core.dense_window, _core.spatial, _core.spatial_window,
// _core.backward, _core._mask_maker: the whole of a plain call (dropout and
// spatial_dropout, each also of a block with a plain window; dropout_backward with a
// stored mask) in one C++ function, so that
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
// disjoint from it; flags True or False (return_mask: also the _mask_maker sentinel,
// for a Mask object instead of the bits). For anything else these functions return
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
#include "fast_common.hpp"
#include "fast_spread.hpp"
#include "fast_window.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

using namespace fast;  // NOLINT(google-build-using-namespace): the shared helpers

// A stored (broadcast) mask applied: spread into dense bits for small calls
// (fast_spread.hpp), through run_apply's layout walk otherwise.
void apply_mask(const KernelTable& table, Dtype dt, const ApplyArgs& ap,
                const std::vector<std::size_t>& dims, const std::vector<bool>& broadcast,
                std::size_t n, std::size_t n_mask) {
    const bool streams = n * dtype_size(dt) >= stream_threshold();
    if (!apply_spread(table, dt, ap, dims, broadcast, n, n_mask, streams)) {
        run_apply(table, dt, ap, dims, broadcast);
    }
}

// Shared by dense() and spatial(): everything but the mask layout.
struct ForwardCall {
    const py::detail::PyArray_Proxy* xa = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    bool scaled = false;
    Want want = Want::kY;
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
};

bool plain_forward(PyObject* const* args, ForwardCall& c) {
    return plain_input(args[0], c.xa, c.dt, c.n) && plain_p(args[1], c.p) &&
           plain_mode(args[2], c.scaled) && plain_u64(args[3], c.seed) &&
           plain_u64(args[4], c.offset) && plain_want(args[6], c.want);
}

// The Mask of a forward call (args as dense() and spatial() take them).
MaskSpec mask_spec(PyObject* const* args, const ForwardCall& c, std::uint64_t broadcast) {
    return {args[1], args[2], args[3], args[4], c.xa->dimensions, c.xa->nd, broadcast};
}

StreamArgs stream_of(const ForwardCall& c) {
    return {static_cast<std::uint32_t>(c.seed), static_cast<std::uint32_t>(c.seed >> 32), c.offset,
            threshold_of(c.p)};
}

// dense(x, p, mode, seed, offset, out, return_mask) -> y | (y, bits) | (y, Mask) | None
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
    if (c.scaled && scale_overflows(c.p, inverted_scale(c.p, c.dt))) {
        Py_DECREF(y);
        return none();
    }
    PyObject* bits = nullptr;
    PyObject* second = nullptr;
    if (c.want != Want::kY && ((bits = new_bits(*g_api, c.n)) == nullptr ||
                               !second_result(bits, c.want, mask_spec(args, c, 0), &second))) {
        Py_DECREF(y);
        Py_XDECREF(bits);
        return nullptr;
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
        Py_XDECREF(second);
        return nullptr;
    }
    return result(y, bits, second);
}

// dense_window(x, p, mode, seed, offset, out, return_mask, window)
//   -> y | (y, bits) | None: dense() of a block with window=(global_shape, start)
//   (return_mask True or False: the Python layer makes the Mask, which records the
//   window).
PyObject* dense_window(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 8,
                     "dense_window(x, p, mode, seed, offset, out, return_mask, window)")) {
        return nullptr;
    }
    ForwardCall c;
    if (!plain_forward(args, c) || c.want == Want::kMask) {
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
    PyObject* second = nullptr;
    if (c.want != Want::kY && ((bits = new_bits(*g_api, c.n)) == nullptr ||
                               !second_result(bits, c.want, mask_spec(args, c, 0), &second))) {
        Py_DECREF(y);
        Py_XDECREF(bits);
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
        Py_XDECREF(second);
        return nullptr;
    }
    return result(y, bits, second);
}

// spatial() and spatial_window(): window is null for a plain call; with a window,
// return_mask is True or False (the Python layer makes the Mask).
PyObject* spatial_call(PyObject* const* args, PyObject* window) {
    ForwardCall c;
    bool channels_last = false;
    if (!plain_forward(args, c) || !plain_flag(args[7], channels_last) || c.xa->nd < 3 ||
        c.xa->nd > 5 || (window != nullptr && c.want == Want::kMask)) {
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
        Py_DECREF(y);
        return none();
    }
    const std::size_t n_mask = dims[0] * dims[channel_axis];
    PyObject* bits = new_bits(*g_api, n_mask);  // the mask is made first, even if not returned
    PyObject* second = nullptr;
    const std::uint64_t all_axes = (std::uint64_t{1} << nd) - 1;
    const std::uint64_t axes = all_axes & ~(std::uint64_t{1} | (std::uint64_t{1} << channel_axis));
    if (bits == nullptr || !second_result(bits, c.want, mask_spec(args, c, axes), &second)) {
        Py_DECREF(y);
        Py_XDECREF(bits);
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
            apply_mask(table, c.dt, ap, dims, broadcast, c.n, n_mask);
        })) {
        Py_DECREF(y);
        Py_DECREF(bits);
        Py_XDECREF(second);
        return nullptr;
    }
    return result(y, bits, second);
}

// spatial(x, p, mode, seed, offset, out, return_mask, channels_last)
//   -> y | (y, bits) | (y, Mask) | None; x of rank 3, 4 or 5 (else None).
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

// backward(g, bits, p, mode, out, mask_shape, axes) -> grad_x | None: the backward
// pass from the bits of a stored mask (ceil(n_mask/8) uint8 bytes, C-contiguous,
// 1-D) whose shape and broadcast axes fit g; mode "inverted", "classic" or "alpha"
// (the mask's).
PyObject* backward(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 7, "backward(g, bits, p, mode, out, mask_shape, axes)")) {
        return nullptr;
    }
    const py::detail::PyArray_Proxy* ga = nullptr;
    Dtype dt = kF32;
    std::size_t n = 0;
    double p = 0.0;
    double scale = 1.0;
    bool scaled = false;
    if (!plain_input(args[0], ga, dt, n) || !plain_p(args[2], p) ||
        !backward_scale(args[3], p, dt, true, scale, scaled)) {
        return none();
    }
    // A dense mask (no broadcast axes), the common case, needs no layout vectors.
    const bool dense = PyTuple_CheckExact(args[6]) && PyTuple_GET_SIZE(args[6]) == 0;
    std::vector<std::size_t> dims;
    std::vector<bool> broadcast;
    std::size_t n_mask = n;
    if (dense) {
        if (!same_shape(args[5], ga)) {
            return none();
        }
    } else {
        dims.resize(static_cast<std::size_t>(ga->nd));
        for (std::size_t k = 0; k < dims.size(); ++k) {
            dims[k] = static_cast<std::size_t>(ga->dimensions[k]);
        }
        if (!mask_layout(args[5], args[6], dims, broadcast, n_mask)) {
            return none();
        }
    }
    ApplyArgs ap{};
    ap.scale = scale;
    ap.scaled = scaled;
    if ((ap.bits = plain_bits(args[1], n_mask)) == nullptr) {
        return none();
    }
    PyObject* y = nullptr;
    const Target t = output_for(args[0], ga, dt, n, args[4], &y);
    if (t != Target::kReady) {
        return t == Target::kError ? nullptr : none();
    }
    ap.x = ga->data;
    ap.y = data_of(y);
    const KernelTable& table = active_table();
    if (!run_released(n, [&] {
            if (dense) {
                run_apply_dense(table, dt, ap, n);
            } else {
                apply_mask(table, dt, ap, dims, broadcast, n, n_mask);
            }
        })) {
        Py_DECREF(y);
        return nullptr;
    }
    return y;
}

// _mask_maker(Mask) -> sentinel: registers fastdropout.Mask (once, at import) so
// that the forward fast paths can return Mask objects, and returns the private
// object to pass as their return_mask to ask for one.
PyObject* mask_maker(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 1, "_mask_maker(Mask)")) {
        return nullptr;
    }
    if (!PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_mask_maker takes the Mask class");
        return nullptr;
    }
    PyObject* slot = PyObject_GetAttrString(args[0], "_s");  // the slot's descriptor
    if (slot == nullptr) {
        return nullptr;
    }
    if (Py_TYPE(slot)->tp_descr_set == nullptr) {
        Py_DECREF(slot);
        PyErr_SetString(PyExc_TypeError, "Mask._s must be a slot");
        return nullptr;
    }
    if (g_want_mask == nullptr) {
        g_want_mask = PyObject_CallNoArgs(reinterpret_cast<PyObject*>(&PyBaseObject_Type));
        if (g_want_mask == nullptr) {
            Py_DECREF(slot);
            return nullptr;
        }
    }
    Py_INCREF(args[0]);
    Py_XDECREF(reinterpret_cast<PyObject*>(g_mask_type));
    g_mask_type = reinterpret_cast<PyTypeObject*>(args[0]);
    Py_XDECREF(g_mask_slot);
    g_mask_slot = slot;
    Py_INCREF(g_want_mask);
    return g_want_mask;
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
    {"spatial_window",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&spatial_window)), METH_FASTCALL,
     "spatial_window(x, p, mode, seed, offset, out, return_mask, channels_last, window)\n"
     "-> y, (y, bits) or None: spatial() of a block with a plain window (private)."},
    {"spatial", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&spatial)),
     METH_FASTCALL,
     "spatial(x, p, mode, seed, offset, out, return_mask, channels_last) -> y, (y, bits)\n"
     "or None: the same for spatial dropout of a rank-3/4/5 x (private; see\n"
     "fastdropout.spatial_dropout)."},
    {"backward", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&backward)),
     METH_FASTCALL,
     "backward(g, bits, p, mode, out, mask_shape, axes) -> grad_x or None: the\n"
     "backward pass from a stored mask's bits, shape and broadcast axes (private; see\n"
     "fastdropout.dropout_backward)."},
    {"_mask_maker", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&mask_maker)),
     METH_FASTCALL,
     "_mask_maker(Mask) -> sentinel: registers the Mask class; pass the sentinel as\n"
     "return_mask to get (y, Mask) from dense, spatial, alpha and add (private)."},
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
