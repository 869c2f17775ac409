"""Fused dropout + residual add (docs/spec.md section 9), native front-end.

``dropout_add`` reads ``x``, ``residual`` (and the small ``bias``) and writes
``y`` and the mask bits in one pass of the C++ core. Inputs the kernels cannot
read in place (strided, misaligned, or partly overlapping ``out``) are copied
first; ``out=residual`` and ``out=x`` run in place.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, overload

import numpy as np

from . import _core, _scales, _window
from . import _validate as _v
from . import _validate_fused as _vf
from ._api import _backward, dropout_backward
from ._calls import WANT_MASK as _WANT_MASK
from ._calls import dask_module as _dask
from ._calls import finish as _finish
from ._calls import is_dask as _is_dask
from ._calls import same_memory as _same_memory
from ._calls import target as _target
from ._calls import window_result as _window_result
from ._interop import keeps_array_type
from ._rowsum import round_sums
from ._seed import resolve_seed
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

__all__ = ["dropout_add", "dropout_add_backward"]

_add = _core.add
_add_backward = _core.add_backward
_ndarray = np.ndarray


def _readable(a: FloatArray, y: FloatArray, may_alias: bool = True) -> FloatArray:
    """``a`` as the kernel can read it while writing ``y``: itself when C-contiguous,
    aligned and either disjoint from ``y`` or (if ``may_alias``) the very same
    elements; else a C-contiguous copy."""
    if a.flags.c_contiguous and a.flags.aligned:
        if not np.may_share_memory(a, y):
            return a
        if may_alias and _same_memory(a, y):
            return a
    return np.array(a, order="C", copy=True)


@overload
def dropout_add(
    x: ArrayT,
    residual: ArrayT,
    p: Probability = ...,
    *,
    bias: npt.ArrayLike | None = ...,
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
def dropout_add(
    x: ArrayT,
    residual: ArrayT,
    p: Probability = ...,
    *,
    bias: npt.ArrayLike | None = ...,
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
def dropout_add(
    x: npt.ArrayLike,
    residual: npt.ArrayLike,
    p: Probability = ...,
    *,
    bias: npt.ArrayLike | None = ...,
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
def dropout_add(
    x: npt.ArrayLike,
    residual: npt.ArrayLike,
    p: Probability = ...,
    *,
    bias: npt.ArrayLike | None = ...,
    training: bool = ...,
    mode: Mode = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[FloatArray, Mask | None]: ...
def dropout_add(
    x: Any,
    residual: Any,
    p: Any = 0.5,
    *,
    bias: Any = None,
    training: bool = True,
    mode: Any = "inverted",
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: Axes = None,
    out: Any = None,
    return_mask: bool = False,
    window: WindowArg | None = None,
) -> Any:
    """Dropout of ``x + bias`` added to ``residual``, in one pass over memory.

    Training: ``y = residual + select(keep, (x + bias) * s, +0.0)`` with each
    operation rounded in the arrays' dtype as NumPy rounds it (no ``+ bias``
    without a bias; classic mode: no ``* s``). Evaluation: ``residual + (x +
    bias)`` (inverted) or ``residual + (x + bias) * dtype(1 - p)`` (classic).

    ``x``, ``residual``, ``bias`` and ``out`` share one dtype (float16,
    float32, float64 or ml_dtypes.bfloat16; no promotion); ``residual`` has
    ``x``'s shape; ``bias.shape`` equals ``x``'s trailing axes. ``out`` may be
    ``residual`` or ``x`` (in place). The mask is ``x``'s (or the broadcast
    mask of ``broadcast_axes``); ``seed``, ``offset``, ``return_mask`` as in
    :func:`fastdropout.dropout`. See docs/spec.md section 9. ``window`` as in
    :func:`fastdropout.dropout` (``x`` and ``residual`` are the block, ``bias``
    the block's part of the bias).
    """
    if training is True and broadcast_axes is None:
        # A plain call (see _core.add), also of a block with a plain window, is
        # checked, allocated and run in C++; None means "not plain": the general
        # path below validates and raises.
        s: Any = secrets.randbits(64) if seed is None else seed
        if window is None:
            want = _WANT_MASK if return_mask is True else return_mask  # (y, Mask)
            fast = _add(x, residual, bias, p, mode, s, offset, out, want, None)
        else:  # (y, bits): the Mask records the window
            fast = _window_result(
                _add(x, residual, bias, p, mode, s, offset, out, return_mask, window),
                return_mask, p, mode, s, offset, window,
            )  # fmt: skip
        if fast is not None:
            return fast
    if _is_dask(x) or _is_dask(residual) or _is_dask(bias):  # lazy, block by block
        return _dask().dropout_add(
            x, residual, p, bias=bias, training=training, mode=mode, seed=seed,
            offset=offset, broadcast_axes=broadcast_axes, out=out,
            return_mask=return_mask, window=window,
        )  # fmt: skip
    return _dropout_add_general(
        x, residual, p, bias, training, mode, seed, offset, broadcast_axes, out,
        return_mask, window,
    )  # fmt: skip


@keeps_array_type("x", "residual", "bias")
def _dropout_add_general(
    x: Any,
    residual: Any,
    p: Any,
    bias: Any,
    training: Any,
    mode: Any,
    seed: Any,
    offset: Any,
    broadcast_axes: Any,
    out: Any,
    return_mask: Any,
    window: Any,
) -> Any:
    """``dropout_add`` for every call but the plain ones (any array type)."""
    plan = _vf.plan_add(
        x,
        residual,
        p,
        bias,
        training,
        mode,
        seed,
        offset,
        broadcast_axes,
        out,
        return_mask,
    )
    xa, ra, ba = plan.x, plan.residual, plan.bias
    win = None if window is None else _window.check_window(window, xa.shape)
    y = _target(xa, plan.out)
    xs = _readable(xa, y)
    rs = _readable(ra, y)
    bs = None if ba is None else _readable(ba, y, may_alias=False)
    if not plan.training:
        classic = plan.mode == "classic"
        factor = float(_scales.classic_factor(plan.p, xa.dtype)) if classic else 1.0
        _core.add_eval(xs, rs, bs, y, factor, classic)
        y = _finish(y, plan.out)
        return (y, None) if plan.return_mask else y
    s = resolve_seed(plan.seed)
    bits = (
        np.empty((plan.n_mask + 7) >> 3, np.uint8)
        if (plan.return_mask or plan.axes)
        else None
    )
    scaled = plan.mode == "inverted"
    scale = float(_scales.inverted_scale(plan.p, xa.dtype)) if scaled else 1.0
    t = _v.threshold(plan.p)
    if win is None:
        _core.add_forward(
            xs, rs, bs, y, s, plan.offset, t, scale, scaled, bits, plan.axes
        )
    else:
        first, strides = _window.layout(win, plan.axes, plan.offset)
        _core.window_add_forward(
            xs, rs, bs, y, s, first, strides, t, scale, scaled, bits, plan.axes
        )
    y = _finish(y, plan.out)
    if not plan.return_mask:
        return y
    assert bits is not None
    mask = Mask._new(
        bits,
        plan.mask_shape,
        plan.n_mask,
        plan.p,
        plan.mode,
        s,
        plan.offset,
        plan.axes,
        win,
    )
    return y, mask


def dropout_add_backward(
    grad_y: Any,
    mask: Mask | None = None,
    p: Probability | None = None,
    *,
    bias: bool | tuple[int, ...] = False,
    mode: str = DEFAULT_MODE,
    seed: SupportsIndex | None = None,
    offset: Offset = 0,
    broadcast_axes: Axes = None,
    out: Any = None,
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`dropout_add`: ``(grad_x, grad_residual, grad_bias)``.

    ``grad_x`` is exactly ``dropout_backward(grad_y, ...)`` (same mask and
    arguments); ``grad_residual`` is ``grad_y`` itself, the same object (no
    copy: do not write into one of them expecting the other unchanged);
    ``grad_bias`` is ``None`` unless ``bias`` is given: ``True`` for a bias
    over the last axis, or the bias's shape (trailing axes of ``grad_y``).
    It is ``grad_x`` summed over the leading axes, accumulated in float64
    sequentially over the rows in C order and rounded once to the dtype, so it
    does not depend on threads or instruction set; with a dense mask it is
    computed in the same pass as ``grad_x``.
    """
    if type(grad_y) is _ndarray:  # the plain calls: one C++ call each
        if (
            type(mask) is Mask
            and p is None
            and mode is DEFAULT_MODE
            and seed is None
            and type(offset) is int
            and offset == 0
            and broadcast_axes is None
        ):  # from a stored mask (with a bias: dense, the bias gradient in the same pass)
            ms = mask._s  # (bits, shape, size, p, mode, seed, offset, axes), see Mask
            if bias is False or bias is None:
                gx = _backward(grad_y, ms[0], ms[3], ms[4], out, ms[1], ms[7])
                if gx is not None:
                    return gx, grad_y, None
            else:
                fast = _add_backward(grad_y, ms[0], ms[3], ms[4], out, ms[1], ms[7], bias)
                if fast is not None:
                    return fast[0], grad_y, fast[1]
        elif bias is False or bias is None:  # dropout_backward's own fast paths
            gx = dropout_backward(  # type: ignore[call-overload]
                grad_y, mask, p, mode=mode, seed=seed, offset=offset,
                broadcast_axes=broadcast_axes, out=out,
            )  # fmt: skip
            return gx, grad_y, None
    return _dropout_add_backward_general(
        grad_y, mask, p, bias, mode, seed, offset, broadcast_axes, out
    )


@keeps_array_type("grad_y")
def _dropout_add_backward_general(
    grad_y: Any,
    mask: Any,
    p: Any,
    bias: Any,
    mode: Any,
    seed: Any,
    offset: Any,
    broadcast_axes: Any,
    out: Any,
) -> tuple[Any, Any, Any]:
    """``dropout_add_backward`` for every call but the plain ones (any array type)."""
    if bias is False or bias is None:
        gx = dropout_backward(
            grad_y,
            mask,
            p,
            mode=mode,
            seed=seed,
            offset=offset,
            broadcast_axes=broadcast_axes,
            out=out,
        )
        return gx, grad_y, None
    plan = _v.plan_backward(grad_y, mask, p, mode, seed, offset, broadcast_axes, out)
    g = plan.g
    bshape = _vf.bias_shape_for_backward(bias, g.shape)
    assert bshape is not None
    ncols = 1
    for s in bshape:
        ncols *= s
    acc = np.zeros(ncols, np.float64)
    scale, scaled = _scales.backward_scale(plan.p, plan.mode, g.dtype)
    y = _target(g, plan.out)
    src = _readable(g, y)
    if not plan.axes:
        if plan.mask is not None:
            bits = plan.mask.bits
        else:  # the mask bits (n/8 bytes), then grad_x and the sums in one pass
            bits = np.empty((plan.n_mask + 7) >> 3, np.uint8)
            _core.gen_bits(
                plan.seed, plan.offset, _v.threshold(plan.p), bits, plan.n_mask
            )
        _core.backward_sum(src, y, bits, scale, scaled, acc, ncols)
    else:
        # Broadcast masks: grad_x through dropout_backward's layout walk, then the
        # column sums in a second pass over grad_x.
        if plan.mask is not None:
            _core.backward_mask(src, y, plan.mask.bits, scale, scaled, plan.axes)
        else:
            mbits = np.empty((plan.n_mask + 7) >> 3, np.uint8)
            _core.forward(
                src,
                y,
                plan.seed,
                plan.offset,
                _v.threshold(plan.p),
                scale,
                scaled,
                mbits,
                plan.axes,
            )
        _core.backward_sum(y, y, None, 1.0, False, acc, ncols)
    gx = _finish(y, plan.out)
    return gx, grad_y, round_sums(acc, g.dtype).reshape(bshape)
