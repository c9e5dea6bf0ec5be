#!/usr/bin/env bash
# The simulation soak (docs/simulation.md, "Soak"): COUNT three-node and COUNT five-node seeds
# from FROM on, each the same run as the test suite's seeds tests, in release mode on every
# core, under the machine-wide lock for heavy runs.
#
#   bash scripts/soak.sh                 # 50,000 + 50,000 seeds from 0
#   bash scripts/soak.sh 5000 200000     # 5,000 + 5,000 seeds from 200,000
#   NODES=5 bash scripts/soak.sh 1000    # one cluster size only
#
# Prints progress, every failing seed with the command that replays it, and a summary per
# cluster size; failing seeds are also appended to target/soak-failures.txt. Exits 1 if any
# seed failed.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-50000}
from=${2:-0}
sizes=${NODES:-3 5}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p roster-core --example sim_soak
mkdir -p "$target"
failures="$target/soak-failures.txt"
lock=${SOAK_LOCK:-/tmp/roster-heavy.lock}
echo "soak: $count seeds from $from for ${sizes// /- and }-node clusters; waiting for $lock"
exec 9>>"$lock"
flock 9
echo "soak: lock held; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
started=$(date +%s)
# CPU time as well as wall time: the machine is shared, and CPU seconds say what the soak
# costs whatever else runs.
timed=()
if [ -x /usr/bin/time ]; then timed=(/usr/bin/time -f "soak: %e s wall, %U s user CPU, %S s system CPU"); fi
for nodes in $sizes; do
  "${timed[@]}" "$target/release/examples/sim_soak" --nodes "$nodes" --from "$from" --count "$count" \
    --failures-file "$failures" || status=1
done
echo "soak: all done in $(( $(date +%s) - started )) s wall; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
[ $status -eq 0 ] || echo "soak: failing seeds are listed in $failures"
exit $status
