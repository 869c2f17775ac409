"""Dropout on JAX's CPU backend: fastdropout.jax beside jax.random.bernoulli.

``python bench/bench_jax.py [--sizes 20 24] [--rounds 7] [--p 0.5] [--json FILE]``

Three ways to drop out a float32 array of 2**k elements, all timed the same way:

- ``fastdropout.jax``: ``jax.jit`` of :func:`fastdropout.jax.dropout` (Philox in
  jax.numpy; seed and offset passed as traced words, so every call uses a new
  stream position without recompiling);
- ``jax.random.bernoulli``: the usual JAX dropout (Flax's ``nn.Dropout`` does
  this), ``where(bernoulli(key, 1 - p), x / (1 - p), 0)`` under ``jax.jit`` with
  the default PRNG (threefry), a new key every call;
- ``fastdropout`` (NumPy, the C++ core) on a NumPy array, as the reference point.

Each round times one call of every method in turn (interleaved, after a warm-up
that compiles), with ``block_until_ready``; the table gives the median time per
method and the median over rounds of each method's time divided by the NumPy
function's time in the same round, which cancels most of the drift of a shared
machine. No target: this is a report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import fastdropout
import fastdropout.jax as fdj
import jax
import jax.numpy as jnp
import numpy as np


def _methods(x_np: np.ndarray, p: float) -> dict[str, Callable[[int], Any]]:
    x = jnp.asarray(x_np)
    fd_jit = jax.jit(lambda x, s, o: fdj.dropout(x, p, seed=s, offset=o))

    @jax.jit
    def bernoulli_dropout(x: Any, key: Any) -> Any:
        keep = jax.random.bernoulli(key, 1.0 - p, x.shape)
        return jnp.where(keep, x / (1.0 - p), 0.0)

    base_key = jax.random.key(0)
    n = x_np.size
    return {
        "fastdropout.jax (jit)": lambda i: fd_jit(
            x, fdj.split64(1234), fdj.split64(i * n)
        ).block_until_ready(),
        "jax.random.bernoulli (jit)": lambda i: bernoulli_dropout(
            x, jax.random.fold_in(base_key, i)
        ).block_until_ready(),
        "fastdropout (NumPy)": lambda i: fastdropout.dropout(
            x_np, p, seed=1234, offset=i * n
        ),
    }


def run(log2_sizes: list[int], rounds: int, p: float) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for k in log2_sizes:
        x_np = rng.standard_normal(1 << k, dtype=np.float32)
        methods = _methods(x_np, p)
        for fn in methods.values():  # compile and warm up
            fn(0)
            fn(1)
        times: dict[str, list[float]] = {name: [] for name in methods}
        for r in range(rounds):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                fn(r + 2)
                times[name].append(time.perf_counter() - t0)
        base = times["fastdropout (NumPy)"]
        for name, ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, base))
            rows.append(
                {
                    "elements": f"2**{k}",
                    "method": name,
                    "median_ms": 1e3 * statistics.median(ts),
                    "min_ms": 1e3 * min(ts),
                    "ratio_to_numpy": ratio,
                    "gb_per_s": 8 * (1 << k) / statistics.median(ts) / 1e9,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 24], metavar="K")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="fastdropout's threads (default: its own)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    if args.threads is not None:
        fastdropout.set_num_threads(args.threads)
    rows = run(args.sizes, args.rounds, args.p)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"fastdropout {fastdropout.__version__} ({fastdropout.simd_level()}, "
        f"{fastdropout.get_num_threads()} threads), float32, p={args.p}, "
        f"{args.rounds} interleaved rounds"
    )
    print(f"{'elements':>9} {'method':28} {'median ms':>10} {'GB/s':>7} {'x NumPy':>8}")
    for row in rows:
        print(
            f"{row['elements']:>9} {row['method']:28} {row['median_ms']:10.2f} "
            f"{row['gb_per_s']:7.2f} {row['ratio_to_numpy']:8.1f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
