"""The Mask object (docs/spec.md section 5)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, reference
from fastdropout.mask import Mask


def test_one_class(native: Any) -> None:
    assert native.Mask is Mask is reference.Mask


@pytest.mark.parametrize("n", [*list(range(20)), 63, 64, 65, 1000])
def test_bits_layout(impl: Any, n: int) -> None:
    x = np.ones(n, np.float32)
    y, m = impl.dropout(x, 0.5, seed=n, return_mask=True)
    assert isinstance(m, Mask)
    assert m.bits.dtype == np.uint8
    assert m.bits.ndim == 1
    assert m.bits.shape == ((n + 7) // 8,)
    assert not m.bits.flags.writeable
    if n % 8:
        assert m.bits[-1] >> (n % 8) == 0  # unused high bits are 0
    kept = np.unpackbits(m.bits, count=n, bitorder="little")
    np.testing.assert_array_equal(kept.astype(bool), y != 0)
    np.testing.assert_array_equal(m.to_bool(), kept.astype(bool))
    # bit k of byte i is element 8*i + k
    for i in range(n):
        assert bool((int(m.bits[i // 8]) >> (i % 8)) & 1) == bool(y[i] != 0)


def test_attributes(impl: Any) -> None:
    x = np.ones((3, 4, 5), np.float16)
    _, m = impl.dropout(
        x,
        0.25,
        seed=TWO_64 - 1,
        offset=17,
        broadcast_axes=(-1,),
        mode="classic",
        return_mask=True,
    )
    assert m.shape == (3, 4, 1)
    assert m.size == 12
    assert m.p == 0.25
    assert type(m.p) is float
    assert m.mode == "classic"
    assert m.seed == TWO_64 - 1
    assert type(m.seed) is int
    assert m.offset == 17
    assert m.broadcast_axes == (2,)
    b = m.to_bool()
    assert b.dtype == bool
    assert b.shape == (3, 4, 1)
    np.testing.assert_array_equal(
        b.reshape(-1), reference.keep(TWO_64 - 1, 17, np.arange(12), 0.25)
    )
    assert 0.0 <= m.kept_fraction() <= 1.0
    r = repr(m)
    assert "shape=(3, 4, 1)" in r
    assert "p=0.25" in r
    assert "classic" in r


def test_read_only(impl: Any) -> None:
    _, m = impl.dropout(np.ones(20), 0.5, seed=1, return_mask=True)
    for name in (
        "bits",
        "shape",
        "p",
        "mode",
        "seed",
        "offset",
        "size",
        "broadcast_axes",
        "other",
    ):
        with pytest.raises(AttributeError):
            setattr(m, name, 1)
    with pytest.raises(AttributeError):
        del m.p
    with pytest.raises(ValueError, match="read-only"):
        m.bits[0] = 0
    assert not hasattr(m, "__dict__")


def test_pickle_copy_and_equality(impl: Any) -> None:
    _, m = impl.dropout(
        np.ones((5, 7)), 0.5, seed=3, offset=4, broadcast_axes=1, return_mask=True
    )
    m2 = pickle.loads(pickle.dumps(m))
    assert m2 == m
    assert hash(m2) == hash(m)
    assert not m2.bits.flags.writeable
    assert copy.copy(m) is m
    assert copy.deepcopy(m) is m
    _, other = impl.dropout(
        np.ones((5, 7)), 0.5, seed=4, offset=4, broadcast_axes=1, return_mask=True
    )
    assert other != m
    assert m != "mask"
    g = np.ones((5, 7))
    np.testing.assert_array_equal(
        impl.dropout_backward(g, m2), impl.dropout_backward(g, m)
    )


def test_empty_and_0d(impl: Any) -> None:
    _, m = impl.dropout(np.ones(0), 0.5, seed=1, return_mask=True)
    assert m.size == 0
    assert m.bits.shape == (0,)
    assert m.to_bool().shape == (0,)
    _, m = impl.dropout(np.float32(3), 0.5, seed=1, return_mask=True)
    assert m.shape == ()
    assert m.size == 1
    assert m.bits.shape == (1,)
    assert m.to_bool().shape == ()


def test_constructor() -> None:
    bits = np.array([0b101, 0b1], np.uint8)
    m = Mask(bits, (3, 3), 0.5, "inverted", 7, 0)
    bits[0] = 0xFF  # the mask holds its own copy
    assert m.bits[0] == 0b101
    assert m.to_bool().reshape(-1).tolist() == [True, False, True] + [False] * 5 + [
        True
    ]
    assert m.broadcast_axes == ()
    with pytest.raises(TypeError, match="uint8"):
        Mask(np.zeros(2, np.int16), (3, 3), 0.5, "inverted", 7, 0)
    with pytest.raises(TypeError, match="uint8"):
        Mask(np.zeros((2, 1), np.uint8), (3, 3), 0.5, "inverted", 7, 0)
    with pytest.raises(ValueError, match="bytes"):
        Mask(np.zeros(3, np.uint8), (3, 3), 0.5, "inverted", 7, 0)
    with pytest.raises(ValueError, match="high bits"):
        Mask(np.array([0, 2], np.uint8), (3, 3), 0.5, "inverted", 7, 0)
    with pytest.raises(ValueError, match=r"\bp\b"):
        Mask(np.zeros(2, np.uint8), (3, 3), 1.5, "inverted", 7, 0)
    with pytest.raises(ValueError, match="mode"):
        Mask(np.zeros(2, np.uint8), (3, 3), 0.5, "bad", 7, 0)
    with pytest.raises(ValueError, match="seed"):
        Mask(np.zeros(2, np.uint8), (3, 3), 0.5, "inverted", -7, 0)
    with pytest.raises(ValueError, match="offset"):
        Mask(np.zeros(2, np.uint8), (3, 3), 0.5, "inverted", 7, TWO_64)
    with pytest.raises(ValueError, match="shape"):
        Mask(np.zeros(2, np.uint8), (-3, 3), 0.5, "inverted", 7, 0)


def test_user_built_mask_drives_backward(impl: Any) -> None:
    m = Mask(np.array([0b0110], np.uint8), (4,), 0.5, "inverted", 0, 0)
    gx = impl.dropout_backward(np.ones(4, np.float32), m)
    np.testing.assert_array_equal(gx, [0, 2, 2, 0])


def test_evaluation_gives_no_mask(impl: Any) -> None:
    _, m = impl.dropout(np.ones(3), 0.5, training=False, return_mask=True)
    assert m is None
    _, m = impl.spatial_dropout(
        np.ones((1, 2, 3)), 0.5, training=False, return_mask=True
    )
    assert m is None
