#!/usr/bin/env bash
# The transparency log at 10 million entries (BENCHMARKS.md, docs/transparency.md): inclusion
# and consistency proofs (size and time), tiles, and the bytes an entry takes on disk.
# Usage: [SKIP_BUILD=1] [MAX_GB=5.5] bash benches/log_proofs.sh [COUNT] [DIR]
# COUNT synthetic signed measurements (default 10,000,000) are appended through the SQLite
# store's own append path (aggregator/examples/log_proofs.rs), measured from the store, then
# through a real `serve` over HTTP; the database is deleted at the end. 10 million take about
# 5 GB (it stops early beyond MAX_GB, default 5.5) and a quarter of an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-10000000}"
DIR="${2:-/tmp}"
MAX_GB="${MAX_GB:-5.5}"
avail_kb=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }')
need_kb=$(awk -v g="$MAX_GB" 'BEGIN { printf "%d", g * 1.2 * 1e6 }')
if [ "$avail_kb" -lt "$need_kb" ]; then
    echo "log_proofs: $DIR has $((avail_kb / 1000000)) GB free, fewer than ${MAX_GB} GB and a margin" >&2
    exit 1
fi
# SKIP_BUILD=1 uses the binaries already in target/release.
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator --example log_proofs
fi
WORK=$(mktemp -d "$DIR/vantage-log-proofs.XXXXXX")
DB="$WORK/log.db"
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
/usr/bin/time -f "fill: %e s wall, %M KB peak memory" \
    ./target/release/examples/log_proofs fill "$DB" "$COUNT" "$MAX_GB"
./target/release/examples/log_proofs measure "$DB"
# The routes as a client sees them: `serve` on the same file (its checkpoint, signed by
# `measure` with the same key, holds every leaf), one connection, loopback.
./target/release/vantage-aggregator serve --db "$DB" --listen 127.0.0.1:0 --no-detect \
    > "$WORK/out" 2> "$WORK/err" &
SERVER=$!
for _ in $(seq 600); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|.*listening on http://||p' "$WORK/out")
if [ -z "$ADDR" ]; then
    echo "log_proofs: serve did not start:" >&2
    cat "$WORK/err" >&2
    exit 1
fi
./target/release/examples/log_proofs http "$ADDR" 1000
