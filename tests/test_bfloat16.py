"""bfloat16 (ml_dtypes) in every operation, and the 16-bit overflow rule
(docs/spec.md section 8): native == reference bit for bit, the reference's
rounding checked independently, and ml_dtypes never imported by fastdropout."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, reference

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

ALL_PATTERNS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(BF16)


def bf16_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random bfloat16 bit patterns (NaNs, infinities, subnormals included)
    mixed with normal values."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    normal = (rng.standard_normal(n) * 3).astype(np.float32)
    x = np.asarray(normal).astype(BF16)
    if n:
        k = max(1, n // 4)
        where = rng.choice(n, size=min(k, n), replace=False)
        x.view(np.uint16)[where] = rng.integers(
            0, 1 << 16, size=where.size, dtype=np.uint16
        )
    return x.reshape(shape)


def exact_bf16(v: Fraction) -> int:
    """The bfloat16 bit pattern nearest to the positive rational v (ties to even),
    for v in the normal range: an independent model of a single rounding."""
    e = 0
    while v >= 2:
        v /= 2
        e += 1
    while v < 1:
        v *= 2
        e -= 1
    q = v * 128  # in [128, 256)
    whole = int(q)
    frac = q - whole
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and whole % 2):
        whole += 1
    if whole == 256:
        whole, e = 128, e + 1
    return ((e + 127) << 7) | (whole - 128)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9, 1 - 2.0**-20])
def test_all_bit_patterns(native: Any, simd: str, p: float) -> None:
    """Every one of the 65,536 bfloat16 inputs, forward and both backward paths,
    every SIMD level: native == reference bit for bit."""
    del simd
    x = ALL_PATTERNS
    for mode in ("inverted", "classic"):
        yr, mr = reference.dropout(x, p, mode=mode, seed=3, offset=5, return_mask=True)
        yn, mn = native.dropout(x, p, mode=mode, seed=3, offset=5, return_mask=True)
        assert_same(yn, yr)
        assert_same_mask(mn, mr)
        assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))
        assert_same(
            native.dropout_backward(x, p=p, mode=mode, seed=3, offset=5),
            reference.dropout_backward(x, mr),
        )
        ev_n = native.dropout(x, p, mode=mode, training=False)
        assert_same(ev_n, reference.dropout(x, p, mode=mode, training=False))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_all_bit_patterns_fused(native: Any, simd: str, p: float) -> None:
    """dropout_add (with bias, whose sum rounds before the scale) and alpha dropout
    over every bfloat16 input, every SIMD level: each intermediate rounding and the
    NaN rule of the fused kernels, native == reference bit for bit."""
    del simd
    x = ALL_PATTERNS.reshape(256, 256)
    residual = ALL_PATTERNS[::-1].reshape(256, 256)
    bias = bf16_input((256,), seed=4)
    for mode in ("inverted", "classic"):
        kw: dict[str, Any] = {"bias": bias, "mode": mode, "seed": 3, "offset": 5}
        assert_same(native.dropout_add(x, residual, p, **kw),
                    reference.dropout_add(x, residual, p, **kw))
        g = residual
        assert_same(native.dropout_add_backward(g, p=p, bias=True, mode=mode, seed=3,
                                                offset=5)[2],
                    reference.dropout_add_backward(g, p=p, bias=True, mode=mode, seed=3,
                                                   offset=5)[2])
    ya, ma = native.alpha_dropout(x, p, seed=3, offset=5, return_mask=True)
    yr, mr = reference.alpha_dropout(x, p, seed=3, offset=5, return_mask=True)
    assert_same(ya, yr)
    assert_same(native.dropout_backward(g, ma), reference.dropout_backward(g, mr))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.3])
def test_reference_rounding_is_one_round_half_even(p: float) -> None:
    """The reference's bfloat16 product, checked against an independent model:
    the float32 product (exact) rounded to nearest even; NaN stays a quiet NaN
    with its sign; subnormals are kept; dropped elements are +0.0."""
    x = ALL_PATTERNS
    y, mask = reference.dropout(x, p, seed=9, return_mask=True)
    kept = mask.to_bool()
    s = np.float32(float(reference_scale(p)))
    with np.errstate(all="ignore"):
        prod = x.view(np.uint16).astype(np.uint32) << 16
        f = prod.view(np.float32) * s
    nan = np.isnan(f)
    # ml_dtypes' float32 -> bfloat16 cast rounds half to even (it only differs on
    # NaN payloads), an independent implementation of the same rounding
    expect = f.astype(BF16).view(np.uint16)
    got = y.view(np.uint16)
    np.testing.assert_array_equal(got[kept & ~nan], expect[kept & ~nan])
    yn = got[kept & nan]
    assert np.all((yn & 0x7F80) == 0x7F80)
    assert np.all(yn & 0x0040)
    xs = x.view(np.uint16)[kept & nan]
    np.testing.assert_array_equal(yn & 0x8000, xs & 0x8000)  # sign kept
    assert np.all(got[~kept] == 0)
    # a subnormal times a scale >= 1 that stays subnormal is not flushed
    sub = kept & ((x.view(np.uint16) & 0x7F80) == 0) & ((x.view(np.uint16) & 0x7F) > 2)
    assert np.any(sub)
    assert np.all(got[sub] & 0x7FFF)


def reference_scale(p: float) -> Any:
    """The reference's bfloat16 scale for p: the gradient of one kept 1.0."""
    return reference.dropout_backward(np.ones(1, BF16), _one_kept(p))[0]


