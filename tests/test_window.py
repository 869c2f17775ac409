"""window=(global_shape, start): a block gets exactly the whole array's values at its
positions (docs/spec.md section 11), natively and in the reference, for dense,
broadcast and spatial masks, forward and backward, any thread count and SIMD level."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, make_input, reference
from fastdropout.mask import Mask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def mask_window(
    whole: Mask, start: tuple[int, ...], shape: tuple[int, ...]
) -> np.ndarray:
    """The block's window of the whole array's mask, as bools."""
    full = whole.to_bool()
    index = tuple(
        slice(0, 1) if a in whole.broadcast_axes else slice(s, s + n)
        for a, (s, n) in enumerate(zip(start, shape))
    )
    return full[index]


@st.composite
def blocks(draw: Any, max_ndim: int = 4) -> tuple[Any, ...]:
    """(global_shape, start, block_shape, broadcast_axes)."""
    ndim = draw(st.integers(0, max_ndim))
    gshape, start, bshape = [], [], []
    for k in range(ndim):
        hi = 150 if k == ndim - 1 else 7
        g = draw(st.integers(0, hi))
        s = draw(st.integers(0, g))
        n = draw(st.integers(0, g - s))
        gshape.append(g)
        start.append(s)
        bshape.append(n)
    axes = tuple(a for a in range(ndim) if draw(st.booleans()) and ndim > 1)
    return tuple(gshape), tuple(start), tuple(bshape), axes


def block_of(x: np.ndarray, start: tuple[int, ...], shape: tuple[int, ...]) -> Any:
    """The block, as a view (``x[...]`` for 0-d, so it stays an array)."""
    return x[tuple(slice(s, s + n) for s, n in zip(start, shape)) or ...]


def check_block(
    impl: Any,
    x: np.ndarray,
    start: tuple[int, ...],
    shape: tuple[int, ...],
    axes: tuple[int, ...],
    **kw: Any,
) -> None:
    """Forward (values and mask) and both backward forms of one block against the
    whole-array call of ``impl``."""
    bc = axes or None
    whole, whole_mask = impl.dropout(x, broadcast_axes=bc, return_mask=True, **kw)
    win = (x.shape, start)
    blk = np.array(block_of(x, start, shape))
    y, m = impl.dropout(blk, broadcast_axes=bc, window=win, return_mask=True, **kw)
    assert_same(y, np.array(block_of(whole, start, shape)), "block")
    assert m.window == (x.shape, start)
    assert m.shape == tuple(1 if a in axes else n for a, n in enumerate(shape))
    assert (m.seed, m.offset, m.p, m.broadcast_axes) == (
        whole_mask.seed,
        whole_mask.offset,
        whole_mask.p,
        axes,
    )
    np.testing.assert_array_equal(m.to_bool(), mask_window(whole_mask, start, shape))
    # the reference makes the same mask bits
    _, rm = reference.dropout(
        blk, broadcast_axes=bc, window=win, return_mask=True, **kw
    )
    assert m == rm
    # backward: with the block's mask, and regenerated with the window
    g = make_input(x.shape, x.dtype, seed=5)
    gw = impl.dropout_backward(g, whole_mask)
    gb = np.array(block_of(g, start, shape))
    expect = np.array(block_of(gw, start, shape))
    assert_same(impl.dropout_backward(gb, m), expect, "backward from block mask")
    regen = impl.dropout_backward(
        gb,
        p=kw["p"],
        mode=kw.get("mode", "inverted"),
        seed=whole_mask.seed,
        offset=whole_mask.offset,
        broadcast_axes=bc,
        window=win,
    )
    assert_same(regen, expect, "backward regenerated")


@SETTINGS
@given(
    case=blocks(),
    p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    seed=st.integers(0, TWO_64 - 1),
    offset=st.one_of(st.integers(0, 1000), st.integers(TWO_64 - 300, TWO_64 - 1)),
    mode=st.sampled_from(["inverted", "classic"]),
    dt=st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_block_equals_whole_array(
    impl: Any, case: Any, p: float, seed: int, offset: int, mode: str, dt: Any
) -> None:
    gshape, start, bshape, axes = case
    x = make_input(gshape, dt, seed=seed % 1000)
    check_block(impl, x, start, bshape, axes, p=p, seed=seed, offset=offset, mode=mode)


@st.composite
def spatial_blocks(draw: Any) -> tuple[Any, ...]:
    ndim = draw(st.integers(3, 5))
    gshape = tuple(draw(st.integers(1, 6 if k < 2 else 9)) for k in range(ndim))
    start = tuple(draw(st.integers(0, g - 1)) for g in gshape)
    bshape = tuple(draw(st.integers(1, g - s)) for g, s in zip(gshape, start))
    return gshape, start, bshape


@SETTINGS
@given(
    case=spatial_blocks(),
    fmt=st.sampled_from(["channels_first", "channels_last"]),
    seed=st.integers(0, TWO_64 - 1),
    offset=st.integers(0, TWO_64 - 1),
)
def test_spatial_block_equals_whole_array(
    impl: Any, case: Any, fmt: str, seed: int, offset: int
) -> None:
    gshape, start, bshape = case
    x = make_input(gshape, np.float32, seed=3)
    kw: dict[str, Any] = {"p": 0.5, "seed": seed, "offset": offset, "data_format": fmt}
    whole, wm = impl.spatial_dropout(x, return_mask=True, **kw)
    blk = np.array(block_of(x, start, bshape))
    y, m = impl.spatial_dropout(blk, window=(gshape, start), return_mask=True, **kw)
    assert_same(y, np.array(block_of(whole, start, bshape)))
    np.testing.assert_array_equal(m.to_bool(), mask_window(wm, start, bshape))
    g = make_input(gshape, np.float32, seed=4)
    expect = np.array(block_of(impl.dropout_backward(g, wm), start, bshape))
    gb = np.array(block_of(g, start, bshape))
    assert_same(impl.dropout_backward(gb, m), expect)
    regen = impl.dropout_backward(
        gb,
        p=0.5,
        seed=seed,
        offset=offset,
        broadcast_axes=wm.broadcast_axes,
        window=(gshape, start),
    )
    assert_same(regen, expect)


# Blocks large enough for several threads (>= 2 * 65536 elements), with unaligned run
# starts, runs longer than the 65536-bit piece buffer, and one-element runs.
BIG_CASES = [
    ((600, 1000), (50, 123), (400, 701), ()),
    ((3, 140_000), (0, 3), (3, 139_990), ()),
    ((200_000, 3), (7, 1), (150_001, 1), ()),
    ((40, 30, 500), (3, 0, 17), (30, 30, 450), (1,)),
    ((64, 16, 40, 40), (5, 3, 1, 2), (50, 12, 37, 36), (2, 3)),
]


@pytest.mark.parametrize("case", BIG_CASES, ids=lambda c: "x".join(map(str, c[2])))
def test_big_blocks_threads(native: Any, nthreads: int, case: Any) -> None:
    del nthreads
    gshape, start, bshape, axes = case
    x = make_input(gshape, np.float32, seed=1)
    check_block(native, x, start, bshape, axes, p=0.3, seed=99, offset=TWO_64 - 7)


@pytest.mark.parametrize("case", BIG_CASES[:2] + BIG_CASES[3:4], ids=["a", "b", "c"])
def test_big_blocks_simd(native: Any, simd: str, dtype: Any, case: Any) -> None:
    del simd
    gshape, start, bshape, axes = case
    x = make_input(gshape, dtype, seed=2)
    check_block(native, x, start, bshape, axes, p=0.6, seed=12345, offset=1)


def test_in_place_out_and_strided_input(native: Any) -> None:
    x = make_input((20, 300), np.float64, seed=0)
    whole = native.dropout(x, 0.5, seed=4)
    win = ((30, 900), (5, 400))
    expect = native.dropout(x, 0.5, seed=4, window=win)
    assert not np.array_equal(expect, whole)  # a different part of the stream
    y = x.copy()
    assert native.dropout(y, 0.5, seed=4, window=win, out=y) is y
    assert_same(y, expect)
    xf = np.asfortranarray(x)
    assert_same(native.dropout(xf, 0.5, seed=4, window=win), expect)
    assert_same(native.dropout(x[:, ::-1][:, ::-1], 0.5, seed=4, window=win), expect)


def test_evaluation_ignores_the_window(impl: Any) -> None:
    x = make_input((4, 5), np.float32)
    y, m = impl.dropout(
        x,
        0.5,
        training=False,
        mode="classic",
        window=((9, 9), (1, 2)),
        return_mask=True,
    )
    assert m is None
    assert_same(y, impl.dropout(x, 0.5, training=False, mode="classic"))


def test_generator_seed_and_mask_records_it(native: Any) -> None:
    x = make_input((8, 8), np.float32)
    y, m = native.dropout(
        x,
        0.5,
        seed=np.random.default_rng(1),
        window=((16, 8), (8, 0)),
        return_mask=True,
    )
    seed = int(np.random.default_rng(1).integers(TWO_64, dtype=np.uint64))
    assert m.seed == seed
    _, wm = native.dropout(
        np.ones((16, 8), np.float32), 0.5, seed=seed, return_mask=True
    )
    np.testing.assert_array_equal(m.to_bool(), wm.to_bool()[8:])
    assert_same(y, native.dropout(x, 0.5, seed=seed, window=((16, 8), (8, 0))))


BAD_WINDOWS: list[tuple[Any, type[Exception], str]] = [
    (((4, 5), (0,)), ValueError, "one entry per axis"),
    (((4,), (0, 0)), ValueError, "one entry per axis"),
    (((4, 5, 6), (0, 0, 0)), ValueError, "one entry per axis"),
    (((4, 5), (1, 0)), ValueError, "axis 0"),
    (((4, 5), (0, -1)), ValueError, "axis 1"),
    (((3, 5), (0, 0)), ValueError, "axis 0"),
    (((4, -5), (0, 0)), ValueError, "global_shape"),
    (((4, 5), (0, 0), (0, 0)), ValueError, "pair"),
    (((4, 5),), ValueError, "pair"),
    ((4, 5), TypeError, "global_shape"),
    (7, TypeError, "pair"),
    ("ab", TypeError, "pair"),
    (((4, 5.0), (0, 0)), TypeError, "ints"),
    (((4, 5), (0, True)), TypeError, "ints"),
]


@pytest.mark.parametrize(("window", "exc", "match"), BAD_WINDOWS)
def test_bad_windows(impl: Any, window: Any, exc: type[Exception], match: str) -> None:
    x = make_input((4, 5), np.float32)
    out = np.full_like(x, 7.0)
    for training in (True, False):
        with pytest.raises(exc, match=match):
            impl.dropout(x, 0.5, seed=1, window=window, out=out, training=training)
    with pytest.raises(exc, match=match):
        impl.dropout_backward(x, p=0.5, seed=1, window=window, out=out)
    r = make_input((4, 5), np.float32, seed=2)
    b = make_input((5,), np.float32, seed=3)
    for training in (True, False):
        for bias in (None, b):
            with pytest.raises(exc, match=match):
                impl.dropout_add(
                    x, r, 0.5, bias=bias, seed=1, window=window, out=out,
                    training=training,
                )  # fmt: skip
            for return_mask in (False, True):
                with pytest.raises(exc, match=match):
                    impl.dropout_add(
                        x, r, 0.5, bias=bias, seed=1, window=window,
                        return_mask=return_mask, training=training,
                    )  # fmt: skip
        for return_mask in (False, True):
            with pytest.raises(exc, match=match):
                impl.alpha_dropout(
                    x, 0.5, seed=1, window=window, out=out, training=training,
                    return_mask=return_mask,
                )  # fmt: skip
    x3 = make_input((4, 5, 1), np.float32)
    out3 = np.full_like(x3, 7.0)
    with pytest.raises(ValueError, match="axis 2"):
        impl.spatial_dropout(x3, 0.5, seed=1, window=((4, 5, 0), (0, 0, 0)), out=out3)
    assert (out3 == 7.0).all()
    assert (out == 7.0).all()


def test_backward_mask_and_window_is_an_error(impl: Any) -> None:
    x = make_input((4, 5), np.float32)
    _, m = impl.dropout(x, 0.5, seed=1, window=((8, 5), (0, 0)), return_mask=True)
    with pytest.raises(ValueError, match="not both"):
        impl.dropout_backward(x, m, window=((8, 5), (0, 0)))


def test_mask_with_window_pickles_and_compares(native: Any) -> None:
    x = make_input((4, 5), np.float32)
    _, m = native.dropout(x, 0.5, seed=1, window=((8, 5), (4, 0)), return_mask=True)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2 == m
    assert hash(m2) == hash(m)
    assert m2.window == ((8, 5), (4, 0))
    assert "window=((8, 5), (4, 0))" in repr(m)
    same_bits = Mask(m.bits, m.shape, m.p, m.mode, m.seed, m.offset)
    assert same_bits.window is None
    assert same_bits != m
    with pytest.raises(ValueError, match="one entry per axis"):
        Mask(m.bits, m.shape, m.p, m.mode, m.seed, m.offset, window=((8,), (0,)))


def test_windows_tile_the_array(native: Any) -> None:
    """Cutting an array into blocks any way and stitching them back gives the
    whole-array call (with a mask whose bits concatenate when tiles are rows)."""
    x = make_input((37, 129), np.float32, seed=8)
    whole = native.dropout(x, 0.25, seed=77, offset=5)
    y = np.empty_like(x)
    for r0, r1 in ((0, 1), (1, 10), (10, 37)):
        for c0, c1 in ((0, 64), (64, 65), (65, 129)):
            y[r0:r1, c0:c1] = native.dropout(
                x[r0:r1, c0:c1], 0.25, seed=77, offset=5, window=(x.shape, (r0, c0))
            )
    assert_same(y, whole)


def readme_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section under ``heading``."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    blocks: list[str] = []
    inside = fence = False
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if not fence and inside and line.strip() == "```python":
                blocks.append("")
            fence = not fence
        elif not fence and line.startswith("#"):
            if inside:
                break
            inside = line == heading
        elif fence and inside and blocks:
            blocks[-1] += line + "\n"
    return blocks


def test_readme_window_example_runs(native: Any) -> None:
    (block,) = readme_blocks("### `window=`: a block of a larger array")
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - README code
    assert namespace["bm"].window == ((1000, 512), (200, 128))
    assert namespace["fd"] is native


def finite(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Finite float32 values: the native dropout_add's dense and MaskRun kernels
    give different signs to a NaN made from two NaNs (x + bias, then + residual),
    a matter of those kernels rather than of windows."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@SETTINGS
@given(
    case=blocks(max_ndim=3),
    p=st.sampled_from([0.0, 0.3, 0.9]),
    seed=st.integers(0, TWO_64 - 1),
    offset=st.one_of(st.integers(0, 100), st.integers(TWO_64 - 100, TWO_64 - 1)),
    with_bias=st.booleans(),
    mode=st.sampled_from(["inverted", "classic"]),
)
def test_dropout_add_and_alpha_blocks(
    impl: Any, case: Any, p: float, seed: int, offset: int, with_bias: bool, mode: str
) -> None:
    """dropout_add (with the block's part of the bias) and alpha_dropout of a block
    equal the whole-array call there; the masks are the block's window."""
    gshape, start, bshape, axes = case
    x = finite(gshape, 1)
    r = finite(gshape, 2)
    nb = min(len(gshape), 1 if with_bias else 0)
    bias = finite(gshape[len(gshape) - nb :], 3) if nb else None
    kw: dict[str, Any] = {
        "seed": seed,
        "offset": offset,
        "broadcast_axes": axes or None,
    }
    win = (gshape, start)
    xb = np.array(block_of(x, start, bshape))
    rb = np.array(block_of(r, start, bshape))
    bb = None
    if bias is not None:
        bb = np.array(bias[start[-1] : start[-1] + bshape[-1]])
    whole, wm = impl.dropout_add(x, r, p, bias=bias, mode=mode, return_mask=True, **kw)
    y, m = impl.dropout_add(
        xb, rb, p, bias=bb, mode=mode, window=win, return_mask=True, **kw
    )
    assert_same(y, np.array(block_of(whole, start, bshape)), "dropout_add")
    np.testing.assert_array_equal(m.to_bool(), mask_window(wm, start, bshape))
    assert m.window == win
    whole, wm = impl.alpha_dropout(x, p, return_mask=True, **kw)
    y, m = impl.alpha_dropout(xb, p, window=win, return_mask=True, **kw)
    assert_same(y, np.array(block_of(whole, start, bshape)), "alpha_dropout")
    np.testing.assert_array_equal(m.to_bool(), mask_window(wm, start, bshape))
    assert m.mode == "alpha"
    g = make_input(gshape, np.float32, seed=4)
    gb = np.array(block_of(g, start, bshape))
    expect = np.array(block_of(impl.dropout_backward(g, wm), start, bshape))
    assert_same(impl.dropout_backward(gb, m), expect, "alpha backward, block mask")
    regen = impl.dropout_backward(gb, p=p, mode="alpha", window=win, **kw)
    assert_same(regen, expect, "alpha backward regenerated")


def test_fused_big_blocks_threads(native: Any, nthreads: int) -> None:
    del nthreads
    gshape, start, bshape = (600, 1000), (50, 123), (400, 701)
    x, r, bias = finite(gshape, 1), finite(gshape, 2), finite((1000,), 3)
    win = (gshape, start)
    xb, rb = np.array(block_of(x, start, bshape)), np.array(block_of(r, start, bshape))
    whole = native.dropout_add(x, r, 0.4, bias=bias, seed=8)
    got = native.dropout_add(xb, rb, 0.4, bias=bias[123:824], seed=8, window=win)
    assert_same(got, np.array(block_of(whole, start, bshape)))
    assert_same(
        native.alpha_dropout(xb, 0.4, seed=8, window=win),
        np.array(block_of(native.alpha_dropout(x, 0.4, seed=8), start, bshape)),
    )


def test_bfloat16_blocks(impl: Any) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = make_input((30, 70), np.float32, seed=6).astype(ml_dtypes.bfloat16)
    whole = impl.dropout(x, 0.3, seed=2, offset=9)
    y = impl.dropout(
        np.array(x[5:20, 3:60]), 0.3, seed=2, offset=9, window=(x.shape, (5, 3))
    )
    np.testing.assert_array_equal(y.view(np.uint16), whole[5:20, 3:60].view(np.uint16))
