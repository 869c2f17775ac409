"""The backward pass (SPEC section 3, last item; section 6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, bits_of, make_input, reference


@pytest.mark.parametrize("mode", ["inverted", "classic"])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1 - 2.0**-30, 1.0])
def test_backward_is_the_forward_applied_to_the_gradient(
    impl: Any, dtype: Any, mode: str, p: float
) -> None:
    """Dropout is linear: grad_x is the forward map of grad_y, with the same mask."""
    x = make_input((7, 33), dtype, seed=1)
    g = make_input((7, 33), dtype, seed=2)
    kw: dict[str, Any] = {"seed": 5, "offset": TWO_64 - 11, "mode": mode}
    if dtype is np.float16 and mode == "inverted" and p < 1 and 1 / (1 - p) >= 65520:
        # float16's scale overflows: an error in both passes (SPEC section 8)
        with pytest.raises(ValueError, match=r"float16.*overflows to inf"):
            impl.dropout(x, p, **kw)
        with pytest.raises(ValueError, match=r"float16.*overflows to inf"):
            impl.dropout_backward(g, p=p, **kw)
        return
    _, m = impl.dropout(x, p, return_mask=True, **kw)
    expected = impl.dropout(g, p, **kw)
    assert_same(impl.dropout_backward(g, m), expected)
    assert_same(impl.dropout_backward(g, p=p, **kw), expected)
    assert_same(impl.dropout_backward(g, m, p), expected)  # p equal to the mask's


def test_backward_values(impl: Any, dtype: Any) -> None:
    g = make_input((2000,), dtype, seed=3)
    _, m = impl.dropout(np.ones(2000, dtype), 0.25, seed=4, return_mask=True)
    kept = m.to_bool()
    gx = impl.dropout_backward(g, m)
    with np.errstate(all="ignore"):
        assert_same(gx[kept], g[kept] * dtype(1 / 0.75))
    assert not bits_of(gx[~kept]).any()  # +0.0, even for NaN/Inf gradients
    _, mc = impl.dropout(
        np.ones(2000, dtype), 0.25, seed=4, mode="classic", return_mask=True
    )
    gc = impl.dropout_backward(g, mc)
    assert_same(gc[kept], g[kept])
    assert not bits_of(gc[~kept]).any()


def test_mask_from_another_dtype(impl: Any) -> None:
    """The scale is rounded to the gradient's dtype."""
    _, m = impl.dropout(np.ones(100, np.float64), 0.1, seed=6, return_mask=True)
    g = np.ones(100, np.float16)
    gx = impl.dropout_backward(g, m)
    assert gx.dtype == np.float16
    kept = m.to_bool()
    assert (gx[kept] == np.float16(1 / 0.9)).all()


def test_broadcast_mask(impl: Any) -> None:
    x = make_input((4, 5, 6), np.float32, seed=7)
    _, m = impl.dropout(x, 0.5, seed=8, broadcast_axes=(0, 2), return_mask=True)
    g = make_input((4, 5, 6), np.float32, seed=9)
    expected = impl.dropout(g, 0.5, seed=8, broadcast_axes=(0, 2))
    assert_same(impl.dropout_backward(g, m), expected)
    assert_same(
        impl.dropout_backward(g, p=0.5, seed=8, broadcast_axes=(2, 0)), expected
    )
    assert_same(
        impl.dropout_backward(g, p=0.5, seed=8, broadcast_axes=(-1, -3)), expected
    )


def test_size_one_axes(impl: Any) -> None:
    """A broadcast axis of size 1 gives a mask shape equal to the input's."""
    x = make_input((1, 3, 1), np.float64, seed=1)
    _, m = impl.dropout(x, 0.5, seed=2, broadcast_axes=(0, 2), return_mask=True)
    assert m.shape == (1, 3, 1)
    assert_same(impl.dropout_backward(x, m), impl.dropout(x, 0.5, seed=2))


def test_mode_explicit_and_equal_is_fine(impl: Any) -> None:
    _, m = impl.dropout(np.ones(10), 0.5, seed=1, mode="classic", return_mask=True)
    a = impl.dropout_backward(np.ones(10), m)
    b = impl.dropout_backward(np.ones(10), m, mode="classic")
    assert_same(a, b)
    assert set(a.tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("layout", ["strided", "fortran", "reversed"])
def test_backward_layouts(impl: Any, layout: str) -> None:
    base = make_input((20, 30), np.float32, seed=1)
    g = {
        "strided": base[::2, ::3],
        "fortran": np.asfortranarray(base),
        "reversed": base[::-1, ::-1],
    }[layout]
    _, m = impl.dropout(np.ones(g.shape, np.float32), 0.5, seed=3, return_mask=True)
    expected = impl.dropout_backward(np.ascontiguousarray(g), m)
    assert_same(impl.dropout_backward(g, m), expected)
    assert_same(impl.dropout_backward(g, p=0.5, seed=3), expected)


def test_backward_out_and_in_place(impl: Any, dtype: Any) -> None:
    g = make_input((9, 11), dtype, seed=1)
    _, m = impl.dropout(g, 0.3, seed=2, return_mask=True)
    expected = impl.dropout_backward(g, m)
    out = np.empty_like(g)
    assert impl.dropout_backward(g, m, out=out) is out
    assert_same(out, expected)
    g2 = g.copy()
    assert impl.dropout_backward(g2, m, out=g2) is g2
    assert_same(g2, expected)
    g3 = g.copy()
    assert impl.dropout_backward(g3, p=0.3, seed=2, out=g3) is g3
    assert_same(g3, expected)


def test_native_matches_reference(native: Any, simd: str, dtype: Any) -> None:
    del simd
    for shape, axes in [((1000,), None), ((3, 7, 65), (1,)), ((2, 3, 4, 5), (2, 3))]:
        x = make_input(shape, dtype, seed=2)
        g = make_input(shape, dtype, seed=3)
        for mode in ("inverted", "classic"):
            kw: dict[str, Any] = {
                "seed": 3,
                "offset": 2**32 - 3,
                "mode": mode,
                "broadcast_axes": axes,
            }
            _, mn = native.dropout(x, 0.7, return_mask=True, **kw)
            _, mr = reference.dropout(x, 0.7, return_mask=True, **kw)
            expected = reference.dropout_backward(g, mr)
            assert_same(native.dropout_backward(g, mn), expected)
            assert_same(native.dropout_backward(g, mr), expected)  # masks interchange
            assert_same(reference.dropout_backward(g, mn), expected)
            assert_same(native.dropout_backward(g, p=0.7, **kw), expected)
