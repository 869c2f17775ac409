# Type stub for the compiled extension fastdropout._core (cpp/bindings/).
# Everything here is private: the Python layer (_api.py and its siblings)
# validates arguments and calls these positionally. Arrays must already be
# C-contiguous, of one of the float dtypes, native byte order; the core
# re-checks cheaply and raises
# ValueError/TypeError rather than crash.

from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

def simd_level() -> str:
    """Name of the instruction set in use: "avx512fp16", "avx512", "avx2", "neon" or "scalar"."""

def _available_simd() -> list[str]:
    """Levels compiled into this build AND supported by this CPU, best first."""

def _compiled_simd() -> list[str]:
    """Levels compiled into this build, best first."""

def _set_simd(name: str) -> None:
    """Switch the active level (tests). ValueError for unknown/unsupported names."""

def set_num_threads(n: int) -> None:
    """At most n threads, also omp_set_num_threads(n); 0: OpenMP's setting at import.
    ValueError outside [0, _max_num_threads()]."""

def get_num_threads() -> int:
    """Threads a large call from the calling thread uses: OpenMP's setting for it
    (omp_get_max_threads), capped by set_num_threads and _max_num_threads()."""

def _max_num_threads() -> int: ...
def _default_num_threads() -> int: ...
def _last_team_size() -> int:
    """Team size (omp_get_num_threads) of the last kernel call split over threads;
    1 after a serial call."""

def has_openmp() -> bool: ...
def _stream_copy(src: npt.NDArray[np.generic], dst: npt.NDArray[np.generic]) -> None:
    """memcpy of src into dst (C-contiguous, same byte count) split over the kernels'
    threads and chunks: the benchmarks' physical-limit baseline."""

def _stream2(
    a: npt.NDArray[np.generic], b: npt.NDArray[np.generic], dst: npt.NDArray[np.generic]
) -> None:
    """dst = a XOR b bytewise, threaded like the kernels: the benchmarks' bound of a
    kernel that reads two arrays and writes one."""

def _stream_threshold() -> int:
    """Outputs of at least this many bytes are written with streaming stores."""

def _set_stream_threshold(nbytes: int | None) -> None:
    """Set the streaming-store threshold in bytes (tests); None restores the default."""

def _prefetch_paired_streams() -> bool:
    """Whether dropout_add's streaming loop prefetches x and the residual in software
    (not on AMD CPUs by default)."""

def _set_prefetch_paired_streams(on: bool | None) -> None:
    """Force that prefetching on or off (tests); None restores the default."""

def _last_level_cache() -> int:
    """The last-level cache's size in bytes as the OS reports it (0: unknown)."""

def _gen_bits(
    bits: npt.NDArray[np.uint8], n: int, seed: int, offset: int, threshold: int
) -> None:
    """Mask bits only for n elements (Philox words at offset + i >= threshold),
    threaded like the kernels: the benchmarks' generator bound."""

def philox(
    c0: int, c1: int, c2: int, c3: int, k0: int, k1: int
) -> tuple[int, int, int, int]:
    """Scalar Philox4x32-10 of one block (cpp/include/fastdropout/philox.hpp)."""

def _philox_blocks(
    k0: int, k1: int, first_block: int, c2: int, c3: int, n_blocks: int
) -> npt.NDArray[np.uint32]:
    """Philox4x32-10 through the active SIMD kernel: 4*n_blocks words, block i has
    counter ((first_block+i) mod 2**64 as lo/hi words, c2, c3)."""

def forward(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    seed: int,
    offset: int,
    threshold: int,
    scale: float,
    scaled: bool,
    bits: npt.NDArray[np.uint8] | None,
    broadcast_axes: tuple[int, ...],
) -> None:
    """Training forward pass (also the regenerated backward pass).

    y[i] = keep ? (scaled ? x[i]*scale : x[i]) : +0.0 with keep decided by Philox at
    stream position offset + (C-order index in the mask shape). x and y have the same
    shape/dtype and are C-contiguous; y may be x (in place). threshold is
    round_half_even(p * 2**32) in [0, 2**32]. scale is the dtype-rounded scale as a
    float. broadcast_axes: sorted, non-negative, unique axes of x along which one
    decision is shared (empty for dense). bits: uint8 array of ceil(n_mask/8) bytes
    that receives the mask bits (little bit order), or None (dense only: with
    broadcast axes a bits buffer is required, since the mask is generated first).
    """

