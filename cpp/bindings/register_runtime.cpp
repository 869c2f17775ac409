// Runtime controls: SIMD level, threads, and the raw Philox generator for tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <tuple>

#include "../src/dispatch.hpp"
#include "../src/parallel.hpp"
#include "array_view.hpp"
#include "fastdropout/philox.hpp"

namespace py = pybind11;

namespace fastdropout {
namespace {

std::uint32_t to_u32(const py::object& v, const char* name) {
    const std::uint64_t r = to_u64(v, name);
    if (r > 0xFFFFFFFFu) {
        throw py::value_error(std::string(name) + " must be a 32-bit word");
    }
    return static_cast<std::uint32_t>(r);
}

}  // namespace

void register_runtime(py::module_& m) {
    m.def("simd_level", [] { return std::string(active_table().name); },
          "Name of the instruction set in use.");
    m.def("_available_simd", &available_isas, "Compiled and supported levels, best first.");
    m.def("_compiled_simd", &compiled_isas, "Compiled levels, best first.");
    m.def("_set_simd", [](const std::string& name) {
        try {
            set_isa(name);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
    }, "Switch the active level (tests).");
    default_num_threads();  // note OpenMP's setting now, before anyone changes it
    m.def("set_num_threads", [](int n) {
        if (n < 0 || n > max_num_threads()) {
            throw py::value_error("n must be in [1, " + std::to_string(max_num_threads()) +
                                  "] (or 0 for the default), got " + std::to_string(n));
        }
        set_num_threads(n);
    }, "At most n threads (also OpenMP's setting of the calling thread); 0: the default.");
    m.def("get_num_threads", &get_num_threads, "Threads a large call from this thread uses.");
    m.def("_max_num_threads", &max_num_threads, "The largest team set_num_threads takes.");
    m.def("_default_num_threads", &default_num_threads, "OpenMP's setting at import.");
    m.def("_last_team_size", &last_team_size, "Threads of the last large kernel call.");
    m.def("has_openmp", &has_openmp, "Whether this build uses OpenMP.");
    m.def("_stream_copy", [](const py::array& src, const py::array& dst) {
        require_c_contiguous(src, "src");
        require_c_contiguous(dst, "dst");
        require_writeable(dst, "dst");
        if (src.nbytes() != dst.nbytes()) {
            throw py::value_error("src and dst must have the same number of bytes");
        }
        require_same_or_disjoint(src, dst);
        const void* s = src.data();
        void* d = const_cast<void*>(dst.data());
        const auto n = static_cast<std::size_t>(src.nbytes());
        py::gil_scoped_release release;
        run_copy(s, d, n);
    }, "Multi-threaded copy with the kernels' chunking and stores (benchmark baseline).");
    m.def("_stream2", [](const py::array& a, const py::array& b, const py::array& dst) {
        require_c_contiguous(a, "a");
        require_c_contiguous(b, "b");
        require_c_contiguous(dst, "dst");
        require_writeable(dst, "dst");
        if (a.nbytes() != dst.nbytes() || b.nbytes() != dst.nbytes()) {
            throw py::value_error("a, b and dst must have the same number of bytes");
        }
        require_same_or_disjoint(a, dst);
        require_same_or_disjoint(b, dst);
        const void* pa = a.data();
        const void* pb = b.data();
        void* d = const_cast<void*>(dst.data());
        const auto n = static_cast<std::size_t>(dst.nbytes());
        py::gil_scoped_release release;
        run_stream2(pa, pb, d, n);
    }, "dst = a XOR b bytewise, threaded (benchmark bound of read-two-write-one kernels).");
    m.def("_stream_threshold", &stream_threshold,
          "Outputs of at least this many bytes are written with streaming stores.");
    m.def("_set_stream_threshold", [](const py::object& nbytes) {
        set_stream_threshold(nbytes.is_none() ? kDefaultStreamThreshold
                                              : static_cast<std::size_t>(
                                                    to_u64(nbytes, "nbytes")));
    }, "Set the streaming-store threshold in bytes (tests); None restores the default.");
    m.def("_prefetch_paired_streams", &prefetch_paired_streams,
          "Whether dropout_add's streaming loop prefetches x and the residual in software "
          "(not on AMD CPUs by default).");
    m.def("_set_prefetch_paired_streams", [](const py::object& on) {
        set_prefetch_paired_streams(on.is_none() ? -1 : (on.cast<bool>() ? 1 : 0));
    }, "Force that prefetching on (True) or off (False) (tests); None restores the default.");
    m.def("_last_level_cache", &last_level_cache_bytes,
          "The last-level cache's size in bytes as the OS reports it (0: unknown).");
    m.def("_gen_bits", [](const py::array& bits, py::ssize_t n, const py::object& seed,
                          const py::object& offset, const py::object& threshold) {
        require_c_contiguous(bits, "bits");
        require_writeable(bits, "bits");
        if (n < 0 || bits.itemsize() != 1 ||
            static_cast<std::uint64_t>(bits.nbytes()) < (static_cast<std::uint64_t>(n) + 7) / 8) {
            throw py::value_error("bits must be a byte array of at least ceil(n / 8) bytes");
        }
        const std::uint64_t s = to_u64(seed, "seed");
        const std::uint64_t t = to_u64(threshold, "threshold");
        if (t > (std::uint64_t{1} << 32)) {
            throw py::value_error("threshold must be in [0, 2**32]");
        }
        const StreamArgs sa{static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32),
                            to_u64(offset, "offset"), t};
        auto* p = static_cast<std::uint8_t*>(const_cast<void*>(bits.data()));
        const KernelTable& table = active_table();
        py::gil_scoped_release release;
        run_gen_bits(table, sa, p, static_cast<std::size_t>(n));
    }, "Mask bits only (Philox + threshold) for n elements: the forward pass's bound.");
    m.def("philox", [](const py::object& c0, const py::object& c1, const py::object& c2,
                       const py::object& c3, const py::object& k0, const py::object& k1) {
        const PhiloxBlock r = philox4x32_10(
            {{to_u32(c0, "c0"), to_u32(c1, "c1"), to_u32(c2, "c2"), to_u32(c3, "c3")}},
            to_u32(k0, "k0"), to_u32(k1, "k1"));
        return std::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
    }, "Scalar Philox4x32-10 of one block.");
    m.def("_philox_blocks", [](const py::object& k0, const py::object& k1, const py::object& first,
                               const py::object& c2, const py::object& c3, py::ssize_t n) {
        if (n < 0) {
            throw py::value_error("n_blocks must be >= 0");
        }
        py::array_t<std::uint32_t> out(4 * n);
        const std::uint32_t a = to_u32(k0, "k0"), b = to_u32(k1, "k1");
        const std::uint64_t f = to_u64(first, "first_block");
        const std::uint32_t w2 = to_u32(c2, "c2"), w3 = to_u32(c3, "c3");
        std::uint32_t* p = out.mutable_data();
        const KernelTable& t = active_table();
        {
            py::gil_scoped_release release;
            t.philox_blocks(a, b, f, w2, w3, static_cast<std::size_t>(n), p);
        }
        return out;
    }, "Philox4x32-10 words through the active SIMD kernel.");
}

}  // namespace fastdropout
