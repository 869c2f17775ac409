"""fastdropout.dask on a real cluster: 2 worker processes (distributed.LocalCluster).

For random chunkings the lazy result equals the in-memory ``fastdropout`` result bit
for bit, forward and backward, dense and spatial; a worker killed while a graph runs
changes nothing; dropout of a zarr array on disk is streamed block by block and
spot-checked against the reference (a 32 GiB version is marked slow).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import HAVE_CORE, NO_CORE_REASON, TWO_64, assert_same, make_input, reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
flatten = pytest.importorskip("dask.core").flatten
if not HAVE_CORE:  # pragma: no cover - depends on the build
    pytest.skip(NO_CORE_REASON, allow_module_level=True)

import fastdropout as fd
import fastdropout.dask as fdd

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One 2-process cluster for the whole module (starting one takes seconds)."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port (8787 may be taken)
        silence_logs=logging.ERROR,
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def compute(client: Any, y: Any) -> np.ndarray:
    result = client.compute(y, sync=True)
    assert isinstance(result, np.ndarray)
    return result


@st.composite
def chunking(draw: Any, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """A random partition of every axis: size-1 chunks, uneven chunks, one chunk."""
    chunks = []
    for n in shape:
        parts: list[int] = []
        left = n
        while left > 0:
            c = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 64, 100, left]))
            c = min(c, left)
            parts.append(c)
            left -= c
        chunks.append(tuple(parts) or (0,))
    return tuple(chunks)


@st.composite
def dense_cases(draw: Any) -> tuple[Any, ...]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(
        draw(st.integers(1, 130 if k == ndim - 1 else 9)) for k in range(ndim)
    )
    axes = tuple(a for a in range(ndim) if ndim > 1 and draw(st.booleans()))
    return shape, draw(chunking(shape)), axes or None


@SETTINGS
@given(
    case=dense_cases(),
    seed=st.integers(0, TWO_64 - 1),
    offset=st.one_of(st.integers(0, 100), st.integers(TWO_64 - 100, TWO_64 - 1)),
    dt=st.sampled_from([np.float16, np.float32, np.float64]),
)
def test_dense_any_chunking(
    client: Any, case: Any, seed: int, offset: int, dt: Any
) -> None:
    shape, chunks, axes = case
    x = make_input(shape, dt, seed=1)
    g = make_input(shape, dt, seed=2)
    xd = da.from_array(x, chunks=chunks)
    gd = da.from_array(g, chunks=chunks)
    kw: dict[str, Any] = {"seed": seed, "offset": offset, "broadcast_axes": axes}
    y, lazy = fdd.dropout(xd, 0.4, return_mask=True, **kw)
    expect, mask = fd.dropout(x, 0.4, return_mask=True, **kw)
    assert_same(compute(client, y), expect, "forward")
    assert lazy.shape == mask.shape
    assert (lazy.seed, lazy.offset, lazy.p, lazy.broadcast_axes) == (
        mask.seed,
        mask.offset,
        mask.p,
        mask.broadcast_axes,
    )
    grad = fd.dropout_backward(g, mask)
    assert_same(compute(client, fdd.dropout_backward(gd, lazy)), grad, "backward")
    regen = fdd.dropout_backward(gd, p=0.4, **kw)
    assert_same(compute(client, regen), grad, "backward regenerated")


@st.composite
def spatial_cases(draw: Any) -> tuple[Any, ...]:
    ndim = draw(st.integers(3, 5))
    shape = tuple(draw(st.integers(1, 7 if k < 2 else 6)) for k in range(ndim))
    return shape, draw(chunking(shape))


@SETTINGS
@given(
    case=spatial_cases(),
    fmt=st.sampled_from(["channels_first", "channels_last"]),
    seed=st.integers(0, TWO_64 - 1),
    mode=st.sampled_from(["inverted", "classic"]),
)
def test_spatial_any_chunking(
    client: Any, case: Any, fmt: str, seed: int, mode: str
) -> None:
    shape, chunks = case
    x = make_input(shape, np.float32, seed=3)
    g = make_input(shape, np.float32, seed=4)
    kw: dict[str, Any] = {"seed": seed, "offset": 7, "data_format": fmt, "mode": mode}
    y, lazy = fdd.spatial_dropout(
        da.from_array(x, chunks=chunks), 0.5, **kw, return_mask=True
    )
    expect, mask = fd.spatial_dropout(x, 0.5, return_mask=True, **kw)
    assert_same(compute(client, y), expect, "forward")
    gd = da.from_array(g, chunks=chunks)
    assert_same(
        compute(client, fdd.dropout_backward(gd, lazy)),
        fd.dropout_backward(g, mask),
        "backward",
    )


def test_seed_resolved_once_on_the_client(client: Any) -> None:
    """seed=None or a Generator is drawn once: recomputing the same lazy array (new
    tasks, any worker) gives the same bits, and the LazyMask records the seed."""
    x = make_input((50, 70), np.float32)
    xd = da.from_array(x, chunks=(7, 9))
    y, lazy = fdd.dropout(xd, 0.5, return_mask=True)
    first = compute(client, y)
    client.cancel(y)
    assert_same(compute(client, y), first)
    assert_same(first, fd.dropout(x, 0.5, seed=lazy.seed))
    y2, lazy2 = fdd.dropout(xd, 0.5, seed=np.random.default_rng(3), return_mask=True)
    assert lazy2.seed == int(np.random.default_rng(3).integers(TWO_64, dtype=np.uint64))
    assert_same(compute(client, y2), fd.dropout(x, 0.5, seed=lazy2.seed))


def test_dispatch_from_the_numpy_api(client: Any) -> None:
    x = make_input((40, 30), np.float64)
    xd = da.from_array(x, chunks=(9, 7))
    y = fd.dropout(xd, 0.3, seed=5)
    assert isinstance(y, da.Array)  # lazy, not computed
    assert_same(compute(client, y), fd.dropout(x, 0.3, seed=5))
    y, m = fd.dropout(xd, 0.3, seed=5, return_mask=True)
    assert isinstance(m, fdd.LazyMask)
    gd = da.from_array(x, chunks=(11, 4))
    assert_same(
        compute(client, fd.dropout_backward(gd, m)),
        fd.dropout_backward(x, p=0.3, seed=5),
    )
    x4 = make_input((3, 4, 5, 6), np.float32)
    s = fd.spatial_dropout(da.from_array(x4, chunks=2), 0.3, seed=5)
    assert isinstance(s, da.Array)
    assert_same(compute(client, s), fd.spatial_dropout(x4, 0.3, seed=5))
    ev = fd.dropout(xd, 0.3, training=False, mode="classic")
    assert_same(compute(client, ev), fd.dropout(x, 0.3, training=False, mode="classic"))


def test_errors() -> None:
    x = da.from_array(np.ones((10, 10), np.float32), chunks=3)
    unknown = x[x[:, 0] > 0]
    with pytest.raises(ValueError, match="unknown size"):
        fdd.dropout(unknown, 0.5, seed=1)
    with pytest.raises(ValueError, match="unknown size"):
        fd.dropout(unknown, 0.5, seed=1)
    with pytest.raises(ValueError, match="unknown size"):
        fdd.dropout_backward(unknown, p=0.5, seed=1)
    with pytest.raises(TypeError, match="out="):
        fd.dropout(x, 0.5, out=np.ones((10, 10), np.float32))
    with pytest.raises(ValueError, match="window"):
        fd.dropout(x, 0.5, window=((10, 10), (0, 0)))
    with pytest.raises(ValueError, match="p must be"):
        fdd.dropout(x, 1.5)
    with pytest.raises(TypeError, match="dtype int64"):
        fdd.dropout(da.ones(4, dtype=np.int64), 0.5)
    with pytest.raises(TypeError, match=r"dask\.array\.Array"):
        fdd.dropout(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="rank"):
        fdd.spatial_dropout(x, 0.5)
    with pytest.raises(ValueError, match="seed missing"):
        fdd.dropout_backward(x, p=0.5)
    with pytest.raises(TypeError, match="Generator"):
        fdd.dropout_backward(x, p=0.5, seed=np.random.default_rng(0))
    _, m = fd.dropout(np.ones((10, 10), np.float32), 0.5, seed=1, return_mask=True)
    with pytest.raises(TypeError, match="LazyMask"):
        fdd.dropout_backward(x, m)
    _, lazy = fdd.dropout(x, 0.5, seed=1, return_mask=True)
    with pytest.raises(ValueError, match="not both"):
        fdd.dropout_backward(x, lazy, p=0.5)
    with pytest.raises(ValueError, match="does not fit"):
        fdd.dropout_backward(x[:5], lazy)
    with pytest.raises(ValueError, match="mode"):
        fdd.dropout_backward(x, lazy, mode="classic")


def test_same_call_same_keys_different_seed_different_keys() -> None:
    x = da.ones((8, 8), chunks=4, dtype=np.float32)
    assert fdd.dropout(x, 0.5, seed=1).name == fdd.dropout(x, 0.5, seed=1).name
    assert fdd.dropout(x, 0.5, seed=1).name != fdd.dropout(x, 0.5, seed=2).name
    assert (
        fdd.dropout(x, 0.5, seed=1).name != fdd.dropout(x, 0.5, seed=1, offset=1).name
    )


def _slow_copy(block: np.ndarray) -> np.ndarray:
    time.sleep(0.05)
    return block.copy()


def test_worker_killed_mid_graph(client: Any) -> None:
    """SIGKILL a worker process holding finished dropout blocks while the graph still
    runs: the scheduler recomputes the lost blocks elsewhere, with identical bits."""
    x = make_input((64, 4096), np.float32, seed=9)
    slow = da.from_array(x, chunks=(2, 4096)).map_blocks(_slow_copy, dtype=np.float32)
    y = fdd.dropout(slow, 0.5, seed=2024, offset=11)  # 32 dropout tasks
    z = y.rechunk((64, 4096))  # one task needs every dropout block: they pile up
    future = client.compute(z)
    dropout_keys = set(flatten(y.__dask_keys__()))
    pids = client.run(os.getpid)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        held: dict[str, int] = {}
        for key, workers in client.who_has().items():
            if key in dropout_keys:
                for w in workers:
                    held[w] = held.get(w, 0) + 1
        if held and max(held.values()) >= 3 and not future.done():
            victim = max(held, key=lambda w: held[w])
        else:
            time.sleep(0.01)
    assert victim is not None, "no worker held finished dropout blocks in time"
    os.kill(pids[victim], signal.SIGKILL)
    result = future.result(timeout=120)
    assert_same(result, fd.dropout(x, 0.5, seed=2024, offset=11))
    # at least one dropout block was computed twice (once before the kill)
    scheduler = client.cluster.scheduler
    recomputed = [
        k
        for k in dropout_keys
        if sum(1 for t in scheduler.story(k) if len(t) > 2 and t[2] == "memory") >= 2
    ]
    assert recomputed


# ---- out of core: zarr on disk, streamed through the cluster --------------------------


def _row_values(i: Any) -> Any:
    return ((i * 7919) % 4099).astype(np.float32)


def _col_values(j: Any) -> Any:
    return (((j % 1021) - 510) / 8).astype(np.float32)


def input_value(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Element (i, j) of the input: a row value plus a column value (small multiples
    of 1/8, so the float32 sum is exact), cheap for the workers to write and for the
    check to recompute."""
    return _row_values(i) + _col_values(j)


