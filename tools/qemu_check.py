#!/usr/bin/env python3
"""Portability proof: the installed fastdropout, run on emulated old and new CPUs.

Runs a fixed set of small dropout problems (every dtype, both modes, dense,
broadcast and spatial, forward and backward, offsets that wrap at 2**64, one
array big enough for the threaded path; bfloat16 when ml_dtypes is installed,
alpha dropout and dropout_add with grad_bias) and checks, bit for bit:

  * native results == ``fastdropout.reference`` (pure NumPy), at every SIMD level
    the (emulated) CPU supports;
  * native results == the SHA-256 digests written by the native host run;
  * ``simd_level()`` at import is the level expected for that CPU model, and the
    compiled levels the CPU lacks are refused with an error, not a crash.

A kernel symbol compiled with AVX-512 flags that the linker kept for baseline code
shows up here as SIGILL ("illegal instruction") on the Nehalem model.

Usage (the python must have fastdropout *installed*, e.g. a venv with the wheel):

  tools/qemu_check.py run [--python VENV/bin/python] [--cpu Nehalem=scalar ...]
      host run (writes digests), then one run per CPU model under
      ``qemu-x86_64 -cpu MODEL`` (Debian package qemu-user); default models
      Nehalem (SSE4.2, no AVX) -> scalar and Haswell (AVX2) -> avx2.
  tools/qemu_check.py write --digests FILE          (one native worker run)
  tools/qemu_check.py check --digests FILE --expect LEVEL   (one worker run)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CPUS = ("Nehalem=scalar", "Haswell=avx2")
TWO_64 = 1 << 64


# ---- the fixed problems ---------------------------------------------------------------


def _bfloat16(np: Any) -> Any:
    """numpy.dtype(ml_dtypes.bfloat16), or None without ml_dtypes."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _inputs(np: Any, dtype: Any, shape: tuple[int, ...], salt: int) -> Any:
    """Exact dyadic values (same bits on every CPU) plus IEEE specials; bfloat16:
    the float32 values rounded by ml_dtypes (software, the same everywhere)."""
    bf16 = _bfloat16(np)
    if bf16 is not None and np.dtype(dtype) == bf16:
        return _inputs(np, np.float32, shape, salt).astype(bf16)
    rng = np.random.default_rng(20240601 + salt)
    n = int(np.prod(shape))
    x = (rng.integers(-(2**11), 2**11, size=n) * 2.0**-7).astype(dtype)
    info = np.finfo(dtype)
    specials = [np.nan, np.inf, -np.inf, -0.0, 0.0, info.max, -info.max,
                info.smallest_subnormal, -info.smallest_subnormal, info.tiny]
    for k, v in enumerate(specials):
        if k * 7 < n:
            x[k * 7] = dtype(v)
    return x.reshape(shape)


