"""What every dropout layer shares, whichever implementation runs it (docs/spec.md
section 6).

``Layer`` is the framework-module part: a training/evaluation switch
(``training``, ``train()``, ``eval()``; a new layer trains), the drop probability
``p`` (settable, validated), the stream ``seed`` and ``offset``, the mask of the
last forward call, ``state_dict()`` / ``load_state_dict()`` and pickling.
``DropoutBase`` and ``SpatialDropoutBase`` add the one-input forward and backward
passes on top, calling a functional implementation held in class attributes: the
native layers (``layers.py``) plug in ``fastdropout``'s functions, the reference
(``reference.py``) its pure-NumPy ones. This module never imports the compiled
core, so the reference works without it.

A new layer type subclasses ``Layer`` (or ``DropoutBase``), lists its extra
constructor settings in ``_config`` / ``_load_config`` and gets everything above.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, overload

import numpy as np

from . import _scales
from . import _validate as _v
from ._rowsum import round_sums, row_sums
from ._seed import resolve_seed
from .mask import Mask

if TYPE_CHECKING:
    import numpy.typing as npt
    from typing_extensions import Self

    from ._typing import (
        ArrayT,
        Axes,
        DataFormat,
        FloatArray,
        Mode,
        Offset,
        Probability,
        Seed,
    )

__all__ = [
    "AlphaDropoutBase",
    "DropoutAddBase",
    "DropoutBase",
    "Layer",
    "SpatialDropoutBase",
    "check_broadcast_axes",
]

_MASK_64 = (1 << 64) - 1
_check_flag = _v.check_flag
_new_mask = Mask._new

# The arguments of Mask._new: (bits, shape, size, p, mode, seed, offset, axes).
MaskParts = tuple[Any, tuple[int, ...], int, float, str, int, int, tuple[int, ...]]


def check_broadcast_axes(axes: object) -> tuple[int, ...]:
    """A layer's ``broadcast_axes``: ``None``, an int or a sequence of ints (their
    range is checked against each input's rank at call time)."""
    if axes is None:
        return ()
    items: list[Any] = list(axes) if hasattr(axes, "__iter__") else [axes]
    result = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"broadcast_axes must contain ints, got {item!r}")
        try:
            result.append(operator.index(item))
        except TypeError:
            raise TypeError(
                f"broadcast_axes must be an int or a sequence of ints, got {axes!r}"
            ) from None
    return tuple(result)


