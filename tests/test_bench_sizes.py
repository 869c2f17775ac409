"""``bench --sizes`` refuses sizes the machine cannot hold with a message, not a
traceback (issue 11, item 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("size", ["2**40", "1<<45", "2**1000000000", "10**30"])
def test_absurd_bench_sizes_get_a_message(native: object, size: str) -> None:
    del native
    proc = subprocess.run(
        [sys.executable, "-m", "fastdropout", "bench", "--sizes", size],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--sizes" in proc.stderr
    assert "too large for this machine" in proc.stderr
