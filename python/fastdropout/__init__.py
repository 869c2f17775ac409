"""fastdropout: exact, reproducible, fast dropout for NumPy.

Every keep/drop decision is a pure function of ``(seed, offset, index, p)``
(Philox4x32-10), so results do not depend on threads, instruction set or
memory layout, and ``fastdropout.reference`` (pure NumPy) gives the same bits.
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as _exc:  # pragma: no cover - depends on the installation
    import importlib.util as _util

    if _util.find_spec(f"{__name__}._core") is None:
        raise ImportError(
            "fastdropout's compiled core (fastdropout._core) is missing: the package "
            "was not built or installed properly. Reinstall it with `pip install .` "
            "from a source checkout (a C++17 compiler and CMake are needed), or "
            "install a wheel.",
            name=f"{__name__}._core",
        ) from _exc
    raise

from . import reference
from ._alpha import alpha_dropout
from ._api import dropout, dropout_backward
from ._fused import dropout_add, dropout_add_backward
from ._runtime import get_num_threads, set_num_threads, simd_level
from ._spatial_api import spatial_dropout
from .layers import AlphaDropout, Dropout, DropoutAdd, SpatialDropout
from .mask import Mask

__version__: str = _core.__version__

__all__ = [
    "AlphaDropout",
    "Dropout",
    "DropoutAdd",
    "Mask",
    "SpatialDropout",
    "__version__",
    "alpha_dropout",
    "dropout",
    "dropout_add",
    "dropout_add_backward",
    "dropout_backward",
    "get_num_threads",
    "reference",
    "set_num_threads",
    "simd_level",
    "spatial_dropout",
]


def __dir__() -> list[str]:
    return __all__
