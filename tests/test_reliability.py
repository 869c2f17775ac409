"""Reliability: overlapping memory, Python threads, huge arrays, stream wrap-around,
memory leaks, fork safety and absurd sizes (docs/spec.md sections 2, 6 and 7: "No input,
however large or odd, may crash the interpreter").

Huge-array tests need several GB of free memory (checked in /proc/meminfo) and are
skipped, with the reason, where it is missing. Nothing here asserts on timings.
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from _util import HAVE_CORE, NO_CORE_REASON, TWO_64, fastdropout, reference

if not HAVE_CORE:  # pragma: no cover - depends on the build
    pytest.skip(NO_CORE_REASON, allow_module_level=True)

from fastdropout import _core

TWO_31 = 1 << 31
TWO_32 = 1 << 32
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
DTYPES = (np.float16, np.float32, np.float64)
GiB = 1 << 30


def _under_asan() -> bool:
    """Whether the ASan runtime is loaded (tools/run_sanitizers.sh)."""
    try:
        return "libasan" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


UNDER_ASAN = _under_asan()


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(UINT[a.dtype.itemsize])


def assert_same(actual: Any, expected: Any, what: str = "result") -> None:
    assert isinstance(actual, np.ndarray), (what, type(actual))
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    a, e = bits(actual).reshape(-1), bits(expected).reshape(-1)
    if not np.array_equal(a, e):
        bad = np.flatnonzero(a != e)
        raise AssertionError(
            f"{what}: {bad.size} of {a.size} elements differ, first at "
            f"{bad[:5].tolist()}"
        )


def assert_same_mask(actual: Any, expected: Any) -> None:
    assert actual is not None
    assert expected is not None
    assert (
        actual.shape,
        actual.p,
        actual.mode,
        actual.seed,
        actual.offset,
        actual.broadcast_axes,
    ) == (
        expected.shape,
        expected.p,
        expected.mode,
        expected.seed,
        expected.offset,
        expected.broadcast_axes,
    )
    np.testing.assert_array_equal(actual.bits, expected.bits)


def data(shape: tuple[int, ...] | int, dtype: Any, seed: int = 0) -> np.ndarray:
    """Normals with NaN, +-Inf, -0.0 and subnormals sprinkled in."""
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal(shape) * 3).astype(dtype)
    flat = x.reshape(-1)
    if flat.size:
        k = max(1, flat.size // 50)
        sp = np.array(
            [np.nan, np.inf, -np.inf, -0.0, float(np.finfo(dtype).smallest_subnormal)],
            dtype,
        )
        flat[rng.integers(0, flat.size, size=k)] = rng.choice(sp, size=k)
    return x


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = fastdropout.get_num_threads()
    fastdropout.set_num_threads(n)
    try:
        yield
    finally:
        fastdropout.set_num_threads(before)


def mem_available() -> int:
    """Bytes the kernel says can be allocated without swapping (0 if unknown)."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def need_memory(nbytes: int) -> None:
    """Skip unless nbytes (plus ASan's shadow and 1 GiB of slack) are available."""
    if not sys.platform.startswith("linux"):
        pytest.skip("huge-array tests read /proc/meminfo (Linux only)")
    if sys.maxsize < 2**40:
        pytest.skip("huge arrays need a 64-bit build")
    want = int(nbytes * (1.25 if UNDER_ASAN else 1.0)) + GiB
    have = mem_available()
    if have < want:
        pytest.skip(
            f"needs {want / GiB:.1f} GiB of free memory, "
            f"MemAvailable is {have / GiB:.1f} GiB"
        )


# --------------------------------------------------------------------------
# Overlapping memory: out shares memory with x without being x
# --------------------------------------------------------------------------


