#!/usr/bin/env bash
# Ingest benchmark (BENCHMARKS.md, "Aggregator ingest: pre-signed measurements over HTTP").
# Usage: bash benches/ingest.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-50000}"
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator --example ingest_bench
WORK=$(mktemp -d)
# One key signs every measurement here, so its hourly allowance is lifted: this measures
# throughput, not the rate limit.
# SERVE_ARGS: more arguments for serve, word-split (benches/log.sh passes --no-log).
# shellcheck disable=SC2086
./target/release/vantage-aggregator serve --db "$WORK/agg.db" --listen 127.0.0.1:0 --lines-per-key-hour 0 ${SERVE_ARGS:-} > "$WORK/out" 2> "$WORK/err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|.*listening on http://||p' "$WORK/out")
./target/release/examples/ingest_bench "$ADDR" "$COUNT" tests/data/ooni/webconnectivity
ls -l "$WORK"/agg.db* | awk '{s+=$5} END {printf "database and WAL: %.0f bytes per measurement\n", s/'"$COUNT"'}'
