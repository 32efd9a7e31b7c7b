#!/usr/bin/env bash
# Print the path of an `opa` binary (Open Policy Agent), building it once
# into a cache directory with `go install` from the Go module proxy. Used
# by `vigil bench decide --opa` to compare against OPA's server; OPA is
# never a dependency of Vigil's own modules. Idempotent and locked, so
# concurrent callers build it once.
#
#   scripts/opa.sh            # prints e.g. /root/.cache/vigil-opa/v1.22.4/opa
#   OPA_VERSION=v1.22.4 OPA_CACHE=/tmp/opa scripts/opa.sh
set -euo pipefail

version="${OPA_VERSION:-v1.22.4}"
cache="${OPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil-opa}/$version"
bin="$cache/opa"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$bin" ]; then
  echo "opa: building github.com/open-policy-agent/opa@$version (one time)…" >&2
  # Outside any workspace, so go.work and Vigil's go.mod files play no part.
  (cd "$cache" && GOWORK=off GOFLAGS=-mod=mod GOBIN="$cache" go install "github.com/open-policy-agent/opa@$version")
fi
echo "$bin"
