"""fastdropout.torch's fast paths: the cache of freed output buffers (same
bits, no aliasing between live outputs, bounded, emptied on request) and eager
calls that skip the dispatcher (same bits; the operator whenever a mode,
transform, profiler or autograd could see the call; version counters bumped)."""

from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _util import HAVE_CORE, NO_CORE_REASON, fastdropout

torch = pytest.importorskip("torch")

if not HAVE_CORE:  # pragma: no cover - depends on the build
    pytest.skip(NO_CORE_REASON, allow_module_level=True)

import fastdropout.torch as ft
from fastdropout.torch import _add_ops, _cache, _ops
from fastdropout.torch._convert import as_numpy, rng_tensor
from torch.utils._python_dispatch import TorchDispatchMode

fd: Any = fastdropout
BIG = (1 << 19) + 7  # float16 (and wider): over MIN_BYTES, so cached
INT_OF = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: Any) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).view(f"u{t.dtype.itemsize}").reshape(-1)
    t = t.detach().contiguous()
    size = t.element_size()
    return t.view(INT_OF[size]).numpy().view(f"u{size}").reshape(-1)


def span(t: Any) -> tuple[int, int]:
    st = t.untyped_storage()
    return st.data_ptr(), st.data_ptr() + st.nbytes()


def owner(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


@pytest.fixture
def cache() -> Iterator[None]:
    """The global cache, empty and at its default limit before and after (the
    garbage of earlier tests collected first, so that none of it comes back
    during the test)."""
    gc.collect()
    ft.empty_cache()
    limit = _cache.CACHE.limit
    ft.set_cache_limit(_cache.DEFAULT_LIMIT)
    yield
    ft.set_cache_limit(limit)
    ft.empty_cache()


# ---- the cache --------------------------------------------------------------------


@pytest.mark.usefixtures("cache")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_reused_buffers_give_the_numpy_bits(dtype: Any):
    x = torch.randn(BIG, dtype=torch.float64).to(dtype)
    ref = fd.dropout(x.numpy(), 0.3, seed=5, offset=2**64 - 9)
    for _ in range(3):  # the first call allocates, the others reuse its block
        y = ft.dropout(x, 0.3, seed=5, offset=2**64 - 9)
        np.testing.assert_array_equal(bits(y), bits(ref))
        del y
    info = ft.cache_info()
    assert info["hits"] >= 2
    assert info["free_blocks"] == 1


@pytest.mark.usefixtures("cache")
def test_backward_and_bfloat16_reuse_buffers():
    pytest.importorskip("ml_dtypes")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(BIG).to(dtype).requires_grad_()
        g = torch.randn(BIG).to(dtype)
        want = fd.dropout_backward(as_numpy(g), p=0.2, seed=3)
        for _ in range(3):
            y = ft.dropout(x, 0.2, seed=3)
            np.testing.assert_array_equal(
                bits(y), bits(fd.dropout(as_numpy(x.detach()), 0.2, seed=3))
            )
            (gx,) = torch.autograd.grad(y, x, g)
            np.testing.assert_array_equal(bits(gx), bits(want))
            del y, gx
    assert ft.cache_info()["hits"] >= 4


@pytest.mark.usefixtures("cache")
def test_live_outputs_never_share_memory():
    x = torch.randn(BIG)
    ys = [ft.dropout(x, 0.5, seed=s) for s in range(4)]
    spans = sorted(span(y) for y in ys)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start
    for s, y in enumerate(ys):  # each kept its own values
        np.testing.assert_array_equal(bits(y), bits(fd.dropout(x.numpy(), 0.5, seed=s)))


@pytest.mark.usefixtures("cache")
def test_a_freed_block_is_reused_and_aligned():
    x = torch.randn(BIG)
    y = ft.dropout(x, 0.5, seed=1)
    ptr = y.data_ptr()
    assert ptr % 64 == 0
    del y
    z = ft.dropout(x, 0.5, seed=2)
    assert z.data_ptr() == ptr  # the same block
    np.testing.assert_array_equal(bits(z), bits(fd.dropout(x.numpy(), 0.5, seed=2)))


@pytest.mark.usefixtures("cache")
@pytest.mark.parametrize("keep", ["view", "numpy", "storage"])
def test_anything_holding_the_memory_keeps_the_block(keep: str):
    x = torch.randn(BIG)
    y = ft.dropout(x, 0.5, seed=1)
    want = bits(y).copy()
    holder: Any
    if keep == "view":
        holder = y[5:]
    elif keep == "numpy":
        holder = y.numpy()
    else:
        holder = y.untyped_storage()
    lo, hi = span(y)
    del y
    gc.collect()
    assert ft.cache_info()["free_blocks"] == 0
    z = ft.dropout(x, 0.5, seed=2)
    assert span(z)[1] <= lo or span(z)[0] >= hi
    del z
    if keep == "view":
        np.testing.assert_array_equal(bits(holder), want[5:])
    elif keep == "numpy":
        np.testing.assert_array_equal(bits(holder), want)
    del holder
    gc.collect()
    assert ft.cache_info()["free_blocks"] == 2


@pytest.mark.usefixtures("cache")
def test_a_cycle_collected_by_gc_returns_its_block():
    x = torch.randn(BIG)
    box: list[Any] = [ft.dropout(x, 0.5, seed=1)]
    box.append(box)  # a reference cycle: only the collector frees it
    del box
    assert ft.cache_info()["free_blocks"] == 0
    gc.collect()
    assert ft.cache_info()["free_blocks"] == 1


def test_the_cache_is_bounded_and_drops_the_oldest_first():
    c = _cache.BufferCache(limit=3 * (2 << 20))
    dt = np.dtype(np.float32)
    arrays = [c.empty_array((1 << 19,), dt) for _ in range(5)]  # 2 MiB each
    blocks = [owner(a) for a in arrays]
    assert all(isinstance(b, np.ndarray) and b.dtype == np.uint8 for b in blocks)
    size = blocks[0].nbytes
    assert size % _cache.GRANULE == 0
    assert size >= (2 << 20) + 64
    limit = 3 * (2 << 20)
    while arrays:  # freed oldest first
        arrays.pop(0)
    info = c.info()
    assert info["live_blocks"] == 0
    assert info["free_bytes"] <= limit
    assert info["free_blocks"] == limit // size
    # the newest ones were kept: the next request gets the last block freed
    kept = [b.ctypes.data for b in blocks[-info["free_blocks"] :]]
    a = c.empty_array((1 << 19,), dt)
    assert owner(a).ctypes.data == kept[-1]
    del a
    c.set_limit(size)  # trimmed at once
    assert c.info()["free_bytes"] <= size
    c.empty()
    assert c.info()["free_bytes"] == 0
    assert c.info()["free_blocks"] == 0


@pytest.mark.usefixtures("cache")
def test_small_and_uncached_requests_use_numpy():
    c = _cache.BufferCache()
    a = c.empty_array((100,), np.dtype(np.float32))
    assert a.flags.owndata
    assert c.info()["misses"] == 0
    c.set_limit(0)
    b = c.empty_array((1 << 20,), np.dtype(np.float32))
    assert b.flags.owndata
    del b
    assert c.info()["free_blocks"] == 0


@pytest.mark.usefixtures("cache")
def test_cache_off_and_emptied():
    x = torch.randn(BIG)
    ft.set_cache_limit(0)
    y = ft.dropout(x, 0.5, seed=1)
    np.testing.assert_array_equal(bits(y), bits(fd.dropout(x.numpy(), 0.5, seed=1)))
    del y
    assert ft.cache_info()["free_blocks"] == 0
    ft.set_cache_limit(1 << 30)
    del x
    ys = [ft.dropout(torch.randn(BIG), 0.5, seed=1) for _ in range(3)]
    del ys
    assert ft.cache_info()["free_blocks"] == 3
    ft.empty_cache()
    assert ft.cache_info() == {**ft.cache_info(), "free_bytes": 0, "free_blocks": 0}


@pytest.mark.usefixtures("cache")
def test_blocks_freed_in_other_threads():
    x = torch.randn(BIG)
    ys = [ft.dropout(x, 0.5, seed=s) for s in range(6)]
    threads = [threading.Thread(target=ys.pop) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = ft.cache_info()
    assert info["free_blocks"] == 6
    assert info["live_blocks"] == 0


def test_set_cache_limit_errors():
    with pytest.raises(ValueError, match=">= 0"):
        ft.set_cache_limit(-1)
    for bad in (True, 1.5, "1"):
        with pytest.raises(TypeError, match="must be an int"):
            ft.set_cache_limit(bad)  # type: ignore[arg-type]


# ---- eager calls without the dispatcher ---------------------------------------------


class _Seen(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["inverted", "classic", "alpha"])
def test_direct_call_equals_the_operator(dtype: Any, mode: str):
    x = torch.randn(3, 37, dtype=torch.float64).to(dtype)
    rng = rng_tensor(7, 2**64 - 40)
    assert _ops.plain_eager(x)
    for training in (True, False):
        for axes in ([], [0]):
            args = (x, rng, 0.25, mode, axes, training, True)
            a, abits = _ops.run_forward(*args)
            b, bbits = _ops.forward(*args)
            np.testing.assert_array_equal(bits(a), bits(b))
            np.testing.assert_array_equal(abits.numpy(), bbits.numpy())
    g = torch.randn(3, 37).to(dtype)
    _, stored = _ops.forward(x, rng, 0.25, mode, [], True, True)
    for saved, regen in ((stored, False), (rng, True)):
        a = _ops.run_backward(g, saved, 0.25, mode, [], regen)
        b = _ops.backward(g, saved, 0.25, mode, [], regen)
        np.testing.assert_array_equal(bits(a), bits(b))
    xa, xb = x.clone(), x.clone()
    _ops.run_forward_(xa, rng, 0.25, mode, [1])
    _ops.forward_(xb, rng, 0.25, mode, [1])
    np.testing.assert_array_equal(bits(xa), bits(xb))


def test_modes_and_profiler_see_the_operator():
    x = torch.randn(4, 5)
    with _Seen() as seen:
        assert not _ops.plain_eager(x)
        ft.dropout(x, 0.5, seed=1)
        ft.dropout(x, 0.5, seed=1, inplace=True)
        ft.Dropout(0.5, seed=1)(x)
    assert "fastdropout.forward.default" in seen.ops
    assert "fastdropout.forward_.default" in seen.ops
    assert "fastdropout.advance_.default" in seen.ops
    with torch.profiler.profile() as prof:
        assert not _ops.plain_eager(x)
        ft.dropout(x, 0.5, seed=1)
    assert any("fastdropout::forward" in e.name for e in prof.events())
    with torch.device("cpu"):  # a function mode
        assert not _ops.plain_eager(x)
    traced: list[bool] = []

    def f(t: Any) -> Any:
        traced.append(_ops.plain_eager(t))
        return ft.dropout(t, 0.5, seed=1, mask="regenerate")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seed tensor becomes a constant
        graph = torch.jit.trace(f, x, check_trace=False).graph
    assert traced == [False]
    assert "fastdropout::forward" in str(graph)
    xg = x.clone().requires_grad_()
    assert not _ops.plain_eager(xg)
    with torch.no_grad():
        assert _ops.plain_eager(xg)
    assert _ops.plain_eager(x)


def test_direct_in_place_bumps_the_version_counter():
    w = torch.randn(5, requires_grad=True)
    x = torch.randn(4, 5)
    loss = (x * w).sum()  # saves x for w's gradient
    v = x._version
    ft.dropout(x, 0.5, seed=1, inplace=True)
    assert x._version > v
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    m = ft.Dropout(0.5, seed=1)
    v = m._rng._version
    m(x)
    assert m._rng._version > v


def test_direct_calls_in_inference_mode():
    x = torch.randn(64)
    want = fd.dropout(x.numpy(), 0.5, seed=1)
    with torch.inference_mode():
        y = ft.dropout(x, 0.5, seed=1)
        xi = torch.randn(64)
        xi.copy_(x)
        ft.dropout(xi, 0.5, seed=1, inplace=True)
    np.testing.assert_array_equal(bits(y), bits(want))
    np.testing.assert_array_equal(bits(xi), bits(want))


def test_tracked_eager_calls_record_the_functions():
    x = torch.randn(3, 40, requires_grad=True)
    g = torch.randn(3, 40)
    y = ft.dropout(x, 0.3, seed=4, mask="regenerate")
    assert type(y.grad_fn).__name__ == "ForwardBackward"
    (gx,) = torch.autograd.grad(y, x, g)
    want = fd.dropout_backward(g.numpy(), p=0.3, seed=4)
    np.testing.assert_array_equal(bits(gx), bits(want))
    r = torch.randn(3, 40, requires_grad=True)
    z = ft.dropout_add(x, r, 0.3, seed=4)
    assert type(z.grad_fn).__name__ == "DropoutAddBackward"
    gx, gr = torch.autograd.grad(z, (x, r), g)
    np.testing.assert_array_equal(bits(gx), bits(want))
    np.testing.assert_array_equal(bits(gr), bits(g))


def test_a_forked_child_gets_a_new_lock():
    c = _cache.BufferCache()
    c._lock.acquire()  # as if another thread held it at a fork
    c._after_fork()
    a = c.empty_array((1 << 19,), np.dtype(np.float32))  # would block on the old lock
    del a
    assert c.info()["free_blocks"] == 1


@pytest.mark.parametrize("mode", ["inverted", "classic"])
def test_direct_dropout_add_equals_the_operator(mode: str):
    x, r = torch.randn(4, 33), torch.randn(4, 33)
    bias = torch.randn(33)
    rng = rng_tensor(9, 2**64 - 50)
    for b in (None, bias):
        for training in (True, False):
            args = (x, r, b, rng, 0.4, mode, [], training, True)
            a, abits = _add_ops.run_dropout_add(*args)
            c, cbits = _add_ops.dropout_add(*args)
            np.testing.assert_array_equal(bits(a), bits(c))
            np.testing.assert_array_equal(abits.numpy(), cbits.numpy())
    g = torch.randn(4, 33)
    _, stored = _add_ops.dropout_add(x, r, bias, rng, 0.4, mode, [], True, True)
    for saved, regen in ((stored, False), (rng, True)):
        da = _add_ops.run_dropout_add_bias_grad(g, saved, 0.4, mode, [], regen, 1)
        dc = _add_ops.dropout_add_bias_grad(g, saved, 0.4, mode, [], regen, 1)
        for u, v in zip(da, dc):
            np.testing.assert_array_equal(bits(u), bits(v))
    with _Seen() as seen:
        ft.dropout_add(x, r, 0.4, bias=bias, seed=1)
    assert "fastdropout.dropout_add.default" in seen.ops
