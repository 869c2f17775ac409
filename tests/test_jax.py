"""fastdropout.jax against the NumPy functions, bit for bit.

Every comparison is of bit patterns. XLA's CPU backend flushes subnormal
float32/float64/bfloat16 numbers to zero (docs/spec.md section 12), so where the
input or NumPy's result is subnormal the JAX value may be +0.0/-0.0 instead;
``assert_jax_same`` allows exactly that and nothing else (float16 arithmetic goes
through float32 and keeps subnormals: no allowance there).

Compiling is slow on a small machine, so the tests loop over seeds, offsets and
p inside one test: none of them recompiles (they reach XLA as data).
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fdj = pytest.importorskip("fastdropout.jax")

from _util import HAVE_CORE, NO_CORE_REASON, TWO_64, fastdropout, philox_py

pytestmark = pytest.mark.skipif(not HAVE_CORE, reason=NO_CORE_REASON)

BF16 = np.dtype(jnp.bfloat16)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F16, BF16, F32]  # float64 needs jax_enable_x64 (test_float64_with_x64)
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
ALPHA = -1.7580993408473766

SEEDS_OFFSETS = [
    (0, 0),
    (12345, 7),
    (TWO_64 - 1, TWO_64 - 3),  # both near 2**64: the positions wrap
    (0x9E3779B97F4A7C15, TWO_64 - 1),
    (5, (1 << 32) - 2),  # low word carries into the high word
    (2**63, 2**62 + 1),
]
PS = [0.0, 0.5, 0.3, 1.0, 1e-12, 2.0**-33, 3 * 2.0**-33, 1 - 2.0**-53, 0.999]


# ---- helpers ----------------------------------------------------------------


def bits(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a).view(UINT[a.dtype.itemsize])


def subnormal(a: Any) -> np.ndarray:
    a = np.asarray(a)
    f = a.astype(np.float64) if a.dtype.itemsize < 8 else a
    tiny = float(jnp.finfo(a.dtype).smallest_normal)
    with np.errstate(invalid="ignore"):
        return np.asarray((f != 0) & (np.abs(f) < tiny))


def assert_jax_same(
    actual: Any, expected: np.ndarray, inputs: tuple[Any, ...] = ()
) -> None:
    """Bits equal, except +-0.0 where XLA flushed a subnormal input or result."""
    a = np.asarray(actual)
    assert a.dtype == expected.dtype, (a.dtype, expected.dtype)
    assert a.shape == expected.shape, (a.shape, expected.shape)
    diff = bits(a) != bits(expected)
    if not diff.any():
        return
    allowed = subnormal(expected)
    if a.dtype != F16:
        for x in inputs:
            allowed = allowed | np.broadcast_to(subnormal(x), a.shape)
    else:
        allowed = np.zeros_like(diff)
    bad = diff & ~(allowed & (a == 0))
    assert not bad.any(), (
        f"{int(bad.sum())} of {a.size} differ: jax {a[bad][:5]} numpy "
        f"{expected[bad][:5]} (bits {bits(a)[bad][:5]} vs {bits(expected)[bad][:5]})"
    )


def round_once(v: float, dtype: np.dtype[Any]) -> Any:
    """``dtype(v)`` rounded once from float64, half to even, chosen among the
    neighbours by exact rational distance (independent of any cast)."""
    if dtype != BF16:
        return dtype.type(v)
    if v == 0:
        return dtype.type(v)
    guess = np.array([v], np.float32).astype(BF16).view(np.uint16)[0]
    cands = [np.array([int(guess) + d], np.uint16).view(BF16)[0] for d in (-1, 0, 1)]
    return min(
        cands,
        key=lambda c: (
            abs(Fraction(float(c)) - Fraction(v)),
            int(c.view(np.uint16)) & 1,
        ),
    )


def np_mask(
    shape: tuple[int, ...], p: float, seed: int, offset: int, axes: Any = None
) -> np.ndarray:
    """NumPy's decisions (bool, mask shape) from the native function."""
    _, mask = fastdropout.dropout(
        np.zeros(shape, np.float32),
        p,
        seed=seed,
        offset=offset,
        broadcast_axes=axes,
        return_mask=True,
    )
    return np.asarray(mask.to_bool())


