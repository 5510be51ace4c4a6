#!/usr/bin/env bash
# Makes Debian's redis-server available to the tests and benchmarks that start their own Redis (the chart's
# online store): the binary on PATH if there is one, else, as root with apt, the `redis-server` package.
# Never enables or starts a system service: the callers start redis-server themselves, on a loopback port
# with a temporary directory, and stop it. Prints the binary's path (the last line of stdout).
#
#   hack/test/redis-server.sh           # find or install, print the path
#   hack/test/redis-server.sh --check   # find only: exit 1 (install nothing) when it is missing
set -euo pipefail

log() { echo "redis-server.sh: $*" >&2; }

found() { command -v redis-server 2>/dev/null || { [[ -x /usr/bin/redis-server ]] && echo /usr/bin/redis-server; }; }

if path=$(found); then
  echo "$path"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  log "redis-server is not installed"
  exit 1
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  log "redis-server is not on PATH and cannot be installed here (needs root and apt-get):" \
    "install Debian's redis-server package (or any redis-server >= 6) and put it on PATH"
  exit 1
fi
log "installing Debian's redis-server package (apt-get)"
# policy-rc.d exit 101 tells invoke-rc.d not to start the service the package ships (Debian's container images
# have one already; otherwise it is ours for the install only).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
fi
trap '((own_policy)) && rm -f "$policy"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package's postinst enables its unit (a real systemd machine would start Redis at boot): undo that.
if command -v deb-systemd-helper >/dev/null; then
  DPKG_MAINTSCRIPT_PACKAGE=redis-server deb-systemd-helper disable redis-server.service >/dev/null 2>&1 || true
fi
path=$(found) || { log "apt-get installed redis-server but no redis-server binary is on PATH"; exit 1; }
log "installed $("$path" --version | head -1)"
echo "$path"