def _cases(np: Any) -> list[tuple[str, Callable[[Any], dict[str, Any]]]]:
    dtypes = (np.float16, np.float32, np.float64)
    cases: list[tuple[str, Callable[[Any], dict[str, Any]]]] = []

    def dense(dt: Any, shape: tuple[int, ...], p: float, mode: str, seed: int,
              offset: int, axes: tuple[int, ...] | None, salt: int) -> Callable[[Any], Any]:
        def run(fd: Any) -> dict[str, Any]:
            x = _inputs(np, dt, shape, salt)
            y, m = fd.dropout(x, p, mode=mode, seed=seed, offset=offset,
                              broadcast_axes=axes, return_mask=True)
            g = _inputs(np, dt, shape, salt + 1)
            gm = fd.dropout_backward(g, m)
            gr = fd.dropout_backward(g, p=p, mode=mode, seed=seed, offset=offset,
                                     broadcast_axes=axes)
            ev = fd.dropout(x, p, mode=mode, training=False)
            return {"y": y, "bits": m.bits, "grad_mask": gm, "grad_regen": gr, "eval": ev}
        return run

    def spatial(dt: Any, shape: tuple[int, ...], fmt: str, p: float, mode: str, seed: int,
                offset: int, salt: int) -> Callable[[Any], Any]:
        def run(fd: Any) -> dict[str, Any]:
            x = _inputs(np, dt, shape, salt)
            y, m = fd.spatial_dropout(x, p, data_format=fmt, mode=mode, seed=seed,
                                      offset=offset, return_mask=True)
            gm = fd.dropout_backward(_inputs(np, dt, shape, salt + 1), m)
            return {"y": y, "bits": m.bits, "grad_mask": gm}
        return run

    salt = 0
    for dt in dtypes:
        name = np.dtype(dt).name
        for mode in ("inverted", "classic"):
            for shape, p, seed, offset in (
                ((37, 61), 0.5, 12345, 0),
                ((4097,), 0.1, 2**64 - 1, 5),
                ((3, 5, 67), 1.0 / 3.0, 0, 2**64 - 3),  # stream position wraps
                ((9,), 0.9, 7, 1_000_003),
            ):
                salt += 2
                cases.append((f"dense-{name}-{mode}-{'x'.join(map(str, shape))}-p{p:.3f}",
                              dense(dt, shape, p, mode, seed, offset, None, salt)))
            salt += 2
            cases.append((f"bcast-{name}-{mode}-6x333-axes0",
                          dense(dt, (6, 333), 0.25, mode, 99, 64, (0,), salt)))
            for fmt, shape in (("channels_first", (2, 5, 3, 7)),
                               ("channels_last", (2, 3, 7, 5))):
                salt += 2
                cases.append((f"spatial-{name}-{mode}-{fmt}",
                              spatial(dt, shape, fmt, 0.5, mode, 4242, 3, salt)))
    # p = 0 and p = 1 edges, and one array past the threading threshold (2 threads).
    for p in (0.0, 1.0):
        salt += 2
        cases.append((f"edge-float32-p{p}", dense(np.float32, (513,), p, "inverted",
                                                  1, 0, None, salt)))
    salt += 2
    cases.append(("threads2-float32-131077", dense(np.float32, (131077,), 0.5,
                                                   "inverted", 77, 11, None, salt)))
    cases += _fused_cases(np, dense, spatial, salt)
    return cases


