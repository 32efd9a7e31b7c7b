#!/usr/bin/env bash
# Make sure a ClickHouse server answers on 127.0.0.1:9000: start the local
# one if it is installed but stopped, install Debian's clickhouse-server
# first if it is missing. Idempotent; safe to run before every `make`.
set -euo pipefail

# Probe the HTTP interface with bash alone, so the check needs no client.
ready() {
  (exec 3<>/dev/tcp/127.0.0.1/8123 && printf 'GET /ping HTTP/1.0\r\n\r\n' >&3 && grep -q '^Ok' <&3) 2>/dev/null
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ready; then
  exit 0
fi

if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/bin/clickhouse ]; then
  echo "clickhouse: installing Debian's clickhouse-server (one time)…" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi

echo "clickhouse: starting the local server…" >&2
as_root mkdir -p /var/lib/clickhouse /var/log/clickhouse-server /var/run/clickhouse-server
as_root chown -R clickhouse:clickhouse /var/lib/clickhouse /var/log/clickhouse-server /var/run/clickhouse-server
# No systemd in containers and CI: run the server as a daemon ourselves.
as_root su -s /bin/sh clickhouse -c \
  "clickhouse-server --config-file=/etc/clickhouse-server/config.xml --pid-file=/var/run/clickhouse-server/clickhouse-server.pid --daemon"

for _ in $(seq 1 120); do
  if ready; then
    echo "clickhouse: ready" >&2
    exit 0
  fi
  sleep 0.5
done
echo "clickhouse: server did not come up in 60s; see /var/log/clickhouse-server/clickhouse-server.err.log" >&2
exit 1
