"""Shared helpers for the test suite (imported by conftest.py and the tests).

If the compiled core is missing (the package was not built), the pure-Python
parts (``fastdropout.reference``, validation, ``Mask``) are still importable,
so reference-only tests run; tests of the native code skip with a reason.
Any other import failure (e.g. a bad ``FASTDROPOUT_SIMD``) is an error.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import numpy as np


def _import() -> tuple[types.ModuleType, bool]:
    try:
        import fastdropout
    except ImportError as exc:
        if exc.name != "fastdropout._core":
            raise
        spec = importlib.util.find_spec("fastdropout")
        assert spec is not None
        assert spec.submodule_search_locations is not None
        stub = types.ModuleType("fastdropout")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["fastdropout"] = stub
        return stub, False
    return fastdropout, True


fastdropout, HAVE_CORE = _import()

# After _import(): works with or without the compiled core.
from fastdropout import reference
from fastdropout.mask import Mask

__all__ = [
    "AVAILABLE_SIMD",
    "HAVE_CORE",
    "NO_CORE_REASON",
    "TWO_64",
    "assert_same",
    "assert_same_mask",
    "bits_of",
    "core",
    "fastdropout",
    "make_input",
    "philox_py",
    "reference",
    "special_values",
]

NO_CORE_REASON = "fastdropout._core is not built (reference-only run)"

if HAVE_CORE:
    from fastdropout import _core as core

    AVAILABLE_SIMD: list[str] = list(core._available_simd())
else:  # pragma: no cover - depends on the build
    core = None
    AVAILABLE_SIMD = []

DTYPES = (np.float16, np.float32, np.float64)
UINT_OF = {
    np.dtype(np.float16): np.uint16,
    np.dtype(np.float32): np.uint32,
    np.dtype(np.float64): np.uint64,
}
TWO_64 = 1 << 64


def philox_py(counter: tuple[int, ...], key: tuple[int, ...]) -> tuple[int, ...]:
    """A second, scalar, pure-Python Philox4x32-10 (Random123's philox.h)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for rnd in range(10):
        if rnd:
            k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
            k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (
            (p1 >> 32) ^ c1 ^ k0,
            p1 & 0xFFFFFFFF,
            (p0 >> 32) ^ c3 ^ k1,
            p0 & 0xFFFFFFFF,
        )
    return c0, c1, c2, c3


def bits_of(a: Any) -> np.ndarray:
    """The array's bit patterns (so -0.0 != +0.0 and NaN payloads count); any
    float dtype, ml_dtypes.bfloat16 included (by its item size)."""
    a = np.asarray(a)
    return np.ascontiguousarray(a).view(np.dtype(f"u{a.dtype.itemsize}"))


def assert_same(actual: Any, expected: Any, what: str = "result") -> None:
    """Bit-for-bit equality of two float arrays, with a readable failure."""
    assert isinstance(actual, np.ndarray), (what, type(actual))
    assert isinstance(expected, np.ndarray), (what, type(expected))
    a, e = actual, expected
    assert a.dtype == e.dtype, (what, a.dtype, e.dtype)
    assert a.shape == e.shape, (what, a.shape, e.shape)
    ab, eb = bits_of(a).reshape(-1), bits_of(e).reshape(-1)
    if not np.array_equal(ab, eb):
        bad = np.flatnonzero(ab != eb)
        i = bad[:5]
        raise AssertionError(
            f"{what}: {bad.size} of {a.size} elements differ; first at flat "
            f"{i.tolist()}: actual {a.reshape(-1)[i].tolist()} (bits "
            f"{[hex(int(v)) for v in ab[i]]}) expected {e.reshape(-1)[i].tolist()} "
            f"(bits {[hex(int(v)) for v in eb[i]]})"
        )


def assert_same_mask(actual: Any, expected: Any) -> None:
    if expected is None:
        assert actual is None
        return
    assert isinstance(actual, Mask), type(actual)
    assert actual.shape == expected.shape
    assert actual.size == expected.size
    assert actual.p == expected.p
    assert actual.mode == expected.mode
    assert actual.seed == expected.seed
    assert actual.offset == expected.offset
    assert actual.broadcast_axes == expected.broadcast_axes
    assert actual.bits.dtype == np.uint8
    assert not actual.bits.flags.writeable
    np.testing.assert_array_equal(actual.bits, expected.bits)
    assert actual == expected


def special_values(dtype: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of ``dtype``: normals plus NaN, -NaN, +-Inf, +-0.0,
    subnormals, the largest finite values (which overflow when scaled) and
    values near 1."""
    dt = np.dtype(dtype)
    info = np.finfo(dt)
    specials = np.array(
        [
            np.nan,
            -np.nan,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            float(info.smallest_subnormal),
            -float(info.smallest_subnormal),
            3 * float(info.smallest_subnormal),
            float(info.smallest_normal),
            float(info.max),
            -float(info.max),
            float(info.max) / 1.5,
            1.0,
            -1.0,
            float(info.eps),
            0.5,
            1e4,
        ],
    ).astype(dt)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal(n) * 3).astype(dt)
    if n:
        k = min(n, max(1, n // 4))
        where = rng.choice(n, size=k, replace=False)
        x[where] = rng.choice(specials, size=k)
        x[: min(n, specials.size)] = specials[: min(n, specials.size)]
    return x


def make_input(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    n = 1
    for s in shape:
        n *= s
    rng = np.random.default_rng(seed)
    return special_values(dtype, n, rng).reshape(shape)


def served(monkeypatch: Any, module: Any, name: str) -> list[bool]:
    """Records, for each call of ``module.name`` (a C++ fast path that answers None
    for what it does not serve), whether it served the call."""
    log: list[bool] = []
    real = getattr(module, name)

    def spy(*args: Any) -> Any:
        r = real(*args)
        log.append(r is not None)
        return r

    monkeypatch.setattr(module, name, spy)
    return log
