# Cross toolchain for checking the neon kernel from an x86-64 host (Debian's
# g++-aarch64-linux-gnu); run the result with qemu-aarch64 (see README).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# Run with: qemu-aarch64 -L /usr/aarch64-linux-gnu build/aarch64/test_kernels
