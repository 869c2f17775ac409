#!/usr/bin/env bash
# Build fastdropout._core with AddressSanitizer + UndefinedBehaviorSanitizer and run
# the test suite (or the pytest arguments given) against it.
#
#   tools/run_sanitizers.sh                       # the whole suite
#   tools/run_sanitizers.sh -q -m "not slow and not browser"  # what CI runs
#   tools/run_sanitizers.sh tests/test_fuzz.py tests/test_reliability.py
#
# Needs: GCC with ASan/UBSan (its runtimes are preloaded), CMake, pybind11, NumPy,
# pytest and hypothesis in the interpreter's environment (pip install pybind11
# cmake ninja ".[test]"). On 2 cores: build 1-4 min (1:10 idle, 4:30 busy); the
# suite with -m "not slow and not browser" 4.5-10 min, the whole suite about 13 min
# (the huge-array tests are several times slower under ASan). The absurd-size tests
# make ASan print "WARNING: AddressSanitizer failed to allocate ...": expected (the
# allocation fails, NumPy raises MemoryError).
#
# The extension is built with plain CMake (-DFASTDROPOUT_SANITIZE=ON) in its own
# build directory and staged next to symlinks of python/fastdropout/*, so neither
# the editable install nor any other installed copy is touched or used. The
# interpreter is not instrumented, so the ASan runtime is preloaded; leak detection
# is off (CPython's own allocations at exit are not leaks of ours: the tests measure
# our memory with RSS instead), and any ASan/UBSan report aborts the run.
#
# Environment (all optional):
#   PYTHON       interpreter (default: python3 on PATH)
#   BUILD_DIR    build directory (default: build/asan)
#   BUILD_TYPE   CMake build type (default: RelWithDebInfo; the sanitizer option
#                adds -O1 -g -fno-omit-frame-pointer)
#   JOBS         parallel compile jobs (default: 2)
#   SKIP_BUILD=1 reuse an existing build
#   FASTDROPOUT_ISAS  passed to CMake (default: auto)
# Exit status: pytest's (0 = all passed); 86 if ASan/UBSan reported anything (the
# report, with the stack of the C++ code at fault, is in the output; in-test
# subprocesses that hit one fail their test instead); 1 if the build or set-up fails.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
PYTHON=$(command -v "$PYTHON")
BUILD_DIR=${BUILD_DIR:-build/asan}
case $BUILD_DIR in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
JOBS=${JOBS:-2}
STAGE="$BUILD_DIR/stage"

now() { date +%s; }
t0=$(now)
log() { echo "[run_sanitizers $(($(now) - t0))s] $*"; }

# ---- the compiler's sanitizer runtimes -------------------------------------------
CXX=${CXX:-$(command -v g++ || command -v c++)}
LIBASAN=$("$CXX" -print-file-name=libasan.so)
LIBUBSAN=$("$CXX" -print-file-name=libubsan.so)
if [[ ! -e $LIBASAN || ! -e $LIBUBSAN ]]; then
    echo "run_sanitizers: $CXX has no shared ASan/UBSan runtime ($LIBASAN, $LIBUBSAN)" >&2
    exit 1
fi

# ---- build -------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    if ! pybind11_dir=$("$PYTHON" -m pybind11 --cmakedir 2>/dev/null); then
        echo "run_sanitizers: pybind11 is not installed for $PYTHON (pip install pybind11)" >&2
        exit 1
    fi
    mkdir -p "$BUILD_DIR"
    log "configuring $BUILD_DIR ($BUILD_TYPE, ASan+UBSan, $CXX)"
    generator=()
    if command -v ninja >/dev/null 2>&1 && [[ ! -e $BUILD_DIR/Makefile ]]; then
        generator=(-G Ninja)
    fi
    cmake -S "$ROOT" -B "$BUILD_DIR" "${generator[@]}" \
        -DCMAKE_CXX_COMPILER="$CXX" \
        -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
        -DFASTDROPOUT_SANITIZE=ON \
        -DFASTDROPOUT_ISAS="${FASTDROPOUT_ISAS:-auto}" \
        -DPython_EXECUTABLE="$PYTHON" \
        -Dpybind11_DIR="$pybind11_dir" >"$BUILD_DIR/configure.log" 2>&1 \
        || { cat "$BUILD_DIR/configure.log" >&2; exit 1; }
    log "building"
    cmake --build "$BUILD_DIR" --target _core -j "$JOBS"
