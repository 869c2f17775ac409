"""The native core against the reference, bit for bit (SPEC sections 2-6).

Outputs are compared as bit patterns (``.view(np.uintN)``), so ``-0.0`` vs
``+0.0`` and NaN payloads count; masks are compared byte for byte. The matrix
is combinatorial rather than a full product: every SIMD level meets every
dtype and shape; p, seeds, offsets and layouts each meet every level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SHAPES = [
    (),
    (0,),
    (1,),
    (3,),
    (7,),
    (8,),
    (9,),
    (15,),
    (16,),
    (17,),
    (31,),
    (33,),
    (63,),
    (64,),
    (65,),
    (127,),
    (129,),
    (4097,),
    (3, 5, 7),
    (2, 0, 3),
    (1, 1, 1, 1),
]
PS = [0.0, 2.0**-40, 0.1, 0.5, 0.9, 1 - 2.0**-30, 1 - 2.0**-33, 1.0]
P_IDS = ["0", "2^-40", "0.1", "0.5", "0.9", "1-2^-30", "1-2^-33", "1"]
SEEDS = [0, 1, TWO_64 - 1, 0x9E3779B97F4A7C15]
OFFSETS = [0, 1, 2, 3, 5, (1 << 32) - 3, (1 << 34) + 1, TWO_64 - 1, TWO_64 - 70]
MODES = ["inverted", "classic"]


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "0d"


def check_forward_backward(native: Any, x: np.ndarray, p: float, **kw: Any) -> None:
    """Forward (with and without mask), backward from the mask and regenerated:
    native == reference, bit for bit."""
    x_before = x.copy()
    yr, mr = reference.dropout(x, p, return_mask=True, **kw)
    yn, mn = native.dropout(x, p, return_mask=True, **kw)
    assert_same(yn, yr)
    assert_same_mask(mn, mr)
    assert_same(native.dropout(x, p, **kw), yr)  # no mask requested
    assert_same(x, x_before)  # input untouched
    if not kw.get("training", True):
        return
    g = make_input(x.shape, x.dtype, seed=17)
    gr = reference.dropout_backward(g, mr)
    assert_same(native.dropout_backward(g, mn), gr)
    regen = {k: kw[k] for k in ("seed", "offset", "mode", "broadcast_axes") if k in kw}
    assert_same(native.dropout_backward(g, p=p, **regen), gr)
    assert_same(reference.dropout_backward(g, p=p, **regen), gr)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_shapes(
    native: Any, simd: str, dtype: Any, shape: tuple[int, ...], mode: str
) -> None:
    assert native.simd_level() == simd
    x = make_input(shape, dtype, seed=len(shape) + sum(shape))
    check_forward_backward(native, x, 0.3, seed=42, offset=3, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", PS, ids=P_IDS)
def test_p(native: Any, simd: str, dtype: Any, p: float, mode: str) -> None:
    del simd
    x = make_input((1031,), dtype, seed=2)
    if dtype is np.float16 and mode == "inverted" and p < 1 and 1 / (1 - p) >= 65520:
        # float16's scale overflows: an error naming the largest p (SPEC section 8)
        for impl in (native, reference):
            with pytest.raises(ValueError, match=r"float16.*overflows to inf"):
                impl.dropout(x, p, seed=7, offset=11, mode=mode)
        return
    check_forward_backward(native, x, p, seed=7, offset=11, mode=mode)


@pytest.mark.parametrize("offset", OFFSETS, ids=hex)
@pytest.mark.parametrize("seed", SEEDS, ids=hex)
def test_seeds_and_offsets(native: Any, simd: str, seed: int, offset: int) -> None:
    del simd
    x = make_input((77,), np.float32, seed=3)
    check_forward_backward(native, x, 0.5, seed=seed, offset=offset)


@pytest.mark.parametrize("offset", [TWO_64 - 1, TWO_64 - 70, TWO_64 - 4096])
def test_stream_wraps_at_2_64(native: Any, simd: str, dtype: Any, offset: int) -> None:
    """A mask that runs past position 2**64 - 1 continues at position 0."""
    del simd
    n = 9000
    x = make_input((n,), dtype, seed=4)
    check_forward_backward(native, x, 0.5, seed=5, offset=offset, mode="classic")
    _, m = native.dropout(x, 0.5, seed=5, offset=offset, return_mask=True)
    _, m0 = native.dropout(x, 0.5, seed=5, offset=0, return_mask=True)
    head = TWO_64 - offset
    np.testing.assert_array_equal(m.to_bool()[head:], m0.to_bool()[: n - head])


LAYOUTS = {
    "step2": lambda a: a[::2],
    "reversed": lambda a: a[::-1],
    "step3-neg2": lambda a: a[1::3, ::-2],
    "fortran": np.asfortranarray,
    "transpose": lambda a: a.T,
    "zero-stride": lambda a: np.broadcast_to(a[:1], a.shape),
    "unaligned": lambda a: _unaligned(a),
}


def _unaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)
    b = raw[1:].view(a.dtype).reshape(a.shape)
    b[...] = a
    return b


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_layouts(native: Any, simd: str, dtype: Any, layout: str) -> None:
    del simd
    base = make_input((34, 29), dtype, seed=5)
    x = LAYOUTS[layout](base)
    check_forward_backward(native, x, 0.5, seed=9, offset=1)
    check_forward_backward(native, x, 0.5, seed=9, offset=1, broadcast_axes=0)
    yc = native.dropout(np.ascontiguousarray(x), 0.5, seed=9, offset=1)
    assert_same(native.dropout(x, 0.5, seed=9, offset=1), yc)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "axes",
    [0, 1, 2, -1, (0, 2), (2, 0), (0, 1), (1, 2), (0, 1, 2), ()],
    ids=lambda a: str(a).replace(" ", ""),
)
def test_broadcast_axes(
    native: Any, simd: str, dtype: Any, axes: Any, mode: str
) -> None:
    del simd
    for shape in ((3, 5, 7), (2, 9, 33), (4, 1, 17)):
        x = make_input(shape, dtype, seed=6)
        check_forward_backward(
            native, x, 0.4, seed=13, offset=TWO_64 - 3, broadcast_axes=axes, mode=mode
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_evaluation(native: Any, dtype: Any, p: float, mode: str) -> None:
    x = make_input((5, 13), dtype, seed=7)
    check_forward_backward(native, x, p, training=False, mode=mode, seed=1)
    y, m = native.dropout(x, p, training=False, mode=mode, return_mask=True)
    assert m is None
    assert y.flags.c_contiguous
    assert not np.shares_memory(y, x)
    xf = np.asfortranarray(x)
    assert native.dropout(xf, p, training=False, mode=mode).flags.c_contiguous
    out = np.empty_like(x)
    assert native.dropout(x, p, training=False, mode=mode, out=out) is out
    assert_same(out, reference.dropout(x, p, training=False, mode=mode))


def _out_cases(n: int, dtype: Any) -> dict[str, Any]:
    """(x, out) pairs: separate, same array, and partial overlaps both ways."""

    def separate() -> tuple[np.ndarray, np.ndarray]:
        return make_input((n,), dtype, 8), np.full(n, 3, dtype)

    def same() -> tuple[np.ndarray, np.ndarray]:
        x = make_input((n,), dtype, 8)
        return x, x

    def overlap(shift: int) -> Any:
        def make() -> tuple[np.ndarray, np.ndarray]:
            buf = np.zeros(n + 20, dtype)
            buf[10 : 10 + n] = make_input((n,), dtype, 8)
            return buf[10 : 10 + n], buf[10 + shift : 10 + n + shift]

        return make

    def strided_overlap() -> tuple[np.ndarray, np.ndarray]:
        buf = np.zeros(2 * n + 2, dtype)
        buf[::2][:n] = make_input((n,), dtype, 8)
        return buf[: 2 * n : 2], buf[n // 2 : n // 2 + n]

    return {
        "separate": separate,
        "same": same,
        "overlap+1": overlap(1),
        "overlap-1": overlap(-1),
        "overlap+7": overlap(7),
        "strided-overlap": strided_overlap,
    }


@pytest.mark.parametrize(
    "case",
    ["separate", "same", "overlap+1", "overlap-1", "overlap+7", "strided-overlap"],
)
@pytest.mark.parametrize(
    "what",
    ["forward", "forward-axes", "backward-mask", "backward-regen", "eval-classic"],
)
def test_out(native: Any, dtype: Any, case: str, what: str) -> None:
    n = 301
    make = _out_cases(n, dtype)[case]
    results = []
    for impl in (native, reference):
        x, out = make()
        x_copy = x.copy()
        if what == "forward":
            r = impl.dropout(x, 0.5, seed=3, out=out)
        elif what == "forward-axes":
            x2, out2 = x.reshape(7, 43), out.reshape(7, 43)
            r = impl.dropout(x2, 0.5, seed=3, out=out2, broadcast_axes=1)
            out = out2
        elif what == "backward-mask":
            _, m = impl.dropout(x_copy, 0.5, seed=3, return_mask=True)
            r = impl.dropout_backward(x, m, out=out)
        elif what == "backward-regen":
            r = impl.dropout_backward(x, p=0.5, seed=3, out=out)
        else:
            r = impl.dropout(x, 0.5, training=False, mode="classic", out=out)
        assert r is out
        results.append(r.copy())
        expected = reference.dropout(x_copy, 0.5, seed=3) if what == "forward" else None
        if expected is not None:
            assert_same(r, expected)
    assert_same(results[0], results[1])


def test_generator_seed_matches(native: Any) -> None:
    x = make_input((100,), np.float32, 9)
    yn, mn = native.dropout(x, 0.5, seed=np.random.default_rng(5), return_mask=True)
    yr, mr = reference.dropout(x, 0.5, seed=np.random.default_rng(5), return_mask=True)
    assert_same(yn, yr)
    assert_same_mask(mn, mr)


def test_lists_and_scalars(native: Any) -> None:
    for x in ([1.0, 2.0, -3.5], 2.5, [[1.0], [2.0]]):
        assert_same(native.dropout(x, 0.5, seed=1), reference.dropout(x, 0.5, seed=1))


def test_huge_array(native: Any) -> None:
    """More than 2**24 elements (beyond float32-exact counting), across the
    2**64 wrap."""
    n = (1 << 24) + 13
    x = np.empty(n, np.float16)
    x[:] = 1.5
    x[::1001] = np.nan
    kw: dict[str, Any] = {"seed": 77, "offset": TWO_64 - (1 << 23)}
    yr, mr = reference.dropout(x, 0.25, return_mask=True, **kw)
    yn, mn = native.dropout(x, 0.25, return_mask=True, **kw)
    assert_same(yn, yr)
    assert_same_mask(mn, mr)
    del yr, yn
    # sampled against the literal stream
    idx = np.array([0, 1, (1 << 23) - 1, 1 << 23, (1 << 24) + 12], dtype=np.int64)
    np.testing.assert_array_equal(
        mn.to_bool()[idx], reference.keep(77, kw["offset"], idx, 0.25)
    )


axes_shapes = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)


@st.composite
def dropout_case(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(axes_shapes)
    ndim = len(shape)
    axes = draw(
        st.one_of(
            st.none(),
            st.sets(st.integers(0, ndim - 1), max_size=ndim).map(
                lambda s: tuple(
                    a - ndim if i % 2 else a for i, a in enumerate(sorted(s))
                )
            )
            if ndim
            else st.just(()),
        )
    )
    return {
        "shape": shape,
        "axes": axes,
        "dtype": draw(st.sampled_from([np.float16, np.float32, np.float64])),
        "p": draw(st.one_of(st.sampled_from(PS), st.floats(0, 1))),
        "seed": draw(st.integers(0, TWO_64 - 1)),
        "offset": draw(
            st.one_of(st.integers(0, TWO_64 - 1), st.integers(TWO_64 - 200, TWO_64 - 1))
        ),
        "mode": draw(st.sampled_from(MODES)),
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=dropout_case())
def test_random_cases(native: Any, case: dict[str, Any]) -> None:
    x = make_input(case["shape"], case["dtype"], seed=case["seed"] % 1000)
    p = case["p"]
    if (
        case["mode"] == "inverted"
        and x.dtype == np.float16
        and p < 1.0
        and 1.0 / (1.0 - p) >= 65520.0  # float16(1 / (1 - p)) would be inf
    ):  # docs/spec.md section 8: refused by both implementations, nothing written
        for impl in (native, reference):
            with pytest.raises(ValueError, match="too close to 1 for float16"):
                impl.dropout(
                    x,
                    p,
                    seed=case["seed"],
                    offset=case["offset"],
                    broadcast_axes=case["axes"],
                )
        return
    check_forward_backward(
        native,
        x,
        case["p"],
        seed=case["seed"],
        offset=case["offset"],
        mode=case["mode"],
        broadcast_axes=case["axes"],
    )
