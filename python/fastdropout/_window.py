"""Windows: one array's random stream, computed block by block (docs/spec.md section 11).

``window=(global_shape, start)`` says that the array passed is the block
``X[start[0]:start[0] + shape[0], ...]`` of an array ``X`` of ``global_shape``. Mask
elements are then numbered in C order over the *global* mask shape (``global_shape``
with the broadcast axes set to 1), so every block gets the bits that the whole-array
call gives at its positions, however ``X`` is cut.

This module validates the argument and turns it into what the native core and the
reference need: the stream position of the window's first mask element and, per axis,
the stride of that axis in the global mask (both modulo 2**64, as stream positions
wrap). Pure Python (importable without the compiled core): ``_api``, ``reference``
and ``mask`` use it.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy.typing as npt

__all__ = [
    "Window",
    "check_backward",
    "check_window",
    "global_indices",
    "layout",
]

_MOD64 = (1 << 64) - 1
_MAX_DIM = (1 << 63) - 1


class Window(NamedTuple):
    """A validated window: the global array's shape and the block's start in it."""

    global_shape: tuple[int, ...]
    start: tuple[int, ...]


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"window: {what} must be a sequence of ints, got {value!r} "
            f"of type {type(value).__name__}"
        )
    items: list[int] = []
    for item in cast("Iterable[object]", value):
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"window: {what} must contain ints, got {item!r}")
        try:
            items.append(operator.index(item))  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"window: {what} must contain ints, got {item!r} "
                f"of type {type(item).__name__}"
            ) from None
    return tuple(items)


def check_window(window: object, shape: tuple[int, ...]) -> Window:
    """``window`` as a :class:`Window` for a block of ``shape``.

    TypeError when it is not a pair of int sequences; ValueError (naming the axis and
    the values) for wrong lengths, negative sizes or starts, and a block that does
    not fit inside ``global_shape`` at ``start``.
    """
    if isinstance(window, Window):
        gshape, start = window
    else:
        if isinstance(window, (str, bytes)) or not hasattr(window, "__iter__"):
            raise TypeError(
                "window must be a pair (global_shape, start), got "
                f"{window!r} of type {type(window).__name__}"
            )
        pair = tuple(cast("Iterable[object]", window))
        if len(pair) != 2:
            raise ValueError(
                "window must be a pair (global_shape, start), got "
                f"{len(pair)} items: {window!r}"
            )
        gshape = _int_tuple(pair[0], "global_shape")
        start = _int_tuple(pair[1], "start")
    ndim = len(shape)
    if len(gshape) != ndim or len(start) != ndim:
        raise ValueError(
            f"window: global_shape {gshape} and start {start} must each have one "
            f"entry per axis of the block, which has shape {shape} ({ndim} axes)"
        )
    for axis, (g, s, n) in enumerate(zip(gshape, start, shape)):
        if not 0 <= g <= _MAX_DIM:
            raise ValueError(
                f"window: global_shape[{axis}] must be in [0, 2**63), got {g}"
            )
        if s < 0 or s + n > g:
            raise ValueError(
                f"window: the block does not fit along axis {axis}: start {s} + "
                f"block size {n} must lie in [0, global_shape[{axis}] = {g}]"
            )
    return Window(gshape, start)


def check_backward(
    window: object, has_mask: bool, shape: tuple[int, ...]
) -> Window | None:
    """The ``window`` of a ``dropout_backward`` call on ``grad_y`` of ``shape``: it
    regenerates a block's mask, so it comes without a mask (ValueError otherwise)."""
    if window is None:
        return None
    if has_mask:
        raise ValueError(
            "pass either a mask or p, seed, offset and window to regenerate it, not "
            "both (a mask from a block call already covers just that block)"
        )
    return check_window(window, shape)


def layout(
    win: Window, axes: tuple[int, ...], offset: int
) -> tuple[int, tuple[int, ...]]:
    """``(first, strides)``: the stream position of the window's first mask element
    (``offset`` plus the start's global mask index) and the stride of each axis in
    the global mask (0 on the broadcast ``axes``), all modulo 2**64."""
    strides = [0] * len(win.global_shape)
    acc = 1
    for k in reversed(range(len(win.global_shape))):
        if k not in axes:
            strides[k] = acc & _MOD64
            acc *= win.global_shape[k]
    first = offset
    for k, s in enumerate(win.start):
        if k not in axes:
            first += s * strides[k]
    return first & _MOD64, tuple(strides)


def global_indices(
    mask_shape: tuple[int, ...], strides: tuple[int, ...], begin: int, end: int
) -> npt.NDArray[np.uint64]:
    """Global mask indices (mod 2**64, relative to the window's first element) of
    window mask elements ``begin .. end-1`` (C order over ``mask_shape``): the
    reference's way to the stream positions, written to be read."""
    flat = np.arange(begin, end, dtype=np.uint64)
    index = np.zeros(end - begin, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as the stream does
        for n, s in zip(reversed(mask_shape), reversed(strides)):
            coord = flat % np.uint64(n)
            flat //= np.uint64(n)
            index += coord * np.uint64(s)
    return index
