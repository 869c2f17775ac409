"""The native front-end: validate in Python, run the C++ core (``_core``).

Validation comes from ``_validate.py`` (shared with ``fastdropout.reference``);
this module only decides how to feed the core without hidden temporaries:

- a C-contiguous, aligned input that does not overlap the output is read in
  place by the kernel;
- ``out=x`` (same memory, same layout) runs in place;
- anything else (strided, Fortran-ordered, negative strides) is first copied
  into the output with ``np.copyto``, and the kernel then runs in place on the
  output; a partial overlap of ``x`` and ``out`` goes through a copy of ``x``.
"""

from __future__ import annotations

import importlib
import math
import operator
import secrets
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, cast, overload

import numpy as np

from . import _bfloat16, _core, _scales, _window
from . import _validate as _v
from ._interop import keeps_array_type
from ._seed import resolve_seed
from ._validate import DEFAULT_MODE
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import (
        ArrayT,
        Axes,
        DataFormat,
        FloatArray,
        Mode,
        Offset,
        Probability,
        Seed,
        WindowArg,
    )

__all__ = [
    "dropout",
    "dropout_backward",
    "get_num_threads",
    "set_num_threads",
    "simd_level",
    "spatial_dropout",
]

_empty = np.empty
_prod = math.prod
_dense = _core.dense
_dense_window = _core.dense_window
_spatial = _core.spatial
_spatial_window = _core.spatial_window
_backward = _core.backward
_alpha_regen = _core.alpha_regen
_CHANNELS_LAST = {"channels_first": False, "channels_last": True}
# Passed as return_mask, it makes the forward fast paths return (y, Mask) with the
# Mask made in C++ (as Mask._new would make it); True gives (y, bits) (the layers).
_WANT_MASK = _core._mask_maker(Mask)
_may_share_memory = np.may_share_memory
_copyto = np.copyto
_uint8 = np.uint8
_threshold = _v.threshold
_inverted_scale = _v.inverted_scale


def _target(x: FloatArray, out: FloatArray | None) -> FloatArray:
    """Where the kernel writes: ``out``, or a new C-contiguous array. An
    unaligned ``out`` gets a temporary (see ``_finish``)."""
    if out is None or not out.flags.aligned:
        return _empty(x.shape, x.dtype)
    return out


def _source(x: FloatArray, y: FloatArray, out: FloatArray | None) -> FloatArray:
    """What the kernel reads: ``x`` itself, or ``y`` after copying ``x`` into it.
    ``y`` is ``out`` or a fresh array (which cannot overlap ``x``)."""
    if y is not out or not _may_share_memory(x, y):
        flags = x.flags
        if flags.c_contiguous and flags.aligned:
            return x
        _copyto(y, x)  # any strides
        return y
    if _same_memory(x, y):
        return y  # out is x: in place
    # Partial overlap. np.copyto does not always cope with it (1-D arrays of
    # different strides are copied element by element without a temporary),
    # so read x through a copy.
    _copyto(y, x.copy())
    return y


def _same_memory(x: FloatArray, y: FloatArray) -> bool:
    """x and y are the same elements at the same addresses (y is C-contiguous)."""
    return (
        x.flags.c_contiguous
        and x.shape == y.shape
        and x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
    )


def _finish(y: FloatArray, out: FloatArray | None) -> FloatArray:
    if out is None or y is out:
        return y
    _copyto(out, y)  # unaligned out
    return out


def _evaluate(x: FloatArray, p: float, mode: str, out: FloatArray | None) -> FloatArray:
    y = out if out is not None else _empty(x.shape, x.dtype)
    if out is not None and _may_share_memory(x, out) and not _same_memory(x, out):
        x = x.copy()  # partial overlap: see _source
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


# ---- fast paths ------------------------------------------------------------------
# Plain calls (exact float ndarrays, C-contiguous and aligned; a float p; int or no
# seed; int offset; no out, out=x or a disjoint plain out; training) are recognised
# and run by _core.dense / _core.spatial / _core.backward / _core.alpha_regen in one
# C++ call each, which
# return None for anything else; the general path below then validates everything.
# Both compute the same bits (tests/test_fast_path.py).
_ndarray = np.ndarray


