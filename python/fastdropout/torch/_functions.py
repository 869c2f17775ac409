"""The functional API: ``dropout``, ``spatial_dropout``, ``alpha_dropout`` and
``dropout_add`` for CPU tensors, with the NumPy functions' arguments.

Validation happens here, in Python, before the custom operators run; the
operators (``_ops``) only compute. See the README section "PyTorch".
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _validate as _v
from . import _add_ops, _ops
from ._convert import check_tensor, rng_tensor

__all__ = ["alpha_dropout", "dropout", "dropout_add", "spatial_dropout"]

_MASKS = ("store", "regenerate")


def check_mask(mask: object) -> bool:
    """``mask="store"`` (keep the 1-bit mask for backward) or ``"regenerate"``
    (keep only seed and offset); True for store."""
    if not isinstance(mask, str) or mask not in _MASKS:
        raise ValueError(f"mask must be one of {_MASKS}, got {mask!r}")
    return mask == "store"


def check_alpha_p(p: object) -> float:
    value = _v.check_p(p)
    if value >= 1.0:
        raise ValueError(f"p must be in [0, 1) for alpha dropout, got {value!r}")
    return value


def run(
    x: torch.Tensor,
    p: float,
    mode: str,
    axes: tuple[int, ...],
    training: bool,
    rng: torch.Tensor,
    keep: bool,
    inplace: bool,
) -> torch.Tensor:
    """The forward operator, with ``inplace`` written back into ``x``: in
    place when autograd records nothing, else through a new tensor that is
    copied into ``x`` (so autograd sees the copy)."""
    if inplace and training and not (x.requires_grad and torch.is_grad_enabled()):
        _ops.run_forward_(x, rng, p, mode, list(axes))
        return x
    args = (x, rng, p, mode, list(axes), training, keep)
    y = (_ops.apply_forward(*args) if _tracks(x) else _ops.run_forward(*args))[0]
    if inplace:
        return x.copy_(y)
    return y


def _tracks(t: torch.Tensor) -> bool:
    """Eager autograd records this call: it goes through the autograd.Function
    (which torch.func needs). Compiled code and calls that need no gradient use
    the operator itself, whose registered autograd torch.compile traces."""
    return (
        t.requires_grad
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def _identity(mode: str, training: bool) -> bool:
    """Evaluation that leaves ``x`` unchanged: ``x`` itself is the result (as
    torch.nn.functional.dropout returns it)."""
    return not training and mode != "classic"


def dropout(
    x: torch.Tensor,
    p: float = 0.5,
    *,
    training: bool = True,
    mode: str = "inverted",
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    inplace: bool = False,
    mask: str = "store",
) -> torch.Tensor:
    """Dropout of a CPU tensor, bit for bit ``fastdropout.dropout``.

    ``seed``: an int in ``[0, 2**64)``, a ``torch.Generator`` or
    ``numpy.random.Generator`` (one 64-bit draw), ``None`` (fresh from the OS),
    or a 0-d int64 tensor; ``offset``: an int in ``[0, 2**64)`` or a 0-d int64
    tensor. Tensors hold the value's 64-bit pattern (``v - 2**64`` for
    ``v >= 2**63``; see ``encode``) and are the way to pass a changing seed or
    offset to a compiled function without recompiling. ``mask="store"`` keeps
    the 1-bit mask (n/8 bytes) for backward, ``"regenerate"`` keeps only the
    seed and offset and recomputes it. ``inplace`` writes the result into
    ``x``. In evaluation (``training=False``) with ``mode="inverted"`` the
    result is ``x`` itself. Other arguments as ``fastdropout.dropout``
    (docs/spec.md sections 3 and 4).
    """
    x = check_tensor(x, "x", "dropout")
    p = _v.check_p(p)
    mode = _v.check_mode(mode)
    training = _v.check_flag(training, "training")
    keep = check_mask(mask)
    axes = _v.normalize_axes(broadcast_axes, x.ndim)
    if _identity(mode, training):
        return x
    return run(x, p, mode, axes, training, rng_tensor(seed, offset), keep, inplace)


def spatial_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    *,
    data_format: str = "channels_first",
    training: bool = True,
    mode: str = "inverted",
    seed: Any = None,
    offset: Any = 0,
    inplace: bool = False,
    mask: str = "store",
) -> torch.Tensor:
    """Dropout of whole feature maps of a 3-, 4- or 5-D CPU tensor, bit for bit
    ``fastdropout.spatial_dropout``. ``data_format`` names the *logical* axis
    order (``"channels_first"``: ``(N, C, *spatial)``); a tensor in the
    ``torch.channels_last`` memory format is ``channels_first`` here and keeps
    its memory format. Other arguments as :func:`dropout`."""
    x = check_tensor(x, "x", "spatial_dropout")
    p = _v.check_p(p)
    mode = _v.check_mode(mode)
    training = _v.check_flag(training, "training")
    keep = check_mask(mask)
    axes = _v.spatial_axes(x.ndim, _v.check_data_format(data_format))
    if _identity(mode, training):
        return x
    return run(x, p, mode, axes, training, rng_tensor(seed, offset), keep, inplace)


def alpha_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    *,
    training: bool = True,
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    inplace: bool = False,
    mask: str = "store",
) -> torch.Tensor:
    """Alpha dropout (self-normalising networks) of a CPU tensor, bit for bit
    ``fastdropout.alpha_dropout`` (docs/spec.md section 10): kept elements
    ``x * A + B``, dropped ones ``D``; ``p`` in ``[0, 1)``. Evaluation returns
    ``x`` itself. Other arguments as :func:`dropout`."""
    x = check_tensor(x, "x", "alpha_dropout")
    p = check_alpha_p(p)
    training = _v.check_flag(training, "training")
    keep = check_mask(mask)
    axes = _v.normalize_axes(broadcast_axes, x.ndim)
    if not training:
        return x
    return run(x, p, "alpha", axes, training, rng_tensor(seed, offset), keep, inplace)


def dropout_add(
    x: torch.Tensor,
    residual: torch.Tensor,
    p: float = 0.5,
    *,
    bias: torch.Tensor | None = None,
    training: bool = True,
    mode: str = "inverted",
    seed: Any = None,
    offset: Any = 0,
    broadcast_axes: int | tuple[int, ...] | None = None,
    mask: str = "store",
) -> torch.Tensor:
    """``residual + dropout(x + bias)`` in one pass, bit for bit
    ``fastdropout.dropout_add`` (docs/spec.md section 9). ``x``, ``residual``
    and ``bias`` have one dtype; ``residual`` has ``x``'s shape, ``bias`` the
    trailing shape of ``x``. The result is a new C-contiguous tensor.
    Gradients: ``residual`` gets the incoming gradient itself, ``x`` that of
    :func:`dropout`, ``bias`` its sum over the leading axes."""
    x = check_tensor(x, "x", "dropout_add")
    residual = check_tensor(residual, "residual", "dropout_add")
    if bias is not None:
        bias = check_tensor(bias, "bias", "dropout_add")
    for name, t in (("residual", residual), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(
                f"fastdropout.torch.dropout_add: {name} has dtype {t.dtype} but x "
                f"has {x.dtype}; they must be the same (no type promotion)"
            )
    if residual.shape != x.shape:
        raise ValueError(
            f"fastdropout.torch.dropout_add: residual has shape "
            f"{tuple(residual.shape)} but x has {tuple(x.shape)}"
        )
    if bias is not None and (
        bias.ndim > x.ndim or tuple(bias.shape) != tuple(x.shape[x.ndim - bias.ndim :])
    ):
        raise ValueError(
            f"fastdropout.torch.dropout_add: bias has shape {tuple(bias.shape)}; it "
            f"must equal the trailing axes of x's shape {tuple(x.shape)}"
        )
    p = _v.check_p(p)
    mode = _v.check_mode(mode)
    training = _v.check_flag(training, "training")
    keep = check_mask(mask)
    axes = _v.normalize_axes(broadcast_axes, x.ndim)
    rng = rng_tensor(seed, offset)
    args = (x, residual, bias, rng, p, mode, list(axes), training, keep)
    tracked = _tracks(x) or _tracks(residual) or (bias is not None and _tracks(bias))
    y = (
        _add_ops.apply_dropout_add(*args)
        if tracked
        else _add_ops.run_dropout_add(*args)
    )
    return y[0]
