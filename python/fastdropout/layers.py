"""Stateful dropout layers, framework-module style (SPEC section 6).

A layer resolves its seed once, at construction, and keeps a stream position
``offset``. Each training forward uses the mask elements at
``offset, offset + 1, ...`` and then advances ``offset`` by the mask size, so
every step drops a different subset, and the run is reproducible from the seed.
Evaluation calls consume nothing. ``backward(grad_y)`` applies the mask of the
last forward call.

The layers call a functional implementation held as class attributes, so
``fastdropout.reference`` reuses them with its pure-NumPy functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from . import _scales
from . import _validate as _v
from ._rowsum import round_sums, row_sums
from ._seed import resolve_seed

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from .mask import Mask

    FloatArray = npt.NDArray[np.floating[Any]]

__all__ = ["AlphaDropout", "Dropout", "DropoutAdd", "SpatialDropout"]

_TWO_64 = 1 << 64


def _native_dropout(*args: Any, **kwargs: Any) -> Any:
    from ._api import dropout

    return dropout(*args, **kwargs)


def _native_spatial(*args: Any, **kwargs: Any) -> Any:
    from ._api import spatial_dropout

    return spatial_dropout(*args, **kwargs)


def _native_backward(*args: Any, **kwargs: Any) -> Any:
    from ._api import dropout_backward

    return dropout_backward(*args, **kwargs)


class Dropout:
    """Element-wise dropout layer.

    ``Dropout(p=0.5, *, mode="inverted", seed=None)``: ``seed`` is an int in
    ``[0, 2**64)``, a ``numpy.random.Generator`` (one draw) or ``None`` (fresh
    from the OS); it is resolved once, here, into the int attribute ``seed``.
    """

    # The functional implementation (replaced by fastdropout.reference).
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(_native_dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(_native_backward)

    def __init__(self, p: float = 0.5, *, mode: str = "inverted", seed: object = None):
        self._p = _v.check_p(p)
        self._mode = _v.check_mode(mode)
        self._seed = resolve_seed(seed)
        self._offset = 0
        self._mask: Mask | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._last_training: bool | None = None

    # -- attributes ------------------------------------------------------------

    @property
    def p(self) -> float:
        return self._p

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def offset(self) -> int:
        """Stream position of the next training call (SPEC section 2)."""
        return self._offset

    @offset.setter
    def offset(self, value: int) -> None:
        self._offset = _v.check_offset(value)

    @property
    def mask(self) -> Mask | None:
        """Mask of the last forward call (None after an evaluation call)."""
        return self._mask

    # -- passes ------------------------------------------------------------------

    def _call(self, x: object, training: bool) -> tuple[FloatArray, Mask | None]:
        return type(self)._dropout_fn(  # type: ignore[no-any-return]
            x,
            self._p,
            training=training,
            mode=self._mode,
            seed=self._seed,
            offset=self._offset,
            return_mask=True,
        )

    def forward(self, x: npt.ArrayLike, training: bool = True) -> FloatArray:
        """``y`` for ``x``; in training, advances ``offset`` by the mask size."""
        train = _v.check_flag(training, "training")
        y, mask = self._call(x, train)
        self._mask = mask
        self._input_shape = y.shape
        self._last_training = train
        if mask is not None:
            self._offset = (self._offset + mask.size) % _TWO_64
        return y

    def __call__(self, x: npt.ArrayLike, training: bool = True) -> FloatArray:
        return self.forward(x, training)

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_x`` for ``grad_y`` with the mask of the last forward call.

        After an evaluation forward: a copy of ``grad_y`` (inverted) or
        ``grad_y * (1 - p)`` (classic). Before any forward: RuntimeError."""
        if self._last_training is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before any forward()"
            )
        g = _v.check_array(grad_y, "grad_y")
        if g.shape != self._input_shape:
            raise ValueError(
                f"grad_y has shape {g.shape}, but the last forward input had "
                f"shape {self._input_shape}"
            )
        if self._mask is None:
            # Evaluation is linear: the same map applies to the gradient.
            return type(self)._dropout_fn(  # type: ignore[no-any-return]
                g, self._p, training=False, mode=self._mode
            )
        return type(self)._backward_fn(g, self._mask)  # type: ignore[no-any-return]

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (
            f"{type(self).__module__.rsplit('.', 1)[0]}.{type(self).__name__}("
            f"p={self._p!r}{self._extra_repr()}, mode={self._mode!r}, "
            f"seed={self._seed}, offset={self._offset})"
        )


