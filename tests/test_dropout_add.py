"""dropout_add / dropout_add_backward / DropoutAdd (docs/spec.md section 9):
native == reference bit for bit over dtypes (bfloat16 included), shapes, bias
shapes, strides, in-place outputs, broadcast masks, offsets, SIMD levels and
thread counts; the reference equals the NumPy composition; grad_bias does not
depend on threads; errors name the argument and write nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference

try:
    import ml_dtypes

    BF16: Any = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is in the test extra
    BF16 = None

DTYPES = [np.float16, np.float32, np.float64]
DTYPE_IDS = ["float16", "float32", "float64"]
if BF16 is not None:
    DTYPES.append(BF16)
    DTYPE_IDS.append("bfloat16")


def values(shape: tuple[int, ...], dtype: Any, seed: int) -> np.ndarray:
    if BF16 is not None and np.dtype(dtype) == BF16:
        rng = np.random.default_rng(seed)
        x = np.asarray((rng.standard_normal(shape) * 3).astype(np.float32)).astype(BF16)
        flat = x.reshape(-1).view(np.uint16)
        if flat.size:
            k = max(1, flat.size // 5)
            where = rng.choice(flat.size, size=k, replace=False)
            flat[where] = rng.integers(0, 1 << 16, size=k, dtype=np.uint16)
        return x
    return make_input(shape, dtype, seed=seed)


@pytest.fixture(params=DTYPES, ids=DTYPE_IDS)
def any_dtype(request: pytest.FixtureRequest) -> Any:
    return request.param


def as_f32(a: Any) -> np.ndarray:
    a = np.asarray(a)
    if BF16 is not None and a.dtype == BF16:
        return (np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << 16).view(
            np.float32
        )
    return a.astype(np.float64)


def assert_same_add(actual: Any, expected: Any, x: Any, r: Any, bias: Any) -> None:
    """Bit equality, except that where an addition had two NaN operands (given, or
    made by an earlier Inf - Inf) the result need only be a NaN: which of the two NaNs an addition returns is not fixed by
    IEEE 754, and NumPy's own loops differ there (the compiler may swap the
    operands of a commutative add). One NaN operand is propagated exactly."""
    xf = as_f32(x)
    rf = as_f32(r)
    bf = np.zeros_like(xf) if bias is None else np.broadcast_to(as_f32(bias), xf.shape)
    with np.errstate(all="ignore"):
        t_nan = np.isnan(xf + bf)  # x + bias is NaN (a NaN operand, or Inf - Inf)
    relax = (np.isnan(xf) & np.isnan(bf)) | (np.isnan(rf) & t_nan)
    ea = np.isnan(as_f32(expected))
    if np.any(relax):
        aa = np.isnan(as_f32(actual))
        assert np.array_equal(aa[relax], ea[relax]), "NaN where the reference has NaN"
        keep = ~relax
        assert_same(np.asarray(actual)[keep], np.asarray(expected)[keep])
    else:
        assert_same(actual, expected)


def assert_same_sums(actual: Any, expected: Any) -> None:
    """grad_bias: bit equality; a NaN sum (NaN + NaN along the rows) need only be
    a NaN."""
    nan = np.isnan(as_f32(expected)).reshape(-1)
    assert np.array_equal(np.isnan(as_f32(actual)).reshape(-1), nan)
    a = np.asarray(actual).reshape(-1)
    e = np.asarray(expected).reshape(-1)
    assert_same(a[~nan], e[~nan], "grad_bias")


def check(native: Any, x: Any, r: Any, p: float, **kw: Any) -> None:
    """Forward with and without mask, both backward paths (with grad_bias)."""
    yr, mr = reference.dropout_add(x, r, p, return_mask=True, **kw)
    yn, mn = native.dropout_add(x, r, p, return_mask=True, **kw)
    assert_same_add(yn, yr, x, r, kw.get("bias"))
    assert_same_mask(mn, mr)
    assert_same_add(native.dropout_add(x, r, p, **kw), yr, x, r, kw.get("bias"))
    if not kw.get("training", True):
        return
    g = values(np.shape(x), np.asarray(x).dtype, seed=99)
    bias = kw.get("bias")
    bflag: Any = False if bias is None else np.shape(bias)
    gr = reference.dropout_add_backward(g, mr, bias=bflag)
    gn = native.dropout_add_backward(g, mn, bias=bflag)
    assert_same(gn[0], gr[0], "grad_x")
    assert gn[1] is g
    assert gr[1] is g
    assert_same(gn[0], reference.dropout_backward(g, mr), "grad_x is dropout_backward")
    if bias is None:
        assert gn[2] is None
        assert gr[2] is None
    else:
        assert_same_sums(gn[2], gr[2])
    regen = {k: kw[k] for k in ("seed", "offset", "mode", "broadcast_axes") if k in kw}
    gg = native.dropout_add_backward(g, p=p, bias=bflag, **regen)
    assert_same(gg[0], gr[0], "regenerated grad_x")
    if bias is not None:
        assert_same_sums(gg[2], gr[2])


SHAPES = [
    (),
    (0,),
    (1,),
    (7,),
    (64,),
    (65,),
    (129,),
    (4097,),
    (3, 5, 7),
    (2, 0, 3),
    (5, 130),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes_every_level(native: Any, simd: str, any_dtype: Any, shape: Any) -> None:
    del simd
    x = values(shape, any_dtype, 1)
    r = values(shape, any_dtype, 2)
    for mode in ("inverted", "classic"):
        check(native, x, r, 0.3, seed=42, offset=3, mode=mode)
        if shape:
            b = values(shape[-1:], any_dtype, 3)
            check(native, x, r, 0.3, seed=42, offset=3, mode=mode, bias=b)
            check(native, x, r, 0.3, bias=b, mode=mode, training=False)
        check(native, x, r, 0.3, bias=values((), any_dtype, 4), mode=mode, seed=1)
        check(native, x, r, 0.3, mode=mode, training=False)


@pytest.mark.parametrize("p", [0.0, 2.0**-40, 0.5, 0.9, 1 - 2.0**-30, 1.0])
def test_probabilities(native: Any, any_dtype: Any, p: float) -> None:
    x = values((9, 70), any_dtype, 5)
    r = values((9, 70), any_dtype, 6)
    b = values((70,), any_dtype, 7)
    if np.dtype(any_dtype) == np.float16 and p == 1 - 2.0**-30:
        with pytest.raises(ValueError, match="float16"):
            native.dropout_add(x, r, p, bias=b, seed=1)
        return
    check(native, x, r, p, bias=b, seed=3)


def test_bias_shapes(native: Any) -> None:
    x = values((3, 4, 5, 6), np.float32, 1)
    r = values((3, 4, 5, 6), np.float32, 2)
    for bshape in [(), (6,), (5, 6), (4, 5, 6), (3, 4, 5, 6), (1,)]:
        if bshape == (1,):
            with pytest.raises(ValueError, match="bias has shape"):
                native.dropout_add(x, r, 0.5, bias=np.ones(bshape, np.float32), seed=1)
            continue
        check(native, x, r, 0.4, bias=values(bshape, np.float32, 8), seed=5)


def test_matches_numpy_composition(any_dtype: Any) -> None:
    """The reference is NumPy's composition (float16/32/64; for bfloat16 each
    operation rounded from float32, which ml_dtypes also does except for NaN
    payloads, so finite inputs are compared)."""
    dt = np.dtype(any_dtype)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((50, 64)) * 4).astype(np.float32).astype(dt)
    r = rng.standard_normal((50, 64)).astype(np.float32).astype(dt)
    b = rng.standard_normal(64).astype(np.float32).astype(dt)
    y, m = reference.dropout_add(x, r, 0.3, bias=b, seed=5, return_mask=True)
    keep = m.to_bool()
    s = np.asarray(
        reference.dropout_backward(
            np.ones(1, dt),
            reference.Mask(np.array([1], np.uint8), (1,), 0.3, "inverted", 0, 0),
        )
    )[0]
    want = r + np.where(keep, (x + b) * s, np.zeros((), dt))
    np.testing.assert_array_equal(
        y.view(f"u{dt.itemsize}"), want.view(f"u{dt.itemsize}")
    )
    yc = reference.dropout_add(x, r, 0.3, bias=b, seed=5, mode="classic")
    want_c = r + np.where(keep, x + b, np.zeros((), dt))
    np.testing.assert_array_equal(
        yc.view(f"u{dt.itemsize}"), want_c.view(f"u{dt.itemsize}")
    )


def test_dropped_nan_and_minus_zero() -> None:
    """Dropped elements add +0.0 (so residual -0.0 becomes +0.0, as NumPy adds);
    a dropped NaN in x does not reach y; a NaN residual does."""
    x = np.array([np.nan, np.inf, 1.0, -2.0] * 16, np.float32)
    r = np.array([-0.0, 1.0, np.nan, 3.0] * 16, np.float32)
    for impl in (reference,):
        y, _m = impl.dropout_add(x, r, 1.0, seed=1, return_mask=True)
        assert_same(y, r + np.float32(0.0))
        assert np.signbit(y[0]) == np.False_


@pytest.mark.parametrize("offset", [0, 1, 5, (1 << 32) - 3, TWO_64 - 1, TWO_64 - 70])
def test_layouts_and_offsets(native: Any, offset: int) -> None:
    x0 = values((30, 40), np.float32, 1)
    r0 = values((30, 40), np.float32, 2)
    b = values((40,), np.float32, 3)
    for x, r in [(x0, r0), (x0.T.copy().T, r0), (x0[::1, :], r0.T.copy().T)]:
        check(native, x, r, 0.5, bias=b, seed=TWO_64 - 1, offset=offset)
    xs = values((60, 80), np.float32, 4)[::2, ::2]
    check(
        native,
        xs,
        r0,
        0.5,
        bias=values((80,), np.float32, 5)[::2],
        seed=3,
        offset=offset,
    )


def test_out_in_place(native: Any, any_dtype: Any) -> None:
    x = values((17, 33), any_dtype, 1)
    r = values((17, 33), any_dtype, 2)
    b = values((33,), any_dtype, 3)
    want = reference.dropout_add(x, r, 0.4, bias=b, seed=9)
    for target in ("residual", "x", "other"):
        impls = (native, reference)
        for impl in impls:
            xc, rc = x.copy(), r.copy()
            out = {"residual": rc, "x": xc, "other": np.empty_like(x)}[target]
            y = impl.dropout_add(xc, rc, 0.4, bias=b, seed=9, out=out)
            assert y is out
            assert_same(y, want, f"out={target}")
    # a partial overlap of out with residual goes through a copy
    buf = np.concatenate([r.reshape(-1), r.reshape(-1)])
    rv = buf[: r.size].reshape(r.shape)
    out = buf[5 : 5 + r.size].reshape(r.shape)
    y = native.dropout_add(x, rv, 0.4, bias=b, seed=9, out=out)
    assert_same(y, want)


@pytest.mark.parametrize("axes", [(0,), (1,), (2, 3), (1, 3), (0, 1, 2, 3)])
def test_broadcast_axes(native: Any, simd: str, any_dtype: Any, axes: Any) -> None:
    del simd
    x = values((3, 4, 5, 6), any_dtype, 1)
    r = values((3, 4, 5, 6), any_dtype, 2)
    b = values((6,), any_dtype, 3)
    check(native, x, r, 0.5, bias=b, seed=11, offset=7, broadcast_axes=axes)


def test_threads(native: Any, nthreads: int, any_dtype: Any) -> None:
    del nthreads
    x = values((300, 1000), any_dtype, 1)
    r = values((300, 1000), any_dtype, 2)
    b = values((1000,), any_dtype, 3)
    check(native, x, r, 0.25, bias=b, seed=77, offset=TWO_64 - 5)
    check(
        native,
        x.reshape(-1, 50),
        r.reshape(-1, 50),
        0.25,
        bias=b[:50],
        seed=7,
        broadcast_axes=1,
    )


def test_grad_bias_same_for_any_thread_count_and_level(native: Any) -> None:
    """grad_bias (float64 sums over rows in C order, rounded once) is the same for
    every thread count and SIMD level, for wide and narrow biases."""
    from _util import AVAILABLE_SIMD, core

    g = (np.random.default_rng(3).standard_normal((700, 900)) * 1e3).astype(np.float32)
    before_t, before_s = core.get_num_threads(), core.simd_level()
    try:
        for ncols_shape in [(900,), (1,), (3, 700, 900)[2:], (700, 900)]:
            results = []
            for level in AVAILABLE_SIMD:
                core._set_simd(level)
                for n in (1, 2, 3, 7):
                    core.set_num_threads(n)
                    _, _, gb = native.dropout_add_backward(
                        g,
                        p=0.3,
                        seed=5,
                        bias=ncols_shape if ncols_shape != (1,) else True,
                    )
                    results.append(gb)
            for gb in results[1:]:
                assert_same(gb, results[0])
            ref = reference.dropout_add_backward(
                g, p=0.3, seed=5, bias=ncols_shape if ncols_shape != (1,) else True
            )[2]
            assert_same(results[0], ref)
    finally:
        core.set_num_threads(before_t)
        core._set_simd(before_s)


def test_grad_bias_is_a_sequential_float64_sum() -> None:
    """Check the order: values whose float64 sum depends on it."""
    g = np.array([[1e17], [1.0], [-1e17], [1.0]], np.float64)
    m = reference.Mask(np.array([0b1111], np.uint8), (4, 1), 0.0, "inverted", 0, 0)
    for impl_name in ("native", "reference"):
        impl = (
            reference
            if impl_name == "reference"
            else pytest.importorskip("fastdropout")
        )
        _, _, gb = impl.dropout_add_backward(g, m, bias=True)
        # ((1e17 + 1) - 1e17) + 1 = 1.0 in float64, sequentially (pairwise: 2.0)
        assert gb.tolist() == [1.0]


def test_errors(native: Any) -> None:
    x = np.ones((4, 5), np.float32)
    r = np.ones((4, 5), np.float32)
    out = np.full((4, 5), 7, np.float32)
    for impl in (native, reference):
        with pytest.raises(
            TypeError, match=r"residual has dtype float64.*x has dtype float32"
        ):
            impl.dropout_add(x, r.astype(np.float64), 0.5, seed=1, out=out)
        with pytest.raises(TypeError, match="bias has dtype float16"):
            impl.dropout_add(x, r, 0.5, bias=np.ones(5, np.float16), seed=1, out=out)
        with pytest.raises(ValueError, match="residual has shape"):
            impl.dropout_add(x, np.ones((5, 4), np.float32), 0.5, seed=1, out=out)
        with pytest.raises(ValueError, match="bias has shape"):
            impl.dropout_add(x, r, 0.5, bias=np.ones(4, np.float32), seed=1, out=out)
        with pytest.raises(ValueError, match="out has dtype"):
            impl.dropout_add(x, r, 0.5, seed=1, out=np.empty((4, 5), np.float64))
        with pytest.raises(ValueError, match="p must be"):
            impl.dropout_add(x, r, 1.5, seed=1, out=out)
        with pytest.raises(ValueError, match="mode must be"):
            impl.dropout_add(x, r, 0.5, mode="alpha", seed=1, out=out)
        with pytest.raises(TypeError, match="x has dtype int64"):
            impl.dropout_add(np.ones((4, 5), np.int64), r, 0.5, seed=1, out=out)
        with pytest.raises(ValueError, match="bias shape"):
            impl.dropout_add_backward(x, p=0.5, seed=1, bias=(4,), out=out)
        with pytest.raises(TypeError, match="bias must be True, False"):
            impl.dropout_add_backward(x, p=0.5, seed=1, bias="yes", out=out)
        assert np.all(out == 7)


def test_layer(native: Any, any_dtype: Any) -> None:
    x = values((6, 20), any_dtype, 1)
    r = values((6, 20), any_dtype, 2)
    b = values((20,), any_dtype, 3)
    for mode in ("inverted", "classic"):
        a = native.DropoutAdd(0.3, mode=mode, seed=4)
        e = reference.DropoutAdd(0.3, mode=mode, seed=4)
        for bias in (b, None):
            for training in (True, False):
                assert_same(
                    a.forward(x, r, bias, training), e.forward(x, r, bias, training)
                )
                ga, gr = a.backward(x), e.backward(x)
                assert_same(ga[0], gr[0])
                assert ga[1] is x
                if bias is None:
                    assert ga[2] is None
                    assert gr[2] is None
                else:
                    assert_same(ga[2], gr[2])
        assert a.offset == e.offset == 2 * x.size
    with pytest.raises(RuntimeError, match="before any forward"):
        native.DropoutAdd(0.5).backward(x)


@pytest.fixture(params=[False, True], ids=["cached", "streamed"])
def stream_all(request: pytest.FixtureRequest) -> Any:
    """grad_x written with normal stores (the default at these sizes), or with
    streaming stores for every output, then the default restored."""
    from _util import core

    if request.param:
        core._set_stream_threshold(0)
    try:
        yield request.param
    finally:
        core._set_stream_threshold(None)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("cols", "misalign"),
    [(5003, 0), (4096, 1), (4096, 3), (1024, 5), (1024, 0), (192, 7), (100, 0), (40, 0)],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_grad_bias_column_splits(
    native: Any, simd: str, stream_all: bool, threads: int, cols: int, misalign: int,
    dtype: Any
) -> None:
    """Rows wider than the 2048-column accumulator tile, and rows of whole cache
    lines with grad_x written at an offset (the threads then split rotated columns,
    the first ones being the previous row's last, and streamed rows start on a line):
    rows in bands of 64-column groups with a tail, and rows narrower than one group,
    grad_x and grad_bias equal the reference bit for bit."""
    from _util import core

    del simd, stream_all
    rows = -(-(1 << 17) // cols) + 3  # enough elements for two threads
    g = (np.random.default_rng(11).standard_normal((rows, cols)) * 1e3).astype(dtype)
    buf = np.empty(g.size + misalign, dtype)
    out = buf[misalign:].reshape(g.shape)
    before = core.get_num_threads()
    try:
        core.set_num_threads(threads)
        gx, _, gb = native.dropout_add_backward(g, p=0.4, seed=9, offset=2**64 - 1000,
                                                bias=True, out=out)
        if cols > 64:  # the split really ran (narrower rows go in one sweep)
            assert (core._last_team_size() > 1) == (threads > 1)
    finally:
        core.set_num_threads(before)
    rx, _, rb = reference.dropout_add_backward(g, p=0.4, seed=9, offset=2**64 - 1000,
                                               bias=True)
    assert gx is out
    assert_same(gx, rx)
    assert_same(gb, rb)


# -NaN with payload 1, +NaN with payload 2, +inf, as bit patterns of each dtype
NAN_BITS = {
    "float16": (np.uint16, 0xFE01, 0x7E02, 0x7C00),
    "float32": (np.uint32, 0xFFC00001, 0x7FC00002, 0x7F800000),
    "float64": (np.uint64, 0xFFF8000000000001, 0x7FF8000000000002, 0x7FF0000000000000),
    "bfloat16": (np.uint16, 0xFFC1, 0x7FC2, 0x7F80),
}


@pytest.mark.parametrize("rows", [6, 1100])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("broadcast_axes", [None, 0])
def test_grad_bias_keeps_the_first_nan(
    native: Any, simd: str, stream_all: bool, broadcast_axes: Any, dtype: Any, rows: int
) -> None:
    """A column meeting NaNs of different signs and payloads keeps the first one
    (docs/spec.md section 9), on every SIMD level, thread count and mask kind, in
    the register forms (float32, float64, float16 below avx512fp16; one row at a
    time or in bands across threads), bfloat16's buffered form and the tail columns
    after them."""
    del simd, stream_all
    from _util import core

    g = np.ones((rows, 130), dtype)
    utype, neg_nan, pos_nan, inf = NAN_BITS[DTYPE_IDS[DTYPES.index(dtype)]]
    u = g.view(utype)
    u[1, :] = neg_nan
    u[3, :] = pos_nan
    u[4, ::2] = inf  # after the NaNs
    m = native.dropout(g, 0.0, seed=1, return_mask=True, broadcast_axes=broadcast_axes)[1]
    want = reference.dropout_add_backward(g, m, bias=True)[2]
    assert (want.view(u.dtype) == u[1, 0]).all()
    before = core.get_num_threads()
    try:
        for threads in (1, 2, 3):
            core.set_num_threads(threads)
            assert_same(native.dropout_add_backward(g, m, bias=True)[2], want)
    finally:
        core.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nan_plus_nan_is_the_first_operand(native: Any, simd: str, dtype: Any) -> None:
    """NaN + NaN gives the first operand's NaN, quieted (docs/spec.md section 9):
    x's over the bias's, the residual's over the dropped-or-scaled x's, for signalling
    and quiet NaNs of both signs, on every SIMD level. NumPy itself returns either
    one (even within one array), so the reference pins it too."""
    del simd
    dt = np.dtype(dtype)
    u = np.dtype(f"u{dt.itemsize}")
    bits = dt.itemsize * 8
    mant = {16: 10, 32: 23, 64: 52}[bits] if dt != BF16 else 7
    exp_all = ((1 << (bits - 1 - mant)) - 1) << mant
    sign = 1 << (bits - 1)
    quiet = 1 << (mant - 1)
    nans = [exp_all | 1, exp_all | quiet | 2, sign | exp_all | 3, sign | exp_all | quiet | 4]
    n = 200
    rng = np.random.default_rng(1)
    pick = rng.integers(0, 4, size=(3, n))
    x = np.array([nans[k] for k in pick[0]], u).view(dt)
    r = np.array([nans[k] for k in pick[1]], u).view(dt)
    b = np.array([nans[k] for k in pick[2]], u).view(dt)
    with np.errstate(all="ignore"):
        for p, training in ((0.5, True), (0.0, True), (0.5, False)):
            y = native.dropout_add(x, r, p, bias=b, seed=2, training=training)
            assert_same(y, reference.dropout_add(x, r, p, bias=b, seed=2, training=training))
        # every result is the residual's NaN, quieted
        want = (r.view(u) | u.type(quiet)).view(dt)
        assert_same(native.dropout_add(x, r, 0.5, bias=b, seed=2), want)
        # without a residual NaN: a kept x's NaN wins over the bias's
        y, m = native.dropout_add(x, np.zeros(n, dt), 0.5, bias=b, seed=2, return_mask=True)
        kept = m.to_bool()
        assert_same(y[kept], (x.view(u)[kept] | u.type(quiet)).view(dt))
        assert_same(y[~kept], np.zeros(n, dt)[~kept])
