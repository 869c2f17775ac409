"""Spatial (channel) dropout and broadcast axes (docs/spec.md section 4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, bits_of, make_input, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SPATIAL = {
    3: [(1,), (7,), (13,)],
    4: [(1, 1), (5, 3), (2, 7)],
    5: [(1, 1, 1), (3, 2, 5)],
}
FORMATS = ["channels_first", "channels_last"]


def layout(
    n: int, c: int, spatial: tuple[int, ...], data_format: str
) -> tuple[int, ...]:
    return (n, c, *spatial) if data_format == "channels_first" else (n, *spatial, c)


def expected_mask_shape(shape: tuple[int, ...], data_format: str) -> tuple[int, ...]:
    if data_format == "channels_first":
        return (shape[0], shape[1]) + (1,) * (len(shape) - 2)
    return (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)


@pytest.mark.parametrize("mode", ["inverted", "classic"])
@pytest.mark.parametrize("c", [1, 3, 17])
@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("data_format", FORMATS)
def test_native_matches_reference(
    native: Any, dtype: Any, data_format: str, rank: int, c: int, mode: str
) -> None:
    for spatial in SPATIAL[rank]:
        shape = layout(2, c, spatial, data_format)
        x = make_input(shape, dtype, seed=rank * c)
        kw: dict[str, Any] = {
            "data_format": data_format,
            "seed": 21,
            "offset": TWO_64 - 5,
            "mode": mode,
        }
        yr, mr = reference.spatial_dropout(x, 0.4, return_mask=True, **kw)
        yn, mn = native.spatial_dropout(x, 0.4, return_mask=True, **kw)
        assert mr.shape == expected_mask_shape(shape, data_format)
        assert_same(yn, yr)
        assert_same_mask(mn, mr)
        assert_same(native.spatial_dropout(x, 0.4, **kw), yr)
        g = make_input(shape, dtype, seed=5)
        gr = reference.dropout_backward(g, mr)
        assert_same(native.dropout_backward(g, mn), gr)
        axes = mr.broadcast_axes
        assert_same(
            native.dropout_backward(
                g, p=0.4, seed=21, offset=TWO_64 - 5, mode=mode, broadcast_axes=axes
            ),
            gr,
        )
        # spatial dropout is dropout with the spatial axes broadcast
        assert_same(
            native.dropout(
                x, 0.4, broadcast_axes=axes, seed=21, offset=TWO_64 - 5, mode=mode
            ),
            yr,
        )


def test_every_simd_level(native: Any, simd: str, dtype: Any) -> None:
    del simd
    for data_format in FORMATS:
        x = make_input(layout(3, 17, (5, 3), data_format), dtype, seed=2)
        kw = {"data_format": data_format, "seed": 8}
        yr, mr = reference.spatial_dropout(x, 0.5, return_mask=True, **kw)
        yn, mn = native.spatial_dropout(x, 0.5, return_mask=True, **kw)
        assert_same(yn, yr)
        assert_same_mask(mn, mr)


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_same_maps_dropped_in_both_layouts(impl: Any, rank: int) -> None:
    spatial = SPATIAL[rank][-1]
    x = make_input(layout(4, 6, spatial, "channels_first"), np.float32, seed=3)
    xl = np.moveaxis(x, 1, -1)  # channels_last view of the same data
    yf, mf = impl.spatial_dropout(x, 0.5, seed=99, offset=7, return_mask=True)
    yl, ml = impl.spatial_dropout(
        xl, 0.5, seed=99, offset=7, return_mask=True, data_format="channels_last"
    )
    np.testing.assert_array_equal(mf.bits, ml.bits)
    np.testing.assert_array_equal(
        mf.to_bool().reshape(4, 6), ml.to_bool().reshape(4, 6)
    )
    assert_same(np.ascontiguousarray(np.moveaxis(yl, -1, 1)), yf)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_whole_maps_dropped_or_kept(
    impl: Any, dtype: Any, data_format: str, mode: str
) -> None:
    shape = layout(5, 9, (4, 6), data_format)
    x = make_input(shape, dtype, seed=4)
    p = 0.5
    y, m = impl.spatial_dropout(
        x, p, data_format=data_format, mode=mode, seed=3, return_mask=True
    )
    if data_format == "channels_last":
        x, y = np.moveaxis(x, -1, 1), np.moveaxis(y, -1, 1)
    kept = m.to_bool().reshape(5, 9)
    s = dtype(1 / (1 - p)) if mode == "inverted" else dtype(1)
    assert 0 < kept.sum() < kept.size
    for n in range(5):
        for c in range(9):
            fmap = np.ascontiguousarray(y[n, c])
            if kept[n, c]:
                with np.errstate(all="ignore"):
                    assert_same(fmap, np.ascontiguousarray(x[n, c]) * s)
            else:
                assert not bits_of(fmap).any()  # entirely +0.0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropped_channel_fraction(impl: Any, p: float) -> None:
    x = np.ones((400, 250, 2, 2), np.float32)  # 100000 feature maps
    _, m = impl.spatial_dropout(x, p, seed=12345, return_mask=True)
    n = m.size
    dropped = n - int(m.to_bool().sum())
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(dropped - n * p) < 5 * sigma


@pytest.mark.parametrize("rank", [0, 1, 2, 6])
def test_wrong_rank(impl: Any, rank: int) -> None:
    x = np.ones((2,) * rank, np.float32)
    with pytest.raises(ValueError, match=rf"3, 4 or 5.*rank {rank}"):
        impl.spatial_dropout(x, 0.5, seed=1)
    with pytest.raises(ValueError, match=rf"3, 4 or 5.*rank {rank}"):
        impl.spatial_dropout(x, 0.5, training=False)


@pytest.mark.parametrize("bad", ["NCHW", "channels-first", "", None, 0])
def test_bad_data_format(impl: Any, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"channels_first.*channels_last"):
        impl.spatial_dropout(np.ones((2, 2, 2), np.float32), 0.5, data_format=bad)


@pytest.mark.parametrize("axes", [(0, 0), (3,), (-4,), (1, -2)], ids=str)
def test_bad_axes(impl: Any, axes: Any) -> None:
    with pytest.raises(ValueError, match="broadcast_axes"):
        impl.dropout(np.ones((2, 3, 4), np.float32), 0.5, broadcast_axes=axes)


def test_backward_with_mask_of_wrong_shape(impl: Any) -> None:
    x = np.ones((2, 3, 4, 5), np.float32)
    _, m = impl.spatial_dropout(x, 0.5, seed=1, return_mask=True)
    assert m.shape == (2, 3, 1, 1)
    for grad_shape in [(2, 3, 4), (3, 3, 4, 5), (2, 4, 4, 5), (2, 3, 4, 5, 1)]:
        with pytest.raises(ValueError, match="mask"):
            impl.dropout_backward(np.ones(grad_shape, np.float32), m)
    # a different spatial size still fits the (2, 3, 1, 1) mask
    g = np.ones((2, 3, 7, 1), np.float32)
    r = impl.dropout_backward(g, m)
    assert r.shape == g.shape


@st.composite
def shape_and_axes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    rank = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank)))
    axes = draw(
        st.lists(
            st.integers(-rank, rank - 1), max_size=rank, unique_by=lambda a: a % rank
        )
    )
    return shape, tuple(axes)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    case=shape_and_axes(),
    seed=st.integers(0, TWO_64 - 1),
    offset=st.integers(0, TWO_64 - 1),
    p=st.floats(0, 1),
)
def test_random_broadcast_axes(
    native: Any, case: Any, seed: int, offset: int, p: float
) -> None:
    shape, axes = case
    x = make_input(shape, np.float32, seed=len(shape))
    yr, mr = reference.dropout(
        x, p, seed=seed, offset=offset, broadcast_axes=axes, return_mask=True
    )
    yn, mn = native.dropout(
        x, p, seed=seed, offset=offset, broadcast_axes=axes, return_mask=True
    )
    assert_same(yn, yr)
    assert_same_mask(mn, mr)
    assert mr.shape == tuple(
        1 if a in mr.broadcast_axes else n for a, n in enumerate(shape)
    )
    assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))


@settings(max_examples=30, deadline=None)
@given(case=shape_and_axes(), seed=st.integers(0, TWO_64 - 1))
def test_reference_broadcast_is_the_mask_broadcast(case: Any, seed: int) -> None:
    """Reference only: y == where(broadcast(mask), x * s, 0)."""
    shape, axes = case
    x = make_input(shape, np.float64, seed=1)
    y, m = reference.dropout(x, 0.5, seed=seed, broadcast_axes=axes, return_mask=True)
    kept = np.broadcast_to(m.to_bool(), shape)
    with np.errstate(all="ignore"):
        assert_same(y, np.where(kept, x * 2.0, 0.0))
