"""The custom operators (``torch.library.custom_op``) and their autograd.

Each operator runs a NumPy function of fastdropout on views of the tensors'
memory. ``register_fake`` gives their output shapes to ``torch.compile`` and
``torch.func``; ``register_autograd`` gives their gradients. The random state
travels as ``rng``: an int64 tensor ``[seed, offset]`` (bit patterns, see
``_convert.encode``), so a changing offset is data, not a recompile.

Operators (namespace ``fastdropout``):

- ``forward(x, rng, p, mode, axes, training, keep) -> (y, bits)``: dropout
  (``mode`` "inverted" or "classic") or alpha dropout (``mode="alpha"``) with
  one decision shared along ``axes``; ``bits`` is the 1-bit mask (``keep`` and
  ``training``) or empty.
- ``forward_(x, rng, p, mode, axes)``: the same in training, written into ``x``.
- ``backward(grad, saved, p, mode, axes, regenerate) -> grad_x``: from the
  mask bits, or with ``regenerate`` from ``saved = rng``.
- ``advance_(state, n)``: adds ``n`` to ``state[1]`` modulo 2**64 (a module's
  stream position).

``dropout_add`` and its bias gradient are in ``_add_ops``. Eager calls that no
tracer, transform, mode, profiler or autograd can see call the implementations
directly (``plain_eager`` and the ``run_*`` functions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import fastdropout
from fastdropout import _core

from ..mask import Mask
from ._convert import Call, as_numpy, new_like, run_layout

__all__ = [
    "Forward",
    "advance_",
    "apply_forward",
    "backward",
    "base_apply",
    "bits_of",
    "forward",
    "forward_",
    "mask_size",
    "no_bits",
    "plain_eager",
    "run_advance_",
    "run_backward",
    "run_forward",
    "run_forward_",
    "seed_offset",
    "unwrap_dead_wrappers",
]

_EMPTY_BITS = (0,)
_C: Any = torch._C
_is_compiling = torch.compiler.is_compiling
_increment_version = torch.autograd.graph.increment_version
unwrap_dead_wrappers = torch._functorch.utils.unwrap_dead_wrappers


def base_apply(cls: type[torch.autograd.Function]) -> Any:
    """The C++ ``apply`` of ``cls`` (what ``Function.apply`` calls last)."""
    return super(torch.autograd.Function, cls).apply  # type: ignore[misc]


# The NumPy API, called with values checked at run time (a mode is a str here,
# not one of the Literal types its overloads name).
_fd: Any = fastdropout
_dense = _core.dense
_DENSE_DTYPES = (torch.float16, torch.float32, torch.float64)


def seed_offset(rng: torch.Tensor) -> tuple[int, int]:
    """The int64 bit patterns of ``rng`` as values in ``[0, 2**64)`` (the
    uint64 view is :func:`decode` of each)."""
    seed, offset = rng.numpy().view(np.uint64).tolist()
    return seed, offset


def mask_size(shape: Any, axes: list[int]) -> Any:
    n: Any = 1
    for d, s in enumerate(shape):
        if d not in axes:
            n = n * s
    return n


def bits_of(mask: Mask) -> torch.Tensor:
    bits = mask.bits
    try:  # the array is the mask's own, made for this call: hand it over
        bits.setflags(write=True)
    except ValueError:
        bits = bits.copy()
    return torch.from_numpy(bits)


def no_bits(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(_EMPTY_BITS, dtype=torch.uint8)


# ---- eager calls without the dispatcher ------------------------------------------
# Going through a Python custom operator costs tens of microseconds per call
# (the autograd, ADInplaceOrView and backend kernels are Python functions, each
# redispatching). The operator's only work beyond its implementation is routing:
# to fake tensors, tracing, functorch transforms, dispatch or function modes, the
# profiler, and autograd. When none of them can see the call, the implementation
# is called directly; it computes the same bits (tests/test_torch_fast.py).


def plain_eager(t: torch.Tensor) -> bool:
    """True when ``t`` is a plain tensor that autograd does not record and no
    compiler, transform, mode or profiler is active: an operator call would
    reach its CPU implementation unchanged."""
    return (
        type(t) is torch.Tensor
        and not (t.requires_grad and _C.is_grad_enabled())
        and not _is_compiling()
        and _C._len_torch_dispatch_stack() == 0
        and not _C._is_torch_function_mode_enabled()
        and _C._functorch.peek_interpreter_stack() is None
        and not _C._autograd._profiler_enabled()
        and _C._get_tracing_state() is None  # torch.jit.trace
    )


def run_forward(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward(*args)``, directly when :func:`plain_eager`."""
    if plain_eager(args[0]):
        return forward_impl(*args)
    return forward(*args)  # type: ignore[no-any-return]


