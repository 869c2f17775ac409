"""The one-call C++ fast paths of alpha_dropout, dropout_add, dropout_add_backward,
the alpha backward passes and the Mask objects they make (``_core.alpha``,
``_core.add``, ``_core.add_backward``, ``_core.alpha_regen``, ``_core._mask_maker``),
and the layers' fast forwards: the same bits as the reference for every dtype
(bfloat16 included), and, for calls they decline, the general path's result and
its very error (type and message)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference, served

pytestmark = pytest.mark.usefixtures("core_module")

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = (np.float16, np.float32, np.float64, BF16)
SHAPES = [(), (0,), (1,), (63,), (65,), (3, 5, 7), (2, 1024)]
OFFSETS = [0, 5, TWO_64 - 3]


def inp(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    """Inputs with NaN, infinities, signed zeros and subnormals (bfloat16: the
    float32 values rounded)."""
    if np.dtype(dtype) == BF16:
        with np.errstate(all="ignore"):
            return make_input(shape, np.float32, seed).astype(BF16)
    return make_input(shape, dtype, seed)


def normal(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- alpha_dropout ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_alpha_matches_reference(native: Any, dtype: Any, shape: Any) -> None:
    from fastdropout import _alpha

    x = inp(shape, dtype, seed=1)
    for p, offset in [(0.3, 0), (1e-6, 7), (0.9, TWO_64 - 3), (0.0, 1)]:
        yr, mr = reference.alpha_dropout(x, p, seed=11, offset=offset, return_mask=True)
        assert _alpha._alpha(x, p, 11, offset, None, False, None) is not None  # served
        assert_same(native.alpha_dropout(x, p, seed=11, offset=offset), yr)
        y, m = native.alpha_dropout(x, p, seed=11, offset=offset, return_mask=True)
        assert_same(y, yr)
        assert_same_mask(m, mr)
        out = np.full_like(x, 3)
        assert native.alpha_dropout(x, p, seed=11, offset=offset, out=out) is out
        assert_same(out, yr)
        xin = x.copy()
        assert native.alpha_dropout(xin, p, seed=11, offset=offset, out=xin) is xin
        assert_same(xin, yr)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_alpha_coefficients_for_many_p(native: Any, dtype: Any) -> None:
    """A, B and D are computed in C++: kept and dropped values for p across [0, 1),
    tiny ones (subnormal B) included, agree with the reference's."""
    x = inp((257,), dtype, seed=2)
    rng = np.random.default_rng(3)
    ps = [1e-40, 1e-30, 1e-9, 1e-6, 0.5, 0.99, 0.9999, 1 - 2**-20]
    ps += rng.random(40).tolist()
    for p in ps:
        try:
            yr = reference.alpha_dropout(x, p, seed=4)
        except ValueError:  # too close to 1 for this dtype: both raise the same
            with pytest.raises(ValueError, match="too close to 1") as e:
                native.alpha_dropout(x, p, seed=4)
            with pytest.raises(ValueError, match="too close to 1") as er:
                reference.alpha_dropout(x, p, seed=4)
            assert str(e.value) == str(er.value)
            continue
        assert_same(native.alpha_dropout(x, p, seed=4), yr, f"p={p!r}")


def test_alpha_backward_stored_and_regenerated(native: Any, dtype: Any) -> None:
    from fastdropout import _api

    x = inp((5, 77), dtype, seed=5)
    g = inp((5, 77), dtype, seed=6)
    _, m = native.alpha_dropout(x, 0.35, seed=8, offset=TWO_64 - 9, return_mask=True)
    _, mr = reference.alpha_dropout(x, 0.35, seed=8, offset=TWO_64 - 9, return_mask=True)
    gr = reference.dropout_backward(g, mr)
    assert _api._backward(g, m.bits, m.p, m.mode, None, m.shape, ()) is not None
    assert_same(native.dropout_backward(g, m), gr)
    out = np.empty_like(g)
    assert native.dropout_backward(g, m, out=out) is out
    assert_same(out, gr)
    kw: dict[str, Any] = {"p": 0.35, "seed": 8, "offset": TWO_64 - 9, "mode": "alpha"}
    assert _api._alpha_regen(g, 0.35, 8, TWO_64 - 9, None) is not None
    assert_same(native.dropout_backward(g, **kw), reference.dropout_backward(g, **kw))
    gin = g.copy()
    assert native.dropout_backward(gin, **kw, out=gin) is gin
    assert_same(gin, gr)


