#!/usr/bin/env bash
# Build the local control plane's binaries from upstream sources through the
# Go module proxy, once. Idempotent: a binary already in the cache is not
# rebuilt. The last line of stdout is the directory holding every binary
# (symlinks into the per-component caches), for controlplane.py and scripts.
#
#   hack/cluster/build.sh            # build what is missing, print bin dir
#   hack/cluster/build.sh --check    # exit 1 (build nothing) if anything is missing
#
# Cache: ${FLYWHEEL_K8S_CACHE:-$HOME/.cache/flywheel-k8s}/<component>-<version>-<sum>/bin
# where <sum> hashes the wrapper module's go.mod + go.sum, so bumping a pin in
# versions.env (and re-running `go get -tool`, see README) builds a new dir.
#
# Output (stderr): one line per binary it builds, with its time. The Go
# toolchain's own output (~200 `go: downloading ...` lines on a cold module
# cache) goes to <cache>/build.log; a failed build shows the end of it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${FLYWHEEL_K8S_CACHE:-$HOME/.cache/flywheel-k8s}"
check_only=0
[[ "${1:-}" == "--check" ]] && check_only=1

command -v go >/dev/null || { echo "build.sh: go not found on PATH" >&2; exit 2; }
mkdir -p "$cache"

# The wrapper modules say `go 1.26.0`; never let go fetch another toolchain,
# and never let a build edit the committed go.mod/go.sum.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0

log() { echo "build.sh: $*" >&2; }

# versions.env names the pins; the wrapper go.mod files hold them. Refuse to
# build if the two disagree (someone bumped one and not the other).
pin_check() { # component module version
  grep -qE "^[[:space:]]*(require )?$2 $3( |\$)" "$here/go/$1/go.mod" || {
    log "go/$1/go.mod does not pin $2 $3 (versions.env); see README.md 'Bumping a version'"
    exit 2; }
}
pin_check kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
staging="v0.${KUBERNETES_VERSION#v1.}"
if grep -E '=> k8s.io/' "$here/go/kubernetes/go.mod" | grep -qv " $staging\$"; then
  log "go/kubernetes/go.mod: every staging replace must point at $staging"; exit 2
fi
pin_check etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
pin_check kwok sigs.k8s.io/kwok "$KWOK_VERSION"
pin_check helm helm.sh/helm/v3 "$HELM_VERSION"
pin_check skaffold github.com/GoogleContainerTools/skaffold/v2 "$SKAFFOLD_VERSION"
pin_check dockerfile-lint github.com/moby/buildkit "$BUILDKIT_VERSION"
pin_check kserve github.com/kserve/kserve "$KSERVE_VERSION"

# recipe[name]: how a component's build differs from a plain `go build` (its release ldflags); part of the
# cache key, so changing how a binary is built rebuilds it.
declare -A recipe=(
  [helm]="release-ldflags-v1: version, gitTreeState, chartutil+lint k8sVersionMajor/Minor"
)

component_dir() { # name version
  local sum
  # The wrapper's own Go sources (dockerfile-lint has some) count too, so editing them rebuilds.
  sum="$( (cat "$here/go/$1/go.mod" "$here/go/$1/go.sum" "$here/go/$1"/*.go 2>/dev/null; if [[ -n "${recipe[$1]:-}" ]]; then echo "${recipe[$1]}"; fi) \
    | sha256sum | cut -c1-10)"
  echo "$cache/$1-$2-$sum"
}

golog="$cache/build.log"
missing=0
building=0
# build_one component version binary package [ldflags]
build_one() {
  local comp=$1 version=$2 bin=$3 pkg=$4 ldflags=${5:-}
  local dir; dir="$(component_dir "$comp" "$version")"
  if [[ -x "$dir/bin/$bin" ]]; then return 0; fi
  if (( check_only )); then log "missing $dir/bin/$bin"; missing=1; return 0; fi
  if (( ! building )); then
    building=1
    : > "$golog"
    log "building what is missing from source (nice -n 19; ~20 min on 2 cores with a cold Go cache)"
    log "the Go toolchain's output: $golog"
  fi
  mkdir -p "$dir/bin"
  printf 'build.sh: %s (%s %s) ... ' "$bin" "$comp" "$version" >&2
  echo "=== $(date -u +%FT%TZ) go build $pkg -> $dir/bin/$bin" >> "$golog"
  local t0 t1
  t0=$(date +%s)
  # -trimpath + static build: the binary does not depend on this checkout.
  # Written under a temp name then renamed, so an interrupted build never
  # leaves a half binary that later runs would treat as cached.
  if ! (cd "$here/go/$comp" && nice -n 19 go build -trimpath -ldflags "-s -w $ldflags" \
      -o "$dir/bin/.$bin.tmp" "$pkg") >> "$golog" 2>&1; then
    echo "FAILED after $(( $(date +%s) - t0 ))s; the end of $golog:" >&2
    tail -n 25 "$golog" >&2
    exit 1
  fi
  mv -f "$dir/bin/.$bin.tmp" "$dir/bin/$bin"
  t1=$(date +%s)
  echo "$(date -u +%FT%TZ) $bin $((t1 - t0))s go=$(go env GOVERSION)" >> "$dir/build-times.log"
  echo "built in $((t1 - t0))s" >&2
}

