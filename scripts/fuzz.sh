#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while, from the committed
# corpus (fuzz/corpus/<target>/, which tests/fuzz_corpus.rs also replays on
# every test run). A finding fails the run and is left in
# fuzz/artifacts/<target>/: fix it, then copy it into the corpus.
#
#   bash scripts/fuzz.sh              # every target, 60 s each (CI)
#   bash scripts/fuzz.sh 1800 sql     # one target, 30 minutes
#
# Stable Rust: no sanitizer (Brook forbids unsafe code), libFuzzer with
# coverage instrumentation. cargo-fuzz is installed under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sql pgwire http log_files record_decoders)
fi
tools="$HOME/.cache/brook-tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install --quiet --locked --root "$tools" cargo-fuzz@0.13.2
fi
export PATH="$tools/bin:$PATH"
# Its own target directory: instrumented builds must not evict the main one.
export CARGO_TARGET_DIR="$HOME/.cache/brook-fuzz-target"
cd fuzz
cargo fuzz build --dev -s none
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)
  echo "== fuzz $t for ${seconds}s"
  # New inputs go to the scratch folder; the committed corpus is read only.
  log="$scratch.log"
  status=0
  cargo fuzz run --dev -s none "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)|ERROR|SUMMARY|panicked|^Done ' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
  fi
  rm -f "$log"
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed (status $status): see fuzz/artifacts/$t/"
    exit 1
  fi
done