def _overlap_pairs(
    n: int, dtype: Any
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(label, base, x, out): x and out are views of base that partly overlap."""
    big = n > 10_000
    for step in (1, -1) if big else (1, 2, -1, -3):
        for shift in sorted(
            {-n // 2, 1} if big else {-n + 1, -n // 2, -1, 1, n // 3, n - 1}
        ):
            span = (n - 1) * abs(step) + 1
            length = span + n + abs(shift) + 4
            base = data(length, dtype, seed=abs(shift) * 7 + step + 100)
            lo = 2 + max(0, -shift)
            x = base[lo : lo + span][::step][:n]
            start = lo + shift if step > 0 else lo + span - n + shift
            start = min(max(start, 0), length - n)
            out = base[start : start + n]
            if np.shares_memory(x, out) and not (
                x.ctypes.data == out.ctypes.data and x.strides == out.strides
            ):
                yield f"step{step}-shift{shift}", base, x, out


CALLS: list[tuple[str, Callable[..., Any]]] = [
    ("dropout", lambda m, x, **k: m.dropout(x, 0.4, seed=11, offset=TWO_64 - 5, **k)),
    ("classic", lambda m, x, **k: m.dropout(x, 0.7, mode="classic", seed=12, **k)),
    (
        "eval-classic",
        lambda m, x, **k: m.dropout(x, 0.3, training=False, mode="classic", **k),
    ),
    ("eval", lambda m, x, **k: m.dropout(x, 0.3, training=False, **k)),
    ("p=1", lambda m, x, **k: m.dropout(x, 1.0, seed=2, **k)),
    (
        "broadcast",
        lambda m, x, **k: m.dropout(
            x.reshape(-1, 5) if x.size % 5 == 0 else x,
            0.5,
            seed=13,
            broadcast_axes=-1,
            **{a: (b.reshape(-1, 5) if x.size % 5 == 0 else b) for a, b in k.items()},
        ),
    ),
    ("regen", lambda m, x, **k: m.dropout_backward(x, p=0.25, seed=14, offset=3, **k)),
]


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 200_005], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_out_overlapping_x(n: int, dtype: Any) -> None:
    """out overlapping x (without being x) holds the result for the original x,
    and nothing outside out is written (x is read through a copy)."""
    for label, base, x, out in _overlap_pairs(n, dtype):
        for name, call in CALLS:
            for impl in (fastdropout, reference):
                b = base.copy()
                xv = np.ndarray(
                    x.shape,
                    x.dtype,
                    b.data,
                    x.ctypes.data - base.ctypes.data,
                    x.strides,
                )
                ov = np.ndarray(
                    out.shape,
                    out.dtype,
                    b.data,
                    out.ctypes.data - base.ctypes.data,
                    out.strides,
                )
                expected = call(reference, np.array(xv))
                result = call(impl, xv, out=ov)
                where = f"{impl.__name__} {name} {label}"
                assert_same(np.asarray(result).reshape(-1), expected.reshape(-1), where)
                assert np.shares_memory(result, b)
                # everything outside out is as before
                outside = np.ones(b.size, bool)
                first = (out.ctypes.data - base.ctypes.data) // base.itemsize
                outside[first : first + n] = False
                assert_same(b[outside], base[outside], f"{where}: outside out")


def test_out_overlapping_x_backward_with_mask() -> None:
    x = data(4099, np.float32, seed=5)
    _, mask = fastdropout.dropout(x, 0.5, seed=1, return_mask=True)
    expected = reference.dropout_backward(x, mask)
    for shift in (1, -1, 100, -4098):
        base = np.zeros(x.size + abs(shift) + 2, np.float32)
        lo = 1 + max(0, -shift)
        base[lo : lo + x.size] = x
        g = base[lo : lo + x.size]
        out = base[lo + shift : lo + shift + x.size]
        assert_same(
            fastdropout.dropout_backward(g, mask, out=out), expected, f"{shift}"
        )


def test_out_overlapping_transposed_x() -> None:
    """A 2-D x and out over the same buffer, x transposed: a partial overlap that
    np.copyto would get wrong without a temporary."""
    for dtype in DTYPES:
        base = data(64 * 64, dtype, seed=3).reshape(64, 64)
        for x in (base.T, base[:, ::-1], base[::-1], base[::-1, ::-1].T):
            b = base.copy()
            expected = reference.dropout(np.array(x), 0.5, seed=4)
            xv = np.ndarray(
                x.shape, x.dtype, b.data, x.ctypes.data - base.ctypes.data, x.strides
            )
            result = fastdropout.dropout(xv, 0.5, seed=4, out=b)
            assert result is b
            assert_same(result, expected)


# --------------------------------------------------------------------------
# Python threads
# --------------------------------------------------------------------------

BIG = 150_001  # above the core's per-thread minimum: OpenMP splits it


def _thread_job(i: int) -> list[np.ndarray]:
    """A fixed sequence of calls on thread-private arrays; returns every result."""
    dtype = DTYPES[i % 3]
    n = BIG + 1000 * i if i % 2 == 0 else 3001 + i
    x = data(n, dtype, seed=i)
    out: list[np.ndarray] = []
    y, m = fastdropout.dropout(
        x, 0.3, seed=i, offset=TWO_64 - 1 - 100 * i, return_mask=True
    )
    out += [y, m.bits]
    out.append(fastdropout.dropout_backward(x, m))
    out.append(
        fastdropout.dropout_backward(x, p=0.3, seed=i, offset=TWO_64 - 1 - 100 * i)
    )
    out.append(fastdropout.dropout(x, 0.6, mode="classic", seed=i + 1000))
    x4 = data((2, 3, 5, 1 + i), dtype, seed=i)
    ys, ms = fastdropout.spatial_dropout(
        x4,
        0.5,
        seed=i,
        return_mask=True,
        data_format=("channels_first", "channels_last")[i % 2],
    )
    out += [ys, ms.bits, fastdropout.dropout_backward(x4, ms)]
    y2 = x.copy()
    fastdropout.dropout(y2, 0.1, seed=i, out=y2)
    out.append(y2)
    layer = fastdropout.Dropout(0.2, seed=i)
    for _ in range(3):
        out.append(layer(x))
        out.append(layer.backward(x))
    return out


def _run_threads(target: Callable[[int], Any], n: int) -> list[Any]:
    """Run target(i) in n Python threads that start together; re-raise errors."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
        assert not t.is_alive(), "a thread hangs"
    if errors:
        raise errors[0]
    return results


def _assert_all_same(got: list[Any], want: list[Any]) -> None:
    for i, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w)
        for k, (a, e) in enumerate(zip(g, w)):
            assert_same(a, e, f"thread {i}, result {k}")


