"""fastdropout for JAX: the same stream and values as the NumPy functions,
written in ``jax.numpy``/``lax`` (no FFI, no callbacks).

``dropout``, ``spatial_dropout``, ``alpha_dropout`` and ``dropout_add`` take the
NumPy functions' arguments (docs/spec.md sections 2-4, 9, 10) and give the same
masks and the same values, with two differences that JAX imposes:

- XLA's CPU backend flushes subnormal float32/float64/bfloat16 numbers to zero
  (inputs and results, with and without ``jax.jit``), so where NumPy's input or
  result is subnormal the JAX result is ``+0.0``/``-0.0`` (docs/spec.md section 12).
  float16 arithmetic goes through float32 and keeps its subnormals.
- Functions are pure: ``seed`` is required (no ``None``, no ``numpy.random.Generator``),
  there is no ``out=``, and ``return_mask=True`` returns the decisions as a bool
  array of the mask shape (``True`` = kept, equal to ``Mask.to_bool()``).

``seed`` and ``offset`` are Python/NumPy integers in ``[0, 2**64)`` (checked), or
JAX/NumPy integer arrays that may be traced: a scalar of any integer dtype (its
value modulo 2**64, negative values wrap; traced values cannot be checked), or a
``uint32`` array of shape ``(2,)`` holding the (low, high) words (see
:func:`split64`). Both reach the compiled computation as data, so a new seed or
offset never recompiles. ``p`` may also be traced (see :func:`dropout`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    from jax import lax
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "fastdropout.jax needs JAX, which is not installed: "
        "pip install 'fastdropout[jax]' (or pip install jax)",
        name="jax",
    ) from _exc

from . import _scales
from . import _validate as _v
from ._validate_fused import _same_dtype

__all__ = [
    "alpha_dropout",
    "dropout",
    "dropout_add",
    "philox",
    "spatial_dropout",
    "split64",
]

_U32 = jnp.uint32
_BF16 = np.dtype(jnp.bfloat16)
_FLOATS = (np.dtype(np.float16), _BF16, np.dtype(np.float32), np.dtype(np.float64))
_TAKES = "float16, bfloat16, float32 or float64"
_MAX_MASK = (1 << 32) - 8  # element indices are counted in one uint32 word
_CHUNK_BLOCKS = 1 << 16  # Philox blocks per loop step (64 KiB of packed bits)
_ALPHA = _scales.ALPHA_PRIME  # -scale * alpha of SELU (docs/spec.md section 10)

# --------------------------------------------------------------------------
# Host side: the numbers a call needs, from a concrete p (float64, rounded once
# to the dtype by the same code as the NumPy functions: ``_scales``)
# --------------------------------------------------------------------------


def _inverted_scale(p: float, dtype: np.dtype[Any]) -> float:
    """``dtype(1 / (1 - p))``; for ``p == 1`` every element is dropped and the
    scale is never used: 1.0 keeps the gradient finite."""
    if p == 1.0:
        return 1.0
    return float(_scales.inverted_scale(p, dtype))


def _threshold_words(p: float) -> tuple[int, int]:
    """(t mod 2**32, t >> 32) of t = round_half_even(p * 2**32) in [0, 2**32]."""
    t = _v.threshold(p)
    return t & 0xFFFFFFFF, t >> 32


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def _is_traced(value: object) -> bool:
    return isinstance(value, jax.core.Tracer)


def split64(value: int) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """The (low, high) ``uint32`` words of an integer in ``[0, 2**64)``.

    Pass them as ``seed=`` or ``offset=`` to carry a full 64-bit value through
    ``jax.jit`` as data without ``jax_enable_x64`` (a Python int argument of a
    jitted function becomes an int32)."""
    v = _v.check_offset(value, "value")
    return np.array([v & 0xFFFFFFFF, v >> 32], dtype=np.uint32)


def _words(value: object, name: str) -> Any:
    """``seed``/``offset`` as two uint32 words (low, high): a NumPy array for a
    concrete int (checked), a JAX array for a traced or array value."""
    if value is None:
        raise TypeError(
            f"{name} is required: fastdropout.jax functions are pure, pass an "
            "integer in [0, 2**64) (or its split64 words)"
        )
    if (
        isinstance(value, np.ndarray)
        and value.shape == (2,)
        and value.dtype == np.uint32
    ):
        return value  # split64 words, kept on the host
    if isinstance(value, (jax.Array, np.ndarray)) and (
        _is_traced(value) or value.ndim > 0
    ):
        arr = jnp.asarray(value)
        dt = np.dtype(arr.dtype)
        if arr.shape == (2,) and dt == np.uint32:
            return arr
        if arr.shape != () or dt.kind not in "iu":
            raise TypeError(
                f"{name} must be an integer in [0, 2**64), an integer scalar array "
                f"or a uint32 array of shape (2,) (low, high words), got an array "
                f"of dtype {dt} and shape {arr.shape}"
            )
        if dt.itemsize == 8:  # jax_enable_x64
            u = arr.astype(jnp.uint64)
            return jnp.stack([u.astype(_U32), (u >> 32).astype(_U32)])
        high = jnp.where(arr < 0, _U32(0xFFFFFFFF), _U32(0)) if dt.kind == "i" else 0
        return jnp.stack([arr.astype(_U32), jnp.asarray(high, _U32)])
    if (
        isinstance(value, (jax.Array, np.ndarray))
        and np.dtype(value.dtype).kind in "iu"
    ):
        value = int(value)  # a concrete scalar: checked like an int
    v = _v.check_offset(value, name)
    return np.array([v & 0xFFFFFFFF, v >> 32], dtype=np.uint32)


def _check_x(x: object, name: str = "x") -> Any:
    if not isinstance(x, jax.Array):
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} could not be converted to a JAX array ({exc}); "
                f"fastdropout.jax takes {_TAKES} arrays"
            ) from None
    assert isinstance(x, jax.Array)
    if np.dtype(x.dtype) not in _FLOATS:
        raise TypeError(
            f"{name} has dtype {x.dtype}; fastdropout.jax takes {_TAKES} arrays"
        )
    return x


def _mask_size(mask_shape: tuple[int, ...]) -> int:
    n = math.prod(mask_shape)
    if n > _MAX_MASK:
        raise ValueError(
            f"the mask has {n} elements; fastdropout.jax takes at most {_MAX_MASK}"
        )
    return n


def _check_p(p: object) -> Any:
    """A concrete p is checked and returned as a float; a traced one as is."""
    if _is_traced(p):
        return p
    if (
        isinstance(p, (jax.Array, np.ndarray))
        and p.shape == ()
        and (np.dtype(p.dtype).kind == "f")
    ):
        p = float(p)  # a concrete scalar array
    return _v.check_p(p)


# --------------------------------------------------------------------------
# The stream (docs/spec.md section 2), in uint32 arithmetic
# --------------------------------------------------------------------------


def _mulhilo(a: Any, m: int) -> tuple[Any, Any]:
    """High and low words of the 64-bit product of uint32 ``a`` and constant
    ``m``, from 16-bit halves (no 64-bit integers needed)."""
    m_lo, m_hi = _U32(m & 0xFFFF), _U32(m >> 16)
    a_lo, a_hi = a & _U32(0xFFFF), a >> _U32(16)
    t = a_lo * m_lo
    u = a_hi * m_lo + (t >> _U32(16))
    w = a_lo * m_hi + (u & _U32(0xFFFF))
    hi = a_hi * m_hi + (u >> _U32(16)) + (w >> _U32(16))
    return hi, a * _U32(m)


def philox(counter: Any, key: Any) -> tuple[Any, Any, Any, Any]:
    """Philox4x32-10 of uint32 counter words ``(c0, c1, c2, c3)`` under
    ``(k0, k1)`` (arrays that broadcast); the four output words."""
    c0, c1, c2, c3 = (jnp.asarray(c, _U32) for c in counter)
    k0, k1 = (jnp.asarray(k, _U32) for k in key)
    for rnd in range(10):
        if rnd > 0:  # the first round uses the key as given
            k0 = k0 + _U32(0x9E3779B9)
            k1 = k1 + _U32(0xBB67AE85)
        hi0, lo0 = _mulhilo(c0, 0xD2511F53)
        hi1, lo1 = _mulhilo(c2, 0xCD9E8D57)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _keep(words: Any, mask_shape: tuple[int, ...]) -> Any:
    """The decisions (True = kept) of mask elements in C order over
    ``mask_shape``. ``words``: uint32 (k0, k1, offset low, offset high, t low,
    t >> 32).

    Position ``j = offset + i`` of element ``i`` uses word ``j % 4`` of Philox
    block ``j // 4`` (mod 2**62). The blocks from ``offset // 4`` on are
    computed once each, in chunks of at most ``_CHUNK_BLOCKS`` by a
    ``fori_loop``, and their four decisions packed into one byte; each element
    then reads its bit. The loop is what makes XLA store the bytes: fused into
    the element-wise consumer, each element would recompute its whole block
    (four times the arithmetic), and interleaving the four words with a
    concatenate is slower still (no SIMD)."""
    n = math.prod(mask_shape)
    if n == 0:
        return jnp.zeros(mask_shape, bool)
    k0, k1, off_lo, off_hi, t, drop_all = (words[i] for i in range(6))
    first_word = off_lo & _U32(3)
    first_lo = (off_lo >> _U32(2)) | (off_hi << _U32(30))  # block offset // 4
    first_hi = off_hi >> _U32(2)
    n_blocks = (n + 6) // 4  # enough for first_word + n words
    n_chunks = -(-n_blocks // _CHUNK_BLOCKS)
    chunk = -(-n_blocks // n_chunks)

    def one_chunk(c: Any, packed: Any) -> Any:
        k = c.astype(_U32) * _U32(chunk) + lax.iota(_U32, chunk)
        lo = first_lo + k
        hi = (first_hi + (lo < k).astype(_U32)) & _U32(0x3FFFFFFF)
        zero = jnp.zeros((), _U32)
        r = philox((lo, hi, zero, zero), (k0, k1))
        byte = jnp.zeros((chunk,), jnp.uint8)
        for w in range(4):
            byte = byte | ((r[w] >= t).astype(jnp.uint8) << jnp.uint8(w))
        return lax.dynamic_update_slice(packed, byte[None], (c, 0))

    packed = jnp.zeros((n_chunks, chunk), jnp.uint8)
    packed = lax.fori_loop(0, n_chunks, one_chunk, packed).reshape(-1)
    q = first_word + lax.iota(_U32, n)  # word index from the first block on
    bit = (packed[q >> _U32(2)] >> (q & _U32(3)).astype(jnp.uint8)) & jnp.uint8(1)
    return ((bit != 0) & (drop_all == _U32(0))).reshape(mask_shape)


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------


@jax.custom_jvp
def _rounded(v: Any) -> Any:
    """``v`` itself, held in its dtype: ``nextafter(v, v) == v`` exactly, and XLA
    neither fuses a following add into a fused multiply-add through it nor keeps
    a float16 result in float32 (excess precision), so every operation of a
    composition is rounded once in the dtype, as NumPy does."""
    return lax.nextafter(v, v)


@_rounded.defjvp
def _rounded_jvp(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
    return _rounded(primals[0]), tangents[0]


@jax.custom_jvp
def _add(a: Any, b: Any) -> Any:
    """``a + b``; where ``a`` is NaN, ``a`` quieted (docs/spec.md section 9: the sum
    of two NaNs is the first one, which IEEE 754 and XLA leave open). The
    derivative is the sum's, NaN or not."""
    dt = np.dtype(a.dtype)
    utype = np.dtype(f"u{dt.itemsize}")
    bits = lax.bitcast_convert_type(a, utype) | jnp.asarray(_scales.quiet_bit(dt), utype)
    return jnp.where(jnp.isnan(a), lax.bitcast_convert_type(bits, a.dtype), a + b)


