"""Modules mirroring ``torch.nn``'s dropout layers, on fastdropout's stream.

Each module holds its random state, ``[seed, offset]``, in a small int64
tensor. A training forward uses the stream positions ``offset, offset + 1,
...`` (one per mask element) and then advances ``offset`` by the mask size, so
each step drops a different subset and a run is reproducible from the seed.
Evaluation consumes nothing. The state is the module's *extra state*
(``get_extra_state``/``set_extra_state``), so ``state_dict()`` saves it and
``load_state_dict`` resumes the stream exactly; a checkpoint without it (for
example from ``torch.nn.Dropout``) still loads with ``strict=True`` and keeps
the module's own state. Extra state is not a buffer: DistributedDataParallel
does not broadcast it, so every rank keeps the seed it was built with.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import _EXTRA_STATE_KEY_SUFFIX

from .. import _validate as _v
from . import _ops
from ._convert import _offset_int, _seed_int, check_tensor, decode, encode
from ._functions import check_alpha_p, check_mask, run

__all__ = [
    "AlphaDropout",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
]

_STATE_KEYS = ("seed", "offset")


class _StreamDropout(nn.Module):
    """Shared machinery: constructor, random state, extra state, forward."""

    _mode = "inverted"
    _name = "Dropout"

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        *,
        seed: Any = None,
        mask: str = "store",
    ) -> None:
        super().__init__()
        if self._mode == "alpha":
            self.p = check_alpha_p(p)
        else:
            self.p = _v.check_p(p)
        self.inplace = _v.check_flag(inplace, "inplace")
        self.mask = mask
        self._keep = check_mask(mask)
        # Not a buffer (see the module docstring): never broadcast, moved or cast.
        self._rng = torch.tensor([encode(_seed_int(seed)), 0], dtype=torch.int64)

    # -- random state -------------------------------------------------------------

    @property
    def seed(self) -> int:
        """The stream's key, an int in ``[0, 2**64)``."""
        return decode(int(self._rng[0]))

    @property
    def offset(self) -> int:
        """Stream position of the next training call."""
        return decode(int(self._rng[1]))

    @offset.setter
    def offset(self, value: int) -> None:
        self._rng[1] = encode(_offset_int(value))

    def get_extra_state(self) -> dict[str, int]:
        return {"seed": self.seed, "offset": self.offset}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or sorted(state) != sorted(_STATE_KEYS):
            raise ValueError(
                f"{type(self).__name__}: extra state must be a dict with keys "
                f"'seed' and 'offset', got {state!r}"
            )
        seed = _v.check_offset(state["seed"], "seed")
        offset = _v.check_offset(state["offset"], "offset")
        self._rng.copy_(torch.tensor([encode(seed), encode(offset)]))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + _EXTRA_STATE_KEY_SUFFIX
        absent = key not in state_dict
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        if absent and key in missing_keys:
            # A torch.nn dropout checkpoint has no random state: keep ours.
            missing_keys.remove(key)

    # -- forward ----------------------------------------------------------------------

    def _axes(self, x: torch.Tensor) -> tuple[int, ...]:
        del x
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_tensor(x, "input", self._name)
        axes = self._axes(x)
        if not self.training:
            return x
        rng = self._rng.clone()  # the state as this call sees it
        n = 1
        for d, s in enumerate(x.shape):
            if d not in axes:
                n = n * s
        _ops.run_advance_(self._rng, n)
        return run(x, self.p, self._mode, axes, True, rng, self._keep, self.inplace)

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, inplace={self.inplace}, seed={self.seed}, "
            f"offset={self.offset}, mask={self.mask!r}"
        )


def _features(ndim: int, name: str) -> tuple[int, ...]:
    """torch's feature dropout: one decision per (N, C), shared by the rest."""
    if ndim < 2:
        raise RuntimeError(
            f"{name}: feature dropout needs an input of at least 2 dimensions "
            f"(N, C, ...), got {ndim}"
        )
    return tuple(range(2, ndim))


class Dropout(_StreamDropout):
    """``torch.nn.Dropout`` on fastdropout's stream: element-wise, any shape.

    ``Dropout(p=0.5, inplace=False, *, seed=None, mask="store")``; ``seed`` is
    an int in ``[0, 2**64)``, a ``torch.Generator`` or
    ``numpy.random.Generator`` (one draw) or ``None`` (from the OS), resolved
    once; ``mask="regenerate"`` keeps no mask for backward.
    """


class Dropout1d(_StreamDropout):
    """``torch.nn.Dropout1d``: drops whole channels of ``(N, C, L)`` or ``(C, L)``."""

    _name = "Dropout1d"

    def _axes(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.ndim not in (2, 3):
            raise RuntimeError(
                f"dropout1d: expected a 2-D (C, L) or 3-D (N, C, L) input, got a "
                f"{x.ndim}-D input"
            )
        return (x.ndim - 1,)


class Dropout2d(_StreamDropout):
    """``torch.nn.Dropout2d``: drops whole channels of ``(N, C, H, W)``.

    As in torch, a 3-D input is taken as ``(N, C, L)`` (with a warning), and
    other ranks warn and drop along the first two axes."""

    _name = "Dropout2d"

    def _axes(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.ndim not in (3, 4):
            warnings.warn(
                f"dropout2d: a {x.ndim}-D input is deprecated (torch.nn.Dropout2d "
                "takes 3-D or 4-D); it is treated as (N, C, ...). Use Dropout for "
                "element-wise dropout",
                UserWarning,
                stacklevel=3,
            )
        elif x.ndim == 3:
            warnings.warn(
                "dropout2d: a 3-D input is taken as (N, C, L), channel-wise 1-D "
                "dropout, as torch.nn.Dropout2d does; use Dropout1d for that",
                UserWarning,
                stacklevel=3,
            )
        return _features(x.ndim, "dropout2d")


class Dropout3d(_StreamDropout):
    """``torch.nn.Dropout3d``: drops whole channels of ``(N, C, D, H, W)`` or
    ``(C, D, H, W)``. As in torch, any input that is not 5-D is taken as
    unbatched, its first axis the channels (other ranks than 4 and 5 warn)."""

    _name = "Dropout3d"

    def _axes(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.ndim == 5:
            return (2, 3, 4)
        if x.ndim != 4:
            warnings.warn(
                f"dropout3d: a {x.ndim}-D input is deprecated (torch.nn.Dropout3d "
                "takes 4-D or 5-D); it is taken as unbatched, channels first. Use "
                "Dropout for element-wise dropout",
                UserWarning,
                stacklevel=3,
            )
        if x.ndim == 0:
            raise RuntimeError("dropout3d: a 0-D input has no channels")
        return tuple(range(1, x.ndim))  # unbatched: one decision per channel


class AlphaDropout(_StreamDropout):
    """``torch.nn.AlphaDropout``: element-wise alpha dropout (for SELU
    networks), docs/spec.md section 10; ``p`` in ``[0, 1)``."""

    _mode = "alpha"
    _name = "AlphaDropout"


class FeatureAlphaDropout(_StreamDropout):
    """``torch.nn.FeatureAlphaDropout``: alpha dropout of whole channels, one
    decision per ``(N, C)`` of an input of rank >= 2."""

    _mode = "alpha"
    _name = "FeatureAlphaDropout"

    def _axes(self, x: torch.Tensor) -> tuple[int, ...]:
        return _features(x.ndim, "feature_alpha_dropout")
