#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run): installs what the tests need beyond the
# Rust toolchain, then runs every test of the workspace.
#
# - Chromium, for the web page test (tests/web/install-chromium.sh, apt-get, idempotent).
# - As root, the tests run inside a network namespace that holds only loopback (unshare -n,
#   from util-linux; `ip` from iproute2 brings loopback up), so a test that tried to reach
#   beyond loopback fails instead of sending a packet.
# - Then, as root, the censorship lab (tests/lab/run.sh: network namespaces of its own, with
#   iproute2, iptables and dnsmasq installed by it if missing). Without root it cannot run, and
#   this script says so and fails rather than pass without it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    bash tests/web/install-chromium.sh
    if ! command -v ip >/dev/null; then
        apt-get update -qq && apt-get install -y -qq iproute2
    fi
elif ! command -v chromium >/dev/null; then
    echo "tests/run.sh: chromium is missing and installing it needs root:" >&2
    echo "    sudo bash tests/web/install-chromium.sh" >&2
    exit 1
fi

if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
    cargo fetch --locked
    CARGO_NET_OFFLINE=true unshare -n bash -c 'ip link set lo up && cargo test --workspace --locked'
else
    cargo test --workspace --locked
fi

if [ "$(id -u)" = 0 ]; then
    bash tests/lab/run.sh
else
    echo "tests/run.sh: the censorship lab needs root; run it with: sudo bash tests/lab/run.sh" >&2
    exit 1
fi