@_add.defjvp
def _add_jvp(primals: tuple[Any, Any], tangents: tuple[Any, Any]) -> tuple[Any, Any]:
    return _add(*primals), tangents[0] + tangents[1]


@functools.partial(jax.jit, static_argnames=("kind", "mask_shape", "want_mask"))
def _train(
    x: Any,
    words: Any,
    consts: Any,
    residual: Any,
    bias: Any,
    *,
    kind: str,
    mask_shape: tuple[int, ...],
    want_mask: bool,
) -> Any:
    """One training call. ``kind``: inverted, classic, alpha, add_inverted or
    add_classic; ``consts`` (in x's dtype): (s,), (A, B, D) or (s,)."""
    keep_m = _keep(words, mask_shape)
    keep = jnp.broadcast_to(keep_m, x.shape)
    zero = jnp.zeros((), x.dtype)
    if kind == "inverted":
        y = jnp.where(keep, x * consts[0], zero)
    elif kind == "classic":
        y = jnp.where(keep, x, zero)
    elif kind == "alpha":
        y = jnp.where(keep, _rounded(x * consts[0]) + consts[1], consts[2])
    else:
        v = x if bias is None else _rounded(_add(x, jnp.broadcast_to(bias, x.shape)))
        if kind == "add_inverted":
            v = _rounded(v * consts[0])
        y = _add(residual, jnp.where(keep, v, zero))
    return (y, keep_m) if want_mask else y


