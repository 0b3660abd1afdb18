#!/usr/bin/env bash
# The test command: formatting, lints, the binaries the system tests run,
# then every test in the workspace (debug builds).
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
