"""Runtime settings of the C++ core: threads and the SIMD level in use."""

from __future__ import annotations

import operator
from typing import SupportsIndex

import numpy as np

from . import _core

__all__ = ["get_num_threads", "set_num_threads", "simd_level"]


def set_num_threads(n: SupportsIndex | None) -> None:
    """Use at most ``n`` threads for large arrays; ``None``: back to the default.

    The default follows OpenMP's setting for the calling thread
    (``omp_get_max_threads()`` of the OpenMP runtime fastdropout links: the
    processor count, ``OMP_NUM_THREADS``, or a ``threadpoolctl.threadpool_limits``
    block), read on every large call. ``set_num_threads(n)`` also sets that OpenMP
    setting (``omp_set_num_threads``), so threadpoolctl reports it, and a
    ``threadpool_limits`` block inside still lowers it. ``n`` is an int in
    ``[1, cap]``, ``cap`` being a few threads per processor (ValueError outside,
    TypeError for a non-integer or a bool).
    """
    if n is None:
        _core.set_num_threads(0)
        return
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"n must be an int >= 1 or None, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(
            f"n must be an int >= 1 or None, got {n!r} of type {type(n).__name__}"
        ) from None
    cap = _core._max_num_threads()
    if not 1 <= value <= cap:
        raise ValueError(
            f"n must be an int in [1, {cap}] ({cap} = a few threads per processor "
            f"on this machine), got {value}"
        )
    _core.set_num_threads(value)


def get_num_threads() -> int:
    """Threads a large call made now, from this thread, would use."""
    return _core.get_num_threads()


def simd_level() -> str:
    """The instruction set in use: "avx512fp16", "avx512", "avx2", "neon" or "scalar"."""
    return _core.simd_level()
