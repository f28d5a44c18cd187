#!/usr/bin/env bash
# Run every fuzz target for SECONDS seconds each (default 30), growing fuzz/corpus/<target>/.
#
#   fuzz/run.sh 30            # the bounded tier, a few minutes in all once built
#   fuzz/run.sh 3600 receive  # on demand: one target, an hour
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). With a nightly toolchain the targets
# are built with AddressSanitizer; with only the stable toolchain (a fresh machine of this
# project's kind), with RUSTC_BOOTSTRAP=1 and no sanitizer (coverage-guided all the same: a
# panic or an assertion is what the harnesses report). A crash is left in
# fuzz/artifacts/<target>/ and the script fails: fix it, then copy the input into
# fuzz/regressions/<target>/, where `cargo test` replays it forever (engine/tests/fuzz_corpus.rs,
# demo-app/tests/fuzz_corpus.rs). Afterwards `fuzz/run.sh cmin` keeps the corpus minimal.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame ticket store_rows receive jsonld)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

toolchain=()
sanitizer=(-s address)
# REFLOW_FUZZ_STABLE=1: the stable path even where a nightly is installed (CI's bounded tier).
if [ "${REFLOW_FUZZ_STABLE:-0}" != 1 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
  sanitizer=(-s none)
fi
target_dir="${FUZZ_TARGET_DIR:-$PWD/target}"

if [ "$secs" = cmin ]; then
  for t in frame ticket store_rows receive jsonld; do
    cargo "${toolchain[@]}" fuzz cmin "${sanitizer[@]}" --target-dir "$target_dir" "$t" "corpus/$t"
  done
  exit 0
fi

mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  rc=0
  cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" --target-dir "$target_dir" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|SUMMARY)|panicked' "logs/$t.log" || true
  if [ "$rc" != 0 ]; then
    tail -n 40 "logs/$t.log" >&2
    echo "fuzz $t failed (exit $rc): see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
