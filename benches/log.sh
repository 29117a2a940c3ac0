#!/usr/bin/env bash
# What the transparency log costs ingest (docs/transparency.md; target: at most 10%), in one
# run: benches/ingest.sh with the log and with `serve --no-log`, alternated ROUNDS times on
# fresh databases, then the mean of each side and the log's cost. Alternating spreads any
# drift of the machine (another build, the page cache) over both sides.
# Usage: bash benches/log.sh [COUNT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-50000}"
ROUNDS="${2:-3}"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for round in $(seq "$ROUNDS"); do
    for side in log no-log; do
        args=""
        [ "$side" = no-log ] && args="--no-log"
        echo "round $round, $side:"
        result=$(SERVE_ARGS="$args" bash benches/ingest.sh "$COUNT")
        echo "$result" | sed 's/^/  /'
        echo "$result" | sed -n "s|^ingest over HTTP: \([0-9]*\) measurements/s.*|$side \1|p" >> "$OUT"
    done
done
awk '{ sum[$1] += $2; n[$1]++ }
    END {
        with = sum["log"] / n["log"]; without = sum["no-log"] / n["no-log"]
        printf "with the log:       %.0f measurements/s (mean of %d)\n", with, n["log"]
        printf "without (--no-log): %.0f measurements/s (mean of %d)\n", without, n["no-log"]
        printf "the log costs %.1f%% of ingest throughput\n", 100 * (1 - with / without)
    }' "$OUT"
