// The avx512 kernel: dropout_generic.hpp stamped out with vec_avx512.hpp.
// Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl plus the avx2 set (MSVC: /arch:AVX512);
// its only external symbol is fastdropout::avx512::kernel_table() (the window kernels
// of window_generic.hpp are a record inside that table).
#define FASTDROPOUT_ISA avx512
#define FASTDROPOUT_ISA_NAME "avx512"
#include "vec_avx512.hpp"
#include "dropout_generic.hpp"
