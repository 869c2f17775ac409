// What the running CPU (and OS) supports, probed once. Baseline flags.
#pragma once

#include "fastdropout/isa.hpp"

namespace fastdropout {

// True if this CPU and OS can run code compiled for `isa` (see isa.hpp for the
// precise feature sets). Always true for scalar; neon on aarch64 only.
bool cpu_supports(Isa isa);

// True on an AMD x86 CPU (CPUID vendor "AuthenticAMD"), where dropout_add's streaming
// loop leaves prefetching to the hardware (parallel.hpp, prefetch_paired_streams).
bool cpu_is_amd();

}  // namespace fastdropout
