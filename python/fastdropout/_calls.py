"""How a public call feeds the C++ core (``_core``) without hidden temporaries:

- a C-contiguous, aligned input that does not overlap the output is read in
  place by the kernel;
- ``out=x`` (same memory, same layout) runs in place;
- anything else (strided, Fortran-ordered, negative strides) is first copied
  into the output with ``np.copyto``, and the kernel then runs in place on the
  output; a partial overlap of ``x`` and ``out`` goes through a copy of ``x``.

Shared by the public functions (``_api``, ``_spatial_api``, ``_alpha``,
``_fused``): the output and input choice, evaluation mode, the general forward
pass, windows (docs/spec.md section 11) and the hand-over of dask arrays.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _bfloat16, _core, _window
from . import _validate as _v
from ._seed import resolve_seed
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import FloatArray

__all__ = [
    "CHANNELS_LAST",
    "WANT_MASK",
    "check_window",
    "dask_module",
    "evaluate",
    "finish",
    "forward_planned",
    "is_dask",
    "run_window",
    "same_memory",
    "source",
    "target",
    "window_result",
]

_empty = np.empty
_may_share_memory = np.may_share_memory
_copyto = np.copyto
_uint8 = np.uint8
_threshold = _v.threshold
_inverted_scale = _v.inverted_scale
CHANNELS_LAST = {"channels_first": False, "channels_last": True}
# Passed as return_mask, it makes the forward fast paths return (y, Mask) with the
# Mask made in C++ (as Mask._new would make it); True gives (y, bits) (the layers).
WANT_MASK = _core._mask_maker(Mask)


def target(x: FloatArray, out: FloatArray | None) -> FloatArray:
    """Where the kernel writes: ``out``, or a new C-contiguous array. An
    unaligned ``out`` gets a temporary (see ``finish``)."""
    if out is None or not out.flags.aligned:
        return _empty(x.shape, x.dtype)
    return out


def source(x: FloatArray, y: FloatArray, out: FloatArray | None) -> FloatArray:
    """What the kernel reads: ``x`` itself, or ``y`` after copying ``x`` into it.
    ``y`` is ``out`` or a fresh array (which cannot overlap ``x``)."""
    if y is not out or not _may_share_memory(x, y):
        flags = x.flags
        if flags.c_contiguous and flags.aligned:
            return x
        _copyto(y, x)  # any strides
        return y
    if same_memory(x, y):
        return y  # out is x: in place
    # Partial overlap. np.copyto does not always cope with it (1-D arrays of
    # different strides are copied element by element without a temporary),
    # so read x through a copy.
    _copyto(y, x.copy())
    return y


def same_memory(x: FloatArray, y: FloatArray) -> bool:
    """x and y are the same elements at the same addresses (y is C-contiguous)."""
    return (
        x.flags.c_contiguous
        and x.shape == y.shape
        and x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
    )


def finish(y: FloatArray, out: FloatArray | None) -> FloatArray:
    if out is None or y is out:
        return y
    _copyto(out, y)  # unaligned out
    return out


def evaluate(x: FloatArray, p: float, mode: str, out: FloatArray | None) -> FloatArray:
    y = out if out is not None else _empty(x.shape, x.dtype)
    if out is not None and _may_share_memory(x, out) and not same_memory(x, out):
        x = x.copy()  # partial overlap: see source
    if mode == "inverted":
        _copyto(y, x)
    elif _bfloat16.is_bfloat16(x.dtype):  # the kernels' rounding (docs/spec.md section 8)
        factor = float(_v.classic_factor(p, x.dtype))
        if x.flags.c_contiguous and x.flags.aligned and y.flags.aligned:
            _core.scale_all(x, y, factor)  # x is y or disjoint from it (above)
        else:
            tmp = np.array(x, order="C", copy=True)
            _core.scale_all(tmp, tmp, factor)
            _copyto(y, tmp)
    else:
        with np.errstate(all="ignore"):  # Inf * 0 for p == 1 is NaN, quietly
            np.multiply(x, _v.classic_factor(p, x.dtype), out=y)
    return y


def is_dask(x: object) -> bool:
    """A dask collection, recognised without importing dask (docs/spec.md section
    11: such arrays go to fastdropout.dask instead of being computed here)."""
    return type(x).__module__.startswith("dask.")


def dask_module() -> Any:
    """``fastdropout.dask``, imported at the first dask array (dask is then
    importable, since the array exists)."""
    return importlib.import_module("fastdropout.dask")


def check_window(window: object, shape: tuple[int, ...]) -> _window.Window | None:
    return None if window is None else _window.check_window(window, shape)


def window_result(
    fast: Any,
    return_mask: object,
    p: Any,
    mode: str,
    seed: Any,
    offset: Any,
    window: Any,
) -> Any:
    """What a window fast path's answer means to the caller: None (not served),
    ``y``, or ``(y, Mask)`` with the Mask, which records the window, made from the
    ``(y, bits)`` the fast path returns when ``return_mask`` is True."""
    if fast is None or return_mask is not True:
        return fast
    y, bits = fast
    win = _window.Window(*window)
    return y, Mask._new(bits, y.shape, y.size, p, mode, seed, offset, (), win)


def run_window(
    src: FloatArray,
    y: FloatArray,
    seed: int,
    offset: int,
    win: _window.Window,
    axes: tuple[int, ...],
    threshold: int,
    scale: float,
    scaled: bool,
    bits: npt.NDArray[np.uint8] | None,
) -> None:
    """The windowed forward pass (docs/spec.md section 11) from ``src`` into ``y``."""
    first, strides = _window.layout(win, axes, offset)
    _core.window_forward(
        src, y, seed, first, strides, threshold, scale, scaled, bits, axes
    )


def forward_planned(plan: _v.ForwardPlan, win: _window.Window | None = None) -> Any:
    x, p, training, mode, seed_arg, offset, axes, mask_shape, n_mask, out, want_mask = (
        plan
    )
    if not training:
        y = evaluate(x, p, mode, out)
        return (y, None) if want_mask else y
    seed = resolve_seed(seed_arg)
    y = target(x, out)
    bits = _empty((n_mask + 7) >> 3, _uint8) if (want_mask or axes) else None
    scaled = mode == "inverted"
    scale = float(_inverted_scale(p, x.dtype)) if scaled else 1.0
    src = source(x, y, out)
    if win is None:
        _core.forward(src, y, seed, offset, _threshold(p), scale, scaled, bits, axes)
    else:
        t = _threshold(p)
        run_window(src, y, seed, offset, win, axes, t, scale, scaled, bits)
    y = finish(y, out)
    if not want_mask:
        return y
    assert bits is not None
    return y, Mask._new(bits, mask_shape, n_mask, p, mode, seed, offset, axes, win)
