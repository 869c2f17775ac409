"""Small broadcast masks spread into dense bits (cpp/bindings/fast_spread.hpp) by the
spatial_dropout and dropout_backward fast paths, around the size limit, for any
layout of broadcast axes, with 1 and 2 threads; and the layers' fast forwards
(SpatialDropout, AlphaDropout, DropoutAdd) against the functions."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference

pytestmark = pytest.mark.usefixtures("core_module")

SPREAD_MAX = 1 << 14  # fast_spread.hpp's kSpreadMaxElements


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request: pytest.FixtureRequest, native: Any) -> Any:
    native.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        native.set_num_threads(None)


def _all_axes(nd: int) -> list[tuple[int, ...]]:
    return [c for k in range(1, nd + 1) for c in combinations(range(nd), k)]


@pytest.mark.parametrize(
    "shape", [(3, 1, 5, 2), (2, 7, 9), (4, 3, 70), (1, 1, 1), (5, 0, 3), (2, 3, 4, 5, 2)],
    ids=str,
)
def test_backward_any_broadcast_layout(native: Any, dtype: Any, shape: Any) -> None:
    """Every set of broadcast axes (merged runs of kept and broadcast axes, size-1
    axes, runs longer than 56 bits) as the reference computes it."""
    from fastdropout import _api

    g = make_input(shape, dtype, seed=3)
    for axes in _all_axes(len(shape)):
        _, m = reference.dropout(g, 0.45, seed=9, offset=TWO_64 - 5, broadcast_axes=axes,
                                 return_mask=True)  # fmt: skip
        gr = reference.dropout_backward(g, m)
        assert _api._backward(g, m.bits, m.p, m.mode, None, m.shape, m.broadcast_axes) \
            is not None  # fmt: skip
        assert_same(native.dropout_backward(g, m), gr, str(axes))
        out = np.full_like(g, 5)
        assert native.dropout_backward(g, m, out=out) is out
        assert_same(out, gr, f"{axes} into out")


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize(
    "shape",
    [(2, 4, 32, 64), (2, 4, 32, 64, 1), (1, 16, 1024), (2, 64, 129), (3, 5, 7, 11),
     (4, 2, 2048), (2, 3, 2731)],  # = 2**14, > 2**14 (run_apply), odd
    ids=str,
)
@pytest.mark.usefixtures("threads")
def test_spatial_around_the_limit(native: Any, fmt: str, shape: Any) -> None:
    x = make_input(shape, np.float32, seed=1)
    for mode in ("inverted", "classic"):
        kw: dict[str, Any] = {"data_format": fmt, "mode": mode, "seed": 7,
                              "offset": TWO_64 - 70}  # fmt: skip
        yr, mr = reference.spatial_dropout(x, 0.3, return_mask=True, **kw)
        y, m = native.spatial_dropout(x, 0.3, return_mask=True, **kw)
        assert_same(y, yr)
        assert_same_mask(m, mr)
        g = make_input(shape, np.float32, seed=2)
        assert_same(native.dropout_backward(g, m), reference.dropout_backward(g, mr))


def test_spread_limit_is_where_the_tests_expect() -> None:
    assert SPREAD_MAX == 2 * 4 * 32 * 64
    assert SPREAD_MAX == 4 * 2 * 2048
    assert SPREAD_MAX < 2 * 3 * 2731


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_spatial_dtypes_many_offsets(native: Any, dtype: Any) -> None:
    """A fresh mask each call (the offset advancing, as in training)."""
    x = make_input((4, 32, 2, 4), dtype, seed=4)
    for offset in range(0, 4096, 128):
        for fmt in ("channels_first", "channels_last"):
            assert_same(
                native.spatial_dropout(x, 0.5, data_format=fmt, seed=3, offset=offset),
                reference.spatial_dropout(x, 0.5, data_format=fmt, seed=3, offset=offset),
            )


# ---- layers ----------------------------------------------------------------------------


def test_spatial_layer_fast_forward(native: Any) -> None:
    from fastdropout import layers

    for fmt in ("channels_first", "channels_last"):
        layer = native.SpatialDropout(0.3, data_format=fmt, seed=11)
        ref = reference.SpatialDropout(0.3, data_format=fmt, seed=11)
        x = make_input((2, 3, 4, 5), np.float32, seed=1)
        for step in range(3):
            assert layers._fast_spatial(x, 0.3, "inverted", 11, layer.offset, None,
                                        False, fmt == "channels_last") is not None
            assert_same(layer(x), ref(x), f"{fmt} step {step}")
            assert layer.offset == ref.offset
            assert_same_mask(layer.mask, ref.mask)
            g = make_input((2, 3, 4, 5), np.float32, seed=2)
            assert_same(layer.backward(g), ref.backward(g))
        # not plain (a list; evaluation): the general path
        assert_same(layer(x.tolist()), ref(x.tolist()))
        assert_same(layer(x, training=False), ref(x, training=False))
        assert layer.offset == ref.offset


def test_alpha_and_add_layer_fast_forwards(native: Any, dtype: Any) -> None:
    x = make_input((3, 8), dtype, seed=1)
    res = np.random.default_rng(2).standard_normal((3, 8)).astype(dtype)
    bias = np.random.default_rng(3).standard_normal(8).astype(dtype)
    alpha, alpha_r = native.AlphaDropout(0.2, seed=5), reference.AlphaDropout(0.2, seed=5)
    add, add_r = native.DropoutAdd(0.4, seed=6), reference.DropoutAdd(0.4, seed=6)
    g = make_input((3, 8), dtype, seed=4)
    for _ in range(2):
        assert_same(alpha(x), alpha_r(x))
        assert alpha.offset == alpha_r.offset
        assert_same_mask(alpha.mask, alpha_r.mask)
        assert_same(alpha.backward(g), alpha_r.backward(g))
        assert_same(add(x, res, bias), add_r(x, res, bias))
        assert add.offset == add_r.offset
        assert_same_mask(add.mask, add_r.mask)
        gx, gres, gb = add.backward(g)
        gxr, _, gbr = add_r.backward(g)
        assert gres is g
        assert_same(gx, gxr)
        assert_same(gb, gbr)
        assert_same(add(x, res), add_r(x, res))  # no bias: no grad_bias
        assert add.backward(g)[2] is None
    strided = np.repeat(x, 2, axis=1)[:, ::2]  # not C-contiguous: the general path
    assert_same(alpha(strided), alpha_r(strided))
    assert_same(add(strided, res, bias), add_r(strided, res, bias))
    assert alpha.offset == alpha_r.offset
    assert add.offset == add_r.offset
