#!/usr/bin/env bash
# The caches outside the checkout that the project's own tools fill, for `make distclean`: uv's package
# cache, the control plane build (hack/cluster/build.sh), Go's build and module caches, and temp dirs
# named flywheel-* that a killed run left behind. Prints each with the disk it takes, then empties it with
# its own tool where it has one (uv cache clean, go clean). Nothing else is touched: everything here
# refills on the next `make test` (cold: ~30 min on 2 cores, most of it Go building the control plane).
#
#   UV=.tools/bin/uv hack/make/distclean.sh [--dry-run]
set -euo pipefail

dry_run=0
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=1 ;;
  *)  # anything else (--help, a typo) lists nothing and removes nothing
    echo "usage: hack/make/distclean.sh [--dry-run]   (removes uv's and Go's caches and the control plane build)" >&2
    exit 2 ;;
esac

entries=()  # "path|what|how"
add() { [[ -e "$1" ]] && entries+=("$1|$2|$3") || true; }

if [[ -n "${UV:-}" && -x "$UV" ]]; then
  add "$("$UV" cache dir)" "uv's package cache (shared by every uv project of this user)" uv
else
  add "${UV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/uv}" "uv's package cache (shared by every uv project of this user)" rm
fi
add "${FLYWHEEL_K8S_CACHE:-$HOME/.cache/flywheel-k8s}" "the control plane build (make cluster-build)" rm
if command -v go >/dev/null; then
  export GOTOOLCHAIN=local
  add "$(go env GOCACHE)" "Go's build cache (shared by every Go project of this user)" gocache
  add "$(go env GOMODCACHE)" "Go's module cache (shared by every Go project of this user)" gomodcache
fi
# Temp dirs of earlier runs: bench/controller's kept logs, metrics dirs of a run that was killed.
tmp="${TMPDIR:-/tmp}"
leftovers=()
while IFS= read -r -d '' leftover; do leftovers+=("$leftover"); done \
  < <(find "$tmp" -mindepth 1 -maxdepth 1 -name 'flywheel-*' -user "$(id -u)" -print0 2>/dev/null)

if ((${#entries[@]} == 0 && ${#leftovers[@]} == 0)); then
  echo "distclean: no caches to remove"
  exit 0
fi
echo "distclean: $( ((dry_run)) && echo "would remove" || echo "removing") (size, path, what):"
for entry in "${entries[@]}"; do
  IFS='|' read -r path what how <<<"$entry"
  printf '  %6s  %-40s %s\n' "$(du -sh "$path" 2>/dev/null | cut -f1)" "$path" "$what"
done
if ((${#leftovers[@]} > 0)); then
  printf '  %6s  %-40s %s\n' "$(du -shc "${leftovers[@]}" 2>/dev/null | tail -1 | cut -f1)" "$tmp/flywheel-* (${#leftovers[@]})" \
    "temp dirs of earlier runs (bench logs, metrics of killed runs)"
fi
feast_dirs=$(find "$tmp" -mindepth 1 -maxdepth 1 -name 'feast_metrics_*' -user "$(id -u)" 2>/dev/null | wc -l)
if ((feast_dirs > 0)); then
  echo "  (not removed: $feast_dirs feast_metrics_* dirs in $tmp; Feast makes one per feature-server start, and"
  echo "   another Feast project's look the same)"
fi
((dry_run)) && exit 0

for entry in "${entries[@]}"; do
  IFS='|' read -r path what how <<<"$entry"
  case "$how" in
    uv) "$UV" cache clean --quiet ;;
    gocache) go clean -cache ;;
    gomodcache) go clean -modcache ;;  # its files are read-only: rm -rf alone fails
    rm) chmod -R u+w "$path" 2>/dev/null || true; rm -rf "$path" ;;
  esac
done
if ((${#leftovers[@]} > 0)); then rm -rf "${leftovers[@]}"; fi
echo "distclean: done"