def test_alpha_declines(core_module: Any) -> None:
    x = np.ones(10, np.float32)
    assert core_module.alpha(x, 0.5, 1, 0, None, False, None) is not None
    for args in [
        (x, 1.0, 1, 0, None, False),  # p == 1: an error for alpha dropout
        (x, -0.1, 1, 0, None, False),
        (x, 0.5, -1, 0, None, False),
        (x, 0.5, 1, TWO_64, None, False),
        (x, 0.5, 1, 0, None, 1),  # return_mask not a bool
        (x.astype(np.float16), 1 - 2**-40, 1, 0, None, False),  # A overflows
        (x[::2], 0.5, 1, 0, None, False),
        (x, 0.5, 1, 0, x[::-1], False),  # the same memory through another view
        (x.tolist(), 0.5, 1, 0, None, False),
    ]:
        for window in (None, ((12,), (2,))):  # the same rules for a block
            assert core_module.alpha(*args, window) is None, args
    with pytest.raises(TypeError, match="7 arguments"):
        core_module.alpha(x, 0.5)


# ---- dropout_add ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("shape", "bshape"),
    [((), None), ((), ()), ((0,), (0,)), ((63,), (63,)), ((3, 5, 7), (7,)),
     ((3, 5, 7), (5, 7)), ((3, 5, 7), ()), ((2, 1024), (1024,)), ((4, 3), None)],
    ids=str,
)  # fmt: skip
def test_add_matches_reference(native: Any, dtype: Any, shape: Any, bshape: Any) -> None:
    from fastdropout import _fused

    x = inp(shape, dtype, seed=1)
    # finite residual and bias: which of two NaNs an addition keeps is the
    # hardware's (tested below against the general path, which adds the same way)
    res = normal(shape, dtype, seed=2)
    bias = None if bshape is None else normal(bshape, dtype, seed=3)
    for mode, offset in [("inverted", 0), ("classic", 9), ("inverted", TWO_64 - 3)]:
        kw: dict[str, Any] = {"bias": bias, "mode": mode, "seed": 5, "offset": offset}
        yr, mr = reference.dropout_add(x, res, 0.4, return_mask=True, **kw)
        fast = _fused._add(x, res, bias, 0.4, mode, 5, offset, None, False, None)
        assert fast is not None
        assert_same(native.dropout_add(x, res, 0.4, **kw), yr)
        y, m = native.dropout_add(x, res, 0.4, return_mask=True, **kw)
        assert_same(y, yr)
        assert_same_mask(m, mr)
        for target in ("res", "x", "new"):
            xi, ri = x.copy(), res.copy()
            out = {"res": ri, "x": xi, "new": np.full_like(x, 7)}[target]
            assert native.dropout_add(xi, ri, 0.4, out=out, **kw) is out
            assert_same(out, yr, target)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_add_special_values_as_the_general_path(native: Any, dtype: Any) -> None:
    from fastdropout import _fused

    x, res, bias = inp((9, 31), dtype, 1), inp((9, 31), dtype, 2), inp((31,), dtype, 3)
    for mode in ("inverted", "classic"):
        y = native.dropout_add(x, res, 0.3, bias=bias, mode=mode, seed=2)
        yg = _fused._dropout_add_general(
            x, res, 0.3, bias, True, mode, 2, 0, None, None, False, None
        )
        assert_same(y, yg)


