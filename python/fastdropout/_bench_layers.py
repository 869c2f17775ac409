"""Layer call overhead: ``Dropout.forward`` / ``layer(x)`` against ``fastdropout.dropout``.

``layer_overhead()`` times the three calls interleaved (each round times every
call, the order rotating), so a busy machine slows them alike, and reports the
median per-call time of each and the median of the per-round ratios to the
function. The benchmark CLI can call it; ``python -m fastdropout._bench_layers``
prints one line.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from ._api import dropout
from .layers import Dropout

__all__ = ["layer_overhead"]


def _per_call(fn: Callable[[], Any], number: int) -> float:
    clock = time.perf_counter
    t0 = clock()
    for _ in range(number):
        fn()
    return (clock() - t0) / number


def layer_overhead(
    shape: tuple[int, ...] = (32, 256),
    dtype: Any = np.float32,
    *,
    rounds: int = 21,
    number: int = 500,
) -> dict[str, float]:
    """Median seconds per call of ``dropout(x, 0.5, seed=1)``, ``layer.forward(x)``
    and ``layer(x)`` (a training ``Dropout(0.5, seed=1)``), and the median of the
    per-round ratios ``forward / dropout`` and ``call / dropout``."""
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    layer = Dropout(0.5, seed=1)
    calls: dict[str, Callable[[], Any]] = {
        "dropout": lambda: dropout(x, 0.5, seed=1),
        "forward": lambda: layer.forward(x),
        "call": lambda: layer(x),
    }
    for fn in calls.values():  # warm up
        _per_call(fn, number // 5 + 1)
    times: dict[str, list[float]] = {k: [] for k in calls}
    names = list(calls)
    for r in range(rounds):
        for k in names[r % 3 :] + names[: r % 3]:
            times[k].append(_per_call(calls[k], number))
    result = {f"{k}_s": statistics.median(v) for k, v in times.items()}
    for k in ("forward", "call"):
        ratios = [a / b for a, b in zip(times[k], times["dropout"])]
        result[f"{k}_ratio"] = statistics.median(ratios)
    return result


if __name__ == "__main__":
    r = layer_overhead()
    print(
        f"32x256 float32: dropout {r['dropout_s'] * 1e6:.2f} us, "
        f"layer.forward {r['forward_s'] * 1e6:.2f} us ({r['forward_ratio']:.2f}x), "
        f"layer(x) {r['call_s'] * 1e6:.2f} us ({r['call_ratio']:.2f}x)"
    )
