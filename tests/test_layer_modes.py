"""Layers behave like framework modules: train()/eval(), training=None, p settable,
broadcast_axes, state_dict/load_state_dict, pickling (docs/spec.md section 6)."""

from __future__ import annotations

import copy
import importlib
import pickle
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input
from fastdropout import _layer_base, reference


def test_default_training_and_switch(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=4)
    assert layer.training is True
    x = make_input((6, 7), np.float32, seed=1)
    y = layer(x)  # training by default
    assert_same(y, impl.dropout(x, 0.5, seed=4))
    assert layer.offset == 42
    assert layer.eval() is layer
    assert layer.training is False
    assert_same(layer(x), x)
    assert_same(layer.forward(x), x)
    assert layer.offset == 42  # evaluation consumes nothing
    assert layer.mask is None
    # training= for one call overrides the mode, None means the layer's mode
    assert_same(layer(x, training=True), impl.dropout(x, 0.5, seed=4, offset=42))
    assert layer.training is False
    assert_same(layer(x, training=None), x)
    assert layer.train() is layer
    assert layer.training is True
    assert_same(layer.forward(x, None), impl.dropout(x, 0.5, seed=4, offset=84))
    assert_same(layer(x, training=False), x)
    layer.train(False)
    assert layer.training is False
    layer.training = True
    assert layer.training is True
    for bad in ("yes", 2, None):
        with pytest.raises(TypeError, match="training"):
            layer.training = bad
        with pytest.raises(TypeError, match="mode"):
            layer.train(bad)
    with pytest.raises(TypeError, match="training"):
        layer(x, training="no")


def test_spatial_layer_modes(impl: Any) -> None:
    layer = impl.SpatialDropout(0.5, data_format="channels_last", seed=5).eval()
    x = make_input((2, 3, 4, 5), np.float64, seed=1)
    assert_same(layer(x), x)
    layer.train()
    y = layer(x)
    assert_same(y, impl.spatial_dropout(x, 0.5, data_format="channels_last", seed=5))
    assert layer.offset == 10


def test_broadcast_axes(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=8, broadcast_axes=[0])
    assert layer.broadcast_axes == (0,)
    x = make_input((5, 9), np.float32, seed=2)
    y = layer(x)
    assert_same(y, impl.dropout(x, 0.5, seed=8, broadcast_axes=0))
    assert layer.offset == 9
    assert layer.mask is not None
    assert layer.mask.shape == (1, 9)
    g = make_input((5, 9), np.float32, seed=3)
    assert_same(layer.backward(g), impl.dropout_backward(g, layer.mask))
    assert "broadcast_axes=(0,)" in repr(layer)
    assert impl.Dropout(
        0.5, seed=1, broadcast_axes=(-1, np.int64(0))
    ).broadcast_axes == (
        -1,
        0,
    )
    with pytest.raises(TypeError, match="broadcast_axes"):
        impl.Dropout(0.5, broadcast_axes=1.5)
    with pytest.raises(TypeError, match="broadcast_axes"):
        impl.Dropout(0.5, broadcast_axes=[True])
    with pytest.raises(ValueError, match="broadcast_axes"):
        impl.Dropout(0.5, seed=1, broadcast_axes=2)(x)  # rank checked per call


def test_p_settable(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=2)
    x = make_input((4, 8), np.float32, seed=1)
    layer(x)
    layer.p = np.float32(0.25)
    assert layer.p == 0.25
    assert type(layer.p) is float
    assert_same(layer(x), impl.dropout(x, 0.25, seed=2, offset=32))
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"\bp\b"):
            layer.p = bad
    assert layer.p == 0.25


@pytest.mark.parametrize("cls", ["Dropout", "SpatialDropout"])
def test_state_dict_resumes_exactly(impl: Any, cls: str) -> None:
    kwargs: dict[str, Any] = (
        {"data_format": "channels_last"} if cls == "SpatialDropout" else {}
    )
    layer = getattr(impl, cls)(0.3, mode="classic", seed=TWO_64 - 1, **kwargs)
    x = make_input((2, 3, 4), np.float32, seed=1)
    layer(x)
    layer.offset = TWO_64 - 2  # wraps on the next call
    state = layer.state_dict()
    expected = {"p", "mode", "seed", "offset", "training"}
    expected |= {"data_format"} if kwargs else {"broadcast_axes"}
    assert set(state) == expected
    assert state["seed"] == TWO_64 - 1
    assert state["offset"] == TWO_64 - 2
    assert state["mode"] == "classic"
    assert state["training"] is True
    other = getattr(impl, cls)(seed=0)
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert other.mask is None
    for _ in range(3):
        assert_same(other(x), layer(x))
        assert_same_mask(other.mask, layer.mask)
    assert other.offset == layer.offset
    # round trip through a pickle and a deep copy too
    for how in (lambda a: pickle.loads(pickle.dumps(a)), copy.deepcopy):
        clone = how(layer)
        assert clone.state_dict() == layer.state_dict()
        assert_same(clone(x), layer(x))


