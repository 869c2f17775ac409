"""Run-time instruction-set dispatch and FASTDROPOUT_SIMD (docs/spec.md section 6).

Like NumPy's CPU-dispatch tests, each forced level runs in a fresh
interpreter, since the variable is read once, at import.
"""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _util import AVAILABLE_SIMD, HAVE_CORE, NO_CORE_REASON

pytestmark = pytest.mark.skipif(not HAVE_CORE, reason=NO_CORE_REASON)

KNOWN = {"scalar", "avx2", "avx512", "avx512fp16", "neon"}
PROBE = (
    "import numpy as np, fastdropout as fd;"
    "print(fd.simd_level());"
    "y = fd.dropout(np.ones(1000, np.float32), 0.5, seed=1);"
    "print(int((y != 0).sum()))"
)


def run_python(code: str, simd: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("FASTDROPOUT_SIMD", None)
    if simd is not None:
        env["FASTDROPOUT_SIMD"] = simd
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def compiled() -> list[str]:
    from fastdropout import _core

    return list(_core._compiled_simd())


@pytest.mark.parametrize("level", AVAILABLE_SIMD or ["none"])
def test_forced_level_is_used(level: str) -> None:
    proc = run_python(PROBE, level)
    assert proc.returncode == 0, proc.stderr
    name, kept = proc.stdout.split()
    assert name == level
    # every level computes the same mask
    import fastdropout

    expected = int(
        (fastdropout.dropout(np.ones(1000, np.float32), 0.5, seed=1) != 0).sum()
    )
    assert int(kept) == expected


def test_default_is_the_best_available() -> None:
    proc = run_python(PROBE, None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == AVAILABLE_SIMD[0]


def test_empty_variable_means_default() -> None:
    proc = run_python(PROBE, "")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == AVAILABLE_SIMD[0]


@pytest.mark.parametrize("name", ["sse9", "AVX2x", "fast"])
def test_unknown_name_fails_import_listing_valid_names(name: str) -> None:
    proc = run_python("import fastdropout", name)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert name in proc.stderr
    for valid in ("scalar", "avx2", "avx512", "avx512fp16"):
        assert valid in proc.stderr


def test_unsupported_or_missing_level_is_refused() -> None:
    refused = sorted(KNOWN - set(AVAILABLE_SIMD))
    if not refused:  # pragma: no cover - depends on the machine
        pytest.skip("this CPU supports every level compiled, and all are compiled")
    for name in refused:
        proc = run_python("import fastdropout", name)
        assert proc.returncode != 0, name
        assert "ImportError" in proc.stderr
        assert name in proc.stderr
        if name in compiled():
            assert "not supported" in proc.stderr
        else:
            assert "not compiled" in proc.stderr


def test_compiled_but_unsupported_level() -> None:
    unsupported = [n for n in compiled() if n not in AVAILABLE_SIMD]
    if not unsupported:
        pytest.skip("this CPU supports every compiled level; nothing to refuse")
    for name in unsupported:  # pragma: no cover - depends on the machine
        proc = run_python("import fastdropout", name)
        assert proc.returncode != 0
        assert "not supported" in proc.stderr
        assert name in proc.stderr


def test_level_lists(core_module: Any) -> None:
    available = list(core_module._available_simd())
    assert set(available) <= KNOWN
    assert set(available) <= set(core_module._compiled_simd())
    assert "scalar" in available
    assert available[-1] == "scalar"
    assert core_module.simd_level() in available
    order = ["avx512fp16", "avx512", "avx2", "neon", "scalar"]
    assert available == sorted(available, key=order.index)


def test_set_simd_rejects_bad_names(core_module: Any) -> None:
    before = core_module.simd_level()
    with pytest.raises(ValueError, match="sse9"):
        core_module._set_simd("sse9")
    assert core_module.simd_level() == before
    for name in KNOWN - set(core_module._available_simd()):
        with pytest.raises(ValueError, match=name):
            core_module._set_simd(name)
        assert core_module.simd_level() == before


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()  # pragma: no cover


@pytest.mark.skipif(
    not (
        sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
    ),
    reason="/proc/cpuinfo cross-check is for Linux x86-64",
)
def test_detection_agrees_with_proc_cpuinfo() -> None:
    flags = _cpu_flags()
    if not flags:  # pragma: no cover
        pytest.skip("no flags line in /proc/cpuinfo")
    v3 = {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2"} <= flags
    v4 = v3 and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    built = compiled()
    expected = {"scalar"}
    if v3 and "avx2" in built:
        expected.add("avx2")
    if v4 and "avx512" in built:
        expected.add("avx512")
    if v4 and "avx512_fp16" in flags and "avx512fp16" in built:
        expected.add("avx512fp16")
    # /proc/cpuinfo does not show whether the OS saves the wide registers, but
    # Linux kernels that report the flags do.
    assert set(AVAILABLE_SIMD) == expected


def test_stub_matches_module(core_module: Any) -> None:
    """_core.pyi names exactly what _core exports (keeps the stub honest)."""
    import fastdropout

    stub = Path(fastdropout.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    public = {
        n for n in dir(core_module) if not (n.startswith("__") and n.endswith("__"))
    }
    public |= {"__version__"} if hasattr(core_module, "__version__") else set()
    assert names == public
    assert isinstance(core_module.__version__, str)
    assert core_module.__version__ == fastdropout.__version__


def test_cli_info() -> None:
    proc = run_python(
        "from fastdropout.__main__ import main; raise SystemExit(main(['info']))",
        "scalar",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "simd level  scalar" in out
    for word in ("fastdropout", "available", "compiled", "threads", "openmp"):
        assert word in out
    assert "scalar" in out.split("available", 1)[1]
