// Choosing the kernel table: once at import (FASTDROPOUT_SIMD or the best the CPU
// supports), switchable by the tests. Baseline flags.
#pragma once

#include <string>
#include <vector>

#include "fastdropout/kernel_table.hpp"

namespace fastdropout {

// Reads FASTDROPOUT_SIMD and selects the table; throws std::runtime_error with a
// message naming the problem for an unknown or unsupported name.
void init_dispatch();

const KernelTable& active_table();
std::vector<std::string> compiled_isas();   // best first
std::vector<std::string> available_isas();  // compiled and supported, best first
// Throws std::invalid_argument for unknown/unsupported names.
void set_isa(const std::string& name);

}  // namespace fastdropout
