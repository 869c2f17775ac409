// Shared by the window fast paths (register_fast.cpp: dense_window, spatial_window;
// register_fast_fused.cpp: alpha and add with a window): recognising a plain window
// without raising. Runs with the GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../src/window.hpp"
#include "fast_common.hpp"

namespace fastdropout {
namespace fast {

// A plain window (docs/spec.md section 11) for a block of dims `dims`: an exact tuple
// (global_shape, start) of two exact tuples of exact ints, one per axis, global sizes
// in [0, 2**63), the block inside the global array at start. Fills w with the window
// layout of a dense mask and `first` with the stream position of the block's first
// element (offset + the start's global index, mod 2**64), as _window.layout does.
//
// broadcast (null: none) marks the axes along which the mask is broadcast: there the
// window of the mask has size 1 and stride 0, and the axis does not count in the
// global mask's strides (the block must still fit along it).
inline bool plain_window(PyObject* window, const Py_intptr_t* dims, int nd, std::uint64_t offset,
                         const std::vector<bool>* broadcast, WindowLayout& w,
                         std::uint64_t& first) {
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

}  // namespace fast
}  // namespace fastdropout
