"""The executable specification: fastdropout in pure NumPy.

Written to be read, not to be fast. It exports the same public functions and
layers as ``fastdropout``, validates arguments with the same code
(``_validate.py``), and its results are the contract the native core is held
to bit for bit (``tests/test_dropout.py``). Section numbers refer to docs/spec.md.

Memory stays bounded: the random stream and the values are processed in chunks
of ``CHUNK`` elements, so temporaries never exceed a few MiB beyond the output
and the one-bit-per-element mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from . import _bfloat16, _scales, _window
from . import _layer_base as _layers
from . import _validate as _v
from . import _validate_fused as _vf
from ._interop import keeps_array_type
from ._rowsum import round_sums, row_sums
from ._seed import resolve_seed
from ._validate import DEFAULT_MODE
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.floating[Any]]
    U32Array = npt.NDArray[np.uint32]
    U64Array = npt.NDArray[np.uint64]

__all__ = [
    "CHUNK",
    "AlphaDropout",
    "Dropout",
    "DropoutAdd",
    "Mask",
    "SpatialDropout",
    "alpha_dropout",
    "dropout",
    "dropout_add",
    "dropout_add_backward",
    "dropout_backward",
    "keep",
    "mask_bits",
    "philox",
    "spatial_dropout",
    "window_mask_bits",
]


def __dir__() -> list[str]:
    """Only the public API (``__all__``) shows in ``dir(fastdropout.reference)``."""
    return sorted(__all__)


#: Elements per chunk; a multiple of 8 so that packed mask bytes of
#: consecutive chunks concatenate into the mask of the whole array.
CHUNK = 1 << 18

# --------------------------------------------------------------------------
# docs/spec.md section 2: Philox4x32-10 (Salmon et al., SC11; Random123's philox.h)
# --------------------------------------------------------------------------

_M0 = np.uint64(0xD2511F53)  # multiplier applied to counter word 0
_M1 = np.uint64(0xCD9E8D57)  # multiplier applied to counter word 2
_W0 = np.uint64(0x9E3779B9)  # Weyl increment of key word 0 (golden ratio)
_W1 = np.uint64(0xBB67AE85)  # Weyl increment of key word 1 (sqrt(3) - 1)
_LO32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_ROUNDS = 10


def philox(counter: Any, key: Any) -> U32Array:
    """Philox4x32-10 of the counter ``(c0, c1, c2, c3)`` under ``(k0, k1)``.

    Each word may be an int or an array of 32-bit values (they broadcast);
    the result has the broadcast shape plus a last axis of the four output
    words, as ``uint32``. The words are held in ``uint64`` so that the 32x32
    product is exact: ``(a * M) >> 32`` is mulhi and ``(a * M) & 0xFFFFFFFF``
    is mullo.
    """
    words = np.broadcast_arrays(
        *(np.asarray(w, dtype=np.uint64) for w in (*counter, *key))
    )
    c0, c1, c2, c3, k0, k1 = (w & _LO32 for w in words)
    for rnd in range(_ROUNDS):
        if rnd > 0:  # the first round uses the key as given (unbumped)
            k0 = (k0 + _W0) & _LO32
            k1 = (k1 + _W1) & _LO32
        prod0 = c0 * _M0
        prod1 = c2 * _M1
        hi0, lo0 = prod0 >> _SHIFT32, prod0 & _LO32
        hi1, lo1 = prod1 >> _SHIFT32, prod1 & _LO32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _key(seed: int) -> tuple[int, int]:
    # docs/spec.md section 2: key = (seed & 0xFFFFFFFF, seed >> 32)
    return seed & 0xFFFFFFFF, seed >> 32


def _random_words(seed: int, first: int, count: int) -> U32Array:
    """The words ``r`` at stream positions ``first, first + 1, ...`` (mod 2**64).

    docs/spec.md section 2: position ``j`` is word ``j % 4`` of block ``j // 4``, whose counter
    is ``(b & 0xFFFFFFFF, b >> 32, 0, 0)``. Positions wrap modulo 2**64, which
    is a multiple of 4, so blocks wrap modulo 2**62.
    """
    first_block, first_word = first >> 2, first & 3
    n_blocks = (first_word + count + 3) // 4
    blocks = (np.uint64(first_block) + np.arange(n_blocks, dtype=np.uint64)) & (
        np.uint64((1 << 62) - 1)
    )
    out = philox((blocks & _LO32, blocks >> _SHIFT32, 0, 0), _key(seed))
    return out.reshape(-1)[first_word : first_word + count]


def mask_bits(seed: int, offset: int, n: int, p: float) -> npt.NDArray[np.uint8]:
    """Packed decisions (1 = kept, docs/spec.md section 5) of mask elements ``0 .. n-1``.

    Element ``i`` is at stream position ``offset + i`` (mod 2**64) and is kept
    iff its word ``r >= round_half_even(p * 2**32)``, compared as 64-bit
    integers (docs/spec.md section 2).
    """
    seed = _v.check_offset(seed, "seed")
    offset = _v.check_offset(offset)
    t = np.uint64(_v.threshold(_v.check_p(p)))
    parts = [np.zeros(0, np.uint8)]
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        r = _random_words(seed, (offset + start) % (1 << 64), count)
        kept = r.astype(np.uint64) >= t
        parts.append(np.packbits(kept, bitorder="little"))  # zero-padded tail
    return np.concatenate(parts)


def keep(
    seed: int, offset: int, index: npt.ArrayLike, p: float
) -> npt.NDArray[np.bool_]:
    """Decisions for arbitrary mask indices (True = kept), e.g. to sample-check
    a huge array: the decision of element ``index`` of a mask drawn at
    ``(seed, offset)`` with drop probability ``p`` (docs/spec.md section 2)."""
    seed = _v.check_offset(seed, "seed")
    offset = _v.check_offset(offset)
    t = np.uint64(_v.threshold(_v.check_p(p)))
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.uint64)
    with np.errstate(over="ignore"):
        j = np.uint64(offset) + idx  # stream position, wraps modulo 2**64
    j = np.asarray(j, dtype=np.uint64)
    b = j >> np.uint64(2)
    words = philox((b & _LO32, b >> _SHIFT32, 0, 0), _key(seed))
    w = (j & np.uint64(3)).astype(np.intp)
    r = np.take_along_axis(words, w[..., np.newaxis], axis=-1)[..., 0]
    return np.asarray(r.astype(np.uint64) >= t)


def window_mask_bits(
    seed: int,
    offset: int,
    window: _window.Window,
    axes: tuple[int, ...],
    mask_shape: tuple[int, ...],
    p: float,
) -> npt.NDArray[np.uint8]:
    """Packed decisions of a block's window of the global mask (docs/spec.md
    section 11): window element ``c`` (C order over ``mask_shape``, the block's
    shape with the broadcast ``axes`` set to 1) is global mask element
    ``start + c``, numbered in C order over ``global_shape`` with the broadcast
    axes set to 1, at stream position ``offset`` plus that number."""
    first, strides = _window.layout(window, axes, offset)
    n = 1
    for size in mask_shape:
        n *= size
    parts = [np.zeros(0, np.uint8)]
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        index = _window.global_indices(mask_shape, strides, start, stop)
        parts.append(np.packbits(keep(seed, first, index, p), bitorder="little"))
    return np.concatenate(parts)


# --------------------------------------------------------------------------
# docs/spec.md sections 3 and 4: applying a mask to values
# --------------------------------------------------------------------------


def _mask_index(
    i: npt.NDArray[np.int64], shape: tuple[int, ...], axes: tuple[int, ...]
) -> npt.NDArray[np.int64]:
    """Mask element of each C-order flat index ``i`` of an array of ``shape``.

    docs/spec.md section 4: the mask shape is ``shape`` with the broadcast axes set to 1, so
    an element's mask coordinates are its own with those axes set to 0.
    """
    m = np.zeros_like(i)
    m_stride = 1
    for ax in reversed(range(len(shape))):
        coord = i % shape[ax]
        i = i // shape[ax]
        if ax not in axes:
            m += coord * m_stride
            m_stride *= shape[ax]
    return m


def _mul(a: FloatArray, s: Any) -> FloatArray:
    """``a * s`` in ``a``'s dtype. docs/spec.md section 8: for bfloat16, widened to float32 (exact),
    multiplied there and rounded once by the project's rounding (NaN stays a
    quiet NaN); NumPy's own product for the other dtypes."""
    if _bfloat16.is_bfloat16(a.dtype):
        return _bfloat16.from_float32(
            _bfloat16.to_float32(a) * _bfloat16.to_float32(np.asarray(s, a.dtype))
        )
    return a * s  # type: ignore[no-any-return]