class SpatialDropout(Dropout):
    """Channel (feature-map) dropout layer for 3-, 4- and 5-D inputs.

    ``SpatialDropout(p=0.5, *, data_format="channels_first", mode="inverted",
    seed=None)``; see :class:`Dropout` and ``spatial_dropout``.
    """

    _spatial_fn: ClassVar[Callable[..., Any]] = staticmethod(_native_spatial)

    def __init__(
        self,
        p: float = 0.5,
        *,
        data_format: str = "channels_first",
        mode: str = "inverted",
        seed: object = None,
    ):
        self._data_format = _v.check_data_format(data_format)
        super().__init__(p, mode=mode, seed=seed)

    @property
    def data_format(self) -> str:
        return self._data_format

    def _call(self, x: object, training: bool) -> tuple[FloatArray, Mask | None]:
        return type(self)._spatial_fn(  # type: ignore[no-any-return]
            x,
            self._p,
            data_format=self._data_format,
            training=training,
            mode=self._mode,
            seed=self._seed,
            offset=self._offset,
            return_mask=True,
        )

    def _extra_repr(self) -> str:
        return f", data_format={self._data_format!r}"


def _native_dropout_add(*args: Any, **kwargs: Any) -> Any:
    from ._fused import dropout_add

    return dropout_add(*args, **kwargs)


def _native_dropout_add_backward(*args: Any, **kwargs: Any) -> Any:
    from ._fused import dropout_add_backward

    return dropout_add_backward(*args, **kwargs)


def _native_alpha(*args: Any, **kwargs: Any) -> Any:
    from ._alpha import alpha_dropout

    return alpha_dropout(*args, **kwargs)


