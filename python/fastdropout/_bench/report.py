"""The Markdown report: result lookup, ratios, tables."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .constants import GENERATING_OPS, OPS, TWO_INPUT_OPS
from .settings import Settings


def size_text(n: int) -> str:
    return f"2**{n.bit_length() - 1}" if n > 1 and n & (n - 1) == 0 else str(n)


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _speedup(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}x" if v >= 10 else f"{v:.1f}x"


def _table(header: list[str], align: str, rows: list[list[str]]) -> str:
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


NUMPY_BASE = {"forward": "forward", "forward_mask": "forward",
              "backward_regen": "forward", "backward_mask": "backward_mask"}
TORCH_BASE = {"forward": "forward", "forward_mask": "forward_mask",
              "backward_mask": "backward_mask", "alpha_dropout": "alpha_dropout",
              "dropout_add": "dropout_add", "dropout_add_backward": "dropout_add_backward"}


class Index:
    """Lookup of results by (op, impl, dtype, n, threads, simd)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self._by: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            self._by[(r["op"], r["impl"], r["dtype"], r["n"], r["threads"], r["simd"])] = r

    def get(self, op: str, impl: str, dtype: str, n: int, threads: int | None,
            simd: str | None) -> dict[str, Any] | None:
        return self._by.get((op, impl, dtype, n, threads, simd))

    def median(self, *key: Any) -> float | None:
        r = self.get(*key)
        return None if r is None else r["median_s"]

    def baseline_row(self, kind: str, op: str, dtype: str, n: int,
                     threads: int | None) -> dict[str, Any] | None:
        if kind in ("stream_copy", "copyto"):
            return self.get("copy", kind, dtype, n, threads, None)
        if kind == "numpy":
            base = NUMPY_BASE.get(op, op)
            return self.get(base, "numpy", dtype, n, None, None)
        base = TORCH_BASE.get(op, op if op.startswith("spatial") else "")
        return self.get(base, "torch", dtype, n, threads, None)

    def baseline(self, kind: str, op: str, dtype: str, n: int,
                 threads: int | None) -> float | None:
        r = self.baseline_row(kind, op, dtype, n, threads)
        return None if r is None else r["median_s"]

    @staticmethod
    def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
        """a's time over b's. Rows of one thread count were timed in the same
        round-robin group, round k of each seconds apart: their ratio is the median
        of the per-round ratios, which cancels the slow drifts of a shared machine's
        speed. Otherwise (the NumPy idiom runs once per size) the ratio of medians."""
        if a is None or b is None or a["median_s"] is None or not b["median_s"]:
            return None
        sa, sb = a["samples_s"], b["samples_s"]
        k = min(len(sa), len(sb))
        if a["threads"] is not None and a["threads"] == b["threads"] and k >= 3:
            return float(np.median([x / y for x, y in zip(sa[:k], sb[:k])]))
        return float(a["median_s"] / b["median_s"])


    def bound(self, r: dict[str, Any] | None, op: str, dtype: str, n: int,
              threads: int | None, simd: str | None) -> tuple[float | None, str]:
        """r's time over its bound, and which bound it is: the native copy of the
        same bytes or, for the ops that draw a mask, the slower of that copy and the
        mask bits alone (same elements, threads and SIMD level). Per round when the
        rows share their rounds, as in ``ratio``."""
        copy = (self.get("stream2", "stream2", dtype, n, threads, None)
                if op in TWO_INPUT_OPS else self.get("copy", "stream_copy", dtype, n,
                                                     threads, None))
        gen = (self.get("gen_bits", "gen_bits", dtype, n, threads, simd)
               if op in GENERATING_OPS else None)
        ok = [b for b in (copy, gen) if b is not None and b["median_s"]]
        if r is None or r["median_s"] is None or not ok:
            return None, "-"
        which = max(ok, key=lambda b: b["median_s"])
        name = ("stream2" if op in TWO_INPUT_OPS else "copy") if which is copy else "gen_bits"
        k = min(len(r["samples_s"]), *(len(b["samples_s"]) for b in ok))
        if k >= 3 and all(b["threads"] == r["threads"] for b in ok):
            per_round = [r["samples_s"][i] / max(b["samples_s"][i] for b in ok)
                         for i in range(k)]
            return float(np.median(per_round)), name
        return float(r["median_s"] / which["median_s"]), name


def _ns_cell(r: dict[str, Any] | None, ns_per_s_elem: float) -> str:
    if r is None:
        return "-"
    if r["status"] != "ok":
        return str(r["status"])
    return _num(r["median_s"] * ns_per_s_elem)