def write_input(path: Path, shape: tuple[int, int], chunks: tuple[int, int]) -> Any:
    """A float32 zarr array of ``input_value``, written block by block by the workers."""
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        store=str(path), shape=shape, chunks=chunks, dtype="float32", compressors=None
    )
    rows = da.arange(shape[0], chunks=chunks[0], dtype=np.int64)[:, None]
    cols = da.arange(shape[1], chunks=chunks[1], dtype=np.int64)[None, :]
    da.store(_row_values(rows) + _col_values(cols), z, lock=False)
    return z


def stream_dropout(src: Path, dst: Path, p: float, seed: int) -> None:
    """The README's out-of-core example: lazy dropout of a zarr array into a zarr
    array; every block is read, dropped out and written by a worker, never all at
    once. ``dst`` may be ``src`` (in place: each block is read before it is
    overwritten, and blocks are the store's chunks)."""
    zarr = pytest.importorskip("zarr")
    x = da.from_zarr(str(src))
    y = fdd.dropout(x, p, seed=seed)
    if dst == src:
        target = zarr.open_array(str(dst), mode="r+")
    else:
        target = zarr.create_array(
            store=str(dst),
            shape=x.shape,
            chunks=x.chunksize,
            dtype=x.dtype,
            compressors=None,
        )
    da.store(y, target, lock=False)


