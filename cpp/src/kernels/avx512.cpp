// The avx512 kernel: dropout_generic.hpp stamped out with vec_avx512.hpp.
// Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl plus the avx2 set (MSVC: /arch:AVX512);
// its only external symbols are fastdropout::avx512::kernel_table() and
// window_kernels() (window_generic.hpp).
#define FASTDROPOUT_ISA avx512
#define FASTDROPOUT_ISA_NAME "avx512"
#include "vec_avx512.hpp"
#include "dropout_generic.hpp"
#include "window_generic.hpp"
