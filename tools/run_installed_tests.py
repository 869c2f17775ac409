#!/usr/bin/env python3
"""Run the test suite against the *installed* fastdropout, portably (any OS).

    python tools/run_installed_tests.py [TESTS_DIR] [--passes default,scalar] [-- PYTEST_ARGS]

Used by tools/check_wheel.sh and by cibuildwheel's test-command on every wheel.
It refuses to run when ``import fastdropout`` would come from a source checkout
(the tests must exercise the installed wheel), then runs pytest from a scratch
directory once per pass: ``default`` (the level the CPU picks) and ``scalar``
(``FASTDROPOUT_SIMD=scalar``, so the fallback is tested on every wheel). Exits
non-zero if a pass fails or collects no test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = (
    "import fastdropout, sys; from fastdropout import _core; "
    "print(fastdropout.__file__); print(fastdropout.__version__); "
    "print(fastdropout.simd_level()); print(','.join(_core._available_simd()))"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tests", nargs="?", default=str(Path(__file__).resolve().parents[1] / "tests"))
    ap.add_argument("--passes", default="default,scalar",
                    help="comma-separated: default and/or SIMD level names")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    extra = argv[cut + 1:]  # for pytest
    tests = Path(args.tests).resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASTDROPOUT_SIMD")}
    with tempfile.TemporaryDirectory(prefix="fastdropout-tests-") as scratch:
        probe = subprocess.run([sys.executable, "-c", PROBE], cwd=scratch, env=env,
                               stdout=subprocess.PIPE, text=True, check=False)
        if probe.returncode != 0:
            print("run_installed_tests: cannot import fastdropout with its _core",
                  file=sys.stderr)
            return 1
        where, version, level, available = probe.stdout.strip().splitlines()[-4:]
        source = tests.parent / "python"
        if source in Path(where).resolve().parents:
            print(f"run_installed_tests: fastdropout comes from the source tree ({where}), "
                  "not an installed package", file=sys.stderr)
            return 1
        print(f"run_installed_tests: fastdropout {version} from {Path(where).parent}; "
              f"simd {level} (available {available})", flush=True)
        status = 0
        for name in args.passes.split(","):
            penv = dict(env)
            if name != "default":
                penv["FASTDROPOUT_SIMD"] = name
            cmd = [sys.executable, "-m", "pytest", str(tests), "-q", "-p", "no:cacheprovider",
                   *extra]
            print(f"run_installed_tests: pass '{name}': {' '.join(cmd)}", flush=True)
            rc = subprocess.run(cmd, cwd=scratch, env=penv, check=False).returncode
            if rc != 0:
                print(f"run_installed_tests: pass '{name}' failed (pytest exit {rc})",
                      file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
