#!/usr/bin/env bash
# `uv sync --frozen` for each project named, skipping a project whose inputs did not change since its
# last successful sync. Every Python project has its own .venv (see the Makefile); re-syncing eleven of
# them on every `make up` is what made a warm start slow.
#
#   UV=.tools/bin/uv hack/make/sync.sh [--quiet] PROJECT...
#
# Inputs, hashed into <project>/.venv/.flywheel-sync: the project's pyproject.toml and uv.lock, the
# pyproject.toml of every path dependency (followed transitively through [tool.uv.sources]), the uv
# version and the interpreter (UV_PYTHON). Editable path dependencies need no re-sync when only their
# code changes. A .venv without the stamp, or whose python is gone, is synced. --quiet prints nothing
# when every project is up to date (for steps that sync what they need after `make install` ran).
set -euo pipefail

quiet=0
[[ "${1:-}" == "--quiet" ]] && { quiet=1; shift; }
: "${UV:?UV must name the uv binary}"
uv_version="$("$UV" --version)"

# The project's path dependencies, transitively: each `path = "..."` in its pyproject.toml.
path_deps() { # project-dir -> one resolved directory per line
  local dir=$1 dep
  { grep -oE 'path *= *"[^"]+"' "$dir/pyproject.toml" || true; } | sed -E 's/.*"([^"]+)"/\1/' | while read -r dep; do
    dep="$(cd "$dir/$dep" && pwd)"
    echo "$dep"
    path_deps "$dep"
  done
}

inputs_hash() { # project-dir
  local dir=$1 dep
  {
    printf '%s\n%s\n' "$uv_version" "${UV_PYTHON:-}"
    cat "$dir/pyproject.toml" "$dir/uv.lock"
    path_deps "$dir" | sort -u | while read -r dep; do
      printf '%s\n' "$dep"
      cat "$dep/pyproject.toml"
    done
  } | sha256sum | cut -c1-16
}

seconds_since() { # start (from `date +%s%N`) -> elapsed seconds, one decimal
  local ms=$((($(date +%s%N) - $1) / 1000000))
  printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

synced=0 total=0 started=$(date +%s%N)
for project in "$@"; do
  total=$((total + 1))
  stamp="$project/.venv/.flywheel-sync"
  want="$(inputs_hash "$project")"
  if [[ -x "$project/.venv/bin/python" && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then
    continue
  fi
  t0=$(date +%s%N)
  printf '==> uv sync %s ... ' "$project"
  rm -f "$stamp"
  if ! out="$(cd "$project" && "$UV" sync --frozen --quiet 2>&1)"; then
    printf 'failed\n%s\n' "$out" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
  seconds_since "$t0"; echo
  [[ -z "$out" ]] || printf '%s\n' "$out"
  synced=$((synced + 1))
done

if ((synced == 0)); then
  ((quiet)) || echo "==> install: all $total environments up to date (uv sync skipped; inputs unchanged)"
else
  echo "==> install: synced $synced of $total environments in $(seconds_since "$started")"
fi
