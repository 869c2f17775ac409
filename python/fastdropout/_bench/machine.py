"""The machine a run was on, the optional PyTorch import, the memory check."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .constants import TORCH_HINT


def cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open() as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(fd: Any, core: Any, torch: Any, argv: list[str]) -> dict[str, Any]:
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu": cpu_model(),
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


def load_torch(wanted: bool) -> tuple[Any, str]:
    if not wanted:
        return None, "PyTorch left out (--no-torch)."
    try:
        import torch  # optional, imported lazily
    except ImportError:
        return None, f"PyTorch is not installed: {TORCH_HINT}."
    return torch, f"PyTorch {torch.__version__} (threads set to match each row)."


def memory_check(fd: Any, n: int, p: float) -> dict[str, Any]:
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

