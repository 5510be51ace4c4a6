#!/usr/bin/env bash
# Stop a control plane started by up.sh; waits until every component exited.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(realpath -m "${1:-$here/../../.run/cluster}")"
state="$dir/state.json"
[[ -f "$state" ]] || { echo "down.sh: nothing running in $dir" >&2; exit 0; }
pid="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["supervisor_pid"])' "$state")"
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 60); do
  kill -0 "$pid" 2>/dev/null || { echo "down.sh: stopped"; exit 0; }
  sleep 0.5
done
echo "down.sh: pid $pid still running after 30s" >&2
exit 1
