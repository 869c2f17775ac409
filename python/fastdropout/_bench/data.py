"""The arrays of one (dtype, n), the spatial shapes, and the reference check."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import ADD_COLS, CHANNELS, DTYPES, SEED, UINTS, WINDOW, FloatArray
from .settings import Settings
from .timing import WrongResult

# ---------------------------------------------------------------------------
# data, reference results and checks
# ---------------------------------------------------------------------------


def spatial_shape(n: int) -> tuple[int, int, int, int] | None:
    """``(N, C, H, W)`` with ``N*C*H*W == n``: C = 32 channels, H*W the largest
    power of two dividing ``n / C`` that is at most 64 x 64 and leaves N >= 4 where
    it can. None if ``n % 32``."""
    if n % CHANNELS:
        return None
    rest = n // CHANNELS
    hw = 1
    while hw < 4096 and rest % (2 * hw) == 0 and rest // (2 * hw) >= 4:
        hw *= 2
    h = 1 << (hw.bit_length() - 1) // 2
    return rest // hw, CHANNELS, h, hw // h


@dataclass
class Window:
    start: int  # flat element range [start, stop) of the output
    stop: int
    y: FloatArray  # expected values there (flat)
    bits_start: int = 0  # mask bytes [bits_start, bits_start + len(bits))
    bits: Any = None  # expected mask bytes, or None


class Data:
    """The arrays of one (dtype, n) and the reference results, computed once and
    shared by every thread count, SIMD level and implementation."""

    def __init__(self, fd: Any, dtype: str, n: int, s: Settings) -> None:
        self.fd = fd
        self.dtype = dtype
        self.n = n
        self.p = s.p
        self.seed = SEED
        self.full_max = s.check_full_max
        rng = np.random.default_rng(n)
        self.x = (rng.standard_normal(n) * 2.0).astype(DTYPES[dtype])
        self.g = self.x  # the gradient: any values do; sharing saves memory
        self.y = np.zeros_like(self.x)  # zeros: the pages are faulted in now
        self.bits = np.zeros((n + 7) // 8, np.uint8)
        self.sshape = spatial_shape(n)
        # dropout_add: x as (rows, cols), a residual and a bias of cols elements
        cols = ADD_COLS if n % ADD_COLS == 0 else n
        self.add_shape = (n // cols, cols)
        self.residual: Any = None
        self.bias: Any = None
        if "dropout_add" in s.ops or "dropout_add_backward" in s.ops:
            self.residual = (rng.standard_normal(n) * 2.0).astype(DTYPES[dtype]).reshape(
                self.add_shape)
            self.bias = (rng.standard_normal(cols)).astype(DTYPES[dtype])
        self._rng = np.random.default_rng(12345)
        self._expected: dict[str, list[Window]] = {}
        self._masks: dict[str, Any] = {}

    def at_p(self, p: float) -> Data:
        """The same arrays (shared, not copied) with another drop probability, and
        its own reference results and masks."""
        other = copy.copy(self)
        other.p = p
        other._expected = {}
        other._masks = {}
        return other

    # -- layouts --------------------------------------------------------------
    @property
    def n_mask_spatial(self) -> int:
        assert self.sshape is not None
        return self.sshape[0] * self.sshape[1]

    def spatial(self, layout: str, a: FloatArray) -> FloatArray:
        assert self.sshape is not None
        nn, c, h, w = self.sshape
        return a.reshape((nn, c, h, w) if layout == "cf" else (nn, h, w, c))

    @staticmethod
    def axes(layout: str) -> tuple[int, ...]:
        return (2, 3) if layout == "cf" else (1, 2)

    def mask_shape(self, layout: str, items: int | None = None) -> tuple[int, ...]:
        assert self.sshape is not None
        nn, c, _, _ = self.sshape
        k = nn if items is None else items
        return (k, c, 1, 1) if layout == "cf" else (k, 1, 1, c)

    def mask(self, kind: str) -> Any:
        """The forward mask that the backward cases consume ("dense", "cf", "cl")."""
        if kind not in self._masks:
            fd = self.fd
            if kind == "dense":
                m = fd.dropout(self.x, self.p, seed=self.seed, return_mask=True)[1]
            elif kind == "add":  # dropout_add's mask: the same stream, x as (rows, cols)
                m = fd.dropout(self.x.reshape(self.add_shape), self.p, seed=self.seed,
                               return_mask=True)[1]
            else:
                fmt = "channels_first" if kind == "cf" else "channels_last"
                m = fd.spatial_dropout(self.spatial(kind, self.x), self.p,
                                       data_format=fmt, seed=self.seed,
                                       return_mask=True)[1]
            self._masks[kind] = m
        return self._masks[kind]

    # -- reference ------------------------------------------------------------
    def _dense_windows(self) -> list[tuple[int, int]]:
        n = self.n
        if n <= max(self.full_max, WINDOW):
            return [(0, n)]
        starts = [0, (n // 2 - WINDOW // 2) // 64 * 64,
                  int(self._rng.integers(0, n - WINDOW)) // 64 * 64,
                  (n - WINDOW) // 64 * 64]
        return [(a, n if a == starts[-1] else a + WINDOW)
                for a in dict.fromkeys(starts)]

    def _item_windows(self) -> list[tuple[int, int]]:
        assert self.sshape is not None
        nn = self.sshape[0]
        if self.n <= self.full_max or nn == 1:
            return [(0, nn)]
        picks = [0, nn // 2, int(self._rng.integers(0, nn)), nn - 1]
        return [(i, i + 1) for i in sorted(dict.fromkeys(picks))]

    def check_note(self, op: str) -> str:
        if op.startswith("spatial"):
            windows = self._item_windows()
            if len(windows) == 1:
                return "full"
            return f"sampled: {len(windows)} of {self.sshape[0]} samples"  # type: ignore[index]
        windows = self._dense_windows()
        if len(windows) == 1:
            return "full"
        return f"sampled: {len(windows)} windows of {WINDOW} elements"

    def expected(self, op: str) -> list[Window]:
        if op not in self._expected:
            if op == "forward":  # the values of forward_mask, without the bits
                self._expected[op] = [Window(w.start, w.stop, w.y)
                                      for w in self.expected("forward_mask")]
            else:
                self._expected[op] = self._compute_expected(op)
        return self._expected[op]

    def _compute_expected(self, op: str) -> list[Window]:
        ref = self.fd.reference
        p, seed = self.p, self.seed
        out: list[Window] = []
        if op == "dropout_add":
            return self._add_expected()
        if op == "dropout_add_backward":
            return self._add_backward_expected()
        if not op.startswith("spatial"):
            xf = self.x.reshape(-1)
            for a, b in self._dense_windows():
                if op == "forward_mask":
                    y, m = ref.dropout(xf[a:b], p, seed=seed, offset=a, return_mask=True)
                    out.append(Window(a, b, y, a // 8, np.array(m.bits)))
                elif op == "backward_regen":
                    y = ref.dropout_backward(xf[a:b], p=p, seed=seed, offset=a)
                    out.append(Window(a, b, y))
                elif op == "alpha_dropout":
                    y, m = ref.alpha_dropout(xf[a:b], p, seed=seed, offset=a,
                                             return_mask=True)
                    out.append(Window(a, b, y))
                else:  # backward_mask (and dropout_add_backward's grad_x): the
                    # reference applied to the same mask
                    mask = self.mask("dense")
                    wm = self.fd.Mask(mask.bits[a // 8:(b + 7) // 8], (b - a,), mask.p,
                                      mask.mode, seed, a)
                    out.append(Window(a, b, ref.dropout_backward(xf[a:b], wm)))
            return out
        layout = op.split("_")[1]
        fmt = "channels_first" if layout == "cf" else "channels_last"
        xs = self.spatial(layout, self.x)
        assert self.sshape is not None
        c = self.sshape[1]
        per_item = self.n // self.sshape[0]
        for i, j in self._item_windows():
            a, b = i * per_item, j * per_item
            if op.endswith("forward"):
                y, m = ref.spatial_dropout(xs[i:j], p, data_format=fmt, seed=seed,
                                           offset=i * c, return_mask=True)
                out.append(Window(a, b, y.reshape(-1), i * c // 8, np.array(m.bits)))
            else:
                mask = self.mask(layout)
                wm = self.fd.Mask(mask.bits[i * c // 8:(j * c + 7) // 8],
                                  self.mask_shape(layout, j - i), mask.p, mask.mode,
                                  seed, i * c, self.axes(layout))
                out.append(Window(a, b, ref.dropout_backward(xs[i:j], wm).reshape(-1)))
        return out

    def _add_expected(self) -> list[Window]:
        """dropout_add's reference on whole rows covering the dense windows."""
        rows, cols = self.add_shape
        x2 = self.x.reshape(self.add_shape)
        out: list[Window] = []
        for a, b in self._dense_windows():
            r0, r1 = a // cols, min(rows, -(-b // cols))
            y = self.fd.reference.dropout_add(
                x2[r0:r1], self.residual[r0:r1], self.p, bias=self.bias, seed=self.seed,
                offset=r0 * cols)
            out.append(Window(r0 * cols, r1 * cols, y.reshape(-1)))
        return out

    def _add_backward_expected(self) -> list[Window]:
        """grad_x as backward_mask's windows; grad_bias (the reference's sums over
        the whole array) only when the whole result is checked."""
        out = [Window(w.start, w.stop, w.y) for w in self.expected("backward_mask")]
        if len(out) == 1:
            g2 = self.g.reshape(self.add_shape)
            gb = self.fd.reference.dropout_add_backward(g2, self.mask("add"), bias=True)[2]
            out[0] = Window(out[0].start, out[0].stop, out[0].y, 0, np.array(gb))
        return out

    def verify(self, op: str, y: FloatArray, bits: Any) -> str:
        """Raise WrongResult unless ``y`` (and ``bits``) equal the reference bit for
        bit; return how much was checked."""
        u = UINTS[self.dtype]
        flat = np.ascontiguousarray(y).reshape(-1).view(u)
        for w in self.expected(op):
            got = flat[w.start:w.stop]
            want = np.ascontiguousarray(w.y).reshape(-1).view(u)
            if got.shape != want.shape or not np.array_equal(got, want):
                where = ""
                if got.shape == want.shape:
                    first = int(np.flatnonzero(got != want)[0])
                    where = f" first at element {w.start + first}"
                raise WrongResult(f"values differ from fastdropout.reference{where}")
            if w.bits is not None and op == "dropout_add_backward":
                if not np.array_equal(np.asarray(bits).view(u), w.bits.view(u)):
                    raise WrongResult("grad_bias differs from fastdropout.reference")
            elif w.bits is not None:
                gb = np.asarray(bits).reshape(-1)[w.bits_start:w.bits_start + len(w.bits)]
                if not np.array_equal(gb, w.bits):
                    raise WrongResult("mask bits differ from fastdropout.reference")
        return self.check_note(op)

