#!/usr/bin/env bash
# The test command: formatting, lints, the binaries the system tests run,
# then every test in the workspace (debug builds).
set -euo pipefail
cd "$(dirname "$0")"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
else
  echo "warning: rustfmt is not installed; formatting not checked" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets -- -D warnings
else
  echo "warning: clippy is not installed; lints not checked" >&2
fi
cargo build --workspace --bins
cargo test --workspace
