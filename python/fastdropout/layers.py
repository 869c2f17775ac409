"""Stateful dropout layers, framework-module style (docs/spec.md section 6).

The behaviour (training/evaluation mode, settable ``p``, stream ``seed`` and
``offset``, ``state_dict``) is ``_layer_base.Layer``'s; these classes run it on
the native functions. A plain training call (an exact, C-contiguous float
ndarray, no broadcast axes) goes straight to the C++ fast path of its function
(``dropout``, ``spatial_dropout``, ``alpha_dropout``, ``dropout_add``); the dense
ones keep the mask bits and build the ``Mask`` object only when ``mask`` or
``backward`` needs it, so a layer call costs about what the function costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, overload

from . import _alpha, _api, _calls, _core, _fused, _spatial_api
from ._layer_base import (
    AlphaDropoutBase,
    DropoutAddBase,
    DropoutBase,
    Layer,
    SpatialDropoutBase,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    from ._typing import ArrayT, FloatArray

__all__ = ["AlphaDropout", "Dropout", "DropoutAdd", "Layer", "SpatialDropout"]

_dense = _core.dense
_fast_spatial = _core.spatial
_fast_alpha = _core.alpha
_fast_add = _core.add
_WANT_MASK = _calls.WANT_MASK
_MASK_64 = (1 << 64) - 1


class Dropout(DropoutBase):
    __doc__ = DropoutBase.__doc__
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout_backward)

    @overload
    def forward(self, x: ArrayT, training: bool | None = None) -> ArrayT: ...
    @overload
    def forward(self, x: npt.ArrayLike, training: bool | None = None) -> FloatArray: ...
    def forward(self, x: Any, training: bool | None = None) -> Any:
        """``y`` for ``x`` in the layer's mode (or ``training=`` for this call);
        a training call advances ``offset`` by the mask size."""
        train = self._training if training is None else self._resolve_training(training)
        if train and not self._axes:
            p, mode, seed, offset = self._p, self._mode, self._seed, self._offset
            fast = _dense(x, p, mode, seed, offset, None, True)
            if fast is not None:  # see _api.dropout; None: not a plain call
                y, bits = fast
                shape = y.shape
                n = y.size
                # Layer._record, inlined: this is the per-step hot path.
                self._mask = (bits, shape, n, p, mode, seed, offset, ())
                self._input_shape = shape
                self._last_training = True
                self._offset = (offset + n) & _MASK_64
                return y
        y, mask = self._run(x, train)
        self._record(tuple(y.shape), mask, 0 if mask is None else mask.size)
        return y

    __call__ = forward


class SpatialDropout(SpatialDropoutBase, Dropout):
    # A Dropout too (isinstance), as in Keras, with its own fast path (Dropout's is
    # dense).
    __doc__ = SpatialDropoutBase.__doc__

    @overload
    def forward(self, x: ArrayT, training: bool | None = None) -> ArrayT: ...
    @overload
    def forward(self, x: npt.ArrayLike, training: bool | None = None) -> FloatArray: ...
    def forward(self, x: Any, training: bool | None = None) -> Any:
        """``y`` for ``x`` in the layer's mode (or ``training=`` for this call);
        a training call advances ``offset`` by the mask size (N * C)."""
        train = self._training if training is None else self._resolve_training(training)
        if train:
            offset = self._offset
            fast = _fast_spatial(
                x, self._p, self._mode, self._seed, offset, None, _WANT_MASK,
                self._data_format == "channels_last",
            )  # fmt: skip
            if fast is not None:  # see _spatial_api.spatial_dropout; None: not a plain call
                y, mask = fast
                self._mask = mask
                self._input_shape = y.shape
                self._last_training = True
                self._offset = (offset + mask._s[2]) & _MASK_64
                return y
        return DropoutBase.forward(self, x, train)

    __call__ = forward
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout)
    _spatial_fn: ClassVar[Callable[..., Any]] = staticmethod(_spatial_api.spatial_dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout_backward)


class DropoutAdd(DropoutAddBase):
    __doc__ = DropoutAddBase.__doc__

    def forward(  # type: ignore[override]
        self,
        x: Any,
        residual: Any,
        bias: Any = None,
        training: bool | None = None,
    ) -> Any:
        """``y`` in the layer's mode (or ``training=`` for this call); a training
        call advances ``offset`` by the mask size."""
        train = self._training if training is None else self._resolve_training(training)
        if train and not self._axes:
            p, mode, seed, offset = self._p, self._mode, self._seed, self._offset
            fast = _fast_add(x, residual, bias, p, mode, seed, offset, None, True, None)
            if fast is not None:  # see fastdropout.dropout_add; None: not plain
                y, bits = fast
                shape = y.shape
                n = y.size
                self._mask = (bits, shape, n, p, mode, seed, offset, ())
                self._input_shape = shape
                self._last_training = True
                self._offset = (offset + n) & _MASK_64
                self._bias_shape = None if bias is None else bias.shape
                return y
        return DropoutAddBase.forward(self, x, residual, bias, train)

    __call__ = forward
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout_backward)
    _add_fn: ClassVar[Callable[..., Any]] = staticmethod(_fused.dropout_add)
    _add_backward_fn: ClassVar[Callable[..., Any]] = staticmethod(
        _fused.dropout_add_backward
    )


class AlphaDropout(AlphaDropoutBase):
    __doc__ = AlphaDropoutBase.__doc__

    @overload
    def forward(self, x: ArrayT, training: bool | None = None) -> ArrayT: ...
    @overload
    def forward(self, x: npt.ArrayLike, training: bool | None = None) -> FloatArray: ...
    def forward(self, x: Any, training: bool | None = None) -> Any:
        """``y`` for ``x`` in the layer's mode (or ``training=`` for this call);
        a training call advances ``offset`` by the mask size."""
        train = self._training if training is None else self._resolve_training(training)
        if train and not self._axes:
            p, seed, offset = self._p, self._seed, self._offset
            fast = _fast_alpha(x, p, seed, offset, None, True, None)
            if fast is not None:  # see fastdropout.alpha_dropout; None: not plain
                y, bits = fast
                shape = y.shape
                n = y.size
                self._mask = (bits, shape, n, p, "alpha", seed, offset, ())
                self._input_shape = shape
                self._last_training = True
                self._offset = (offset + n) & _MASK_64
                return y
        return DropoutBase.forward(self, x, train)

    __call__ = forward
    _dropout_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout)
    _backward_fn: ClassVar[Callable[..., Any]] = staticmethod(_api.dropout_backward)
    _alpha_fn: ClassVar[Callable[..., Any]] = staticmethod(_alpha.alpha_dropout)
