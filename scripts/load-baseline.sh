#!/usr/bin/env bash
# The roster-load figures of BENCHMARKS.md ("WebSocket load"): each scenario RUNS times, all
# under one hold of the machine-wide lock (the runs are short; queueing behind other heavy jobs
# between them took longer than the runs), against a release node roster-load starts itself.
# Saves every report as JSON in OUT_DIR and prints one summary line per run (needs jq).
#
#   bash scripts/load-baseline.sh [RUNS] [OUT_DIR] [SCENARIO...]   # RUNS defaults to 3
#
# Exit status 3 from roster-load (the run found problems: closes, unanswered joins, views
# that did not settle) is a measurement, not a failure of this script.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
target=${CARGO_TARGET_DIR:-target}
out=${2:-$target/load-baseline/$(date -u +%Y%m%dT%H%M%SZ)}
only=("${@:3}")
if [[ -z ${ROSTER_LOAD_LOCKED:-} ]]; then
  cargo build --release -p roster-server -p roster-testkit
  mkdir -p "$out"
  exec env ROSTER_LOAD_LOCKED=1 flock /tmp/roster-heavy.lock bash "$0" "$runs" "$out" "${only[@]}"
fi
load=$target/release/roster-load

scenarios=(
  "rooms-of-10-at-fd-limit|--sockets 19900 --room-size 10 --close-fraction 0.5"
  "rooms-of-10-10k|--sockets 10000 --room-size 10 --close-fraction 0.5"
  "one-room-1000|--sockets 1000 --room-size 1000 --watchers 3 --watched-rooms 1 --close-fraction 0.5"
  "one-room-2000|--sockets 2000 --room-size 2000 --watchers 3 --watched-rooms 1 --close-fraction 0.5"
)

summary='[.scenario.sockets, .load_average[0], (.connect.per_second|floor),
  "joins \(.join.acked)/\(.join.joins) acks \(.join.seconds_to_all_acks) s (\(.join.acks_per_second|floor? // "-")/s) p50 \(.join.latency_ms.p50|floor) ms p99 \(.join.latency_ms.p99|floor) ms",
  "views \(.views.exact)/\(.views.checked) exact after \(.views.seconds_until_exact) s",
  "bytes/socket \((.traffic.bytes_per_socket.mean/1000)|floor) KB floor x\(.traffic.floor_ratio)",
  "rss/socket \((.server.per_socket_connected/1000)|floor) KB connected \((.server.per_socket_joined/1000)|floor) KB joined",
  "cpu node \(.server.cpu_join_seconds) client \(.client_cpu_join_seconds)",
  "after close \(.close.views.exact)/\(.close.views.checked) after \(.close.views.seconds_until_exact) s",
  "closed by server \(.closes_by_server)"] | map(tostring) | join(" | ")'

for entry in "${scenarios[@]}"; do
  name=${entry%%|*}
  if [[ ${#only[@]} -gt 0 && ! " ${only[*]} " == *" $name "* ]]; then
    continue
  fi
  read -r -a args <<<"${entry#*|}"
  for run in $(seq 1 "$runs"); do
    file=$out/$name.$run.json
    echo "== $name run $run: roster-load ${args[*]} --json > $file" >&2
    status=0
    "$load" "${args[@]}" --json >"$file" || status=$?
    if [[ $status -ne 0 && $status -ne 3 ]]; then
      echo "roster-load failed (exit $status)" >&2
      exit "$status"
    fi
    if command -v jq >/dev/null 2>&1; then
      echo "$name run $run (exit $status): $(jq -r "$summary" "$file")"
    fi
  done
done
echo "reports: $out" >&2
