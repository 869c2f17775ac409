"""``spatial_dropout``: dropout of whole feature maps, through the C++ core's
one-call fast path for plain calls and the general path (``_calls``) for the rest.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from . import _core, _window
from . import _validate as _v
from ._calls import CHANNELS_LAST as _CHANNELS_LAST
from ._calls import WANT_MASK as _WANT_MASK
from ._calls import check_window as _check_window
from ._calls import dask_module as _dask
from ._calls import forward_planned as _forward
from ._calls import is_dask as _is_dask
from ._interop import keeps_array_type
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import (
        ArrayT,
        DataFormat,
        FloatArray,
        Mode,
        Offset,
        Probability,
        Seed,
        WindowArg,
    )

__all__ = ["spatial_dropout"]

_spatial = _core.spatial
_spatial_window = _core.spatial_window


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