def spot_check(dst: Path, shape: tuple[int, int], p: float, seed: int, n: int) -> None:
    """Sampled positions of the result against the reference, each computed as a
    one-element window of the whole array."""
    zarr = pytest.importorskip("zarr")
    out = zarr.open_array(str(dst), mode="r")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, shape[0], n)
    j = rng.integers(0, shape[1], n)
    i[:2], j[:2] = (0, shape[0] - 1), (0, shape[1] - 1)  # both corners
    got = out.get_coordinate_selection((i, j))
    x = input_value(i, j)
    for k in range(n):
        want = reference.dropout(
            x[k : k + 1, None], p, seed=seed, window=(shape, (int(i[k]), int(j[k])))
        )
        assert_same(got[k : k + 1, None], want, f"element ({i[k]}, {j[k]})")


def test_out_of_core_small(client: Any, tmp_path: Path) -> None:
    """The code path of the 32 GiB test on 16 MiB (same steps, same checks), into a
    second store and in place."""
    del client  # the default scheduler while the fixture is alive
    zarr = pytest.importorskip("zarr")
    shape, chunks = (1024, 4096), (128, 4096)
    write_input(tmp_path / "x.zarr", shape, chunks)
    x = zarr.open_array(str(tmp_path / "x.zarr"), mode="r")[...]
    expect = fd.dropout(x, 0.3, seed=42)
    stream_dropout(tmp_path / "x.zarr", tmp_path / "y.zarr", 0.3, 42)
    spot_check(tmp_path / "y.zarr", shape, 0.3, 42, 300)
    assert_same(zarr.open_array(str(tmp_path / "y.zarr"), mode="r")[...], expect)
    stream_dropout(tmp_path / "x.zarr", tmp_path / "x.zarr", 0.3, 42)
    spot_check(tmp_path / "x.zarr", shape, 0.3, 42, 300)
    assert_same(zarr.open_array(str(tmp_path / "x.zarr"), mode="r")[...], expect)


