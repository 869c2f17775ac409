"""The command line: the parser, sizes like ``2**24``, and the checked settings."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .constants import (
    BF16_HINT,
    BIG,
    DENSE_OPS,
    DTYPES,
    FULL_SIZES,
    FUSED_OPS,
    OPS,
    QUICK_SIZES,
    SPATIAL_OPS,
)

#: Sizes above this are refused while parsing (before anything is allocated).
MAX_SIZE = 1 << 62


def parse_size(text: str, minimum: int = 1) -> int:
    """An element count written as 65536, 2**16, 2^16 or 1<<16."""
    t = text.strip().replace(" ", "")
    try:
        if "**" in t or "^" in t:
            base, exp = (int(v) for v in t.split("**" if "**" in t else "^"))
            if exp > 64 and base > 1:
                raise argparse.ArgumentTypeError(f"{text!r} is too large for this machine")
            value = int(base**exp)  # 2**-1 -> 0, refused below
        elif "<<" in t:
            base, exp = (int(v) for v in t.split("<<"))
            value = base << min(exp, 64)
        else:
            value = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too large for this machine (and for any: at most 2**62)")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
    return value


def csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m fastdropout bench",
        description="Time fastdropout against a native copy, np.copyto, the NumPy "
        "idiom and PyTorch (when installed), checking every result against "
        "fastdropout.reference first. Default (--quick): float32, sizes "
        "2**10, 2**16, 2**20, 2**24, 1 thread and all threads, the active SIMD "
        "level.",
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="the default grid (see above)")
    mode.add_argument("--full", action="store_true",
                      help="sizes 2**10 .. 2**26 (every other power of two), float16/"
                      "32/64, every SIMD level, 9 repeats (explicit flags still win)")
    ap.add_argument("--sizes", type=lambda s: [parse_size(v) for v in csv_list(s)],
                    help="comma-separated element counts: 65536, 2**16, 2^16, 1<<16")
    ap.add_argument("--dtypes", type=csv_list,
                    help="comma-separated: float16, bfloat16 (needs ml_dtypes), float32, "
                    "float64 (or all: all but bfloat16)")
    ap.add_argument("--threads", type=csv_list,
                    help="comma-separated thread counts; 'max' = the default thread "
                    "count of this process (default: 1,max)")
    ap.add_argument("--simd", type=csv_list,
                    help="'active' (the level in use, normally the best; default), "
                    "'all', or level names as `python -m fastdropout info` lists "
                    "them under 'available'")
    ap.add_argument("--ops", type=csv_list,
                    help=f"comma-separated from {', '.join(OPS)}, or dense, spatial, fused, all")
    ap.add_argument("--repeats", type=int,
                    help="timed rounds per case; the median is reported (default 5, "
                    "--full 9)")
    ap.add_argument("--min-time", type=float, default=2e-3,
                    help="seconds; faster calls are looped inside one sample "
                    "(default 2e-3)")
    ap.add_argument("--budget", type=float, default=2.0,
                    help="seconds per case: slow baselines get fewer rounds (at least "
                    "3) to stay within it (default 2)")
    ap.add_argument("--p", type=float, default=0.5, help="drop probability (default 0.5)")
    ap.add_argument("--own-work", action="store_true",
                    help="also time each op that draws a mask at p = 0 (every element "
                    "kept: the same kernel, its arithmetic and memory traffic, no "
                    "Philox) and report where the time at --p goes: the mask bits, "
                    "the op's own work, or both at once")
    ap.add_argument("--check-full-max", type=parse_size, default=1 << 16,
                    help="check whole results up to this many elements; larger ones "
                    "in windows (default 2**16)")
    ap.add_argument("--memory-n", type=lambda t: parse_size(t, 0), default=BIG,
                    help="elements of the float32 tracemalloc check (default 2**24; "
                    "0 skips it)")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument("--md", type=Path, help="also write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write all raw numbers here")
    ap.add_argument("--plot", type=Path,
                    help="write a PNG plot (ns/element vs size; needs matplotlib)")
    return ap


@dataclass
class Settings:
    sizes: list[int]
    dtypes: list[str]
    threads: list[int]
    simd: list[str]
    ops: list[str]
    repeats: int
    min_time: float
    budget: float
    p: float
    own_work: bool
    check_full_max: int
    memory_n: int
    torch: bool
    md: Path | None
    json: Path | None
    plot: Path | None


def make_settings(ns: argparse.Namespace, core: Any) -> Settings:
    full = bool(ns.full)
    sizes = ns.sizes or list(FULL_SIZES if full else QUICK_SIZES)
    dtypes = ns.dtypes or (["float32", "float64", "float16"] if full else ["float32"])
    if "all" in dtypes:
        dtypes = ["float32", "float64", "float16"]
    dtypes = [{"f16": "float16", "f32": "float32", "f64": "float64",
               "bf16": "bfloat16"}.get(d, d) for d in dtypes]
    for d in dtypes:
        if d == "bfloat16" and d not in DTYPES:
            DTYPES[d] = bfloat16_type()
        if d not in DTYPES:
            raise ValueError(f"--dtypes: unknown dtype {d!r} (float16, bfloat16, "
                             "float32, float64)")
    max_threads = core.get_num_threads()
    threads: list[int] = []
    for t in ns.threads or ["1", "max"]:
        try:
            v = max_threads if t in ("max", "all") else int(t)
        except ValueError:
            raise ValueError(f"--threads: not a thread count: {t!r}") from None
        if v < 1:
            raise ValueError(f"--threads: must be >= 1, got {t!r}")
        if v not in threads:
            threads.append(v)
    available = list(core._available_simd())
    simd = ns.simd or (available if full else ["active"])
    if "all" in simd:
        simd = available
    simd = [core.simd_level() if s in ("best", "active") else s for s in simd]
    for s in simd:
        if s not in available:
            raise ValueError(f"--simd: {s!r} is not available here "
                             f"(available: {', '.join(available)})")
    simd = list(dict.fromkeys(simd))
    ops = ns.ops or list(OPS)
    expanded: list[str] = []
    for o in ops:
        if o == "all":
            expanded += OPS
        elif o == "dense":
            expanded += DENSE_OPS
        elif o == "spatial":
            expanded += SPATIAL_OPS
        elif o == "fused":
            expanded += FUSED_OPS
        elif o in OPS:
            expanded.append(o)
        else:
            raise ValueError(f"--ops: unknown op {o!r} (from {', '.join(OPS)}, or "
                             "dense, spatial, fused, all)")
    ops = [o for o in OPS if o in expanded]
    check_memory(sizes, dtypes)
    repeats = ns.repeats if ns.repeats is not None else (9 if full else 5)
    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    if not 0.0 <= ns.p < 1.0:
        raise ValueError(f"--p must be in [0, 1) for a benchmark, got {ns.p}")
    if ns.own_work and ns.p == 0.0:
        raise ValueError("--own-work compares --p with p = 0, so --p must be above 0")
    return Settings(sizes=sizes, dtypes=dtypes, threads=threads, simd=simd, ops=ops,
                    repeats=repeats, min_time=max(0.0, ns.min_time),
                    budget=max(0.0, ns.budget), p=float(ns.p), own_work=bool(ns.own_work),
                    check_full_max=ns.check_full_max, memory_n=ns.memory_n,
                    torch=not ns.no_torch, md=ns.md, json=ns.json, plot=ns.plot)



def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def bytes_needed(n: int, dtype: str) -> int:
    """About the peak memory of one (dtype, n) block: x, y and the mask bits, and the
    NumPy idiom's temporaries (a float64 random draw, a bool mask, the product)."""
    item = int(np.dtype(DTYPES[dtype]).itemsize)
    return n * (3 * item + 8 + 1) + n // 8


def check_memory(sizes: list[int], dtypes: list[str]) -> None:
    """ValueError naming the size when a block would not fit in physical memory."""
    total = physical_memory()
    if total is None:
        return
    for dtype in dtypes:
        for n in sizes:
            need = bytes_needed(n, dtype)
            if need > total:
                raise ValueError(
                    f"--sizes: {n} {dtype} elements are too large for this machine: "
                    f"they need about {need / 2**30:.1f} GiB, more than its "
                    f"{total / 2**30:.1f} GiB of memory")


def bfloat16_type() -> Any:
    """ml_dtypes.bfloat16, imported when --dtypes asks for it (an optional package)."""
    try:
        import ml_dtypes  # optional, imported lazily
    except ImportError:
        raise ValueError(f"--dtypes: bfloat16 needs ml_dtypes ({BF16_HINT})") from None
    return ml_dtypes.bfloat16
