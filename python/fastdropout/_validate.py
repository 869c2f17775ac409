"""Argument validation shared by the native front-end and the reference.

Both ``fastdropout`` (``_api.py``, ``_spatial_api.py``, ...) and ``fastdropout.reference`` call these
functions, so bad input gets the same exception type and the same message from
either implementation (docs/spec.md section 7). Everything is checked before anything
is written: an error leaves ``out`` untouched.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from . import _bfloat16, _scales
from ._seed import check_seed, resolve_seed_for_backward

if TYPE_CHECKING:
    import numpy.typing as npt

    from .mask import Mask

    FloatArray = npt.NDArray[np.floating[Any]]
    AxesArg = Union[int, "npt.ArrayLike", None]

__all__ = [
    "DATA_FORMATS",
    "DEFAULT_MODE",
    "MODES",
    "BackwardPlan",
    "ForwardPlan",
    "check_array",
    "check_data_format",
    "check_flag",
    "check_mode",
    "check_offset",
    "check_out",
    "check_p",
    "classic_factor",
    "inverted_scale",
    "normalize_axes",
    "plan_backward",
    "plan_forward",
    "spatial_axes",
    "threshold",
]

TWO_32 = 1 << 32
TWO_64 = 1 << 64

MODES: tuple[str, ...] = ("inverted", "classic")
#: Modes a mask (and a regenerated backward pass) can have: alpha dropout's too.
MASK_MODES: tuple[str, ...] = (*MODES, "alpha")
DATA_FORMATS: tuple[str, ...] = ("channels_first", "channels_last")
SPATIAL_RANKS: tuple[int, ...] = (3, 4, 5)

_FLOAT_DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))
_TAKES = "float16, float32 or float64 (native byte order), or ml_dtypes.bfloat16"


class _DefaultMode(str):
    """The default ``mode`` of ``dropout_backward``: equal to "inverted" and shown
    as such, but recognisable by identity, so that a ``mode`` the caller did not
    pass never conflicts with the mode recorded in a mask."""

    __slots__ = ()


DEFAULT_MODE: str = _DefaultMode("inverted")


# --------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------


def check_p(p: object, name: str = "p") -> float:
    """Return ``p`` as a float64 in [0, 1].

    ``p`` is a real scalar as NumPy takes one: a Python or NumPy float or int, a
    ``Fraction``, a ``Decimal``, a 0-d real array or tensor (anything 0-d with
    ``__float__`` that is not complex or bool); anything else (a string, None, a
    bool, a complex number, an array with elements) is a TypeError, and a value
    outside [0, 1] or NaN a ValueError, both naming ``p``."""
    if type(p) is float:
        if 0.0 <= p <= 1.0:  # NaN fails both comparisons
            return p
        value = p
    else:
        value = _real_scalar(p, name)
        if 0.0 <= value <= 1.0:
            return value
    raise ValueError(
        f"{name} must be a real number in [0, 1] (the drop probability), got {p!r}"
    )


def _real_scalar(p: object, name: str) -> float:
    """``float(p)`` for a real scalar (see check_p); TypeError otherwise."""
    dtype = getattr(p, "dtype", None)
    kind = getattr(dtype, "kind", None)  # NumPy dtypes; torch dtypes have flags
    if (
        isinstance(p, (bool, np.bool_, complex, np.complexfloating, str, bytes))
        or p is None
        or not hasattr(p, "__float__")
        or getattr(p, "ndim", 0) != 0
        or kind in ("b", "c", "O", "U", "S", "V", "M", "m")
        or getattr(dtype, "is_complex", False) is True
        or str(dtype) == "torch.bool"
    ):
        raise TypeError(
            f"{name} must be a real number in [0, 1] (the drop probability), "
            f"got {p!r} of type {type(p).__name__}"
        )
    try:
        return float(p)
    except OverflowError:
        return math.inf  # e.g. a huge Fraction: out of range, said by check_p
    except (TypeError, ValueError, ArithmeticError, RuntimeError):
        return math.nan  # e.g. Decimal("sNaN"): not a probability


def threshold(p: float) -> int:
    """docs/spec.md section 2: ``round_half_even(p * 2**32)``, exact for a float64 ``p``.

    ``p * 2.0**32`` only changes the exponent, so it is exact; Python's
    ``round`` on a float rounds half to even and returns an exact int.
    """
    return round(p * 4294967296.0)


def inverted_scale(p: float, dtype: np.dtype[Any]) -> np.floating[Any]:
    """docs/spec.md section 3: ``dtype(1 / (1 - p))``, computed in float64 and rounded
    once to ``dtype``; ``inf`` for ``p == 1`` (and where float16 overflows)."""
    return _scales.inverted_scale(p, dtype)  # type: ignore[return-value]


def classic_factor(p: float, dtype: np.dtype[Any]) -> np.floating[Any]:
    """docs/spec.md section 3: classic evaluation multiplies by ``dtype(1 - p)``."""
    return _scales.classic_factor(p, dtype)  # type: ignore[return-value]


def check_mode(mode: object, names: tuple[str, ...] = MODES) -> str:
    if (type(mode) is str or isinstance(mode, str)) and mode in names:
        return str(mode)
    raise ValueError(f"mode must be one of {', '.join(map(repr, names))}, got {mode!r}")


def check_data_format(data_format: object) -> str:
    if isinstance(data_format, str) and data_format in DATA_FORMATS:
        return str(data_format)
    raise ValueError(
        f"data_format must be one of {', '.join(map(repr, DATA_FORMATS))}, "
        f"got {data_format!r}"
    )


def check_offset(offset: object, name: str = "offset") -> int:
    """An integer in [0, 2**64): TypeError if not an integer, ValueError if out
    of range (docs/spec.md section 2). ``bool`` is not an integer here."""
    if type(offset) is int:
        value = offset
    else:
        if isinstance(offset, (bool, np.bool_)):
            raise TypeError(f"{name} must be an integer in [0, 2**64), got {offset!r}")
        try:
            value = operator.index(offset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{name} must be an integer in [0, 2**64), got {offset!r} "
                f"of type {type(offset).__name__}"
            ) from None
    if 0 <= value < TWO_64:
        return value
    raise ValueError(f"{name} must be an integer in [0, 2**64), got {value}")


def check_flag(value: object, name: str) -> bool:
    """``training``/``return_mask``: a bool (NumPy bools and 0/1 accepted)."""
    if value is True or value is False:
        return value
    if isinstance(value, (np.bool_, numbers.Integral)) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {value!r}")


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------


def check_array(x: object, name: str = "x") -> FloatArray:
    """``np.asarray(x)``, which must be float16/32/64 in native byte order."""
    if type(x) is not np.ndarray:
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} could not be converted to an array ({exc}); "
                f"fastdropout takes {_TAKES} arrays"
            ) from None
    assert isinstance(x, np.ndarray)
    dt = x.dtype
    if dt not in _FLOAT_DTYPES and not _bfloat16.is_bfloat16(dt):
        what = f"{dt.str} (non-native byte order)" if not dt.isnative else str(dt)
        raise TypeError(f"{name} has dtype {what}; fastdropout takes {_TAKES} arrays")
    return x


def normalize_axes(
    axes: object, ndim: int, name: str = "broadcast_axes"
) -> tuple[int, ...]:
    """An int or a sequence of ints → sorted tuple of non-negative axes.

    Negative axes count from the end; repeated or out-of-range axes are a
    ValueError (docs/spec.md section 4)."""
    if axes is None:
        return ()
    if isinstance(axes, (numbers.Integral, np.integer)) and not isinstance(
        axes, (bool, np.bool_)
    ):
        items: list[object] = [axes]
    else:
        try:
            items = list(axes)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"{name} must be an int or a sequence of ints, got {axes!r}"
            ) from None
    result: list[int] = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"{name} must contain ints, got {item!r} in {axes!r}")
        try:
            a = operator.index(item)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{name} must contain ints, got {item!r} in {axes!r}"
            ) from None
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name}: axis {a} is out of range for an array of rank {ndim}"
            )
        result.append(a + ndim if a < 0 else a)
    result.sort()
    for i in range(1, len(result)):
        if result[i] == result[i - 1]:
            raise ValueError(f"{name}: axis {result[i]} is repeated in {axes!r}")
    return tuple(result)


def spatial_axes(ndim: int, data_format: str) -> tuple[int, ...]:
    """docs/spec.md section 4: the axes of the feature maps, for a 3-, 4- or 5-D input."""
    if ndim not in SPATIAL_RANKS:
        raise ValueError(
            "spatial_dropout takes 3-D, 4-D or 5-D input (rank 3, 4 or 5: "
            "N, C and 1 to 3 spatial axes), "
            f"got an array of rank {ndim}"
        )
    if data_format == "channels_first":
        return tuple(range(2, ndim))
    return tuple(range(1, ndim - 1))


def check_out(
    out: object, shape: tuple[int, ...], dtype: np.dtype[Any], name: str = "out"
) -> FloatArray:
    """``out`` must be a writeable, C-contiguous ndarray of the result's shape
    and dtype (docs/spec.md section 6)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(
            f"{name} has shape {out.shape}, but the result has shape {shape}"
        )
    if out.dtype != dtype:
        raise ValueError(
            f"{name} has dtype {out.dtype.str if not out.dtype.isnative else out.dtype}"
            f", but the result has dtype {dtype}"
        )
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous")
    return out