# Serialise concurrent callers (two pytest sessions) so each binary builds once.
exec 9>"$cache/.build.lock"
flock 9

kv="$KUBERNETES_VERSION"
kminor="${kv#v1.}"; kminor="${kminor%%.*}"
# Same version stamping as upstream hack/lib/version.sh, so `kubectl version`,
# kwok and helm see a real server version instead of v0.0.0-master.
kldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kldflags+=" -X $p.gitVersion=$kv -X $p.gitMajor=1 -X $p.gitMinor=$kminor"
  kldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

build_one etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3
build_one kubernetes "$kv" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kldflags"
build_one kubernetes "$kv" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kldflags"
build_one kubernetes "$kv" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$kldflags"
build_one kubernetes "$kv" kubectl k8s.io/kubernetes/cmd/kubectl "$kldflags"
build_one kwok "$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwok
# Helm's release build (its Makefile) stamps the Kubernetes version of the client-go it was built with;
# without it Helm assumes Kubernetes v1.20 and `helm template` refuses a chart whose kubeVersion is newer.
helm_k8s="$(cd "$here/go/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"  # v0.MINOR.PATCH
helm_k8s_minor="${helm_k8s#v0.}"; helm_k8s_minor="${helm_k8s_minor%%.*}"
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$helm_k8s_minor"
done
build_one helm "$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm "$helm_ldflags"
build_one skaffold "$SKAFFOLD_VERSION" skaffold github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold \
  "-X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$SKAFFOLD_VERSION"
build_one dockerfile-lint "$BUILDKIT_VERSION" dockerfile-lint .
build_one kserve "$KSERVE_VERSION" kserve-manager github.com/kserve/kserve/cmd/manager

if (( missing )); then exit 1; fi

# One directory of symlinks, keyed by every component dir, so callers need a
# single PATH entry.
components=(etcd:$ETCD_VERSION kubernetes:$kv kwok:$KWOK_VERSION helm:$HELM_VERSION
            skaffold:$SKAFFOLD_VERSION dockerfile-lint:$BUILDKIT_VERSION kserve:$KSERVE_VERSION)
bundle_key="$(for c in "${components[@]}"; do
  component_dir "${c%%:*}" "${c#*:}"; done | sha256sum | cut -c1-10)"
bundle="$cache/bundle-$bundle_key/bin"
if [[ ! -e "$bundle/../kwok-stages.yaml" ]]; then
  mkdir -p "$bundle"
  for c in "${components[@]}"; do
    d="$(component_dir "${c%%:*}" "${c#*:}")/bin"
    for b in "$d"/*; do ln -sfn "$b" "$bundle/$(basename "$b")"; done
  done
  # Recent kwok ships no built-in lifecycle: Stages must come as config. Take
  # upstream's own stage files from the pinned module (what `kwokctl` uses by
  # default): nodes become Ready and keep a Lease; pods become Ready, Job pods
  # Succeed, deleted pods go away.
  kwok_module="$(cd "$here/go/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok 2>> "$golog")" || {
    log "go list -m sigs.k8s.io/kwok failed; the end of $golog:"; tail -n 25 "$golog" >&2; exit 1; }
  src="$kwok_module/kustomize/stage"
  stages="$bundle/../.kwok-stages.yaml.tmp"
  : > "$stages"
  for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
           pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    { echo "---"; cat "$src/$f.yaml"; } >> "$stages"
  done
  mv -f "$stages" "$bundle/../kwok-stages.yaml"
fi
echo "$bundle"