def _grid(s: Settings) -> Iterator[tuple[str, int, int, str, str]]:
    """(dtype, n, threads, simd, op) of every case of the run, in report order."""
    return itertools.product(s.dtypes, s.sizes, s.threads, s.simd, s.ops)


def _main_table(idx: Index, s: Settings) -> str:
    rows = []
    for dtype, n, threads, simd, op in _grid(s):
        r = idx.get(op, "api", dtype, n, threads, simd)
        if r is None:
            continue
        key = (dtype, n, threads, simd)
        if r["status"] != "ok":
            rows.append([op, dtype, size_text(n), str(threads), simd,
                         f"**{r['status']}**: {r['detail']} (not timed)"] + [""] * 12)
            continue
        med = r["median_s"]
        ne = 1e9 / n
        core_ns = _ns_cell(idx.get(op, "core", *key), ne)
        alloc_ns = _ns_cell(idx.get(op, "api_alloc", *key), ne)
        x_bound, bound_name = idx.bound(r, op, dtype, n, threads, simd)
        rows.append([
            op, dtype, size_text(n), str(threads), simd,
            _num(med * ne), _num(r["gb_per_s"]), _num(r["min_s"] * ne),
            f"{(r['q3_s'] - r['q1_s']) / med * 100:.0f}%",
            core_ns, alloc_ns,
            _times(x_bound), bound_name,
            _times(idx.ratio(r, idx.baseline_row("stream_copy", op, dtype, n, threads))),
            _times(idx.ratio(r, idx.baseline_row("copyto", op, dtype, n, threads))),
            _speedup(idx.ratio(idx.baseline_row("numpy", op, dtype, n, None), r)),
            _speedup(idx.ratio(idx.baseline_row("torch", op, dtype, n, threads), r)),
            "full" if r["checked"] == "full" else "sampled",
        ])
    header = ["op", "dtype", "n", "threads", "simd", "ns/elem", "GB/s", "min ns/elem",
              "IQR", "_core ns/elem", "no out= ns/elem", "x bound", "bound", "x copy",
              "x np.copyto", "vs NumPy", "vs torch", "checked"]
    return _table(header, "llrrlrrrrrrrlrrrrl", rows)


def _sum_ratio(r: dict[str, Any], parts: list[dict[str, Any]]) -> float:
    """r's time over the sum of the parts' times: per round when all were timed in
    the same round-robin group (as ``Index.ratio``), else from the medians."""
    k = min(len(r["samples_s"]), *(len(b["samples_s"]) for b in parts))
    if k >= 3 and all(b["threads"] == r["threads"] for b in parts):
        return float(np.median([r["samples_s"][i] / sum(b["samples_s"][i] for b in parts)
                                for i in range(k)]))
    return float(r["median_s"] / sum(b["median_s"] for b in parts))


def _own_work_table(idx: Index, s: Settings) -> str:
    rows = []
    for dtype, n, threads, simd, op in _grid(s):
        if op not in GENERATING_OPS:
            continue
        r = idx.get(op, "api", dtype, n, threads, simd)
        own = idx.get(op, "api_p0", dtype, n, threads, simd)
        gen = idx.get("gen_bits", "gen_bits", dtype, n, threads, simd)
        mem = (idx.get("stream2", "stream2", dtype, n, threads, None)
               if op in TWO_INPUT_OPS
               else idx.get("copy", "stream_copy", dtype, n, threads, None))
        if r is None or own is None or gen is None or mem is None:
            continue
        if any(v["median_s"] is None for v in (r, own, gen, mem)):
            continue
        ne = 1e9 / n
        rows.append([
            op, dtype, size_text(n), str(threads), simd,
            _num(r["median_s"] * ne), _num(own["median_s"] * ne),
            _num(gen["median_s"] * ne), _num(mem["median_s"] * ne),
            _times(_sum_ratio(r, [gen, own])),
            _times(idx.ratio(own, mem)),
            _times(idx.bound(r, op, dtype, n, threads, simd)[0]),
        ])
    header = ["op", "dtype", "n", "threads", "simd", "ns/elem", "own ns/elem",
              "gen_bits ns/elem", "memory ns/elem", "x (gen_bits + own)",
              "own x memory", "x bound"]
    return _table(header, "llrrlrrrrrrr", rows)


