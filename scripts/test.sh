#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace.
# The README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
bash scripts/js-deps.sh
bash scripts/browser-deps.sh
cargo test --workspace --lib --bins --tests --examples
cargo test --workspace --doc
