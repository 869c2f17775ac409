"""The public API's types (README "Typing"): tests/typing/pass_*.py must pass
``mypy --strict`` and run; tests/typing/fail_*.py must give exactly the errors
marked ``# E: <error code>`` on their lines."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "typing"
PASS = sorted(HERE.glob("pass_*.py"))
FAIL = sorted(HERE.glob("fail_*.py"))
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
_EXPECT = re.compile(r"#\s*E:\s*(?P<code>[a-z-]+)\s*$")


def _mypy(files: list[Path], tmp_path: Path) -> list[tuple[str, int, str]]:
    pytest.importorskip("mypy")
    fastdropout = pytest.importorskip("fastdropout")
    env = dict(os.environ)
    package_parent = Path(fastdropout.__file__).resolve().parent.parent
    if package_parent.name not in ("site-packages", "dist-packages"):
        # a source checkout (editable install): mypy cannot follow import hooks
        env["MYPYPATH"] = str(package_parent)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--show-error-codes",
            "--no-error-summary",
            "--no-color-output",
            "--hide-error-context",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    errors = []
    for line in proc.stdout.splitlines():
        m = _ERROR.match(line)
        if m:
            errors.append((Path(m["file"]).name, int(m["line"]), m["code"]))
        else:
            assert ": note: " in line, line
    return errors


def _expected(path: Path) -> list[tuple[str, int, str]]:
    found = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        m = _EXPECT.search(line)
        if m:
            found.append((path.name, i, m["code"]))
    return found


def test_typing_examples(tmp_path: Path) -> None:
    assert PASS
    assert FAIL
    errors = _mypy(PASS + FAIL, tmp_path)
    for path in PASS:
        assert [e for e in errors if e[0] == path.name] == []
    for path in FAIL:
        expected = _expected(path)
        assert expected
        assert sorted(e for e in errors if e[0] == path.name) == expected


@pytest.mark.parametrize("path", PASS, ids=lambda p: p.name)
def test_typed_examples_run(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("typing_extensions")
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out