fi
SO=$(ls "$BUILD_DIR"/_core*.so 2>/dev/null | head -n 1 || true)
if [[ -z $SO ]]; then
    echo "run_sanitizers: no _core*.so in $BUILD_DIR (build first, without SKIP_BUILD)" >&2
    exit 1
fi
syms=$(nm -D "$SO" 2>/dev/null || true)  # (grep -q would SIGPIPE nm under pipefail)
if [[ $syms != *__asan_* ]]; then
    echo "run_sanitizers: $SO is not built with ASan (stale $BUILD_DIR?)" >&2
    exit 1
fi

# ---- stage: the Python sources (symlinked, so edits are live) + the ASan _core ------
rm -rf "$STAGE"
mkdir -p "$STAGE/fastdropout"
for f in "$ROOT"/python/fastdropout/*; do
    case $(basename "$f") in
        _core*.so | _core*.pyd | __pycache__) ;;
        *) ln -s "$f" "$STAGE/fastdropout/" ;;
    esac
done
cp "$SO" "$STAGE/fastdropout/"

# ---- run ---------------------------------------------------------------------------
# A report halts the process with status 86 (pytest's own are 0-5). pytest runs with
# --capture=sys: with its default fd capture, a process that halts on a report
# would take the captured report with it (and GCC's UBSan ignores log_path).
SAN_EXIT=86
export LD_PRELOAD="$LIBASAN $LIBUBSAN${LD_PRELOAD:+ $LD_PRELOAD}"
# allocator_may_return_null: a huge request is NumPy's MemoryError, as without ASan.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=$SAN_EXIT:allocator_may_return_null=1:detect_odr_violation=0:strict_init_order=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=$SAN_EXIT${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
# A scikit-build-core editable install puts its finder first on sys.meta_path; this
# variable (its recursion guard) makes it stand aside for the editable build dir.
editable_dir=$("$PYTHON" - <<'EOF' 2>/dev/null || true
import sys
for f in sys.meta_path:
    p = getattr(f, "path", None)
    if type(f).__name__.startswith("ScikitBuild") and p:
        print(p)
EOF
)
export SKBUILD_EDITABLE_SKIP="${editable_dir}${SKBUILD_EDITABLE_SKIP:+:$SKBUILD_EDITABLE_SKIP}"
export PYTHONDONTWRITEBYTECODE=1

"$PYTHON" - "$STAGE" <<'EOF'
import os, sys
import fastdropout
from fastdropout import _core
stage = os.path.realpath(sys.argv[1])
where = os.path.realpath(os.path.dirname(_core.__file__))
if where != os.path.join(stage, "fastdropout"):
    sys.exit(f"run_sanitizers: imported {_core.__file__}, not the ASan build in {stage}")
maps = open("/proc/self/maps").read()
if "libasan" not in maps:
    sys.exit("run_sanitizers: the ASan runtime is not loaded")
print(f"[run_sanitizers] fastdropout._core from {_core.__file__}: simd "
      f"{_core.simd_level()} (available {', '.join(_core._available_simd())}), "
      f"threads {_core.get_num_threads()}, OpenMP {_core.has_openmp()}")
EOF

if [[ $# -eq 0 ]]; then
    set -- tests
fi
log "pytest $*"
rc=0
"$PYTHON" -m pytest -p no:cacheprovider --capture=sys "$@" || rc=$?
if [[ $rc -eq $SAN_EXIT ]]; then
    log "FAILED: a sanitizer report stopped the run (above: 'runtime error:' for UBSan," \
        "'ERROR: AddressSanitizer' for ASan; run again with -v to see the test)"
else
    log "done: pytest exit status $rc"
fi
exit "$rc"
