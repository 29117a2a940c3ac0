#!/usr/bin/env bash
# What each new test costs per run (apps, dnscheck, quic), against the daemon's default daily
# traffic budget (200 MB), at the daemon's default frequency (daily for each).
# The real `vantage` binary runs `--test whatsapp|telegram|signal|facebook_messenger` once against
# loopback servers shaped like test-lists/apps.toml (16 WhatsApp endpoints x 2 ports, 6 Telegram
# data centres x 2 ports on 127.0.0.2-7, Signal's 4 backends + uptime host pinned to a test CA,
# Facebook's 7 names, a UDP DNS fixture answering every name), `--test dnscheck` against 5 DoH and
# 5 DoT servers shaped like test-lists/resolvers.toml (1-2 extra addresses each, on 127.0.0.1-2),
# `--test quic` against 20 https hosts (the built-in global list's count; a quinn server beside
# TCP/TLS); then again with every endpoint dropping SYNs (a full accept queue: connects never
# complete) and, for QUIC, datagrams (a UDP socket nobody reads), with the engine's default
# timeouts (DNS 4 s, TCP/TLS/HTTP 10 s) and the CLI's default concurrency (8).
# The harness is probe/tests/tests_cost.rs (an ignored test, so that `cargo test` does not run it).
#
# Bytes are the daemon's own charge, read from the stored measurements, not counted on the wire:
# apps::traffic_bytes (response bodies in the records plus the measurement's JSON) for the apps,
# the measurement's JSON (with the handshakes' certificates) for dnscheck and quic.
# Takes about 5 minutes, most of it waiting out deadlines in the dropped runs.
# Loopback time says nothing about real latency: only the dropped column (deadlines) carries over.
# A debug build (the tests' own profile): the times are dominated by process start-up on
# loopback and by deadlines when dropped, neither of which the profile changes much.
# Usage: bash benches/tests_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet -p vantage-probe --test tests_cost -- --ignored --nocapture --test-threads 1 2>&1 \
    | grep -v '^running\|^test result\|^$\|^test cost_of\|^\.$\|^ok$'
