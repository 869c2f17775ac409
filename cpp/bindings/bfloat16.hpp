// Recognising ml_dtypes.bfloat16 arrays (SPEC section 8) without importing ml_dtypes:
// its NumPy dtype is looked up in sys.modules on first need and compared by dtype
// equality (ml_dtypes reuses type characters and gets its type number at run time, so
// neither identifies it). Call with the GIL held.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace fastdropout {

// numpy.dtype(ml_dtypes.bfloat16) as a borrowed reference (kept alive for the life of
// the process once found), or nullptr while ml_dtypes has not been imported.
inline PyObject* bfloat16_descr() {
    static PyObject* cached = nullptr;
    if (cached != nullptr) {
        return cached;
    }
    PyObject* modules = PyImport_GetModuleDict();  // borrowed
    PyObject* mod = PyDict_GetItemString(modules, "ml_dtypes");  // borrowed, no error set
    if (mod == nullptr) {
        return nullptr;
    }
    PyObject* type = PyObject_GetAttrString(mod, "bfloat16");
    if (type == nullptr) {
        PyErr_Clear();
        return nullptr;
    }
    PyObject* descr = nullptr;
    const int ok = pybind11::detail::npy_api::get().PyArray_DescrConverter_(type, &descr);
    Py_DECREF(type);
    if (ok == 0 || descr == nullptr) {
        PyErr_Clear();
        return nullptr;
    }
    cached = descr;  // the one strong reference, never released
    return cached;
}

// Whether the NumPy descriptor `descr` equals numpy.dtype(ml_dtypes.bfloat16).
inline bool is_bfloat16(PyObject* descr) {
    PyObject* bf = bfloat16_descr();
    if (bf == nullptr) {
        return false;
    }
    if (descr == bf) {
        return true;
    }
    const int eq = PyObject_RichCompareBool(descr, bf, Py_EQ);
    if (eq < 0) {
        PyErr_Clear();
        return false;
    }
    return eq == 1;
}

}  // namespace fastdropout
