#!/usr/bin/env bash
# The two stores side by side, in one run on one machine (BENCHMARKS.md, "SQLite and ClickHouse"):
#
#   (a) GET /api/v1/measurements p50/p95/p99 idle and while UPLOADERS probes post 100-line
#       signed batches as fast as they can for SECONDS (aggregator/examples/read_under_ingest.rs),
#       on SQLite (`serve --db`) and on ClickHouse (`serve --store clickhouse://`);
#   (b) the lines per second ingested meanwhile with one and with two `serve` nodes sharing one
#       ClickHouse (uploaders split between the nodes), and the ratio;
#   (c) COUNT measurements filled into each store through the aggregator's own ingest
#       (aggregator/examples/query_bench.rs fill), then searches by country and time range and
#       by domain over HTTP (p50/p95/p99), and bytes on disk per measurement;
#   (d) one full detection pass (`vantage-aggregator detect --cc IR --since ...`) over the
#       largest country of (c)'s data, the whole year, timed on each store.
#
# ClickHouse is a real clickhouse-server (tests/clickhouse.sh installs it), started on a fresh
# directory and free loopback ports by aggregator/examples/clickhouse_server.rs and stopped at
# the end. Nothing leaves loopback.
#
# (a) also runs ClickHouse with `serve --upload-niceness 0`, uploads at the same priority as
# searches, to show what running them lower buys.
#
# Usage: bash benches/stores.sh [SECONDS] [COUNT] [UPLOADERS] [SECTIONS]   (SECTIONS: any of
# abcd, default abcd; e.g. `a` for the searches under upload alone, about 6 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
COUNT="${2:-1000000}"
UPLOADERS="${3:-50}"
SECTIONS="${4:-abcd}"
OUT=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    exec 3>&- 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

[ -x /usr/sbin/clickhouse-server ] || { echo "run: sudo bash tests/clickhouse.sh" >&2; exit 1; }
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator \
    --example read_under_ingest --example query_bench --example clickhouse_server
BIN=target/release
AGG="$BIN/vantage-aggregator"

# ClickHouse: runs until fd 3 closes.
mkfifo "$OUT/ch-in"
"$BIN/examples/clickhouse_server" < "$OUT/ch-in" > "$OUT/ch-out" &
CH_PID=$!
exec 3> "$OUT/ch-in"
for _ in $(seq 300); do [ "$(wc -l < "$OUT/ch-out")" -ge 2 ] && break; sleep 0.1; done
CH=$(sed -n 1p "$OUT/ch-out")
[ -n "$CH" ] || { echo "clickhouse did not start" >&2; exit 1; }
CH_HTTP=$(echo "$CH" | sed -E 's|clickhouse://([^/]+)/.*|\1|')
echo "clickhouse: $CH ($(/usr/sbin/clickhouse-server --version 2>/dev/null | head -1 || echo 18.16))"

# start NAME ARGS...: `serve` on a free port; sets ADDR to its address (not in a subshell, so
# that PIDS keeps the server for stop_all).
start() {
    local name=$1
    shift
    # Every probe here uploads far beyond a real one's hourly allowance, and 50 of them at once
    # need more than the default upload budget: both lifted, as this measures the store.
    "$AGG" serve --listen 127.0.0.1:0 --lines-per-key-hour 0 --new-keys-per-hour 0 \
        --upload-budget-mib 512 "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" &
    PIDS+=($!)
    for _ in $(seq 200); do grep -q listening "$OUT/$name.out" 2>/dev/null && break; sleep 0.1; done
    ADDR=$(sed -n 's|.*listening on http://||p' "$OUT/$name.out")
    [ -n "$ADDR" ] || { echo "$name did not start:" >&2; cat "$OUT/$name.err" >&2; exit 1; }
}
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
client() {
    "$BIN/examples/read_under_ingest" "$1" "$SECS" tests/data/ooni/webconnectivity "$UPLOADERS" 100 \
        2> "$OUT/client-err" | sed 's/^/  /'
    if [ -s "$OUT/client-err" ]; then
        echo "  client errors: $(wc -l < "$OUT/client-err"), first: $(head -1 "$OUT/client-err")"
    fi
}
ch_bytes() {
    curl -s "http://$CH_HTTP/" --data-binary \
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = '$1'"
}

if [[ $SECTIONS == *a* ]]; then
echo "== (a) searches while $UPLOADERS probes upload for $SECS s"
echo "sqlite:"
start a-sqlite --db "$OUT/a.db"; A=$ADDR
client "$A"
stop_all
echo "clickhouse:"
start a-ch --db "$OUT/a-ch" --store "${CH}a"; A=$ADDR
client "$A"
stop_all
echo "clickhouse, uploads at the searches' priority (--upload-niceness 0):"
start a-ch0 --db "$OUT/a-ch0" --store "${CH}a0" --upload-niceness 0; A=$ADDR
client "$A"
stop_all
fi

if [[ $SECTIONS == *b* ]]; then
echo "== (b) ingest on ClickHouse: one node, then two nodes of one database"
echo "one node:"
start b1 --db "$OUT/b1" --store "${CH}b1" --no-detect; B1=$ADDR
client "$B1"
stop_all
echo "two nodes:"
start b2a --db "$OUT/b2a" --store "${CH}b2" --no-detect; N1=$ADDR
start b2b --db "$OUT/b2b" --store "${CH}b2" --no-detect; N2=$ADDR
client "$N1,$N2"
stop_all

fi

if [[ $SECTIONS == *c* || $SECTIONS == *d* ]]; then
echo "== (c) $COUNT measurements in each store"
for store in sqlite clickhouse; do
    if [ "$store" = sqlite ]; then LOC="sqlite:$OUT/c.db"; else LOC="${CH}c"; fi
    echo "$store:"
    /usr/bin/time -f "  fill: %e s wall, %M KB peak memory" \
        "$BIN/examples/query_bench" fill "$LOC" "$COUNT" tests/data/ooni/webconnectivity 2>&1 \
        | grep -v ' stored (' | sed 's/^filled/  filled/'
    if [ "$store" = sqlite ]; then
        bytes=$(ls -l "$OUT"/c.db* | awk '{s+=$5} END {print s}')
        start c-sqlite --db "$OUT/c.db" --no-detect; C=$ADDR
    else
        bytes=$(ch_bytes c)
        start c-ch --db "$OUT/c-ch" --store "$LOC" --no-detect; C=$ADDR
    fi
    awk -v b="$bytes" -v n="$COUNT" 'BEGIN {printf "  on disk: %.2f GB, %.0f bytes per measurement\n", b/1e9, b/n}'
    "$BIN/examples/query_bench" query "$C" 1000 | sed 's/^/  /'
    stop_all
    echo "  (d) full detection pass over IR, the whole year:"
    /usr/bin/time -f "  detect: %e s wall, %M KB peak memory" \
        "$AGG" detect --store "$LOC" --cc IR --since 2025-11-23 2>&1 | sed 's/^vantage/  vantage/'
done
fi