def dense(
    x: object,
    p: object,
    mode: object,
    seed: object,
    offset: object,
    out: object,
    return_mask: object,
    /,
) -> Any:
    """A plain dense training forward pass, checked and allocated in C++.

    Plain: x an exact ndarray of float16/32/64 (native byte order, C-contiguous,
    aligned); p an exact float in [0, 1]; mode "inverted" or "classic"; seed and
    offset exact ints in [0, 2**64); out None or an exact, C-contiguous, aligned,
    writeable ndarray of x's dtype and shape that is x or disjoint from it;
    return_mask True, False or the _mask_maker() sentinel. Returns y (a new array,
    or out), (y, bits) with True, (y, Mask) with the sentinel, or None when the
    call is not plain (nothing is then written and
    no exception is raised). Raises only MemoryError.
    """

def dense_window(
    x: object,
    p: object,
    mode: object,
    seed: object,
    offset: object,
    out: object,
    return_mask: object,
    window: object,
    /,
) -> Any:
    """As dense() for a block of a larger array (docs/spec.md section 11). Plain
    window: an exact tuple (global_shape, start) of two exact tuples of exact ints,
    one per axis of x, global sizes in [0, 2**63), the block inside the global
    array at start. None when not plain (the general path validates and raises)."""

def spatial(
    x: object,
    p: object,
    mode: object,
    seed: object,
    offset: object,
    out: object,
    return_mask: object,
    channels_last: object,
    /,
) -> Any:
    """As dense() for spatial dropout of a rank-3/4/5 x: one decision per (n, c),
    channels on axis 1 (channels_last False) or the last axis (True). The bits
    returned with return_mask are the N*C mask bits. None when not plain."""

def spatial_window(
    x: object,
    p: object,
    mode: object,
    seed: object,
    offset: object,
    out: object,
    return_mask: object,
    channels_last: object,
    window: object,
    /,
) -> Any:
    """As spatial() for a block with a plain window (see dense_window); the bits
    returned with return_mask are the block's window of the (N, C) mask."""

def backward(
    g: object,
    bits: object,
    p: object,
    mode: object,
    out: object,
    mask_shape: object,
    axes: object,
    /,
) -> Any:
    """The backward pass from a stored mask: g plain as dense()'s x; bits an exact
    C-contiguous 1-D uint8 ndarray of ceil(n_mask/8) bytes; p an exact float in
    [0, 1]; mode the mask's, "inverted", "classic" or "alpha" (then p < 1, scale A);
    out as in dense(); mask_shape an exact tuple equal to g.shape but 1 on the
    broadcast axes, an exact tuple of ints. Returns the gradient (a new array, or
    out) or None when the call is not plain."""

def alpha(
    x: object, p: object, seed: object, offset: object, out: object,
    return_mask: object, window: object, /,
) -> Any:
    """A plain dense alpha dropout training pass (p in [0, 1) with coefficients
    finite in x's dtype; the rest as dense()). window None, or a plain window as
    dense_window() takes it for a block of a larger array (return_mask then True or
    False: y or (y, bits)). None when not plain."""

def add(
    x: object, residual: object, bias: object, p: object, mode: object, seed: object,
    offset: object, out: object, return_mask: object, window: object, /,
) -> Any:
    """A plain dense dropout_add training pass: residual plain, of x's dtype and
    shape; bias None or plain, of x's dtype, its shape x's trailing axes; out (or
    the new y) the residual itself or disjoint from it, and disjoint from the bias;
    the rest as dense(). window None, or a plain window as dense_window() takes it
    for a block of a larger array (x, residual and bias the block's; return_mask
    then True or False: y or (y, bits)). None when not plain."""

def add_backward(
    g: object, bits: object, p: object, mode: object, out: object, mask_shape: object,
    axes: object, bias: object, /,
) -> Any:
    """(grad_x, grad_bias) of dropout_add_backward from a stored dense mask (axes
    ()); bias True (the last axis) or an exact tuple of exact ints equal to g's
    trailing axes; the rest as backward(). None when not plain."""

def alpha_regen(g: object, p: object, seed: object, offset: object, out: object, /) -> Any:
    """The alpha backward pass with the dense mask regenerated: g * A where kept,
    +0.0 where dropped. None when not plain."""

def _mask_maker(mask_class: type, /) -> object:
    """Registers fastdropout.Mask; returns the sentinel that, passed as return_mask
    to dense, spatial, alpha or add, makes them return (y, Mask)."""

def backward_mask(
    g: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    bits: npt.NDArray[np.uint8],
    scale: float,
    scaled: bool,
    broadcast_axes: tuple[int, ...],
) -> None:
    """y = bit ? (scaled ? g*scale : g) : +0.0, bits indexed in the mask shape
    (g.shape with broadcast_axes set to 1). y may be g."""

