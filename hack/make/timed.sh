#!/usr/bin/env bash
# Runs a long make step and says how long it took: `timed.sh "simulate history" cmd args...` prints
# "==> simulate history ..." before and "==> simulate history: 3.1 s" (or "failed after 3.1 s") after,
# the same form as the install step's lines. The command's own output passes through unchanged.
set -uo pipefail
label=$1
shift
echo "==> $label ..."
start=$(date +%s.%N)
"$@"
rc=$?
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
if ((rc == 0)); then echo "==> $label: $took s"; else echo "==> $label: failed after $took s (exit $rc)" >&2; fi
exit "$rc"