def mask_shape_of(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """docs/spec.md section 4: ``shape`` with the broadcast axes set to 1."""
    if not axes:
        return shape
    return tuple(1 if a in axes else n for a, n in enumerate(shape))


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --------------------------------------------------------------------------
# Whole calls
# --------------------------------------------------------------------------


class ForwardPlan(NamedTuple):
    """A validated forward call; ``seed`` is checked but not yet drawn."""

    x: FloatArray
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


_new_tuple = tuple.__new__


def plan_forward(
    x: object,
    p: object,
    training: object,
    mode: object,
    seed: object,
    offset: object,
    broadcast_axes: object,
    out: object,
    return_mask: object,
    *,
    spatial: bool = False,
    data_format: object = None,
) -> ForwardPlan:
    """Validate every argument of ``dropout`` (or of ``spatial_dropout`` with
    ``spatial=True``), in a fixed order, before any work."""
    pf = check_p(p)
    train = check_flag(training, "training")
    m = check_mode(mode)
    if spatial:
        fmt = check_data_format(data_format)
    check_seed(seed)
    off = check_offset(offset)
    arr = check_array(x)
    if spatial:
        axes = spatial_axes(arr.ndim, fmt)
    else:
        axes = normalize_axes(broadcast_axes, arr.ndim)
    o = None if out is None else check_out(out, arr.shape, arr.dtype)
    want_mask = check_flag(return_mask, "return_mask")
    if train and m == "inverted":
        _scales.check_inverted_scale(pf, arr.dtype)  # docs/spec.md section 8
    if axes:
        mshape = mask_shape_of(arr.shape, axes)
        n_mask = _prod(mshape)
    else:
        mshape = arr.shape
        n_mask = arr.size
    # tuple.__new__ skips NamedTuple's Python-level __new__ (fast path).
    return _new_tuple(
        ForwardPlan, (arr, pf, train, m, seed, off, axes, mshape, n_mask, o, want_mask)
    )


class BackwardPlan(NamedTuple):
    """A validated backward call: either ``mask`` or an int ``seed`` is set."""

    g: FloatArray
    p: float
    mode: str
    mask: Mask | None
    seed: int
    offset: int
    axes: tuple[int, ...]
    mask_shape: tuple[int, ...]
    n_mask: int
    out: FloatArray | None


def plan_backward(
    grad_y: object,
    mask: object,
    p: object,
    mode: object,
    seed: object,
    offset: object,
    broadcast_axes: object,
    out: object,
) -> BackwardPlan:
    """Validate ``dropout_backward`` (docs/spec.md sections 3, 6 and 7)."""
    from .mask import Mask

    pf = None if p is None else check_p(p)
    m = check_mode(mode, MASK_MODES)
    off = check_offset(offset)
    g = check_array(grad_y, "grad_y")
    if mask is not None:
        if not isinstance(mask, Mask):
            raise TypeError(
                "mask must be a fastdropout Mask (returned by a forward call "
                f"with return_mask=True), got {type(mask).__name__}"
            )
        if pf is not None and pf != mask.p:
            raise ValueError(
                f"p={pf!r} was given, but the mask was made with p={mask.p!r}; "
                "with a mask, p comes from it"
            )
        if mode is not DEFAULT_MODE and m != mask.mode:
            raise ValueError(
                f"mode={m!r} was given, but the mask was made with mode="
                f"{mask.mode!r}; with a mask, mode comes from it"
            )
        if seed is not None or broadcast_axes is not None or off != 0:
            raise ValueError(
                "pass either a mask or p, seed, offset (and broadcast_axes) to "
                "regenerate it, not both"
            )
        mshape = mask.shape
        if len(mshape) != g.ndim or any(
            ms != gs and ms != 1 for ms, gs in zip(mshape, g.shape)
        ):
            raise ValueError(
                f"the mask has shape {mshape}, which does not fit grad_y of shape "
                f"{g.shape} (each axis must be equal, or 1 where the decision "
                "was broadcast)"
            )
        axes = tuple(
            a for a, (ms, gs) in enumerate(zip(mshape, g.shape)) if ms == 1 != gs
        )
        o = None if out is None else check_out(out, g.shape, g.dtype)
        _check_backward_scale(mask.p, mask.mode, g.dtype, mask)
        return BackwardPlan(
            g, mask.p, mask.mode, mask, 0, 0, axes, mshape, mask.size, o
        )
    if pf is None or seed is None:
        missing = " and ".join(n for n, v in (("p", pf), ("seed", seed)) if v is None)
        raise ValueError(
            "dropout_backward needs either the mask of the forward call or the "
            f"p, seed and offset it used to regenerate it; {missing} missing"
        )
    s = resolve_seed_for_backward(seed)
    axes = normalize_axes(broadcast_axes, g.ndim)
    o = None if out is None else check_out(out, g.shape, g.dtype)
    _check_backward_scale(pf, m, g.dtype, None)
    if axes:
        mshape = mask_shape_of(g.shape, axes)
        n_mask = _prod(mshape)
    else:
        mshape = g.shape
        n_mask = g.size
    return BackwardPlan(g, pf, m, None, s, off, axes, mshape, n_mask, o)


def _check_backward_scale(
    p: float, mode: str, dtype: np.dtype[Any], mask: Mask | None
) -> None:
    """docs/spec.md sections 8 and 10: no backward pass with an infinite scale. With
    ``p == 1`` every element of a real mask is dropped and the scale is unused,
    but a hand-made mask with kept bits would multiply them by inf."""
    if mode == "alpha":
        _scales.check_alpha_p(p, dtype)
    elif mode == "inverted":
        _scales.check_inverted_scale(p, dtype)
        if p == 1.0 and mask is not None and bool(mask.bits.any()):
            raise ValueError(
                "the mask has p=1.0 but kept elements: their scale 1 / (1 - p) "
                "would be infinite (a mask drawn with p=1 keeps nothing)"
            )