def formula_dropout(x: np.ndarray, keep: np.ndarray, p: float, mode: str) -> np.ndarray:
    """docs/spec.md section 3 written in NumPy (any dtype, bfloat16 included)."""
    zero = x.dtype.type(0.0)
    if mode == "classic":
        return np.where(keep, x, zero)
    s = round_once(1.0 / (1.0 - p), x.dtype) if p < 1 else x.dtype.type(1)
    with np.errstate(all="ignore"):
        return np.where(keep, x * s, zero)


def native_takes(dtype: np.dtype[Any], name: str = "dropout") -> bool:
    """Whether the NumPy API has ``name`` and takes ``dtype`` (bfloat16 and the
    second-wave functions arrive with the kernels work)."""
    fn = getattr(fastdropout, name, None)
    if fn is None:
        return False
    x = np.zeros(2, dtype)
    try:
        if name == "dropout_add":
            fn(x, x, 0.5, seed=0)
        else:
            fn(x, 0.5, seed=0)
    except TypeError:
        return False
    return True


def make_x(shape: tuple[int, ...], dtype: np.dtype[Any], seed: int = 0) -> np.ndarray:
    """Normals plus NaN, +-Inf, +-0, subnormals and huge values."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    x = rng.standard_normal(n) * 3
    info = jnp.finfo(dtype)
    specials = [
        np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        float(info.smallest_subnormal),
        -3 * float(info.smallest_subnormal),
        float(info.max),
        -float(info.max) / 1.5,
    ]
    k = min(n, len(specials))
    x[:k] = specials[:k]
    with np.errstate(over="ignore"):
        return x.astype(dtype).reshape(shape)


# p is static here (a Python float, as in real use); seed and offset are traced
# words, so one compiled function serves every seed and offset of a test.
_JIT_DROPOUT = jax.jit(
    fdj.dropout,
    static_argnames=("p", "training", "mode", "broadcast_axes", "return_mask"),
)


# ---- the stream ---------------------------------------------------------------


def test_philox_known_answers() -> None:
    kat = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        (
            (0xFFFFFFFF,) * 4,
            (0xFFFFFFFF,) * 2,
            (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
        ),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for counter, key, expected in kat:
        got = tuple(int(w) for w in fdj.philox(counter, key))
        assert got == expected


def test_philox_matches_python_on_random_words() -> None:
    rng = np.random.default_rng(3)
    words = rng.integers(0, 1 << 32, size=(6, 64), dtype=np.uint64).astype(np.uint32)
    out = np.stack([np.asarray(w) for w in fdj.philox(words[:4], words[4:])])
    for i in range(64):
        col = [int(w) for w in words[:, i]]
        assert tuple(int(v) for v in out[:, i]) == philox_py(
            tuple(col[:4]), tuple(col[4:])
        )


@pytest.mark.parametrize(
    "shape", [(), (0,), (0, 3), (1,), (13,), (3, 5, 7), (2, 3, 1, 4)]
)
def test_mask_equals_numpy(shape: tuple[int, ...]) -> None:
    x = np.ones(shape, np.float32)
    for seed, offset in SEEDS_OFFSETS:
        for p in PS:
            _, keep = fdj.dropout(x, p, seed=seed, offset=offset, return_mask=True)
            assert keep.dtype == bool
            np.testing.assert_array_equal(
                np.asarray(keep), np_mask(shape, p, seed, offset)
            )


def test_keep_rule_threshold_edges() -> None:
    """t = round_half_even(p * 2**32): 2**-33 gives t = 0 (keep all), 3 * 2**-33
    gives t = 2, p = 1 drops all and 1 - 2**-53 keeps only r >= 2**32 - 1."""
    x = np.ones(4096, np.float32)
    for p in (2.0**-33, 3 * 2.0**-33, 1 - 2.0**-53, 1.0):
        _, keep = fdj.dropout(x, p, seed=77, offset=3, return_mask=True)
        np.testing.assert_array_equal(np.asarray(keep), np_mask(x.shape, p, 77, 3))
    _, keep = fdj.dropout(x, 1.0, seed=77, return_mask=True)
    assert not np.asarray(keep).any()
    _, keep = fdj.dropout(x, 2.0**-33, seed=77, return_mask=True)
    assert np.asarray(keep).all()


# ---- values -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (37,), (3, 4, 5)])
def test_dropout_values_eager_and_jit(
    dtype: np.dtype[Any], shape: tuple[int, ...]
) -> None:
    x = make_x(shape, dtype)
    native = native_takes(dtype)
    for seed, offset in SEEDS_OFFSETS[:4]:
        for p in (0.0, 0.3, 1.0, 1e-12, 0.999):
            for mode in ("inverted", "classic"):
                keep = np_mask(shape, p, seed, offset)
                expected = formula_dropout(x, keep, p, mode)
                if native:
                    assert_jax_same(
                        fastdropout.dropout(x, p, mode=mode, seed=seed, offset=offset),
                        expected,
                    )
                y = fdj.dropout(x, p, mode=mode, seed=seed, offset=offset)
                assert_jax_same(y, expected, (x,))
                if p != 0.3:
                    continue  # one p under jit: each p compiles anew there
                yj = _JIT_DROPOUT(
                    jnp.asarray(x),
                    p,
                    mode=mode,
                    seed=fdj.split64(seed),
                    offset=fdj.split64(offset),
                )
                assert_jax_same(yj, expected, (x,))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout_matches_native_and_reference(dtype: np.dtype[Any]) -> None:
    if not native_takes(dtype):
        pytest.skip(f"fastdropout.dropout does not take {dtype} yet")
    x = make_x((5, 67), dtype, seed=4)
    for seed, offset in SEEDS_OFFSETS:
        for p in PS:
            if dtype.itemsize == 2 and 0 < 1 - p < 1e-4:
                continue  # the scale overflows the 16-bit dtype: a ValueError
            for impl in (fastdropout, fastdropout.reference):
                expected = impl.dropout(x, p, seed=seed, offset=offset)
                assert_jax_same(
                    fdj.dropout(x, p, seed=seed, offset=offset), expected, (x,)
                )


def test_evaluation() -> None:
    x = make_x((4, 9), F32)
    assert fdj.dropout(x, 0.3, training=False, seed=1) is not None
    assert_jax_same(fdj.dropout(jnp.asarray(x), 0.3, training=False, seed=1), x)
    expected = fastdropout.dropout(x, 0.3, training=False, mode="classic", seed=1)
    assert_jax_same(
        fdj.dropout(x, 0.3, training=False, mode="classic", seed=1), expected, (x,)
    )
    _, keep = fdj.dropout(x, 0.3, training=False, seed=1, return_mask=True)
    assert keep is None


def test_nan_and_inf_dropped_to_plus_zero_kept_nan_stays_nan() -> None:
    x = np.full(512, np.nan, np.float32)
    x[::2] = -np.inf
    y, keep = fdj.dropout(x, 0.5, seed=3, return_mask=True)
    y, keep = np.asarray(y), np.asarray(keep)
    assert (bits(y[~keep]) == 0).all()  # +0.0
    assert np.isnan(y[keep & np.isnan(x)]).all()
    assert_jax_same(y, fastdropout.dropout(x, 0.5, seed=3))


def test_subnormals_are_the_only_difference() -> None:
    """docs/spec.md section 12: XLA on CPU flushes float32 subnormals (inputs and
    results) to zero, with and without jit; NumPy keeps them."""
    tiny = np.finfo(np.float32).smallest_subnormal
    x = np.array([tiny, -tiny * 5, 1e-39, 1.1754942e-38, 3.0, -2.0] * 8, np.float32)
    expected = fastdropout.dropout(x, 0.0, seed=0)  # p = 0: s = 1, all kept
    y = np.asarray(fdj.dropout(x, 0.0, seed=0))
    assert_jax_same(y, expected, (x,))
    assert (bits(y[subnormal(x)]) & 0x7FFFFFFF == 0).all()  # flushed
    normal = ~subnormal(x)
    np.testing.assert_array_equal(bits(y[normal]), bits(expected[normal]))
    # A normal input whose scaled value is subnormal: flushed too.
    x2 = np.array([2.0e-38] * 16, np.float32)
    y2 = fdj.dropout(x2, 0.5, mode="inverted", seed=5)
    assert_jax_same(y2, fastdropout.dropout(x2, 0.5, seed=5), (x2,))
    # float16 goes through float32: its subnormals survive, bit for bit.
    h = np.array([2.0**-24, -(2.0**-20), 6.0e-5, 1.0] * 4, np.float16)
    np.testing.assert_array_equal(
        bits(fdj.dropout(h, 0.25, seed=2)), bits(fastdropout.dropout(h, 0.25, seed=2))
    )


def test_float64_with_x64() -> None:
    x = make_x((3, 11), F64)
    with jax.enable_x64(True):
        y = fdj.dropout(jnp.asarray(x, jnp.float64), 0.3, seed=8, offset=2**64 - 5)
        assert y.dtype == np.float64
        # a traced 64-bit offset is split into words inside the computation
        yj = jax.jit(lambda x, o: fdj.dropout(x, 0.3, seed=8, offset=o))(
            jnp.asarray(x), jnp.asarray(np.uint64(2**64 - 5))
        )
    expected = fastdropout.dropout(x, 0.3, seed=8, offset=2**64 - 5)
    assert_jax_same(y, expected, (x,))
    assert_jax_same(yj, expected, (x,))


# ---- broadcast and spatial ------------------------------------------------------


@pytest.mark.parametrize("axes", [0, -1, (0, 2), (1, 2, 3)])
def test_broadcast_axes(axes: Any) -> None:
    x = make_x((3, 4, 5, 2), F32, seed=2)
    for seed, offset in SEEDS_OFFSETS[:3]:
        expected, mask = fastdropout.dropout(
            x, 0.4, seed=seed, offset=offset, broadcast_axes=axes, return_mask=True
        )
        y, keep = fdj.dropout(
            x, 0.4, seed=seed, offset=offset, broadcast_axes=axes, return_mask=True
        )
        assert_jax_same(y, expected, (x,))
        assert keep.shape == mask.shape
        np.testing.assert_array_equal(np.asarray(keep), mask.to_bool())


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 2, 2)])
def test_spatial(data_format: str, shape: tuple[int, ...]) -> None:
    x = make_x(shape, F32, seed=5)
    expected, mask = fastdropout.spatial_dropout(
        x, 0.5, data_format=data_format, seed=11, offset=TWO_64 - 2, return_mask=True
    )
    y, keep = fdj.spatial_dropout(
        x, 0.5, data_format=data_format, seed=11, offset=TWO_64 - 2, return_mask=True
    )
    assert_jax_same(y, expected, (x,))
    np.testing.assert_array_equal(np.asarray(keep), mask.to_bool())


def test_spatial_same_channels_dropped_in_both_layouts() -> None:
    x = np.ones((4, 6, 3, 3), np.float32)
    _, k_first = fdj.spatial_dropout(x, 0.5, seed=21, return_mask=True)
    _, k_last = fdj.spatial_dropout(
        np.moveaxis(x, 1, -1),
        0.5,
        data_format="channels_last",
        seed=21,
        return_mask=True,
    )
    np.testing.assert_array_equal(
        np.asarray(k_first).reshape(4, 6), np.asarray(k_last).reshape(4, 6)
    )


# ---- alpha dropout and dropout + add ---------------------------------------------


def alpha_constants(p: float, dtype: np.dtype[Any]) -> tuple[Any, Any, Any]:
    a = ((1 - p) * (1 + p * ALPHA**2)) ** -0.5
    b = -a * ALPHA * p
    d = a * ALPHA + b
    return tuple(round_once(c, dtype) for c in (a, b, d))  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_alpha_dropout(dtype: np.dtype[Any]) -> None:
    """Kept (x * A) + B with two roundings: a fused multiply-add (which XLA's
    CPU backend forms from mul + add) would differ in ~20% of elements here."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 33)).astype(dtype)
    x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    native = native_takes(dtype, "alpha_dropout")

    def in_outer_jit(x: Any) -> Any:  # p, seed, offset are constants here
        return fdj.alpha_dropout(x, 0.2, seed=31, offset=2**64 - 7)

    for p, seed, offset in ((0.2, 31, 2**64 - 7), (0.0, 1, 0), (0.75, 2**64 - 1, 5)):
        keep = np_mask(x.shape, p, seed, offset)
        A, B, D = alpha_constants(p, dtype)
        with np.errstate(all="ignore"):
            expected = np.where(keep, (x * A) + B, D)
        if native:
            assert_jax_same(
                fastdropout.alpha_dropout(x, p, seed=seed, offset=offset), expected
            )
        assert_jax_same(
            fdj.alpha_dropout(x, p, seed=seed, offset=offset), expected, (x,)
        )
        if p == 0.2:
            assert_jax_same(jax.jit(in_outer_jit)(x), expected, (x,))
    assert_jax_same(fdj.alpha_dropout(x, 0.2, training=False, seed=1), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout_add_nan_plus_nan(dtype: np.dtype[Any]) -> None:
    """NaN + NaN is the first operand's NaN, quieted (docs/spec.md section 9), as in
    NumPy: signalling and quiet NaNs of both signs in x, residual and bias, under
    jit too; the gradients stay dropout's whatever the values."""
    n = 96
    nbits = dtype.itemsize * 8
    mant = 7 if dtype == BF16 else {16: 10, 32: 23}[nbits]
    exp_all = ((1 << (nbits - 1 - mant)) - 1) << mant
    quiet, sign = 1 << (mant - 1), 1 << (nbits - 1)
    nans = np.array([exp_all | 1, exp_all | quiet | 2, sign | exp_all | 3,
                     sign | exp_all | quiet | 4], UINT[dtype.itemsize])
    pick = np.random.default_rng(3).integers(0, 4, size=(3, n))
    x, res, bias = (nans[k].view(dtype) for k in pick)
    x[::5] = 1.5  # some sums of a NaN and a number

    def canonical(y: np.ndarray) -> np.ndarray:
        """XLA's CPU backend gives every bfloat16 NaN its canonical payload (the sign
        kept; README, JAX); float16 and float32 NaNs keep theirs."""
        if dtype != BF16:
            return y
        u = y.view(np.uint16).copy()
        u[np.isnan(y)] = (u[np.isnan(y)] & 0x8000) | 0x7FC0
        return u.view(dtype)

    for p, training in ((0.5, True), (0.0, True), (0.5, False)):
        expected = fastdropout.dropout_add(x, res, p, bias=bias, seed=2, training=training)
        got = fdj.dropout_add(x, res, p, bias=bias, seed=2, training=training)
        assert_jax_same(got, canonical(expected))
    jitted = jax.jit(lambda a, r, b: fdj.dropout_add(a, r, 0.5, bias=b, seed=2))
    assert_jax_same(jitted(x, res, bias),
                    canonical(fastdropout.dropout_add(x, res, 0.5, bias=bias, seed=2)))
    if dtype == F32:
        gx, gr = jax.grad(
            lambda a, r: fdj.dropout_add(a, r, 0.5, bias=bias, seed=2).sum(), (0, 1)
        )(x, res)
        keep = fastdropout.dropout(np.ones(n, dtype), 0.5, seed=2, return_mask=True)[1]
        assert_jax_same(gx, fastdropout.dropout_backward(np.ones(n, dtype), keep))
        assert_jax_same(gr, np.ones(n, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
def test_dropout_add(dtype: np.dtype[Any], with_bias: bool) -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((16, 24)).astype(dtype)
    res = rng.standard_normal((16, 24)).astype(dtype)
    bias = rng.standard_normal(24).astype(dtype) if with_bias else None
    native = native_takes(dtype, "dropout_add")
    for p, mode in (
        (0.3, "inverted"),
        (0.3, "classic"),
        (0.0, "inverted"),
        (1.0, "inverted"),
    ):
        keep = np_mask(x.shape, p, 4, 2**64 - 9)
        v = x if bias is None else x + bias
        expected = res + formula_dropout(v, keep, p, mode)
        kw: dict[str, Any] = {
            "bias": bias,
            "mode": mode,
            "seed": 4,
            "offset": 2**64 - 9,
        }
        if native:
            assert_jax_same(fastdropout.dropout_add(x, res, p, **kw), expected)
        assert_jax_same(fdj.dropout_add(x, res, p, **kw), expected, (x, res))
        # evaluation
        ev = v if mode == "inverted" else v * dtype.type(1 - p)
        assert_jax_same(
            fdj.dropout_add(x, res, p, training=False, **kw), res + ev, (x, res)
        )

    def outer(x: Any, res: Any) -> Any:
        return fdj.dropout_add(x, res, 0.3, bias=bias, seed=4, offset=2**64 - 9)

    keep = np_mask(x.shape, 0.3, 4, 2**64 - 9)
    v = x if bias is None else x + bias
    assert_jax_same(
        jax.jit(outer)(x, res),
        res + formula_dropout(v, keep, 0.3, "inverted"),
        (x, res),
    )


# ---- gradients ------------------------------------------------------------------


def _grad(fn: Any, x: Any, g: np.ndarray) -> np.ndarray:
    """Gradient of sum(fn(x) * g) with respect to x: the VJP of ``g``."""
    _, vjp = jax.vjp(fn, jnp.asarray(x))
    return np.asarray(vjp(jnp.asarray(g))[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gradients_equal_dropout_backward(dtype: np.dtype[Any]) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 10)).astype(dtype)
    g = rng.standard_normal((6, 10)).astype(dtype)
    native = native_takes(dtype)
    for p, mode, axes in (
        (0.3, "inverted", None),
        (0.6, "classic", None),
        (0.5, "inverted", 0),
    ):
        kw: dict[str, Any] = {
            "mode": mode,
            "seed": 2**64 - 2,
            "offset": 13,
            "broadcast_axes": axes,
        }
        got = _grad(functools.partial(fdj.dropout, p=p, **kw), x, g)
        keep = np.broadcast_to(np_mask(x.shape, p, 2**64 - 2, 13, axes), x.shape)
        assert_jax_same(got, formula_dropout(g, keep, p, mode), (g,))
        if native:
            assert_jax_same(got, fastdropout.dropout_backward(g, p=p, **kw), (g,))
        if mode == "inverted" and axes is None:

            def loss_fn(x: Any, p: float = p, kw: dict[str, Any] = kw) -> Any:
                return (fdj.dropout(x, p, **kw) * g).sum()

            loss = jax.grad(loss_fn)
            got_jit = np.asarray(jax.jit(loss)(x))
            assert_jax_same(got_jit, formula_dropout(g, keep, p, mode), (g,))


def test_forward_mode_and_traced_p_in_alpha_and_add() -> None:
    rng = np.random.default_rng(13)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    t = rng.standard_normal((8, 16)).astype(np.float32)
    _, tangent = jax.jvp(lambda x: fdj.dropout(x, 0.3, seed=5), (x,), (t,))
    assert_jax_same(tangent, fastdropout.dropout_backward(t, p=0.3, seed=5), (t,))
    # a traced p: NumPy's mask for p rounded to float32, values within an ulp
    for fn, ref in (
        (fdj.alpha_dropout, fastdropout.alpha_dropout),
        (lambda x, p, **kw: fdj.dropout_add(x, x, p, **kw), None),
    ):
        y, keep = jax.jit(lambda x, p, fn=fn: fn(x, p, seed=5, return_mask=True))(
            x, 0.25
        )
        np.testing.assert_array_equal(np.asarray(keep), np_mask(x.shape, 0.25, 5, 0))
        expected = (
            ref(x, 0.25, seed=5)
            if ref is not None
            else fastdropout.dropout_add(x, x, 0.25, seed=5)
        )
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)


def test_gradients_spatial_alpha_and_add() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    got = _grad(lambda x: fdj.spatial_dropout(x, 0.5, seed=6, offset=1), x, g)
    _, mask = fastdropout.spatial_dropout(x, 0.5, seed=6, offset=1, return_mask=True)
    assert_jax_same(got, fastdropout.dropout_backward(g, mask), (g,))

    keep = np_mask(x.shape, 0.2, 6, 1)
    A = np.float32(alpha_constants(0.2, F32)[0])
    got = _grad(lambda x: fdj.alpha_dropout(x, 0.2, seed=6, offset=1), x, g)
    assert_jax_same(got, np.where(keep, g * A, np.float32(0)), (g,))

    res = rng.standard_normal(x.shape).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)

    def f(x: Any, res: Any, bias: Any) -> Any:
        return fdj.dropout_add(x, res, 0.3, bias=bias, seed=6, offset=1)

    _, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(res), jnp.asarray(bias))
    gx, gres, gbias = (np.asarray(a) for a in vjp(jnp.asarray(g)))
    expected_gx = fastdropout.dropout_backward(g, p=0.3, seed=6, offset=1)
    assert_jax_same(gx, expected_gx, (g,))
    assert_jax_same(gres, g)
    np.testing.assert_allclose(
        gbias, expected_gx.reshape(-1, 4).sum(0, dtype=np.float64), rtol=1e-5
    )


