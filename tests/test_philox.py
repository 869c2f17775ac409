"""Philox4x32-10 against Random123's known answers (docs/spec.md section 2), in the
reference, the C++ scalar Philox and every SIMD kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import philox_py, reference

KAT_FILE = Path(__file__).parent / "data" / "philox_kat.txt"
MASK32 = 0xFFFFFFFF


def _load_kats() -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    kats = []
    for line in KAT_FILE.read_text().splitlines():
        fields = line.split()
        if not fields or line.startswith("#"):
            continue
        name, rounds, *words = fields
        if name != "philox4x32" or int(rounds) != 10:
            continue
        w = tuple(int(f, 16) for f in words)
        assert len(w) == 10, line
        kats.append((w[0:4], w[4:6], w[6:10]))
    return kats


KATS = _load_kats()
KAT_IDS = [f"kat{i}" for i in range(len(KATS))]


def test_kat_file_has_the_spec_vectors() -> None:
    assert len(KATS) == 3


@pytest.mark.parametrize(("counter", "key", "expected"), KATS, ids=KAT_IDS)
def test_reference_kat(counter: Any, key: Any, expected: Any) -> None:
    out = reference.philox(counter, key)
    assert out.dtype == np.uint32
    assert out.shape == (4,)
    assert tuple(int(v) for v in out) == expected
    assert philox_py(counter, key) == expected


def test_reference_vectorised_matches_scalar_python() -> None:
    rng = np.random.default_rng(1234)
    ctr = rng.integers(0, 1 << 32, size=(4, 300), dtype=np.uint64)
    key = rng.integers(0, 1 << 32, size=(2, 300), dtype=np.uint64)
    out = reference.philox(tuple(ctr), tuple(key))
    assert out.shape == (300, 4)
    for i in range(300):
        c = tuple(int(v) for v in ctr[:, i])
        k = tuple(int(v) for v in key[:, i])
        assert tuple(int(v) for v in out[i]) == philox_py(c, k)


@pytest.mark.parametrize(("counter", "key", "expected"), KATS, ids=KAT_IDS)
def test_core_scalar_kat(
    core_module: Any, counter: Any, key: Any, expected: Any
) -> None:
    assert tuple(core_module.philox(*counter, *key)) == expected


@pytest.mark.parametrize(("counter", "key", "expected"), KATS, ids=KAT_IDS)
def test_core_simd_kat(
    core_module: Any, simd: str, counter: Any, key: Any, expected: Any
) -> None:
    assert core_module.simd_level() == simd
    c0, c1, c2, c3 = counter
    out = core_module._philox_blocks(key[0], key[1], c0 | (c1 << 32), c2, c3, 1)
    assert out.dtype == np.uint32
    assert tuple(int(v) for v in out) == expected


FIRST_BLOCKS = [
    0,
    1,
    5,
    (1 << 32) - 3,
    (1 << 32) - 1,
    1 << 32,
    (1 << 33) + 7,
    (1 << 62) - 2,
    (1 << 63) + 11,
    (1 << 64) - 5,
    (1 << 64) - 1,
]


@pytest.mark.parametrize("first_block", FIRST_BLOCKS, ids=hex)
@pytest.mark.parametrize("n_blocks", [0, 1, 3, 16, 37, 129])
def test_core_simd_stream_matches_scalar(
    core_module: Any, simd: str, first_block: int, n_blocks: int
) -> None:
    """The SIMD stream of consecutive blocks, including carries from the low to
    the high counter word and the wrap at 2**64, equals scalar Philox."""
    del simd
    rng = np.random.default_rng(first_block % 1000 + n_blocks)
    k0, k1, c2, c3 = (int(v) for v in rng.integers(0, 1 << 32, size=4))
    for c2_, c3_ in ((0, 0), (c2, c3)):
        out = core_module._philox_blocks(k0, k1, first_block, c2_, c3_, n_blocks)
        assert out.dtype == np.uint32
        assert out.shape == (4 * n_blocks,)
        blocks = [(first_block + i) % (1 << 64) for i in range(n_blocks)]
        if not blocks:
            continue
        b = np.array(blocks, dtype=np.uint64)
        ref = reference.philox(
            (b & np.uint64(MASK32), b >> np.uint64(32), c2_, c3_), (k0, k1)
        ).reshape(-1)
        np.testing.assert_array_equal(out, ref)
        for i in (0, n_blocks - 1):
            blk = blocks[i]
            scalar = core_module.philox(blk & MASK32, blk >> 32, c2_, c3_, k0, k1)
            assert tuple(int(v) for v in out[4 * i : 4 * i + 4]) == tuple(scalar)
