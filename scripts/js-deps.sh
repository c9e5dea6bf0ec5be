#!/usr/bin/env bash
# Install the npm packages of the JS tests (crates/roster-server/tests/js: the real `phoenix`
# client and `ws`) exactly as package-lock.json pins them. Does nothing, silently, when
# node_modules is newer than package.json and the lock file; prints npm's output and fails
# when npm fails. Safe to run from parallel tests (one install at a time, via flock when present).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=crates/roster-server/tests/js
stamp=$dir/node_modules/.roster-js-deps

fresh() {
  [[ -f $stamp && ! $dir/package-lock.json -nt $stamp && ! $dir/package.json -nt $stamp ]]
}

fresh && exit 0

if ! command -v npm >/dev/null 2>&1; then
  echo "js-deps: npm not found; the JS tests need Node 20+ and npm" >&2
  exit 1
fi

if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.js-deps.lock"
  flock 9
  fresh && exit 0 # another process installed while this one waited
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# npm ci removes node_modules first, so a failed install leaves no stamp and is retried.
if ! (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >"$log" 2>&1; then
  echo "js-deps: 'npm ci' failed in $dir:" >&2
  cat "$log" >&2
  exit 1
fi
touch "$stamp"
