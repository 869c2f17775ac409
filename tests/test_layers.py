"""Stateful layers (docs/spec.md section 6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference


@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_forward_backward_and_offsets(impl: Any, mode: str) -> None:
    layer = impl.Dropout(0.3, mode=mode, seed=42)
    assert layer.seed == 42
    assert layer.offset == 0
    assert layer.p == 0.3
    assert layer.mode == mode
    x = make_input((6, 7), np.float32, seed=1)
    g = make_input((6, 7), np.float32, seed=2)
    for step in range(3):
        y = layer(x)
        assert layer.offset == 42 * (step + 1)
        assert layer.mask is not None
        assert layer.mask.offset == 42 * step
        assert_same(y, impl.dropout(x, 0.3, seed=42, offset=42 * step, mode=mode))
        assert_same(
            layer.backward(g),
            impl.dropout_backward(g, p=0.3, seed=42, offset=42 * step, mode=mode),
        )


def test_steps_drop_different_subsets(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=1)
    x = np.ones(1000, np.float32)
    a, b = layer(x) != 0, layer(x) != 0
    assert (a != b).any()


def test_evaluation_consumes_nothing(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=3)
    x = make_input((50,), np.float64, seed=1)
    layer(x)
    offset = layer.offset
    y = layer(x, training=False)
    assert layer.offset == offset
    assert layer.mask is None
    assert_same(y, x)
    g = make_input((50,), np.float64, seed=2)
    assert_same(layer.backward(g), g)
    classic = impl.Dropout(0.25, mode="classic", seed=3)
    y = classic.forward(x, training=False)
    assert_same(y, x * 0.75)
    assert_same(classic.backward(g), g * 0.75)
    assert classic.offset == 0


def test_backward_before_forward(impl: Any) -> None:
    with pytest.raises(RuntimeError, match="before"):
        impl.Dropout(0.5, seed=1).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="before"):
        impl.SpatialDropout(0.5, seed=1).backward(np.ones((1, 2, 3)))


def test_backward_shape_must_match(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=1)
    layer(np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.ones((3, 2)))


def test_p_zero_goes_through_the_normal_path(impl: Any) -> None:
    layer = impl.Dropout(0.0, seed=1)
    x = make_input((10,), np.float16, seed=3)
    assert_same(layer(x), x * np.float16(1))
    assert layer.offset == 10


def test_offset_setter_and_wrap(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=9)
    layer.offset = TWO_64 - 3
    x = np.ones(10, np.float32)
    y = layer(x)
    assert layer.offset == 7
    assert_same(y, impl.dropout(x, 0.5, seed=9, offset=TWO_64 - 3))
    with pytest.raises(ValueError, match="offset"):
        layer.offset = -1
    with pytest.raises(TypeError, match="offset"):
        layer.offset = 1.5  # type: ignore[assignment]


def test_seed_resolution(impl: Any) -> None:
    rng = np.random.default_rng(11)
    layer = impl.Dropout(0.5, seed=rng)
    assert layer.seed == int(
        np.random.default_rng(11).integers(TWO_64, dtype=np.uint64)
    )
    assert isinstance(impl.Dropout().seed, int)
    assert impl.Dropout().seed != impl.Dropout().seed
    assert impl.Dropout().p == 0.5
    for bad, exc in [(-1, ValueError), (1.5, TypeError), ("x", TypeError)]:
        with pytest.raises(exc, match="seed"):
            impl.Dropout(0.5, seed=bad)
    with pytest.raises(ValueError, match=r"\bp\b"):
        impl.Dropout(1.5)
    with pytest.raises(ValueError, match="mode"):
        impl.Dropout(0.5, mode="x")
    with pytest.raises(ValueError, match="data_format"):
        impl.SpatialDropout(0.5, data_format="NCHW")


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_spatial_layer(impl: Any, data_format: str) -> None:
    layer = impl.SpatialDropout(0.5, data_format=data_format, seed=5)
    assert layer.data_format == data_format
    x = make_input((2, 3, 4, 5), np.float32, seed=1)
    y = layer(x)
    m = layer.mask
    assert m is not None
    assert m.size == (6 if data_format == "channels_first" else 10)
    assert layer.offset == m.size
    assert_same(y, impl.spatial_dropout(x, 0.5, data_format=data_format, seed=5))
    g = make_input((2, 3, 4, 5), np.float32, seed=2)
    assert_same(layer.backward(g), impl.dropout_backward(g, m))
    assert "SpatialDropout" in repr(layer)
    assert data_format in repr(layer)
    with pytest.raises(ValueError, match="rank"):
        layer(np.ones((2, 3)))


def test_repr(impl: Any) -> None:
    r = repr(impl.Dropout(0.25, mode="classic", seed=3))
    assert "Dropout(p=0.25" in r
    assert "classic" in r
    assert "seed=3" in r


def test_reference_layers_match_native(native: Any) -> None:
    for cls in ("Dropout", "SpatialDropout"):
        ln = getattr(native, cls)(0.4, seed=77)
        lr = getattr(reference, cls)(0.4, seed=77)
        assert type(lr).__module__ == "fastdropout.reference"
        for step in range(4):
            x = make_input((2, 3, 5, 1 + step), np.float16, seed=step)
            training = step != 2
            assert_same(ln(x, training=training), lr(x, training=training))
            assert_same_mask(ln.mask, lr.mask)
            assert ln.offset == lr.offset
            assert_same(ln.backward(x), lr.backward(x))