BIG_SHAPE = (131072, 65536)  # 2**33 float32 = 32 GiB
BIG_CHUNKS = (256, 65536)  # 64 MiB blocks


@pytest.mark.slow
@pytest.mark.outofcore
def test_out_of_core_32gib(client: Any, tmp_path: Path) -> None:
    """Dropout of a 32 GiB float32 zarr array (more than this machine's memory)
    streamed in place through the 2-worker cluster; spot-checked at sampled
    positions against the reference."""
    del client
    nbytes = BIG_SHAPE[0] * BIG_SHAPE[1] * 4
    free = shutil.disk_usage(tmp_path).free
    need = nbytes + (8 << 30)
    if free < need:
        pytest.skip(
            f"needs {need / 2**30:.0f} GiB free disk in {tmp_path} (the "
            f"{nbytes / 2**30:.0f} GiB array, rewritten in place, plus margin), "
            f"{free / 2**30:.0f} GiB free"
        )
    path = tmp_path / "x.zarr"
    try:
        write_input(path, BIG_SHAPE, BIG_CHUNKS)
        t0 = time.perf_counter()
        stream_dropout(path, path, 0.5, 7)
        seconds = time.perf_counter() - t0
        spot_check(path, BIG_SHAPE, 0.5, 7, 2000)
        print(f"32 GiB streamed in {seconds:.0f} s ({nbytes / seconds / 1e9:.2f} GB/s)")
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_readme_dask_example_runs(client: Any) -> None:
    from test_window import readme_blocks

    blocks = readme_blocks("### `fastdropout.dask`")
    assert len(blocks) == 1
    namespace: dict[str, Any] = {"np": np}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - README code
    y, y2, grad, mask = (namespace[k] for k in ("y", "y2", "grad", "mask"))
    assert all(isinstance(a, da.Array) for a in (y, y2, grad))
    assert_same(
        compute(client, y[990:1010, 1000:1050]),
        compute(client, y2[990:1010, 1000:1050]),
    )
    g = compute(client, grad[:3, :1030])
    assert_same(
        g,
        fd.dropout_backward(
            np.ones((3, 1030), np.float32),
            p=0.1,
            seed=mask.seed,
            window=(y.shape, (0, 0)),
        ),
    )


