#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests (unit, the
# SIGKILL crash test, the .slt files in process / over pgwire / with
# restarts), and the docs. One build profile (dev) for everything.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests"
cargo test --workspace --locked
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== all green"