def test_add_declines_and_writes_nothing(core_module: Any) -> None:
    windows = (None, ((5, 4), (1, 0)))  # a plain call, and one of a block
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    res = np.ones((3, 4), np.float32)
    bias = np.ones(4, np.float32)
    y = np.empty_like(x)
    assert core_module.add(x, res, bias, 0.5, "inverted", 1, 0, y, False, None) is y
    big = np.zeros(40, np.float32)
    for args in [
        (x, res.astype(np.float64), bias),
        (x, res[:2], bias),
        (x, np.ones((4, 3), np.float32).T, bias),  # not C-contiguous
        (x, res, bias.astype(np.float16)),
        (x, res, np.ones(3, np.float32)),  # not the trailing axes
        (x, res, np.ones((2, 3, 4), np.float32)),
        (x, res, [1.0, 2.0, 3.0, 4.0]),
    ]:
        for w in windows:  # the same rules for a block
            assert core_module.add(*args, 0.5, "inverted", 1, 0, None, False, w) is None
    for mode, ret in [("alpha", False), (b"inverted", False), ("inverted", 1)]:
        for w in windows:
            assert core_module.add(x, res, None, 0.5, mode, 1, 0, None, ret, w) is None
    # out overlapping the residual or the bias (without being the residual)
    out = big[:12].reshape(3, 4)
    before = big.copy()
    for w in windows:
        assert core_module.add(x, big[2:14].reshape(3, 4), None, 0.5, "inverted", 1, 0,
                               out, False, w) is None  # fmt: skip
        assert core_module.add(x, res, big[10:14], 0.5, "inverted", 1, 0, out, False,
                               w) is None  # fmt: skip
        np.testing.assert_array_equal(big, before)
        assert core_module.add(x, res, None, np.float32(0.5), "inverted", 1, 0, None,
                               False, w) is None  # not an exact float  # fmt: skip
    with pytest.raises(TypeError, match="10 arguments"):
        core_module.add(x, res)


def test_add_overlaps_take_the_general_path(native: Any) -> None:
    """Partial overlaps are declined by the fast path; the general path copies."""
    x = inp((8, 16), np.float32, seed=1)
    buf = inp((9, 16), np.float32, seed=2)
    res = buf[:8].copy()
    bias = buf[8].copy()
    yr = reference.dropout_add(x, res, 0.3, bias=bias, seed=3)
    out = buf[1:9]  # overlaps the residual below, partly
    residual_view = buf[:8]
    assert_same(native.dropout_add(x, residual_view, 0.3, bias=bias, seed=3, out=out), yr)
    buf2 = np.concatenate([inp((8, 16), np.float32, seed=2).reshape(-1), bias])
    out2 = buf2[:128].reshape(8, 16)
    b_view = buf2[120:136]  # the bias overlaps out's last row
    b_val = b_view.copy()
    yr2 = reference.dropout_add(x, res, 0.3, bias=b_val, seed=3)
    assert_same(native.dropout_add(x, res, 0.3, bias=b_view, seed=3, out=out2), yr2)


# ---- dropout_add_backward -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("shape", "bias"),
    [((), True), ((1, 1024), True), ((7, 33), True), ((7, 33), (33,)),
     ((3, 5, 7), (5, 7)), ((3, 5, 7), ()), ((0, 4), True), ((4, 0), (0,)),
     ((300, 3), True)],
    ids=str,
)  # fmt: skip
def test_add_backward_matches_reference(
    native: Any, dtype: Any, shape: Any, bias: Any
) -> None:
    from fastdropout import _fused

    x = inp(shape, dtype, seed=1)
    gs = inp(shape, dtype, seed=2)  # special values: as the general path (NaN signs)
    g = normal(shape, dtype, seed=2)  # finite: as the reference too
    for mode in ("inverted", "classic"):
        _, m = native.dropout(x, 0.3, mode=mode, seed=4, offset=TWO_64 - 2,
                              return_mask=True)  # fmt: skip
        fast = native.dropout_add_backward(gs, m, bias=bias)
        general = _fused._dropout_add_backward_general(
            gs, m, None, bias, _fused.DEFAULT_MODE, None, 0, None, None
        )
        assert_same(fast[0], general[0])
        assert_same(fast[2], general[2])
        _, mr = reference.dropout(x, 0.3, mode=mode, seed=4, offset=TWO_64 - 2,
                                  return_mask=True)  # fmt: skip
        ms = m._s
        assert _fused._add_backward(g, ms[0], ms[3], ms[4], None, ms[1], ms[7],
                                    bias) is not None  # fmt: skip
        gx, gres, gb = native.dropout_add_backward(g, m, bias=bias)
        gxr, _, gbr = reference.dropout_add_backward(g, mr, bias=bias)
        assert gres is g
        assert_same(gx, gxr, "grad_x")
        assert_same(gb, gbr, "grad_bias")
        out = np.empty_like(g)
        gx2, _, gb2 = native.dropout_add_backward(g, m, bias=bias, out=out)
        assert gx2 is out
        assert_same(out, gxr, "grad_x into out")
        assert_same(gb2, gbr, "grad_bias with out")