def _is_dask(x: object) -> bool:
    """A dask collection, recognised without importing dask (docs/spec.md section
    11: such arrays go to fastdropout.dask instead of being computed here)."""
    return type(x).__module__.startswith("dask.")


def _dask() -> Any:
    """``fastdropout.dask``, imported at the first dask array (dask is then
    importable, since the array exists)."""
    return importlib.import_module("fastdropout.dask")


def _check_window(window: object, shape: tuple[int, ...]) -> _window.Window | None:
    return None if window is None else _window.check_window(window, shape)


def _run_window(
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


def _forward(plan: _v.ForwardPlan, win: _window.Window | None = None) -> Any:
    x, p, training, mode, seed_arg, offset, axes, mask_shape, n_mask, out, want_mask = (
        plan
    )
    if not training:
        y = _evaluate(x, p, mode, out)
        return (y, None) if want_mask else y
    seed = resolve_seed(seed_arg)
    y = _target(x, out)
    bits = _empty((n_mask + 7) >> 3, _uint8) if (want_mask or axes) else None
    scaled = mode == "inverted"
    scale = float(_inverted_scale(p, x.dtype)) if scaled else 1.0
    src = _source(x, y, out)
    if win is None:
        _core.forward(src, y, seed, offset, _threshold(p), scale, scaled, bits, axes)
    else:
        t = _threshold(p)
        _run_window(src, y, seed, offset, win, axes, t, scale, scaled, bits)
    y = _finish(y, out)
    if not want_mask:
        return y
    assert bits is not None
    return y, Mask._new(bits, mask_shape, n_mask, p, mode, seed, offset, axes, win)


# Typing: a float ndarray type in, the same type out (dtype kept); anything else
# array-like gives NDArray[floating]; return_mask=True gives (y, Mask), or
# (y, Mask | None) when training is not known to be True.
@overload
def dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[False] = ...,
    window: WindowArg | None = ...,
) -> ArrayT: ...
@overload
def dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    training: Literal[True] = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[ArrayT, Mask]: ...
@overload
def dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[ArrayT, Mask | None]: ...
@overload
def dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[False] = ...,
    window: WindowArg | None = ...,
) -> FloatArray: ...
@overload
def dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    training: Literal[True] = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[FloatArray, Mask]: ...
@overload
def dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    return_mask: bool,
    window: WindowArg | None = ...,
) -> FloatArray | tuple[FloatArray, Mask | None]: ...


