"""Argument validation for dropout_add, dropout_add_backward and alpha_dropout
(docs/spec.md sections 9 and 10), shared by the native front-end and the
reference so that both raise the same errors, before anything is written."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _scales
from . import _validate as _v
from ._seed import check_seed

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[Any]

__all__ = [
    "AddPlan",
    "AlphaPlan",
    "bias_shape_for_backward",
    "plan_add",
    "plan_alpha",
]


class AddPlan(NamedTuple):
    x: FloatArray
    residual: FloatArray
    bias: FloatArray | None
    p: float
    training: bool
    mode: str
    seed: object
    offset: int
    axes: tuple[int, ...]
    mask_shape: tuple[int, ...]
    n_mask: int
    out: FloatArray | None
    return_mask: bool


def _same_dtype(a: FloatArray, name: str, x: FloatArray) -> None:
    if a.dtype != x.dtype:
        raise TypeError(
            f"{name} has dtype {_scales.dtype_name(a.dtype)}, but x has dtype "
            f"{_scales.dtype_name(x.dtype)}; dropout_add does not promote: give "
            "x, residual, bias and out one dtype"
        )


def _mask_layout(
    shape: tuple[int, ...], axes: tuple[int, ...]
) -> tuple[tuple[int, ...], int]:
    mshape = _v.mask_shape_of(shape, axes)
    n = 1
    for s in mshape:
        n *= s
    return mshape, n


def plan_add(
    x: object,
    residual: object,
    p: object,
    bias: object,
    training: object,
    mode: object,
    seed: object,
    offset: object,
    broadcast_axes: object,
    out: object,
    return_mask: object,
) -> AddPlan:
    """Validate every argument of ``dropout_add`` in a fixed order."""
    pf = _v.check_p(p)
    train = _v.check_flag(training, "training")
    m = _v.check_mode(mode)
    check_seed(seed)
    off = _v.check_offset(offset)
    arr = _v.check_array(x)
    res = _v.check_array(residual, "residual")
    _same_dtype(res, "residual", arr)
    if res.shape != arr.shape:
        raise ValueError(
            f"residual has shape {res.shape}, but x has shape {arr.shape}; "
            "they must be equal"
        )
    b = None
    if bias is not None:
        b = _v.check_array(bias, "bias")
        _same_dtype(b, "bias", arr)
        if b.ndim > arr.ndim or b.shape != arr.shape[arr.ndim - b.ndim :]:
            raise ValueError(
                f"bias has shape {b.shape}, but it must equal the trailing axes of "
                f"x's shape {arr.shape} (as a linear layer's bias does)"
            )
    axes = _v.normalize_axes(broadcast_axes, arr.ndim)
    o = None
    if out is not None:
        o = _v.check_out(out, arr.shape, arr.dtype)
    want_mask = _v.check_flag(return_mask, "return_mask")
    if train and m == "inverted":
        _scales.check_inverted_scale(pf, arr.dtype)
    mshape, n_mask = _mask_layout(arr.shape, axes)
    return AddPlan(
        arr, res, b, pf, train, m, seed, off, axes, mshape, n_mask, o, want_mask
    )


class AlphaPlan(NamedTuple):
    x: FloatArray
    p: float
    training: bool
    seed: object
    offset: int
    axes: tuple[int, ...]
    mask_shape: tuple[int, ...]
    n_mask: int
    out: FloatArray | None
    return_mask: bool


def plan_alpha(
    x: object,
    p: object,
    training: object,
    seed: object,
    offset: object,
    broadcast_axes: object,
    out: object,
    return_mask: object,
) -> AlphaPlan:
    """Validate every argument of ``alpha_dropout`` (p in [0, 1))."""
    pf = _v.check_p(p)
    _scales.check_alpha_p(pf, None)
    train = _v.check_flag(training, "training")
    check_seed(seed)
    off = _v.check_offset(offset)
    arr = _v.check_array(x)
    _scales.check_alpha_p(pf, arr.dtype)
    axes = _v.normalize_axes(broadcast_axes, arr.ndim)
    o = None if out is None else _v.check_out(out, arr.shape, arr.dtype)
    want_mask = _v.check_flag(return_mask, "return_mask")
    mshape, n_mask = _mask_layout(arr.shape, axes)
    return AlphaPlan(arr, pf, train, seed, off, axes, mshape, n_mask, o, want_mask)


def bias_shape_for_backward(
    bias: object, shape: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The shape of ``grad_bias`` for ``dropout_add_backward``'s ``bias``: None for
    ``False``; the last axis of ``grad_y`` (``()`` for a 0-d one) for ``True``; or a
    shape given as a tuple of ints, which must equal trailing axes of ``grad_y``."""
    if bias is False or bias is None:
        return None
    if bias is True:
        return shape[-1:]
    if isinstance(bias, (bool, np.bool_)):
        return shape[-1:] if bias else None
    if not isinstance(bias, tuple):
        raise TypeError(
            "bias must be True, False or the bias's shape (a tuple of ints), got "
            f"{bias!r}"
        )
    try:
        bshape = tuple(operator.index(s) for s in bias)
    except TypeError:
        raise TypeError(
            f"bias must be a tuple of ints when a shape, got {bias!r}"
        ) from None
    if len(bshape) > len(shape) or bshape != shape[len(shape) - len(bshape) :]:
        raise ValueError(
            f"bias shape {bshape} must equal the trailing axes of grad_y's shape {shape}"
        )
    return bshape
