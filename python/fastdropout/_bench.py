"""``python -m fastdropout bench``: how fast fastdropout is, next to what it replaces.

Every number is the median of repeated runs (minimum and interquartile range
beside it), and every ratio is to a baseline timed in the same run, in the same
round-robin rounds, on the same arrays and the same thread count:

- ``_core._stream_copy``: a native multi-threaded ``memcpy`` of the same bytes
  with the same threads, the physical limit (``x copy`` = time / copy time);
- ``np.copyto`` of the same array;
- the NumPy idiom ``x * (rng.random(x.shape) >= p) / (1 - p)`` (and its
  backward ``g * keep / (1 - p)``);
- ``torch.nn.functional.dropout``, ``torch.native_dropout`` and friends when
  PyTorch is installed (imported lazily, threads set to match).

Each fastdropout result is checked bit for bit against ``fastdropout.reference``
before it is timed (the whole array up to ``--check-full-max`` elements, above
that windows at the start, the middle, a random place and the end, each checked
with the reference run at the window's stream offset); a wrong result is
reported as WRONG, never timed, and the exit status is 1.

Output: a Markdown report on stdout (``--md`` also writes it), all raw numbers
and the machine in ``--json``, a log-log plot of ns/element in ``--plot``.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import shlex
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["OPS", "main"]

#: Operations, in report order.
OPS: tuple[str, ...] = (
    "forward",
    "forward_mask",
    "backward_mask",
    "backward_regen",
    "spatial_cf_forward",
    "spatial_cf_backward",
    "spatial_cl_forward",
    "spatial_cl_backward",
)

OP_DOC = {
    "forward": "dropout(x, p, seed=s, out=y)",
    "forward_mask": "dropout(x, p, seed=s, out=y, return_mask=True)",
    "backward_mask": "dropout_backward(g, mask, out=y)",
    "backward_regen": "dropout_backward(g, p=p, seed=s, out=y) (mask regenerated)",
    "spatial_cf_forward": "spatial_dropout(x, p, seed=s, out=y, return_mask=True), "
    "(N, C, H, W)",
    "spatial_cf_backward": "dropout_backward(g, mask, out=y), (N, C, H, W)",
    "spatial_cl_forward": 'spatial_dropout(..., data_format="channels_last"), '
    "(N, H, W, C)",
    "spatial_cl_backward": "dropout_backward(g, mask, out=y), (N, H, W, C)",
}

IMPL_DOC = {
    "api": "fastdropout public API, output preallocated (out=)",
    "api_alloc": "fastdropout public API without out= (allocation included)",
    "core": "raw fastdropout._core call (no Python validation)",
    "stream_copy": "_core._stream_copy: native memcpy, same bytes, same threads",
    "copyto": "np.copyto of the same array",
    "numpy": "NumPy idiom",
    "torch": "PyTorch",
}

DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
UINTS = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}
QUICK_SIZES = (1 << 10, 1 << 16, 1 << 20, 1 << 24)
FULL_SIZES = tuple(1 << k for k in range(10, 27, 2))
TORCH_HINT = "pip install torch==2.13.0 to include PyTorch"
SEED = 0x9E3779B97F4A7C15  # above 2**32, so both key words are used
CHANNELS = 32  # spatial shapes: C = 32 channels
WINDOW = 8192  # elements per sampled check window (a multiple of 64)

# The targets the project holds itself to (README "Performance").
BIG = 1 << 24
SMALL = 1 << 10

FloatArray = Any  # numpy arrays of float16/32/64; kept loose for mypy


class WrongResult(Exception):
    """A fastdropout result differs from fastdropout.reference."""


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _max_size() -> int:
    """The largest size the benchmark takes: its arrays (the float64 input draw, x,
    y, out: about 32 bytes per element) must fit in this machine's memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 1 << 32
    return max(1 << 16, memory // 32)


def _parse_size(text: str, minimum: int = 1) -> int:
    t = text.strip().replace(" ", "")
    try:
        if "**" in t or "^" in t:
            base, exp = t.split("**" if "**" in t else "^")
            # (exponents past 64 are far too large anyway: not computed)
            value = int(int(base) ** min(int(exp), 65))  # 2**-1 -> 0, refused below
        elif "<<" in t:
            base, exp = t.split("<<")
            value = int(base) << min(int(exp), 65)
        else:
            value = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
    largest = _max_size()
    if value > largest:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too large for this machine: the benchmark needs about 32 "
            f"bytes per element, so it takes at most {largest} elements here"
        )
    return value


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _build_parser() -> argparse.ArgumentParser:
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
    ap.add_argument("--sizes", type=lambda s: [_parse_size(v) for v in _csv(s)],
                    help="comma-separated element counts: 65536, 2**16, 2^16, 1<<16")
    ap.add_argument("--dtypes", type=_csv,
                    help="comma-separated: float16, float32, float64 (or all)")
    ap.add_argument("--threads", type=_csv,
                    help="comma-separated thread counts; 'max' = the default thread "
                    "count of this process (default: 1,max)")
    ap.add_argument("--simd", type=_csv,
                    help="'active' (the level in use, normally the best; default), "
                    "'all', or names from _core._available_simd()")
    ap.add_argument("--ops", type=_csv,
                    help=f"comma-separated from {', '.join(OPS)}, or dense, spatial, all")
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
    ap.add_argument("--check-full-max", type=_parse_size, default=1 << 16,
                    help="check whole results up to this many elements; larger ones "
                    "in windows (default 2**16)")
    ap.add_argument("--memory-n", type=lambda t: _parse_size(t, 0), default=BIG,
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
    check_full_max: int
    memory_n: int
    torch: bool
    md: Path | None
    json: Path | None
    plot: Path | None


def _settings(ns: argparse.Namespace, core: Any) -> Settings:
    full = bool(ns.full)
    sizes = ns.sizes or list(FULL_SIZES if full else QUICK_SIZES)
    dtypes = ns.dtypes or (["float32", "float64", "float16"] if full else ["float32"])
    if "all" in dtypes:
        dtypes = ["float32", "float64", "float16"]
    dtypes = [{"f16": "float16", "f32": "float32", "f64": "float64"}.get(d, d)
              for d in dtypes]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"--dtypes: unknown dtype {d!r} (float16, float32, float64)")
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
            expanded += OPS[:4]
        elif o == "spatial":
            expanded += OPS[4:]
        elif o in OPS:
            expanded.append(o)
        else:
            raise ValueError(f"--ops: unknown op {o!r} (from {', '.join(OPS)}, or "
                             "dense, spatial, all)")
    ops = [o for o in OPS if o in expanded]
    repeats = ns.repeats if ns.repeats is not None else (9 if full else 5)
    if repeats < 1:
        raise ValueError("--repeats must be >= 1")
    if not 0.0 <= ns.p < 1.0:
        raise ValueError(f"--p must be in [0, 1) for a benchmark, got {ns.p}")
    return Settings(sizes=sizes, dtypes=dtypes, threads=threads, simd=simd, ops=ops,
                    repeats=repeats, min_time=max(0.0, ns.min_time),
                    budget=max(0.0, ns.budget), p=float(ns.p),
                    check_full_max=ns.check_full_max, memory_n=ns.memory_n,
                    torch=not ns.no_torch, md=ns.md, json=ns.json, plot=ns.plot)


