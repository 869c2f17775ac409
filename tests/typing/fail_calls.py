"""Wrong calls: ``mypy --strict`` must report exactly the errors marked ``# E: code``
on those lines, and nothing else (see tests/test_typing.py)."""

from __future__ import annotations

import fastdropout as fd
import numpy as np
import numpy.typing as npt

h: npt.NDArray[np.float32] = np.zeros((4, 8), np.float32)

fd.dropout(h, 0.5, mode="invertd")  # E: call-overload
fd.dropout(h, "0.5")  # E: call-overload
fd.dropout(h, 0.5, seed=1.5)  # E: call-overload
fd.dropout(h, 0.5, broadcast_axes=[0.5])  # E: list-item
fd.spatial_dropout(h, 0.5, data_format="NCHW")  # E: call-overload
wide: npt.NDArray[np.float64] = fd.dropout(h, 0.5)  # E: assignment
y, mask = fd.dropout(h, 0.5, training=bool(h.size), return_mask=True)
print(mask.bits)  # E: union-attr
fd.dropout_backward(h, "mask")  # E: call-overload
fd.Dropout(0.5, mode="x")  # E: arg-type
fd.SpatialDropout(0.5, data_format="NHWC")  # E: arg-type
layer = fd.Dropout(0.5)
layer.training = "yes"  # E: assignment
layer.p = "0.5"  # E: assignment
fd.set_num_threads(2.0)  # E: arg-type
