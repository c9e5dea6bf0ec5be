#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace.
# The README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The product never turns on the core's ablation switches: only roster-sim (test machinery)
# enables the `ablation` feature, and the core builds and lints without it too.
if cargo tree -q -p roster -p roster-server -e normal,build,features -i roster-core | grep -q ablation; then
  echo "a product crate enables roster-core's ablation feature" >&2
  exit 1
fi
cargo clippy -p roster-core --all-targets --quiet -- -D warnings
bash scripts/js-deps.sh
bash scripts/browser-deps.sh
cargo test --workspace --lib --bins --tests --examples
cargo test --workspace --doc
