"""A small NumPy neural-network toolkit for the demo.

Every layer has ``forward(x, training)`` and ``backward(grad_y) -> grad_x``; layers
with weights keep them in :class:`Param` objects (value + gradient). Dropout is
fastdropout's own :class:`fastdropout.Dropout` / :class:`fastdropout.SpatialDropout`,
wrapped in :class:`Drop` only so that a model can rewind its random streams
(:meth:`Sequential.reset_dropout`), which the gradient check uses to evaluate the
loss twice under the same masks.

Nothing here is fast or general; it is as short as a correct implementation gets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

import fastdropout

Array = npt.NDArray[Any]

__all__ = [
    "Adam",
    "AvgPool2",
    "Conv2D",
    "Dense",
    "Drop",
    "Flatten",
    "Layer",
    "Param",
    "ReLU",
    "Sequential",
    "build_convnet",
    "build_mlp",
    "softmax",
    "softmax_cross_entropy",
]


class Layer(Protocol):
    def forward(self, x: Array, training: bool = False) -> Array: ...

    def backward(self, grad_y: Array) -> Array: ...


class Param:
    """A weight array and its gradient (same shape and dtype)."""

    __slots__ = ("grad", "name", "value")

    def __init__(self, name: str, value: Array) -> None:
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)


class Dense:
    """``y = x @ W + b`` with ``W`` of shape (in, out)."""

    def __init__(self, w: Array, b: Array) -> None:
        self.w = Param("W", w)
        self.b = Param("b", b)
        self._x: Array | None = None

    @classmethod
    def init(
        cls, n_in: int, n_out: int, rng: np.random.Generator, dtype: npt.DTypeLike
    ) -> Dense:
        # He initialisation for ReLU networks.
        w = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
        return cls(w.astype(dtype), np.zeros(n_out, dtype=dtype))

    @property
    def params(self) -> list[Param]:
        return [self.w, self.b]

    def forward(self, x: Array, training: bool = False) -> Array:  # noqa: ARG002
        self._x = x
        y: Array = x @ self.w.value + self.b.value
        return y

    def backward(self, grad_y: Array) -> Array:
        assert self._x is not None, "backward() before forward()"
        self.w.grad[...] = self._x.T @ grad_y
        self.b.grad[...] = grad_y.sum(axis=0)
        grad_x: Array = grad_y @ self.w.value.T
        return grad_x


class ReLU:
    def __init__(self) -> None:
        self._pos: Array | None = None

    def forward(self, x: Array, training: bool = False) -> Array:  # noqa: ARG002
        self._pos = x > 0
        return np.where(self._pos, x, x.dtype.type(0))

    def backward(self, grad_y: Array) -> Array:
        assert self._pos is not None, "backward() before forward()"
        return np.where(self._pos, grad_y, grad_y.dtype.type(0))


class Flatten:
    def __init__(self) -> None:
        self._shape: tuple[int, ...] = ()

    def forward(self, x: Array, training: bool = False) -> Array:  # noqa: ARG002
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_y: Array) -> Array:
        return grad_y.reshape(self._shape)


class Conv2D:
    """3x3 (or k x k) convolution, stride 1, 'same' zero padding, via im2col.

    Input ``(N, C, H, W)``, weights ``(C_out, C, k, k)``, output ``(N, C_out, H, W)``.
    """

    def __init__(self, w: Array, b: Array) -> None:
        self.w = Param("W", w)
        self.b = Param("b", b)
        self.k = int(w.shape[-1])
        self.pad = self.k // 2
        self._cols: Array | None = None
        self._xshape: tuple[int, ...] = ()

    @classmethod
    def init(
        cls,
        c_in: int,
        c_out: int,
        rng: np.random.Generator,
        dtype: npt.DTypeLike,
        k: int = 3,
    ) -> Conv2D:
        fan_in = c_in * k * k
        w = rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in)
        return cls(w.astype(dtype), np.zeros(c_out, dtype=dtype))

    @property
    def params(self) -> list[Param]:
        return [self.w, self.b]

    def forward(self, x: Array, training: bool = False) -> Array:  # noqa: ARG002
        n, c, h, w = x.shape
        p, k = self.pad, self.k
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
        # (N, C, H, W, k, k) -> rows (n, y, x), columns (c, i, j)
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * k * k)
        self._cols = cols
        self._xshape = x.shape
        wmat = self.w.value.reshape(self.w.value.shape[0], -1)
        y = cols @ wmat.T + self.b.value
        out: Array = y.reshape(n, h, w, -1).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)

    def backward(self, grad_y: Array) -> Array:
        assert self._cols is not None, "backward() before forward()"
        n, c, h, w = self._xshape
        p, k = self.pad, self.k
        c_out = grad_y.shape[1]
        g = grad_y.transpose(0, 2, 3, 1).reshape(-1, c_out)
        wmat = self.w.value.reshape(c_out, -1)
        self.w.grad[...] = (g.T @ self._cols).reshape(self.w.value.shape)
        self.b.grad[...] = g.sum(axis=0)
        dcols = (g @ wmat).reshape(n, h, w, c, k, k)
        dxp = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=grad_y.dtype)
        for i in range(k):
            for j in range(k):
                dxp[:, :, i : i + h, j : j + w] += dcols[:, :, :, :, i, j].transpose(
                    0, 3, 1, 2
                )
        return dxp[:, :, p : p + h, p : p + w]


class AvgPool2:
    """2x2 average pooling, stride 2 (H and W must be even)."""

    def forward(self, x: Array, training: bool = False) -> Array:  # noqa: ARG002
        n, c, h, w = x.shape
        y: Array = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
        return y

    def backward(self, grad_y: Array) -> Array:
        g = grad_y * grad_y.dtype.type(0.25)
        return np.repeat(np.repeat(g, 2, axis=2), 2, axis=3)


class Drop:
    """fastdropout's Dropout or SpatialDropout (channels_first), rewindable.

    The wrapped layer is a plain ``fastdropout.Dropout(p, seed=seed)`` (or
    ``SpatialDropout``): each training call draws a fresh mask from the next stream
    position, evaluation calls are the identity, ``backward`` reuses the mask of the
    last forward. :meth:`reset` replaces it by a new layer with the same seed, so the
    next training call draws the same mask as the first one did.
    """

    def __init__(self, p: float, seed: int, *, spatial: bool = False) -> None:
        self.p = float(p)
        self.seed = int(seed)
        self.spatial = spatial
        self.layer = self._make()

    def _make(self) -> fastdropout.Dropout:
        if self.spatial:
            return fastdropout.SpatialDropout(
                self.p, data_format="channels_first", seed=self.seed
            )
        return fastdropout.Dropout(self.p, seed=self.seed)

    def reset(self) -> None:
        """Start again from stream position 0 (a fresh layer, same seed)."""
        self.layer = self._make()

    def forward(self, x: Array, training: bool = False) -> Array:
        y: Array = self.layer.forward(x, training=training)
        return y

    def backward(self, grad_y: Array) -> Array:
        g: Array = self.layer.backward(grad_y)
        return g

    def __repr__(self) -> str:
        kind = "SpatialDropout" if self.spatial else "Dropout"
        return f"Drop({kind}, p={self.p})"


class Sequential:
    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    def forward(self, x: Array, training: bool = False) -> Array:
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def backward(self, grad_y: Array) -> Array:
        for layer in reversed(self.layers):
            grad_y = layer.backward(grad_y)
        return grad_y

    @property
    def params(self) -> list[Param]:
        out: list[Param] = []
        for layer in self.layers:
            out.extend(getattr(layer, "params", []))
        return out

    def dropouts(self) -> Iterator[Drop]:
        return (layer for layer in self.layers if isinstance(layer, Drop))

    def reset_dropout(self) -> None:
        """Rewind every dropout layer to the start of its random stream."""
        for d in self.dropouts():
            d.reset()

    def state(self) -> dict[str, Array]:
        """Weights by name (``"<layer index>.<W|b>"``), copies."""
        return {
            f"{i}.{p.name}": p.value.copy()
            for i, layer in enumerate(self.layers)
            for p in getattr(layer, "params", [])
        }


def softmax(logits: Array) -> Array:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[float, Array]:
    """Mean cross-entropy of integer ``labels`` and its gradient w.r.t. ``logits``."""
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = z - logsum
    loss = -float(logp[np.arange(n), labels].mean())
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1
    grad /= n
    return loss, grad.astype(logits.dtype, copy=False)


class Adam:
    """Adam (Kingma & Ba) on a list of :class:`Param`."""

    def __init__(
        self,
        params: Sequence[Param],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.t = 0
        self.m = [np.zeros_like(p.value) for p in self.params]
        self.v = [np.zeros_like(p.value) for p in self.params]

    def step(self) -> None:
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * p.grad
            v *= self.b2
            v += (1 - self.b2) * p.grad * p.grad
            p.value -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)


def _dropout_seeds(seed: int, n: int) -> list[int]:
    rng = np.random.default_rng([seed, 0xD0])
    return [int(s) for s in rng.integers(0, 2**63, size=n)]


def build_mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    *,
    p_input: float,
    p_hidden: float,
    seed: int,
    dtype: npt.DTypeLike = np.float32,
) -> Sequential:
    """Dropout(p_input) -> [Dense -> ReLU -> Dropout(p_hidden)] * len(hidden) -> Dense.

    The weights depend on ``seed`` only (not on the rates), so two models built with
    the same seed start from the same point. No dropout on the output layer.
    """
    rng = np.random.default_rng(seed)
    seeds = _dropout_seeds(seed, len(hidden) + 1)
    layers: list[Layer] = [Drop(p_input, seeds[0])]
    width = n_in
    for i, h in enumerate(hidden):
        layers += [
            Dense.init(width, h, rng, dtype),
            ReLU(),
            Drop(p_hidden, seeds[i + 1]),
        ]
        width = h
    layers.append(Dense.init(width, n_out, rng, dtype))
    return Sequential(layers)


def build_convnet(
    image_shape: tuple[int, int],
    channels: Sequence[int],
    n_out: int,
    *,
    p_spatial: float,
    p_hidden: float,
    seed: int,
    dtype: npt.DTypeLike = np.float32,
) -> Sequential:
    """[Conv3x3 -> ReLU -> SpatialDropout(p_spatial)] * len(channels) -> AvgPool2 ->
    Flatten -> Dropout(p_hidden) -> Dense. Input ``(N, 1, H, W)``."""
    rng = np.random.default_rng(seed)
    seeds = _dropout_seeds(seed, len(channels) + 1)
    layers: list[Layer] = []
    c_in = 1
    for i, c in enumerate(channels):
        layers += [
            Conv2D.init(c_in, c, rng, dtype),
            ReLU(),
            Drop(p_spatial, seeds[i], spatial=True),
        ]
        c_in = c
    h, w = image_shape
    flat = c_in * (h // 2) * (w // 2)
    layers += [
        AvgPool2(),
        Flatten(),
        Drop(p_hidden, seeds[-1]),
        Dense.init(flat, n_out, rng, dtype),
    ]
    return Sequential(layers)
