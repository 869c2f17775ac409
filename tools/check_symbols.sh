#!/usr/bin/env bash
# ODR/ISA safety check on a CMake build tree (STYLE.md section 4, "ODR safety").
#
#   tools/check_symbols.sh BUILD_DIR [MODULE.so]
#
# 1. Every kernel object (CMakeFiles/fastdropout_kernels_<isa>.dir/**/*.o) defines
#    exactly one external symbol, fastdropout::<isa>::kernel_table(), and no weak,
#    COMDAT-merged or GNU-unique symbol (nm types W, V, w, v, u, i). A weak inline
#    function or template instantiation emitted by a TU built with -mavx512f may be
#    the copy the linker keeps for baseline code: SIGILL on older CPUs.
# 2. On x86-64, the baseline objects (dispatch, CPU probing, threads, bindings and
#    the scalar kernel) contain no AVX/AVX-512 (VEX/EVEX) or BMI instruction.
# 3. With MODULE.so: its dynamic symbol table exports nothing weak from the kernels
#    (nothing named fastdropout::<isa>::...).
# Fails loudly, naming the object and the offending symbol or instruction.
# Needs binutils (nm, objdump); Linux/ELF only.
set -euo pipefail

if [[ $# -lt 1 || ! -d $1 ]]; then
    echo "usage: $0 BUILD_DIR [MODULE.so]" >&2
    exit 2
fi
build=$1
module=${2:-}
fail=0

mapfile -t kernel_objs < <(find "$build" -path '*CMakeFiles/fastdropout_kernels_*.dir/*' \
                                 \( -name '*.o' -o -name '*.obj' \) | sort)
if [[ ${#kernel_objs[@]} -eq 0 ]]; then
    echo "check_symbols: FAIL: no kernel objects (fastdropout_kernels_*.dir) under $build" >&2
    exit 1
fi

echo "check_symbols: kernel objects in $build"
for obj in "${kernel_objs[@]}"; do
    isa=$(sed -E 's|.*fastdropout_kernels_([a-z0-9]+)\.dir.*|\1|' <<<"$obj")
    allowed="fastdropout::${isa}::kernel_table()"
    # nm -C --defined-only: "ADDR TYPE NAME" (NAME may contain spaces).
    bad=$(nm -C --defined-only "$obj" | awk -v ok="$allowed" '
        { type = $2; name = $0; sub(/^[^ ]* [^ ] /, "", name) }
        type ~ /^[uvVwWi]$/ { print "  weak/unique (" type "): " name; next }
        type ~ /^[A-Z]$/ && !(type == "T" && name == ok) { print "  external (" type "): " name }')
    globals=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[A-Z]$/' | wc -l)
    if [[ -n $bad ]]; then
        echo "check_symbols: FAIL: $obj exports symbols other than $allowed:" >&2
        echo "$bad" >&2
        fail=1
    elif [[ $globals -ne 1 ]]; then
        echo "check_symbols: FAIL: $obj does not define $allowed" >&2
        fail=1
    else
        echo "  ok  $isa: only $allowed is external, nothing weak"
    fi
done

# Baseline code must run on any x86-64: no VEX/EVEX (v* mnemonics, ymm/zmm/opmask
# registers) and no BMI1/BMI2/LZCNT/POPCNT-only instructions.
mapfile -t base_objs < <(find "$build" \( -path '*CMakeFiles/fastdropout_core.dir/*' \
                                 -o -path '*CMakeFiles/_core.dir/*' \
                                 -o -path '*CMakeFiles/fastdropout_kernels_scalar.dir/*' \) \
                               \( -name '*.o' -o -name '*.obj' \) | sort)
echo "check_symbols: baseline objects (no AVX/AVX-512/BMI instructions)"
for obj in "${base_objs[@]}"; do
    if ! objdump -f "$obj" | grep -q 'x86-64'; then
        echo "  skip $(basename "$obj") (not x86-64)"
        continue
    fi
    hits=$(objdump -d --no-show-raw-insn "$obj" | grep -E \
        $'^\\s+[0-9a-f]+:\\s+(v[a-z0-9]+|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|tzcnt|popcnt|kmov[bwdq])\\b|%[yz]mm[0-9]|%k[0-7]\\b' \
        | grep -vE $'^\\s+[0-9a-f]+:\\s+ver[rw]\\b' | head -5 || true)
    if [[ -n $hits ]]; then
        echo "check_symbols: FAIL: baseline object $obj contains non-baseline instructions:" >&2
        echo "$hits" >&2
        fail=1
    else
        echo "  ok  $(basename "$obj")"
    fi
done

if [[ -n $module ]]; then
    echo "check_symbols: dynamic exports of $(basename "$module")"
    bad=$(nm -C -D --defined-only "$module" | grep -E 'fastdropout::(scalar|avx2|avx512|avx512fp16|neon)::' || true)
    weak=$(nm -C -D --defined-only "$module" | awk '$2 ~ /^[uvVwWi]$/' || true)
    if [[ -n $bad ]]; then
        echo "check_symbols: FAIL: $module exports kernel symbols:" >&2
        echo "$bad" >&2
        fail=1
    fi
    if [[ -n $weak ]]; then
        echo "  note: weak exports from libstdc++ headers in baseline code (harmless for ISA safety):"
        echo "$weak" | cut -c1-150 | sed 's/^/    /' | head -20
    fi
    others=$(nm -D --defined-only "$module" | awk '$2 ~ /^[A-Z]$/ {print $3}' | grep -vc '^PyInit_' || true)
    echo "  exports: $(nm -D --defined-only "$module" | awk '$2 ~ /^[A-Z]$/ {print $3}' | grep '^PyInit_' | tr '\n' ' ')+ $others std:: template/typeinfo symbols"
fi

if [[ $fail -ne 0 ]]; then
    echo "check_symbols: FAILED" >&2
    exit 1
fi
echo "check_symbols: OK (${#kernel_objs[@]} kernel objects, ${#base_objs[@]} baseline objects)"