def _traced_consts(p: Any, kind: str, dtype: Any) -> tuple[Any, Any]:
    """Threshold words and constants from a traced p, in p's float precision."""
    pf = jnp.clip(jnp.asarray(p, dtype=jnp.result_type(float)), 0.0, 1.0)
    drop_all = pf >= 1.0
    t = jnp.where(drop_all, 0.0, jnp.round(pf * 2.0**32)).astype(_U32)
    tw = jnp.stack([t, drop_all.astype(_U32)])
    if kind == "alpha":
        a = ((1.0 - pf) * (1.0 + pf * _ALPHA**2)) ** -0.5
        b = -a * _ALPHA * pf
        consts = jnp.stack([a, b, a * _ALPHA + b])
    elif kind == "classic_eval":
        consts = jnp.stack([1.0 - pf])
    else:
        consts = jnp.stack([jnp.where(drop_all, 1.0, 1.0 / (1.0 - pf))])
    return tw, consts.astype(dtype)


def _host_consts(p: float, kind: str, dtype: np.dtype[Any]) -> tuple[Any, Any]:
    if kind == "alpha":
        values: tuple[Any, ...] = _scales.alpha_coefficients(p, dtype)
    elif kind == "classic_eval":
        values = (_scales.classic_factor(p, dtype),)
    elif kind in ("inverted", "add_inverted"):
        values = (_inverted_scale(p, dtype),)
    else:
        values = (1.0,)
    return np.array(_threshold_words(p), np.uint32), np.array(values, dtype)