def _one_kept(p: float) -> Any:
    return reference.Mask(np.array([1], np.uint8), (1,), p, "inverted", 0, 0)


@pytest.mark.parametrize("p", [0.1, 1 / 3, 0.55, 0.9, 0.999, 1 - 2.0**-20, 0.123456])
def test_scale_rounded_once_from_float64(native: Any, p: float) -> None:
    """s = bfloat16(1 / (1 - p)): float64 quotient, one rounding (ties to even),
    as an exact rational model gives it; native and reference agree."""
    s64 = 1.0 / (1.0 - p)
    want = exact_bf16(Fraction(s64))
    x = np.ones(1, BF16)
    got_r = reference.dropout_backward(x, _one_kept(p)).view(np.uint16)[0]
    got_n = native.dropout_backward(x, _one_kept(p)).view(np.uint16)[0]
    assert int(got_r) == want
    assert int(got_n) == want


def test_scale_not_rounded_through_float32() -> None:
    """A p where float64 -> float32 -> bfloat16 (two roundings) differs from one
    rounding: the scale must be the single rounding."""
    from fastdropout import _scales

    # 1 / (1 - p) just above the midpoint 1 + 2**-8 between bfloat16 1 and
    # 1 + 2**-7: float32 rounds it down onto the midpoint, which then ties to even
    # (1.0); the single rounding gives 1 + 2**-7.
    s = 1 + 2.0**-8 + 2.0**-30
    p = 1 - 1 / s
    s64 = 1 / (1 - p)
    assert np.float32(s64) == np.float32(1 + 2.0**-8)  # float32 lands on the tie
    want = exact_bf16(Fraction(s64))
    got = np.asarray(_scales.inverted_scale(p, BF16)).view(np.uint16)
    assert int(got) == want == 0x3F81


