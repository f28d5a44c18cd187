#!/usr/bin/env bash
# Generate the Kotlin and Swift sources of the Reflow bindings (UniFFI library mode) into
# bindings/generated/{kotlin,swift}. They are generated only: compiling them needs the
# Android/Kotlin and Swift toolchains (not installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
# CARGO_BUILD_ARGS: as in build-python.sh.
# shellcheck disable=SC2086
cargo build -p reflow-bindings -p uniffi-bindgen ${CARGO_BUILD_ARGS:-}
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
case "$(uname -s)" in
  Darwin) lib="libreflow_bindings.dylib" ;;
  *) lib="libreflow_bindings.so" ;;
esac
out="bindings/generated"
rm -rf "$out"
for lang in kotlin swift; do
  "$target_dir/debug/uniffi-bindgen" generate --library "$target_dir/debug/$lib" \
    --language "$lang" --out-dir "$out/$lang" --no-format
done
test -s "$out/kotlin/uniffi/reflow_bindings/reflow_bindings.kt"
test -s "$out/swift/reflow_bindings.swift"
echo "generated: $(find "$out" -type f | sort | tr '\n' ' ')"
