#!/usr/bin/env bash
# Attack benchmark (BENCHMARKS.md "Under attack", SECURITY.md): health latency and the server's
# peak memory while CONNECTIONS silent sockets (from 400 loopback sources, reopened as soon as
# the server closes them) try to hold it, then the peak memory of each attack replayed by
# aggregator/tests/attacks.rs. Only loopback is used.
# Usage: bash benches/attacks.sh [CONNECTIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${1:-20000}"
SECS="${2:-60}"
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator --example flood
WORK=$(mktemp -d)
./target/release/vantage-aggregator serve --db "$WORK/agg.db" --listen 127.0.0.1:0 > "$WORK/out" 2> "$WORK/err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|.*listening on http://||p' "$WORK/out")
FLOOD=./target/release/examples/flood
"$FLOOD" health "$ADDR" 5 | sed 's/^/no attack: /'
# Two attacker processes, since one process may hold only its descriptor limit.
HALF=$((CONNS / 2))
"$FLOOD" hold "$ADDR" "$HALF" 1 "$SECS" > "$WORK/flood1" &
F1=$!
"$FLOOD" hold "$ADDR" "$HALF" 2 "$SECS" > "$WORK/flood2" &
F2=$!
sleep 5
"$FLOOD" health "$ADDR" $((SECS - 10)) | sed "s/^/under $CONNS silent connections: /"
wait $F1 $F2
cat "$WORK/flood1" "$WORK/flood2"
echo "server peak memory: $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$SERVER/status)"
kill $SERVER
# Each attack of the threat model against the real server (debug build), with its peak memory.
cargo test --quiet -p vantage-aggregator --test attacks -- --nocapture --test-threads 1 2>&1 \
    | grep -E '^attack-|test result'
