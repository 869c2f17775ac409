// The scalar kernel: dropout_generic.hpp stamped out with vec_scalar.hpp.
// Compiled with baseline flags only;
// its only external symbol is fastdropout::scalar::kernel_table() (the window kernels
// of window_generic.hpp are a record inside that table).
#define FASTDROPOUT_ISA scalar
#define FASTDROPOUT_ISA_NAME "scalar"
#include "vec_scalar.hpp"
#include "dropout_generic.hpp"
