#!/usr/bin/env bash
# Install what the browser tests (crates/roster-server/tests/browser.rs) need beyond the npm
# packages: Debian's `chromium`, driven headless by `playwright-core` (which never downloads a
# browser of its own). Does nothing, silently, when chromium is already installed; otherwise
# installs it with apt-get (root needed; the package lists are refreshed only when the first
# try fails) and prints apt's output only when that fails. Safe to run from parallel tests
# (one install at a time, via flock).
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1; }

have && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser-deps: chromium is not installed and apt-get is not available; install Chromium and put 'chromium' on PATH" >&2
  exit 1
fi
if [[ $(id -u) != 0 ]]; then
  echo "browser-deps: chromium is not installed; run 'sudo apt-get install -y chromium' (this script installs it only as root)" >&2
  exit 1
fi

exec 9>/tmp/roster-browser-deps.lock
flock 9
have && exit 0 # another process installed it while this one waited

log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1; }
if ! install; then
  # An old or missing package list is the usual cause: refresh it once and try again.
  if ! { apt-get update -qq >>"$log" 2>&1 && install; }; then
    echo "browser-deps: 'apt-get install chromium' failed:" >&2
    cat "$log" >&2
    exit 1
  fi
fi
have || { echo "browser-deps: chromium was installed but is not on PATH" >&2; exit 1; }
