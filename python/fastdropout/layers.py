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

from . import _validate as _v
from ._seed import resolve_seed

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from .mask import Mask

    FloatArray = npt.NDArray[np.floating[Any]]

__all__ = ["Dropout", "SpatialDropout"]

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
