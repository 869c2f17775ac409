"""Tensors to NumPy views and back, layouts, and the seed/offset encoding.

Everything here is a view: a CPU tensor and the array from ``Tensor.numpy()``
share memory, and bfloat16 goes through an int16 view of the same bytes
reinterpreted as ``ml_dtypes.bfloat16``.

Seeds and offsets are integers in ``[0, 2**64)`` (docs/spec.md section 2). In a
tensor they are stored as int64 *bit patterns*: a value ``v >= 2**63`` is held
as ``v - 2**64`` (two's complement, the same bytes as a uint64).
"""

from __future__ import annotations

import importlib
import operator
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from .._seed import resolve_seed
from ._cache import CACHE

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "as_numpy",
    "check_tensor",
    "decode",
    "encode",
    "from_numpy",
    "new_like",
    "rng_tensor",
    "run_layout",
]

_TWO_63 = 1 << 63
_TWO_64 = 1 << 64
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_bf16_dtype: list[np.dtype[Any]] = []


def _bfloat16() -> np.dtype[Any]:
    """``numpy.dtype(ml_dtypes.bfloat16)``, importing ml_dtypes on first use."""
    if not _bf16_dtype:
        try:
            module = importlib.import_module("ml_dtypes")
        except ImportError as exc:
            raise ImportError(
                "bfloat16 tensors need the ml_dtypes package: "
                "pip install 'fastdropout[torch]' (or pip install ml_dtypes)"
            ) from exc
        _bf16_dtype.append(np.dtype(module.bfloat16))
    return _bf16_dtype[0]


def check_tensor(x: object, name: str, fn: str) -> torch.Tensor:
    """A CPU tensor of a float dtype the kernels take, else TypeError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"fastdropout.torch.{fn}: {name} must be a torch.Tensor, "
            f"got {type(x).__name__}"
        )
    if x.device.type != "cpu":
        raise TypeError(
            f"fastdropout.torch.{fn} takes CPU tensors only, but {name} is on "
            f"{x.device}; fastdropout never copies between devices (move it with "
            ".cpu() yourself, or use torch.nn.functional dropout on that device)"
        )
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"fastdropout.torch.{fn}: {name} has dtype {x.dtype}; it takes "
            "torch.float16, torch.bfloat16, torch.float32 or torch.float64"
        )
    return x


def as_numpy(t: torch.Tensor) -> npt.NDArray[Any]:
    """The tensor's memory as a NumPy array (no copy, any strides)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()


def from_numpy(a: npt.NDArray[Any]) -> torch.Tensor:
    """A tensor sharing ``a``'s memory (bfloat16 through an int16 view)."""
    if _bf16_dtype and a.dtype == _bf16_dtype[0]:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


_NP_OF: dict[torch.dtype, np.dtype[Any]] = {
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.bfloat16: np.dtype(np.int16),  # viewed as bfloat16 below
}


