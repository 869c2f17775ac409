"""The reference against the contract's words, independently of the native core.

The native core is held to the reference bit for bit (test_dropout.py), so the
reference itself is checked here against a second, scalar reading of
docs/spec.md sections 2-4 written with Python ints.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, bits_of, make_input, philox_py, reference
from fastdropout import _validate
from fastdropout.mask import Mask


def keep_py(seed: int, offset: int, i: int, p: float) -> bool:
    """docs/spec.md section 2, literally, with Python ints."""
    j = (offset + i) % TWO_64
    b, w = j // 4, j % 4
    r = philox_py((b & 0xFFFFFFFF, b >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))[w]
    t = round(p * 2**32)
    return r >= t


SEEDS = [0, 1, 0xFFFFFFFF, 1 << 32, 0x0123456789ABCDEF, TWO_64 - 1]
OFFSETS = [0, 1, 2, 3, 5, (1 << 34) - 3, (1 << 32) - 3, TWO_64 - 1, TWO_64 - 70]


# -- docs/spec.md section 2: the stream --------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS, ids=hex)
@pytest.mark.parametrize("offset", OFFSETS, ids=hex)
def test_mask_bits_follow_spec_literally(seed: int, offset: int) -> None:
    n, p = 75, 0.37
    expected = np.array([keep_py(seed, offset, i, p) for i in range(n)])
    bits = reference.mask_bits(seed, offset, n, p)
    assert bits.dtype == np.uint8
    assert bits.shape == ((n + 7) // 8,)
    got = np.unpackbits(bits, count=n, bitorder="little").astype(bool)
    np.testing.assert_array_equal(got, expected)
    assert bits[-1] >> (n % 8) == 0  # unused high bits are zero
    np.testing.assert_array_equal(
        reference.keep(seed, offset, np.arange(n), p), expected
    )


def test_keep_wraps_modulo_2_64() -> None:
    seed = 99
    idx = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.uint64)
    before = reference.keep(seed, TWO_64 - 3, idx, 0.5)
    after = reference.keep(seed, 0, np.arange(4), 0.5)
    np.testing.assert_array_equal(before[3:], after)
    tail = reference.keep(seed, TWO_64 - 3, np.arange(3), 0.5)
    np.testing.assert_array_equal(before[:3], tail)
    # 0-d index
    assert reference.keep(seed, TWO_64 - 1, 1, 0.5) == reference.keep(seed, 0, 0, 0.5)


def test_keep_rejects_float_index() -> None:
    with pytest.raises(TypeError, match="index"):
        reference.keep(1, 0, np.array([0.5]), 0.5)


@pytest.mark.parametrize(
    ("p", "t"),
    [
        (0.0, 0),
        (1.0, 1 << 32),
        (0.5, 1 << 31),
        (2.0**-40, 0),
        (2.0**-33, 0),  # 0.5 rounds to even: 0
        (3 * 2.0**-33, 2),  # 1.5 -> 2
        (5 * 2.0**-33, 2),  # 2.5 -> 2
        (1 - 2.0**-32, (1 << 32) - 1),
        (1 - 2.0**-33, 1 << 32),  # 2**32 - 0.5 rounds to even: drops all
        (1 - 2.0**-30, (1 << 32) - 4),
        (0.1, round(0.1 * 2**32)),
    ],
)
def test_threshold_is_exact_half_even(p: float, t: int) -> None:
    assert _validate.threshold(p) == t
    assert type(_validate.threshold(p)) is int


@pytest.mark.parametrize("p", [0.0, 2.0**-40, 2.0**-33])
def test_tiny_p_keeps_everything(p: float) -> None:
    bits = reference.mask_bits(7, 0, 1000, p)
    assert np.unpackbits(bits, count=1000, bitorder="little").all()


@pytest.mark.parametrize("p", [1.0, 1 - 2.0**-33])
def test_p_near_one_drops_everything(p: float) -> None:
    x = np.ones(1000, np.float32)
    y, mask = reference.dropout(x, p, seed=7, return_mask=True)
    assert not mask.to_bool().any()
    assert not np.unpackbits(mask.bits).any()
    assert_same(y, np.zeros_like(x))


@pytest.mark.parametrize("chunk", [8, 16, 24, 4096])
def test_chunking_does_not_change_results(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    x = make_input((5, 61), np.float32, 3)
    expected = [
        reference.dropout(x, 0.3, seed=11, offset=TWO_64 - 5, return_mask=True),
        reference.dropout(x, 0.3, seed=11, broadcast_axes=(0,), return_mask=True),
    ]
    monkeypatch.setattr(reference, "CHUNK", chunk)
    got = [
        reference.dropout(x, 0.3, seed=11, offset=TWO_64 - 5, return_mask=True),
        reference.dropout(x, 0.3, seed=11, broadcast_axes=(0,), return_mask=True),
    ]
    for (ye, me), (yg, mg) in zip(expected, got):
        assert_same(yg, ye)
        assert mg == me


# -- docs/spec.md section 3: values ------------------------------------------------------------


def test_scale_rounded_once_to_dtype() -> None:
    for p in (0.1, 0.3, 0.7, 0.999):
        for dt in (np.float16, np.float32, np.float64):
            s = _validate.inverted_scale(p, np.dtype(dt))
            assert type(s) is dt
            assert s == dt(1.0 / (1.0 - p))
    assert _validate.inverted_scale(1.0, np.dtype(np.float32)) == np.inf
    # float16 overflow of the scale gives inf, silently (warnings are errors here)
    assert _validate.inverted_scale(1 - 2.0**-20, np.dtype(np.float16)) == np.inf


@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_values_select_not_multiply(dtype: Any, mode: str) -> None:
    x = make_input((3000,), dtype, 5)
    p = 0.4
    y, mask = reference.dropout(x, p, seed=5, mode=mode, return_mask=True)
    kept = mask.to_bool()
    s = dtype(1 / (1 - p))
    with np.errstate(all="ignore"):
        expected_kept = x * s if mode == "inverted" else x
    assert_same(y[kept], expected_kept[kept])
    # dropped: +0.0 whatever x was (NaN, Inf and -0.0 included)
    assert not bits_of(y[~kept]).any()
    assert np.isnan(x[~kept]).any()
    assert np.isinf(x[~kept]).any()


def test_float16_products_overflow_to_inf() -> None:
    x = np.array([60000.0, -60000.0, 1.0], np.float16)
    y = reference.dropout(x, 0.5, seed=0, offset=0)
    kept = reference.keep(0, 0, np.arange(3), 0.5)
    for i in range(3):
        if kept[i]:
            with np.errstate(over="ignore"):
                assert_same(y[i : i + 1], x[i : i + 1] * np.float16(2))


def test_p_zero_scales_by_one(dtype: Any) -> None:
    x = make_input((100,), dtype, 1)
    y, mask = reference.dropout(x, 0.0, seed=3, return_mask=True)
    assert mask.to_bool().all()
    assert_same(y, x * dtype(1))


@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_evaluation(dtype: Any, p: float) -> None:
    x = make_input((7, 5), dtype, 2)
    y = reference.dropout(x, p, training=False)
    assert_same(y, x)
    assert y is not x
    assert not np.shares_memory(y, x)
    y, m = reference.dropout(x, p, training=False, mode="classic", return_mask=True)
    assert m is None
    with np.errstate(all="ignore"):
        assert_same(y, x * dtype(1 - p))


def test_evaluation_consumes_no_seed() -> None:
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    reference.dropout(np.ones(3), 0.5, training=False, seed=rng)
    assert rng.bit_generator.state == state


# -- docs/spec.md section 6: seeds, layouts, out ---------------------------------------------------


def test_generator_seed_is_one_64_bit_draw() -> None:
    g1 = np.random.default_rng(2024)
    _, mask = reference.dropout(np.ones(10), 0.5, seed=g1, return_mask=True)
    g2 = np.random.default_rng(2024)
    raw = int(g2.bit_generator.random_raw())
    assert mask.seed == raw
    assert g1.bit_generator.state == g2.bit_generator.state
    g3 = np.random.default_rng(2024)
    assert mask.seed == int(g3.integers(TWO_64, dtype=np.uint64))


def test_none_seed_is_fresh() -> None:
    seeds = {
        reference.dropout(np.ones(4), 0.5, return_mask=True)[1].seed for _ in range(4)
    }
    assert len(seeds) == 4
    assert all(0 <= s < TWO_64 for s in seeds)


def test_numpy_int_seed_and_offset() -> None:
    x = np.ones(50, np.float32)
    a = reference.dropout(x, 0.5, seed=np.uint64(TWO_64 - 1), offset=np.int8(3))
    b = reference.dropout(x, 0.5, seed=TWO_64 - 1, offset=3)
    assert_same(a, b)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[::2],
        lambda a: a[::-1],
        lambda a: a[1::3, ::-2],
        lambda a: np.asfortranarray(a),
        lambda a: a.T,
        lambda a: np.broadcast_to(a[:1], a.shape),
    ],
    ids=["step2", "reversed", "step3-neg2", "fortran", "transpose", "zero-stride"],
)
def test_any_layout_equals_contiguous(view: Any) -> None:
    base = make_input((12, 10), np.float32, 4)
    x = view(base)
    y, m = reference.dropout(x, 0.5, seed=8, return_mask=True)
    yc, mc = reference.dropout(np.ascontiguousarray(x), 0.5, seed=8, return_mask=True)
    assert y.flags.c_contiguous
    assert_same(y, yc)
    assert m == mc


def test_out_in_place_and_overlap() -> None:
    x = make_input((40,), np.float64, 6)
    expected = reference.dropout(x, 0.5, seed=1, offset=2)
    out = np.full_like(x, 7.0)
    assert reference.dropout(x, 0.5, seed=1, offset=2, out=out) is out
    assert_same(out, expected)
    inplace = x.copy()
    assert reference.dropout(inplace, 0.5, seed=1, offset=2, out=inplace) is inplace
    assert_same(inplace, expected)
    for shift in (1, -1, 5):
        buf = np.zeros(60)
        buf[10:50] = x
        out = buf[10 + shift : 50 + shift]
        reference.dropout(buf[10:50], 0.5, seed=1, offset=2, out=out)
        assert_same(out, expected)


# -- docs/spec.md section 4: broadcast axes ----------------------------------------------------------


def test_broadcast_axes_share_decisions() -> None:
    x = make_input((4, 6, 5), np.float32, 9)
    y, m = reference.dropout(x, 0.5, seed=3, broadcast_axes=(-1, 0), return_mask=True)
    assert m.shape == (1, 6, 1)
    assert m.broadcast_axes == (0, 2)
    # the mask is the stream over the mask shape
    np.testing.assert_array_equal(
        m.to_bool().reshape(-1), reference.keep(3, 0, np.arange(6), 0.5)
    )
    kept = np.broadcast_to(m.to_bool(), x.shape)
    with np.errstate(over="ignore"):
        assert_same(y, np.where(kept, x * np.float32(2), np.float32(0)))


def test_spatial_channels_first_and_last_drop_the_same_maps() -> None:
    x = make_input((3, 5, 4, 7), np.float32, 10)
    yf, mf = reference.spatial_dropout(x, 0.5, seed=4, return_mask=True)
    xl = np.moveaxis(x, 1, -1)
    yl, ml = reference.spatial_dropout(
        xl, 0.5, seed=4, data_format="channels_last", return_mask=True
    )
    assert mf.shape == (3, 5, 1, 1)
    assert ml.shape == (3, 1, 1, 5)
    np.testing.assert_array_equal(mf.bits, ml.bits)
    assert_same(np.ascontiguousarray(np.moveaxis(yl, -1, 1)), yf)


# -- the mask object ---------------------------------------------------------------


def test_mask_pickles() -> None:
    _, m = reference.dropout(np.ones((3, 9)), 0.3, seed=5, offset=9, return_mask=True)
    m2 = pickle.loads(pickle.dumps(m))
    assert isinstance(m2, Mask)
    assert m2 == m
    assert not m2.bits.flags.writeable
