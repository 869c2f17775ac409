"""Benchmarks of windows and fastdropout.dask (README section "Dask and windows").

1. Window calls vs plain calls on the same elements (2**18 float32 on 1 thread, in
   cache; 2**22 on 2 threads, memory-bound): a block whose mask rows are runs of
   `run` contiguous elements inside a 16x wider global array, against the same
   function on an array of the block's shape (``dropout`` at several run lengths and
   stream offsets 0 and 1; ``spatial_dropout``, ``dropout_add``, ``alpha_dropout``
   and the regenerating ``dropout_backward`` at 64-element runs and one whole run).
   Per round, both are timed back to back; the reported ratio is the median of the
   per-round ratios (this cancels most of a shared machine's drift). The window
   table alone takes about a minute: ``--no-dask``.
2. fastdropout.dask on a 2-worker LocalCluster (processes, 1 thread each) over an
   in-memory (persisted) 2**26 float32 dask array in 2**22-element chunks: time to
   persist the result, against ``fastdropout.dropout`` on the whole NumPy array in
   this process and against the map_blocks NumPy idiom (a Generator per block and
   ``np.where``). Overhead per task: many tiny blocks, fastdropout.dask against an
   identity ``map_blocks`` of the same graph shape.

    python bench/bench_dask.py [--rounds 7] [--no-dask] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import dask.array as da
import distributed
import fastdropout as fd
import fastdropout.dask as fdd
import numpy as np

P = 0.5
SEED = 1234


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _loop(fn: Callable[[], Any], min_time: float = 0.02) -> float:
    """Seconds per call, looping fast calls up to ``min_time``."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / n
        n *= 2


