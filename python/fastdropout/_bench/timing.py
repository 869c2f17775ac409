"""Timing: one case, its samples, and round-robin rounds over a group of cases."""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .settings import Settings


class WrongResult(Exception):
    """A fastdropout result differs from fastdropout.reference."""

@dataclass
class Case:
    """One thing to time: an op done by one implementation in one setting."""

    op: str  # one of OPS, or "copy" for the copy baselines
    impl: str  # a key of IMPL_DOC
    label: str
    dtype: str
    n: int
    shape: tuple[int, ...]
    threads: int | None  # None: does not depend on our thread setting
    simd: str | None  # None: not a fastdropout kernel
    nbytes: int  # bytes the operation must move (read + written)
    fn: Callable[[], object]
    check: Callable[[], str] | None = None
    number: int = 1
    rounds: int = 0
    samples: list[float] = field(default_factory=list)
    status: str = "ok"  # ok | WRONG | error
    detail: str = ""
    checked: str = ""

    def row(self) -> dict[str, Any]:
        r: dict[str, Any] = {
            "op": self.op, "impl": self.impl, "label": self.label, "dtype": self.dtype,
            "n": self.n, "shape": list(self.shape), "threads": self.threads,
            "simd": self.simd, "bytes": self.nbytes, "status": self.status,
            "detail": self.detail, "checked": self.checked, "number": self.number,
            "samples_s": list(self.samples), "median_s": None, "min_s": None,
            "q1_s": None, "q3_s": None, "ns_per_elem": None, "gb_per_s": None,
        }
        if self.status == "ok" and self.samples:
            q1, med, q3 = (float(v) for v in np.percentile(self.samples, [25, 50, 75]))
            r.update(median_s=med, min_s=min(self.samples), q1_s=q1, q3_s=q3,
                     ns_per_elem=med * 1e9 / max(self.n, 1),
                     gb_per_s=self.nbytes / med * 1e-9 if med > 0 else None)
        return r


def sample(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def run_group(cases: list[Case], s: Settings, core: Any) -> None:
    """Check, warm up and calibrate every case, then time them round-robin, so
    that drift in the machine's speed is shared by the cases and their baselines."""
    live: list[Case] = []
    for c in cases:
        if c.simd is not None:
            core._set_simd(c.simd)
        try:
            if c.check is not None:
                c.checked = c.check()
            t = sample(c.fn, 1)  # warm-up: page faults, caches, thread pool
            if t < s.min_time:
                t = sample(c.fn, 1)
        except WrongResult as exc:
            c.status, c.detail = "WRONG", str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. a baseline lacks a dtype
            c.status, c.detail = "error", f"{type(exc).__name__}: {exc}"
            continue
        c.number = max(1, math.ceil(s.min_time / max(t, 1e-9)))
        per_round = t * c.number
        fit = int(s.budget // per_round) if per_round > 0 else s.repeats
        c.rounds = min(s.repeats, max(fit, 3))
        live.append(c)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(s.repeats):
            for c in live:
                if r < c.rounds:
                    if c.simd is not None:
                        core._set_simd(c.simd)
                    c.samples.append(sample(c.fn, c.number))
    finally:
        if enabled:
            gc.enable()