@pytest.mark.parametrize("kernel_threads", [1, 2, 4])
def test_eight_python_threads_match_serial(kernel_threads: int) -> None:
    with threads(kernel_threads):
        serial = [_thread_job(i) for i in range(8)]
        for _ in range(3):
            _assert_all_same(_run_threads(_thread_job, 8), serial)


def test_shared_inputs_across_threads() -> None:
    """Many threads reading one (read-only) x and one Mask at the same time."""
    x = data(BIG, np.float32, seed=1)
    x.flags.writeable = False
    y, mask = fastdropout.dropout(x, 0.5, seed=77, return_mask=True)
    g = fastdropout.dropout_backward(x, mask)

    def job(i: int) -> list[np.ndarray]:
        del i
        return [
            fastdropout.dropout(x, 0.5, seed=77),
            fastdropout.dropout_backward(x, mask),
        ]

    for got in _run_threads(job, 8):
        assert_same(got[0], y)
        assert_same(got[1], g)


def test_set_num_threads_and_simd_while_others_run() -> None:
    """One thread keeps changing the kernel thread count (and the SIMD level)
    while seven others compute: every result stays exact."""
    expected = [_thread_job(i) for i in range(7)]
    stop = threading.Event()
    levels = list(_core._available_simd())
    simd_before = _core.simd_level()
    seen: set[int] = set()

    def changer() -> None:
        k = 0
        while not stop.is_set():
            n = 1 + k % 5
            fastdropout.set_num_threads(n)
            seen.add(fastdropout.get_num_threads())
            _core._set_simd(levels[k % len(levels)])
            k += 1
            stop.wait(0.0005)

    before = fastdropout.get_num_threads()
    t = threading.Thread(target=changer)
    t.start()
    try:
        for _ in range(2):
            _assert_all_same(_run_threads(_thread_job, 7), expected)
    finally:
        stop.set()
        t.join()
        fastdropout.set_num_threads(before)
        _core._set_simd(simd_before)
    assert seen <= {1, 2, 3, 4, 5}


def test_thread_pool_executor() -> None:
    serial = [_thread_job(i) for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(_thread_job, range(16)))
        _assert_all_same(got, serial)
        # nested: a pool task submitting to another pool
        with ThreadPoolExecutor(max_workers=4) as inner:
            futs = [
                pool.submit(lambda j: list(inner.map(_thread_job, [j, j + 1])), j)
                for j in range(0, 8, 2)
            ]
            for j, f in zip(range(0, 8, 2), futs):
                _assert_all_same(f.result(), serial[j : j + 2])


