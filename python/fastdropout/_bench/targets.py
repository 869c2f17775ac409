"""The project's performance targets, evaluated on a run's results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .constants import BIG, FUSED_OPS, SMALL, SPATIAL_OPS, TORCH_HINT
from .report import Index, size_text
from .settings import Settings


@dataclass
class Target:
    name: str
    dtype: str
    n: int
    threads: int | None
    simd: str
    value: float | None  # the measured ratio
    limit: float
    kind: str  # "max": value <= limit (a time ratio); "min": value >= limit (speedup)
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        ok = self.value <= self.limit if self.kind == "max" else self.value >= self.limit
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        op = "<=" if self.kind == "max" else ">="
        thr = "" if self.threads is None else f", threads={self.threads}"
        where = f"{self.dtype} n={size_text(self.n)}{thr}, {self.simd}"
        if self.value is None:
            got = "not measured"
        elif self.kind == "max":
            got = f"{self.value:.2f}x"
        else:
            got = f"{self.value:.2f}x faster"
        note = f" ({self.note})" if self.note else ""
        return (f"- **{self.verdict}** {self.name} [{where}]: {got} "
                f"(target {op} {self.limit:g}x){note}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "n": self.n,
                "threads": self.threads, "simd": self.simd, "value": self.value,
                "limit": self.limit, "kind": self.kind, "verdict": self.verdict,
                "note": self.note}


def evaluate_targets(idx: Index, s: Settings, default_simd: str, have_torch: bool) -> list[Target]:
    """The project's performance targets, evaluated at the sizes that were run:
    the large-array ones at every float32 size >= 2**24 (or, if none was run, at
    the largest, marked informational), the small-array one at sizes <= 2**10
    (or the smallest)."""
    if "float32" not in s.dtypes:
        return []
    dt = "float32"
    simd = default_simd if default_simd in s.simd else s.simd[0]
    big = [n for n in s.sizes if n >= BIG] or [max(s.sizes)]
    small = [n for n in s.sizes if n <= SMALL] or [min(s.sizes)]
    tmax, tmin = max(s.threads), min(s.threads)
    out: list[Target] = []

    def row(op: str, impl: str, n: int, threads: int) -> dict[str, Any] | None:
        return idx.get(op, impl, dt, n, threads, simd)

    def base(kind: str, op: str, n: int, threads: int | None) -> dict[str, Any] | None:
        return idx.baseline_row(kind, op, dt, n, threads)

    for n in big:
        note = "" if n >= BIG else f"informational: the target is set at n={size_text(BIG)}"
        if "forward_mask" in s.ops:
            fm = row("forward_mask", "api", n, tmax)
            out.append(Target(
                "dense forward with mask vs native copy", dt, n, tmax, simd,
                idx.ratio(fm, base("stream_copy", "forward_mask", n, tmax)),
                1.25, "max", note))
            out.append(Target(
                "dense forward with mask vs NumPy idiom", dt, n, tmax, simd,
                idx.ratio(base("numpy", "forward_mask", n, None), fm),
                8, "min", note))
            out.append(Target(
                "dense forward with mask vs torch.native_dropout", dt, n, tmax, simd,
                idx.ratio(base("torch", "forward_mask", n, tmax), fm),
                40, "min", note if have_torch else TORCH_HINT))
            if tmin == 1:
                out.append(Target(
                    "dense forward with mask vs native copy, one thread", dt, n, 1, simd,
                    idx.ratio(row("forward_mask", "api", n, 1),
                              base("stream_copy", "forward_mask", n, 1)),
                    2.0, "max", note))
        for threads in s.threads:
            for op in ("backward_mask", *SPATIAL_OPS, *FUSED_OPS):
                if op in s.ops:
                    out.append(Target(
                        f"{op} vs native copy", dt, n, threads, simd,
                        idx.ratio(row(op, "api", n, threads),
                                  base("stream_copy", op, n, threads)),
                        1.15, "max", note))
    for n in small if "forward" in s.ops else []:
        note = "" if n <= SMALL else f"informational: the target is set at n={size_text(SMALL)}"
        note = (note + "; " if note else "") + "public API without out=, validation included"
        out.append(Target("dense forward vs NumPy idiom, small array", dt, n, tmax, simd,
                          idx.ratio(base("numpy", "forward", n, None),
                                    row("forward", "api_alloc", n, tmax)), 3, "min", note))
    return out
