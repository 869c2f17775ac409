"""Streaming (non-temporal) stores for large outputs give the same bits.

The core writes outputs of at least ``_core._stream_threshold()`` bytes with
streaming stores, after an element-by-element head up to the first 64-byte aligned
element of the output (README "Performance", streaming stores). These tests set the
threshold to 0 so that small arrays take that path, and hold every operation to
``fastdropout.reference`` bit for bit: every SIMD level, dtype and thread count,
outputs starting at every element offset within a cache line, stream offsets that
are not multiples of 4 or 64, in place, and the spatial layouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import (
    HAVE_CORE,
    NO_CORE_REASON,
    assert_same,
    core,
    fastdropout,
    make_input,
    reference,
)

pytestmark = pytest.mark.skipif(not HAVE_CORE, reason=NO_CORE_REASON)

P = 0.3
SEED = 0x1234_5678_9ABC_DEF0


@pytest.fixture
def streaming() -> Iterator[None]:
    """Every output written with streaming stores, then the default restored."""
    before = core._stream_threshold()
    core._set_stream_threshold(0)
    try:
        yield
    finally:
        core._set_stream_threshold(None)
    assert core._stream_threshold() == before


@pytest.fixture(params=[False, True], ids=["hw-prefetch", "sw-prefetch"])
def paired_prefetch(request: pytest.FixtureRequest) -> Iterator[None]:
    """dropout_add's streaming loop with and without software prefetching of its two
    inputs (which only runs more than 4 KiB before a chunk's end), then the default
    restored."""
    before = core._prefetch_paired_streams()
    core._set_prefetch_paired_streams(request.param)
    try:
        yield
    finally:
        core._set_prefetch_paired_streams(None)
    assert core._prefetch_paired_streams() == before


def test_prefetch_default_follows_the_vendor() -> None:
    # dropout_add's streaming loop leaves prefetching to the hardware on AMD CPUs only
    # (README "Performance"); forcing it either way and back restores the default.
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "vendor_id" in cpuinfo.read_text():
        amd = "AuthenticAMD" in cpuinfo.read_text()
        assert core._prefetch_paired_streams() is (not amd)
    default = core._prefetch_paired_streams()
    for forced in (True, False):
        core._set_prefetch_paired_streams(forced)
        assert core._prefetch_paired_streams() is forced
    core._set_prefetch_paired_streams(None)
    assert core._prefetch_paired_streams() is default


def shifted(a: np.ndarray, k: int) -> np.ndarray:
    """A copy of ``a`` whose data start ``k`` elements after a 64-byte boundary."""
    item = a.dtype.itemsize
    buf = np.zeros(a.nbytes + 128 + k * item, np.uint8)
    start = (-buf.ctypes.data) % 64 + k * item
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_threshold_controls() -> None:
    default = core._stream_threshold()
    llc = core._last_level_cache()
    assert llc >= 0
    assert default == (llc // 4 if llc else 32 << 20)
    core._set_stream_threshold(12345)
    try:
        assert core._stream_threshold() == 12345
    finally:
        core._set_stream_threshold(None)
    assert core._stream_threshold() == default


def _sysfs_cache_bytes() -> int:
    sizes = []
    for path in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")):
        text = path.read_text().strip()
        if text.endswith("K") and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * 1024)
    return max(sizes, default=0)


@pytest.mark.skipif(_sysfs_cache_bytes() == 0, reason="no cache sizes in sysfs")
def test_last_level_cache_is_the_kernels_view() -> None:
    # sysfs, not glibc's sysconf, which can count a whole package's L3 slices (320 MiB
    # on an EPYC guest whose cores reach 32 MiB): the largest cache sysfs lists for cpu0.
    assert core._last_level_cache() == _sysfs_cache_bytes()


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 3 * 4096 + 17])
@pytest.mark.parametrize("head", [0, 1, 3, 7])
@pytest.mark.parametrize("offset", [0, 3, 64 + 1, 2**64 - 5])
def test_forward_and_apply(simd: str, dtype: Any, n: int, head: int, offset: int) -> None:
    del simd
    x = shifted(make_input((n,), dtype, seed=n), head)
    y = shifted(np.zeros(n, dtype), (head * 5) % 8)
    want, want_mask = reference.dropout(x, P, seed=SEED, offset=offset, return_mask=True)
    got, mask = fastdropout.dropout(x, P, seed=SEED, offset=offset, out=y,
                                    return_mask=True)
    assert got is y
    assert_same(got, want, "forward")
    np.testing.assert_array_equal(mask.bits, want_mask.bits)
    assert_same(fastdropout.dropout(x, P, seed=SEED, offset=offset), want, "forward, no mask")
    g = shifted(make_input((n,), dtype, seed=n + 1), head)
    out = shifted(np.zeros(n, dtype), 3)
    assert_same(fastdropout.dropout_backward(g, mask, out=out),
                reference.dropout_backward(g, want_mask), "backward from mask")
    assert_same(fastdropout.dropout_backward(g, p=P, seed=SEED, offset=offset),
                reference.dropout_backward(g, p=P, seed=SEED, offset=offset),
                "backward regenerated")


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("head", [0, 5])
def test_threads_and_in_place(nthreads: int, dtype: Any, head: int) -> None:
    del nthreads
    n = 2 * 65536 * 3 + 77  # several threads' chunks, odd tail
    x = shifted(make_input((n,), dtype, seed=7), head)
    want, want_mask = reference.dropout(x, P, seed=SEED, offset=9, return_mask=True)
    y, mask = fastdropout.dropout(x, P, seed=SEED, offset=9, return_mask=True)
    assert_same(y, want)
    np.testing.assert_array_equal(mask.bits, want_mask.bits)
    fastdropout.dropout(x, P, seed=SEED, offset=9, out=x)  # in place
    assert_same(x, want, "in place")


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (4, 16, 16, 32), (2, 64, 64, 3)])
def test_spatial(simd: str, dtype: Any, data_format: str, shape: tuple[int, ...]) -> None:
    del simd
    x = shifted(make_input(shape, dtype, seed=3), 1)
    want, want_mask = reference.spatial_dropout(x, P, data_format=data_format, seed=SEED,
                                                return_mask=True)
    got, mask = fastdropout.spatial_dropout(x, P, data_format=data_format, seed=SEED,
                                            return_mask=True)
    assert_same(got, want, "spatial forward")
    np.testing.assert_array_equal(mask.bits, want_mask.bits)
    out = shifted(np.zeros(shape, dtype), 2)
    assert_same(fastdropout.dropout_backward(x, mask, out=out),
                reference.dropout_backward(x, want_mask), "spatial backward")


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("head", [0, 3])
@pytest.mark.parametrize(("shape", "data_format"), [
    ((6, 37, 11, 13), "channels_first"),   # 143-element maps: kept runs and zero fills
    ((5, 7, 64, 64), "channels_first"),    # 4096-element maps, whole lines
    ((4, 29, 31, 5), "channels_last"),     # tiled channel patterns
])
def test_spatial_runs_across_threads(nthreads: int, dtype: Any, head: int,
                                     shape: tuple[int, ...], data_format: str) -> None:
    """Spatial outputs stream one run at a time (kept maps through the apply kernel,
    dropped ones as zero fills) and fence once per thread: every element is written,
    at every output alignment and thread count, in place too."""
    del nthreads
    x = make_input(shape, dtype, seed=11)
    want = reference.spatial_dropout(x, P, data_format=data_format, seed=SEED, offset=2)
    out = shifted(np.full(shape, np.nan, dtype), head)
    fastdropout.spatial_dropout(x, P, data_format=data_format, seed=SEED, offset=2, out=out)
    assert_same(out, want, "spatial forward, out=")
    inplace = shifted(x, head)
    fastdropout.spatial_dropout(inplace, P, data_format=data_format, seed=SEED, offset=2,
                                out=inplace)
    assert_same(inplace, want, "spatial forward, in place")


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("nbytes", [0, 1, 63, 64, 65, 4 * 4096 + 13, 3 * 65536 + 7])
@pytest.mark.parametrize("head", [0, 1, 17, 63])
def test_benchmark_baselines_move_every_byte(nbytes: int, head: int, nthreads: int) -> None:
    # The copy and read-two-write-one baselines stream too past the threshold; they
    # must still move every byte (a streamed body between a head and a tail).
    rng = np.random.default_rng(nbytes + head)
    a = rng.integers(0, 256, nbytes, dtype=np.uint8)
    b = rng.integers(0, 256, nbytes, dtype=np.uint8)
    buf = np.zeros(nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + head
    dst = buf[start:start + nbytes]
    del nthreads  # set by the fixture
    core._stream_copy(a, dst)
    np.testing.assert_array_equal(dst, a)
    core._stream2(a, b, dst)
    np.testing.assert_array_equal(dst, a ^ b)
    assert not buf[:start].any()
    assert not buf[start + nbytes:].any()


FUSED_DTYPES: list[Any] = [np.float16, np.float32, np.float64]
try:
    import ml_dtypes

    FUSED_DTYPES.append(ml_dtypes.bfloat16)
except ImportError:  # bfloat16 is optional
    pass


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("dt", FUSED_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 63), (3, 64), (5, 100), (40, 7)])
@pytest.mark.parametrize("head", [0, 1, 7])
@pytest.mark.parametrize("offset", [0, 3, 64 + 1, 2**64 - 5])
def test_fused_forward(simd: str, dt: Any, rows: int, cols: int, head: int,
                       offset: int) -> None:
    # dropout_add (with and without a bias, whose column is followed across the head,
    # the streamed groups and the tail) and alpha_dropout with streaming stores.
    del simd
    shape = (rows, cols)
    src = np.float32 if dt not in (np.float16, np.float64) else dt
    x = shifted(make_input(shape, src, seed=rows).astype(dt), head)
    r = shifted(make_input(shape, src, seed=cols).astype(dt), (head * 3) % 8)
    b = make_input((cols,), src, seed=5).astype(dt)
    kw: dict[str, Any] = {"seed": SEED, "offset": offset}
    for bias in (None, b):
        want, want_mask = reference.dropout_add(x, r, P, bias=bias, return_mask=True, **kw)
        out = shifted(np.zeros(shape, dt), (head * 5) % 8)
        got, mask = fastdropout.dropout_add(x, r, P, bias=bias, out=out, return_mask=True,
                                            **kw)
        assert_same(got, want, f"dropout_add, bias {bias is not None}")
        assert mask == want_mask
        assert_same(fastdropout.dropout_add(x, r, P, bias=bias, **kw), want, "no mask")
    want, want_mask = reference.alpha_dropout(x, P, return_mask=True, **kw)
    got, mask = fastdropout.alpha_dropout(x, P, return_mask=True, **kw)
    assert_same(got, want, "alpha_dropout")
    assert mask == want_mask
    out = shifted(np.zeros(shape, dt), 3)
    assert_same(fastdropout.alpha_dropout(x, P, out=out, **kw), want, "alpha, out=")


@pytest.mark.usefixtures("streaming", "paired_prefetch")
def test_fused_forward_threads(nthreads: int) -> None:
    del nthreads
    shape = (3 * 65536 + 77) // 129, 129
    x = shifted(make_input(shape, np.float32, seed=1), 5)
    r = make_input(shape, np.float32, seed=2)
    b = make_input((129,), np.float32, seed=3)
    want = reference.dropout_add(x, r, P, bias=b, seed=SEED, offset=11)
    assert_same(fastdropout.dropout_add(x, r, P, bias=b, seed=SEED, offset=11), want)
    want = reference.alpha_dropout(x, P, seed=SEED, offset=11)
    assert_same(fastdropout.alpha_dropout(x, P, seed=SEED, offset=11), want)
