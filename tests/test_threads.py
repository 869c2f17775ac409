"""Threads: results do not depend on the number of kernel threads, and
concurrent calls from Python threads are safe (SPEC sections 2 and 6)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from _util import TWO_64, assert_same, assert_same_mask, make_input, reference

# Large enough for the core to split the work between threads.
# Large enough that 7 threads each get their minimum share (65536 elements).
SHAPES = [(460_003,), (227, 2053), (3, 64, 2411)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_thread_count_does_not_change_results(
    native: Any, simd: str, nthreads: int, dtype: Any, shape: tuple[int, ...]
) -> None:
    del simd
    assert native.get_num_threads() == nthreads
    x = make_input(shape, dtype, seed=nthreads)
    for kw in (
        {"seed": 3, "offset": TWO_64 - 999},
        {"seed": 4, "broadcast_axes": (0,), "mode": "classic"},
        {"seed": 5, "broadcast_axes": (-1,)},
    ):
        yr, mr = reference.dropout(x, 0.3, return_mask=True, **kw)
        yn, mn = native.dropout(x, 0.3, return_mask=True, **kw)
        assert_same(yn, yr)
        assert_same_mask(mn, mr)
        assert_same(native.dropout_backward(x, mn), reference.dropout_backward(x, mr))
        regen = native.dropout_backward(x, p=0.3, **kw)
        assert_same(regen, reference.dropout_backward(x, mr))


def _work(native: Any, i: int) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    x = make_input((20_000 + 37 * i,), np.float32, seed=i)
    y, m = native.dropout(x, 0.4, seed=i, offset=i * 1000, return_mask=True)
    g = native.dropout_backward(x, m)
    g2 = native.dropout_backward(x, p=0.4, seed=i, offset=i * 1000)
    return y, m, g, g2


def test_concurrent_python_threads(native: Any) -> None:
    serial = [_work(native, i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            concurrent = list(pool.map(lambda i: _work(native, i), range(16)))
            for (ys, ms, gs, g2s), (yc, mc, gc, g2c) in zip(serial, concurrent):
                assert_same(yc, ys)
                assert_same_mask(mc, ms)
                assert_same(gc, gs)
                assert_same(g2c, g2s)


def test_concurrent_calls_with_thread_count_changes(native: Any) -> None:
    """set_num_threads from one thread while others compute: results unchanged."""
    before = native.get_num_threads()
    x = make_input((50_001,), np.float64, seed=1)
    expected = native.dropout(x, 0.5, seed=9)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(native.dropout, x, 0.5, seed=9) for _ in range(12)]
            for n in (1, 3, 2, 7, 1):
                native.set_num_threads(n)
            for f in futures:
                assert_same(f.result(), expected)
    finally:
        native.set_num_threads(before)


def test_get_set_num_threads(native: Any) -> None:
    before = native.get_num_threads()
    assert isinstance(before, int)
    assert before >= 1
    try:
        for n in (1, 2, np.int64(3), 7):
            native.set_num_threads(n)
            assert native.get_num_threads() == int(n)
    finally:
        native.set_num_threads(before)
    assert native.get_num_threads() == before


@pytest.mark.parametrize(
    ("n", "exc"),
    [
        (0, ValueError),
        (-1, ValueError),
        (1 << 40, ValueError),
        (10**9, ValueError),
        (1.5, TypeError),
        ("2", TypeError),
        ([2], TypeError),
        (True, TypeError),
        (2.0, TypeError),
    ],
    ids=["0", "-1", "2^40", "10^9", "1.5", "str", "list", "True", "2.0"],
)
def test_set_num_threads_errors(native: Any, n: Any, exc: type[Exception]) -> None:
    before = native.get_num_threads()
    with pytest.raises(exc, match=r"\bn\b"):
        native.set_num_threads(n)
    assert native.get_num_threads() == before