def _fused_cases(np: Any, dense: Callable[..., Any], spatial: Callable[..., Any],
                 salt: int) -> list[tuple[str, Callable[[Any], dict[str, Any]]]]:
    """bfloat16 (when ml_dtypes is installed), alpha dropout and dropout_add."""
    cases: list[tuple[str, Callable[[Any], dict[str, Any]]]] = []
    bf16 = _bfloat16(np)

    def values(dt: Any, shape: tuple[int, ...], s: int) -> Any:
        return _inputs(np, dt, shape, s)

    def alpha(dt: Any, shape: tuple[int, ...], p: float, seed: int, offset: int,
              axes: tuple[int, ...] | None, s: int) -> Callable[[Any], Any]:
        def run(fd: Any) -> dict[str, Any]:
            x = values(dt, shape, s)
            y, m = fd.alpha_dropout(x, p, seed=seed, offset=offset, broadcast_axes=axes,
                                    return_mask=True)
            g = values(dt, shape, s + 1)
            return {"y": y, "bits": m.bits, "grad_mask": fd.dropout_backward(g, m),
                    "grad_regen": fd.dropout_backward(g, p=p, mode="alpha", seed=seed,
                                                      offset=offset, broadcast_axes=axes)}
        return run

    def add(dt: Any, shape: tuple[int, ...], p: float, mode: str, seed: int, offset: int,
            axes: tuple[int, ...] | None, with_bias: bool, s: int) -> Callable[[Any], Any]:
        def run(fd: Any) -> dict[str, Any]:
            x = values(dt, shape, s)
            # residual's specials do not meet x's (NaN + NaN's payload is not fixed)
            r = np.roll(values(dt, shape, s + 1).reshape(-1), 3).reshape(shape)
            b = None
            if with_bias:  # finite: no Inf - Inf in x + bias
                b = (np.arange(shape[-1]) * 0.125 - 2.0).astype(np.float32).astype(x.dtype)
            y, m = fd.dropout_add(x, r, p, bias=b, mode=mode, seed=seed, offset=offset,
                                  broadcast_axes=axes, return_mask=True)
            g = values(dt, shape, s + 2)
            gx, _, gb = fd.dropout_add_backward(g, m, bias=with_bias)
            out = {"y": y, "bits": m.bits, "grad_x": gx,
                   "eval": fd.dropout_add(x, r, p, bias=b, mode=mode, training=False)}
            if gb is not None:
                out["grad_bias"] = gb
            return out
        return run

    if bf16 is not None:
        for mode in ("inverted", "classic"):
            for shape, p, seed, offset in (((37, 61), 0.5, 12345, 0),
                                           ((3, 5, 67), 1.0 / 3.0, 0, 2**64 - 3)):
                salt += 2
                cases.append((f"dense-bfloat16-{mode}-{'x'.join(map(str, shape))}",
                              dense(bf16, shape, p, mode, seed, offset, None, salt)))
        salt += 2
        cases.append(("bcast-bfloat16-6x333-axes0",
                      dense(bf16, (6, 333), 0.25, "inverted", 99, 64, (0,), salt)))
        salt += 2
        cases.append(("spatial-bfloat16-channels_last",
                      spatial(bf16, (2, 3, 7, 5), "channels_last", 0.5, "inverted", 4242,
                              3, salt)))
    alpha_dtypes = [np.float16, np.float32, np.float64] + ([bf16] if bf16 is not None else [])
    for dt in alpha_dtypes:
        name = np.dtype(dt).name
        salt += 2
        cases.append((f"alpha-{name}-4097", alpha(dt, (4097,), 0.1, 2**64 - 1, 5, None, salt)))
        salt += 2
        cases.append((f"feature-alpha-{name}-2x5x3x7",
                      alpha(dt, (2, 5, 3, 7), 0.3, 8, 2**64 - 3, (2, 3), salt)))
    for dt in alpha_dtypes:
        name = np.dtype(dt).name
        for mode in ("inverted", "classic"):
            salt += 3
            cases.append((f"add-{name}-{mode}-37x61-bias",
                          add(dt, (37, 61), 0.5, mode, 12345, 7, None, True, salt)))
        salt += 3
        cases.append((f"add-{name}-bcast-3x5x67",
                      add(dt, (3, 5, 67), 0.25, "inverted", 3, 2**64 - 3, (1,), True, salt)))
    salt += 3
    cases.append(("add-threads2-float32-512x257",
                  add(np.float32, (512, 257), 0.5, "inverted", 77, 11, None, True, salt)))
    return cases