def _baseline_table(idx: Index, s: Settings) -> str:
    rows = []
    order = {"stream_copy": 0, "stream2": 1, "gen_bits": 2, "copyto": 3, "numpy": 4,
             "torch": 5, "unfused": 6}
    base = [r for r in idx.rows if r["impl"] in order]
    base.sort(key=lambda r: (s.dtypes.index(r["dtype"]), r["n"],
                             -1 if r["threads"] is None else r["threads"],
                             (["copy", "stream2", "gen_bits", *OPS]).index(r["op"]), order[r["impl"]]))
    for r in base:
        thr = "-" if r["threads"] is None else str(r["threads"])
        if r["status"] != "ok":
            rows.append([r["op"], r["dtype"], size_text(r["n"]), thr, r["impl"], r["label"],
                         f"{r['status']}: {r['detail']}", "", "", ""])
            continue
        ne = 1e9 / r["n"]
        impl = r["impl"] if r["simd"] is None else f"{r['impl']} [{r['simd']}]"
        rows.append([r["op"], r["dtype"], size_text(r["n"]), thr, impl, f"`{r['label']}`",
                     _num(r["median_s"] * ne), _num(r["gb_per_s"]),
                     _num(r["min_s"] * ne),
                     f"{(r['q3_s'] - r['q1_s']) / r['median_s'] * 100:.0f}%"])
    header = ["op", "dtype", "n", "threads", "impl", "call", "ns/elem", "GB/s",
              "min ns/elem", "IQR"]
    return _table(header, "llrrllrrrr", rows)


def render_report(s: Settings, machine: dict[str, Any], idx: Index,
                  target_lines: list[str], memory: dict[str, Any] | None, notes: list[str]) -> str:
    m = machine
    machine_line = (
        f"- machine: {m['cpu']}, {m['usable_cpus']} usable CPUs; SIMD available: "
        f"{', '.join(m['simd_available'])}; OpenMP: {'yes' if m['openmp'] else 'no'}")
    versions = (
        f"- fastdropout {m['fastdropout']}, NumPy {m['numpy']}, PyTorch "
        f"{m['torch'] or 'not used'}, Python {m['python']}; {m['date']}")
    method = (
        f"- p = {s.p}; median of up to {s.repeats} round-robin rounds (slow baselines: "
        f"at least 3 within --budget {s.budget:g} s); calls faster than "
        f"{s.min_time * 1e3:g} ms looped within a sample; a ratio to a baseline timed "
        f"with the same threads is the median of the per-round ratios")
    legend = (
        "Public API with `out=` (ns/elem, GB/s = bytes moved / time, min, IQR), the "
        "raw `_core` call and the API without `out=` beside it. `x bound`: time / the "
        "op's bound, named in `bound`: the native copy of the same bytes with the same "
        "threads, or for the ops that draw a mask the slower of that copy and "
        "`gen_bits` (the mask bits alone, same elements, threads and SIMD level); "
        "`x copy`: time / native copy (1.00x = memory speed); "
        "`x np.copyto`: time / `np.copyto`; `vs NumPy`, `vs torch`: how many times "
        "faster than the NumPy idiom / PyTorch.")
    parts = [
        "## fastdropout benchmark", "",
        machine_line, versions, f"- command: `{m['command']}`", method, "",
        "### fastdropout", "", legend, "", _main_table(idx, s), "",
        "### Baselines", "", _baseline_table(idx, s), "",
    ]
    if s.own_work:
        parts += [
            "### Where the time goes (`--own-work`)", "",
            ("Each op that draws a mask, timed again at p = 0, where every element is "
             "kept: the same kernel with the same arithmetic and memory traffic, but no "
             "Philox (`own`). `x (gen_bits + own)`: the time at p over the sum of the "
             "mask bits alone and `own`: 1.00x when the two add up with nothing "
             "overlapped, less when they overlap. `own x memory`: `own` over the native "
             "copy (for dropout_add the read-two-write-one stream) of the same run: "
             "about 1 when the op's own work runs at memory speed. `x bound` as above. "
             "At small sizes a call's fixed cost is in both terms of the sum, which "
             "pulls `x (gen_bits + own)` below 1."),
            "", _own_work_table(idx, s), ""]
    parts += ["### Targets", ""]
    parts += target_lines or ["- (targets are set for float32)"]
    if memory is not None:
        parts += ["", f"### Memory (tracemalloc, float32, n={size_text(memory['n'])})", ""]
        for name in ("forward", "forward_out", "backward_mask"):
            v = memory[name]
            parts.append(
                f"- **{'OK' if v['ok'] else 'MORE'}** {name}: peak {v['peak']:,} B vs "
                f"{v['what']} = {v['expected']:,} B (extra {v['extra']:,} B)")
    parts += ["", "### Notes", ""] + [f"- {t}" for t in notes]
    return "\n".join(parts) + "\n"

