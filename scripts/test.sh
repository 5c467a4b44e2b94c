#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, the
# SIGKILL crash test, the .slt files in process / over pgwire / with
# restarts), and the docs. One build profile (dev) for everything.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked 2>&1 | tee "$log"
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
# One closing line for the whole run: every libtest result plus the .slt files.
passed=$(grep -E '^test result:|^slt:' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:|^slt:' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "brook: $passed passed, $failed failed"
