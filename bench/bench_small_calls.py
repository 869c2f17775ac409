"""Small calls: every public operation at 2**10 float32 against its NumPy idiom.

``python bench/bench_small_calls.py`` (about 10 s; ``--quick`` for a smoke run,
``--json PATH`` to keep the numbers, ``--n``/``--dtype`` for another size or dtype).

Each row is a fastdropout call (validation, allocation and the ``Mask`` object
included) and the NumPy idiom it replaces; the idioms are those of the benchmark's
cases module (``python -m fastdropout bench``), with a fresh random draw on every
forward call. The two are timed interleaved, round by round: in a round each runs
``inner`` calls back to back and the time per call is taken; the speed-up of a row
is the median over rounds of the per-round ratio idiom / fastdropout, so that drift
of a shared machine hits both sides of a ratio alike. The absolute times shown are
the medians of the per-round times. Every fastdropout call is checked against
``fastdropout.reference`` once before timing (bit for bit).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import fastdropout as fd
import numpy as np
from fastdropout import reference as ref

ALPHA_PRIME = -1.7580993408473766
Fn = Callable[[], Any]


def _per_call(fn: Fn, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def measure(ours: Fn, idiom: Fn, rounds: int, inner: int) -> tuple[float, float, float]:
    """(median us of ours, median us of the idiom, median per-round ratio)."""
    for _ in range(3):  # warm up both
        ours()
        idiom()
    t_ours, t_idiom, ratios = [], [], []
    for r in range(rounds):
        if r % 2:  # alternate which side goes first
            a = _per_call(ours, inner)
            b = _per_call(idiom, inner)
        else:
            b = _per_call(idiom, inner)
            a = _per_call(ours, inner)
        t_ours.append(a)
        t_idiom.append(b)
        ratios.append(b / a)
    return (
        statistics.median(t_ours) * 1e6,
        statistics.median(t_idiom) * 1e6,
        statistics.median(ratios),
    )


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    u = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.ascontiguousarray(a).view(u), np.ascontiguousarray(b).view(u)
    )


def _with_sum(gx: Any, g: Any) -> tuple[Any, Any, Any]:
    """The NumPy idiom's dropout_add_backward: (grad_x, grad_residual, grad_bias)."""
    return gx, g, gx.sum(axis=0)


