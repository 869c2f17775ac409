"""Type names of the public API (for annotations; nothing here runs per call).

- ``Mode``, ``DataFormat``: the accepted names, as ``Literal`` types.
- ``Seed``: an integer (``int``, ``np.uint64``, anything with ``__index__``), a
  ``numpy.random.Generator`` or ``None``; ``Offset``: an integer.
- ``Probability``: a real scalar (``float``, ``np.float32``, ``Fraction``,
  ``Decimal``, a 0-d array: anything with ``__float__``).
- ``Axes``: an axis or a sequence of axes (``0``, ``(0, 2)``, ``[0]``).
- ``ArrayT``: a float ndarray type (``NDArray[np.float32]``, a masked array, a
  subclass); functions given one return the same type, so dtypes are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, SupportsFloat, SupportsIndex, TypeVar, Union

import numpy as np
import numpy.typing as npt

__all__ = [
    "ArrayT",
    "Axes",
    "DataFormat",
    "FloatArray",
    "Mode",
    "Offset",
    "Probability",
    "Seed",
]

Mode = Literal["inverted", "classic"]
DataFormat = Literal["channels_first", "channels_last"]
Seed = Union[SupportsIndex, np.random.Generator, None]
Offset = SupportsIndex
Probability = SupportsFloat
Axes = Union[SupportsIndex, Sequence[SupportsIndex], None]
FloatArray = npt.NDArray[np.floating[Any]]
ArrayT = TypeVar("ArrayT", bound="np.ndarray[Any, np.dtype[np.floating[Any]]]")
