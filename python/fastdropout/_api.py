"""The native front-end of ``dropout`` and ``dropout_backward``: plain calls go
to the C++ core's one-call fast paths, everything else is validated in Python
(``_validate.py``, shared with ``fastdropout.reference``) and fed to the core as
``_calls`` describes. ``spatial_dropout`` is in ``_spatial_api``, the thread and
SIMD settings in ``_runtime``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from . import _core, _scales, _window
from . import _validate as _v
from ._calls import WANT_MASK as _WANT_MASK
from ._calls import check_window as _check_window
from ._calls import dask_module as _dask
from ._calls import finish as _finish
from ._calls import forward_planned as _forward
from ._calls import is_dask as _is_dask
from ._calls import run_window as _run_window
from ._calls import source as _source
from ._calls import target as _target
from ._calls import window_result as _window_result
from ._interop import keeps_array_type
from ._validate import DEFAULT_MODE
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import (
        ArrayT,
        Axes,
        FloatArray,
        Mode,
        Offset,
        Probability,
        Seed,
        WindowArg,
    )

__all__ = ["dropout", "dropout_backward"]

_empty = np.empty
_uint8 = np.uint8
_threshold = _v.threshold
_dense = _core.dense
_dense_window = _core.dense_window
_backward = _core.backward
_alpha_regen = _core.alpha_regen


# ---- fast paths ------------------------------------------------------------------
# Plain calls (exact float ndarrays, C-contiguous and aligned; a float p; int or no
# seed; int offset; no out, out=x or a disjoint plain out; training) are recognised
# and run by _core.dense / _core.spatial / _core.backward / _core.alpha_regen in one
# C++ call each, which
# return None for anything else; the general path below then validates everything.
# Both compute the same bits (tests/test_fast_path.py).
_ndarray = np.ndarray



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
            fast = _window_result(
                _dense_window(x, p, mode, s, offset, out, return_mask, window),
                return_mask, p, mode, s, offset, window,
            )  # fmt: skip
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
