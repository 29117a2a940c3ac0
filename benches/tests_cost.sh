#!/usr/bin/env bash
# What each app test costs per run, against the daemon's default daily traffic budget.
# The real `vantage` binary runs `--test whatsapp|telegram|signal|facebook_messenger` once against
# loopback servers shaped like test-lists/apps.toml (16 WhatsApp endpoints x 2 ports, 6 Telegram
# data centres x 2 ports on 127.0.0.2-7, Signal's 4 backends + uptime host pinned to a test CA,
# Facebook's 7 names, a UDP DNS fixture answering every name), then again with every endpoint
# dropping SYNs (a full accept queue: connects never complete), with the engine's default timeouts.
# The harness is probe/tests/tests_cost.rs (an ignored test, so that `cargo test` does not run it).
#
# Bytes are the daemon's own charge (apps::traffic_bytes: response bodies in the measurement's
# records plus the measurement's JSON), read from the stored measurement, not counted on the wire.
# Loopback time says nothing about real latency: only the dropped column (deadlines) carries over.
# Usage: bash benches/tests_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --quiet -p vantage-probe --test tests_cost -- --ignored --nocapture --test-threads 1 2>&1 \
    | grep -v '^running\|^test result\|^$\|^test cost_of'