@SETTINGS
@given(case=dense_cases(), seed=st.integers(0, TWO_64 - 1), with_bias=st.booleans())
def test_alpha_and_add_any_chunking(
    client: Any, case: Any, seed: int, with_bias: bool
) -> None:
    shape, chunks, axes = case
    rng = np.random.default_rng(seed % 1000)
    x = rng.standard_normal(shape).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    bias = rng.standard_normal(shape[-1:]).astype(np.float32) if with_bias else None
    xd = da.from_array(x, chunks=chunks)
    kw: dict[str, Any] = {"seed": seed, "offset": 3, "broadcast_axes": axes}
    y, lazy = fdd.alpha_dropout(xd, 0.3, return_mask=True, **kw)
    expect, mask = fd.alpha_dropout(x, 0.3, return_mask=True, **kw)
    assert_same(compute(client, y), expect, "alpha_dropout")
    assert lazy.mode == "alpha"
    gd = da.from_array(r, chunks=chunks[::-1] if len(chunks) == 1 else chunks)
    assert_same(
        compute(client, fdd.dropout_backward(gd, lazy)),
        fd.dropout_backward(r, mask),
        "alpha backward",
    )
    # residual as a NumPy array and as a dask array chunked differently
    rd = da.from_array(r, chunks=tuple(max(1, n // 2) for n in shape))
    want = fd.dropout_add(x, r, 0.3, bias=bias, **kw)
    for residual in (r, rd):
        got = fdd.dropout_add(xd, residual, 0.3, bias=bias, **kw)
        assert_same(compute(client, got), want, "dropout_add")
    ev = fd.dropout_add(xd, rd, 0.3, bias=bias, training=False, mode="classic")
    assert isinstance(ev, da.Array)
    assert_same(
        compute(client, ev),
        fd.dropout_add(x, r, 0.3, bias=bias, training=False, mode="classic"),
    )


def test_alpha_and_add_errors() -> None:
    x = da.ones((6, 8), chunks=3, dtype=np.float32)
    with pytest.raises(ValueError, match="p"):
        fdd.alpha_dropout(x, 1.0)
    with pytest.raises(ValueError, match="residual has shape"):
        fdd.dropout_add(x, np.ones((6, 7), np.float32), 0.5)
    with pytest.raises(ValueError, match="bias has shape"):
        fdd.dropout_add(x, x, 0.5, bias=np.ones(7, np.float32))
    with pytest.raises(TypeError, match="dtype"):
        fdd.dropout_add(x, np.ones((6, 8), np.float64), 0.5)
