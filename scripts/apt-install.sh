#!/usr/bin/env bash
# Install Debian packages a test needs (chromium, zookeeper, nodejs,
# python3-pytest, …) when a command is missing. Usage:
#   scripts/apt-install.sh COMMAND PACKAGE [PACKAGE…]
# Does nothing when COMMAND is already on PATH. Tests run in parallel
# (one process per Go package), so apt is serialised with a lock file and
# the package index is refreshed at most once per hour.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 COMMAND PACKAGE..." >&2
  exit 2
fi
cmd=$1; shift
if command -v "$cmd" >/dev/null 2>&1; then
  exit 0
fi
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
lock=/tmp/vigil-apt.lock
exec 9>"$lock"
flock 9
# Another test may have installed it while this one waited for the lock.
if command -v "$cmd" >/dev/null 2>&1; then
  exit 0
fi
stamp=/tmp/vigil-apt.updated
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +60 2>/dev/null)" ]; then
  echo "apt: refreshing the package index…" >&2
  as_root apt-get update -qq
  touch "$stamp"
fi
echo "apt: installing $* (for $cmd)…" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
command -v "$cmd" >/dev/null 2>&1 || { echo "apt: $cmd still missing after installing $*" >&2; exit 1; }
