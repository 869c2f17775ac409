// The neon kernel: dropout_generic.hpp stamped out with vec_neon.hpp.
// Compiled on aarch64 only, with baseline flags (Advanced SIMD is mandatory there);
// its only external symbol is fastdropout::neon::kernel_table() (the window kernels
// of window_generic.hpp are a record inside that table).
#define FASTDROPOUT_ISA neon
#define FASTDROPOUT_ISA_NAME "neon"
#include "vec_neon.hpp"
#include "dropout_generic.hpp"