class Layer:
    """Base class of the dropout layers: mode switch, stream state, checkpoints.

    - ``training`` (bool attribute): the mode a call uses when it is not given
      ``training=``; ``True`` for a new layer. ``train(mode=True)`` and ``eval()``
      set it and return the layer (PyTorch style).
    - ``p``: the drop probability, settable (validated as the functions do) for
      rate schedules; the next training call uses the new value.
    - ``seed`` (resolved once, at construction) and ``offset`` (the stream position
      of the next training call, settable): a training call uses the mask elements
      at ``offset, offset + 1, ...`` and advances ``offset`` by the mask size;
      evaluation calls consume nothing.
    - ``state_dict()`` gives a plain dict of everything that decides the next
      calls; ``load_state_dict(state)`` restores it, so a run resumes exactly.
    """

    # Extra state_dict keys of a subclass, with their validators (see _config).
    _config_keys: ClassVar[tuple[str, ...]] = ()

    _p: float
    _mode: str
    _seed: int
    _offset: int
    _training: bool
    _mask: Mask | MaskParts | None
    _input_shape: tuple[int, ...] | None
    _last_training: bool | None

    def __init__(
        self, p: Probability = 0.5, *, mode: Mode = "inverted", seed: Seed = None
    ):
        self._p = self._check_p(p)
        self._mode = self._check_mode(mode)
        self._seed = resolve_seed(seed)
        self._offset = 0
        self._training = True
        self._forget()

    def _forget(self) -> None:
        """Drop the record of the last forward call."""
        self._mask = None
        self._input_shape = None
        self._last_training = None

    # -- settings ----------------------------------------------------------------

    def _check_p(self, p: object) -> float:
        """Validation of ``p`` (a subclass may narrow the range)."""
        return _v.check_p(p)

    def _check_mode(self, mode: object) -> str:
        """Validation of ``mode`` (a subclass may have its own)."""
        return _v.check_mode(mode)

    @property
    def p(self) -> float:
        """Drop probability; settable (validated), e.g. for rate schedules."""
        return self._p

    @p.setter
    def p(self, value: Probability) -> None:
        self._p = self._check_p(value)

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def offset(self) -> int:
        """Stream position of the next training call (docs/spec.md section 2)."""
        return self._offset

    @offset.setter
    def offset(self, value: Offset) -> None:
        self._offset = _v.check_offset(value)

    @property
    def training(self) -> bool:
        """The mode of calls made without ``training=`` (True: training)."""
        return self._training

    @training.setter
    def training(self, value: bool) -> None:
        self._training = _check_flag(value, "training")

    def train(self, mode: bool = True) -> Self:
        """Set training mode (``train(False)`` is ``eval()``); returns the layer."""
        self._training = _check_flag(mode, "mode")
        return self

    def eval(self) -> Self:
        """Set evaluation mode; returns the layer."""
        self._training = False
        return self

    # -- the last forward call -----------------------------------------------------

    @property
    def mask(self) -> Mask | None:
        """Mask of the last forward call (None after an evaluation call)."""
        m = self._mask
        if type(m) is tuple:  # made lazily: most steps never look at it
            m = self._mask = _new_mask(*m)
        return m  # type: ignore[return-value]

    def _resolve_training(self, training: object) -> bool:
        """``training=None`` means the layer's mode (Keras)."""
        if training is None:
            return self._training
        return _check_flag(training, "training")

    def _record(
        self, shape: tuple[int, ...], mask: Mask | MaskParts | None, size: int
    ) -> None:
        """Remember a forward call; a training call advances ``offset`` by the
        mask ``size``."""
        self._mask = mask
        self._input_shape = shape
        self._last_training = mask is not None
        if mask is not None:
            self._offset = (self._offset + size) & _MASK_64

    def _check_backward(self, grad_y: object) -> None:
        if self._last_training is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before any forward()"
            )
        # Arrays of any kind (tensors included) have a shape; lists are checked
        # and converted as the functions do.
        shape = getattr(grad_y, "shape", None)
        if shape is None:
            shape = _v.check_array(grad_y, "grad_y").shape
        shape = tuple(shape)
        if shape != self._input_shape:
            raise ValueError(
                f"grad_y has shape {shape}, but the last forward input had "
                f"shape {self._input_shape}"
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # -- checkpoints ---------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        """The subclass's extra settings, by ``_config_keys`` (plain values)."""
        return {}

    def _load_config(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the subclass's extra settings from ``state``; returns the
        attribute values to set (nothing is set before everything is valid)."""
        del state
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the next calls, as plain Python values:
        ``p``, ``mode``, ``seed``, ``offset``, ``training`` and the layer's own
        settings (``broadcast_axes``, ``data_format``). The last forward's mask
        is not included: after ``load_state_dict`` a forward comes before a
        backward."""
        state: dict[str, Any] = {
            "p": self._p,
            "mode": self._mode,
            "seed": self._seed,
            "offset": self._offset,
            "training": self._training,
        }
        state.update(self._config())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` (of a layer of the same type): every key
        must be present and no other; all values are validated before any is
        set. Forgets the last forward call."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping (from state_dict()), got {type(state).__name__}"
            )
        expected = {"p", "mode", "seed", "offset", "training", *self._config_keys}
        missing = sorted(expected - state.keys())
        unexpected = sorted(set(state.keys()) - expected)
        if missing or unexpected:
            raise ValueError(
                f"state for {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        p = self._check_p(state["p"])
        mode = self._check_mode(state["mode"])
        seed = _v.check_offset(state["seed"], "seed")
        offset = _v.check_offset(state["offset"])
        training = _check_flag(state["training"], "training")
        extra = self._load_config(state)
        self._p, self._mode, self._seed, self._offset = p, mode, seed, offset
        self._training = training
        for name, value in extra.items():
            setattr(self, name, value)
        self._forget()

    # -- display -------------------------------------------------------------------

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (
            f"{type(self).__module__.rsplit('.', 1)[0]}.{type(self).__name__}("
            f"p={self._p!r}{self._extra_repr()}, mode={self._mode!r}, "
            f"seed={self._seed}, offset={self._offset})"
        )


class DropoutBase(Layer):
    """Element-wise dropout layer (one input): see :class:`Layer`.

    ``Dropout(p=0.5, *, mode="inverted", seed=None, broadcast_axes=None)``:
    ``seed`` is an int in ``[0, 2**64)``, a ``numpy.random.Generator`` (one draw)
    or ``None`` (fresh from the OS), resolved once, here, into the int attribute
    ``seed``; ``broadcast_axes`` shares one decision along those axes of every
    input (Keras's ``noise_shape``, Flax's ``broadcast_dims``).
    """

    # The functional implementation (set by layers.py and reference.py).
    _dropout_fn: ClassVar[Callable[..., Any]]
    _backward_fn: ClassVar[Callable[..., Any]]
    _config_keys: ClassVar[tuple[str, ...]] = ("broadcast_axes",)

    _axes: tuple[int, ...]

    def __init__(
        self,
        p: Probability = 0.5,
        *,
        mode: Mode = "inverted",
        seed: Seed = None,
        broadcast_axes: Axes = None,
    ):
        self._axes = check_broadcast_axes(broadcast_axes)
        super().__init__(p, mode=mode, seed=seed)

    @property
    def broadcast_axes(self) -> tuple[int, ...]:
        """Axes along which one decision is shared (empty: dense dropout)."""
        return self._axes

    def _config(self) -> dict[str, Any]:
        return {"broadcast_axes": self._axes}

    def _load_config(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {"_axes": check_broadcast_axes(state["broadcast_axes"])}

    def _extra_repr(self) -> str:
        return f", broadcast_axes={self._axes}" if self._axes else ""

    # -- passes ------------------------------------------------------------------

    def _run(self, x: object, training: bool) -> tuple[Any, Mask | None]:
        return type(self)._dropout_fn(  # type: ignore[no-any-return]
            x,
            self._p,
            training=training,
            mode=self._mode,
            seed=self._seed,
            offset=self._offset,
            broadcast_axes=self._axes or None,
            return_mask=True,
        )

    # Typing: a float ndarray type in, the same type out (dtype kept).
    @overload
    def forward(self, x: ArrayT, training: bool | None = None) -> ArrayT: ...
    @overload
    def forward(self, x: npt.ArrayLike, training: bool | None = None) -> FloatArray: ...
    def forward(self, x: Any, training: bool | None = None) -> Any:
        """``y`` for ``x`` in the layer's mode (or ``training=`` for this call);
        a training call advances ``offset`` by the mask size."""
        train = self._resolve_training(training)
        y, mask = self._run(x, train)
        self._record(tuple(y.shape), mask, 0 if mask is None else mask.size)
        return y

    @overload
    def __call__(self, x: ArrayT, training: bool | None = None) -> ArrayT: ...
    @overload
    def __call__(
        self, x: npt.ArrayLike, training: bool | None = None
    ) -> FloatArray: ...
    def __call__(self, x: Any, training: bool | None = None) -> Any:
        return self.forward(x, training)

    @overload
    def backward(self, grad_y: ArrayT) -> ArrayT: ...
    @overload
    def backward(self, grad_y: npt.ArrayLike) -> FloatArray: ...
    def backward(self, grad_y: Any) -> Any:
        """``grad_x`` for ``grad_y`` with the mask of the last forward call.

        After an evaluation forward: a copy of ``grad_y`` (inverted) or
        ``grad_y * (1 - p)`` (classic). Before any forward: RuntimeError."""
        self._check_backward(grad_y)
        mask = self.mask
        if mask is None:
            # Evaluation is linear: the same map applies to the gradient.
            return type(self)._dropout_fn(
                grad_y, self._p, training=False, mode=self._mode
            )
        return type(self)._backward_fn(grad_y, mask)


class SpatialDropoutBase(DropoutBase):
    """Channel (feature-map) dropout layer for 3-, 4- and 5-D inputs.

    ``SpatialDropout(p=0.5, *, data_format="channels_first", mode="inverted",
    seed=None)``; see :class:`Layer` and ``spatial_dropout``.
    """

    _spatial_fn: ClassVar[Callable[..., Any]]
    _config_keys: ClassVar[tuple[str, ...]] = ("data_format",)

    def __init__(
        self,
        p: Probability = 0.5,
        *,
        data_format: DataFormat = "channels_first",
        mode: Mode = "inverted",
        seed: Seed = None,
    ):
        self._data_format = _v.check_data_format(data_format)
        super().__init__(p, mode=mode, seed=seed)

    @property
    def data_format(self) -> str:
        return self._data_format

    def _config(self) -> dict[str, Any]:
        return {"data_format": self._data_format}

    def _load_config(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {"_data_format": _v.check_data_format(state["data_format"])}

    def _extra_repr(self) -> str:
        return f", data_format={self._data_format!r}"

    def _run(self, x: object, training: bool) -> tuple[Any, Mask | None]:
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


class DropoutAddBase(DropoutBase):
    """Fused dropout + residual add layer (docs/spec.md section 9):
    ``layer(x, residual, bias=None, training=None)`` gives
    ``residual + dropout(x + bias)`` in one pass; ``backward(grad_y)`` gives
    ``(grad_x, grad_residual, grad_bias)`` (``grad_residual`` is ``grad_y``
    itself; ``grad_bias`` is None when the last forward had no bias).

    ``DropoutAdd(p=0.5, *, mode="inverted", seed=None, broadcast_axes=None)``; mode,
    stream and checkpoints as :class:`Layer`.
    """

    _add_fn: ClassVar[Callable[..., Any]]
    _add_backward_fn: ClassVar[Callable[..., Any]]

    _bias_shape: tuple[int, ...] | None

    def _forget(self) -> None:
        super()._forget()
        self._bias_shape = None

    def forward(  # type: ignore[override]
        self,
        x: Any,
        residual: Any,
        bias: Any = None,
        training: bool | None = None,
    ) -> Any:
        """``y`` in the layer's mode (or ``training=`` for this call); a training
        call advances ``offset`` by the mask size."""
        train = self._resolve_training(training)
        y, mask = type(self)._add_fn(
            x,
            residual,
            self._p,
            bias=bias,
            training=train,
            mode=self._mode,
            seed=self._seed,
            offset=self._offset,
            broadcast_axes=self._axes or None,
            return_mask=True,
        )
        self._record(tuple(y.shape), mask, 0 if mask is None else mask.size)
        self._bias_shape = None if bias is None else tuple(np.shape(bias))
        return y

    def __call__(  # type: ignore[override]
        self,
        x: Any,
        residual: Any,
        bias: Any = None,
        training: bool | None = None,
    ) -> Any:
        return self.forward(x, residual, bias, training)

    def backward(self, grad_y: Any) -> tuple[Any, Any, Any]:  # type: ignore[override]
        """``(grad_x, grad_residual, grad_bias)`` with the mask of the last forward."""
        self._check_backward(grad_y)
        bias: Any = False if self._bias_shape is None else self._bias_shape
        mask = self.mask
        if mask is not None:
            return type(self)._add_backward_fn(  # type: ignore[no-any-return]
                grad_y, mask, bias=bias
            )
        # Evaluation is linear: the same map applies to the gradient.
        gx = type(self)._dropout_fn(grad_y, self._p, training=False, mode=self._mode)
        if self._bias_shape is None:
            return gx, grad_y, None
        ncols = 1
        for n in self._bias_shape:
            ncols *= n
        g = np.asarray(gx)
        gb = round_sums(row_sums(g, ncols), g.dtype).reshape(self._bias_shape)
        return gx, grad_y, gb


class AlphaDropoutBase(DropoutBase):
    """Alpha dropout layer for self-normalising (SELU) networks (docs/spec.md
    section 10). ``AlphaDropout(p=0.5, *, seed=None, broadcast_axes=None)``:
    with ``broadcast_axes`` (e.g. ``(2, 3)`` for ``(N, C, H, W)``) it is feature
    alpha dropout, one decision per feature map. ``p`` must be in [0, 1); the
    ``mode`` is ``"alpha"``. Evaluation returns ``x`` unchanged; ``backward``
    gives ``grad_y * A`` where kept and ``+0.0`` where dropped.
    """

    _alpha_fn: ClassVar[Callable[..., Any]]

    def __init__(
        self, p: Probability = 0.5, *, seed: Seed = None, broadcast_axes: Axes = None
    ):
        super().__init__(p, mode="alpha", seed=seed, broadcast_axes=broadcast_axes)  # type: ignore[arg-type]

    def _check_p(self, p: object) -> float:
        value = _v.check_p(p)
        _scales.check_alpha_p(value, None)
        return value

    def _check_mode(self, mode: object) -> str:
        if mode != "alpha":
            raise ValueError(f"mode of an AlphaDropout layer must be 'alpha', got {mode!r}")
        return "alpha"

    def _extra_repr(self) -> str:
        # always shown: with broadcast_axes this is feature alpha dropout
        return f", broadcast_axes={self._axes}"

    def _run(self, x: object, training: bool) -> tuple[Any, Mask | None]:
        return type(self)._alpha_fn(  # type: ignore[no-any-return]
            x,
            self._p,
            training=training,
            seed=self._seed,
            offset=self._offset,
            broadcast_axes=self._axes or None,
            return_mask=True,
        )

    def backward(self, grad_y: Any) -> Any:
        """``grad_x`` for ``grad_y`` with the mask of the last forward call (a copy
        of ``grad_y`` after an evaluation forward, which is the identity)."""
        self._check_backward(grad_y)
        mask = self.mask
        if mask is None:
            return type(self)._dropout_fn(
                grad_y, self._p, training=False, mode="inverted"
            )
        return type(self)._backward_fn(grad_y, mask)
