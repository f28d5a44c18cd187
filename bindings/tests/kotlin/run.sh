#!/usr/bin/env bash
# The bindings' Kotlin test: compile ReflowTest.kt with kotlinc (npm `kotlin-compiler`, pinned
# in package-lock.json) against the generated Kotlin sources (generate-kotlin-swift.sh), then
# run it on the JVM (Java 17) with JNA (Debian's libjna-java) loading the debug cdylib.
# Usage: bindings/tests/kotlin/run.sh  (after bindings/generate-kotlin-swift.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
[ -x "$here/node_modules/kotlin-compiler/bin/kotlinc" ] ||
  npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
kotlin="$here/node_modules/kotlin-compiler"
jna="${JNA_JAR:-/usr/share/java/jna.jar}"
[ -f "$jna" ] || { echo "JNA not found at $jna (apt-get install libjna-java, or set JNA_JAR)" >&2; exit 1; }
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
generated="$root/bindings/generated/kotlin/uniffi/reflow_bindings/reflow_bindings.kt"
[ -s "$generated" ] || { echo "run bindings/generate-kotlin-swift.sh first" >&2; exit 1; }
libs="$kotlin/lib/kotlin-stdlib.jar:$kotlin/lib/kotlin-test.jar:$kotlin/lib/kotlinx-coroutines-core-jvm.jar:$jna"
mkdir -p "$here/build"
"$kotlin/bin/kotlinc" -nowarn -cp "$libs" -d "$here/build/test.jar" "$generated" "$here/ReflowTest.kt"
java -Djna.library.path="$target_dir/debug" -cp "$here/build/test.jar:$libs" ReflowTestKt