def _rows(n: int, dtype: Any) -> list[tuple[str, Fn, Fn, Fn]]:
    """(label, fastdropout call, NumPy idiom, check) for every row."""
    p, seed = 0.5, 1234
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(n) * 2.0).astype(dtype)
    g = x
    y = np.zeros_like(x)
    cols = 1024 if n % 1024 == 0 else n
    shape2 = (n // cols, cols)
    x2, y2 = x.reshape(shape2), y.reshape(shape2)
    res = (rng.standard_normal(n) * 2.0).astype(dtype).reshape(shape2)
    bias = rng.standard_normal(cols).astype(dtype)
    c = 32  # channels; (N, C, H, W) with N = 4 where possible
    hw = max(n // (4 * c), 1)
    nn_ = n // (c * hw)
    h = 1 << (hw.bit_length() - 1) // 2
    cf, cl = (nn_, c, h, hw // h), (nn_, h, hw // h, c)
    a = ((1 - p) * (1 + p * ALPHA_PRIME**2)) ** -0.5
    b = -a * ALPHA_PRIME * p
    keep = rng.random(x.shape) >= p
    rows: list[tuple[str, Fn, Fn, Fn]] = []
    # forward calls draw a new mask every call, as the idioms do and as a training
    # loop does (the offset advances): a fixed mask would let the branch predictor
    # learn it
    nxt = itertools.count(0, n).__next__

    def add(label: str, ours: Fn, idiom: Fn, check: Fn) -> None:
        rows.append((label, ours, idiom, check))

    fwd_idiom = lambda: x * (rng.random(x.shape) >= p) / (1 - p)
    bwd_idiom = lambda: g * keep / (1 - p)

    # dense
    add("dropout(x, p, seed=)", lambda: fd.dropout(x, p, seed=seed, offset=nxt()), fwd_idiom,
        lambda: _same(fd.dropout(x, p, seed=seed), ref.dropout(x, p, seed=seed)))
    add("dropout(out=, return_mask=True)",
        lambda: fd.dropout(x, p, seed=seed, offset=nxt(), out=y, return_mask=True),
        fwd_idiom,
        lambda: _same(fd.dropout(x, p, seed=seed, out=y, return_mask=True)[0],
                      ref.dropout(x, p, seed=seed)))
    mask = fd.dropout(x, p, seed=seed, return_mask=True)[1]
    add("dropout_backward(g, mask, out=)", lambda: fd.dropout_backward(g, mask, out=y),
        bwd_idiom,
        lambda: _same(fd.dropout_backward(g, mask), ref.dropout_backward(g, mask)))
    add("dropout_backward(g, p=, seed=, out=)",
        lambda: fd.dropout_backward(g, p=p, seed=seed, offset=nxt(), out=y), fwd_idiom,
        lambda: _same(fd.dropout_backward(g, p=p, seed=seed),
                      ref.dropout_backward(g, p=p, seed=seed)))
    # spatial
    spatial_ok = nn_ * c * hw == n  # else no (N, 32, H, W) shape: no spatial rows
    for fmt, shp in (("channels_first", cf), ("channels_last", cl)) if spatial_ok else ():
        xs, ys = x.reshape(shp), y.reshape(shp)
        mshape = (shp[0], shp[1], 1, 1) if fmt == "channels_first" else (shp[0], 1, 1, shp[3])
        skeep = rng.random(mshape) >= p
        sfwd = (lambda xs=xs, mshape=mshape:
                xs * (rng.random(mshape) >= p) / (1 - p))
        add(f"spatial_dropout({fmt}, out=, return_mask=True)",
            lambda xs=xs, ys=ys, fmt=fmt: fd.spatial_dropout(
                xs, p, data_format=fmt, seed=seed, offset=nxt(), out=ys,
                return_mask=True), sfwd,
            lambda xs=xs, fmt=fmt: _same(
                fd.spatial_dropout(xs, p, data_format=fmt, seed=seed),
                ref.spatial_dropout(xs, p, data_format=fmt, seed=seed)))
        add(f"spatial_dropout({fmt})",
            lambda xs=xs, fmt=fmt: fd.spatial_dropout(xs, p, data_format=fmt, seed=seed,
                                                      offset=nxt()),
            sfwd, lambda: True)
        smask = fd.spatial_dropout(xs, p, data_format=fmt, seed=seed, return_mask=True)[1]
        add(f"dropout_backward({fmt} mask, out=)",
            lambda xs=xs, ys=ys, smask=smask: fd.dropout_backward(xs, smask, out=ys),
            lambda xs=xs, skeep=skeep: xs * skeep / (1 - p),
            lambda xs=xs, smask=smask: _same(fd.dropout_backward(xs, smask),
                                             ref.dropout_backward(xs, smask)))
    # alpha
    alpha_idiom = lambda: np.where(
        rng.random(x.shape) >= p, x * a + b, a * ALPHA_PRIME + b)
    add("alpha_dropout(out=)", lambda: fd.alpha_dropout(x, p, seed=seed, offset=nxt(), out=y),
        alpha_idiom,
        lambda: _same(fd.alpha_dropout(x, p, seed=seed), ref.alpha_dropout(x, p, seed=seed)))
    add("alpha_dropout()", lambda: fd.alpha_dropout(x, p, seed=seed, offset=nxt()), alpha_idiom,
        lambda: True)
    add("alpha_dropout(out=, return_mask=True)",
        lambda: fd.alpha_dropout(x, p, seed=seed, offset=nxt(), out=y, return_mask=True),
        alpha_idiom,
        lambda: _same(fd.alpha_dropout(x, p, seed=seed, return_mask=True)[1].bits,
                      ref.alpha_dropout(x, p, seed=seed, return_mask=True)[1].bits))
    amask = fd.alpha_dropout(x, p, seed=seed, return_mask=True)[1]
    add("dropout_backward(g, alpha mask, out=)",
        lambda: fd.dropout_backward(g, amask, out=y), lambda: g * keep * a,
        lambda: _same(fd.dropout_backward(g, amask), ref.dropout_backward(g, amask)))
    add('dropout_backward(g, p=, seed=, mode="alpha", out=)',
        lambda: fd.dropout_backward(g, p=p, seed=seed, offset=nxt(), mode="alpha", out=y),
        lambda: g * (rng.random(x.shape) >= p) * a,
        lambda: _same(fd.dropout_backward(g, p=p, seed=seed, mode="alpha"),
                      ref.dropout_backward(g, p=p, seed=seed, mode="alpha")))
    # dropout_add
    add_idiom = lambda: res + (x2 + bias) * (rng.random(shape2) >= p) / (1 - p)
    add_idiom_nb = lambda: res + x2 * (rng.random(shape2) >= p) / (1 - p)
    add("dropout_add(bias=, out=)",
        lambda: fd.dropout_add(x2, res, p, bias=bias, seed=seed, offset=nxt(), out=y2),
        add_idiom,
        lambda: _same(fd.dropout_add(x2, res, p, bias=bias, seed=seed),
                      ref.dropout_add(x2, res, p, bias=bias, seed=seed)))
    add("dropout_add(bias=)",
        lambda: fd.dropout_add(x2, res, p, bias=bias, seed=seed, offset=nxt()), add_idiom,
        lambda: True)
    add("dropout_add(out=)", lambda: fd.dropout_add(x2, res, p, seed=seed, offset=nxt(), out=y2),
        add_idiom_nb,
        lambda: _same(fd.dropout_add(x2, res, p, seed=seed),
                      ref.dropout_add(x2, res, p, seed=seed)))
    add("dropout_add()", lambda: fd.dropout_add(x2, res, p, seed=seed, offset=nxt()),
        add_idiom_nb,
        lambda: True)
    add("dropout_add(bias=, out=, return_mask=True)",
        lambda: fd.dropout_add(x2, res, p, bias=bias, seed=seed, offset=nxt(), out=y2,
                               return_mask=True),
        add_idiom, lambda: True)
    dmask = fd.dropout(x2, p, seed=seed, return_mask=True)[1]
    keep2 = keep.reshape(shape2)
    add("dropout_add_backward(g, mask, bias=True)",
        lambda: fd.dropout_add_backward(x2, dmask, bias=True),
        lambda: _with_sum(x2 * keep2 / (1 - p), x2),
        lambda: all(_same(u, v) for u, v in zip(
            fd.dropout_add_backward(x2, dmask, bias=True)[::2],
            ref.dropout_add_backward(x2, dmask, bias=True)[::2])))
    add("dropout_add_backward(g, mask)",
        lambda: fd.dropout_add_backward(x2, dmask),
        lambda: (x2 * keep2 / (1 - p), x2, None),
        lambda: _same(fd.dropout_add_backward(x2, dmask)[0],
                      ref.dropout_add_backward(x2, dmask)[0]))
    # layers (forward of a training layer: the offset advances every call)
    layer = fd.Dropout(p, seed=seed)
    add("Dropout layer forward", lambda: layer(x), fwd_idiom, lambda: True)
    if spatial_ok:
        slayer = fd.SpatialDropout(p, seed=seed)
        xs_cf = x.reshape(cf)
        add("SpatialDropout layer forward", lambda: slayer(xs_cf),
            lambda: xs_cf * (rng.random((cf[0], cf[1], 1, 1)) >= p) / (1 - p), lambda: True)
    alayer = fd.AlphaDropout(p, seed=seed)
    add("AlphaDropout layer forward", lambda: alayer(x), alpha_idiom, lambda: True)
    dlayer = fd.DropoutAdd(p, seed=seed)
    add("DropoutAdd layer forward (bias)", lambda: dlayer(x2, res, bias), add_idiom,
        lambda: True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=lambda s: int(eval(s, {})), default=2**10,
                    help="elements (default 2**10)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=101)
    ap.add_argument("--inner", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 10 calls")
    ap.add_argument("--only", default="", help="rows whose label contains this")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.inner = 3, 10
    dtype: Any = np.dtype(args.dtype) if args.dtype != "bfloat16" else None
    if dtype is None:
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"fastdropout {fd.__version__}, n={args.n} {dtype}, simd {fd.simd_level()}, "
          f"{args.rounds} rounds x {args.inner} calls, load {load:.1f}")
    print("| call | fastdropout µs | NumPy idiom µs | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    results = []
    bad = []
    for label, ours, idiom, check in _rows(args.n, dtype):
        if args.only and args.only not in label:
            continue
        if not check():
            bad.append(label)
        t_ours, t_idiom, ratio = measure(ours, idiom, args.rounds, args.inner)
        flag = "" if ratio >= 3.0 else " (<3x)"
        print(f"| `{label}` | {t_ours:.2f} | {t_idiom:.2f} | {ratio:.1f}x{flag} |",
              flush=True)
        results.append({"call": label, "us": t_ours, "numpy_us": t_idiom,
                        "speedup": ratio})
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load at the end {load_end:.1f}")
    if args.json:
        with Path(args.json).open("w") as f:
            json.dump({"n": args.n, "dtype": str(dtype), "load": [load, load_end],
                       "rows": results}, f, indent=1)
    if bad:
        print("MISMATCH against fastdropout.reference:", ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
