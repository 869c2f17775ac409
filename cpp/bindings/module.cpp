// The compiled module fastdropout._core: private, positional functions that the
// Python layer (python/fastdropout/_api.py) calls after validating everything.
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "../src/dispatch.hpp"

namespace py = pybind11;

namespace fastdropout {
void register_dropout(py::module_& m);
void register_runtime(py::module_& m);
void register_fast(py::module_& m);
void register_fast_fused(py::module_& m);
void register_window(py::module_& m);
void register_fused(py::module_& m);
}  // namespace fastdropout

#define FASTDROPOUT_STR2(x) #x
#define FASTDROPOUT_STR(x) FASTDROPOUT_STR2(x)

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "fastdropout native core (private; use the fastdropout package)";
    m.attr("__version__") = FASTDROPOUT_STR(FASTDROPOUT_VERSION);
    try {
        fastdropout::init_dispatch();  // FASTDROPOUT_SIMD is resolved at import
    } catch (const std::exception& e) {
        throw py::import_error(e.what());
    }
    fastdropout::register_runtime(m);
    fastdropout::register_dropout(m);
    fastdropout::register_fast(m);
    fastdropout::register_fast_fused(m);
    fastdropout::register_window(m);
    fastdropout::register_fused(m);
}
