#!/usr/bin/env bash
# Developer loop: rebuild the editable install's extension in place (after a first
# `pip install --no-build-isolation -e . -Cbuild-dir=build/editable`).
set -euo pipefail
cd "$(dirname "$0")/.."
ninja -C build/editable
site=$(python -c 'import fastdropout, os; print(os.path.dirname(fastdropout._core.__file__))' 2>/dev/null \
       || python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"] + "/fastdropout")')
so=$(ls build/editable/_core*.so)
# copy then rename: processes that have the old module mapped keep their inode
cp "$so" "$site/.$(basename "$so").tmp" && mv -f "$site/.$(basename "$so").tmp" "$site/$(basename "$so")"
echo "installed $(ls build/editable/_core*.so) -> $site"