SHAPES = [
    (),
    (0,),
    (1,),
    (7,),
    (63,),
    (64,),
    (65,),
    (129,),
    (4097,),
    (3, 5, 7),
    (2, 0, 3),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes_every_level(native: Any, simd: str, shape: tuple[int, ...]) -> None:
    del simd
    x = bf16_input(shape, seed=len(shape))
    for mode in ("inverted", "classic"):
        yr, mr = reference.dropout(
            x, 0.3, mode=mode, seed=42, offset=3, return_mask=True
        )
        yn, mn = native.dropout(x, 0.3, mode=mode, seed=42, offset=3, return_mask=True)
        assert_same(yn, yr)
        assert_same_mask(mn, mr)
        g = bf16_input(shape, seed=9)
        assert_same(native.dropout_backward(g, mn), reference.dropout_backward(g, mr))


@pytest.mark.parametrize("offset", [0, 1, 3, (1 << 32) - 3, TWO_64 - 1, TWO_64 - 70])
def test_offsets_and_strides(native: Any, offset: int) -> None:
    base = bf16_input((40, 30), seed=4)
    for x in (base, base[::2, ::3], base.T, base[:, 1:]):
        assert_same(
            native.dropout(x, 0.4, seed=TWO_64 - 1, offset=offset),
            reference.dropout(x, 0.4, seed=TWO_64 - 1, offset=offset),
        )
    out = np.empty_like(base)
    native.dropout(base, 0.4, seed=1, offset=offset, out=out)
    assert_same(out, reference.dropout(base, 0.4, seed=1, offset=offset))
    inplace = base.copy()
    native.dropout(inplace, 0.4, seed=1, offset=offset, out=inplace)
    assert_same(inplace, out)


def test_spatial_and_broadcast(native: Any, simd: str) -> None:
    del simd
    x = bf16_input((3, 5, 6, 7), seed=2)
    for fmt in ("channels_first", "channels_last"):
        yr, mr = reference.spatial_dropout(
            x, 0.5, data_format=fmt, seed=8, return_mask=True
        )
        yn, mn = native.spatial_dropout(
            x, 0.5, data_format=fmt, seed=8, return_mask=True
        )
        assert_same(yn, yr)
        assert_same_mask(mn, mr)
        assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))
    for axes in [(0,), (1, 3), (2,), -1]:
        yr, mr = reference.dropout(
            x, 0.5, broadcast_axes=axes, seed=8, return_mask=True
        )
        yn, mn = native.dropout(x, 0.5, broadcast_axes=axes, seed=8, return_mask=True)
        assert_same(yn, yr)
        assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))
        assert_same(
            native.dropout_backward(x, p=0.5, seed=8, broadcast_axes=axes),
            reference.dropout_backward(x, mr),
        )


def test_threads(native: Any, nthreads: int) -> None:
    del nthreads
    x = bf16_input((3 * 65536 + 77,), seed=5)
    yr, mr = reference.dropout(x, 0.25, seed=77, offset=TWO_64 - 5, return_mask=True)
    yn, mn = native.dropout(x, 0.25, seed=77, offset=TWO_64 - 5, return_mask=True)
    assert_same(yn, yr)
    assert_same_mask(mn, mr)
    assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))


def test_layers(native: Any) -> None:
    x = bf16_input((4, 3, 5, 5), seed=6)
    for cls in ("Dropout", "SpatialDropout"):
        a = getattr(native, cls)(0.3, seed=4)
        b = getattr(reference, cls)(0.3, seed=4)
        for _ in range(2):
            assert_same(a.forward(x), b.forward(x))
            assert_same(a.backward(x), b.backward(x))
        assert a.offset == b.offset


