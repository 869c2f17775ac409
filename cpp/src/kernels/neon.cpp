// The neon kernel: dropout_generic.hpp stamped out with vec_neon.hpp.
// Compiled on aarch64 only, with baseline flags (Advanced SIMD is mandatory there);
// its only external symbols are fastdropout::neon::kernel_table() and
// window_kernels() (window_generic.hpp).
#define FASTDROPOUT_ISA neon
#define FASTDROPOUT_ISA_NAME "neon"
#include "vec_neon.hpp"
#include "dropout_generic.hpp"
#include "window_generic.hpp"