@pytest.mark.parametrize("dtype", [np.float16, BF16], ids=str)
def test_add_backward_sum_rounding(native: Any, dtype: Any) -> None:
    """float16/bfloat16 sums rounded in C++ (integer rounding): ties, subnormal and
    overflowing sums, NaN and infinities, against the reference's rounding."""
    rng = np.random.default_rng(7)
    rows, cols = 6, 4096
    with np.errstate(all="ignore"):
        g = (rng.standard_normal((rows, cols)) * rng.choice(
            [1e-7, 1e-3, 1.0, 300.0, 2e4, 1e30], size=(1, cols))).astype(np.float32)
        g = g.astype(dtype)
    g[0, :8] = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 65504, 65504, -65504],
                        np.float32).astype(dtype)  # fmt: skip
    m = reference.dropout(g, 0.0, seed=1, return_mask=True)[1]  # all kept
    for mode in ("classic", "inverted"):
        mm = reference.Mask(m.bits, m.shape, 0.0 if mode == "classic" else 0.25, mode,
                            1, 0)  # fmt: skip
        gx, _, gb = native.dropout_add_backward(g, mm, bias=True)
        gxr, _, gbr = reference.dropout_add_backward(g, mm, bias=True)
        assert_same(gx, gxr)
        assert_same(gb, gbr)


def test_add_backward_alpha_mask_and_declines(native: Any, core_module: Any) -> None:
    x = inp((6, 10), np.float32, seed=1)
    _, m = native.alpha_dropout(x, 0.2, seed=3, return_mask=True)
    gx, _, gb = native.dropout_add_backward(x, m, bias=True)
    gxr, _, gbr = reference.dropout_add_backward(x, m, bias=True)
    assert_same(gx, gxr)
    assert_same(gb, gbr)
    ms = m._s
    ok = (x, ms[0], ms[3], ms[4], None, ms[1], ms[7], True)
    assert core_module.add_backward(*ok) is not None
    for k, bad in [(7, False), (7, (9,)), (7, [10]), (7, np.True_), (7, (np.int64(10),)),
                   (6, (1,)), (0, x[:, ::2])]:  # fmt: skip
        args = list(ok)
        args[k] = bad
        assert core_module.add_backward(*args) is None, (k, bad)
    _, sm = native.spatial_dropout(inp((2, 3, 4), np.float32), 0.5, seed=1,
                                   return_mask=True)  # a broadcast mask  # fmt: skip
    smp = sm._s
    g3 = inp((2, 3, 4), np.float32, seed=2)
    assert core_module.add_backward(g3, smp[0], smp[3], smp[4], None, smp[1], smp[7],
                                    True) is None  # fmt: skip
    assert_same(native.dropout_add_backward(g3, sm, bias=True)[2],
                reference.dropout_add_backward(g3, sm, bias=True)[2])  # fmt: skip


# ---- the same errors from both paths --------------------------------------------------

