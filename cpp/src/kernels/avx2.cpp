// The avx2 kernel: dropout_generic.hpp stamped out with vec_avx2.hpp.
// Compiled with -mavx2 -mfma -mf16c -mbmi -mbmi2 (MSVC: /arch:AVX2);
// its only external symbol is fastdropout::avx2::kernel_table() (the window kernels
// of window_generic.hpp are a record inside that table).
#define FASTDROPOUT_ISA avx2
#define FASTDROPOUT_ISA_NAME "avx2"
#include "vec_avx2.hpp"
#include "dropout_generic.hpp"
