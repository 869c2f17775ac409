// The avx2 kernel: dropout_generic.hpp stamped out with vec_avx2.hpp.
// Compiled with -mavx2 -mfma -mf16c -mbmi -mbmi2 (MSVC: /arch:AVX2);
// its only external symbols are fastdropout::avx2::kernel_table() and
// window_kernels() (window_generic.hpp).
#define FASTDROPOUT_ISA avx2
#define FASTDROPOUT_ISA_NAME "avx2"
#include "vec_avx2.hpp"
#include "dropout_generic.hpp"
#include "window_generic.hpp"