# ---- transformations and recompilation -------------------------------------------


def test_vmap() -> None:
    x = make_x((5, 3, 7), F32, seed=6)
    # vmap over x only: every example gets the mask of one (3, 7) call
    y = jax.vmap(lambda xi: fdj.dropout(xi, 0.5, seed=9, offset=2))(x)
    for i in range(5):
        assert_jax_same(y[i], fastdropout.dropout(x[i], 0.5, seed=9, offset=2), (x[i],))
    # vmap over offsets i * 21 reproduces the whole (5, 3, 7) array's stream
    offsets = np.arange(5, dtype=np.uint32) * 21
    y = jax.vmap(lambda xi, o: fdj.dropout(xi, 0.5, seed=9, offset=o))(x, offsets)
    assert_jax_same(y, fastdropout.dropout(x, 0.5, seed=9), (x,))
    # and over seeds given as (low, high) words
    seeds = np.stack([fdj.split64(s) for s in (1, 2**64 - 1, 2**40 + 3)])
    y = jax.vmap(lambda s: fdj.dropout(x[0], 0.5, seed=s))(seeds)
    for i, s in enumerate((1, 2**64 - 1, 2**40 + 3)):
        assert_jax_same(y[i], fastdropout.dropout(x[0], 0.5, seed=s), (x[0],))


