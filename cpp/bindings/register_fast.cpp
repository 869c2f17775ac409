// _core.dense: the whole of a plain dense training call in one C++ function, so that
// small arrays do not pay for Python-level checks, np.empty and pybind11's argument
// conversion (together several microseconds, against ~0.7 us of Philox for 1024
// elements).
//
// "Plain" means: x an exact numpy.ndarray of float16/32/64 in native byte order,
// C-contiguous and aligned; p an exact float in [0, 1]; mode "inverted" or "classic";
// seed and offset exact ints in [0, 2**64); out None or an exact ndarray of x's dtype
// and shape, C-contiguous, aligned, writeable, and either x itself or disjoint from
// it; return_mask True or False. For anything else the function returns None and
// fastdropout.dropout takes its general path, which validates everything and raises
// the documented errors. So this function never raises for bad input; it can only
// raise MemoryError when the output cannot be allocated, and then it has written
// nothing.
//
// Registered as a METH_FASTCALL function (no keyword arguments, no pybind11 argument
// casting): dense(x, p, mode, seed, offset, out, return_mask) -> y | (y, bits) | None.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <exception>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"

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

bool native_order(char byteorder) {
    const std::uint16_t probe = 1;
    const bool little = *reinterpret_cast<const unsigned char*>(&probe) == 1;
    return byteorder == '=' || byteorder == (little ? '<' : '>');
}

// The element type of a plain array's descriptor, or false.
bool plain_dtype(PyObject* descr, Dtype& dt) {
    const auto* d = py::detail::array_descriptor_proxy(descr);
    if (!native_order(d->byteorder)) {
        return false;
    }
    switch (d->type_num) {
        case kNpyHalf: dt = kF16; return true;
        case kNpyFloat: dt = kF32; return true;
        case kNpyDouble: dt = kF64; return true;
        default: return false;
    }
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

// SPEC section 2: round_half_even(p * 2**32); p * 2**32 is exact, so is the split.
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

// SPEC section 3: dtype(1 / (1 - p)) computed in float64, rounded once; p == 1
// drops everything, the scale is then never used.
double inverted_scale(double p, Dtype dt) {
    const double s = p == 1.0 ? HUGE_VAL : 1.0 / (1.0 - p);
    switch (dt) {
        case kF16: return half_rounded(s);
        case kF32: return static_cast<double>(static_cast<float>(s));
        default: return s;
    }
}

std::size_t element_size(Dtype dt) {
    return dt == kF16 ? 2 : (dt == kF32 ? 4 : 8);
}

PyObject* new_array(const npy_api& api, PyObject* descr, int nd, const Py_intptr_t* dims) {
    Py_INCREF(descr);  // PyArray_NewFromDescr steals a reference to the descriptor
    return api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, nd, dims, nullptr, nullptr, 0,
                                     nullptr);
}

// No C++ exception may cross this C entry point.
bool run_noexcept(const KernelTable& table, Dtype dt, const ForwardArgs& a) noexcept {
    try {
        run_forward(table, dt, a);
        return true;
    } catch (...) {
        return false;
    }
}

// NumPy's C API table, looked up once at import (npy_api::get() is not free).
const npy_api* g_api = nullptr;

PyObject* none() {
    Py_INCREF(Py_None);
    return Py_None;
}