def test_load_state_dict_checks_everything(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=3)
    good = layer.state_dict()
    before = dict(good)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({**good, "p": 2.0}, ValueError, r"\bp\b"),
        ({**good, "mode": "x"}, ValueError, "mode"),
        ({**good, "seed": -1}, ValueError, "seed"),
        ({**good, "offset": "0"}, TypeError, "offset"),
        ({**good, "training": "yes"}, TypeError, "training"),
        ({**good, "broadcast_axes": [1.5]}, TypeError, "broadcast_axes"),
        ({k: v for k, v in good.items() if k != "seed"}, ValueError, "missing"),
        ({**good, "extra": 1}, ValueError, "unexpected"),
    ]
    for state, exc, match in cases:
        with pytest.raises(exc, match=match):
            layer.load_state_dict(state)
        assert layer.state_dict() == before  # nothing changed
    with pytest.raises(TypeError, match="mapping"):
        layer.load_state_dict([("p", 0.5)])  # type: ignore[arg-type]
    layer.load_state_dict({**good, "training": False, "broadcast_axes": [0]})
    assert layer.training is False
    assert layer.broadcast_axes == (0,)


def test_pickle_keeps_mask_and_mode(impl: Any) -> None:
    layer = impl.Dropout(0.5, seed=6).eval()
    x = make_input((3, 5), np.float16, seed=1)
    layer(x, training=True)
    clone = pickle.loads(pickle.dumps(layer))
    assert clone.training is False
    assert_same_mask(clone.mask, layer.mask)
    g = make_input((3, 5), np.float16, seed=2)
    assert_same(clone.backward(g), layer.backward(g))


def test_new_layer_types_get_the_base() -> None:
    """A layer written on the shared base gets mode, p, stream and checkpoints."""

    class Scale(_layer_base.Layer):
        def forward(self, x: Any, training: bool | None = None) -> Any:
            train = self._resolve_training(training)
            y = np.asarray(x) * (2.0 if train else 1.0)
            self._record(y.shape, None, 0)
            return y

    layer = Scale(0.1, seed=1)
    assert layer.training
    assert layer(np.ones(2))[0] == 2.0
    assert layer.eval()(np.ones(2))[0] == 1.0
    assert set(layer.state_dict()) == {"p", "mode", "seed", "offset", "training"}


def test_native_and_reference_layers_agree_in_modes(native: Any) -> None:
    for cls in ("Dropout", "SpatialDropout"):
        ln = getattr(native, cls)(0.4, seed=77)
        lr = getattr(reference, cls)(0.4, seed=77)
        x = make_input((2, 3, 5), np.float32, seed=0)
        for train in (True, False, True):
            ln.train(train)
            lr.train(train)
            assert_same(ln(x), lr(x))
            assert ln.offset == lr.offset
            assert_same(ln.backward(x), lr.backward(x))
            assert ln.state_dict() == lr.state_dict()


def test_layer_overhead_measurement_runs(native: Any) -> None:
    """The measurement the benchmark calls (numbers are the benchmark's business)."""
    del native  # needs the compiled core
    layer_overhead = importlib.import_module("fastdropout._bench_layers").layer_overhead
    r = layer_overhead((8, 16), np.float32, rounds=3, number=5)
    assert set(r) == {"dropout_s", "forward_s", "call_s", "forward_ratio", "call_ratio"}
    assert all(v > 0 for v in r.values())


def test_dropout_add_layer_on_the_base(impl: Any) -> None:
    layer = impl.DropoutAdd(0.3, seed=11)
    assert layer.training is True
    rng = np.random.default_rng(1)  # finite values: grad_bias sums them
    x, r, g = (rng.standard_normal((4, 6)).astype(np.float32) for _ in range(3))
    b = rng.standard_normal(6).astype(np.float32)
    y = layer(x, r, b)
    assert_same(y, impl.dropout_add(x, r, 0.3, bias=b, seed=11))
    assert layer.offset == 24
    gx, gr, gb = layer.backward(g)
    ex, _, eb = impl.dropout_add_backward(g, layer.mask, bias=(6,))
    assert_same(gx, ex)
    assert gr is g
    assert_same(gb, eb)
    state = layer.state_dict()
    assert state["mode"] == "inverted"
    layer.eval()
    assert_same(layer(x, r), impl.dropout_add(x, r, 0.3, training=False))
    assert layer.offset == 24
    other = impl.DropoutAdd(seed=0)
    other.load_state_dict(state)
    assert_same(other(x, r, b), impl.dropout_add(x, r, 0.3, bias=b, seed=11, offset=24))


def test_alpha_dropout_layer_on_the_base(impl: Any) -> None:
    layer = impl.AlphaDropout(0.2, seed=5, broadcast_axes=(1,))
    assert layer.mode == "alpha"
    assert layer.broadcast_axes == (1,)
    x = make_input((3, 7), np.float64, seed=1)
    y = layer(x)
    assert_same(y, impl.alpha_dropout(x, 0.2, seed=5, broadcast_axes=(1,)))
    assert layer.offset == 3
    assert_same(layer.backward(x), impl.dropout_backward(x, layer.mask))
    state = layer.state_dict()
    assert state["mode"] == "alpha"
    clone = impl.AlphaDropout(seed=1)
    clone.load_state_dict(state)
    assert_same(clone(x), layer(x))
    with pytest.raises(ValueError, match="alpha"):
        clone.load_state_dict({**state, "mode": "inverted"})
    with pytest.raises(ValueError, match=r"\bp\b"):
        layer.p = 1.0  # alpha dropout takes p in [0, 1)
    assert_same(layer.eval()(x), x)
    assert_same(layer.backward(x), x)