def _run(
    x: Any,
    p: Any,
    kind: str,
    seed: object,
    offset: object,
    mask_shape: tuple[int, ...],
    want_mask: bool,
    residual: Any = None,
    bias: Any = None,
) -> Any:
    dtype = np.dtype(x.dtype)
    _mask_size(mask_shape)
    key = _words(seed, "seed")
    off = _words(offset, "offset")
    if _is_traced(p):
        tw, consts = _traced_consts(p, kind, dtype)
    else:
        tw, consts = _host_consts(p, kind, dtype)
    if all(isinstance(w, np.ndarray) for w in (key, off, tw)):
        words: Any = np.concatenate([key, off, tw])
    else:
        words = jnp.concatenate([jnp.asarray(w, _U32) for w in (key, off, tw)])
    return _train(
        x,
        words,
        consts,
        residual,
        bias,
        kind=kind,
        mask_shape=mask_shape,
        want_mask=want_mask,
    )


def _classic_factor(p: Any, dtype: np.dtype[Any]) -> Any:
    if _is_traced(p):
        return _traced_consts(p, "classic_eval", dtype)[1][0]
    return _host_consts(p, "classic_eval", dtype)[1][0]


def _eval_result(y: Any, want_mask: bool) -> Any:
    return (y, None) if want_mask else y


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def dropout(
    x: Any,
    p: Any = 0.5,
    *,
    training: bool = True,
    mode: str = "inverted",
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    return_mask: bool = False,
) -> Any:
    """Dropout of a JAX array with the NumPy stream (docs/spec.md sections 2-4).

    Same arguments as :func:`fastdropout.dropout` except: ``seed`` is required
    (see the module docstring for the forms ``seed`` and ``offset`` take), no
    ``out=``, and ``return_mask=True`` gives ``(y, keep)`` with ``keep`` a bool
    array of the mask shape (``None`` when ``training=False``).

    ``p`` is usually a Python float: the threshold and the scale
    ``dtype(1 / (1 - p))`` are then computed on the host in float64 and rounded
    once, exactly as NumPy does; they reach the computation as data, so a new
    ``p`` does not recompile either. A traced ``p`` (a jit argument) is not
    checked but clipped to [0, 1], and everything is computed in JAX's default
    float (float32 unless ``jax_enable_x64``): the mask is then the one NumPy
    gives for ``p`` rounded to that float, and the scale may differ from
    NumPy's by one unit in the last place.

    Differentiable (``jax.grad``: ``grad_y * s`` where kept, ``+0.0`` where
    dropped, equal to :func:`fastdropout.dropout_backward`), ``jax.jit``- and
    ``jax.vmap``-able (under ``vmap`` each example gets the mask of one call).
    """
    pf = _check_p(p)
    train = _v.check_flag(training, "training")
    m = _v.check_mode(mode)
    arr = _check_x(x)
    axes = _v.normalize_axes(broadcast_axes, arr.ndim)
    want = _v.check_flag(return_mask, "return_mask")
    mask_shape = _v.mask_shape_of(arr.shape, axes)
    if train and m == "inverted" and not _is_traced(pf):
        _scales.check_inverted_scale(pf, np.dtype(arr.dtype))  # docs/spec.md section 8
    if not train:
        y = arr if m == "inverted" else arr * _classic_factor(pf, np.dtype(arr.dtype))
        return _eval_result(y, want)
    return _run(arr, pf, m, seed, offset, mask_shape, want)