def dropout(
    x: Any,
    p: Any = 0.5,
    *,
    training: bool = True,
    mode: Mode = "inverted",
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: Axes = None,
    out: Any = None,
    return_mask: bool = False,
    window: WindowArg | None = None,
) -> Any:
    """Dropout of ``x`` with drop probability ``p``.

    Parameters
    ----------
    x : array_like of float16, float32 or float64
        Any shape (0-d and empty included) and any strides; the result equals
        that of ``np.ascontiguousarray(x)``.
    p : float in [0, 1]
        Probability that an element is dropped.
    training : bool
        ``False`` is evaluation: ``x`` unchanged (inverted) or
        ``x * (1 - p)`` (classic), as a new array (or in ``out``); no random
        numbers are used and no mask is made.
    mode : {"inverted", "classic"}
        Inverted (the default) scales kept elements by ``1 / (1 - p)`` in
        training; classic leaves them and scales by ``1 - p`` in evaluation.
    seed : int in [0, 2**64), numpy.random.Generator or None
        Key of the random stream; a Generator gives one 64-bit draw, ``None``
        a fresh seed from the OS. The mask records the seed used.
    offset : int in [0, 2**64)
        Stream position of the first mask element.
    broadcast_axes : int or tuple of ints, optional
        Axes along which one decision is shared (mask shape: ``x.shape`` with
        these axes set to 1).
    out : ndarray, optional
        Writeable, C-contiguous array of ``x``'s shape and dtype; may be ``x``.
    return_mask : bool
        Also return the :class:`~fastdropout.Mask` (``None`` in evaluation).
    window : (global_shape, start), optional
        ``x`` is the block ``X[start[0]:start[0] + x.shape[0], ...]`` of an array
        ``X`` of ``global_shape``: mask elements are numbered over ``X``'s mask, so
        the block gets exactly the values the call on ``X`` gives there
        (docs/spec.md section 11). The mask is the block's window of ``X``'s mask.

    Returns
    -------
    y, or ``(y, mask)`` with ``return_mask=True``.
    Dropped elements are ``+0.0`` whatever ``x`` was; kept ones are ``x * s``
    with ``s = dtype(1 / (1 - p))`` (inverted) or ``x`` (classic).
    """
    if training is True and broadcast_axes is None:
        # A plain call (see _core.dense, _core.dense_window) is checked, allocated
        # and run in C++; None means "not plain": the general path below validates
        # and raises.
        s: Any = secrets.randbits(64) if seed is None else seed
        if window is None:
            want = _WANT_MASK if return_mask is True else return_mask  # (y, Mask)
            fast = _dense(x, p, mode, s, offset, out, want)
        else:  # (y, bits): the Mask records the window
            fast = _dense_window(x, p, mode, s, offset, out, return_mask, window)
            if fast is not None and return_mask is True:
                y, bits = fast
                win = _window.Window(*cast("Any", window))
                return y, Mask._new(bits, y.shape, y.size, p, mode, s, offset, (), win)
        if fast is not None:
            return fast
    if _is_dask(x):  # lazy, block by block
        return _dask().dropout(
            x, p, training=training, mode=mode, seed=seed, offset=offset,
            broadcast_axes=broadcast_axes, out=out, return_mask=return_mask,
            window=window,
        )  # fmt: skip
    return _dropout_general(
        x, p, training, mode, seed, offset, broadcast_axes, out, return_mask, window
    )


@keeps_array_type("x")
def _dropout_general(
    x: Any,
    p: object,
    training: object,
    mode: object,
    seed: object,
    offset: object,
    broadcast_axes: object,
    out: Any,
    return_mask: object,
    window: object,
) -> Any:
    """``dropout`` for every call but the plain ones (any array type)."""
    plan = _v.plan_forward(
        x, p, training, mode, seed, offset, broadcast_axes, out, return_mask
    )
    return _forward(plan, _check_window(window, plan.x.shape))


@overload
def spatial_dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    data_format: DataFormat = ...,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[False] = ...,
    window: WindowArg | None = ...,
) -> ArrayT: ...
@overload
def spatial_dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    data_format: DataFormat = ...,
    training: Literal[True] = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[ArrayT, Mask]: ...
@overload
def spatial_dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    data_format: DataFormat = ...,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[ArrayT, Mask | None]: ...
@overload
def spatial_dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    data_format: DataFormat = ...,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[False] = ...,
    window: WindowArg | None = ...,
) -> FloatArray: ...
@overload
def spatial_dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    data_format: DataFormat = ...,
    training: Literal[True] = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[FloatArray, Mask]: ...
@overload
def spatial_dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    data_format: DataFormat = ...,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    out: FloatArray | None = ...,
    return_mask: bool,
    window: WindowArg | None = ...,
) -> FloatArray | tuple[FloatArray, Mask | None]: ...


