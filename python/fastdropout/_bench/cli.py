"""``python -m fastdropout bench``: the run over every block and the entry point."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from .cases import (
    baseline_cases,
    fastdropout_cases,
    numpy_cases,
    own_work_cases,
    torch_cases,
)
from .constants import IMPL_DOC, OP_DOC, SEED, WINDOW
from .data import Data, spatial_shape
from .machine import load_torch, machine_info, memory_check
from .plot import plot
from .report import Index, render_report, size_text
from .settings import Settings, build_parser, make_settings
from .targets import evaluate_targets
from .timing import Case, run_group


def set_threads(fd: Any, torch: Any, n: int) -> None:
    fd.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def run_all(s: Settings, fd: Any, core: Any, torch: Any) -> list[Case]:
    start = time.perf_counter()
    done: list[Case] = []
    blocks = [(dt, n) for dt in s.dtypes for n in s.sizes]
    for k, (dtype, n) in enumerate(blocks, 1):
        t0 = time.perf_counter()
        d = Data(fd, dtype, n, s)
        d0 = d.at_p(0.0) if s.own_work else None  # the same arrays, every element kept
        for ti, threads in enumerate(s.threads):
            set_threads(fd, torch, threads)
            cases = baseline_cases(d, threads, s.simd, core)
            if ti == 0:
                cases += numpy_cases(d, s)
            if torch is not None:
                cases += torch_cases(d, s, threads, torch)
            for simd in s.simd:
                core._set_simd(simd)
                cases += fastdropout_cases(d, s, threads, simd, core)
                if d0 is not None:
                    cases += own_work_cases(d0, s, threads, simd, core)
            run_group(cases, s, core)
            done += cases
        print(f"[{k}/{len(blocks)}] {dtype} n={size_text(n)}: {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        del d, d0
    print(f"benchmark done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return done



def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 if a fastdropout result was wrong,
    2 for bad arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = build_parser().parse_args(args)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2

    import fastdropout as fd  # looked up now (tests patch it)
    from fastdropout import _core as core

    try:
        s = make_settings(ns, core)
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
    torch, torch_note = load_torch(s.torch)
    if torch is None and s.torch:
        print(torch_note, file=sys.stderr)
    machine = machine_info(fd, core, torch, args)

    saved_simd, saved_threads = core.simd_level(), core.get_num_threads()
    saved_torch = torch.get_num_threads() if torch is not None else None
    try:
        cases = run_all(s, fd, core, torch)
    except MemoryError:
        print("python -m fastdropout bench: out of memory; try smaller --sizes",
              file=sys.stderr)
        return 2
    finally:
        core._set_simd(saved_simd)
        fd.set_num_threads(saved_threads)
        if torch is not None:
            torch.set_num_threads(saved_torch)
    rows = [c.row() for c in cases]
    idx = Index(rows)
    targets = evaluate_targets(idx, s, machine["simd_default"], torch is not None)
    memory = memory_check(fd, s.memory_n, s.p) if s.memory_n > 0 else None

    wrong = [r for r in rows if r["simd"] is not None and r["status"] != "ok"]
    checks = (
        f"Checked against fastdropout.reference, bit for bit, before timing: whole "
        f"results up to {s.check_full_max} elements; larger dense ones in windows of "
        f"{WINDOW} elements (start, middle, a random place, end; the reference run at "
        f"the window's offset), larger spatial ones on 4 samples along N.")
    shapes = ", ".join(f"n={size_text(n)}: {spatial_shape(n)}" for n in s.sizes)
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
    report = render_report(s, machine, idx, [t.line() for t in targets], memory,
                           notes)
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
                "min_time": s.min_time, "budget": s.budget, "p": s.p,
                "own_work": s.own_work, "seed": SEED,
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
        plot(s.plot, idx, s)
    for r in wrong:
        print(f"python -m fastdropout bench: {r['op']} {r['impl']} {r['dtype']} "
              f"n={r['n']} threads={r['threads']} {r['simd']}: {r['status']}: "
              f"{r['detail']}", file=sys.stderr)
    return 1 if wrong else 0