def spatial_dropout(
    x: Any,
    p: Any = 0.5,
    *,
    data_format: str = "channels_first",
    training: bool = True,
    mode: str = "inverted",
    seed: Any = None,
    offset: Any = 0,
    return_mask: bool = False,
) -> Any:
    """Channel dropout of a 3-D, 4-D or 5-D JAX array (docs/spec.md section 4),
    the NumPy function's mask and values; arguments as :func:`dropout`."""
    fmt = _v.check_data_format(data_format)
    arr = _check_x(x)
    axes = _v.spatial_axes(arr.ndim, fmt)
    return dropout(
        arr,
        p,
        training=training,
        mode=mode,
        seed=seed,
        offset=offset,
        broadcast_axes=axes,
        return_mask=return_mask,
    )


def alpha_dropout(
    x: Any,
    p: Any = 0.5,
    *,
    training: bool = True,
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    return_mask: bool = False,
) -> Any:
    """Alpha dropout for self-normalising networks (docs/spec.md section 10):
    kept ``(x * A) + B`` (two roundings, never a fused multiply-add), dropped
    ``D``; ``p`` in [0, 1). Gradient: ``grad_y * A`` where kept, ``+0.0`` where
    dropped. Other arguments as :func:`dropout`."""
    pf = _check_p(p)
    if not _is_traced(pf):
        _scales.check_alpha_p(pf, None)
    train = _v.check_flag(training, "training")
    arr = _check_x(x)
    if not _is_traced(pf):
        _scales.check_alpha_p(pf, np.dtype(arr.dtype))
    axes = _v.normalize_axes(broadcast_axes, arr.ndim)
    want = _v.check_flag(return_mask, "return_mask")
    mask_shape = _v.mask_shape_of(arr.shape, axes)
    if not train:
        return _eval_result(arr, want)
    return _run(arr, pf, "alpha", seed, offset, mask_shape, want)


def dropout_add(
    x: Any,
    residual: Any,
    p: Any = 0.5,
    *,
    bias: Any = None,
    training: bool = True,
    mode: str = "inverted",
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    return_mask: bool = False,
) -> Any:
    """``residual + dropout(x + bias)`` (docs/spec.md section 9), every operation
    rounded in the dtype as NumPy rounds it. ``x``, ``residual`` and ``bias``
    share one dtype; ``residual`` has ``x``'s shape; ``bias.shape`` equals
    ``x``'s trailing axes. Gradients: ``dropout``'s for ``x``, ``grad_y`` for
    ``residual``, and for ``bias`` XLA's sum of ``x``'s gradient over the
    leading axes (accumulated in the dtype by XLA, so it may differ in the last
    bits from :func:`fastdropout.dropout_add_backward`'s float64 sum). Other
    arguments as :func:`dropout`."""
    pf = _check_p(p)
    train = _v.check_flag(training, "training")
    m = _v.check_mode(mode)
    arr = _check_x(x)
    res = _check_x(residual, "residual")
    _same_dtype(res, "residual", arr)
    if res.shape != arr.shape:
        raise ValueError(f"residual has shape {res.shape}, but x has shape {arr.shape}")
    b = None
    if bias is not None:
        b = _check_x(bias, "bias")
        _same_dtype(b, "bias", arr)
        if b.ndim > arr.ndim or b.shape != arr.shape[arr.ndim - b.ndim :]:
            raise ValueError(
                f"bias has shape {b.shape}, which is not the trailing axes of x's "
                f"shape {arr.shape}"
            )
    axes = _v.normalize_axes(broadcast_axes, arr.ndim)
    want = _v.check_flag(return_mask, "return_mask")
    mask_shape = _v.mask_shape_of(arr.shape, axes)
    if train and m == "inverted" and not _is_traced(pf):
        _scales.check_inverted_scale(pf, np.dtype(arr.dtype))  # docs/spec.md section 8
    if not train:
        v = arr if b is None else _rounded(_add(arr, jnp.broadcast_to(b, arr.shape)))
        if m == "classic":
            v = _rounded(v * _classic_factor(pf, np.dtype(arr.dtype)))
        return _eval_result(_add(res, v), want)
    return _run(arr, pf, "add_" + m, seed, offset, mask_shape, want, res, b)