class DropoutAdd(Dropout):
    """Fused dropout + residual add layer (docs/spec.md section 9):
    ``forward(x, residual, bias=None, training=True)`` gives
    ``residual + dropout(x + bias)`` in one pass; ``backward(grad_y)`` gives
    ``(grad_x, grad_residual, grad_bias)`` (``grad_residual`` is ``grad_y``
    itself; ``grad_bias`` is None when the last forward had no bias).

    ``DropoutAdd(p=0.5, *, mode="inverted", seed=None)``; the stream position
    advances as :class:`Dropout`'s does.
    """

    _add_fn: ClassVar[Callable[..., Any]] = staticmethod(_native_dropout_add)
    _add_backward_fn: ClassVar[Callable[..., Any]] = staticmethod(
        _native_dropout_add_backward
    )

    def __init__(self, p: float = 0.5, *, mode: str = "inverted", seed: object = None):
        super().__init__(p, mode=mode, seed=seed)
        self._bias_shape: tuple[int, ...] | None = None

    def forward(  # type: ignore[override]
        self,
        x: npt.ArrayLike,
        residual: npt.ArrayLike,
        bias: npt.ArrayLike | None = None,
        training: bool = True,
    ) -> FloatArray:
        """``y``; in training, advances ``offset`` by the mask size."""
        train = _v.check_flag(training, "training")
        y, mask = type(self)._add_fn(
            x,
            residual,
            self._p,
            bias=bias,
            training=train,
            mode=self._mode,
            seed=self._seed,
            offset=self._offset,
            return_mask=True,
        )
        self._mask = mask
        self._input_shape = y.shape
        self._last_training = train
        self._bias_shape = None if bias is None else _v.check_array(bias, "bias").shape
        if mask is not None:
            self._offset = (self._offset + mask.size) % _TWO_64
        return y  # type: ignore[no-any-return]

    def __call__(  # type: ignore[override]
        self,
        x: npt.ArrayLike,
        residual: npt.ArrayLike,
        bias: npt.ArrayLike | None = None,
        training: bool = True,
    ) -> FloatArray:
        return self.forward(x, residual, bias, training)

    def backward(self, grad_y: npt.ArrayLike) -> tuple[Any, Any, Any]:  # type: ignore[override]
        """``(grad_x, grad_residual, grad_bias)`` with the mask of the last forward."""
        if self._last_training is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before any forward()"
            )
        g = _v.check_array(grad_y, "grad_y")
        if g.shape != self._input_shape:
            raise ValueError(
                f"grad_y has shape {g.shape}, but the last forward input had "
                f"shape {self._input_shape}"
            )
        bias: Any = False if self._bias_shape is None else self._bias_shape
        if self._mask is not None:
            return type(self)._add_backward_fn(  # type: ignore[no-any-return]
                grad_y, self._mask, bias=bias
            )
        # Evaluation is linear: the same map applies to the gradient.
        gx = type(self)._dropout_fn(g, self._p, training=False, mode=self._mode)
        if self._bias_shape is None:
            return gx, grad_y, None
        ncols = 1
        for n in self._bias_shape:
            ncols *= n
        gb = round_sums(row_sums(gx, ncols), gx.dtype).reshape(self._bias_shape)
        return gx, grad_y, gb


class AlphaDropout(Dropout):
    """Alpha dropout layer for self-normalising (SELU) networks (docs/spec.md
    section 10). ``AlphaDropout(p=0.5, *, seed=None, broadcast_axes=None)``:
    with ``broadcast_axes`` (e.g. ``(2, 3)`` for ``(N, C, H, W)``) it is feature
    alpha dropout, one decision per feature map. ``p`` must be in [0, 1).
    Evaluation returns ``x`` unchanged; ``backward`` gives ``grad_y * A`` where
    kept and ``+0.0`` where dropped.
    """

    _alpha_fn: ClassVar[Callable[..., Any]] = staticmethod(_native_alpha)

    def __init__(
        self, p: float = 0.5, *, seed: object = None, broadcast_axes: object = None
    ):
        super().__init__(p, mode="inverted", seed=seed)
        _scales.check_alpha_p(self._p, None)
        self._mode = "alpha"
        if broadcast_axes is not None and not isinstance(broadcast_axes, int):
            broadcast_axes = tuple(broadcast_axes)  # type: ignore[call-overload]
        self._broadcast_axes = broadcast_axes

    @property
    def broadcast_axes(self) -> object:
        return self._broadcast_axes

    def _call(self, x: object, training: bool) -> tuple[FloatArray, Mask | None]:
        return type(self)._alpha_fn(  # type: ignore[no-any-return]
            x,
            self._p,
            training=training,
            seed=self._seed,
            offset=self._offset,
            broadcast_axes=self._broadcast_axes,
            return_mask=True,
        )

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """``grad_x`` for ``grad_y`` with the mask of the last forward call (a copy
        of ``grad_y`` after an evaluation forward, which is the identity)."""
        if self._last_training is False:
            g = _v.check_array(grad_y, "grad_y")
            if g.shape != self._input_shape:
                raise ValueError(
                    f"grad_y has shape {g.shape}, but the last forward input had "
                    f"shape {self._input_shape}"
                )
            return type(self)._dropout_fn(  # type: ignore[no-any-return]
                g, self._p, training=False, mode="inverted"
            )
        return super().backward(grad_y)

    def _extra_repr(self) -> str:
        return f", broadcast_axes={self._broadcast_axes!r}"
