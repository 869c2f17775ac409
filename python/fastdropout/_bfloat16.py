"""bfloat16 support (docs/spec.md section 8) without a dependency on ml_dtypes.

``ml_dtypes`` is optional: this module never imports it. The bfloat16 dtype is
looked up in ``sys.modules`` when needed (a bfloat16 array cannot exist before
the user imported ml_dtypes) and recognised by dtype equality, never by its
type character, kind or type number (ml_dtypes reuses characters and gets its
type number at run time).

Rounding is the project's own, in integer arithmetic, so that it does not
depend on an ml_dtypes release: float64 -> bfloat16 rounds once, to nearest,
ties to even; float32 -> bfloat16 likewise; NaN stays a quiet NaN (sign and top
payload bits kept), subnormals are kept, overflow gives infinity.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "bfloat16_dtype",
    "from_float32",
    "from_float64",
    "is_bfloat16",
    "to_float32",
]

_cached: list[np.dtype[Any]] = []


def bfloat16_dtype() -> np.dtype[Any] | None:
    """``numpy.dtype(ml_dtypes.bfloat16)``, or None while ml_dtypes is not imported."""
    if _cached:
        return _cached[0]
    mod = sys.modules.get("ml_dtypes")
    if mod is None:
        return None
    dt: np.dtype[Any] = np.dtype(mod.bfloat16)
    _cached.append(dt)
    return dt


def is_bfloat16(dtype: object) -> bool:
    """Whether ``dtype`` equals ``numpy.dtype(ml_dtypes.bfloat16)``."""
    bf = bfloat16_dtype()
    return bf is not None and dtype == bf


def _require() -> np.dtype[Any]:
    bf = bfloat16_dtype()
    if bf is None:  # pragma: no cover - only reachable with a bfloat16 array
        raise ImportError("bfloat16 arrays need ml_dtypes (pip install ml_dtypes)")
    return bf


def to_float32(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """bfloat16 values widened (exactly) to float32."""
    bits = np.array(x, order="C").view(np.uint16).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32)


def _round_bits(u: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint16]:
    """float32 bit patterns rounded to bfloat16 bit patterns (see the module doc)."""
    w = u.astype(np.uint64)
    rounded = (
        w + np.uint64(0x7FFF) + ((w >> np.uint64(16)) & np.uint64(1))
    ) >> np.uint64(16)
    quiet = (w >> np.uint64(16)) | np.uint64(0x0040)
    nan = (w & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def from_float32(f: npt.ArrayLike) -> npt.NDArray[Any]:
    """float32 values rounded once to bfloat16 (round half to even)."""
    a = np.array(f, dtype=np.float32, order="C")  # keeps 0-d arrays 0-d
    return _round_bits(a.view(np.uint32)).view(_require())


def from_float64(v: npt.ArrayLike) -> npt.NDArray[Any]:
    """float64 values rounded once to bfloat16, straight from float64 (not through
    float32, which would round twice): round half to even at the bfloat16 quantum of
    each value (8 significant bits; 2**-133 below the normal range)."""
    d = np.asarray(v, dtype=np.float64)
    with np.errstate(all="ignore"):
        finite = np.isfinite(d)
        safe = np.where(finite, d, 0.0)
        _, e = np.frexp(safe)  # safe = m * 2**e, 0.5 <= |m| < 1
        q = np.maximum(e - 8, -133)  # exponent of the bfloat16 quantum
        r = np.ldexp(np.rint(np.ldexp(safe, -q)), q)  # np.rint: ties to even
        r = np.where(np.abs(r) >= 2.0**128, np.copysign(np.inf, safe), r)
        r = np.where(finite, r, d)
        f = np.array(r, dtype=np.float32, order="C")  # exact: 8 significant bits
    return _round_bits(f.view(np.uint32)).view(_require())
