"""The fused dropout + residual add operators (namespace ``fastdropout``) and
their autograd; see ``_ops`` for the conventions (``rng``, ``keep``, the direct
eager calls).

- ``dropout_add(x, residual, bias, rng, p, mode, axes, training, keep)
  -> (y, bits)``: ``residual + dropout(x + bias)`` in one pass.
- ``dropout_add_bias_grad(grad, saved, p, mode, axes, regenerate, bias_ndim)
  -> (grad_x, grad_bias)``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

import fastdropout

from ..mask import Mask
from ._convert import as_numpy, from_numpy, new_like
from ._ops import (
    base_apply,
    bits_of,
    mask_size,
    no_bits,
    plain_eager,
    run_backward,
    run_forward,
    seed_offset,
    unwrap_dead_wrappers,
)

__all__ = [
    "DropoutAdd",
    "apply_dropout_add",
    "dropout_add",
    "dropout_add_bias_grad",
    "run_dropout_add",
    "run_dropout_add_bias_grad",
]

_C: Any = torch._C
_fd: Any = fastdropout


def dropout_add_impl(
    x: torch.Tensor,
    residual: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 (the schema parser wants Optional)
    rng: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    training: bool,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    seed, offset = seed_offset(rng)
    want = keep and training
    out = new_like(x, contiguous=True)
    r = _fd.dropout_add(
        as_numpy(x),
        as_numpy(residual),
        p,
        bias=None if bias is None else as_numpy(bias),
        training=training,
        mode=mode,
        seed=seed,
        offset=offset,
        broadcast_axes=tuple(axes) or None,
        out=as_numpy(out),
        return_mask=want,
    )
    return out, (bits_of(r[1]) if want else no_bits(x))


dropout_add = torch.library.custom_op(
    "fastdropout::dropout_add", dropout_add_impl, mutates_args=()
)


def run_dropout_add(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``dropout_add(*args)``, directly when :func:`plain_eager` holds for
    ``x``, ``residual`` and ``bias``."""
    x, residual, bias = args[:3]
    if plain_eager(x) and plain_eager(residual) and (bias is None or plain_eager(bias)):
        return dropout_add_impl(*args)
    return dropout_add(*args)  # type: ignore[no-any-return]


@dropout_add.register_fake
def _(
    x: torch.Tensor,
    residual: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045
    rng: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    training: bool,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    del residual, bias, rng, p, mode
    out = x.new_empty(x.shape)
    if keep and training:
        n = mask_size(x.shape, axes)
        return out, x.new_empty(((n + 7) // 8,), dtype=torch.uint8)
    return out, no_bits(x)


def dropout_add_bias_grad_impl(
    grad: torch.Tensor,
    saved: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    regenerate: bool,
    bias_ndim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    del bias_ndim  # the NumPy function takes it from the shapes
    gx = new_like(grad, contiguous=True)
    kw: dict[str, Any] = {"bias": True, "out": as_numpy(gx)}
    if regenerate:
        seed, offset = seed_offset(saved)
        kw.update(
            p=p, mode=mode, seed=seed, offset=offset, broadcast_axes=tuple(axes) or None
        )
        res = _fd.dropout_add_backward(as_numpy(grad), **kw)
    else:
        shape = tuple(1 if d in axes else s for d, s in enumerate(grad.shape))
        n = mask_size(grad.shape, axes)
        mask = Mask._new(saved.numpy(), shape, n, p, mode, 0, 0, tuple(axes))
        res = _fd.dropout_add_backward(as_numpy(grad), mask, **kw)
    return gx, from_numpy(np.asarray(res[2]))


dropout_add_bias_grad = torch.library.custom_op(
    "fastdropout::dropout_add_bias_grad", dropout_add_bias_grad_impl, mutates_args=()
)


def run_dropout_add_bias_grad(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``dropout_add_bias_grad(*args)``, directly when :func:`plain_eager`."""
    if plain_eager(args[0]):
        return dropout_add_bias_grad_impl(*args)
    return dropout_add_bias_grad(*args)  # type: ignore[no-any-return]


@dropout_add_bias_grad.register_fake
def _(
    grad: torch.Tensor,
    saved: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    regenerate: bool,
    bias_ndim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    del saved, p, mode, axes, regenerate
    lead = grad.ndim - bias_ndim
    return grad.new_empty(grad.shape), grad.new_empty(grad.shape[lead:])


def _add_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    _x, _residual, bias, rng, p, mode, axes, training, keep = inputs
    ctx.p, ctx.mode, ctx.axes, ctx.training = p, mode, axes, training
    ctx.regenerate = not keep
    ctx.bias_ndim = -1 if bias is None else bias.ndim
    ctx.save_for_backward(output[1] if keep and training else rng)


def _add_backward(ctx: Any, grad: torch.Tensor, _grad_bits: Any) -> tuple[Any, ...]:
    (saved,) = ctx.saved_tensors
    gb = None
    if ctx.training and ctx.bias_ndim >= 0:
        gx, gb = run_dropout_add_bias_grad(
            grad, saved, ctx.p, ctx.mode, ctx.axes, ctx.regenerate, ctx.bias_ndim
        )
        return gx, grad, gb, None, None, None, None, None, None
    if ctx.training:
        gx = run_backward(grad, saved, ctx.p, ctx.mode, ctx.axes, ctx.regenerate)
    elif ctx.mode == "classic":
        gx = run_forward(grad, saved, ctx.p, ctx.mode, ctx.axes, False, False)[0]
    else:
        gx = grad
    if ctx.bias_ndim >= 0:  # evaluation: summed in float64, rounded once
        lead = tuple(range(grad.ndim - ctx.bias_ndim))
        gb = gx.to(torch.float64).sum(dim=lead).to(grad.dtype)
    return gx, grad, gb, None, None, None, None, None, None


dropout_add.register_autograd(_add_backward, setup_context=_add_setup)


class DropoutAdd(torch.autograd.Function):
    """``dropout_add`` for the functorch transforms (see :class:`Forward`)."""

    @staticmethod
    def forward(*args: Any) -> Any:
        return run_dropout_add(*args)

    setup_context = staticmethod(_add_setup)
    backward = staticmethod(_add_backward)


def apply_dropout_add(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``DropoutAdd.apply`` (typed; see :func:`apply_forward`)."""
    if _C._are_functorch_transforms_active():
        return DropoutAdd.apply(*args)  # type: ignore[no-untyped-call,no-any-return]
    return base_apply(DropoutAdd)(*unwrap_dead_wrappers(args))  # type: ignore[no-any-return]
