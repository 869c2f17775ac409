"""A correct float32 program: ``mypy --strict`` must report nothing (see
tests/test_typing.py). It runs too (tests/test_typing.py executes it)."""

from __future__ import annotations

from fractions import Fraction

import fastdropout as fd
import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

F32 = npt.NDArray[np.float32]

rng = np.random.default_rng(0)
h: F32 = rng.standard_normal((32, 256), dtype=np.float32)
w: F32 = rng.standard_normal((256, 10), dtype=np.float32)

# dtype kept: float32 in, float32 out (NumPy's own stubs then type y @ w)
y = fd.dropout(h, np.float32(0.1), seed=np.uint64(3), broadcast_axes=[0])
assert_type(y, F32)
logits = y @ w

# return_mask=True gives (y, Mask); training=False may give no mask
y2, mask = fd.dropout(h, 0.5, seed=1, offset=np.int64(7), return_mask=True)
assert_type(y2, F32)
assert_type(mask, fd.Mask)
print(mask.bits.nbytes, mask.p, mask.seed)
grad = fd.dropout_backward(np.ones_like(y2), mask)
assert_type(grad, F32)
regen = fd.dropout_backward(grad, p=0.5, seed=np.uint64(1), offset=7)
assert_type(regen, F32)

training = bool(rng.integers(2))
y3, maybe = fd.dropout(h, 0.5, training=training, return_mask=True)
assert_type(maybe, fd.Mask | None)
if maybe is not None:
    print(maybe.kept_fraction())

x4: F32 = rng.standard_normal((2, 8, 8, 3), dtype=np.float32)
s = fd.spatial_dropout(x4, Fraction(1, 4), data_format="channels_last", mode="classic")
assert_type(s, F32)
s2, smask = fd.spatial_dropout(x4, 0.2, return_mask=True, out=np.empty_like(x4))
assert_type(smask, fd.Mask)

lists = fd.dropout([[1.0, 2.0]], 0.5, seed=1)
assert_type(lists, npt.NDArray[np.floating])

# layers
layer = fd.Dropout(0.25, seed=np.uint64(5), broadcast_axes=(0,))
assert_type(layer(h), F32)
assert_type(layer.forward(h, training=None), F32)
assert_type(layer.backward(np.ones_like(h)), F32)
layer.p = np.float32(0.3)
assert_type(layer.p, float)
layer.offset = np.uint64(0)
state = layer.state_dict()
assert_type(layer.eval(), fd.Dropout)
assert_type(layer.train(), fd.Dropout)
layer.load_state_dict(state)
conv = fd.SpatialDropout(0.1, data_format="channels_first", mode="inverted")
assert_type(conv(x4), F32)
assert_type(conv.eval(), fd.SpatialDropout)

fd.set_num_threads(np.int64(1))
fd.set_num_threads(None)
n: int = fd.get_num_threads()
print(logits.shape, s.dtype, n)
