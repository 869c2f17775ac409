"""Alpha dropout for self-normalising networks (docs/spec.md section 10), native
front-end. The backward pass is ``dropout_backward`` with the alpha mask (or
``mode="alpha"``)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from . import _core, _scales, _window
from . import _validate as _v
from . import _validate_fused as _vf
from ._calls import WANT_MASK as _WANT_MASK
from ._calls import dask_module as _dask
from ._calls import finish as _finish
from ._calls import is_dask as _is_dask
from ._calls import same_memory as _same_memory
from ._calls import target as _target
from ._calls import window_result as _window_result
from ._fused import _readable
from ._interop import keeps_array_type
from ._seed import resolve_seed
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import (
        ArrayT,
        Axes,
        FloatArray,
        Offset,
        Probability,
        Seed,
        WindowArg,
    )

__all__ = ["alpha_dropout"]

_alpha = _core.alpha


@overload
def alpha_dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    training: bool = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[False] = ...,
    window: WindowArg | None = ...,
) -> ArrayT: ...
@overload
def alpha_dropout(
    x: ArrayT,
    p: Probability = ...,
    *,
    training: bool = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: ArrayT | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[ArrayT, Mask | None]: ...
@overload
def alpha_dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    training: bool = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[False] = ...,
    window: WindowArg | None = ...,
) -> FloatArray: ...
@overload
def alpha_dropout(
    x: npt.ArrayLike,
    p: Probability = ...,
    *,
    training: bool = ...,
    seed: Seed = ...,
    offset: Offset = ...,
    broadcast_axes: Axes = ...,
    out: FloatArray | None = ...,
    return_mask: Literal[True],
    window: WindowArg | None = ...,
) -> tuple[FloatArray, Mask | None]: ...
def alpha_dropout(
    x: Any,
    p: Any = 0.5,
    *,
    training: bool = True,
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: Axes = None,
    out: Any = None,
    return_mask: bool = False,
    window: WindowArg | None = None,
) -> Any:
    """Alpha dropout (Klambauer et al. 2017), as PyTorch's ``F.alpha_dropout``
    and Keras's ``AlphaDropout`` compute it.

    With ``alpha' = -1.7580993408473766``, ``a = ((1 - p) * (1 + p *
    alpha'**2)) ** -0.5``, ``b = -a * alpha' * p`` and ``d = a * alpha' + b``
    (float64), each rounded once to the dtype as ``A, B, D``: kept elements
    become ``(x * A) + B`` (two roundings, no fused multiply-add), dropped ones
    ``D`` whatever ``x`` was. ``p`` must be in [0, 1). Evaluation returns ``x``
    unchanged (a copy). ``broadcast_axes`` gives feature alpha dropout (one
    decision per feature map). The mask records ``mode="alpha"``; its backward
    pass is ``dropout_backward(grad_y, mask)``: ``grad_y * A`` where kept,
    ``+0.0`` where dropped. ``window`` as in :func:`fastdropout.dropout`
    (docs/spec.md section 11).
    """
    if training is True and broadcast_axes is None:
        # A plain call (see _core.alpha), also of a block with a plain window, is
        # checked, allocated and run in C++; None means "not plain": the general
        # path below validates and raises.
        s: Any = secrets.randbits(64) if seed is None else seed
        if window is None:
            want = _WANT_MASK if return_mask is True else return_mask  # (y, Mask)
            fast = _alpha(x, p, s, offset, out, want, None)
        else:  # (y, bits): the Mask records the window
            fast = _window_result(
                _alpha(x, p, s, offset, out, return_mask, window),
                return_mask, p, "alpha", s, offset, window,
            )  # fmt: skip
        if fast is not None:
            return fast
    if _is_dask(x):  # lazy, block by block
        return _dask().alpha_dropout(
            x, p, training=training, seed=seed, offset=offset,
            broadcast_axes=broadcast_axes, out=out, return_mask=return_mask,
            window=window,
        )  # fmt: skip
    return _alpha_dropout_general(
        x, p, training, seed, offset, broadcast_axes, out, return_mask, window
    )


@keeps_array_type("x")
def _alpha_dropout_general(
    x: Any,
    p: Any,
    training: Any,
    seed: Any,
    offset: Any,
    broadcast_axes: Any,
    out: Any,
    return_mask: Any,
    window: Any,
) -> Any:
    """``alpha_dropout`` for every call but the plain ones (any array type)."""
    plan = _vf.plan_alpha(
        x, p, training, seed, offset, broadcast_axes, out, return_mask
    )
    xa = plan.x
    win = None if window is None else _window.check_window(window, xa.shape)
    y = _target(xa, plan.out)
    if not plan.training:  # x unchanged, as a copy (or into out)
        if not _same_memory(xa, y):
            np.copyto(y, np.array(xa, copy=True) if np.may_share_memory(xa, y) else xa)
        y = _finish(y, plan.out)
        return (y, None) if plan.return_mask else y
    s = resolve_seed(plan.seed)
    bits = (
        np.empty((plan.n_mask + 7) >> 3, np.uint8)
        if (plan.return_mask or plan.axes)
        else None
    )
    coef_a, coef_b, coef_d = _scales.alpha_coefficients(plan.p, xa.dtype)
    coefs = (float(coef_a), float(coef_b), float(coef_d))
    src = _readable(xa, y)
    t = _v.threshold(plan.p)
    if win is None:
        _core.alpha_forward(src, y, s, plan.offset, t, *coefs, bits, plan.axes)
    else:
        first, strides = _window.layout(win, plan.axes, plan.offset)
        _core.window_alpha_forward(
            src, y, s, first, strides, t, *coefs, bits, plan.axes
        )
    y = _finish(y, plan.out)
    if not plan.return_mask:
        return y
    assert bits is not None
    return y, Mask._new(
        bits,
        plan.mask_shape,
        plan.n_mask,
        plan.p,
        "alpha",
        s,
        plan.offset,
        plan.axes,
        win,
    )