def test_no_recompilation_when_seed_offset_or_p_change() -> None:
    x = jnp.asarray(make_x((8, 9), F32, seed=7))
    traces = []

    @jax.jit
    def step(x: Any, seed: Any, offset: Any) -> Any:
        traces.append(1)
        return fdj.dropout(x, 0.5, seed=seed, offset=offset)

    for s, o in SEEDS_OFFSETS:
        y = step(x, fdj.split64(s), fdj.split64(o))
        assert_jax_same(
            y, fastdropout.dropout(np.asarray(x), 0.5, seed=s, offset=o), (x,)
        )
    assert len(traces) == 1
    # Eager calls: one compiled computation serves every seed, offset and p.
    if not hasattr(fdj._train, "_cache_size"):  # a private jax API
        return
    fdj.dropout(x, 0.5, seed=0)
    before = fdj._train._cache_size()
    for s, o in SEEDS_OFFSETS:
        for p in (0.1, 0.5, 1.0):
            fdj.dropout(x, p, seed=s, offset=o)
    assert fdj._train._cache_size() == before


def test_traced_seed_and_offset_forms() -> None:
    x = make_x((4, 6), F32, seed=8)
    f = jax.jit(lambda x, s, o: fdj.dropout(x, 0.5, seed=s, offset=o))
    expected = fastdropout.dropout(x, 0.5, seed=2**64 - 5, offset=2**32 + 1)
    # an int32 seed of -5 is 2**64 - 5 (modulo 2**64)
    y = f(x, np.int32(-5), fdj.split64(2**32 + 1))
    assert_jax_same(y, expected, (x,))
    expected = fastdropout.dropout(x, 0.5, seed=7, offset=100)
    assert_jax_same(f(x, np.uint32(7), np.int32(100)), expected, (x,))
    # concrete JAX/NumPy integer scalars are checked like ints
    assert_jax_same(
        fdj.dropout(x, 0.5, seed=jnp.uint32(7), offset=np.uint64(100)), expected, (x,)
    )