def spatial_dropout(
    x: Any,
    p: Any = 0.5,
    *,
    data_format: DataFormat = "channels_first",
    training: bool = True,
    mode: Mode = "inverted",
    seed: Any = None,
    offset: Any = 0,
    out: Any = None,
    return_mask: bool = False,
    window: WindowArg | None = None,
) -> Any:
    """Dropout of whole feature maps (channels) of a 3-, 4- or 5-D ``x``.

    ``data_format="channels_first"``: ``x`` is ``(N, C, *spatial)`` and the
    mask shape ``(N, C, 1, ..., 1)``; ``"channels_last"``: ``(N, *spatial, C)``
    and ``(N, 1, ..., 1, C)``. The same ``(n, c)`` is dropped in both layouts
    for the same seed and offset. Other arguments as :func:`dropout`.
    """
    if training is True and type(data_format) is str:
        channels_last = _CHANNELS_LAST.get(data_format)
        if channels_last is not None:  # a plain call: see dropout()
            s: Any = secrets.randbits(64) if seed is None else seed
            if window is None:
                want = _WANT_MASK if return_mask is True else return_mask  # (y, Mask)
                fast = _spatial(x, p, mode, s, offset, out, want, channels_last)
            else:  # (y, bits): the Mask records the window
                fast = _spatial_window(
                    x, p, mode, s, offset, out, return_mask, channels_last, window
                )
                if fast is not None and return_mask is True:
                    y, bits = fast
                    shp = y.shape
                    axes = _v.spatial_axes(len(shp), data_format)
                    ones = (1,) * len(axes)
                    n, c = shp[0], shp[-1] if channels_last else shp[1]
                    shape = (n, *ones, c) if channels_last else (n, c, *ones)
                    win = _window.Window(*cast("Any", window))
                    return y, Mask._new(
                        bits, shape, n * c, p, mode, s, offset, axes, win
                    )
            if fast is not None:
                return fast
    if _is_dask(x):  # lazy, block by block
        return _dask().spatial_dropout(
            x, p, data_format=data_format, training=training, mode=mode, seed=seed,
            offset=offset, out=out, return_mask=return_mask, window=window,
        )  # fmt: skip
    return _spatial_dropout_general(
        x, p, data_format, training, mode, seed, offset, out, return_mask, window
    )


@keeps_array_type("x")
def _spatial_dropout_general(
    x: Any,
    p: object,
    data_format: object,
    training: object,
    mode: object,
    seed: object,
    offset: object,
    out: Any,
    return_mask: object,
    window: object,
) -> Any:
    """``spatial_dropout`` for every call but the plain ones (any array type)."""
    plan = _v.plan_forward(
        x,
        p,
        training,
        mode,
        seed,
        offset,
        None,
        out,
        return_mask,
        spatial=True,
        data_format=data_format,
    )
    return _forward(plan, _check_window(window, plan.x.shape))


@overload
def dropout_backward(
    grad_y: ArrayT,
    mask: Mask | None = ...,
    p: Probability | None = ...,
    *,
    mode: Mode = ...,
    seed: Offset | None = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: ArrayT | None = ...,
    window: WindowArg | None = ...,
) -> ArrayT: ...
@overload
def dropout_backward(
    grad_y: npt.ArrayLike,
    mask: Mask | None = ...,
    p: Probability | None = ...,
    *,
    mode: Mode = ...,
    seed: Offset | None = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    window: WindowArg | None = ...,
) -> FloatArray: ...


def dropout_backward(
    grad_y: Any,
    mask: Mask | None = None,
    p: Probability | None = None,
    *,
    mode: Mode = DEFAULT_MODE,  # type: ignore[assignment]
    seed: Offset | None = None,
    offset: Offset = 0,
    broadcast_axes: Axes = None,
    out: Any = None,
    window: WindowArg | None = None,
) -> Any:
    """Gradient of dropout: ``grad_y * s`` (inverted) or ``grad_y`` (classic)
    where kept, ``+0.0`` where dropped.

    Pass either the ``mask`` of the forward call (``p`` and ``mode`` then come
    from it; an alpha dropout mask gives ``grad_y * A`` where kept; its shape must equal ``grad_y``'s, with 1 on broadcast axes), or
    ``p`` with the integer ``seed`` and the ``offset`` (and
    ``broadcast_axes``) of the forward call to regenerate the mask without
    storing it (``mode="alpha"`` regenerates an alpha dropout mask). The
    result has ``grad_y``'s dtype; ``out`` as in :func:`dropout`. ``window``
    (with ``p`` and ``seed``, not with a mask): the ``window`` of a block's
    forward call, whose mask is regenerated; a mask from a block call already
    covers just the block.
    """
    if window is not None:
        if mask is None and broadcast_axes is None:
            # a block's dense mask regenerated (see _core.dense_window); else
            # validated and run below
            m = "inverted" if mode is DEFAULT_MODE else mode
            grad: FloatArray | None = _dense_window(
                grad_y, p, m, seed, offset, out, False, window
            )
            if grad is not None:
                return grad
    elif (
        type(mask) is Mask
        and p is None
        and mode is DEFAULT_MODE
        and seed is None
        and type(offset) is int
        and offset == 0
        and broadcast_axes is None
    ):  # a plain backward from a stored mask: checked and run in C++
        # (bits, shape, size, p, mode, seed, offset, axes), read once (see Mask)
        ms = mask._s
        grad = _backward(grad_y, ms[0], ms[3], ms[4], out, ms[1], ms[7])
        if grad is not None:
            return grad
    elif mask is None and broadcast_axes is None:
        # the dense mask regenerated: the forward pass of grad_y, same stream
        m = "inverted" if mode is DEFAULT_MODE else mode  # the default is a marker str
        if type(m) is str and m == "alpha":  # grad_y * A where kept
            grad = _alpha_regen(grad_y, p, seed, offset, out)
        else:
            grad = _dense(grad_y, p, m, seed, offset, out, False)
        if grad is not None:
            return grad
    if _is_dask(grad_y):  # lazy, block by block
        return _dask().dropout_backward(
            grad_y, mask, p, mode=mode, seed=seed, offset=offset,
            broadcast_axes=broadcast_axes, out=out, window=window,
        )  # fmt: skip
    return _dropout_backward_general(
        grad_y, mask, p, mode, seed, offset, broadcast_axes, out, window
    )


