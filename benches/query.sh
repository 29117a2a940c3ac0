#!/usr/bin/env bash
# Query benchmark (BENCHMARKS.md, "Aggregator queries with 10 million stored measurements"):
# search latency over HTTP with millions of stored measurements.
# Usage: bash benches/query.sh [COUNT] [DB]
# The database is filled once (through the aggregator's own ingest and compaction) and reused;
# 10 million measurements take about 40 GB and half an hour on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-10000000}"
DB="${2:-/tmp/vantage-query-bench.db}"
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator --example query_bench
if [ ! -e "$DB" ]; then
    /usr/bin/time -f "fill: %e s wall, %M KB peak memory" \
        ./target/release/examples/query_bench fill "$DB" "$COUNT" tests/data/ooni/webconnectivity
fi
ls -l "$DB"* | awk -v n="$COUNT" \
    '{s+=$5} END {printf "database and WAL: %.1f GB, %.0f bytes per measurement\n", s/1e9, s/n}'
WORK=$(mktemp -d)
./target/release/vantage-aggregator serve --db "$DB" --listen 127.0.0.1:0 > "$WORK/out" 2> "$WORK/err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|.*listening on http://||p' "$WORK/out")
# Cold: with the page cache dropped (needs root), the first searches read from disk.
if [ "$(id -u)" = 0 ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
    ./target/release/examples/query_bench query "$ADDR" 100 | sed 's/^/cold cache, /'
fi
./target/release/examples/query_bench query "$ADDR" 1000 | sed 's/^/warm, /'