def test_traced_p() -> None:
    """A traced p gives NumPy's mask for p rounded to float32; p = 0.5 and 0.25
    are exact, so the values match too."""
    x = make_x((10, 10), F32, seed=9)
    f = jax.jit(lambda x, p: fdj.dropout(x, p, seed=3, offset=4, return_mask=True))
    for p in (0.5, 0.25, 0.0, 1.0):
        y, keep = f(x, p)
        expected, mask = fastdropout.dropout(x, p, seed=3, offset=4, return_mask=True)
        assert_jax_same(y, expected, (x,))
        np.testing.assert_array_equal(np.asarray(keep), mask.to_bool())
    _, keep = f(x, 0.3)
    np.testing.assert_array_equal(
        np.asarray(keep), np_mask(x.shape, float(np.float32(0.3)), 3, 4)
    )


def test_numpy_functions_given_jax_arrays_agree() -> None:
    """fastdropout.dropout given a JAX array (read through DLPack) returns a JAX
    array with the bits of fastdropout.jax.dropout."""
    x = jnp.asarray(make_x((6, 7), F32, seed=14))
    for seed, offset in SEEDS_OFFSETS[:3]:
        y = fastdropout.dropout(x, 0.3, seed=seed, offset=offset)
        assert isinstance(y, jax.Array)
        expected = fastdropout.dropout(np.asarray(x), 0.3, seed=seed, offset=offset)
        assert_jax_same(np.asarray(y), expected)
        assert_jax_same(fdj.dropout(x, 0.3, seed=seed, offset=offset), expected, (x,))