def _digest(np: Any, result: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for key in sorted(result):
        a = np.ascontiguousarray(result[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _same_bits(np: Any, a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64, 1: np.uint8}[a.dtype.itemsize]
    return bool(np.array_equal(a.view(u), b.view(u)))


def _worker(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    import fastdropout
    import numpy as np
    from fastdropout import _core
    from fastdropout import reference as ref

    where = Path(fastdropout.__file__).resolve()
    print(f"fastdropout {fastdropout.__version__} from {where.parent}")
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}")
    if not args.allow_source and REPO / "python" in where.parents:
        print(f"FAIL: fastdropout imported from the source tree ({where}), "
              "not an installed package", file=sys.stderr)
        return 1
    level = fastdropout.simd_level()
    available = list(_core._available_simd())
    compiled = list(_core._compiled_simd())
    print(f"simd_level() = {level}; available {available}; compiled {compiled}; "
          f"import {time.perf_counter() - t0:.1f}s")
    failures: list[str] = []
    if args.expect and level != args.expect:
        failures.append(f"simd_level() is {level!r}, expected {args.expect!r}")
    for name in compiled:
        if name not in available:
            try:
                _core._set_simd(name)
            except ValueError as e:
                print(f"refused as expected: {name}: {e}")
            else:
                failures.append(f"_set_simd({name!r}) was accepted on a CPU without it")
                _core._set_simd(level)

    stored: dict[str, str] = {}
    if args.mode == "check":
        stored = json.loads(Path(args.digests).read_text())["digests"]

    fastdropout.set_num_threads(2)
    digests: dict[str, str] = {}
    cases = _cases(np)
    t1 = time.perf_counter()
    for cid, run in cases:
        want = run(ref)
        digest = _digest(np, want)
        digests[cid] = digest
        for lv in available:
            _core._set_simd(lv)
            got = run(fastdropout)
            bad = [k for k in want if not _same_bits(np, got[k], want[k])]
            if bad:
                failures.append(f"{cid} [{lv}]: {', '.join(bad)} differ from the reference")
            elif _digest(np, got) != digest:
                failures.append(f"{cid} [{lv}]: digest differs from the reference's")
        _core._set_simd(level)
        if stored and stored.get(cid) != digest:
            failures.append(f"{cid}: digest differs from the host run's")
    if stored and set(stored) != set(digests):
        failures.append("case list differs from the host run's")
    print(f"{len(cases)} cases x levels {available} vs reference"
          f"{' and host digests' if stored else ''}: {time.perf_counter() - t1:.1f}s")

    if args.mode == "write":
        Path(args.digests).write_text(json.dumps({
            "fastdropout": fastdropout.__version__, "numpy": np.__version__,
            "host_levels": available, "digests": digests}, indent=1) + "\n")
        print(f"wrote {len(digests)} digests to {args.digests}")
    if failures:
        for f in failures[:40]:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    print(f"OK ({time.perf_counter() - t0:.1f}s)")
    return 0


# ---- the driver ---------------------------------------------------------------------------


def _spawn(cmd: list[str], cwd: str, timeout: float) -> tuple[int, float, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTDROPOUT_SIMD", "PYTHONPATH", "PYTHONHOME")}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, check=False, cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = 124, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n(timed out after {timeout:.0f}s)"
    dt = time.perf_counter() - t0
    # qemu lists every CPUID bit of the model that TCG does not emulate; not our news.
    lines = [ln for ln in out.splitlines() if "TCG doesn't support requested feature" not in ln]
    if rc < 0:
        lines.append(f"(killed by signal {-rc}{' = SIGILL' if rc == -4 else ''})")
    return rc, dt, "\n".join(lines)


def _driver(args: argparse.Namespace) -> int:
    python = args.python or sys.executable
    qemu = shutil.which(args.qemu)
    if qemu is None:
        print(f"{args.qemu} not found: apt-get install qemu-user", file=sys.stderr)
        return 2
    me = str(Path(__file__).resolve())
    summary: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="fastdropout-qemu-") as tmp:
        digests = args.digests or str(Path(tmp) / "digests.json")
        extra = ["--allow-source"] if args.allow_source else []
        rc, dt, out = _spawn([python, me, "write", "--digests", digests, *extra], tmp,
                             args.timeout)
        print(f"== native host run ({dt:.1f}s, rc={rc})\n{out}", flush=True)
        summary.append(f"native: rc={rc} {dt:.1f}s")
        if rc != 0:
            print("qemu_check: FAIL (native run)", file=sys.stderr)
            return 1
        for spec in args.cpu or DEFAULT_CPUS:
            model, _, expect = spec.partition("=")
            cmd = [qemu, "-cpu", model, python, me, "check", "--digests", digests, *extra]
            if expect:
                cmd += ["--expect", expect]
            rc, dt, out = _spawn(cmd, tmp, args.timeout)
            print(f"== qemu-x86_64 -cpu {model} (expect {expect or 'any'}) "
                  f"({dt:.1f}s, rc={rc})\n{out}", flush=True)
            summary.append(f"{model}: rc={rc} {dt:.1f}s")
            ok = ok and rc == 0
    print("qemu_check: " + ("OK" if ok else "FAIL") + " (" + "; ".join(summary) + ")")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="native run, then one run per emulated CPU model")
    r.add_argument("--python", help="interpreter with fastdropout installed "
                   "(default: this one)")
    r.add_argument("--qemu", default="qemu-x86_64")
    r.add_argument("--cpu", action="append",
                   help=f"MODEL=EXPECTED_LEVEL, repeatable (default: {' '.join(DEFAULT_CPUS)})")
    r.add_argument("--digests", help="keep the host digests in this file")
    r.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    for name in ("write", "check"):
        w = sub.add_parser(name)
        w.add_argument("--digests", required=True)
        w.add_argument("--expect", help="the simd_level() this CPU must pick")
    for p in sub.choices.values():
        p.add_argument("--allow-source", action="store_true",
                       help="accept fastdropout imported from the source tree")
    args = ap.parse_args()
    return _driver(args) if args.mode == "run" else _worker(args)


if __name__ == "__main__":
    sys.exit(main())