@contextlib.contextmanager
def no_forced_switching() -> Iterator[None]:
    """While this holds, a thread holding the GIL keeps it until it blocks or
    releases it (the interpreter would otherwise hand it over every 5 ms)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


GIL_CALLS = [
    "dropout",
    "dropout with mask",
    "broadcast_axes",
    "backward (mask)",
    "backward (regenerated)",
    "_core.forward",
    "_core.backward_mask",
]


def _gil_call(case: str, x: np.ndarray, y: np.ndarray, mask: Any) -> Any:
    fd = fastdropout
    if case == "dropout":
        return fd.dropout(x, 0.5, seed=1, out=y)
    if case == "dropout with mask":
        return fd.dropout(x, 0.5, seed=1, out=y, return_mask=True)
    if case == "broadcast_axes":
        return fd.dropout(x, 0.5, seed=1, broadcast_axes=0, out=y)
    if case == "backward (mask)":
        return fd.dropout_backward(x, mask, out=y)
    if case == "backward (regenerated)":
        return fd.dropout_backward(x, p=0.5, seed=1, out=y)
    if case == "_core.forward":
        return _core.forward(x, y, 1, 0, TWO_31, 2.0, True, None, ())
    return _core.backward_mask(x, y, mask.bits, 2.0, True, ())


def _other_thread_ran_during_call(
    case: str, x: np.ndarray, y: np.ndarray, mask: Any
) -> bool:
    state = ["before"]
    seen: list[str] = []
    go = threading.Event()

    def other() -> None:
        go.wait()
        seen.append(state[0])

    with no_forced_switching():
        t = threading.Thread(target=other)
        t.start()
        go.set()
        state[0] = "calling"
        _gil_call(case, x, y, mask)
        state[0] = "returned"
        t.join()
    return seen == ["calling"]


@pytest.mark.parametrize("case", GIL_CALLS)
def test_gil_released_while_kernels_run(case: str) -> None:
    """Another Python thread runs while the kernel runs (docs/spec.md section 6). No clock: with
    forced GIL switching off, the other thread can only run inside the call if
    the call releases the GIL; otherwise it runs once this thread blocks in join.
    Whether the OS wakes the other thread before the kernel ends is up to the
    scheduler. The kernels run on one thread here, so a core is left for the woken
    one (with a team on every core, the spinning OpenMP workers can hold both cores
    of a 2-core machine for the whole of a 2 ms call), the array is 64 MiB so each
    call takes several milliseconds, and a few attempts are allowed; a call that
    holds the GIL fails every one of them."""
    x = np.ones((256, 1 << 16), np.float32)
    y = np.empty_like(x)
    _, mask = fastdropout.dropout(x, 0.5, seed=1, return_mask=True)
    attempts = 40
    fastdropout.set_num_threads(1)
    try:
        ran = any(
            _other_thread_ran_during_call(case, x, y, mask) for _ in range(attempts)
        )
    finally:
        fastdropout.set_num_threads(None)
    assert ran, f"{case} did not release the GIL in {attempts} attempts"


# --------------------------------------------------------------------------
# Huge arrays: more than 2**31 (and 2**32) elements
# --------------------------------------------------------------------------


def _sample_indices(n: int, extra: tuple[int, ...] = ()) -> np.ndarray:
    rng = np.random.default_rng(n)
    edges = [
        0,
        1,
        63,
        64,
        65,
        n // 2 - 1,
        n // 2,
        n // 2 + 1,
        TWO_31 - 2,
        TWO_31 - 1,
        TWO_31,
        TWO_31 + 1,
        TWO_31 + 63,
        TWO_31 + 64,
        TWO_32 - 1,
        TWO_32,
        TWO_32 + 1,
        n - 65,
        n - 64,
        n - 9,
        n - 8,
        n - 2,
        n - 1,
        *extra,
    ]
    idx = np.concatenate(
        [
            np.array([e for e in edges if 0 <= e < n], np.int64),
            rng.integers(0, n, size=4000),
            rng.integers(max(0, n - (1 << 22)), n, size=1000),
        ]
    )
    return np.unique(idx)


def _check_samples(
    y: np.ndarray,
    xvals: np.ndarray,
    idx: np.ndarray,
    keep: np.ndarray,
    scale: Any,
    what: str,
) -> None:
    with np.errstate(all="ignore"):
        expected = np.where(keep, xvals * scale, y.dtype.type(0))
    got = y.reshape(-1)[idx]
    assert_same(got, expected.astype(y.dtype), what)


def _plant(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Write distinct values (specials included) at idx; return them."""
    vals = data(idx.size, x.dtype, seed=int(idx.size))
    x.reshape(-1)[idx] = vals
    return vals


def _mask_bit(mask: Any, idx: np.ndarray) -> np.ndarray:
    return ((mask.bits[idx >> 3] >> (idx & 7).astype(np.uint8)) & 1).astype(bool)


