"""The project's performance targets, evaluated on a run's results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .constants import BIG, BOUND_LIMIT, SMALL, SMALL_SPEEDUP, TORCH_HINT
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


def big_note(n: int) -> str:
    """The note of a large-array target evaluated below the size it is set at."""
    return "" if n >= BIG else f"informational: the target is set at n={size_text(BIG)}"


def evaluate_targets(idx: Index, s: Settings, default_simd: str, have_torch: bool) -> list[Target]:
    """The project's performance targets, evaluated at the sizes that were run:
    the large-array ones at every size >= 2**24 (or, if none was run, at the
    largest, marked informational), the small-array ones at sizes <= 2**10 (or the
    smallest). Every op of every dtype against its bound; the rest in float32."""
    simd = default_simd if default_simd in s.simd else s.simd[0]
    big = [n for n in s.sizes if n >= BIG] or [max(s.sizes)]
    small = [n for n in s.sizes if n <= SMALL] or [min(s.sizes)]
    out: list[Target] = []
    # Every kernel at its bound (README "Performance"): the native copy of the same
    # bytes, or for the ops that draw a mask the slower of that and gen_bits.
    for dtype in s.dtypes:
        for n in big:
            for threads in s.threads:
                for op in s.ops:
                    r = idx.get(op, "api", dtype, n, threads, simd)
                    if r is None:
                        continue
                    value, bound = idx.bound(r, op, dtype, n, threads, simd)
                    out.append(Target(f"{op} vs its bound ({bound})", dtype, n, threads,
                                      simd, value, BOUND_LIMIT, "max", big_note(n)))
    if "float32" in s.dtypes:
        out += _float32_targets(idx, s, simd, big, small, have_torch)
    return out


def _float32_targets(idx: Index, s: Settings, simd: str, big: list[int], small: list[int],
                     have_torch: bool) -> list[Target]:
    dt = "float32"
    tmax, tmin = max(s.threads), min(s.threads)
    out: list[Target] = []

    def row(op: str, impl: str, n: int, threads: int) -> dict[str, Any] | None:
        return idx.get(op, impl, dt, n, threads, simd)

    def base(kind: str, op: str, n: int, threads: int | None) -> dict[str, Any] | None:
        return idx.baseline_row(kind, op, dt, n, threads)

    for n in big:
        note = big_note(n)
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
            if "alpha_dropout" in s.ops and "forward" in s.ops:
                out.append(Target(
                    "alpha_dropout vs dense forward", dt, n, threads, simd,
                    idx.ratio(row("alpha_dropout", "api", n, threads),
                              row("forward", "api", n, threads)), 1.1, "max", note))
            if "dropout_add" in s.ops:
                out.append(Target(
                    "dropout_add vs the unfused sequence", dt, n, threads, simd,
                    idx.ratio(row("dropout_add", "unfused", n, threads),
                              row("dropout_add", "api", n, threads)), 1.5, "min", note))
    for n in small:
        note = "" if n <= SMALL else f"informational: the target is set at n={size_text(SMALL)}"
        note = (note + "; " if note else "") + "public API, validation included"
        for op in s.ops:
            r = row(op, "api_alloc", n, tmax) or row(op, "api", n, tmax)
            numpy = base("numpy", op, n, None)
            if r is None or numpy is None:
                continue
            how = "without out=" if r["impl"] == "api_alloc" else "with out="
            out.append(Target(f"{op} ({how}) vs NumPy idiom, small array", dt, n, tmax,
                              simd, idx.ratio(numpy, r), SMALL_SPEEDUP, "min", note))
    return out
