"""Threads follow OpenMP and threadpoolctl (README "Threads"): the default team is
OpenMP's setting read per call, threadpool_limits() lowers it, set_num_threads() is
visible to threadpoolctl, set_num_threads(None) goes back to the default, and the
threads that really run (the core's _last_team_size) are the ones reported."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _util import assert_same, reference

BIG = 1 << 24  # the case: a 2**24 forward pass


@pytest.fixture
def default_threads(native: Any) -> Iterator[Any]:
    native.set_num_threads(None)
    try:
        yield native
    finally:
        native.set_num_threads(None)


def _openmp_of(info: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in info if i["user_api"] == "openmp"]


def _team_of_a_big_call(native: Any, x: np.ndarray) -> int:
    native.dropout(x, 0.5, seed=1, out=x)
    return int(native._core._last_team_size())


def _need_two_threads(native: Any) -> None:
    if not native._core.has_openmp():
        pytest.skip("built without OpenMP")
    if native._core._default_num_threads() < 2:
        pytest.skip("OpenMP's default team here is 1 thread")


def test_threadpool_limits_lowers_the_team(default_threads: Any) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    native = default_threads
    _need_two_threads(native)
    x = np.zeros(BIG, np.float32)
    default = native.get_num_threads()
    assert default == native._core._default_num_threads() >= 2
    assert _team_of_a_big_call(native, x) == default
    with threadpoolctl.threadpool_limits(1):
        assert native.get_num_threads() == 1
        assert _team_of_a_big_call(native, x) == 1
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert native.get_num_threads() == 1
    assert native.get_num_threads() == default
    assert _team_of_a_big_call(native, x) == default


def test_set_num_threads_is_seen_by_threadpoolctl(default_threads: Any) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    native = default_threads
    if not native._core.has_openmp():
        pytest.skip("built without OpenMP")
    openmp = _openmp_of(threadpoolctl.threadpool_info())
    assert openmp, "threadpoolctl does not see fastdropout's OpenMP runtime"
    x = np.zeros(BIG, np.float32)
    for n in (1, 3):
        native.set_num_threads(n)
        assert native.get_num_threads() == n
        assert {
            i["num_threads"] for i in _openmp_of(threadpoolctl.threadpool_info())
        } >= {n}
        assert _team_of_a_big_call(native, x) == n
        # a threadpool_limits block inside still lowers it, and restores it
        with threadpoolctl.threadpool_limits(1):
            assert native.get_num_threads() == 1
            assert _team_of_a_big_call(native, x) == 1
        assert native.get_num_threads() == n
    native.set_num_threads(None)
    assert native.get_num_threads() == native._core._default_num_threads()
    counts = {i["num_threads"] for i in _openmp_of(threadpoolctl.threadpool_info())}
    assert native._core._default_num_threads() in counts


def test_results_do_not_depend_on_the_limits(default_threads: Any) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    native = default_threads
    x = np.random.default_rng(0).standard_normal(300_007).astype(np.float32)
    expected = reference.dropout(x, 0.3, seed=5, offset=7)
    for limit in (1, 2, 3):
        with threadpoolctl.threadpool_limits(limit):
            assert_same(native.dropout(x, 0.3, seed=5, offset=7), expected)


def test_set_num_threads_validates(default_threads: Any) -> None:
    native = default_threads
    cap = native._core._max_num_threads()
    assert cap >= 8
    native.set_num_threads(cap)
    assert native.get_num_threads() == cap
    for bad in (cap + 1, 10**9, 0, -3):
        with pytest.raises(ValueError, match=rf"\[1, {cap}\]"):
            native.set_num_threads(bad)
        assert native.get_num_threads() == cap
    for bad in (True, 2.0, "2", np.float64(1)):
        with pytest.raises(TypeError, match=r"\bn\b"):
            native.set_num_threads(bad)
    native.set_num_threads(np.uint8(2))
    assert native.get_num_threads() == 2
    native.set_num_threads(None)
    assert native.get_num_threads() == native._core._default_num_threads()


def test_small_calls_stay_serial(default_threads: Any) -> None:
    native = default_threads
    native.dropout(np.zeros(1000, np.float32), 0.5, seed=1)
    assert native._core._last_team_size() == 1
