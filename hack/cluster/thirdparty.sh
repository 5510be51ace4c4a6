#!/usr/bin/env bash
# Fetch third-party manifests the cluster tests need, at the versions pinned in versions.env, from the
# Go module proxy (verified against the Go checksum database; cached in the Go module cache, so a warm
# run is offline). Nothing is built. The last line of stdout is a directory holding:
#
#   crds/     the CRDs the chart's custom resources are checked against: KServe's InferenceService, the
#             Prometheus Operator's ServiceMonitor and PrometheusRule
#   kserve/   what KServe's controller needs to run (kserve.py): all its CRDs (crds/), its
#             inferenceservice-config ConfigMap and its webhook configurations, as upstream ships them
#
#   hack/cluster/thirdparty.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${FLYWHEEL_K8S_CACHE:-$HOME/.cache/flywheel-k8s}"
command -v go >/dev/null || { echo "thirdparty.sh: go not found on PATH" >&2; exit 2; }

out="$cache/thirdparty-kserve-$KSERVE_VERSION-promop-$PROMETHEUS_OPERATOR_VERSION"
if [[ -e "$out/.complete" ]]; then echo "$out"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
module_dir() { # module version -> its extracted directory in the module cache
  (cd / && go mod download -json "$1@$2") |
    python3 -c 'import json, sys; d = json.load(sys.stdin); sys.exit(d["Error"]) if "Error" in d else print(d["Dir"])'
}
kserve="$(module_dir github.com/kserve/kserve "$KSERVE_VERSION")"
promop="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")"

tmp="$out.tmp.$$"
rm -rf "$tmp" && mkdir -p "$tmp/crds" "$tmp/kserve/crds"
cp "$kserve/config/crd/full/serving.kserve.io_inferenceservices.yaml" "$tmp/crds/"
for kind in servicemonitors prometheusrules; do
  cp "$promop/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$tmp/crds/"
done
find "$kserve/config/crd/full" -name 'serving.kserve.io_*.yaml' -exec cp {} "$tmp/kserve/crds/" \;
cp "$kserve/config/configmap/inferenceservice.yaml" "$tmp/kserve/inferenceservice-config.yaml"
cp "$kserve/config/webhook/manifests.yaml" "$tmp/kserve/webhooks.yaml"
chmod -R u+w "$tmp"
touch "$tmp/.complete"
rm -rf "$out" && mv "$tmp" "$out"
echo "$out"