def _window_case(
    func: str, n: int, run: int, offset: int
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(plain call, window call) of ``func`` on the same ``n`` float32 elements: a
    block whose mask rows are runs of ``run`` elements inside a 16x wider global
    array (one run: the whole array)."""
    rng = np.random.default_rng(0)
    wide = 16 if run < n else 1
    kw: dict[str, Any] = {"seed": SEED, "offset": offset}
    if func == "spatial_dropout":  # (N, C, 16): the (N, C) mask rows are the runs
        nrows = max(n // (16 * run), 1)
        shape: tuple[int, ...] = (nrows, n // (16 * nrows), 16)
        run = shape[1]
        window = ((nrows, run * wide, 16), (0, run * (wide // 2), 0))
    else:
        nrows = n // run
        shape = (nrows, run)
        window = ((nrows, run * wide), (0, run * (wide // 2)))
    x = rng.standard_normal(shape).astype(np.float32)
    y = np.empty_like(x)
    kw["out"] = y
    if func == "dropout_add":
        r = rng.standard_normal(shape).astype(np.float32)
        call: Callable[..., Any] = functools.partial(fd.dropout_add, x, r, P, **kw)
    elif func == "dropout_backward":
        call = functools.partial(fd.dropout_backward, x, p=P, **kw)
    else:
        call = functools.partial(getattr(fd, func), x, P, **kw)
    return call, functools.partial(call, window=window)


# (function, run lengths) of the window table; None is the whole array (one run).
WINDOW_CASES: tuple[tuple[str, tuple[int | None, ...], tuple[int, ...]], ...] = (
    ("dropout", (64, 256, 4096, None), (0, 1)),
    ("spatial_dropout", (64, None), (1,)),
    ("dropout_add", (64, None), (1,)),
    ("alpha_dropout", (64, None), (1,)),
    ("dropout_backward", (64, None), (1,)),
)


def bench_windows(rounds: int, n: int, threads: int) -> list[dict[str, Any]]:
    """Window calls against plain calls on the same elements; per round, the two are
    timed back to back and the ratio is the median of the per-round ratios."""
    before = fd.get_num_threads()
    fd.set_num_threads(threads)
    rows = []
    try:
        for func, runs, offsets in WINDOW_CASES:
            for run in runs:
                for offset in offsets:  # aligned and unaligned stream positions
                    plain, windowed = _window_case(func, n, run or n, offset)
                    assert np.array_equal(
                        plain().view(np.uint32), windowed().view(np.uint32)
                    )
                    ratios, tp, tw = [], [], []
                    for _ in range(rounds):
                        a = _loop(plain)
                        b = _loop(windowed)
                        tp.append(a)
                        tw.append(b)
                        ratios.append(b / a)
                    rows.append(
                        {
                            "func": func,
                            "n": n,
                            "threads": threads,
                            "run": run or n,
                            "offset": offset,
                            "plain_s": statistics.median(tp),
                            "window_s": statistics.median(tw),
                            "ratio": statistics.median(ratios),
                        }
                    )
    finally:
        fd.set_num_threads(before)
    return rows


def _numpy_idiom(
    block: np.ndarray, p: float, block_id: tuple[int, ...] | None = None
) -> np.ndarray:
    """The usual way: a Generator per block (seeded from the block's index so the
    graph is deterministic) and np.where."""
    rng = np.random.default_rng([SEED, *(block_id or ())])
    keep = rng.random(block.shape, dtype=np.float32) >= p
    return np.where(keep, block * np.float32(1 / (1 - p)), np.float32(0))


def _identity(block: np.ndarray) -> np.ndarray:
    return block


def bench_dask(rounds: int, n: int, chunk: int) -> dict[str, Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port (8787 may be taken)
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    try:
        data = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        x = client.persist(da.from_array(data, chunks=chunk))
        distributed.wait(x)

        def run_graph(y: Any) -> None:
            y = client.persist(y)
            distributed.wait(y)
            client.cancel(y)

        cases: dict[str, Callable[[], Any]] = {
            "fastdropout.dask": lambda: run_graph(fdd.dropout(x, P, seed=SEED)),
            "map_blocks NumPy idiom": lambda: run_graph(
                x.map_blocks(_numpy_idiom, P, dtype=np.float32)
            ),
            "identity map_blocks": lambda: run_graph(
                x.map_blocks(_identity, dtype=np.float32)
            ),
            "fastdropout.dropout, whole array, this process": lambda: fd.dropout(
                data, P, seed=SEED
            ),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):
            for name, fn in cases.items():
                times[name].append(_time(fn))
        # the results agree bit for bit
        got = fdd.dropout(x, P, seed=SEED).compute()
        assert np.array_equal(
            got.view(np.uint32), fd.dropout(data, P, seed=SEED).view(np.uint32)
        )

        # overhead per task: tiny blocks
        tiny_n, tiny_chunk = 1 << 16, 64
        tiny = client.persist(da.from_array(data[:tiny_n], chunks=tiny_chunk))
        distributed.wait(tiny)
        tiny_cases: dict[str, Callable[[], Any]] = {
            "fastdropout.dask": lambda: run_graph(fdd.dropout(tiny, P, seed=SEED)),
            "identity map_blocks": lambda: run_graph(
                tiny.map_blocks(_identity, dtype=np.float32)
            ),
        }
        tiny_times: dict[str, list[float]] = {k: [] for k in tiny_cases}
        for _ in range(rounds):
            for name, fn in tiny_cases.items():
                tiny_times[name].append(_time(fn))
        ntasks = tiny_n // tiny_chunk
        window_call = _loop(
            lambda: fd.dropout(
                data[:tiny_chunk], P, seed=SEED, window=((tiny_n,), (64,))
            )
        )
        plain_call = _loop(lambda: fd.dropout(data[:tiny_chunk], P, seed=SEED))
    finally:
        client.close()
        cluster.close()
    nbytes = n * 4
    return {
        "n": n,
        "chunk": chunk,
        "tasks": n // chunk,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "gb_per_s": {
            k: 2 * nbytes / statistics.median(v) / 1e9 for k, v in times.items()
        },
        "tiny_tasks": ntasks,
        "tiny_median_s": {k: statistics.median(v) for k, v in tiny_times.items()},
        "per_task_s": {k: statistics.median(v) / ntasks for k, v in tiny_times.items()},
        "window_call_64_s": window_call,
        "plain_call_64_s": plain_call,
    }


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms"


def report(windows: list[dict[str, Any]], dask_result: dict[str, Any] | None) -> str:
    lines = [
        (
            "| function | elements | threads | run length | offset | plain | window "
            "| window / plain |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in windows:
        run = "whole" if r["run"] == r["n"] else r["run"]
        lines.append(
            f"| {r['func']} | 2**{r['n'].bit_length() - 1} | {r['threads']} | {run} | "
            f"{r['offset']} | {_ms(r['plain_s'])} | {_ms(r['window_s'])} | "
            f"{r['ratio']:.2f}x |"
        )
    if dask_result is not None:
        d = dask_result
        base = d["median_s"]["fastdropout.dropout, whole array, this process"]
        lines += [
            "",
            (
                f"2**{d['n'].bit_length() - 1} float32 in {d['tasks']} chunks of "
                f"2**{d['chunk'].bit_length() - 1}, persisted on 2 workers:"
            ),
            "",
            "| method | median time | GB/s (read + write) | time / whole-array call |",
            "| --- | ---: | ---: | ---: |",
        ]
        for k, t in d["median_s"].items():
            lines.append(
                f"| {k} | {_ms(t)} | {d['gb_per_s'][k]:.2f} | {t / base:.2f}x |"
            )
        lines += [
            "",
            f"Per task ({d['tiny_tasks']} blocks of 64 elements): "
            + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in d["per_task_s"].items())
            + f"; a 64-element window call {d['window_call_64_s'] * 1e6:.1f} us, "
            f"a plain one {d['plain_call_64_s'] * 1e6:.1f} us.",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-dask", action="store_true", help="window calls only")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads for the 2**22 window cases (2**18 runs on 1)",
    )
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    ns = ap.parse_args()
    windows = []
    for n, threads in ((1 << 18, 1), (1 << 22, ns.threads)):
        windows += bench_windows(ns.rounds, n, threads)
    dask_result = None if ns.no_dask else bench_dask(ns.rounds, 1 << 26, 1 << 22)
    print(report(windows, dask_result))
    if ns.json:
        ns.json.write_text(
            json.dumps({"windows": windows, "dask": dask_result}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