@keeps_array_type("grad_y")
def _dropout_backward_general(
    grad_y: Any,
    mask: object,
    p: object,
    mode: object,
    seed: object,
    offset: object,
    broadcast_axes: object,
    out: Any,
    window: object,
) -> Any:
    """``dropout_backward`` for every call but the plain ones (any array type)."""
    plan = _v.plan_backward(grad_y, mask, p, mode, seed, offset, broadcast_axes, out)
    win = _window.check_backward(window, plan.mask is not None, plan.g.shape)
    g = plan.g
    out_ = plan.out
    y = _target(g, out_)
    scale, scaled = _scales.backward_scale(plan.p, plan.mode, g.dtype)
    if plan.mask is not None:
        _core.backward_mask(
            _source(g, y, out_), y, plan.mask.bits, scale, scaled, plan.axes
        )
    elif win is not None:
        bits = _empty((plan.n_mask + 7) >> 3, _uint8) if plan.axes else None
        src = _source(g, y, out_)
        t = _threshold(plan.p)
        _run_window(
            src, y, plan.seed, plan.offset, win, plan.axes, t, scale, scaled, bits
        )
    else:
        bits = _empty((plan.n_mask + 7) >> 3, _uint8) if plan.axes else None
        _core.forward(
            _source(g, y, out_),
            y,
            plan.seed,
            plan.offset,
            _threshold(plan.p),
            scale,
            scaled,
            bits,
            plan.axes,
        )
    return _finish(y, out_)


def set_num_threads(n: SupportsIndex | None) -> None:
    """Use at most ``n`` threads for large arrays; ``None``: back to the default.

    The default follows OpenMP's setting for the calling thread
    (``omp_get_max_threads()`` of the OpenMP runtime fastdropout links: the
    processor count, ``OMP_NUM_THREADS``, or a ``threadpoolctl.threadpool_limits``
    block), read on every large call. ``set_num_threads(n)`` also sets that OpenMP
    setting (``omp_set_num_threads``), so threadpoolctl reports it, and a
    ``threadpool_limits`` block inside still lowers it. ``n`` is an int in
    ``[1, cap]``, ``cap`` being a few threads per processor (ValueError outside,
    TypeError for a non-integer or a bool).
    """
    if n is None:
        _core.set_num_threads(0)
        return
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"n must be an int >= 1 or None, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(
            f"n must be an int >= 1 or None, got {n!r} of type {type(n).__name__}"
        ) from None
    cap = _core._max_num_threads()
    if not 1 <= value <= cap:
        raise ValueError(
            f"n must be an int in [1, {cap}] ({cap} = a few threads per processor "
            f"on this machine), got {value}"
        )
    _core.set_num_threads(value)


def get_num_threads() -> int:
    """Threads a large call made now, from this thread, would use."""
    return _core.get_num_threads()


def simd_level() -> str:
    """The instruction set in use: "avx512", "avx2", "neon" or "scalar"."""
    return _core.simd_level()