def test_fast_path_takes_bfloat16(native: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain bfloat16 calls are served by the C++ fast paths (the general path is
    made to fail, so a fallback would show)."""
    from fastdropout import _api
    from fastdropout import _validate as v

    x = bf16_input((100,), seed=1)
    yr, mr = reference.dropout(x, 0.3, seed=5, return_mask=True)
    gr = reference.dropout_backward(x, mr)
    sr = reference.spatial_dropout(x.reshape(2, 5, 10), 0.3, seed=5)

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("general path taken")

    monkeypatch.setattr(v, "plan_forward", boom)
    monkeypatch.setattr(v, "plan_backward", boom)
    assert _api._dense(x, 0.3, "inverted", 5, 0, None, False) is not None
    y, m = native.dropout(x, 0.3, seed=5, return_mask=True)
    assert_same(y, yr)
    assert_same(native.dropout_backward(x, m), gr)
    assert_same(native.spatial_dropout(x.reshape(2, 5, 10), 0.3, seed=5), sr)


def test_ml_dtypes_not_imported() -> None:
    """import fastdropout (and its calls on float arrays) never import ml_dtypes."""
    code = (
        "import sys, numpy as np, fastdropout as fd\n"
        "fd.dropout(np.ones(3, np.float32), 0.5, seed=1)\n"
        "fd.dropout(np.ones(3, np.float32), 0.5, seed=1, broadcast_axes=0)\n"
        "fd.reference.dropout(np.ones(3, np.float16), 0.5, seed=1)\n"
        "try:\n    fd.dropout(np.ones(3, np.int8), 0.5)\nexcept TypeError:\n    pass\n"
        "assert 'ml_dtypes' not in sys.modules, 'ml_dtypes was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_other_ml_dtypes_refused(native: Any) -> None:
    """Other ml_dtypes types (same kind/char games) are not taken for bfloat16."""
    for name in ("float8_e4m3fn", "float8_e5m2"):
        dt = getattr(ml_dtypes, name)
        x = np.zeros(4, dt)
        for impl in (native, reference):
            with pytest.raises(TypeError, match="dtype"):
                impl.dropout(x, 0.5, seed=1)


# ---- the overflow rule (section 8) -------------------------------------------------


def largest_p(dtype: Any) -> float:
    from fastdropout import _scales

    return _scales._largest_inverted_p(np.dtype(dtype))


def test_float16_largest_p_is_exact() -> None:
    pmax = largest_p(np.float16)
    assert np.isfinite(np.float16(1 / (1 - pmax)))
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(1 / (1 - np.nextafter(pmax, 1))))


@pytest.mark.parametrize("impl_name", ["native", "reference"])
def test_float16_overflow_is_an_error(native: Any, impl_name: str) -> None:
    impl = native if impl_name == "native" else reference
    pmax = largest_p(np.float16)
    bad = float(np.nextafter(pmax, 1))
    x = np.ones((4, 5), np.float16)
    out = np.full_like(x, 7)
    msg = rf"p={bad!r}.*float16.*p <= {pmax!r}"
    with pytest.raises(ValueError, match=msg):
        impl.dropout(x, bad, seed=1, out=out)
    with pytest.raises(ValueError, match=msg):
        impl.spatial_dropout(x.reshape(1, 4, 5), bad, seed=1)
    with pytest.raises(ValueError, match=msg):
        impl.dropout(x, bad, seed=1, broadcast_axes=1)
    with pytest.raises(ValueError, match=msg):
        impl.dropout_backward(x, p=bad, seed=1, out=out)
    with pytest.raises(ValueError, match=msg):
        impl.dropout_add(x, x, bad, seed=1, out=out)
    with pytest.raises(ValueError, match=msg):
        impl.Dropout(bad, seed=1).forward(x)
    assert np.all(out == 7)  # nothing written
    # the largest p works; classic mode and evaluation never use the scale
    y = impl.dropout(x, pmax, seed=1)
    assert np.all(np.isfinite(y))
    impl.dropout(x, bad, seed=1, mode="classic")
    impl.dropout(x, bad, training=False)
    impl.dropout(x, 1.0, seed=1)  # p == 1 drops everything: allowed
    # bfloat16 and float32 never overflow for p < 1
    impl.dropout(np.ones(3, BF16), 1 - 2.0**-53, seed=1)


@pytest.mark.parametrize("impl_name", ["native", "reference"])
def test_handmade_mask_p1_with_kept_bits(native: Any, impl_name: str) -> None:
    impl = native if impl_name == "native" else reference
    g = np.ones(8, np.float32)
    bad = reference.Mask(np.array([0b101], np.uint8), (8,), 1.0, "inverted", 0, 0)
    with pytest.raises(ValueError, match=r"p=1\.0 but kept"):
        impl.dropout_backward(g, bad)
    ok = reference.Mask(np.array([0], np.uint8), (8,), 1.0, "inverted", 0, 0)
    assert_same(impl.dropout_backward(g, ok), np.zeros(8, np.float32))
    classic = reference.Mask(np.array([0b101], np.uint8), (8,), 1.0, "classic", 0, 0)
    assert_same(
        impl.dropout_backward(g, classic), reference.dropout_backward(g, classic)
    )
    alpha = reference.Mask(np.array([0b101], np.uint8), (8,), 1.0, "alpha", 0, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        impl.dropout_backward(g, alpha)


def test_fast_path_declines_overflow(core_module: Any) -> None:
    x = np.ones(10, np.float16)
    bad = float(np.nextafter(largest_p(np.float16), 1))
    assert core_module.dense(x, bad, "inverted", 1, 0, None, False) is None
    assert core_module.dense(x, bad, "classic", 1, 0, None, False) is not None
    assert (
        core_module.spatial(
            x.reshape(1, 2, 5), bad, "inverted", 1, 0, None, False, False
        )
        is None
    )