X = np.ones((4, 6), np.float32)
R = np.ones((4, 6), np.float32)
# fmt: off
BAD_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("alpha p=1", lambda fd: fd.alpha_dropout(X, 1.0, seed=1)),
    ("alpha p=nan", lambda fd: fd.alpha_dropout(X, float("nan"), seed=1)),
    ("alpha p str", lambda fd: fd.alpha_dropout(X, "0.5", seed=1)),
    ("alpha f16 p", lambda fd: fd.alpha_dropout(X.astype(np.float16), 1 - 2**-40, seed=1)),
    ("alpha seed<0", lambda fd: fd.alpha_dropout(X, 0.5, seed=-1)),
    ("alpha offset", lambda fd: fd.alpha_dropout(X, 0.5, seed=1, offset=TWO_64)),
    ("alpha int x", lambda fd: fd.alpha_dropout(X.astype(np.int32), 0.5, seed=1)),
    ("alpha out dtype", lambda fd: fd.alpha_dropout(X, 0.5, seed=1, out=X.astype(float))),
    ("alpha out ro", lambda fd: fd.alpha_dropout(X, 0.5, seed=1, out=_readonly(X))),
    ("alpha return_mask", lambda fd: fd.alpha_dropout(X, 0.5, seed=1, return_mask="yes")),
    ("add mode", lambda fd: fd.dropout_add(X, R, 0.5, mode="alpha", seed=1)),
    ("add residual dtype", lambda fd: fd.dropout_add(X, R.astype(float), 0.5, seed=1)),
    ("add residual shape", lambda fd: fd.dropout_add(X, R[:2], 0.5, seed=1)),
    ("add bias shape", lambda fd: fd.dropout_add(X, R, 0.5, bias=R[0, :4], seed=1)),
    ("add bias dtype",
     lambda fd: fd.dropout_add(X, R, 0.5, bias=R[0].astype(float), seed=1)),
    ("add p", lambda fd: fd.dropout_add(X, R, 1.5, seed=1)),
    ("add f16 scale", lambda fd: fd.dropout_add(X.astype(np.float16),
                                                R.astype(np.float16), 0.99999, seed=1)),
    ("add return_mask", lambda fd: fd.dropout_add(X, R, 0.5, seed=1, return_mask=None)),
    ("add training", lambda fd: fd.dropout_add(X, R, 0.5, seed=1, training="yes")),
    ("add_backward bias", lambda fd: fd.dropout_add_backward(
        X, fd.dropout(X, 0.5, seed=1, return_mask=True)[1], bias=(5,))),
    ("add_backward bias type", lambda fd: fd.dropout_add_backward(
        X, fd.dropout(X, 0.5, seed=1, return_mask=True)[1], bias="yes")),
    ("add_backward shape", lambda fd: fd.dropout_add_backward(
        X[:2], fd.dropout(X, 0.5, seed=1, return_mask=True)[1], bias=True)),
    ("backward alpha p=1", lambda fd: fd.dropout_backward(X, p=1.0, seed=1, mode="alpha")),
    ("backward alpha seed", lambda fd: fd.dropout_backward(X, p=0.5, mode="alpha")),
    ("backward alpha mask shape", lambda fd: fd.dropout_backward(
        X[:2], fd.alpha_dropout(X, 0.5, seed=1, return_mask=True)[1])),
]
# fmt: on


def _declined(*_args: Any) -> None:
    return None  # a fast path that takes nothing: every call goes the general way


