#!/usr/bin/env bash
# Search latency while probes upload (BENCHMARKS.md): GET /api/v1/measurements p50/p95/p99 idle
# and while UPLOADERS probes post 100-line signed batches as fast as they can for SECONDS, and
# the lines per second ingested meanwhile (aggregator/examples/read_under_ingest.rs).
#
# With BASE_COMMIT, the same client first runs against the release `vantage-aggregator` of that
# commit (checked out in a worktree beside this repository, as benches/ingest_compare.sh does,
# with its own target directory), then against this tree's: both figures come from one run on
# one machine.
#
# Usage: bash benches/read_under_ingest.sh [BASE_COMMIT] [SECONDS] [UPLOADERS]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:-}"
SECS="${2:-60}"
UPLOADERS="${3:-50}"
OUT=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$OUT"' EXIT

cargo build --release --quiet -p vantage-aggregator --example read_under_ingest
cp target/release/examples/read_under_ingest "$OUT/client"
if [ -n "$BASE" ]; then
    TREE="$(cd .. && pwd)/vantage-bench-$(git rev-parse --short "$BASE")"
    [ -d "$TREE" ] || git worktree add --detach "$TREE" "$BASE" >/dev/null
    # Its own target directory: cargo tells the two trees' crates apart by file times only, so
    # in a shared one each build would take the other's as fresh. It is seeded with a copy of
    # this tree's release build, less the workspace's own crates, so that only those are
    # compiled, from the commit's sources.
    if [ ! -d "$TREE/target/release" ] && [ -d target/release ]; then
        mkdir -p "$TREE/target" && cp -r target/release "$TREE/target/"
        rm -rf "$TREE/target/release/.fingerprint/vantage-"*
    fi
    (cd "$TREE" && CARGO_TARGET_DIR="$TREE/target" cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator)
    cp "$TREE/target/release/vantage-aggregator" "$OUT/base"
fi
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator
cp target/release/vantage-aggregator "$OUT/head"
if [ -n "$BASE" ] && cmp -s "$OUT/base" "$OUT/head"; then
    echo "the base and this tree built the same binary: nothing to compare" >&2
    exit 1
fi

# run LABEL BINARY: a fresh database, the server on a free loopback port, the client.
run() {
    local dir="$OUT/$1"
    mkdir -p "$dir"
    # Every probe here uploads far beyond a real one's hourly allowance, and 50 of them at once
    # need more than the default upload budget: both lifted, as this measures the store.
    "$2" serve --db "$dir/agg.db" --listen 127.0.0.1:0 --lines-per-key-hour 0 \
        --new-keys-per-hour 0 --upload-budget-mib 512 > "$dir/out" 2> "$dir/err" &
    SERVER=$!
    for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's|.*listening on http://||p' "$dir/out")
    [ -n "$addr" ] || { echo "$1: the server did not start:" >&2; cat "$dir/err" >&2; exit 1; }
    echo "$1:"
    "$OUT/client" "$addr" "$SECS" tests/data/ooni/webconnectivity "$UPLOADERS" 100 2> "$dir/client-err" | sed 's/^/  /'
    if [ -s "$dir/client-err" ]; then
        echo "  client errors: $(wc -l < "$dir/client-err"), first: $(head -1 "$dir/client-err")"
    fi
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    for f in "$dir"/agg.db "$dir"/agg.db-wal; do
        [ -f "$f" ] && printf '  %s: %.1f MiB\n' "${f##*/}" "$(stat -c %s "$f" | awk '{print $1/1048576}')"
    done
    return 0
}

if [ -n "$BASE" ]; then
    run "base $(git rev-parse --short "$BASE")" "$OUT/base"
fi
run "this tree $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (modified)')" "$OUT/head"