def _add(a: FloatArray, b: Any) -> FloatArray:
    """``a + b`` in ``a``'s dtype, rounded as :func:`_mul` rounds; where ``a`` is
    NaN the sum is ``a``, quieted, whatever ``b`` is (docs/spec.md section 9: NumPy
    returns either NaN of NaN + NaN, even within one array)."""
    if _bfloat16.is_bfloat16(a.dtype):
        s = _bfloat16.from_float32(
            _bfloat16.to_float32(a) + _bfloat16.to_float32(np.asarray(b, a.dtype))
        )
    else:
        s = a + b
    nan = np.isnan(a)
    if nan.any():
        u = np.dtype(f"u{a.dtype.itemsize}")
        quiet = u.type(_scales.quiet_bit(a.dtype))
        first = (np.broadcast_to(a, s.shape).view(u) | quiet).view(a.dtype)
        s = np.where(np.broadcast_to(nan, s.shape), first, s)
    return s


def _kept(
    bits: npt.NDArray[np.uint8],
    start: int,
    stop: int,
    shape: tuple[int, ...],
    axes: tuple[int, ...],
) -> npt.NDArray[np.bool_]:
    """Decisions of the C-order flat elements ``start .. stop - 1`` of an array of
    ``shape`` (``start`` a multiple of 8 for a dense mask)."""
    if axes:
        m = _mask_index(np.arange(start, stop, dtype=np.int64), shape, axes)
        return np.asarray(((bits[m >> 3] >> (m & 7)) & 1).astype(bool))
    return np.unpackbits(
        bits[start // 8 : (stop + 7) // 8], count=stop - start, bitorder="little"
    ).astype(bool)


def _apply_mask(
    y: FloatArray,
    bits: npt.NDArray[np.uint8],
    axes: tuple[int, ...],
    scale: np.floating[Any],
    scaled: bool,
) -> None:
    """In place on C-contiguous ``y``: ``keep ? (scaled ? y * scale : y) : +0.0``.

    docs/spec.md section 3: a select, not a multiply by zero, so dropped NaN/Inf give +0.0;
    ``y * scale`` is the product in ``y``'s dtype (NumPy's float16 product for
    float16), overflowing to Inf where it must.
    """
    flat = y.reshape(-1)  # a view: y is C-contiguous
    zero = np.zeros((), y.dtype)  # +0.0
    for start in range(0, flat.size, CHUNK):
        stop = min(start + CHUNK, flat.size)
        kept = _kept(bits, start, stop, y.shape, axes)
        v = flat[start:stop]
        with np.errstate(all="ignore"):  # Inf * s, float16 overflow: no warnings
            flat[start:stop] = np.where(kept, _mul(v, scale) if scaled else v, zero)


def _copy_input(y: FloatArray, x: FloatArray) -> None:
    """``y[...] = x``. docs/spec.md section 6: the result is that of ``np.ascontiguousarray(x)``
    even when ``out`` overlaps ``x``. np.copyto does not always cope with a
    partial overlap (1-D arrays of different strides), so read through a copy
    unless ``y`` is ``x`` itself."""
    if np.may_share_memory(x, y) and not (
        x.flags.c_contiguous
        and x.shape == y.shape
        and x.__array_interface__["data"] == y.__array_interface__["data"]
    ):
        x = x.copy()
    np.copyto(y, x)


def _evaluate(x: FloatArray, p: float, mode: str, y: FloatArray) -> FloatArray:
    """docs/spec.md section 3, evaluation: inverted gives ``x``; classic gives ``x * dtype(1 - p)``."""
    if mode == "inverted":
        _copy_input(y, x)
    else:
        with np.errstate(all="ignore"):  # Inf * 0 for p == 1 is NaN, quietly
            y[...] = _mul(np.asarray(x), _v.classic_factor(p, x.dtype))
    return y


# --------------------------------------------------------------------------
# docs/spec.md section 6: the public functions
# --------------------------------------------------------------------------


def _forward(plan: _v.ForwardPlan, window: object = None) -> Any:
    x = plan.x
    win = None if window is None else _window.check_window(window, x.shape)
    y = plan.out if plan.out is not None else np.empty(x.shape, x.dtype)
    if not plan.training:
        _evaluate(x, plan.p, plan.mode, y)
        return (y, None) if plan.return_mask else y
    seed = resolve_seed(plan.seed)
    if win is None:
        bits = mask_bits(seed, plan.offset, plan.n_mask, plan.p)
    else:
        bits = window_mask_bits(
            seed, plan.offset, win, plan.axes, plan.mask_shape, plan.p
        )
    _copy_input(y, x)
    _apply_mask(
        y, bits, plan.axes, _v.inverted_scale(plan.p, x.dtype), plan.mode == "inverted"
    )
    if not plan.return_mask:
        return y
    mask = Mask._new(
        bits,
        plan.mask_shape,
        plan.n_mask,
        plan.p,
        plan.mode,
        seed,
        plan.offset,
        plan.axes,
        win,
    )
    return y, mask


@keeps_array_type("x")
def dropout(
    x: npt.ArrayLike,
    p: float = 0.5,
    *,
    training: bool = True,
    mode: str = "inverted",
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: FloatArray | None = None,
    return_mask: bool = False,
    window: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> Any:
    """Reference of :func:`fastdropout.dropout` (same arguments and result)."""
    plan = _v.plan_forward(
        x, p, training, mode, seed, offset, broadcast_axes, out, return_mask
    )
    return _forward(plan, window)


@keeps_array_type("x")
def spatial_dropout(
    x: npt.ArrayLike,
    p: float = 0.5,
    *,
    data_format: str = "channels_first",
    training: bool = True,
    mode: str = "inverted",
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    out: FloatArray | None = None,
    return_mask: bool = False,
    window: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> Any:
    """Reference of :func:`fastdropout.spatial_dropout` (docs/spec.md section 4)."""
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
    return _forward(plan, window)


@keeps_array_type("grad_y")
def dropout_backward(
    grad_y: npt.ArrayLike,
    mask: Mask | None = None,
    p: float | None = None,
    *,
    mode: str = DEFAULT_MODE,
    seed: int | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: FloatArray | None = None,
    window: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> FloatArray:
    """Reference of :func:`fastdropout.dropout_backward` (docs/spec.md section 3.2)."""
    plan = _v.plan_backward(grad_y, mask, p, mode, seed, offset, broadcast_axes, out)
    win = _window.check_backward(window, plan.mask is not None, plan.g.shape)
    g = plan.g
    y = plan.out if plan.out is not None else np.empty(g.shape, g.dtype)
    if plan.mask is not None:
        bits = plan.mask.bits
    elif win is not None:  # regenerate a block's window of the forward's mask
        bits = window_mask_bits(
            plan.seed, plan.offset, win, plan.axes, plan.mask_shape, plan.p
        )
    else:  # regenerate the forward's mask from (seed, offset)
        bits = mask_bits(plan.seed, plan.offset, plan.n_mask, plan.p)
    _copy_input(y, g)
    scale, scaled = _scales.backward_scale(plan.p, plan.mode, g.dtype)
    _apply_mask(y, bits, plan.axes, _scales.round_scalar(scale, g.dtype), scaled)  # type: ignore[arg-type]
    return y


class Dropout(_layers.DropoutBase):
    __doc__ = _layers.DropoutBase.__doc__
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout_backward)


class SpatialDropout(_layers.SpatialDropoutBase):
    __doc__ = _layers.SpatialDropoutBase.__doc__
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout)
    _spatial_fn: ClassVar[Callable[..., Any]] = staticmethod(spatial_dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout_backward)


# --------------------------------------------------------------------------
# docs/spec.md section 9: fused dropout + residual add
# --------------------------------------------------------------------------


def _bits_of(seed: int, plan: Any, win: _window.Window | None) -> npt.NDArray[np.uint8]:
    """The mask bits of a plan (with ``offset``, ``n_mask``, ``p``, ``axes`` and
    ``mask_shape``): the whole mask, or a block's window of the global mask."""
    if win is None:
        return mask_bits(seed, plan.offset, plan.n_mask, plan.p)
    return window_mask_bits(seed, plan.offset, win, plan.axes, plan.mask_shape, plan.p)


@keeps_array_type("x", "residual", "bias")
def dropout_add(
    x: npt.ArrayLike,
    residual: npt.ArrayLike,
    p: float = 0.5,
    *,
    bias: npt.ArrayLike | None = None,
    training: bool = True,
    mode: str = "inverted",
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: FloatArray | None = None,
    return_mask: bool = False,
    window: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> Any:
    """Reference of :func:`fastdropout.dropout_add`: ``residual +
    select(keep, (x + bias) * s, +0.0)``, one NumPy operation at a time, each
    rounded in the dtype."""
    plan = _vf.plan_add(
        x, residual, p, bias, training, mode, seed, offset, broadcast_axes, out,
        return_mask,
    )
    xa, ra, ba = plan.x, plan.residual, plan.bias
    win = None if window is None else _window.check_window(window, xa.shape)
    dt = xa.dtype
    # Copies first: out may be x or residual.
    xf = np.array(xa, order="C", copy=True).reshape(-1)
    rf = np.array(ra, order="C", copy=True).reshape(-1)
    bf = None if ba is None else np.array(ba, order="C", copy=True).reshape(-1)
    y = plan.out if plan.out is not None else np.empty(xa.shape, dt)
    yf = y.reshape(-1)
    bits = None
    seed_used = 0
    if plan.training:
        seed_used = resolve_seed(plan.seed)
        bits = _bits_of(seed_used, plan, win)
    scale = _scales.inverted_scale(plan.p, dt)
    factor = _scales.classic_factor(plan.p, dt)
    zero = np.zeros((), dt)
    with np.errstate(all="ignore"):
        for start in range(0, xf.size, CHUNK):
            stop = min(start + CHUNK, xf.size)
            t = xf[start:stop]
            if bf is not None:
                t = _add(t, bf[np.arange(start, stop) % bf.size])
            if bits is not None:
                kept = _kept(bits, start, stop, xa.shape, plan.axes)
                if plan.mode == "inverted":
                    t = _mul(t, scale)
                t = np.where(kept, t, zero)
            elif plan.mode == "classic":
                t = _mul(t, factor)
            yf[start:stop] = _add(rf[start:stop], t)
    if not plan.return_mask:
        return y
    if bits is None:
        return y, None
    return y, Mask._new(
        bits, plan.mask_shape, plan.n_mask, plan.p, plan.mode, seed_used,
        plan.offset, plan.axes, win,
    )


@keeps_array_type("grad_y")
def dropout_add_backward(
    grad_y: npt.ArrayLike,
    mask: Mask | None = None,
    p: float | None = None,
    *,
    bias: bool | tuple[int, ...] = False,
    mode: str = DEFAULT_MODE,
    seed: int | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: FloatArray | None = None,
) -> tuple[Any, Any, Any]:
    """Reference of :func:`fastdropout.dropout_add_backward`."""
    plan = _v.plan_backward(grad_y, mask, p, mode, seed, offset, broadcast_axes, out)
    bshape = _vf.bias_shape_for_backward(bias, plan.g.shape)
    gx = dropout_backward(
        grad_y, mask, p, mode=mode, seed=seed, offset=offset,
        broadcast_axes=broadcast_axes, out=out,
    )
    if bshape is None:
        return gx, grad_y, None
    ncols = 1
    for s in bshape:
        ncols *= s
    return gx, grad_y, round_sums(row_sums(gx, ncols), gx.dtype).reshape(bshape)


# --------------------------------------------------------------------------
# docs/spec.md section 10: alpha dropout
# --------------------------------------------------------------------------


@keeps_array_type("x")
def alpha_dropout(
    x: npt.ArrayLike,
    p: float = 0.5,
    *,
    training: bool = True,
    seed: int | np.random.Generator | None = None,
    offset: int = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    out: FloatArray | None = None,
    return_mask: bool = False,
    window: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> Any:
    """Reference of :func:`fastdropout.alpha_dropout`: kept ``(x * A) + B``
    (two roundings), dropped ``D``."""
    plan = _vf.plan_alpha(x, p, training, seed, offset, broadcast_axes, out, return_mask)
    xa = plan.x
    win = None if window is None else _window.check_window(window, xa.shape)
    y = plan.out if plan.out is not None else np.empty(xa.shape, xa.dtype)
    _copy_input(y, xa)
    if not plan.training:
        return (y, None) if plan.return_mask else y
    s = resolve_seed(plan.seed)
    bits = _bits_of(s, plan, win)
    coef_a, coef_b, coef_d = _scales.alpha_coefficients(plan.p, xa.dtype)
    dropped = np.asarray(coef_d, xa.dtype)
    flat = y.reshape(-1)
    with np.errstate(all="ignore"):
        for start in range(0, flat.size, CHUNK):
            stop = min(start + CHUNK, flat.size)
            kept = _kept(bits, start, stop, y.shape, plan.axes)
            t = _add(_mul(flat[start:stop], coef_a), coef_b)
            flat[start:stop] = np.where(kept, t, dropped)
    if not plan.return_mask:
        return y
    return y, Mask._new(
        bits, plan.mask_shape, plan.n_mask, plan.p, "alpha", s, plan.offset, plan.axes,
        win,
    )


class DropoutAdd(_layers.DropoutAddBase):
    __doc__ = _layers.DropoutAddBase.__doc__
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout_backward)
    _add_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout_add)
    _add_backward_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout_add_backward)


class AlphaDropout(_layers.AlphaDropoutBase):
    __doc__ = _layers.AlphaDropoutBase.__doc__
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(dropout_backward)
    _alpha_fn: ClassVar[Callable[..., Any]] = staticmethod(alpha_dropout)