# ---------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open() as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _machine(fd: Any, core: Any, torch: Any, argv: list[str]) -> dict[str, Any]:
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "fastdropout": fd.__version__,
        "simd_available": list(core._available_simd()),
        "simd_compiled": list(core._compiled_simd()),
        "simd_default": core.simd_level(),
        "openmp": bool(core.has_openmp()),
        "default_threads": core.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, "-m", "fastdropout", "bench",
                               *argv]),
        "argv": list(argv),
        "sys_argv": list(sys.argv),
    }


def _load_torch(wanted: bool) -> tuple[Any, str]:
    if not wanted:
        return None, "PyTorch left out (--no-torch)."
    try:
        import torch  # optional, imported lazily
    except ImportError:
        return None, f"PyTorch is not installed: {TORCH_HINT}."
    return torch, f"PyTorch {torch.__version__} (threads set to match each row)."


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------


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


def _sample(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _run_group(cases: list[Case], s: Settings, core: Any) -> None:
    """Check, warm up and calibrate every case, then time them round-robin, so
    that drift in the machine's speed is shared by the cases and their baselines."""
    live: list[Case] = []
    for c in cases:
        if c.simd is not None:
            core._set_simd(c.simd)
        try:
            if c.check is not None:
                c.checked = c.check()
            t = _sample(c.fn, 1)  # warm-up: page faults, caches, thread pool
            if t < s.min_time:
                t = _sample(c.fn, 1)
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
                    c.samples.append(_sample(c.fn, c.number))
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------
# data, reference results and checks
# ---------------------------------------------------------------------------


def spatial_shape(n: int) -> tuple[int, int, int, int] | None:
    """``(N, C, H, W)`` with ``N*C*H*W == n``: C = 32 channels, H*W the largest
    power of two dividing ``n / C`` that is at most 64 x 64 and leaves N >= 4 where
    it can. None if ``n % 32``."""
    if n % CHANNELS:
        return None
    rest = n // CHANNELS
    hw = 1
    while hw < 4096 and rest % (2 * hw) == 0 and rest // (2 * hw) >= 4:
        hw *= 2
    h = 1 << (hw.bit_length() - 1) // 2
    return rest // hw, CHANNELS, h, hw // h


@dataclass
class Window:
    start: int  # flat element range [start, stop) of the output
    stop: int
    y: FloatArray  # expected values there (flat)
    bits_start: int = 0  # mask bytes [bits_start, bits_start + len(bits))
    bits: Any = None  # expected mask bytes, or None


class Data:
    """The arrays of one (dtype, n) and the reference results, computed once and
    shared by every thread count, SIMD level and implementation."""

    def __init__(self, fd: Any, dtype: str, n: int, s: Settings) -> None:
        self.fd = fd
        self.dtype = dtype
        self.n = n
        self.p = s.p
        self.seed = SEED
        self.full_max = s.check_full_max
        rng = np.random.default_rng(n)
        self.x = (rng.standard_normal(n) * 2.0).astype(DTYPES[dtype])
        self.g = self.x  # the gradient: any values do; sharing saves memory
        self.y = np.zeros_like(self.x)  # zeros: the pages are faulted in now
        self.bits = np.zeros((n + 7) // 8, np.uint8)
        self.sshape = spatial_shape(n)
        self._rng = np.random.default_rng(12345)
        self._expected: dict[str, list[Window]] = {}
        self._masks: dict[str, Any] = {}

    # -- layouts --------------------------------------------------------------
    @property
    def n_mask_spatial(self) -> int:
        assert self.sshape is not None
        return self.sshape[0] * self.sshape[1]

    def spatial(self, layout: str, a: FloatArray) -> FloatArray:
        assert self.sshape is not None
        nn, c, h, w = self.sshape
        return a.reshape((nn, c, h, w) if layout == "cf" else (nn, h, w, c))

    @staticmethod
    def axes(layout: str) -> tuple[int, ...]:
        return (2, 3) if layout == "cf" else (1, 2)

    def mask_shape(self, layout: str, items: int | None = None) -> tuple[int, ...]:
        assert self.sshape is not None
        nn, c, _, _ = self.sshape
        k = nn if items is None else items
        return (k, c, 1, 1) if layout == "cf" else (k, 1, 1, c)

    def mask(self, kind: str) -> Any:
        """The forward mask that the backward cases consume ("dense", "cf", "cl")."""
        if kind not in self._masks:
            fd = self.fd
            if kind == "dense":
                m = fd.dropout(self.x, self.p, seed=self.seed, return_mask=True)[1]
            else:
                fmt = "channels_first" if kind == "cf" else "channels_last"
                m = fd.spatial_dropout(self.spatial(kind, self.x), self.p,
                                       data_format=fmt, seed=self.seed,
                                       return_mask=True)[1]
            self._masks[kind] = m
        return self._masks[kind]

    # -- reference ------------------------------------------------------------
    def _dense_windows(self) -> list[tuple[int, int]]:
        n = self.n
        if n <= max(self.full_max, WINDOW):
            return [(0, n)]
        starts = [0, (n // 2 - WINDOW // 2) // 64 * 64,
                  int(self._rng.integers(0, n - WINDOW)) // 64 * 64,
                  (n - WINDOW) // 64 * 64]
        return [(a, n if a == starts[-1] else a + WINDOW)
                for a in dict.fromkeys(starts)]

    def _item_windows(self) -> list[tuple[int, int]]:
        assert self.sshape is not None
        nn = self.sshape[0]
        if self.n <= self.full_max or nn == 1:
            return [(0, nn)]
        picks = [0, nn // 2, int(self._rng.integers(0, nn)), nn - 1]
        return [(i, i + 1) for i in sorted(dict.fromkeys(picks))]

    def check_note(self, op: str) -> str:
        if op.startswith("spatial"):
            windows = self._item_windows()
            if len(windows) == 1:
                return "full"
            return f"sampled: {len(windows)} of {self.sshape[0]} samples"  # type: ignore[index]
        windows = self._dense_windows()
        if len(windows) == 1:
            return "full"
        return f"sampled: {len(windows)} windows of {WINDOW} elements"

    def expected(self, op: str) -> list[Window]:
        if op not in self._expected:
            if op == "forward":  # the values of forward_mask, without the bits
                self._expected[op] = [Window(w.start, w.stop, w.y)
                                      for w in self.expected("forward_mask")]
            else:
                self._expected[op] = self._compute_expected(op)
        return self._expected[op]

    def _compute_expected(self, op: str) -> list[Window]:
        ref = self.fd.reference
        p, seed = self.p, self.seed
        out: list[Window] = []
        if not op.startswith("spatial"):
            xf = self.x.reshape(-1)
            for a, b in self._dense_windows():
                if op == "forward_mask":
                    y, m = ref.dropout(xf[a:b], p, seed=seed, offset=a, return_mask=True)
                    out.append(Window(a, b, y, a // 8, np.array(m.bits)))
                elif op == "backward_regen":
                    y = ref.dropout_backward(xf[a:b], p=p, seed=seed, offset=a)
                    out.append(Window(a, b, y))
                else:  # backward_mask: the reference applied to the same mask
                    mask = self.mask("dense")
                    wm = self.fd.Mask(mask.bits[a // 8:(b + 7) // 8], (b - a,), mask.p,
                                      mask.mode, seed, a)
                    out.append(Window(a, b, ref.dropout_backward(xf[a:b], wm)))
            return out
        layout = op.split("_")[1]
        fmt = "channels_first" if layout == "cf" else "channels_last"
        xs = self.spatial(layout, self.x)
        assert self.sshape is not None
        c = self.sshape[1]
        per_item = self.n // self.sshape[0]
        for i, j in self._item_windows():
            a, b = i * per_item, j * per_item
            if op.endswith("forward"):
                y, m = ref.spatial_dropout(xs[i:j], p, data_format=fmt, seed=seed,
                                           offset=i * c, return_mask=True)
                out.append(Window(a, b, y.reshape(-1), i * c // 8, np.array(m.bits)))
            else:
                mask = self.mask(layout)
                wm = self.fd.Mask(mask.bits[i * c // 8:(j * c + 7) // 8],
                                  self.mask_shape(layout, j - i), mask.p, mask.mode,
                                  seed, i * c, self.axes(layout))
                out.append(Window(a, b, ref.dropout_backward(xs[i:j], wm).reshape(-1)))
        return out

    def verify(self, op: str, y: FloatArray, bits: Any) -> str:
        """Raise WrongResult unless ``y`` (and ``bits``) equal the reference bit for
        bit; return how much was checked."""
        u = UINTS[self.dtype]
        flat = np.ascontiguousarray(y).reshape(-1).view(u)
        for w in self.expected(op):
            got = flat[w.start:w.stop]
            want = np.ascontiguousarray(w.y).reshape(-1).view(u)
            if got.shape != want.shape or not np.array_equal(got, want):
                where = ""
                if got.shape == want.shape:
                    first = int(np.flatnonzero(got != want)[0])
                    where = f" first at element {w.start + first}"
                raise WrongResult(f"values differ from fastdropout.reference{where}")
            if w.bits is not None:
                gb = np.asarray(bits).reshape(-1)[w.bits_start:w.bits_start + len(w.bits)]
                if not np.array_equal(gb, w.bits):
                    raise WrongResult("mask bits differ from fastdropout.reference")
        return self.check_note(op)


# ---------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------


def _op_bytes(op: str, d: Data) -> int:
    data = 2 * d.x.nbytes
    if op in ("forward_mask", "backward_mask"):
        return data + (d.n + 7) // 8
    if op.startswith("spatial") and d.sshape is not None:
        return data + (d.sshape[0] * d.sshape[1] + 7) // 8
    return data


def _fastdropout_cases(d: Data, s: Settings, threads: int, simd: str,
                       core: Any) -> list[Case]:
    """The public API (with and without ``out=``) and the raw ``_core`` call of
    every op, each with a check against the reference."""
    from . import _validate  # the threshold and scale the public API computes

    fd = d.fd
    dropout, backward = fd.dropout, fd.dropout_backward
    p, seed, x, y, g, bits = d.p, d.seed, d.x, d.y, d.g, d.bits
    thr = _validate.threshold(p)
    scale = float(_validate.inverted_scale(p, x.dtype))
    cases: list[Case] = []

    def add(op: str, impl: str, label: str, fn: Callable[[], Any],
            result: Callable[[Any], tuple[FloatArray, Any]],
            shape: tuple[int, ...] = (d.n,)) -> None:
        def check() -> str:
            out_y, out_bits = result(fn())
            return d.verify(op, out_y, out_bits)

        cases.append(Case(op, impl, label, d.dtype, d.n, shape, threads, simd,
                          _op_bytes(op, d), fn, check))

    def y_of(r: Any) -> tuple[FloatArray, Any]:
        return r, None

    def y_mask_of(r: Any) -> tuple[FloatArray, Any]:
        return r[0], r[1].bits

    def written(out: FloatArray, out_bits: Any = None) -> Callable[[Any], Any]:
        return lambda _: (out, out_bits)

    def spatial(op: str, layout: str) -> None:
        fmt = "channels_first" if layout == "cf" else "channels_last"
        xs, ys, gs = d.spatial(layout, x), d.spatial(layout, y), d.spatial(layout, g)
        axes = d.axes(layout)
        shape = tuple(xs.shape)
        if op.endswith("forward"):
            sbits = np.zeros((d.n_mask_spatial + 7) // 8, np.uint8)
            add(op, "api", f"spatial_dropout({fmt}, out=y, return_mask=True)",
                lambda: fd.spatial_dropout(xs, p, data_format=fmt, seed=seed, out=ys,
                                           return_mask=True),
                y_mask_of, shape)
            add(op, "core", "_core.forward(bits, axes)",
                lambda: core.forward(xs, ys, seed, 0, thr, scale, True, sbits, axes),
                written(ys, sbits), shape)
        else:
            mask = d.mask(layout)
            mbits = mask.bits
            add(op, "api", f"dropout_backward({fmt} mask, out=y)",
                lambda: backward(gs, mask, out=ys), y_of, shape)
            add(op, "core", "_core.backward_mask(axes)",
                lambda: core.backward_mask(gs, ys, mbits, scale, True, axes),
                written(ys), shape)

    def backward_mask(op: str) -> None:
        mask = d.mask("dense")
        mbits = mask.bits
        add(op, "api", "dropout_backward(mask, out=y)",
            lambda: backward(g, mask, out=y), y_of)
        add(op, "api_alloc", "dropout_backward(mask)", lambda: backward(g, mask), y_of)
        add(op, "core", "_core.backward_mask",
            lambda: core.backward_mask(g, y, mbits, scale, True, ()), written(y))

    for op in s.ops:
        if op == "forward":
            add(op, "api", "dropout(out=y)", lambda: dropout(x, p, seed=seed, out=y), y_of)
            add(op, "api_alloc", "dropout()", lambda: dropout(x, p, seed=seed), y_of)
            add(op, "core", "_core.forward",
                lambda: core.forward(x, y, seed, 0, thr, scale, True, None, ()),
                written(y))
        elif op == "forward_mask":
            add(op, "api", "dropout(out=y, return_mask=True)",
                lambda: dropout(x, p, seed=seed, out=y, return_mask=True), y_mask_of)
            add(op, "api_alloc", "dropout(return_mask=True)",
                lambda: dropout(x, p, seed=seed, return_mask=True), y_mask_of)
            add(op, "core", "_core.forward(bits)",
                lambda: core.forward(x, y, seed, 0, thr, scale, True, bits, ()),
                written(y, bits))
        elif op == "backward_mask":
            backward_mask(op)
        elif op == "backward_regen":
            add(op, "api", "dropout_backward(p=, seed=, out=y)",
                lambda: backward(g, p=p, seed=seed, out=y), y_of)
        elif d.sshape is not None:
            spatial(op, op.split("_")[1])
    return cases


def _copy_cases(d: Data, threads: int, core: Any) -> list[Case]:
    x, y = d.x, d.y
    nb = 2 * x.nbytes
    return [
        Case("copy", "stream_copy", "_core._stream_copy", d.dtype, d.n, (d.n,), threads,
             None, nb, lambda: core._stream_copy(x, y)),
        Case("copy", "copyto", "np.copyto", d.dtype, d.n, (d.n,), threads, None, nb,
             lambda: np.copyto(y, x)),
    ]


def _numpy_cases(d: Data, s: Settings) -> list[Case]:
    """The NumPy idiom (forward: a new random draw every call) and its backward."""
    p = d.p
    rng = np.random.default_rng(1)
    x, g = d.x, d.g
    nb = 2 * x.nbytes
    cases: list[Case] = []

    def add(op: str, label: str, fn: Callable[[], Any], shape: tuple[int, ...],
            nbytes: int = nb) -> None:
        cases.append(Case(op, "numpy", label, d.dtype, d.n, shape, None, None, nbytes,
                          fn))

    def spatial(layout: str, forward: bool) -> None:
        xs = d.spatial(layout, x)
        mshape = d.mask_shape(layout)
        if forward:
            add(f"spatial_{layout}_forward",
                "x * (rng.random(mask_shape) >= p) / (1 - p)",
                lambda: xs * (rng.random(mshape) >= p) / (1 - p), tuple(xs.shape))
        else:
            keep = rng.random(mshape) >= p
            add(f"spatial_{layout}_backward", "g * keep / (1 - p)",
                lambda: xs * keep / (1 - p), tuple(xs.shape))

    ops = set(s.ops)
    if ops & {"forward", "forward_mask", "backward_regen"}:
        add("forward", "x * (rng.random(x.shape) >= p) / (1 - p)",
            lambda: x * (rng.random(x.shape) >= p) / (1 - p), (d.n,))
    if "backward_mask" in ops:
        keep = rng.random(x.shape) >= p
        add("backward_mask", "g * keep / (1 - p)", lambda: g * keep / (1 - p), (d.n,),
            nb + keep.nbytes)
    if d.sshape is not None:
        for op in OPS[4:]:
            if op in ops:
                spatial(op.split("_")[1], op.endswith("forward"))
    return cases


def _torch_cases(d: Data, s: Settings, threads: int, torch: Any) -> list[Case]:
    """PyTorch's CPU dropout: F.dropout, native_dropout (which returns the bool
    mask), native_dropout_backward, F.dropout2d in both memory formats."""
    F = torch.nn.functional
    p = d.p
    xt = torch.from_numpy(d.x)
    nb = 2 * d.x.nbytes
    cases: list[Case] = []

    def add(op: str, label: str, fn: Callable[[], Any], shape: tuple[int, ...],
            nbytes: int = nb) -> None:
        cases.append(Case(op, "torch", label, d.dtype, d.n, shape, threads, None,
                          nbytes, fn))

    def spatial(layout: str, forward: bool) -> None:
        xs = torch.from_numpy(d.spatial(layout, d.x))
        if layout == "cl":  # an (N, C, H, W) view of (N, H, W, C): torch.channels_last
            xs = xs.permute(0, 3, 1, 2)
        shape = tuple(d.spatial(layout, d.x).shape)
        if forward:
            add(f"spatial_{layout}_forward", "F.dropout2d",
                lambda: F.dropout2d(xs, p, training=True), shape)
        else:
            nn, c = d.mask_shape("cf")[:2]
            noise = (torch.rand(nn, c, 1, 1) >= p).to(xt.dtype) / (1 - p)
            add(f"spatial_{layout}_backward", "g * noise (autograd's backward)",
                lambda: xs * noise, shape)

    def backward_mask() -> None:
        mt = torch.rand(xt.shape) >= p
        scale = 1.0 / (1.0 - p)
        add("backward_mask", "native_dropout_backward",
            lambda: torch.ops.aten.native_dropout_backward(xt, mt, scale), (d.n,),
            nb + d.n)

    ops = set(s.ops)
    if "forward" in ops:
        add("forward", "F.dropout", lambda: F.dropout(xt, p, training=True), (d.n,))
    if "forward_mask" in ops:
        add("forward_mask", "torch.native_dropout",
            lambda: torch.native_dropout(xt, p, True), (d.n,), nb + d.n)
    if "backward_mask" in ops:
        backward_mask()
    if d.sshape is not None:
        for op in OPS[4:]:
            if op in ops:
                spatial(op.split("_")[1], op.endswith("forward"))
    return cases


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


def _set_threads(fd: Any, torch: Any, n: int) -> None:
    fd.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def _run(s: Settings, fd: Any, core: Any, torch: Any) -> list[Case]:
    start = time.perf_counter()
    done: list[Case] = []
    blocks = [(dt, n) for dt in s.dtypes for n in s.sizes]
    for k, (dtype, n) in enumerate(blocks, 1):
        t0 = time.perf_counter()
        d = Data(fd, dtype, n, s)
        for ti, threads in enumerate(s.threads):
            _set_threads(fd, torch, threads)
            cases = _copy_cases(d, threads, core)
            if ti == 0:
                cases += _numpy_cases(d, s)
            if torch is not None:
                cases += _torch_cases(d, s, threads, torch)
            for simd in s.simd:
                core._set_simd(simd)
                cases += _fastdropout_cases(d, s, threads, simd, core)
            _run_group(cases, s, core)
            done += cases
        print(f"[{k}/{len(blocks)}] {dtype} n={_size(n)}: {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        del d
    print(f"benchmark done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return done


def _memory(fd: Any, n: int, p: float) -> dict[str, Any]:
    """Peak traced memory of forward/backward calls on n float32 elements (NumPy
    reports its data allocations to tracemalloc)."""
    x = np.ones(n, np.float32)
    fd.dropout(x[:64], p, seed=1, return_mask=True)  # warm caches, imports
    out: dict[str, Any] = {"n": n, "dtype": "float32"}

    def traced(fn: Callable[[], Any]) -> tuple[int, Any]:
        tracemalloc.start()
        try:
            r = fn()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak, r

    peak, (y, mask) = traced(lambda: fd.dropout(x, p, seed=1, return_mask=True))
    out["forward"] = {"peak": peak, "expected": y.nbytes + mask.bits.nbytes,
                      "what": "y.nbytes + mask.bits.nbytes"}
    peak, _ = traced(lambda: fd.dropout(x, p, seed=1, out=y, return_mask=True))
    out["forward_out"] = {"peak": peak, "expected": mask.bits.nbytes,
                          "what": "mask.bits.nbytes (out= given)"}
    peak, g = traced(lambda: fd.dropout_backward(y, mask))
    out["backward_mask"] = {"peak": peak, "expected": g.nbytes, "what": "grad.nbytes"}
    for v in out.values():
        if isinstance(v, dict):
            v["extra"] = v["peak"] - v["expected"]
            # a few KiB of Python objects (the Mask, argument tuples) are fine
            v["ok"] = v["extra"] <= max(64 * 1024, v["expected"] // 100)
    return out


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def _size(n: int) -> str:
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
              "backward_mask": "backward_mask"}


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


def _ns_cell(r: dict[str, Any] | None, ns_per_s_elem: float) -> str:
    if r is None:
        return "-"
    if r["status"] != "ok":
        return str(r["status"])
    return _num(r["median_s"] * ns_per_s_elem)


def _main_table(idx: Index, s: Settings) -> str:
    rows = []
    for dtype in s.dtypes:
        for n in s.sizes:
            for threads in s.threads:
                for simd in s.simd:
                    for op in s.ops:
                        r = idx.get(op, "api", dtype, n, threads, simd)
                        if r is None:
                            continue
                        key = (dtype, n, threads, simd)
                        if r["status"] != "ok":
                            rows.append([op, dtype, _size(n), str(threads), simd,
                                         f"**{r['status']}**: {r['detail']} (not timed)"]
                                        + [""] * 10)
                            continue
                        med = r["median_s"]
                        ne = 1e9 / n
                        core_ns = _ns_cell(idx.get(op, "core", *key), ne)
                        alloc_ns = _ns_cell(idx.get(op, "api_alloc", *key), ne)
                        rows.append([
                            op, dtype, _size(n), str(threads), simd,
                            _num(med * ne), _num(r["gb_per_s"]), _num(r["min_s"] * ne),
                            f"{(r['q3_s'] - r['q1_s']) / med * 100:.0f}%",
                            core_ns, alloc_ns,
                            _times(idx.ratio(r, idx.baseline_row("stream_copy", op, dtype,
                                                                 n, threads))),
                            _times(idx.ratio(r, idx.baseline_row("copyto", op, dtype, n,
                                                                 threads))),
                            _speedup(idx.ratio(idx.baseline_row("numpy", op, dtype, n, None),
                                               r)),
                            _speedup(idx.ratio(idx.baseline_row("torch", op, dtype, n,
                                                                threads), r)),
                            "full" if r["checked"] == "full" else "sampled",
                        ])
    header = ["op", "dtype", "n", "threads", "simd", "ns/elem", "GB/s", "min ns/elem",
              "IQR", "_core ns/elem", "no out= ns/elem", "x copy", "x np.copyto",
              "vs NumPy", "vs torch", "checked"]
    return _table(header, "llrrlrrrrrrrrrrl", rows)


def _baseline_table(idx: Index, s: Settings) -> str:
    rows = []
    order = {"stream_copy": 0, "copyto": 1, "numpy": 2, "torch": 3}
    base = [r for r in idx.rows if r["impl"] in order]
    base.sort(key=lambda r: (s.dtypes.index(r["dtype"]), r["n"],
                             -1 if r["threads"] is None else r["threads"],
                             (["copy", *OPS]).index(r["op"]), order[r["impl"]]))
    for r in base:
        thr = "-" if r["threads"] is None else str(r["threads"])
        if r["status"] != "ok":
            rows.append([r["op"], r["dtype"], _size(r["n"]), thr, r["impl"], r["label"],
                         f"{r['status']}: {r['detail']}", "", "", ""])
            continue
        ne = 1e9 / r["n"]
        rows.append([r["op"], r["dtype"], _size(r["n"]), thr, r["impl"], f"`{r['label']}`",
                     _num(r["median_s"] * ne), _num(r["gb_per_s"]),
                     _num(r["min_s"] * ne),
                     f"{(r['q3_s'] - r['q1_s']) / r['median_s'] * 100:.0f}%"])
    header = ["op", "dtype", "n", "threads", "impl", "call", "ns/elem", "GB/s",
              "min ns/elem", "IQR"]
    return _table(header, "llrrllrrrr", rows)


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
        where = f"{self.dtype} n={_size(self.n)}{thr}, {self.simd}"
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


def _targets(idx: Index, s: Settings, default_simd: str, have_torch: bool) -> list[Target]:
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
        note = "" if n >= BIG else f"informational: the target is set at n={_size(BIG)}"
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
            for op in ("backward_mask", *OPS[4:]):
                if op in s.ops:
                    out.append(Target(
                        f"{op} vs native copy", dt, n, threads, simd,
                        idx.ratio(row(op, "api", n, threads),
                                  base("stream_copy", op, n, threads)),
                        1.15, "max", note))
    for n in small if "forward" in s.ops else []:
        note = "" if n <= SMALL else f"informational: the target is set at n={_size(SMALL)}"
        note = (note + "; " if note else "") + "public API without out=, validation included"
        out.append(Target("dense forward vs NumPy idiom, small array", dt, n, tmax, simd,
                          idx.ratio(base("numpy", "forward", n, None),
                                    row("forward", "api_alloc", n, tmax)), 3, "min", note))
    return out


def _report(s: Settings, machine: dict[str, Any], idx: Index, targets: list[Target],
            memory: dict[str, Any] | None, notes: list[str]) -> str:
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
        "raw `_core` call and the API without `out=` beside it. `x copy`: time / "
        "native copy of the same bytes with the same threads (1.00x = memory speed); "
        "`x np.copyto`: time / `np.copyto`; `vs NumPy`, `vs torch`: how many times "
        "faster than the NumPy idiom / PyTorch.")
    parts = [
        "## fastdropout benchmark", "",
        machine_line, versions, f"- command: `{m['command']}`", method, "",
        "### fastdropout", "", legend, "", _main_table(idx, s), "",
        "### Baselines", "", _baseline_table(idx, s), "",
        "### Targets", "",
    ]
    parts += [t.line() for t in targets] or ["- (targets are set for float32)"]
    if memory is not None:
        parts += ["", f"### Memory (tracemalloc, float32, n={_size(memory['n'])})", ""]
        for name in ("forward", "forward_out", "backward_mask"):
            v = memory[name]
            parts.append(
                f"- **{'OK' if v['ok'] else 'MORE'}** {name}: peak {v['peak']:,} B vs "
                f"{v['what']} = {v['expected']:,} B (extra {v['extra']:,} B)")
    parts += ["", "### Notes", ""] + [f"- {t}" for t in notes]
    return "\n".join(parts) + "\n"


def _plot(path: Path, idx: Index, s: Settings) -> None:
    """ns/element against size, log-log, one panel per op (float32 if it was
    run), one colour per implementation, one line style per thread count."""
    # optional, imported lazily; a bare Figure leaves pyplot's global state alone
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    dtype = "float32" if "float32" in s.dtypes else s.dtypes[0]
    ops = [o for o in s.ops if any(r["op"] == o and r["dtype"] == dtype for r in idx.rows)]
    simd_colors = ["tab:blue", "tab:cyan", "tab:purple", "tab:pink"]
    lines: list[tuple[str, str | None, str, str]] = [  # impl, simd, label, colour
        ("api", simd, f"fastdropout [{simd}]", simd_colors[i % len(simd_colors)])
        for i, simd in enumerate(s.simd)]
    lines += [("core", s.simd[0], f"_core [{s.simd[0]}]", "tab:orange"),
              ("api_alloc", s.simd[0], f"no out= [{s.simd[0]}]", "tab:olive"),
              ("stream_copy", None, "native copy", "black"),
              ("copyto", None, "np.copyto", "tab:gray"),
              ("numpy", None, "NumPy idiom (1 thread)", "tab:green"),
              ("torch", None, "PyTorch", "tab:red")]
    styles: tuple[Any, ...] = ("-", "--", ":", "-.")  # one per thread count
    cols = min(4, max(1, len(ops)))
    nrows = max(1, math.ceil(len(ops) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows + 0.9))
    axes = fig.subplots(nrows, cols, squeeze=False)
    used: dict[str, str] = {}
    for ax, op in zip(axes.flat, ops):
        for ti, threads in enumerate(s.threads):
            for impl, simd, label, color in lines:
                if impl == "numpy" and ti > 0:
                    continue  # does not depend on the thread count
                xs, ys = [], []
                for n in s.sizes:
                    if impl in ("stream_copy", "copyto", "numpy", "torch"):
                        t = idx.baseline(impl, op, dtype, n, threads)
                    else:
                        t = idx.median(op, impl, dtype, n, threads, simd)
                    if t is not None:
                        xs.append(n)
                        ys.append(t * 1e9 / n)
                if xs:
                    ax.plot(xs, ys, styles[ti % len(styles)], color=color, marker="o",
                            markersize=3, linewidth=1.2)
                    used[label] = color
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{op} ({dtype})", fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("ns / element", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=lab)
               for lab, c in used.items()]
    handles += [Line2D([], [], color="black", linestyle=styles[i % len(styles)],
                       label=f"{t} thread{'s' if t > 1 else ''}")
                for i, t in enumerate(s.threads)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)),
               fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.94, wspace=0.3, hspace=0.45,
                        bottom=0.9 / fig.get_figheight())
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 if a fastdropout result was wrong,
    2 for bad arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = _build_parser().parse_args(args)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2

    import fastdropout as fd  # looked up now (tests patch it)
    from fastdropout import _core as core

    try:
        s = _settings(ns, core)
    except ValueError as exc:
        print(f"python -m fastdropout bench: {exc}", file=sys.stderr)
        return 2
    if s.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("python -m fastdropout bench: --plot needs matplotlib "
                  "(pip install matplotlib)", file=sys.stderr)
            return 2
    torch, torch_note = _load_torch(s.torch)
    if torch is None and s.torch:
        print(torch_note, file=sys.stderr)
    machine = _machine(fd, core, torch, args)

    saved_simd, saved_threads = core.simd_level(), core.get_num_threads()
    saved_torch = torch.get_num_threads() if torch is not None else None
    try:
        cases = _run(s, fd, core, torch)
    finally:
        core._set_simd(saved_simd)
        fd.set_num_threads(saved_threads)
        if torch is not None:
            torch.set_num_threads(saved_torch)
    rows = [c.row() for c in cases]
    idx = Index(rows)
    targets = _targets(idx, s, machine["simd_default"], torch is not None)
    memory = _memory(fd, s.memory_n, s.p) if s.memory_n > 0 else None

    wrong = [r for r in rows if r["simd"] is not None and r["status"] != "ok"]
    checks = (
        f"Checked against fastdropout.reference, bit for bit, before timing: whole "
        f"results up to {s.check_full_max} elements; larger dense ones in windows of "
        f"{WINDOW} elements (start, middle, a random place, end; the reference run at "
        f"the window's offset), larger spatial ones on 4 samples along N.")
    shapes = ", ".join(f"n={_size(n)}: {spatial_shape(n)}" for n in s.sizes)
    notes = [
        torch_note,
        checks,
        ("GB/s counts the bytes an operation must move: x read, y written, mask bits "
         "written or read (the NumPy idiom and PyTorch move more)."),
        f"Spatial shapes (N, C, H, W): {shapes}.",
        ("backward_regen has no NumPy or PyTorch counterpart; `vs NumPy` there "
         "compares with the forward idiom."),
        "Ops: " + "; ".join(f"{op} = `{OP_DOC[op]}`" for op in s.ops) + ".",
    ]
    if wrong:
        notes.insert(0, f"**{len(wrong)} fastdropout result(s) were wrong or failed and "
                     "were not timed.**")
    report = _report(s, machine, idx, targets, memory, notes)
    print(report, end="")
    if s.md is not None:
        s.md.write_text(report, encoding="utf-8")
    if s.json is not None:
        import json

        payload = {
            "machine": machine,
            "settings": {
                "sizes": s.sizes, "dtypes": s.dtypes, "threads": s.threads,
                "simd": s.simd, "ops": s.ops, "repeats": s.repeats,
                "min_time": s.min_time, "budget": s.budget, "p": s.p, "seed": SEED,
                "check_full_max": s.check_full_max, "check_window": WINDOW,
                "torch": torch is not None,
            },
            "ops": {op: OP_DOC[op] for op in s.ops},
            "impls": IMPL_DOC,
            "results": rows,
            "targets": [t.as_dict() for t in targets],
            "memory": memory,
            "notes": notes,
        }
        s.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    if s.plot is not None:
        _plot(s.plot, idx, s)
    for r in wrong:
        print(f"python -m fastdropout bench: {r['op']} {r['impl']} {r['dtype']} "
              f"n={r['n']} threads={r['threads']} {r['simd']}: {r['status']}: "
              f"{r['detail']}", file=sys.stderr)
    return 1 if wrong else 0
