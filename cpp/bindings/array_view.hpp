// Cheap defence-in-depth checks on arrays handed over by the Python layer, which has
// already validated them: a wrong call raises ValueError/TypeError, never crashes.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bfloat16.hpp"
#include "fastdropout/kernel_args.hpp"

namespace fastdropout {
namespace py = pybind11;

// A dtype's byteorder character ('=', '|', '<' or '>') means this host's order.
inline bool native_byte_order(char bo) {
    const std::uint16_t probe = 1;
    const bool little = *reinterpret_cast<const unsigned char*>(&probe) == 1;
    return bo == '=' || bo == '|' || bo == (little ? '<' : '>');
}

inline bool native_byte_order(const py::dtype& dt) { return native_byte_order(dt.byteorder()); }

// The element type of a float16/32/64 or bfloat16 array, or TypeError.
inline Dtype dtype_of(const py::array& a, const char* name) {
    const py::dtype dt = a.dtype();
    if (is_bfloat16(dt.ptr())) {
        return kBF16;
    }
    if (dt.kind() == 'f' && native_byte_order(dt)) {
        switch (dt.itemsize()) {
            case 2: return kF16;
            case 4: return kF32;
            case 8: return kF64;
            default: break;
        }
    }
    throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(dt)) +
                         " is not supported (float16, float32, float64 or bfloat16, native byte order)");
}

inline void require_c_contiguous(const py::array& a, const char* name) {
    if ((a.flags() & py::array::c_style) == 0) {
        throw py::value_error(std::string(name) + " must be C-contiguous");
    }
}

// The kernels dereference typed pointers: a misaligned element would be undefined
// behaviour (the Python layer copies such arrays through an aligned temporary).
inline void require_aligned(const py::array& a, const char* name) {
    if (a.size() == 0) {
        return;  // nothing is dereferenced (NumPy calls an empty array aligned, whatever its pointer)
    }
    const auto addr = reinterpret_cast<std::uintptr_t>(a.data());
    if (addr % static_cast<std::uintptr_t>(a.itemsize()) != 0) {
        throw py::value_error(std::string(name) + " is not aligned to its element size");
    }
}

inline void require_writeable(const py::array& a, const char* name) {
    if (!a.writeable()) {
        throw py::value_error(std::string(name) + " is read-only");
    }
}

inline std::vector<std::size_t> shape_of(const py::array& a) {
    std::vector<std::size_t> s(static_cast<std::size_t>(a.ndim()));
    for (py::ssize_t k = 0; k < a.ndim(); ++k) {
        s[static_cast<std::size_t>(k)] = static_cast<std::size_t>(a.shape(k));
    }
    return s;
}

inline std::size_t product(const std::vector<std::size_t>& s) {
    std::size_t n = 1;
    for (std::size_t d : s) {
        n *= d;
    }
    return n;
}

inline std::uint64_t to_u64(const py::handle& v, const char* name) {
    PyObject* index = PyNumber_Index(v.ptr());  // accepts NumPy integers, refuses floats
    if (index == nullptr) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be an integer");
    }
    const unsigned long long r = PyLong_AsUnsignedLongLong(index);
    Py_DECREF(index);
    if (r == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr) {
        PyErr_Clear();
        throw py::value_error(std::string(name) + " must be an integer in [0, 2**64)");
    }
    return static_cast<std::uint64_t>(r);
}

// Whether the nbytes from a and the nbytes from b share a byte.
inline bool overlapping(const void* a, const void* b, std::size_t nbytes) {
    const auto* pa = static_cast<const unsigned char*>(a);
    const auto* pb = static_cast<const unsigned char*>(b);
    return nbytes != 0 && pa < pb + nbytes && pb < pa + nbytes;
}

// y and x either the same memory or disjoint.
inline void require_same_or_disjoint(const py::array& x, const py::array& y) {
    const auto nbytes = static_cast<std::size_t>(x.nbytes());
    if (x.data() != y.data() && overlapping(x.data(), y.data(), nbytes)) {
        throw py::value_error("output overlaps the input without being the same array");
    }
}

}  // namespace fastdropout
