"""The read-only dropout mask returned by ``return_mask=True`` (SPEC section 5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from ._window import Window, check_window

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Mask"]


class Mask:
    """One bit per mask element: 1 = kept, 0 = dropped.

    Attributes (all read-only):

    - ``bits``: 1-D read-only ``uint8`` array of ``ceil(size / 8)`` bytes; bit
      ``k`` of byte ``i`` is element ``8*i + k`` in C order over ``shape``
      (NumPy's ``bitorder="little"``); unused high bits of the last byte are 0.
    - ``shape``: the mask shape (the input's shape with broadcast axes set to 1).
    - ``size``: the number of mask elements (``prod(shape)``).
    - ``p``, ``mode``: the drop probability and mode of the forward call
      (``"inverted"``, ``"classic"``, or ``"alpha"`` for alpha dropout).
    - ``seed``, ``offset``: the stream position it was drawn from (SPEC section 2).
    - ``broadcast_axes``: the axes of the input along which decisions are shared.
    - ``window``: ``None``, or the ``(global_shape, start)`` of a block call
      (docs/spec.md section 11): the mask is then the block's window of the
      global mask, C order within the window.

    ``to_bool()`` gives the decisions as a bool array of ``shape``.
    """

    # One slot holding (bits, shape, size, p, mode, seed, offset, axes, window): a
    # mask is made on every training step, and one attribute store is cheaper than
    # nine.
    __slots__ = ("_s",)

    _s: tuple[
        npt.NDArray[np.uint8],
        tuple[int, ...],
        int,
        float,
        str,
        int,
        int,
        tuple[int, ...],
        Window | None,
    ]

    def __init__(
        self,
        bits: npt.ArrayLike,
        shape: tuple[int, ...],
        p: float,
        mode: str,
        seed: int,
        offset: int,
        broadcast_axes: tuple[int, ...] = (),
        window: object = None,
    ) -> None:
        from . import _validate as v

        try:
            shp = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
        if any(s < 0 for s in shp):
            raise ValueError(f"shape must not have negative sizes, got {shp}")
        size = 1
        for s in shp:
            size *= s
        arr = np.asarray(bits)
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise TypeError(
                f"bits must be a 1-D uint8 array, got dtype {arr.dtype} "
                f"and shape {arr.shape}"
            )
        if arr.shape[0] != (size + 7) // 8:
            raise ValueError(
                f"bits has {arr.shape[0]} bytes, but a mask of shape {shp} "
                f"needs {(size + 7) // 8}"
            )
        if size % 8 and int(arr[-1]) >> (size % 8):
            raise ValueError("the unused high bits of the last byte of bits must be 0")
        arr = arr.copy()
        arr.flags.writeable = False
        axes = tuple(int(a) for a in broadcast_axes)
        # a window's block may be any size along broadcast axes: check lengths and
        # signs only (as for an empty block)
        win = None if window is None else check_window(window, (0,) * len(shp))
        self._set(
            arr,
            shp,
            size,
            v.check_p(p),
            v.check_mode(mode, v.MASK_MODES),
            v.check_offset(seed, "seed"),
            v.check_offset(offset),
            axes,
            win,
        )

    def _set(
        self,
        bits: npt.NDArray[np.uint8],
        shape: tuple[int, ...],
        size: int,
        p: float,
        mode: str,
        seed: int,
        offset: int,
        axes: tuple[int, ...],
        window: Window | None = None,
    ) -> None:
        object.__setattr__(
            self, "_s", (bits, shape, size, p, mode, seed, offset, axes, window)
        )

    @classmethod
    def _new(
        cls,
        bits: npt.NDArray[np.uint8],
        shape: tuple[int, ...],
        size: int,
        p: float,
        mode: str,
        seed: int,
        offset: int,
        axes: tuple[int, ...],
        window: Window | None = None,
    ) -> Mask:
        """Wrap freshly made, already validated bits (no copy): internal."""
        bits.setflags(write=False)
        self = cls.__new__(cls)
        self._set(bits, shape, size, p, mode, seed, offset, axes, window)
        return self

    # -- read-only attributes ------------------------------------------------

    @property
    def bits(self) -> npt.NDArray[np.uint8]:
        return self._s[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self._s[1]

    @property
    def size(self) -> int:
        return self._s[2]

    @property
    def p(self) -> float:
        return self._s[3]

    @property
    def mode(self) -> str:
        return self._s[4]

    @property
    def seed(self) -> int:
        return self._s[5]

    @property
    def offset(self) -> int:
        return self._s[6]

    @property
    def broadcast_axes(self) -> tuple[int, ...]:
        return self._s[7]

    @property
    def window(self) -> Window | None:
        return self._s[8]

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Mask is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Mask is read-only: cannot delete {name!r}")

    # -- views -----------------------------------------------------------------

    def to_bool(self) -> npt.NDArray[np.bool_]:
        """The decisions as a bool array of ``shape`` (True = kept)."""
        flat = np.unpackbits(self.bits, count=self.size, bitorder="little")
        return flat.astype(bool).reshape(self.shape)

    def kept_fraction(self) -> float:
        """Fraction of mask elements kept (``nan`` for an empty mask)."""
        if self.size == 0:
            return float("nan")
        kept = int(np.unpackbits(self.bits, bitorder="little").sum(dtype=np.int64))
        return kept / self.size

    # -- protocol ----------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"Mask(shape={self.shape}, p={self.p!r}, mode={self.mode!r}, "
            f"seed={self.seed}, offset={self.offset}, "
            f"broadcast_axes={self.broadcast_axes}, "
            + ("" if self.window is None else f"window={tuple(self.window)}, ")
            + f"nbytes={self.bits.size})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return (
            self.shape == other.shape
            and self.p == other.p
            and self.mode == other.mode
            and self.seed == other.seed
            and self.offset == other.offset
            and self.broadcast_axes == other.broadcast_axes
            and self.window == other.window
            and bool(np.array_equal(self.bits, other.bits))
        )

    def __hash__(self) -> int:
        return hash(
            (
                self.shape,
                self.p,
                self.mode,
                self.seed,
                self.offset,
                self.broadcast_axes,
                self.window,
                self.bits.tobytes(),
            )
        )

    def __reduce__(
        self,
    ) -> tuple[type[Mask], tuple[Any, ...]]:
        return (
            Mask,
            (
                np.array(self.bits),
                self.shape,
                self.p,
                self.mode,
                self.seed,
                self.offset,
                self.broadcast_axes,
                self.window,
            ),
        )

    def __copy__(self) -> Mask:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Mask:
        return self
