"""``python -m fastdropout [--version] {info,bench,demo}`` (docs/spec.md section 14)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_USAGE = """usage: python -m fastdropout [--version] {info,bench,demo} [args...]

  --version  print the version of fastdropout and exit
  info       version, instruction sets and threads of this installation
  bench      benchmarks (python -m fastdropout bench --help)
  demo       demonstration (python -m fastdropout demo --help)
"""

# Commands implemented elsewhere, imported only when used.
_COMMANDS = {"bench": "fastdropout._bench", "demo": "fastdropout.demo"}


def info() -> str:
    """What ``python -m fastdropout info`` prints."""
    import numpy as np

    import fastdropout
    from fastdropout import _core

    lines = [
        f"fastdropout {fastdropout.__version__}",
        f"numpy       {np.__version__}",
        f"python      {sys.version.split()[0]}",
        f"simd level  {_core.simd_level()}",
        f"available   {', '.join(_core._available_simd())}",
        f"compiled    {', '.join(_core._compiled_simd())}",
        f"threads     {_core.get_num_threads()}",
        f"openmp      {'yes' if _core.has_openmp() else 'no'}",
    ]
    return "\n".join(lines)


def _info_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m fastdropout info",
        description="Print the version of fastdropout, NumPy and Python, the SIMD "
        "level in use, the levels this CPU supports and this build contains, the "
        "number of threads and whether OpenMP is available.",
    )


def _version() -> str:
    import fastdropout

    return fastdropout.__version__


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_USAGE, end="")
        return 0 if args else 2
    if args[0] in ("--version", "-V"):
        if len(args) > 1:
            print(f"{args[0]} takes no arguments\n\n{_USAGE}", end="", file=sys.stderr)
            return 2
        print(_version())
        return 0
    command, rest = args[0], args[1:]
    if command == "info":
        try:
            _info_parser().parse_args(rest)
        except SystemExit as exc:  # --help (0) or a usage error (2)
            return int(exc.code or 0)
        print(info())
        return 0
    if command in _COMMANDS:
        module_name = _COMMANDS[command]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            print(f"`{command}` is not available in this installation", file=sys.stderr)
            return 1
        return int(module.main(rest) or 0)
    print(f"unknown command {command!r}\n\n{_USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
