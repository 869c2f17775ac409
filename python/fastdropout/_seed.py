"""Turning the ``seed`` argument into a 64-bit integer (docs/spec.md sections 2 and 6).

- an ``int`` (Python or NumPy) in ``[0, 2**64)`` is used as is;
- a ``numpy.random.Generator`` gives exactly one 64-bit draw;
- ``None`` gives 64 fresh bits from the operating system (``secrets``).
"""

from __future__ import annotations

import operator
import secrets

import numpy as np

__all__ = ["check_seed", "resolve_seed", "resolve_seed_for_backward"]

_TWO_64 = 1 << 64
_ACCEPTS = "an integer in [0, 2**64), a numpy.random.Generator or None"


def _int_seed(seed: object) -> int:
    if type(seed) is int:
        value = seed
    else:
        if isinstance(seed, (bool, np.bool_)):
            raise TypeError(f"seed must be {_ACCEPTS}, got {seed!r}")
        try:
            value = operator.index(seed)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"seed must be {_ACCEPTS}, got {seed!r} of type {type(seed).__name__}"
            ) from None
    if 0 <= value < _TWO_64:
        return value
    raise ValueError(f"seed must be an integer in [0, 2**64), got {value}")


def check_seed(seed: object) -> None:
    """Validate ``seed`` without drawing anything from it."""
    if type(seed) is int and 0 <= seed < _TWO_64:  # fast path
        return
    if seed is None or isinstance(seed, np.random.Generator):
        return
    _int_seed(seed)


def resolve_seed(seed: object) -> int:
    """The 64-bit seed a call uses (draws from a Generator or the OS)."""
    if type(seed) is int and 0 <= seed < _TWO_64:  # fast path
        return seed
    if seed is None:
        return secrets.randbits(64)
    if isinstance(seed, np.random.Generator):
        # The full uint64 range is exactly one 64-bit draw from the bit generator.
        return int(seed.integers(_TWO_64, dtype=np.uint64))
    return _int_seed(seed)


def resolve_seed_for_backward(seed: object) -> int:
    """Regenerating a mask needs the forward's seed itself: only integers."""
    if isinstance(seed, np.random.Generator):
        raise TypeError(
            "dropout_backward cannot regenerate a mask from a numpy.random.Generator "
            "(a new draw would give a different seed); pass the integer seed the "
            "forward call used (mask.seed) or the mask itself"
        )
    return _int_seed(seed)
