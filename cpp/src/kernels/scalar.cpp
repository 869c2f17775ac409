// The scalar kernel: dropout_generic.hpp stamped out with vec_scalar.hpp.
// Compiled with baseline flags only;
// its only external symbols are fastdropout::scalar::kernel_table() and
// window_kernels() (window_generic.hpp).
#define FASTDROPOUT_ISA scalar
#define FASTDROPOUT_ISA_NAME "scalar"
#include "vec_scalar.hpp"
#include "dropout_generic.hpp"
#include "window_generic.hpp"
