"""The dtype-rounded constants of every mode (docs/spec.md sections 3, 8, 10) and
the overflow rule for 16-bit dtypes (section 8), shared by the native front-end
and the reference.

Each constant is computed in float64 and rounded once to the array's dtype:
NumPy's own conversion for float16/32/64 (float64 -> float16 is a single
rounding in NumPy), the project's rounding for bfloat16 (``_bfloat16``).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, Callable

import numpy as np

from . import _bfloat16

__all__ = [
    "ALPHA_PRIME",
    "alpha_coefficients",
    "backward_scale",
    "check_alpha_p",
    "check_inverted_scale",
    "classic_factor",
    "dtype_name",
    "inverted_scale",
    "quiet_bit",
    "round_scalar",
]

#: ``-scale * alpha`` of SELU (Klambauer et al. 2017), as PyTorch and Keras use it.
ALPHA_PRIME = -1.7580993408473766


def quiet_bit(dtype: np.dtype[Any]) -> int:
    """The bit that makes a NaN of ``dtype`` quiet: the top fraction bit (bfloat16's
    bit 6, float16's bit 9, float32's 22, float64's 51)."""
    if _bfloat16.is_bfloat16(dtype):
        return 0x0040
    return {2: 0x0200, 4: 0x00400000, 8: 0x0008000000000000}[np.dtype(dtype).itemsize]


def dtype_name(dtype: np.dtype[Any]) -> str:
    return "bfloat16" if _bfloat16.is_bfloat16(dtype) else str(dtype)


def round_scalar(v: float, dtype: np.dtype[Any]) -> np.generic:
    """The float64 ``v`` rounded once to ``dtype`` (overflow gives inf quietly)."""
    if _bfloat16.is_bfloat16(dtype):
        value: Any = _bfloat16.from_float64(v)[()]
    else:
        with np.errstate(over="ignore"):
            value = np.asarray(v, dtype=np.float64).astype(dtype)[()]
    return value  # type: ignore[no-any-return]


def _inverted_value(p: float) -> float:
    return math.inf if p == 1.0 else 1.0 / (1.0 - p)


def inverted_scale(p: float, dtype: np.dtype[Any]) -> np.generic:
    """``dtype(1 / (1 - p))``; inf for ``p == 1`` (and where float16 overflows)."""
    return round_scalar(_inverted_value(p), dtype)


def classic_factor(p: float, dtype: np.dtype[Any]) -> np.generic:
    """Classic evaluation multiplies by ``dtype(1 - p)``."""
    return round_scalar(1.0 - p, dtype)


def _alpha_values(p: float) -> tuple[float, float, float]:
    ap = ALPHA_PRIME
    a = ((1.0 - p) * (1.0 + p * ap**2)) ** -0.5
    b = -a * ap * p
    d = a * ap + b
    return a, b, d


def alpha_coefficients(
    p: float, dtype: np.dtype[Any]
) -> tuple[np.generic, np.generic, np.generic]:
    """Section 10: ``A, B, D`` for ``p`` in [0, 1), each rounded once to ``dtype``."""
    return tuple(round_scalar(v, dtype) for v in _alpha_values(p))  # type: ignore[return-value]


def _finite(values: tuple[np.generic, ...]) -> bool:
    return all(math.isfinite(float(v)) for v in values)


def _largest_ok(ok: Callable[[float], bool]) -> float:
    """The largest float64 p in [0, 1) with ok(p), for ok true up to some point
    below 1 and false after it (bisection over the float64 bit patterns)."""
    lo = np.float64(0.5).view(np.int64)
    hi = np.float64(np.nextafter(1.0, 0.0)).view(np.int64)
    if ok(float(hi.view(np.float64))):
        return float(hi.view(np.float64))
    lo_i, hi_i = int(lo), int(hi)
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) // 2
        if ok(float(np.int64(mid).view(np.float64))):
            lo_i = mid
        else:
            hi_i = mid
    return float(np.int64(lo_i).view(np.float64))


@cache
def _largest_inverted_p(dtype: np.dtype[Any]) -> float:
    return _largest_ok(lambda p: _finite((inverted_scale(p, dtype),)))


@cache
def _largest_alpha_p(dtype: np.dtype[Any]) -> float:
    return _largest_ok(lambda p: _finite(alpha_coefficients(p, dtype)))


def check_inverted_scale(p: float, dtype: np.dtype[Any]) -> None:
    """Section 8: a ``p < 1`` whose scale ``dtype(1 / (1 - p))`` overflows to
    infinity (float16 from ``p`` about 0.99998 on) is a ValueError naming ``p``,
    the dtype and the largest ``p`` that dtype takes."""
    if p < 1.0 and math.isinf(float(inverted_scale(p, dtype))):
        name = dtype_name(dtype)
        raise ValueError(
            f"p={p!r} is too close to 1 for {name}: the scale {name}(1 / (1 - p)) "
            f"overflows to inf; {name} takes p <= {_largest_inverted_p(dtype)!r} "
            "(or p == 1, which drops everything)"
        )


def check_alpha_p(p: float, dtype: np.dtype[Any] | None) -> None:
    """Section 10: alpha dropout takes ``p`` in [0, 1), and (section 8) only a
    ``p`` whose coefficients are finite in ``dtype``."""
    if not p < 1.0:
        raise ValueError(
            f"p must be in [0, 1) for alpha dropout, got {p!r} (p == 1 would map "
            "every element to one constant)"
        )
    if dtype is not None and not _finite(alpha_coefficients(p, dtype)):
        name = dtype_name(dtype)
        raise ValueError(
            f"p={p!r} is too close to 1 for alpha dropout in {name}: its "
            f"coefficients overflow {name} to inf; {name} takes p <= "
            f"{_largest_alpha_p(dtype)!r}"
        )


def backward_scale(p: float, mode: str, dtype: np.dtype[Any]) -> tuple[float, bool]:
    """``(scale, scaled)`` of the backward pass: ``s`` (inverted), none (classic)
    or ``A`` (alpha), as a float64 holding the dtype-rounded value."""
    if mode == "classic":
        return 1.0, False
    if mode == "alpha":
        return float(alpha_coefficients(p, dtype)[0]), True
    return float(inverted_scale(p, dtype)), True
