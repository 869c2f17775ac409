// The ordered list of implementations (simdjson style): the first that was compiled
// and that the CPU supports wins, unless FASTDROPOUT_SIMD names one. The active
// table is an atomic pointer, so a switch is never seen half-done by a running call.
#include "dispatch.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "cpu_features.hpp"
#include "fastdropout/isa.hpp"

namespace fastdropout {
namespace {

struct Entry {
    Isa isa;
    const KernelTable& (*table)();
};

// Best first. FASTDROPOUT_HAVE_<ISA> is defined by CMake only for kernels it built.
const Entry kEntries[] = {
#if defined(FASTDROPOUT_HAVE_AVX512FP16)
    {Isa::avx512fp16, &avx512fp16::kernel_table},
#endif
#if defined(FASTDROPOUT_HAVE_AVX512)
    {Isa::avx512, &avx512::kernel_table},
#endif
#if defined(FASTDROPOUT_HAVE_AVX2)
    {Isa::avx2, &avx2::kernel_table},
#endif
#if defined(FASTDROPOUT_HAVE_NEON)
    {Isa::neon, &neon::kernel_table},
#endif
    {Isa::scalar, &scalar::kernel_table},
};

constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512fp16, Isa::neon};

std::atomic<const KernelTable*> g_active{nullptr};

std::string all_names() {
    std::string s;
    for (Isa isa : kAllIsas) {
        s += s.empty() ? "" : ", ";
        s += isa_name(isa);
    }
    return s;
}

// The table for `name`, or an error message in `why`.
const KernelTable* lookup(const std::string& name, std::string& why) {
    bool known = false;
    for (Isa isa : kAllIsas) {
        known = known || name == isa_name(isa);
    }
    if (!known) {
        why = "unknown SIMD level '" + name + "'; valid names: " + all_names();
        return nullptr;
    }
    for (const Entry& e : kEntries) {
        if (name == isa_name(e.isa)) {
            if (!cpu_supports(e.isa)) {
                why = "SIMD level '" + name + "' is not supported by this CPU";
                return nullptr;
            }
            return &e.table();
        }
    }
    why = "SIMD level '" + name + "' was not compiled into this build (compiled: ";
    bool first = true;
    for (const Entry& e : kEntries) {
        why += first ? "" : ", ";
        why += isa_name(e.isa);
        first = false;
    }
    why += ")";
    return nullptr;
}

const KernelTable* best_table() {
    for (const Entry& e : kEntries) {
        if (cpu_supports(e.isa)) {
            return &e.table();
        }
    }
    return &scalar::kernel_table();
}

}  // namespace

void init_dispatch() {
    const char* env = std::getenv("FASTDROPOUT_SIMD");
    if (env != nullptr && env[0] != '\0') {
        std::string why;
        const KernelTable* t = lookup(env, why);
        if (t == nullptr) {
            throw std::runtime_error("FASTDROPOUT_SIMD: " + why);
        }
        g_active.store(t);
        return;
    }
    g_active.store(best_table());
}

const KernelTable& active_table() {
    const KernelTable* t = g_active.load(std::memory_order_acquire);
    return t != nullptr ? *t : *best_table();
}

std::vector<std::string> compiled_isas() {
    std::vector<std::string> out;
    for (const Entry& e : kEntries) {
        out.emplace_back(isa_name(e.isa));
    }
    return out;
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const Entry& e : kEntries) {
        if (cpu_supports(e.isa)) {
            out.emplace_back(isa_name(e.isa));
        }
    }
    return out;
}

void set_isa(const std::string& name) {
    std::string why;
    const KernelTable* t = lookup(name, why);
    if (t == nullptr) {
        throw std::invalid_argument(why);
    }
    g_active.store(t, std::memory_order_release);
}

}  // namespace fastdropout