PyObject* dense(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "dense(x, p, mode, seed, offset, out, return_mask) takes 7 arguments");
        return nullptr;
    }
    PyObject* x = args[0];
    PyObject* p_obj = args[1];
    PyObject* mode = args[2];
    PyObject* out = args[5];
    PyObject* want_mask = args[6];

    const npy_api& api = *g_api;
    if (Py_TYPE(x) != api.PyArray_Type_ || !PyFloat_CheckExact(p_obj) ||
        !PyUnicode_CheckExact(mode) || (want_mask != Py_True && want_mask != Py_False)) {
        return none();
    }
    const double p = PyFloat_AS_DOUBLE(p_obj);
    if (!(p >= 0.0 && p <= 1.0)) {  // NaN too
        return none();
    }
    bool scaled = false;
    if (PyUnicode_CompareWithASCIIString(mode, "inverted") == 0) {
        scaled = true;
    } else if (PyUnicode_CompareWithASCIIString(mode, "classic") != 0) {
        return none();
    }
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
    if (!plain_u64(args[3], seed) || !plain_u64(args[4], offset)) {
        return none();
    }

    const auto* xa = py::detail::array_proxy(x);
    constexpr int kPlainIn = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
    Dtype dt = kF32;
    if ((xa->flags & kPlainIn) != kPlainIn || !plain_dtype(xa->descr, dt)) {
        return none();
    }
    std::size_t n = 1;
    for (int k = 0; k < xa->nd; ++k) {
        n *= static_cast<std::size_t>(xa->dimensions[k]);
    }

    PyObject* y = nullptr;  // new reference once set
    if (out == Py_None) {
        y = new_array(api, xa->descr, xa->nd, xa->dimensions);
        if (y == nullptr) {
            return nullptr;  // MemoryError from NumPy
        }
    } else {
        if (Py_TYPE(out) != api.PyArray_Type_) {
            return none();
        }
        const auto* oa = py::detail::array_proxy(out);
        constexpr int kPlainOut = kPlainIn | npy_api::NPY_ARRAY_WRITEABLE_;
        Dtype odt = kF32;
        if ((oa->flags & kPlainOut) != kPlainOut || !plain_dtype(oa->descr, odt) || odt != dt ||
            oa->nd != xa->nd) {
            return none();
        }
        for (int k = 0; k < xa->nd; ++k) {
            if (oa->dimensions[k] != xa->dimensions[k]) {
                return none();
            }
        }
        if (out != x) {
            const std::size_t nbytes = n * element_size(dt);
            const char* xb = xa->data;
            const char* ob = oa->data;
            if (nbytes != 0 && xb < ob + nbytes && ob < xb + nbytes) {
                return none();  // the same memory through another view, or a partial overlap
            }
        }
        Py_INCREF(out);
        y = out;
    }

    PyObject* bits = nullptr;
    if (want_mask == Py_True) {
        const auto nb = static_cast<Py_intptr_t>((n + 7) / 8);
        PyObject* u8 = api.PyArray_DescrFromType_(npy_api::NPY_UBYTE_);
        if (u8 != nullptr) {
            bits = api.PyArray_NewFromDescr_(api.PyArray_Type_, u8, 1, &nb, nullptr, nullptr, 0,
                                             nullptr);  // steals u8
        }
        if (bits == nullptr) {
            Py_DECREF(y);
            return nullptr;
        }
    }

    ForwardArgs a{};
    a.stream = {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32), offset,
                threshold_of(p)};
    a.x = xa->data;
    a.y = py::detail::array_proxy(y)->data;
    a.bits = bits == nullptr ? nullptr
                             : reinterpret_cast<std::uint8_t*>(py::detail::array_proxy(bits)->data);
    a.n = n;
    a.scale = scaled ? inverted_scale(p, dt) : 1.0;
    a.scaled = scaled;
    const KernelTable& table = active_table();
    bool ok = true;
    if (n < kReleaseGilElements) {
        ok = run_noexcept(table, dt, a);
    } else {
        Py_BEGIN_ALLOW_THREADS ok = run_noexcept(table, dt, a);
        Py_END_ALLOW_THREADS
    }
    if (!ok) {  // not expected: the dense kernels neither allocate nor throw
        Py_DECREF(y);
        Py_XDECREF(bits);
        PyErr_SetString(PyExc_RuntimeError, "fastdropout: the native forward pass failed");
        return nullptr;
    }
    if (bits == nullptr) {
        return y;
    }
    PyObject* pair = PyTuple_Pack(2, y, bits);
    Py_DECREF(y);
    Py_DECREF(bits);
    return pair;  // nullptr (MemoryError) if the tuple could not be made
}

PyMethodDef kMethods[] = {
    {"dense", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&dense)), METH_FASTCALL,
     "dense(x, p, mode, seed, offset, out, return_mask) -> y, (y, bits) or None.\n\n"
     "A plain dense training forward pass, checked and allocated in C++ (private; see\n"
     "fastdropout.dropout). None means 'not plain': take the general path."},
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
