"""What the benchmark runs: operations, implementations, dtypes, default sizes."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Operations, in report order.
OPS: tuple[str, ...] = (
    "forward",
    "forward_mask",
    "backward_mask",
    "backward_regen",
    "spatial_cf_forward",
    "spatial_cf_backward",
    "spatial_cl_forward",
    "spatial_cl_backward",
    "alpha_dropout",
    "dropout_add",
    "dropout_add_backward",
)
DENSE_OPS = OPS[:4]
SPATIAL_OPS = OPS[4:8]
FUSED_OPS = OPS[8:]

OP_DOC = {
    "forward": "dropout(x, p, seed=s, out=y)",
    "forward_mask": "dropout(x, p, seed=s, out=y, return_mask=True)",
    "backward_mask": "dropout_backward(g, mask, out=y)",
    "backward_regen": "dropout_backward(g, p=p, seed=s, out=y) (mask regenerated)",
    "spatial_cf_forward": "spatial_dropout(x, p, seed=s, out=y, return_mask=True), "
    "(N, C, H, W)",
    "spatial_cf_backward": "dropout_backward(g, mask, out=y), (N, C, H, W)",
    "spatial_cl_forward": 'spatial_dropout(..., data_format="channels_last"), '
    "(N, H, W, C)",
    "spatial_cl_backward": "dropout_backward(g, mask, out=y), (N, H, W, C)",
    "alpha_dropout": "alpha_dropout(x, p, seed=s, out=y)",
    "dropout_add": "dropout_add(x, residual, p, bias=b, seed=s, out=y), x of shape "
    "(n / 1024, 1024), b of shape (1024,)",
    "dropout_add_backward": "dropout_add_backward(g, mask, bias=True, out=y): grad_x and "
    "grad_bias (float64 column sums, row after row) in one pass, g of shape (n / 1024, 1024)",
}

IMPL_DOC = {
    "api": "fastdropout public API, output preallocated (out=)",
    "api_alloc": "fastdropout public API without out= (allocation included)",
    "api_p0": "the public API with out= at p = 0 (every element kept): the op's own "
              "work without the mask bits (--own-work)",
    "core": "raw fastdropout._core call (no Python validation)",
    "stream_copy": "native multi-threaded copy of the same bytes, same threads and stores",
    "gen_bits": "the mask bits alone (Philox + threshold), same elements, threads, SIMD",
    "stream2": "native read-two-write-one stream (a XOR b) of the same bytes, same threads",
    "unfused": "the same result from separate fastdropout/NumPy calls",
    "copyto": "np.copyto of the same array",
    "numpy": "NumPy idiom",
    "torch": "PyTorch",
}

#: Dtypes by name; bfloat16 (from the optional ml_dtypes) is added by settings.
DTYPES: dict[str, Any] = {"float16": np.float16, "float32": np.float32,
                          "float64": np.float64}
UINTS = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64,
         "bfloat16": np.uint16}
BF16_HINT = "pip install ml_dtypes to include bfloat16"
QUICK_SIZES = (1 << 10, 1 << 16, 1 << 20, 1 << 24)
FULL_SIZES = tuple(1 << k for k in range(10, 27, 2))
TORCH_HINT = "pip install torch==2.13.0 to include PyTorch"
SEED = 0x9E3779B97F4A7C15  # above 2**32, so both key words are used
CHANNELS = 32  # spatial shapes: C = 32 channels
WINDOW = 8192  # elements per sampled check window (a multiple of 64)

# The targets the project holds itself to (README "Performance").
BIG = 1 << 24
SMALL = 1 << 10
#: Every kernel against its bound, at 1 and all threads, at BIG and beyond.
BOUND_LIMIT = 1.1
#: Every public call at SMALL elements against its NumPy idiom (speedup).
SMALL_SPEEDUP = 3.0

#: Ops whose bound is max(native copy, mask generation alone); the others' is the copy.
GENERATING_OPS = ("forward", "forward_mask", "backward_regen", "alpha_dropout",
                  "dropout_add")
#: Ops that read two arrays and write one: their bound is the read-two-write-one stream.
TWO_INPUT_OPS = ("dropout_add",)
#: Columns of dropout_add's 2-D x (and the length of its bias).
ADD_COLS = 1024

FloatArray = Any  # numpy arrays of float16/32/64; kept loose for mypy

