#!/usr/bin/env bash
# Build the reflow-bindings cdylib, generate the Python module from it (UniFFI library mode),
# and install it as the `reflow` package (pip, editable-free: plain files in site-packages).
#
#   bindings/build-python.sh            # debug build, installs into the current python3
#   PROFILE=release bindings/build-python.sh
#
# Afterwards: `python3 -m pytest bindings/tests`.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-debug}"
PYTHON="${PYTHON:-python3}"
flag=()
[ "$PROFILE" = release ] && flag=(--release)

cargo build "${flag[@]}" -p reflow-bindings -p uniffi-bindgen

target_dir="$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
case "$(uname -s)" in
  Darwin) lib="libreflow_bindings.dylib" ;;
  MINGW*|MSYS*|CYGWIN*) lib="reflow_bindings.dll" ;;
  *) lib="libreflow_bindings.so" ;;
esac
libpath="$target_dir/$PROFILE/$lib"

pkg="bindings/python/reflow"
rm -rf "$pkg"
mkdir -p "$pkg"
"$target_dir/$PROFILE/uniffi-bindgen" generate --library "$libpath" --language python --out-dir "$pkg" --no-format
cp "$libpath" "$pkg/"
cat > "$pkg/__init__.py" <<'PY'
"""Reflow: local-first ValueFlows ledger (UniFFI bindings)."""
from .reflow_bindings import *  # noqa: F401,F403
PY

"$PYTHON" -m pip install --quiet --no-build-isolation ./bindings/python
"$PYTHON" -m pytest --version >/dev/null 2>&1 || "$PYTHON" -m pip install --quiet pytest
echo "installed: $("$PYTHON" -c 'import reflow, os; print(os.path.dirname(reflow.__file__))')"
