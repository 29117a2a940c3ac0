#!/usr/bin/env bash
# Installs ClickHouse (server and client) for the aggregator's ClickHouse store tests
# (aggregator/src/store/clickhouse.rs, started per test by tests/fixtures/src/clickhouse.rs as an
# ordinary process on a fresh directory; no system service is used or started here).
# Idempotent: does nothing when /usr/sbin/clickhouse-server is already there.
# Debian/Ubuntu only (apt-get; Debian's package is ClickHouse 18.16); must run as root to install.
set -euo pipefail

if [ -x /usr/sbin/clickhouse-server ]; then
    echo "clickhouse-server already installed: /usr/sbin/clickhouse-server"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: clickhouse-server is not installed and installing it needs root." >&2
    echo "       run: sudo bash $0" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install clickhouse-server with your system's package manager." >&2
    exit 1
fi

apt-get update -qq
# policy-rc.d: the package's maintainer scripts must not start a system-wide server (the tests
# start their own, on a free port); 101 = "action not allowed" (invoke-rc.d(8)).
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
status=0
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    clickhouse-server clickhouse-client >/dev/null || status=$?
if [ "$made_policy" = 1 ]; then
    rm -f "$policy"
fi
[ "$status" = 0 ] || { echo "error: apt-get install clickhouse-server clickhouse-client failed" >&2; exit "$status"; }

[ -x /usr/sbin/clickhouse-server ] || { echo "error: /usr/sbin/clickhouse-server still missing after install" >&2; exit 1; }
echo "clickhouse-server installed: /usr/sbin/clickhouse-server"
