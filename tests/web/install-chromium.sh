#!/usr/bin/env bash
# Installs a headless-capable Chromium for the web page tests (tests/web).
# Idempotent: does nothing when `chromium` is already on PATH.
# Debian/Ubuntu only (uses apt-get); must run as root to install.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: chromium is not installed and installing it needs root." >&2
    echo "       run: sudo $0" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found; install chromium with your system's package manager." >&2
    exit 1
fi

apt-get update
# fonts-dejavu-core: headless Chromium renders text as empty boxes without any font installed.
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core

command -v chromium >/dev/null 2>&1 || { echo "error: chromium still not on PATH after install" >&2; exit 1; }
echo "chromium installed: $(command -v chromium)"
