#!/usr/bin/env bash
# The hub's CPU per no-op session, and a client's wall time per sync, in a
# loop: starts `county-hub serve` on HUB_DIR, runs N no-op
# `village-node sync` processes of VILLAGE_DIR against it one after the
# other (after 10 not counted), and reads the hub's user + system ticks
# from /proc/<pid>/stat before and after.
#
#   bench/session_cost.sh HUB_DIR VILLAGE_DIR [N]
#
# The hub's passphrase comes from CASE_NODE_PASSPHRASE; unlock the village
# first (`village-node unlock --data VILLAGE_DIR`). Release binaries.
set -euo pipefail
hub_dir=$1 village=$2 n=${3:-300}
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release"
port=$((20000 + RANDOM % 20000))
"$bin/county-hub" serve --data "$hub_dir" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
hub=$!
trap 'kill $hub 2>/dev/null' EXIT
sleep 1.5
sync() { "$bin/village-node" sync --data "$village" --peer "127.0.0.1:$port" >/dev/null 2>&1; }
for _ in $(seq 10); do sync; done
ticks() { awk '{print $14 + $15}' "/proc/$hub/stat"; }
hz=$(getconf CLK_TCK)
a=$(ticks); start=$(date +%s%N)
for _ in $(seq "$n"); do sync; done
end=$(date +%s%N); b=$(ticks)
python3 -c "print(f'hub CPU per session: {($b-$a)*1000/$hz/$n:.2f} ms; client wall per sync: {($end-$start)/1e6/$n:.2f} ms ($n runs)')"