def test_huge_in_place_past_2_31() -> None:
    """One float16 array of 2**31 + 2**20 + 5 elements (~4.3 GB), in place: mask
    bits and values at sampled positions past 2**31 (int32 overflow), forward,
    backward from the mask and backward regenerated from (seed, offset)."""
    n = TWO_31 + (1 << 20) + 5
    need_memory(2 * n + n // 8)
    seed, offset, p = 0xDEADBEEF_12345678, TWO_64 - 1000, 0.375
    idx = _sample_indices(n)
    keep = reference.keep(seed, offset, idx, p)
    s = np.float16(1 / (1 - p))
    x = np.full(n, np.float16(1.5))
    xvals = _plant(x, idx)
    y, mask = fastdropout.dropout(
        x, p, seed=seed, offset=offset, out=x, return_mask=True
    )
    assert y is x
    assert mask.bits.size == (n + 7) // 8
    assert mask.shape == (n,)
    np.testing.assert_array_equal(_mask_bit(mask, idx), keep)
    _check_samples(x, xvals, idx, keep, s, "forward")
    with np.errstate(all="ignore"):
        yvals = np.where(keep, xvals * s, np.float16(0))
    assert fastdropout.dropout_backward(x, mask, out=x) is x
    _check_samples(x, yvals, idx, keep, s, "backward (mask)")
    with np.errstate(all="ignore"):
        gvals = np.where(keep, yvals * s, np.float16(0))
    fastdropout.dropout_backward(x, p=p, seed=seed, offset=offset, out=x)
    _check_samples(x, gvals, idx, keep, s, "backward (regenerated)")


@pytest.mark.slow
def test_huge_separate_out_past_2_31() -> None:
    """x and a new y of 2**31 + 2**20 + 5 float16 each (~4.3 GB each)."""
    n = TWO_31 + (1 << 20) + 5
    need_memory(2 * 2 * n + n // 8)
    seed, offset, p = 12345, 7, 0.75
    idx = _sample_indices(n)
    keep = reference.keep(seed, offset, idx, p)
    x = np.full(n, np.float16(-0.5))
    xvals = _plant(x, idx)
    y, mask = fastdropout.dropout(x, p, seed=seed, offset=offset, return_mask=True)
    np.testing.assert_array_equal(_mask_bit(mask, idx), keep)
    _check_samples(y, xvals, idx, keep, np.float16(4.0), "forward")
    assert_same(x[idx], xvals, "x is not written")
    fastdropout.dropout_backward(x, mask, out=y)
    _check_samples(y, xvals, idx, keep, np.float16(4.0), "backward (mask)")


@pytest.mark.slow
def test_huge_in_place_past_2_32() -> None:
    """One float16 array of 2**32 + 2**12 + 3 elements (~8.6 GB), in place, the
    stream wrapping past 2**64 in the middle: positions past 2**32 are right."""
    n = TWO_32 + (1 << 12) + 3
    need_memory(2 * n + n // 8)
    seed, offset, p = 2**64 - 1, TWO_64 - TWO_31 - 3, 0.5
    idx = _sample_indices(n)
    keep = reference.keep(seed, offset, idx, p)
    x = np.full(n, np.float16(-2.25))
    xvals = _plant(x, idx)
    y, mask = fastdropout.dropout(
        x, p, seed=seed, offset=offset, out=x, return_mask=True
    )
    assert y is x
    np.testing.assert_array_equal(_mask_bit(mask, idx), keep)
    _check_samples(x, xvals, idx, keep, np.float16(2.0), "forward in place")


def _mask_index(
    idx: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]
) -> np.ndarray:
    coords = list(np.unravel_index(idx, shape))
    mshape = tuple(1 if a in axes else s for a, s in enumerate(shape))
    for a in axes:
        coords[a] = np.zeros_like(coords[a])
    return np.ravel_multi_index(tuple(coords), mshape).astype(np.int64)


@pytest.mark.parametrize(
    ("shape", "call"),
    [
        ((2, 3, (TWO_31 // 6) + 11), "channels_first"),  # one decision per long run
        ((2, (TWO_31 // 10) + 7, 5), "channels_last"),  # short channel vectors, tiled
        ((3, (TWO_31 // 3) // 70_001 + 1, 70_001), "axes1"),  # long channel vectors
    ],
    ids=["channels_first", "channels_last", "broadcast_axes1"],
)
def test_huge_spatial_past_2_31(shape: tuple[int, ...], call: str) -> None:
    n = math.prod(shape)
    assert n > TWO_31
    need_memory(2 * n)
    seed, offset, p = 99, TWO_64 - 3, 0.5
    axes = (2,) if call == "channels_first" else (1,)
    x = np.full(shape, np.float16(3.0))
    idx = _sample_indices(n)
    xvals = _plant(x, idx)
    keep = reference.keep(seed, offset, _mask_index(idx, shape, axes), p)
    if call == "axes1":
        y, mask = fastdropout.dropout(
            x, p, seed=seed, offset=offset, broadcast_axes=1, out=x, return_mask=True
        )
    else:
        y, mask = fastdropout.spatial_dropout(
            x, p, seed=seed, offset=offset, out=x, data_format=call, return_mask=True
        )
    assert y is x
    assert mask.broadcast_axes == axes
    _check_samples(x, xvals, idx, keep, np.float16(2.0), call)


# --------------------------------------------------------------------------
# Stream positions wrapping past 2**64 (docs/spec.md section 2)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 63, 64, 65, 1000, 70_000])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_offset_wraps_past_2_64(k: int, dtype: Any) -> None:
    """offset = 2**64 - k: element i is at position (2**64 - k + i) mod 2**64, so
    elements k, k+1, ... are those of offset 0, and elements < k are those of a
    short call at 2**64 - k."""
    n = k + 150_000 + 17  # several OpenMP chunks after the wrap
    x = data(n, dtype, seed=k)
    seed = 0xFEEDFACE_CAFEBEEF
    y, mask = fastdropout.dropout(
        x, 0.5, seed=seed, offset=TWO_64 - k, return_mask=True
    )
    yr, mr = reference.dropout(x, 0.5, seed=seed, offset=TWO_64 - k, return_mask=True)
    assert_same(y, yr)
    assert_same_mask(mask, mr)
    assert_same(y[k:], fastdropout.dropout(x[k:], 0.5, seed=seed, offset=0))
    assert_same(y[:k], fastdropout.dropout(x[:k], 0.5, seed=seed, offset=TWO_64 - k))
    keep = mask.to_bool()
    np.testing.assert_array_equal(
        keep, reference.keep(seed, TWO_64 - k, np.arange(n), 0.5)
    )
    # the decisions are Philox words compared with the threshold (p=0.5: 2**31)
    j = (TWO_64 - k + np.arange(min(n, 2 * k + 8), dtype=object)) % TWO_64
    for i in range(0, len(j), max(1, len(j) // 64)):
        b, w = divmod(int(j[i]), 4)
        word = _core.philox(
            b & 0xFFFFFFFF, b >> 32, 0, 0, seed & 0xFFFFFFFF, seed >> 32
        )[w]
        assert keep[i] == (word >= TWO_31), i
    # backward regenerated across the wrap
    assert_same(
        fastdropout.dropout_backward(x, p=0.5, seed=seed, offset=TWO_64 - k),
        reference.dropout_backward(x, mr),
    )


def test_offset_wraps_with_broadcast_axes_and_layers() -> None:
    x = data((7, 5, 3), np.float32, seed=1)
    for axes in (0, 1, 2, (0, 2)):
        y, m = fastdropout.dropout(
            x, 0.3, seed=5, offset=TWO_64 - 4, broadcast_axes=axes, return_mask=True
        )
        yr, mr = reference.dropout(
            x, 0.3, seed=5, offset=TWO_64 - 4, broadcast_axes=axes, return_mask=True
        )
        assert_same(y, yr)
        assert_same_mask(m, mr)
    layer = fastdropout.Dropout(0.5, seed=3)
    layer.offset = TWO_64 - 10
    y1 = layer(x)
    assert layer.offset == x.size - 10  # (2**64 - 10 + 105) mod 2**64
    assert_same(y1, reference.dropout(x, 0.5, seed=3, offset=TWO_64 - 10))
    y2 = layer(x)
    assert_same(y2, reference.dropout(x, 0.5, seed=3, offset=x.size - 10))
    spatial = fastdropout.SpatialDropout(0.5, seed=4)
    spatial.offset = TWO_64 - 1
    spatial(x)
    assert spatial.offset == 7 * 5 - 1


# --------------------------------------------------------------------------
# Memory: repeated calls do not grow the process
# --------------------------------------------------------------------------


def _rss() -> int:
    """Resident set size in bytes (0 where /proc is missing)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _one_round(
    x: np.ndarray,
    x4: np.ndarray,
    out: np.ndarray,
    layer: Any,
    slayer: Any,
    bad_bits: np.ndarray,
) -> None:
    _, m = fastdropout.dropout(x, 0.5, seed=1, return_mask=True)
    fastdropout.dropout_backward(x, m)
    fastdropout.dropout_backward(x, m, out=out)
    fastdropout.dropout_backward(x, p=0.5, seed=1, offset=5)
    fastdropout.dropout(x, 0.5, seed=2, broadcast_axes=0, out=out)
    fastdropout.dropout(x, 0.5, training=False, mode="classic")
    fastdropout.spatial_dropout(
        x4, 0.5, seed=3, return_mask=True, data_format="channels_last"
    )
    layer.backward(layer(x))
    slayer.backward(slayer(x4))
    m.to_bool()
    # error paths, in Python and in the core
    for bad in (
        lambda: fastdropout.dropout(x, 2.0),
        lambda: fastdropout.dropout(bad_bits, 0.5),
        lambda: _core.forward(x, out, 1, 0, 0, 1.0, True, bad_bits, ()),
        lambda: _core.forward(x, x[::-1], 1, 0, 0, 1.0, True, None, ()),
    ):
        with contextlib.suppress(ValueError, TypeError):
            bad()


ROUNDS = 3000  # 13 calls each: about 4 * 10**4 calls


def test_repeated_calls_do_not_leak() -> None:
    """Thousands of rounds of forward (with mask), backward (both ways), layers,
    spatial dropout and calls that raise: resident memory and Python's allocated
    blocks stay flat after a warm-up."""
    x = data((64, 256), np.float32, seed=1)
    x4 = data((4, 8, 8, 16), np.float32, seed=2)
    out = np.empty_like(x)
    layer = fastdropout.Dropout(0.3, seed=1)
    slayer = fastdropout.SpatialDropout(0.3, seed=2)
    bad_bits = np.zeros(3, np.uint8)
    args = (x, x4, out, layer, slayer, bad_bits)
    for _ in range(300):
        _one_round(*args)
    gc.collect()
    rss0, blocks0 = _rss(), sys.getallocatedblocks()
    for _ in range(ROUNDS):
        _one_round(*args)
    gc.collect()
    rss1, blocks1 = _rss(), sys.getallocatedblocks()
    # A leak of anything per call (an array, a mask, a buffer, a reference)
    # would be >= ROUNDS blocks, or >= 6 MB for anything of 2 kB or more.
    assert blocks1 - blocks0 < ROUNDS // 3, (blocks0, blocks1)
    # ASan's quarantine holds freed memory: its RSS means nothing.
    if sys.platform.startswith("linux") and not UNDER_ASAN:
        assert rss1 - rss0 < 8 * (1 << 20), (rss0, rss1)


# --------------------------------------------------------------------------
# Fork safety
# --------------------------------------------------------------------------

FORK_TIMEOUT = 30  # seconds; the work takes milliseconds


def _child_work(conn: Any, n_threads: int) -> None:
    try:
        fastdropout.set_num_threads(n_threads)
        x = data(BIG * 4, np.float32, seed=3)
        y, m = fastdropout.dropout(x, 0.3, seed=8, offset=TWO_64 - 9, return_mask=True)
        yr, mr = reference.dropout(x, 0.3, seed=8, offset=TWO_64 - 9, return_mask=True)
        g = fastdropout.dropout_backward(x, p=0.3, seed=8, offset=TWO_64 - 9)
        ok = (
            np.array_equal(bits(y), bits(yr))
            and np.array_equal(m.bits, mr.bits)
            and np.array_equal(bits(g), bits(reference.dropout_backward(x, mr)))
        )
        conn.send(("ok" if ok else "mismatch", fastdropout.get_num_threads()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", repr(e)))
    finally:
        conn.close()


def _run_child(method: str, n_threads: int) -> tuple[str, Any]:
    ctx = mp.get_context(method)
    parent, child = ctx.Pipe(duplex=False)
    with warnings.catch_warnings():
        # Python >= 3.12 warns that fork() in a multi-threaded process (the
        # OpenMP pool counts) may deadlock: that is what this test checks.
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = ctx.Process(target=_child_work, args=(child, n_threads), daemon=True)
        proc.start()
    child.close()
    try:
        if not parent.poll(FORK_TIMEOUT):
            return "hang", None
        return parent.recv()
    except EOFError:
        return "died", None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        parent.close()


def _use_openmp_pool(n: int) -> None:
    """Run kernels on an OpenMP team of n threads in this process."""
    with threads(n):
        x = np.ones(BIG * 4, np.float32)
        fastdropout.dropout(x, 0.5, seed=1, out=x)


needs_fork = pytest.mark.skipif(
    "fork" not in mp.get_all_start_methods(),
    reason="no fork start method on this platform",
)


@needs_fork
@pytest.mark.parametrize("child_threads", [1, 2])
def test_fork_after_openmp_pool(child_threads: int) -> None:
    """A worker forked after the parent ran an OpenMP team still computes
    correctly (GNU libgomp's pool does not survive fork: the core must not
    enter an OpenMP region in such a child, or must recreate its pool)."""
    _use_openmp_pool(2)
    status, info = _run_child("fork", child_threads)
    assert status == "ok", (
        f"forked child: {status} ({info}); a child that hangs in GOMP_parallel "
        "is GNU libgomp's pool not surviving fork()"
    )


@needs_fork
def test_fork_before_any_openmp_pool() -> None:
    """In a fresh interpreter whose kernels never ran threaded, a forked child can
    use OpenMP threads (a control for test_fork_after_openmp_pool)."""
    code = f"""
import multiprocessing as mp, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_reliability as t
t.fastdropout.set_num_threads(1)
t.fastdropout.dropout(t.np.ones(10**6, t.np.float32), 0.5, seed=1)  # serial
print(*t._run_child("fork", 2))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "ok", proc.stdout


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_worker(method: str) -> None:
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    _use_openmp_pool(2)
    status, info = _run_child(method, 2)
    assert status == "ok", (status, info)


# --------------------------------------------------------------------------
# Absurd sizes and thread counts: a Python exception, never an abort
# --------------------------------------------------------------------------


def _absurd(case: str) -> Any:
    bt = np.broadcast_to
    huge = bt(np.float32(1), (2**40,))  # zero strides: 4 TiB as an array
    huge16 = bt(np.float16(1), (2**20, 2**10, 2**10))
    empty_wide = np.empty((0, 2**56), np.float16)  # no elements, a 2**56-element mask
    fd = fastdropout
    calls: dict[str, Callable[[], Any]] = {
        "dropout": lambda: fd.dropout(huge, 0.5, seed=1),
        "return_mask": lambda: fd.dropout(huge, 0.5, seed=1, return_mask=True),
        "2**46 elements": lambda: fd.dropout(bt(np.float32(1), (2**46,)), 0.5, seed=1),
        "4 EiB": lambda: fd.dropout(bt(np.float64(1), (2**29, 2**30)), 0.5, seed=1),
        "evaluation": lambda: fd.dropout(huge, 0.5, training=False),
        "classic evaluation": lambda: fd.dropout(
            huge, 0.5, training=False, mode="classic"
        ),
        "broadcast_axes": lambda: fd.dropout(
            huge16, 0.5, seed=1, broadcast_axes=(1, 2)
        ),
        "backward": lambda: fd.dropout_backward(huge, p=0.5, seed=1),
        "spatial": lambda: fd.spatial_dropout(huge16, 0.5, seed=1),
        "spatial channels_last": lambda: fd.spatial_dropout(
            huge16, 0.5, seed=1, data_format="channels_last"
        ),
        "layer": lambda: fd.Dropout(0.5, seed=1)(huge),
        "spatial layer": lambda: fd.SpatialDropout(0.5, seed=1)(huge16),
        "empty x, huge mask": lambda: fd.dropout(
            empty_wide, 0.5, seed=1, broadcast_axes=0
        ),
        "empty x, huge mask, backward": lambda: fd.dropout_backward(
            empty_wide, p=0.5, seed=1, broadcast_axes=0
        ),
    }
    return calls[case]


ABSURD = [
    "dropout",
    "return_mask",
    "2**46 elements",
    "4 EiB",
    "evaluation",
    "classic evaluation",
    "broadcast_axes",
    "backward",
    "spatial",
    "spatial channels_last",
    "layer",
    "spatial layer",
    "empty x, huge mask",
    "empty x, huge mask, backward",
]


@pytest.mark.parametrize("case", ABSURD)
def test_absurd_sizes_raise(case: str) -> None:
    try:
        overcommit = Path("/proc/sys/vm/overcommit_memory").read_text().strip()
    except OSError:
        overcommit = "0"
    if overcommit == "1":
        pytest.skip(
            "vm.overcommit_memory=1: huge allocations succeed and fail "
            "later, when touched"
        )
    with pytest.raises((MemoryError, ValueError)):
        _absurd(case)()


@pytest.mark.skipif(UNDER_ASAN, reason="ASan needs an unlimited address space")
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses /proc and rlimits"
)
def test_absurd_thread_count_does_not_kill_the_interpreter() -> None:
    """set_num_threads(1024) on a small machine, in a process whose address space
    is limited (ulimit -v, as on many clusters) to 1 GiB more than it uses: the
    1024 thread stacks do not fit. GNU libgomp exits the process when it cannot
    create a thread ("libgomp: Thread creation failed"), so the core must not ask
    it for absurd teams (e.g. cap the team at a few times the CPU count); the
    call then computes the right result, or raises a Python exception. Runs in a
    subprocess, so a failure cannot take the test run down, and the limit keeps
    the failure inside it (the same bug without a limit, asking for 32768 threads
    on a 2**31-element array, exhausts the machine's process ids)."""
    n_threads = 1024
    n = n_threads * (1 << 16)  # the core gives each thread >= 65536 elements
    code = f"""
import resource
import numpy as np, fastdropout
from fastdropout import reference
x = np.zeros({n}, np.float16)
x[-3:] = 1
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
try:
    fastdropout.set_num_threads({n_threads})
    fastdropout.dropout(x, 0.5, seed=1, out=x)
except (MemoryError, RuntimeError, ValueError) as e:
    print("raised", type(e).__name__)
else:
    idx = np.array([0, {n} - 3, {n} - 2, {n} - 1])
    want = np.where(reference.keep(1, 0, idx, 0.5), np.float16(2), np.float16(0))
    want[0] = 0
    print("ok" if np.array_equal(x[idx], want) else "mismatch")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (
        f"the interpreter died (exit status {proc.returncode}): {proc.stderr.strip()}"
    )
    assert proc.stdout.split()[0] in ("ok", "raised"), proc.stdout