def _readonly(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.flags.writeable = False
    return b


@pytest.mark.parametrize("case", BAD_CALLS, ids=lambda c: c[0])
def test_fast_and_general_paths_raise_the_same(
    native: Any, monkeypatch: pytest.MonkeyPatch, case: Any
) -> None:
    """Each bad call raises the same error (type and message) with the fast paths
    in place and with every fast path turned off, and as the reference does."""
    from fastdropout import _alpha, _api, _fused

    _, call = case
    with pytest.raises((TypeError, ValueError)) as with_fast:
        call(native)
    for module, name in [(_alpha, "_alpha"), (_fused, "_add"),
                         (_fused, "_add_backward"), (_api, "_alpha_regen"),
                         (_api, "_backward"), (_fused, "_backward"),
                         (_api, "_dense")]:  # fmt: skip
        monkeypatch.setattr(module, name, _declined)
    with pytest.raises((TypeError, ValueError)) as general:
        call(native)
    assert type(with_fast.value) is type(general.value)
    assert str(with_fast.value) == str(general.value)
    with pytest.raises((TypeError, ValueError)) as ref:
        call(reference)
    assert type(ref.value) is type(general.value)
    assert str(ref.value) == str(general.value)


def test_plain_calls_are_served(native: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdropout import _alpha, _api, _fused

    alpha = served(monkeypatch, _alpha, "_alpha")
    add = served(monkeypatch, _fused, "_add")
    add_b = served(monkeypatch, _fused, "_add_backward")
    regen = served(monkeypatch, _api, "_alpha_regen")
    x = np.ones((3, 8), np.float32)
    native.alpha_dropout(x, 0.5, seed=1, out=np.empty_like(x))
    native.alpha_dropout(x, 0.5, return_mask=True)
    native.dropout_add(x, x, 0.5, bias=x[0], seed=1)
    native.dropout_add(x, x.copy(), 0.5, seed=1, return_mask=True, out=x)
    m = native.dropout(x, 0.5, seed=1, return_mask=True)[1]
    native.dropout_add_backward(x, m, bias=True)
    native.dropout_backward(x, p=0.5, seed=1, mode="alpha")
    assert alpha == [True, True]
    assert add == [True, True]
    assert add_b == [True]
    assert regen == [True]


# ---- Mask objects made in C++ ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 4, 5), (2, 0, 3),
                                   (2, 3, 0), (1, 1, 1, 1, 1)],
                         ids=str)  # fmt: skip
def test_masks_equal_the_general_paths(native: Any, fmt: str, shape: Any) -> None:
    x = inp(shape, np.float32, seed=1)
    for seed in (0, TWO_64 - 1):
        _, m = native.spatial_dropout(x, 0.4, data_format=fmt, seed=seed, offset=3,
                                      return_mask=True)  # fmt: skip
        _, mr = reference.spatial_dropout(x, 0.4, data_format=fmt, seed=seed, offset=3,
                                          return_mask=True)  # fmt: skip
        assert_same_mask(m, mr)
        assert m.window is None
        assert type(m.broadcast_axes) is tuple
        assert all(type(a) is int for a in (*m.shape, *m.broadcast_axes, m.size))
        assert repr(m) == repr(mr)
        assert hash(m) == hash(mr)
    _, md = native.dropout(x, 0.4, seed=2, return_mask=True)
    assert_same_mask(md, reference.dropout(x, 0.4, seed=2, return_mask=True)[1])
    with pytest.raises(AttributeError, match="read-only"):
        md.p = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        md.bits[...] = 0


def test_mask_maker_checks_its_argument(core_module: Any) -> None:
    with pytest.raises(TypeError, match="Mask class"):
        core_module._mask_maker(1)
    with pytest.raises(TypeError, match="1 arguments"):
        core_module._mask_maker()


@pytest.mark.parametrize("nthreads", [1, 2])
def test_large_calls_with_threads(native: Any, nthreads: int) -> None:
    """Above 2**14 elements the fast paths release the GIL and the kernels split
    the work over threads: the same bits."""
    native.set_num_threads(nthreads)
    try:
        shape = (129, 1031)  # 2**17 + a little: several chunks
        x = inp(shape, np.float32, seed=1)
        res = normal(shape, np.float32, seed=2)
        bias = normal(shape[1:], np.float32, seed=3)
        kw: dict[str, Any] = {"seed": 5, "offset": TWO_64 - 1000}
        assert_same(native.alpha_dropout(x, 0.3, **kw), reference.alpha_dropout(x, 0.3, **kw))
        y, m = native.dropout_add(x, res, 0.3, bias=bias, return_mask=True, **kw)
        yr, mr = reference.dropout_add(x, res, 0.3, bias=bias, return_mask=True, **kw)
        assert_same(y, yr)
        assert_same_mask(m, mr)
        g = normal(shape, np.float32, seed=4)
        for got, want in zip(native.dropout_add_backward(g, m, bias=True),
                             reference.dropout_add_backward(g, mr, bias=True)):  # fmt: skip
            assert_same(got, want)
        kw["mode"] = "alpha"
        assert_same(native.dropout_backward(g, p=0.3, **kw),
                    reference.dropout_backward(g, p=0.3, **kw))  # fmt: skip
    finally:
        native.set_num_threads(None)
