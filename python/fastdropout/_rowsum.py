"""grad_bias of dropout_add_backward (docs/spec.md section 9) in NumPy: column sums
of a gradient over its leading axes, accumulated in float64 sequentially over the
rows in C order and rounded once to the dtype. The reference uses it, and so do the
layers for an evaluation-mode backward pass (no mask, no kernel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _bfloat16

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["round_sums", "row_sums", "to_float64"]


def to_float64(a: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """The values of a float array (bfloat16 included) as float64, exactly."""
    with np.errstate(all="ignore"):  # a signalling NaN widens to a quiet one, quietly
        if _bfloat16.is_bfloat16(a.dtype):
            return _bfloat16.to_float32(a).astype(np.float64)
        return np.asarray(a, dtype=np.float64)


def row_sums(g: npt.NDArray[Any], ncols: int) -> npt.NDArray[np.float64]:
    """``acc[c] = g[0, c] + g[1, c] + ...`` over rows of ``ncols`` elements of the
    C-ordered ``g``, in float64, one row after the other (so the order of the
    additions is fixed)."""
    acc = np.zeros(ncols, np.float64)
    if ncols == 0:
        return acc
    rows = to_float64(np.ascontiguousarray(g).reshape(-1)).reshape(-1, ncols)
    with np.errstate(all="ignore"):  # Inf - Inf is NaN, quietly
        for row in rows:
            # element-wise: each column's sum advances by one row; a NaN sum stays
            # the first NaN it met (docs/spec.md section 9)
            np.add(acc, row, out=acc, where=~np.isnan(acc))
    return acc


def round_sums(acc: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """float64 sums rounded once to ``dtype``."""
    if _bfloat16.is_bfloat16(dtype):
        return _bfloat16.from_float64(acc)
    with np.errstate(all="ignore"):
        return acc.astype(dtype)
