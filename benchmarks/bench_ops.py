"""The public operations over dtypes and sizes, for asv's regression history.

Every ``time_*`` method is one public call with its output preallocated
(``out=``) where the API allows it, on arrays made in ``setup``; p = 0.5, a fixed
seed. ``NativeCopy`` is the bound of the memory-bound operations (a multi-threaded
copy of the same bytes): a regression that shows in it too is the machine's, not
the library's. Sizes: 2**10 (call overhead), 2**16 (in the core's caches), 2**20
(4-8 MiB: past the private caches; kept small so that a quick run stays short --
``python -m fastdropout bench`` and ``bench/bench_kernels`` cover the large sizes).

The ``time_*`` methods take asv's parameters as ``*_``: ``setup`` has
already used them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import fastdropout as fd
import numpy as np
from fastdropout import _core

P = 0.5
SEED = 1234
DTYPES = ["float16", "float32", "float64"]
SIZES = [2**10, 2**16, 2**20]


class Dense:
    """dropout and dropout_backward on a 1-d array."""

    params: ClassVar[tuple[list[Any], ...]] = (DTYPES, SIZES)
    param_names: ClassVar[list[str]] = ["dtype", "n"]

    def setup(self, dtype: str, n: int) -> None:
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(n).astype(dtype)
        self.y = np.empty_like(self.x)
        self.mask = fd.dropout(self.x, P, seed=SEED, return_mask=True)[1]

    def time_forward(self, *_: object) -> None:
        fd.dropout(self.x, P, seed=SEED, out=self.y)

    def time_forward_alloc(self, *_: object) -> None:
        fd.dropout(self.x, P, seed=SEED)

    def time_forward_mask(self, *_: object) -> None:
        fd.dropout(self.x, P, seed=SEED, out=self.y, return_mask=True)

    def time_backward_mask(self, *_: object) -> None:
        fd.dropout_backward(self.x, self.mask, out=self.y)

    def time_backward_regen(self, *_: object) -> None:
        fd.dropout_backward(self.x, p=P, seed=SEED, out=self.y)


class Spatial:
    """spatial_dropout (forward with mask) and its backward, both layouts, 32
    channels."""

    params: ClassVar[tuple[list[Any], ...]] = (["channels_first", "channels_last"], DTYPES, SIZES)
    param_names: ClassVar[list[str]] = ["layout", "dtype", "n"]

    def setup(self, layout: str, dtype: str, n: int) -> None:
        hw = n // (4 * 32)
        h = 2 ** ((hw.bit_length() - 1) // 2)
        self.layout = layout
        shape = (4, 32, h, hw // h) if layout == "channels_first" else (4, h, hw // h, 32)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(shape).astype(dtype)
        self.y = np.empty_like(self.x)
        self.mask = fd.spatial_dropout(self.x, P, data_format=layout, seed=SEED,
                                       return_mask=True)[1]

    def time_forward(self, *_: object) -> None:
        fd.spatial_dropout(self.x, P, data_format=self.layout, seed=SEED, out=self.y,
                           return_mask=True)

    def time_backward(self, *_: object) -> None:
        fd.dropout_backward(self.x, self.mask, out=self.y)


class Fused:
    """alpha_dropout, and dropout_add with a bias on (n / 1024, 1024) arrays."""

    params: ClassVar[tuple[list[Any], ...]] = (DTYPES, SIZES)
    param_names: ClassVar[list[str]] = ["dtype", "n"]

    def setup(self, dtype: str, n: int) -> None:
        rng = np.random.default_rng(0)
        shape = (n // 1024, 1024)
        self.x = rng.standard_normal(shape).astype(dtype)
        self.residual = rng.standard_normal(shape).astype(dtype)
        self.bias = rng.standard_normal(1024).astype(dtype)
        self.y = np.empty_like(self.x)

    def time_alpha_dropout(self, *_: object) -> None:
        fd.alpha_dropout(self.x, P, seed=SEED, out=self.y)

    def time_dropout_add(self, *_: object) -> None:
        fd.dropout_add(self.x, self.residual, P, bias=self.bias, seed=SEED, out=self.y)


class NativeCopy:
    """The bound of the memory-bound operations: the same bytes copied with the
    same threads (the library's private baseline)."""

    params: ClassVar[tuple[list[Any], ...]] = (DTYPES, SIZES)
    param_names: ClassVar[list[str]] = ["dtype", "n"]

    def setup(self, dtype: str, n: int) -> None:
        self.x = np.ones(n, dtype)
        self.y = np.empty_like(self.x)

    def time_copy(self, *_: object) -> None:
        _core._stream_copy(self.x, self.y)


class Layers:
    """The NumPy layer objects' forward and backward (float32, 2**16)."""

    def setup(self) -> None:
        self.x = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
        self.layer: Any = fd.layers.Dropout(P, seed=SEED)
        self.y = self.layer.forward(self.x)

    def time_forward_backward(self) -> None:
        y = self.layer.forward(self.x)
        self.layer.backward(y)
