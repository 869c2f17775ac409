"""fastdropout for PyTorch: functions and ``torch.nn``-style modules for CPU
tensors that give the same bits as the NumPy functions for the same
``(seed, offset, p, shape)``.

Registered as ``torch.library`` custom operators (namespace ``fastdropout``)
with fake and autograd implementations: eager mode, autograd,
``torch.compile(fullgraph=True)`` and ``torch.func.grad`` work. Needs PyTorch
(``pip install 'fastdropout[torch]'``, or ``pip install torch==2.13.0`` for a
CPU build). See the README section "PyTorch".
"""

from __future__ import annotations

try:
    import torch as _torch
except ImportError as _exc:
    raise ImportError(
        "fastdropout.torch needs PyTorch, which is not installed: "
        "pip install 'fastdropout[torch]' (or, for a CPU-only build, "
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)"
    ) from _exc

from ._cache import cache_info, empty_cache, set_cache_limit
from ._convert import decode, encode
from ._functions import alpha_dropout, dropout, dropout_add, spatial_dropout
from ._modules import (
    AlphaDropout,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    FeatureAlphaDropout,
)

__all__ = [
    "AlphaDropout",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "alpha_dropout",
    "cache_info",
    "decode",
    "dropout",
    "dropout_add",
    "empty_cache",
    "encode",
    "set_cache_limit",
    "spatial_dropout",
]

del _torch
