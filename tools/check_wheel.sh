#!/usr/bin/env bash
# Test the artefacts of tools/build_wheels.sh as a user installs them (Linux):
#
#   tools/check_wheel.sh [--qemu] [--sdist] [--no-tests] [--passes LIST] [DIST]
#                                                         (default DIST: dist/)
#
# * the manylinux wheel for $PYTHON (default python3) goes into a fresh venv,
#   with its [test] extra; everything runs from a scratch directory, so no source
#   tree is on sys.path (checked: fastdropout must import from the venv);
# * fastdropout.__version__ == the installed metadata == the wheel file's version;
# * the test suite (this checkout's tests/) runs against the installed package,
#   then again under FASTDROPOUT_SIMD=scalar (--passes default: the first only;
#   extra pytest options: PYTEST_ADDOPTS);
# * the fixed problems of tools/qemu_check.py give the reference's bits at every
#   SIMD level of this CPU, and their digests are kept;
# * --qemu: tools/qemu_check.py under qemu-x86_64 -cpu Nehalem (must pick scalar)
#   and -cpu Haswell (must pick avx2), identical bits (needs Debian's qemu-user);
# * --sdist: `pip install fastdropout-*.tar.gz` in another fresh venv (a source
#   build), its version, and the same digests as the wheel.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
qemu=0 sdist=0 tests=1 passes=default,scalar dist=
while [[ $# -gt 0 ]]; do
    case $1 in
        --qemu) qemu=1 ;;
        --sdist) sdist=1 ;;
        --no-tests) tests=0 ;;
        --passes) passes=$2; shift ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "check_wheel: unknown option $1" >&2; exit 2 ;;
        *) dist=$1 ;;
    esac
    shift
done
dist=$(cd "${dist:-$root/dist}" && pwd)

pytag=$("$python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
shopt -s nullglob
wheels=("$dist"/fastdropout-*-"$pytag"-"$pytag"-*manylinux*.whl)
sdists=("$dist"/fastdropout-*.tar.gz)
shopt -u nullglob
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "check_wheel: FAIL: want one manylinux $pytag wheel in $dist, found ${#wheels[@]}" >&2
    exit 1
fi
wheel=${wheels[0]}
wheel_version=$(basename "$wheel" | cut -d- -f2)

work=$(mktemp -d "${TMPDIR:-/tmp}/fastdropout-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"  # nothing of the checkout on sys.path from here on
unset PYTHONPATH FASTDROPOUT_SIMD
t0=$SECONDS
failed=()
step() { echo "== [$((SECONDS - t0))s] $*"; }
pip_install() {  # $1: venv python; the rest: what to install
    local py=$1 rc=0
    shift
    "$py" -m pip install -q --disable-pip-version-check "$@" >"$work/pip.log" 2>&1 || rc=$?
    # (without pip's warnings about find-links/index folders this machine lacks)
    grep -v "is ignored: it is neither a file nor a directory" "$work/pip.log" || true
    return $rc
}

# Installed-package checks shared by the wheel and the sdist venvs.
verify_install() {  # $1: venv python, $2: expected version
    "$1" - "$2" <<'EOF'
import importlib.metadata, pathlib, sys
import fastdropout
from fastdropout import _core
want = sys.argv[1]
where = pathlib.Path(fastdropout.__file__).resolve()
prefix = pathlib.Path(sys.prefix).resolve()
assert prefix in where.parents, f"fastdropout imported from {where}, not from {prefix}"
meta = importlib.metadata.version("fastdropout")
assert fastdropout.__version__ == meta == want, (fastdropout.__version__, meta, want)
libs = sorted(p.name for p in where.parent.parent.glob("fastdropout.libs/*"))
print(f"fastdropout {fastdropout.__version__} (metadata {meta}) from {where.parent}")
print(f"  _core: {pathlib.Path(_core.__file__).name}; simd_level {fastdropout.simd_level()}; "
      f"available {list(_core._available_simd())}; OpenMP {_core.has_openmp()}; "
      f"threads {fastdropout.get_num_threads()}; bundled libs {libs or 'none'}")
EOF
}

step "fresh venv + $(basename "$wheel")$([[ $tests -eq 1 ]] && echo "[test]")"
"$python" -m venv "$work/venv-wheel"
vpy=$work/venv-wheel/bin/python
if [[ $tests -eq 1 ]]; then pip_install "$vpy" "$wheel[test]"; else pip_install "$vpy" "$wheel"; fi
verify_install "$vpy" "$wheel_version"

if [[ $tests -eq 1 ]]; then
    step "pytest on the installed wheel, passes: $passes"
    # A failing suite does not stop the remaining checks; the exit status says it.
    "$vpy" "$root/tools/run_installed_tests.py" "$root/tests" --passes "$passes" ||
        failed+=("pytest on the installed wheel")
fi

step "fixed problems: native == reference at every level of this CPU"
"$vpy" "$root/tools/qemu_check.py" write --digests "$work/wheel-digests.json"

if [[ $qemu -eq 1 ]]; then
    step "qemu-x86_64: Nehalem -> scalar, Haswell -> avx2"
    "$vpy" "$root/tools/qemu_check.py" run --python "$vpy" --digests "$work/qemu-digests.json"
fi

if [[ $sdist -eq 1 ]]; then
    if [[ ${#sdists[@]} -ne 1 ]]; then
        echo "check_wheel: FAIL: want one sdist in $dist, found ${#sdists[@]}" >&2
        exit 1
    fi
    step "fresh venv + pip install $(basename "${sdists[0]}") (source build)"
    "$python" -m venv "$work/venv-sdist"
    spy=$work/venv-sdist/bin/python
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} pip_install "$spy" "${sdists[0]}"
    verify_install "$spy" "$wheel_version"
    step "sdist build: same bits as the wheel"
    "$spy" "$root/tools/qemu_check.py" check --digests "$work/wheel-digests.json"
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    step "check_wheel: FAILED: ${failed[*]}"
    exit 1
fi
step "check_wheel: OK"
