// The avx512fp16 kernel: dropout_generic.hpp stamped out with vec_avx512.hpp, compiled
// with -mavx512fp16 on top of the avx512 flags. vec_avx512.hpp then takes its float16
// paths (__AVX512FP16__): the scale of dropout and of backward is one vmulph per 32
// elements, and the fused kernels compute float16 in float16 (fused_generic.hpp's
// EF16 on _Float16) instead of widening to float32 and rounding back after every
// operation. The bits are the same: see vec_avx512.hpp. Its only external symbol is
// fastdropout::avx512fp16::kernel_table().
#define FASTDROPOUT_ISA avx512fp16
#define FASTDROPOUT_ISA_NAME "avx512fp16"
#include "vec_avx512.hpp"
#include "dropout_generic.hpp"