def new_like(x: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    """An uninitialised tensor with ``x``'s shape and dtype, laid out like
    ``torch.empty_like(x)`` (or C-contiguous). C-contiguous ones of 1 MiB or
    more come from the buffer cache (``_cache``), smaller ones from NumPy's
    allocator."""
    if not (contiguous or x.is_contiguous()):
        return torch.empty_like(x)
    t = torch.from_numpy(CACHE.empty_array(tuple(x.shape), _NP_OF[x.dtype]))
    return t.view(torch.bfloat16) if x.dtype == torch.bfloat16 else t


def encode(value: int) -> int:
    """A value in ``[0, 2**64)`` as the int64 with the same 64 bits."""
    return value - _TWO_64 if value >= _TWO_63 else value


def decode(value: int) -> int:
    """The inverse of :func:`encode`: an int64 bit pattern as a value in
    ``[0, 2**64)``."""
    return value + _TWO_64 if value < 0 else value


def _int_tensor(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype != torch.int64 or t.ndim != 0 or t.device.type != "cpu":
        raise TypeError(
            f"{name} given as a tensor must be a 0-d torch.int64 CPU tensor holding "
            f"the 64-bit pattern of the value, got dtype {t.dtype}, shape "
            f"{tuple(t.shape)} on {t.device}"
        )
    return t


def _draw(generator: torch.Generator) -> int:
    """One 64-bit draw from a torch.Generator (the full int64 range)."""
    t = torch.empty((), dtype=torch.int64)
    t.random_(-_TWO_63, None, generator=generator)
    return decode(int(t))


def rng_tensor(seed: object, offset: object) -> torch.Tensor:
    """``tensor([seed, offset], dtype=int64)`` in the encoding of :func:`encode`.

    ``seed``: an int in ``[0, 2**64)``, a ``torch.Generator`` or
    ``numpy.random.Generator`` (one 64-bit draw), ``None`` (fresh from the OS)
    or a 0-d int64 tensor (a bit pattern). ``offset``: an int in
    ``[0, 2**64)`` or a 0-d int64 tensor. Tensors are not read here, so a
    changing seed or offset does not recompile a compiled function.
    """
    if isinstance(seed, torch.Tensor) or isinstance(offset, torch.Tensor):
        s = (
            _int_tensor(seed, "seed")
            if isinstance(seed, torch.Tensor)
            else torch.tensor(encode(_seed_int(seed)), dtype=torch.int64)
        )
        o = (
            _int_tensor(offset, "offset")
            if isinstance(offset, torch.Tensor)
            else torch.tensor(encode(_offset_int(offset)), dtype=torch.int64)
        )
        return torch.stack((s, o))
    pair = [encode(_seed_int(seed)), encode(_offset_int(offset))]
    if torch.compiler.is_compiling():
        return torch.tensor(pair, dtype=torch.int64)
    return torch.from_numpy(np.array(pair, dtype=np.int64))  # a few times quicker


def _seed_int(seed: object) -> int:
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise TypeError(
                f"seed: a torch.Generator on {seed.device} cannot seed CPU dropout; "
                "pass a CPU generator or an int"
            )
        return _draw(seed)
    return resolve_seed(seed)


def _offset_int(offset: object) -> int:
    if isinstance(offset, (bool, np.bool_)):
        raise TypeError(f"offset must be an integer in [0, 2**64), got {offset!r}")
    try:
        value = operator.index(offset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"offset must be an integer in [0, 2**64) or a 0-d int64 tensor, got "
            f"{offset!r} of type {type(offset).__name__}"
        ) from None
    if not 0 <= value < _TWO_64:
        raise ValueError(f"offset must be an integer in [0, 2**64), got {value}")
    return value


# ---- layouts ----------------------------------------------------------------------
# A kernel call wants C-contiguous memory numbered in C order over the mask shape.
# An output made with torch.empty_like(x) is dense in x's dimension order (for
# example channels_last). When that order keeps the mask's own axes in their
# relative order (spatial dropout on channels_last, any contiguous tensor), the
# call runs on permuted views of x and the output and the mask numbering is the
# same; otherwise it runs into a C-contiguous temporary that is then copied into
# the output (the only case with a temporary; the README says so).

# call(x_view, axes_view, perm, out_view or None) -> result array
Call = Callable[[Any, tuple[int, ...], tuple[int, ...], Any], Any]


def _dense_order(out: torch.Tensor) -> tuple[int, ...] | None:
    """Dims of ``out`` from the largest stride to the smallest, if permuting it
    by them gives a contiguous tensor."""
    strides = out.stride()
    perm = tuple(sorted(range(out.ndim), key=lambda d: (-strides[d], d)))
    if out.permute(perm).is_contiguous():
        return perm
    return None


def run_layout(
    x: torch.Tensor, out: torch.Tensor, axes: tuple[int, ...], call: Call
) -> torch.Tensor:
    """Run ``call(x_view, axes_view, perm, out_view)`` so that ``out`` gets
    the result in its own layout; ``perm[i]`` is the original dim of view dim
    ``i``. ``call`` with ``out_view=None`` returns a new C-contiguous array."""
    ndim = x.ndim
    identity = tuple(range(ndim))
    if out.is_contiguous():
        xa = as_numpy(x)
        # in place: the same array object, which the NumPy API's one-call path
        # recognises as ``out=x``
        call(xa, axes, identity, xa if out is x else as_numpy(out))
        return out
    perm = _dense_order(out)
    if perm is not None:
        shape = x.shape
        kept = [d for d in perm if d not in axes and shape[d] != 1]
        if kept == sorted(kept):
            where = {d: i for i, d in enumerate(perm)}
            view_axes = tuple(sorted(where[a] for a in axes))
            xv = as_numpy(x.permute(perm))
            ov = xv if out is x else as_numpy(out.permute(perm))
            call(xv, view_axes, perm, ov)
            return out
    out.copy_(from_numpy(call(as_numpy(x), axes, identity, None)))
    return out
