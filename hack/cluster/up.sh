#!/usr/bin/env bash
# Start the local control plane in the background (for `make up` and manual
# use). Builds on first use. Prints the KUBECONFIG line to eval.
#
#   eval "$(hack/cluster/up.sh)"        # default dir: .run/cluster
#   hack/cluster/down.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(realpath -m "${1:-$here/../../.run/cluster}")"
timeout="${FLYWHEEL_K8S_UP_TIMEOUT:-900}"  # seconds; a cold build takes most of it

state="$dir/state.json"
if [[ -f "$state" ]] && kill -0 "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["supervisor_pid"])' "$state")" 2>/dev/null; then
  echo "export KUBECONFIG=$dir/admin.kubeconfig"  # already up: idempotent
  exit 0
fi
"$here/build.sh" >/dev/null
mkdir -p "$(dirname "$dir")"
log="$(dirname "$dir")/$(basename "$dir").log"
nohup python3 "$here/controlplane.py" up --dir "$dir" >"$log" 2>&1 &
pid=$!
for _ in $(seq "$timeout"); do
  if [[ -f "$state" ]]; then
    echo "export KUBECONFIG=$dir/admin.kubeconfig"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "up.sh: control plane failed to start; see $log" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  sleep 1
done
echo "up.sh: not ready after ${timeout}s; see $log" >&2
kill -TERM "$pid"
exit 1