def run_backward(*args: Any) -> torch.Tensor:
    """``backward(*args)``, directly when :func:`plain_eager`."""
    if plain_eager(args[0]):
        return backward_impl(*args)
    return backward(*args)  # type: ignore[no-any-return]


def run_forward_(
    x: torch.Tensor, rng: torch.Tensor, p: float, mode: str, axes: list[int]
) -> None:
    """``forward_`` (in place), directly when :func:`plain_eager`; the direct
    call bumps ``x``'s version counter as the operator does, so autograd still
    refuses a backward through a saved tensor that was overwritten."""
    if plain_eager(x):
        forward_impl_(x, rng, p, mode, axes)
        _increment_version(x)
    else:
        forward_(x, rng, p, mode, axes)


# ---- forward --------------------------------------------------------------------


def forward_impl(
    x: torch.Tensor,
    rng: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    training: bool,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    seed, offset = seed_offset(rng)
    want = keep and training
    out = new_like(x)
    if training and not axes and mode != "alpha" and x.dtype in _DENSE_DTYPES:
        # The NumPy API's one-call path (fastdropout.dropout tries the same
        # core function first); the mask bits come back as a new uint8 array.
        # None: not plain (not contiguous, say), and nothing was written.
        r = _dense(as_numpy(x), p, mode, seed, offset, as_numpy(out), want)
        if r is not None:
            return (out, torch.from_numpy(r[1])) if want else (out, no_bits(x))
    masks: list[Mask] = []

    def call(xa: Any, ax: tuple[int, ...], _perm: Any, oa: Any) -> Any:
        kw: dict[str, Any] = {
            "training": training,
            "seed": seed,
            "offset": offset,
            "broadcast_axes": ax or None,
            "out": oa,
            "return_mask": want,
        }
        if mode == "alpha":
            r = _fd.alpha_dropout(xa, p, **kw)
        else:
            r = _fd.dropout(xa, p, mode=mode, **kw)
        if want:
            masks.append(r[1])
            return r[0]
        return r

    out = run_layout(x, out, tuple(axes), call)
    return out, (bits_of(masks[0]) if want else no_bits(x))


forward = torch.library.custom_op("fastdropout::forward", forward_impl, mutates_args=())


@forward.register_fake
def _(
    x: torch.Tensor,
    rng: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    training: bool,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    del rng, p, mode
    if keep and training:
        n = mask_size(x.shape, axes)
        return torch.empty_like(x), x.new_empty(((n + 7) // 8,), dtype=torch.uint8)
    return torch.empty_like(x), no_bits(x)


def _forward_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    _x, rng, p, mode, axes, training, keep = inputs
    ctx.p, ctx.mode, ctx.axes, ctx.training = p, mode, axes, training
    ctx.regenerate = not keep
    ctx.save_for_backward(output[1] if keep and training else rng)


def _forward_backward(ctx: Any, grad: torch.Tensor, _grad_bits: Any) -> tuple[Any, ...]:
    (saved,) = ctx.saved_tensors
    if ctx.training:
        g = run_backward(grad, saved, ctx.p, ctx.mode, ctx.axes, ctx.regenerate)
    else:  # evaluation is a diagonal linear map: its own adjoint
        g = run_forward(grad, saved, ctx.p, ctx.mode, ctx.axes, False, False)[0]
    return g, None, None, None, None, None, None


forward.register_autograd(_forward_backward, setup_context=_forward_setup)


def _batched_axes(axes: list[int]) -> list[int]:
    """The broadcast axes of a call that prepends a batch axis, which is one of
    them: the mask stays the un-batched call's (docs/spec.md section 4 numbers
    a mask over its non-broadcast axes only)."""
    return [0, *(a + 1 for a in axes)]


def _per_example(op: Any, batch: int, in_dims: tuple[Any, ...], args: tuple[Any, ...]) -> Any:
    """op once per example (a batched random state: a stream per example)."""
    results = []
    for i in range(batch):
        results.append(op(*(a if d is None else a.select(d, i) for a, d in zip(args, in_dims))))
    return results


def _forward_vmap(
    info: Any, in_dims: tuple[Any, ...], x: torch.Tensor, rng: torch.Tensor, p: float,
    mode: str, axes: list[int], training: bool, keep: bool,
) -> Any:
    """vmap over x: one call in which the batch axis is broadcast, so every example
    gets the mask of one un-batched call, as the per-example fallback would, at the
    cost of one call. A batched [seed, offset] runs each example on its own."""
    x_dim, rng_dim = in_dims[0], in_dims[1]
    if rng_dim is not None:
        rs = _per_example(
            forward, info.batch_size, in_dims,
            (x, rng, p, mode, axes, training, keep),
        )
        return (torch.stack([r[0] for r in rs]), torch.stack([r[1] for r in rs])), (0, 0)
    out, bits = forward(x.movedim(x_dim, 0), rng, p, mode, _batched_axes(axes), training, keep)
    return (out, bits), (0, None)


forward.register_vmap(_forward_vmap)


class Forward(torch.autograd.Function):
    """``forward`` as an autograd.Function with a ``setup_context``: the
    functorch transforms (``torch.func.grad``, ``vjp``, ``jacrev``) need one, and
    the function registered by ``register_autograd`` lacks it (pytorch#168393).
    Under vmap, forward and backward are mapped through the operators' own
    batching rules."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args: Any) -> Any:
        return run_forward(*args)

    setup_context = staticmethod(_forward_setup)
    backward = staticmethod(_forward_backward)


def apply_forward(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``Forward.apply`` (typed). Without functorch transforms this is the
    C++ ``apply`` that ``Function.apply`` ends in, minus its binding of the
    arguments to ``forward``'s signature with ``inspect`` (a third of an eager
    call at 2**10 elements; ``forward`` takes ``*args``, so the binding
    changes nothing)."""
    if _C._are_functorch_transforms_active():
        return Forward.apply(*args)  # type: ignore[no-untyped-call,no-any-return]
    return base_apply(Forward)(*unwrap_dead_wrappers(args))  # type: ignore[no-any-return]


def forward_impl_(
    x: torch.Tensor, rng: torch.Tensor, p: float, mode: str, axes: list[int]
) -> None:
    """Training-mode ``forward`` written into ``x`` itself (no autograd: for
    ``inplace=True`` calls that record no gradient)."""
    seed, offset = seed_offset(rng)

    def call(xa: Any, ax: tuple[int, ...], _perm: Any, oa: Any) -> Any:
        kw = {"seed": seed, "offset": offset, "broadcast_axes": ax or None, "out": oa}
        if mode == "alpha":
            return _fd.alpha_dropout(xa, p, **kw)
        return _fd.dropout(xa, p, mode=mode, **kw)

    run_layout(x, x, tuple(axes), call)


forward_ = torch.library.custom_op(
    "fastdropout::forward_", forward_impl_, mutates_args=("x",)
)


@forward_.register_fake
def _(x: torch.Tensor, rng: torch.Tensor, p: float, mode: str, axes: list[int]) -> None:
    del x, rng, p, mode, axes


# ---- backward -------------------------------------------------------------------


def _regenerated(rng: torch.Tensor, p: float, mode: str) -> Call:
    """A layout call: the gradient with the mask regenerated from ``rng``."""
    seed, offset = seed_offset(rng)

    def call(ga: Any, ax: tuple[int, ...], _perm: Any, oa: Any) -> Any:
        return _fd.dropout_backward(
            ga,
            p=p,
            mode=mode,
            seed=seed,
            offset=offset,
            broadcast_axes=ax or None,
            out=oa,
        )

    return call


def _stored(
    bits_t: torch.Tensor, grad: torch.Tensor, p: float, mode: str, axes: list[int]
) -> Call:
    """A layout call: the gradient from the stored mask bits (numbered over the
    logical mask shape; a view permutes the shape, not the numbering)."""
    bits = bits_t.numpy()
    shape = tuple(1 if d in axes else s for d, s in enumerate(grad.shape))
    n = mask_size(grad.shape, axes)

    def call(ga: Any, ax: tuple[int, ...], perm: Any, oa: Any) -> Any:
        mask = Mask._new(bits, tuple(shape[d] for d in perm), n, p, mode, 0, 0, ax)
        return _fd.dropout_backward(ga, mask, out=oa)

    return call


def backward_impl(
    grad: torch.Tensor,
    saved: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    regenerate: bool,
) -> torch.Tensor:
    call = (
        _regenerated(saved, p, mode)
        if regenerate
        else _stored(saved, grad, p, mode, axes)
    )
    return run_layout(grad, new_like(grad), tuple(axes), call)


backward = torch.library.custom_op(
    "fastdropout::backward", backward_impl, mutates_args=()
)


@backward.register_fake
def _(
    grad: torch.Tensor,
    saved: torch.Tensor,
    p: float,
    mode: str,
    axes: list[int],
    regenerate: bool,
) -> torch.Tensor:
    del saved, p, mode, axes, regenerate
    return torch.empty_like(grad)


def _backward_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    del output
    _grad, saved, ctx.p, ctx.mode, ctx.axes, ctx.regenerate = inputs
    ctx.save_for_backward(saved)


def _backward_backward(ctx: Any, gg: torch.Tensor) -> tuple[Any, ...]:
    # backward() is linear in grad with a diagonal matrix: its own adjoint.
    (saved,) = ctx.saved_tensors
    g = backward(gg, saved, ctx.p, ctx.mode, ctx.axes, ctx.regenerate)
    return g, None, None, None, None, None


backward.register_autograd(_backward_backward, setup_context=_backward_setup)


def _backward_vmap(
    info: Any, in_dims: tuple[Any, ...], grad: torch.Tensor, saved: torch.Tensor, p: float,
    mode: str, axes: list[int], regenerate: bool,
) -> Any:
    """vmap over grad with one mask (or [seed, offset]) for every example, as
    _forward_vmap makes it; a batched mask runs each example on its own."""
    g_dim, s_dim = in_dims[0], in_dims[1]
    if s_dim is not None or g_dim is None:
        rs = _per_example(
            backward, info.batch_size, in_dims,
            (grad, saved, p, mode, axes, regenerate),
        )
        return torch.stack(rs), 0
    return backward(grad.movedim(g_dim, 0), saved, p, mode, _batched_axes(axes), regenerate), 0


backward.register_vmap(_backward_vmap)


# ---- stream position of a module ------------------------------------------------


def advance_impl_(state: torch.Tensor, n: int) -> None:
    pair = state.numpy().view(np.uint64)
    pair[1:] += np.uint64(n)  # an array add: wraps modulo 2**64


advance_ = torch.library.custom_op(
    "fastdropout::advance_", advance_impl_, mutates_args=("state",)
)


def run_advance_(state: torch.Tensor, n: int) -> None:
    """``advance_``, directly when :func:`plain_eager` (bumping the version
    counter as the operator does)."""
    if plain_eager(state):
        advance_impl_(state, n)
        _increment_version(state)
    else:
        advance_(state, n)


@advance_.register_fake
def _(state: torch.Tensor, n: int) -> None:
    del state, n
