"""fastdropout for ``dask.array`` (docs/spec.md section 11).

The same functions as ``fastdropout`` for dask arrays, lazy and chunk-invariant: the
result is bit for bit the in-memory ``fastdropout`` result on the whole array, for any
chunking, because each block is computed with ``window=(global_shape, start)`` (its
mask elements are numbered over the whole array's mask). One task per block, built
with ``map_blocks``; the seed is resolved once here, on the client (a
``numpy.random.Generator`` or ``None`` becomes an int before the graph is built), so
every task is a pure function of its block and a retried or recomputed task gives
identical bits. The backward pass regenerates the mask per block from
``(seed, offset)``: nothing but a few integers travels with a task.

``return_mask=True`` returns ``(y, LazyMask)``: no bits are stored (that would mean
materialising them), but the :class:`LazyMask` records everything the backward pass
needs (seed, offset, p, mode, broadcast axes, mask shape).

Needs ``dask[array]`` (``pip install "fastdropout[dask]"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "fastdropout.dask needs dask.array, which is not installed: "
        'pip install "fastdropout[dask]" (or pip install "dask[array]")',
        name="dask",
    ) from _exc

from . import _alpha, _api, _fused, _seed, _spatial_api
from . import _validate as _v
from . import _validate_fused as _vf
from ._validate import DEFAULT_MODE

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.floating[Any]]

# The NumPy functions each task calls (untyped here: the arguments were validated
# on the client, in their checked forms).
_dropout_np: Any = _api.dropout
_spatial_dropout_np: Any = _spatial_api.spatial_dropout
_dropout_backward_np: Any = _api.dropout_backward
_alpha_dropout_np: Any = _alpha.alpha_dropout
_dropout_add_np: Any = _fused.dropout_add

__all__ = [
    "LazyMask",
    "alpha_dropout",
    "dropout",
    "dropout_add",
    "dropout_backward",
    "spatial_dropout",
]


@dataclass(frozen=True)
class LazyMask:
    """What a lazy forward call drew: enough to regenerate its mask, block by block.

    Returned by ``return_mask=True`` on dask arrays instead of a
    :class:`fastdropout.Mask` (whose bits would have to be computed and stored).
    Pass it to :func:`dropout_backward`; ``p``, ``mode``, ``seed``, ``offset`` and
    ``broadcast_axes`` mean what they mean on a ``Mask``; ``shape`` is the mask
    shape of the whole array (its shape with the broadcast axes set to 1).
    """

    shape: tuple[int, ...]
    p: float
    mode: str
    seed: int
    offset: int
    broadcast_axes: tuple[int, ...]


# ---- checks ---------------------------------------------------------------------------


def _check_dask_array(x: object, name: str) -> da.Array:
    if not isinstance(x, da.Array):
        raise TypeError(
            f"fastdropout.dask: {name} must be a dask.array.Array, got "
            f"{type(x).__name__}; use fastdropout's NumPy functions for NumPy arrays"
        )
    _v.check_array(np.empty(0, x.dtype), name)  # the dtype check and its message
    for axis, sizes in enumerate(x.chunks):
        if any(math.isnan(c) for c in sizes):
            raise ValueError(
                f"{name} has chunks of unknown size along axis {axis} ({sizes}); "
                "fastdropout.dask needs every block's position in the array: call "
                f"{name}.compute_chunk_sizes() first"
            )
    return x


def _proxy(x: da.Array) -> FloatArray:
    """A NumPy stand-in of ``x``'s shape and dtype holding no memory (a broadcast
    scalar): the NumPy functions' own validation runs on it, so a lazy call gets
    the same errors, in the same order, as the in-memory call."""
    shape = tuple(int(n) for n in x.shape)
    return np.broadcast_to(np.zeros((), x.dtype), shape)


def _aligned(a: object, name: str, like: da.Array) -> da.Array:
    """``a`` (a dask array or array-like) as a dask array chunked as ``like`` on the
    trailing axes it shares with it (``residual``, ``bias``)."""
    if not isinstance(a, da.Array):
        a = da.asarray(a)  # type: ignore[no-untyped-call]
    arr = _check_dask_array(a, name)
    if arr.ndim > like.ndim or arr.shape != like.shape[like.ndim - arr.ndim :]:
        return arr  # the shape check names the problem
    out: da.Array = arr.rechunk(  # type: ignore[no-untyped-call]
        like.chunks[like.ndim - arr.ndim :]
    )
    return out


def _no_out(out: object) -> None:
    if out is not None:
        raise TypeError(
            "out= is not supported for dask arrays (they are immutable); "
            "the result is a new lazy array"
        )


def _no_window(window: object) -> None:
    if window is not None:
        raise ValueError(
            "window= is not taken for dask arrays: fastdropout.dask gives each block "
            "its window itself"
        )


def _window_of(block_info: dict[Any, Any] | None) -> tuple[Any, Any]:
    """The block's ``(global_shape, start)`` from dask's ``block_info`` (entry 0:
    the first array argument, ``x``)."""
    if block_info is None:  # pragma: no cover - map_blocks always passes it
        raise RuntimeError("fastdropout.dask: the block's position is unknown")
    info = block_info[0]
    return tuple(info["shape"]), tuple(start for start, _ in info["array-location"])


# ---- per-block tasks (module-level, so they pickle by reference) ----------------------


def _forward_block(
    block: FloatArray,
    p: float,
    training: bool,
    mode: str,
    seed: int,
    offset: int,
    axes: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> FloatArray:
    return _dropout_np(  # type: ignore[no-any-return]
        block,
        p,
        training=training,
        mode=mode,
        seed=seed,
        offset=offset,
        broadcast_axes=axes or None,
        window=_window_of(block_info),
    )


def _spatial_block(
    block: FloatArray,
    p: float,
    data_format: str,
    training: bool,
    mode: str,
    seed: int,
    offset: int,
    block_info: dict[Any, Any] | None = None,
) -> FloatArray:
    return _spatial_dropout_np(  # type: ignore[no-any-return]
        block,
        p,
        data_format=data_format,
        training=training,
        mode=mode,
        seed=seed,
        offset=offset,
        window=_window_of(block_info),
    )


def _alpha_block(
    block: FloatArray,
    p: float,
    training: bool,
    seed: int,
    offset: int,
    axes: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> FloatArray:
    return _alpha_dropout_np(  # type: ignore[no-any-return]
        block,
        p,
        training=training,
        seed=seed,
        offset=offset,
        broadcast_axes=axes or None,
        window=_window_of(block_info),
    )


def _add_block(
    block: FloatArray,
    residual: FloatArray,
    *bias: FloatArray,
    p: float,
    training: bool,
    mode: str,
    seed: int,
    offset: int,
    axes: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> FloatArray:
    return _dropout_add_np(  # type: ignore[no-any-return]
        block,
        residual,
        p,
        bias=bias[0] if bias else None,
        training=training,
        mode=mode,
        seed=seed,
        offset=offset,
        broadcast_axes=axes or None,
        window=_window_of(block_info),
    )


def _backward_block(
    block: FloatArray,
    p: float,
    mode: str,
    seed: int,
    offset: int,
    axes: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> FloatArray:
    return _dropout_backward_np(  # type: ignore[no-any-return]
        block,
        p=p,
        mode=mode,
        seed=seed,
        offset=offset,
        broadcast_axes=axes or None,
        window=_window_of(block_info),
    )


def _map(fn: Any, arrays: tuple[da.Array, ...], name: str, **kw: Any) -> da.Array:
    x = arrays[0]
    meta = np.empty((0,) * x.ndim, x.dtype)
    # deterministic keys: the same call on the same arrays gives the same keys (dask
    # then shares the work); another seed or offset gives other keys
    token = tokenize(*arrays, *sorted(kw.items()))
    y: da.Array = da.map_blocks(  # type: ignore[no-untyped-call]
        fn, *arrays, dtype=x.dtype, meta=meta, name=f"fastdropout-{name}-{token}", **kw
    )
    return y


def _result(
    y: da.Array,
    want_mask: bool,
    training: bool,
    mask_shape: tuple[int, ...],
    *rest: Any,
) -> Any:
    if not want_mask:
        return y
    if not training:
        return y, None
    return y, LazyMask(mask_shape, *rest)


# ---- public functions -----------------------------------------------------------------


def dropout(
    x: da.Array,
    p: float = 0.5,
    *,
    training: bool = True,
    mode: str = "inverted",
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: None = None,
    return_mask: bool = False,
    window: None = None,
) -> Any:
    """Lazy :func:`fastdropout.dropout` of the dask array ``x``: one task per block,
    bit for bit the in-memory result on the whole array, for any chunking.

    Arguments as :func:`fastdropout.dropout`; ``seed=None`` or a Generator is drawn
    once, now. ``out`` and ``window`` are not taken (dask arrays are immutable;
    windows are made per block). ``return_mask=True`` gives ``(y, LazyMask)``
    (``(y, None)`` in evaluation). Chunks of unknown size are a ValueError.
    """
    _no_out(out)
    _no_window(window)
    arr = _check_dask_array(x, "x")
    plan = _v.plan_forward(
        _proxy(arr), p, training, mode, seed, offset, broadcast_axes, None, return_mask
    )
    s = _seed.resolve_seed(plan.seed) if plan.training else 0  # once, on the client
    kw: dict[str, Any] = {
        "p": plan.p,
        "training": plan.training,
        "mode": plan.mode,
        "seed": s,
    }
    kw.update(offset=plan.offset, axes=plan.axes)
    y = _map(_forward_block, (arr,), "dropout", **kw)
    return _result(
        y, plan.return_mask, plan.training, plan.mask_shape,
        plan.p, plan.mode, s, plan.offset, plan.axes,
    )  # fmt: skip


def spatial_dropout(
    x: da.Array,
    p: float = 0.5,
    *,
    data_format: str = "channels_first",
    training: bool = True,
    mode: str = "inverted",
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    out: None = None,
    return_mask: bool = False,
    window: None = None,
) -> Any:
    """Lazy :func:`fastdropout.spatial_dropout` of the dask array ``x`` (3-, 4- or
    5-D); blocks may split N, C and the spatial axes. As :func:`dropout`."""
    _no_out(out)
    _no_window(window)
    arr = _check_dask_array(x, "x")
    plan = _v.plan_forward(
        _proxy(arr), p, training, mode, seed, offset, None, None, return_mask,
        spatial=True, data_format=data_format,
    )  # fmt: skip
    s = _seed.resolve_seed(plan.seed) if plan.training else 0
    kw: dict[str, Any] = {
        "p": plan.p,
        "data_format": data_format,
        "training": plan.training,
    }
    kw.update(mode=plan.mode, seed=s, offset=plan.offset)
    y = _map(_spatial_block, (arr,), "spatial-dropout", **kw)
    return _result(
        y, plan.return_mask, plan.training, plan.mask_shape,
        plan.p, plan.mode, s, plan.offset, plan.axes,
    )  # fmt: skip


def alpha_dropout(
    x: da.Array,
    p: float = 0.5,
    *,
    training: bool = True,
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: None = None,
    return_mask: bool = False,
    window: None = None,
) -> Any:
    """Lazy :func:`fastdropout.alpha_dropout` of the dask array ``x``; the
    ``LazyMask`` records ``mode="alpha"``. As :func:`dropout`."""
    _no_out(out)
    _no_window(window)
    arr = _check_dask_array(x, "x")
    plan = _vf.plan_alpha(
        _proxy(arr), p, training, seed, offset, broadcast_axes, None, return_mask
    )
    s = _seed.resolve_seed(plan.seed) if plan.training else 0
    kw: dict[str, Any] = {"p": plan.p, "training": plan.training, "seed": s}
    kw.update(offset=plan.offset, axes=plan.axes)
    y = _map(_alpha_block, (arr,), "alpha-dropout", **kw)
    return _result(
        y, plan.return_mask, plan.training, plan.mask_shape,
        plan.p, "alpha", s, plan.offset, plan.axes,
    )  # fmt: skip


def dropout_add(
    x: da.Array,
    residual: Any,
    p: float = 0.5,
    *,
    bias: Any = None,
    training: bool = True,
    mode: str = "inverted",
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: None = None,
    return_mask: bool = False,
    window: None = None,
) -> Any:
    """Lazy :func:`fastdropout.dropout_add` of the dask array ``x``: ``residual``
    (x's shape) and ``bias`` (x's trailing axes) may be dask or NumPy arrays; they
    are rechunked to ``x``'s chunks, so each task gets its blocks. As
    :func:`dropout`. (``dropout_add_backward`` has no lazy form: its ``grad_bias``
    is a sequential float64 sum over all rows; use :func:`dropout_backward` for
    ``grad_x``.)"""
    _no_out(out)
    _no_window(window)
    arr = _check_dask_array(x, "x")
    res = _aligned(residual, "residual", arr)
    b = None if bias is None else _aligned(bias, "bias", arr)
    plan = _vf.plan_add(
        _proxy(arr), _proxy(res), p, None if b is None else _proxy(b), training, mode,
        seed, offset, broadcast_axes, None, return_mask,
    )  # fmt: skip
    s = _seed.resolve_seed(plan.seed) if plan.training else 0
    kw: dict[str, Any] = {
        "p": plan.p,
        "training": plan.training,
        "mode": plan.mode,
        "seed": s,
    }
    kw.update(offset=plan.offset, axes=plan.axes)
    arrays = (arr, res) if b is None else (arr, res, b)
    y = _map(_add_block, arrays, "dropout-add", **kw)
    return _result(
        y, plan.return_mask, plan.training, plan.mask_shape,
        plan.p, plan.mode, s, plan.offset, plan.axes,
    )  # fmt: skip


def dropout_backward(
    grad_y: da.Array,
    mask: LazyMask | None = None,
    p: float | None = None,
    *,
    mode: str = DEFAULT_MODE,
    seed: int | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: None = None,
    window: None = None,
) -> da.Array:
    """Lazy :func:`fastdropout.dropout_backward` of the dask array ``grad_y``: each
    block regenerates its part of the forward call's mask.

    Pass the :class:`LazyMask` of the forward call, or ``p`` with the integer
    ``seed`` and the ``offset`` (and ``broadcast_axes``; for spatial dropout the
    spatial axes; ``mode="alpha"`` for alpha dropout) it used. A
    :class:`fastdropout.Mask` is a TypeError here.
    """
    _no_out(out)
    _no_window(window)
    g = _check_dask_array(grad_y, "grad_y")
    if mask is not None:
        if not isinstance(mask, LazyMask):
            raise TypeError(
                "mask must be the fastdropout.dask.LazyMask of a lazy forward call, "
                f"got {type(mask).__name__}; for a fastdropout.Mask use "
                "fastdropout.dropout_backward on a NumPy array"
            )
        if p is not None or seed is not None or broadcast_axes is not None or offset:
            raise ValueError(
                "pass either a mask or p, seed, offset (and broadcast_axes) to "
                "regenerate it, not both"
            )
        if mode is not DEFAULT_MODE and _v.check_mode(mode) != mask.mode:
            raise ValueError(
                f"mode={mode!r} was given, but the mask was made with mode="
                f"{mask.mode!r}; with a mask, mode comes from it"
            )
        shape = tuple(int(n) for n in g.shape)
        if any(a >= g.ndim for a in mask.broadcast_axes) or mask.shape != (
            _v.mask_shape_of(shape, mask.broadcast_axes)
        ):
            raise ValueError(
                f"the mask has shape {mask.shape}, which does not fit grad_y of shape "
                f"{g.shape}"
            )
        p, mode, seed, offset = mask.p, mask.mode, mask.seed, mask.offset
        broadcast_axes = mask.broadcast_axes or None
    plan = _v.plan_backward(
        _proxy(g), None, p, mode, seed, offset, broadcast_axes, None
    )
    kw: dict[str, Any] = {
        "p": plan.p,
        "mode": plan.mode,
        "seed": plan.seed,
        "offset": plan.offset,
    }
    y = _map(_backward_block, (g,), "dropout-backward", **kw, axes=plan.axes)
    return y