# ---- fused kernels (cpp/bindings/register_fused.cpp): docs/spec.md sections 8-10 ----

def add_forward(
    x: npt.NDArray[Any],
    residual: npt.NDArray[Any],
    bias: npt.NDArray[Any] | None,
    y: npt.NDArray[Any],
    seed: int,
    offset: int,
    threshold: int,
    scale: float,
    scaled: bool,
    bits: npt.NDArray[np.uint8] | None,
    broadcast_axes: tuple[int, ...],
) -> None:
    """dropout_add training pass: y = residual + (keep ? ((x + bias) * scale) : +0.0)
    (no bias term when bias is None, no scale when not scaled), each operation rounded
    in the dtype. x, residual, bias (size dividing x.size: element i uses
    bias[i % bias.size]) and y share one dtype; y may be x or residual. bits as in
    forward(); required with broadcast axes."""

def add_eval(
    x: npt.NDArray[Any],
    residual: npt.NDArray[Any],
    bias: npt.NDArray[Any] | None,
    y: npt.NDArray[Any],
    scale: float,
    scaled: bool,
) -> None:
    """dropout_add with every element kept (evaluation)."""

def alpha_forward(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    seed: int,
    offset: int,
    threshold: int,
    coef_a: float,
    coef_b: float,
    coef_d: float,
    bits: npt.NDArray[np.uint8] | None,
    broadcast_axes: tuple[int, ...],
) -> None:
    """Alpha dropout training pass: y = keep ? (x * A) + B : D (two roundings)."""

def backward_sum(
    g: npt.NDArray[Any],
    y: npt.NDArray[Any],
    bits: npt.NDArray[np.uint8] | None,
    scale: float,
    scaled: bool,
    acc: npt.NDArray[np.float64],
    ncols: int,
) -> None:
    """y = bit ? (scaled ? g*scale : g) : +0.0 with dense mask bits (None: all kept),
    and acc[c] += y[row, c] as float64, row after row in C order, for rows of ncols
    elements (the same sums for any thread count)."""

def gen_bits(
    seed: int, offset: int, threshold: int, bits: npt.NDArray[np.uint8], n: int
) -> None:
    """The first n mask bits of the stream (seed, offset) into bits."""

def scale_all(x: npt.NDArray[Any], y: npt.NDArray[Any], scale: float) -> None:
    """y = x * scale for every element, rounded by the kernels (bfloat16 classic
    evaluation)."""

def _stream_add(
    a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], out: npt.NDArray[np.float32]
) -> None:
    """out = a + b (float32, C-contiguous) split over the kernels' threads and chunks:
    the read-two-write-one baseline of the benchmarks."""

# ---- windows (cpp/bindings/register_window.cpp): docs/spec.md section 11 ----

def window_forward(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    seed: int,
    offset: int,
    strides: tuple[int, ...],
    threshold: int,
    scale: float,
    scaled: bool,
    bits: npt.NDArray[np.uint8] | None,
    broadcast_axes: tuple[int, ...],
) -> None:
    """forward() for a block of a larger array (cpp/src/window.hpp): the block's
    mask element c (C order over x.shape with broadcast_axes set to 1) is at stream
    position offset + sum(c[k] * strides[k]) (mod 2**64), where strides are the
    global mask's strides of x's axes and offset already includes the window's
    start. bits receives the window's mask bits (required with broadcast axes)."""

def window_add_forward(
    x: npt.NDArray[Any],
    residual: npt.NDArray[Any],
    bias: npt.NDArray[Any] | None,
    y: npt.NDArray[Any],
    seed: int,
    offset: int,
    strides: tuple[int, ...],
    threshold: int,
    scale: float,
    scaled: bool,
    bits: npt.NDArray[np.uint8] | None,
    broadcast_axes: tuple[int, ...],
) -> None:
    """add_forward() for a block, its mask elements numbered as in
    window_forward(): without broadcast axes the mask (to bits when given) and the
    output in one pass; with them, bits (then required) receives the window's
    mask first and a second pass applies it."""

def window_alpha_forward(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    seed: int,
    offset: int,
    strides: tuple[int, ...],
    threshold: int,
    coef_a: float,
    coef_b: float,
    coef_d: float,
    bits: npt.NDArray[np.uint8] | None,
    broadcast_axes: tuple[int, ...],
) -> None:
    """alpha_forward() for a block, as window_add_forward()."""
