"""Data augmentation of the 8x8 digit images, in NumPy: small shifts and pixel noise.

Each call moves every image of the batch by its own random whole-pixel shift
(``-max_shift..max_shift`` rows and columns, the uncovered border filled with 0,
the background value) and adds Gaussian noise of standard deviation ``noise`` to
every pixel, clipped back to [0, 1]. The draws come from the augmenter's own
generator, so two training runs that start from the same seed and ask for batches
of the same sizes get exactly the same augmented images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

__all__ = ["Augmenter", "shift_images"]


def shift_images(images: Array, dy: npt.ArrayLike, dx: npt.ArrayLike) -> Array:
    """``images`` (N, H, W) with image ``n`` moved down by ``dy[n]`` and right by
    ``dx[n]`` pixels (negative: up/left); pixels moved in from outside are 0.

    Every shift must be smaller than the image in its direction. Returns a new array
    of the same shape and dtype.
    """
    x = np.asarray(images)
    if x.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got shape {x.shape}")
    n, h, w = x.shape
    sy = np.asarray(dy, dtype=np.intp)
    sx = np.asarray(dx, dtype=np.intp)
    if sy.shape != (n,) or sx.shape != (n,):
        raise ValueError(
            f"dy and dx must have shape ({n},), got {sy.shape} and {sx.shape}"
        )
    m = int(max(np.abs(sy).max(initial=0), np.abs(sx).max(initial=0)))
    if m >= min(h, w) and n > 0:
        raise ValueError(f"shifts must be smaller than the image ({h}x{w}), got {m}")
    padded = np.pad(x, ((0, 0), (m, m), (m, m)))
    # out[k, r, c] = x[k, r - dy, c - dx] = padded[k, r - dy + m, c - dx + m]
    rows = (m - sy)[:, None, None] + np.arange(h)[None, :, None]
    cols = (m - sx)[:, None, None] + np.arange(w)[None, None, :]
    out: Array = padded[np.arange(n)[:, None, None], rows, cols]
    return out


class Augmenter:
    """Random shifts and pixel noise for flat batches of ``image_shape`` images.

    ``max_shift`` is the largest shift in pixels (each direction, each axis);
    ``noise`` the standard deviation of the added Gaussian noise (pixels in [0, 1]).
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        seed: int,
        *,
        max_shift: int = 1,
        noise: float = 0.05,
    ) -> None:
        h, w = image_shape
        if not 0 <= max_shift < min(h, w):
            raise ValueError(
                f"max_shift must be in [0, {min(h, w)}) for {h}x{w} images, "
                f"got {max_shift}"
            )
        if not (noise >= 0.0 and np.isfinite(noise)):
            raise ValueError(f"noise must be a finite number >= 0, got {noise}")
        self.image_shape = (int(h), int(w))
        self.max_shift = int(max_shift)
        self.noise = float(noise)
        self.rng = np.random.default_rng([seed, 0xA06])

    def __call__(self, x: Array) -> Array:
        """An augmented copy of the flat batch ``x`` (N, H*W), same dtype."""
        h, w = self.image_shape
        n = x.shape[0]
        if x.ndim != 2 or x.shape[1] != h * w:
            raise ValueError(
                f"expected a batch of shape (N, {h * w}), got shape {x.shape}"
            )
        s = self.max_shift
        dy = self.rng.integers(-s, s + 1, size=n)
        dx = self.rng.integers(-s, s + 1, size=n)
        out = shift_images(x.reshape(n, h, w), dy, dx).reshape(n, h * w)
        if self.noise > 0:
            out = out + self.rng.normal(0.0, self.noise, size=out.shape)
        clipped: Array = np.clip(out, 0.0, 1.0).astype(x.dtype, copy=False)
        return clipped
