"""alpha_dropout / AlphaDropout (docs/spec.md section 10): native == reference bit
for bit (dtypes incl. bfloat16, shapes, strides, broadcast = feature alpha dropout,
offsets, SIMD levels, threads); the formula against NumPy and against PyTorch's
F.alpha_dropout / F.feature_alpha_dropout given the same mask; the backward pass;
errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference
from fastdropout import _scales

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


def check(native: Any, x: Any, p: float, **kw: Any) -> None:
    yr, mr = reference.alpha_dropout(x, p, return_mask=True, **kw)
    yn, mn = native.alpha_dropout(x, p, return_mask=True, **kw)
    assert_same(yn, yr)
    assert_same_mask(mn, mr)
    assert_same(native.alpha_dropout(x, p, **kw), yr)
    if not kw.get("training", True):
        assert mn is None
        assert_same(yn, np.array(x, order="C"))
        return
    assert mn.mode == "alpha"
    g = values(np.shape(x), np.asarray(x).dtype, 5)
    gr = reference.dropout_backward(g, mr)
    assert_same(native.dropout_backward(g, mn), gr)
    regen = {k: kw[k] for k in ("seed", "offset", "broadcast_axes") if k in kw}
    assert_same(native.dropout_backward(g, p=p, mode="alpha", **regen), gr)
    assert_same(reference.dropout_backward(g, p=p, mode="alpha", **regen), gr)


SHAPES = [(), (0,), (1,), (7,), (64,), (65,), (129,), (4097,), (3, 5, 7), (2, 0, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes_every_level(native: Any, simd: str, any_dtype: Any, shape: Any) -> None:
    del simd
    x = values(shape, any_dtype, 1)
    check(native, x, 0.3, seed=42, offset=3)
    check(native, x, 0.3, training=False)


@pytest.mark.parametrize("p", [0.0, 2.0**-40, 0.1, 0.5, 0.9, 1 - 2.0**-30])
def test_probabilities(native: Any, any_dtype: Any, p: float) -> None:
    x = values((1031,), any_dtype, 2)
    check(native, x, p, seed=7, offset=11)


def test_float16_limit(native: Any) -> None:
    """The largest p float16 takes: its coefficients are finite, the next p's are
    not (B = -A * alpha' * p overflows first)."""
    pmax = _scales._largest_alpha_p(np.dtype(np.float16))
    assert all(
        np.isfinite(float(v))
        for v in _scales.alpha_coefficients(pmax, np.dtype(np.float16))
    )
    x = np.ones(100, np.float16)
    check(native, x, pmax, seed=3)
    bad = float(np.nextafter(pmax, 1))
    for impl in (native, reference):
        with pytest.raises(ValueError, match=rf"p={bad!r}.*float16.*p <= {pmax!r}"):
            impl.alpha_dropout(x, bad, seed=1)


@pytest.mark.parametrize("offset", [0, 1, 5, (1 << 32) - 3, TWO_64 - 1, TWO_64 - 70])
def test_layouts_offsets_out(native: Any, offset: int) -> None:
    base = values((40, 30), np.float32, 3)
    for x in (base, base[::2, ::3], base.T):
        check(native, x, 0.4, seed=TWO_64 - 1, offset=offset)
    want = reference.alpha_dropout(base, 0.4, seed=1, offset=offset)
    for impl in (native, reference):
        inplace = base.copy()
        assert (
            impl.alpha_dropout(inplace, 0.4, seed=1, offset=offset, out=inplace)
            is inplace
        )
        assert_same(inplace, want)


@pytest.mark.parametrize("axes", [(2, 3), (0,), (1, 3), -1])
def test_feature_alpha_dropout(
    native: Any, simd: str, any_dtype: Any, axes: Any
) -> None:
    del simd
    x = values((3, 4, 5, 6), any_dtype, 4)
    check(native, x, 0.5, seed=9, offset=2, broadcast_axes=axes)


def test_threads(native: Any, nthreads: int, any_dtype: Any) -> None:
    del nthreads
    x = values((3 * 65536 + 77,), any_dtype, 5)
    check(native, x, 0.25, seed=77, offset=TWO_64 - 5)
    check(native, x[: 3 * 65536].reshape(64, 3072), 0.25, seed=7, broadcast_axes=1)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_formula_is_two_roundings(dtype: Any) -> None:
    """Kept: (x * A) + B in the dtype, two NumPy operations (no FMA); dropped: D;
    A, B, D rounded once from float64."""
    x = np.random.default_rng(0).standard_normal(5000).astype(dtype)
    x[:4] = [np.nan, np.inf, -np.inf, -0.0]
    p = 0.3
    y, m = reference.alpha_dropout(x, p, seed=5, return_mask=True)
    keep = m.to_bool()
    ap = -1.7580993408473766
    a = ((1 - p) * (1 + p * ap**2)) ** -0.5
    b = -a * ap * p
    d = a * ap + b
    dt = np.dtype(dtype)
    A, B, D = dt.type(a), dt.type(b), dt.type(d)
    with np.errstate(all="ignore"):
        want = np.where(keep, (x * A) + B, D)
    assert_same(y, want.astype(dtype))


def test_bfloat16_coefficients_rounded_once() -> None:
    if BF16 is None:
        pytest.skip("ml_dtypes missing")
    from fastdropout import _bfloat16

    for p in (0.05, 0.1, 0.3, 0.5, 0.77):
        got = _scales.alpha_coefficients(p, BF16)
        for v64, g in zip(_scales._alpha_values(p), got):
            assert np.asarray(g).view(np.uint16) == _bfloat16.from_float64(v64).view(
                np.uint16
            )
            # and it is the nearest bfloat16: no other is closer
            gv = float(_bfloat16.to_float32(np.asarray(g)))
            ulp = 2.0 ** (math.frexp(abs(v64))[1] - 8)
            assert abs(gv - v64) <= ulp / 2


def test_errors(native: Any) -> None:
    x = np.ones((4, 5), np.float32)
    out = np.full_like(x, 7)
    for impl in (native, reference):
        with pytest.raises(
            ValueError, match=r"p must be in \[0, 1\) for alpha dropout"
        ):
            impl.alpha_dropout(x, 1.0, seed=1, out=out)
        with pytest.raises(
            ValueError, match=r"p must be in \[0, 1\) for alpha dropout"
        ):
            impl.alpha_dropout(x, 1.0, training=False, out=out)
        with pytest.raises(ValueError, match="p must be a real number"):
            impl.alpha_dropout(x, -0.1, seed=1, out=out)
        with pytest.raises(TypeError, match="x has dtype int32"):
            impl.alpha_dropout(np.ones(3, np.int32), 0.5, seed=1)
        with pytest.raises(ValueError, match="out has shape"):
            impl.alpha_dropout(x, 0.5, seed=1, out=np.empty(3, np.float32))
        with pytest.raises(ValueError, match=r"p <= 0\.99999"):
            impl.alpha_dropout(np.ones(3, np.float16), 1 - 2.0**-40, seed=1)
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
            impl.dropout_backward(x, p=1.0, mode="alpha", seed=1, out=out)
        with pytest.raises(ValueError, match="mode must be one of"):
            impl.dropout(x, 0.5, mode="alpha", seed=1)
        with pytest.raises(ValueError, match="p must be in"):
            impl.AlphaDropout(1.0)
        assert np.all(out == 7)


def test_layer(native: Any, any_dtype: Any) -> None:
    x = values((4, 3, 5, 5), any_dtype, 6)
    for axes in (None, (2, 3)):
        a = native.AlphaDropout(0.2, seed=4, broadcast_axes=axes)
        e = reference.AlphaDropout(0.2, seed=4, broadcast_axes=axes)
        assert a.mode == "alpha"
        for training in (True, True, False):
            assert_same(a.forward(x, training), e.forward(x, training))
            assert_same(a.backward(x), e.backward(x))
        assert a.offset == e.offset
        if axes is not None:
            assert f"broadcast_axes={axes!r}" in repr(a)


# ---- PyTorch, given the same mask ---------------------------------------------------

TORCH_ALPHA = 1.7580993408473766


def torch_dropped_value(p: float, np_dtype: Any) -> Any:
    """What torch's alpha_dropout writes for a dropped element (float32/64): it
    computes x * 0 + (f(alpha * a) * -1 + f(alpha * a * p)), f the tensor dtype."""
    a = 1.0 / math.sqrt((TORCH_ALPHA * TORCH_ALPHA * p + 1) * (1 - p))
    f = np.dtype(np_dtype).type
    return f(f(-1.0) * f(TORCH_ALPHA * a)) + f(TORCH_ALPHA * a * p)


@pytest.mark.parametrize("np_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("feature", [False, True])
def test_matches_torch_given_the_same_mask(
    np_dtype: Any, p: float, feature: bool
) -> None:
    """Torch's own output defines its mask (dropped elements are its constant).
    Given that mask: the kept values are (x * A) + B with two roundings in both;
    in float32 the coefficients agree and the kept values are bit for bit
    torch's; in float64 torch's a = 1 / sqrt(...) may differ from the spec's
    (...) ** -0.5 in the last bit. The dropped value D differs from torch's by
    at most one unit in the last place of alpha * a (a few units of D's own):
    ours is d rounded once from float64, torch's is -round(alpha * a) +
    round(alpha * a * p) in the dtype, three roundings."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    tdt = {np.float32: torch.float32, np.float64: torch.float64}[np_dtype]
    gen = torch.Generator().manual_seed(1234)
    shape = (8, 16, 5, 5) if feature else (20000,)
    xt = torch.randn(shape, dtype=tdt, generator=gen)
    torch.manual_seed(99)
    if feature:
        yt = F.feature_alpha_dropout(xt, p, training=True)
    else:
        yt = F.alpha_dropout(xt, p, training=True)
    x = xt.numpy()
    y_torch = yt.numpy()
    d_torch = torch_dropped_value(p, np_dtype)
    keep = y_torch != d_torch
    if feature:  # one decision per (n, c) feature map
        assert np.all(keep == keep[:, :, :1, :1])
    assert 0.5 < keep.mean() / (1 - p) < 1.5
    A, B, D = _scales.alpha_coefficients(p, np.dtype(np_dtype))
    # torch's coefficients: a = 1 / sqrt(...) (the spec: (...) ** -0.5, which can
    # differ in the last bit of a float64), alpha * a * p
    f = np.dtype(np_dtype).type
    a_t = 1.0 / math.sqrt((TORCH_ALPHA * TORCH_ALPHA * p + 1) * (1 - p))
    A_t, B_t = f(a_t), f(TORCH_ALPHA * a_t * p)
    u = f"u{x.itemsize}"
    # the same formula, (x * A) + B with two roundings: torch's own kept values
    np.testing.assert_array_equal(
        ((x * A_t) + B_t)[keep].view(u), y_torch[keep].view(u)
    )
    ours = np.where(keep, (x * A) + B, D)  # section 10's coefficients, same mask
    if np_dtype is np.float32:  # the coefficients agree: bit for bit
        assert (A_t, B_t) == (A, B)
        np.testing.assert_array_equal(ours[keep].view(u), y_torch[keep].view(u))
    else:  # float64: A, B within one ulp of torch's, kept values within a few
        assert abs(A - A_t) <= np.spacing(A_t)
        assert abs(B - B_t) <= np.spacing(B_t)
        np.testing.assert_allclose(ours[keep], y_torch[keep], rtol=4e-16, atol=4e-16)
    # torch's D = -f(alpha * a) + f(alpha * a * p) carries the rounding errors of
    # its operands, up to one unit in the last place of alpha * a
    assert abs(float(D) - float(d_torch)) <= np.spacing(f(TORCH_ALPHA * a_t))
    assert f(_scales._alpha_values(p)[2]) == D  # ours: rounded once
    # and our native alpha_dropout applies exactly that formula to its own mask
    import fastdropout as fd

    axes = (2, 3) if feature else None
    y, m = fd.alpha_dropout(x, p, seed=3, broadcast_axes=axes, return_mask=True)
    k = np.broadcast_to(m.to_bool(), x.shape)
    assert_same(y, np.where(k, (x * A) + B, D).astype(np_dtype))
    # gradients: torch's autograd gives grad * A where kept and 0 where dropped
    xg = xt.clone().requires_grad_(True)
    torch.manual_seed(99)
    out = (F.feature_alpha_dropout if feature else F.alpha_dropout)(
        xg, p, training=True
    )
    g = torch.randn(shape, dtype=tdt, generator=gen)
    out.backward(g)
    g_np = g.numpy()
    grad_ours = np.where(keep, g_np * A_t, 0)  # = A for float32 (asserted above)
    np.testing.assert_array_equal(xg.grad.numpy(), grad_ours)  # -0.0 == +0.0 here