# ---- errors -----------------------------------------------------------------------


def test_errors() -> None:
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="seed is required"):
        fdj.dropout(x, 0.5)
    with pytest.raises(ValueError, match="seed"):
        fdj.dropout(x, 0.5, seed=-1)
    with pytest.raises(ValueError, match="offset"):
        fdj.dropout(x, 0.5, seed=1, offset=TWO_64)
    with pytest.raises(TypeError, match="seed"):
        fdj.dropout(x, 0.5, seed=1.5)
    with pytest.raises(TypeError, match="seed"):
        fdj.dropout(x, 0.5, seed=np.zeros(3, np.uint32))
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p must be"):
            fdj.dropout(x, p, seed=1)
    with pytest.raises(TypeError, match="p must be"):
        fdj.dropout(x, "0.5", seed=1)
    with pytest.raises(TypeError, match="int32"):
        fdj.dropout(np.ones(3, np.int32), 0.5, seed=1)
    with pytest.raises(ValueError, match="mode"):
        fdj.dropout(x, 0.5, seed=1, mode="bad")
    with pytest.raises(ValueError, match="out of range"):
        fdj.dropout(x, 0.5, seed=1, broadcast_axes=3)
    with pytest.raises(ValueError, match="rank"):
        fdj.spatial_dropout(np.ones((2, 3), np.float32), 0.5, seed=1)
    with pytest.raises(ValueError, match="data_format"):
        fdj.spatial_dropout(x, 0.5, seed=1, data_format="nchw")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fdj.alpha_dropout(x, 1.0, seed=1)
    with pytest.raises(ValueError, match="alpha dropout in float16"):
        fdj.alpha_dropout(np.ones(3, np.float16), 1 - 1e-12, seed=1)
    with pytest.raises(ValueError, match="too close to 1") as info:
        fdj.dropout(np.ones(3, np.float16), 1 - 1e-6, seed=1)
    largest = float(re.search(r"p <= ([0-9.e-]+)", str(info.value)).group(1))  # type: ignore[union-attr]
    fdj.dropout(np.ones(3, np.float16), largest, seed=1)  # the largest p is taken
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(1 / (1 - np.nextafter(largest, 1))))
    with pytest.raises(ValueError, match="too close to 1"):
        fdj.dropout_add(x.astype(F16), x.astype(F16), 1 - 1e-6, seed=1)
    with pytest.raises(TypeError, match="does not promote"):
        fdj.dropout_add(x, x.astype(np.float16), 0.5, seed=1)
    with pytest.raises(ValueError, match="shape"):
        fdj.dropout_add(x, x[0], 0.5, seed=1)
    with pytest.raises(ValueError, match="trailing"):
        fdj.dropout_add(x, x, 0.5, seed=1, bias=np.ones(3, np.float32))


def test_split64() -> None:
    np.testing.assert_array_equal(fdj.split64(2**64 - 2), [0xFFFFFFFE, 0xFFFFFFFF])
    with pytest.raises(ValueError, match="value must be"):
        fdj.split64(-1)
