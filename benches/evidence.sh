#!/usr/bin/env bash
# Evidence bundles (docs/transparency.md, "Evidence bundles"; BENCHMARKS.md): a blocking event of
# COUNT measurements (default 1,000), uploaded signed over HTTP by five probes to a release
# `serve` and detected with `detect`; then the bundle's size, the time to build it with
# `vantage-aggregator evidence` and from GET /api/v1/timeline/{id}/evidence.zip, and the time
# `vantage verify` takes to check it (each the best of ROUNDS runs), all on loopback.
# Usage: bash benches/evidence.sh [COUNT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${1:-1000}"
ROUNDS="${2:-3}"
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator --example evidence_bench
cargo build --release --quiet -p vantage-probe --bin vantage
AGG=./target/release/vantage-aggregator
WORK=$(mktemp -d)
# Detection runs once, by the command below; the server only ingests and publishes checkpoints.
$AGG serve --db "$WORK/agg.db" --listen 127.0.0.1:0 --detect-every 86400 > "$WORK/out" 2> "$WORK/err" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|.*listening on http://||p' "$WORK/out")
POSTED=$(./target/release/examples/evidence_bench "$ADDR" "$COUNT" tests/data/ooni/webconnectivity | tail -1)
for _ in $(seq 100); do
    size=$(curl -sf "http://$ADDR/log/checkpoint" | sed -n 2p || true)
    [ "${size:-0}" -ge "$POSTED" ] && break
    sleep 0.2
done
$AGG detect --db "$WORK/agg.db" --cc IR 2>/dev/null
EVENT=$($AGG timeline --db "$WORK/agg.db" --cc IR --kind blocking --since "$(date -u -d '-4 days' '+%Y-%m-%d')" --json |
    python3 -c 'import json,sys; e=[json.loads(l) for l in sys.stdin]; assert len(e)==1, e; print(e[0]["id"])')
echo "posted $POSTED measurements; blocking event $EVENT"

best() { sort -n | head -1; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>&1; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'; }
build=$(for _ in $(seq "$ROUNDS"); do seconds $AGG evidence "$EVENT" --out "$WORK/cli.zip" --db "$WORK/agg.db"; done | best)
route=$(for _ in $(seq "$ROUNDS"); do seconds curl -sf -o "$WORK/route.zip" "http://$ADDR/api/v1/timeline/$EVENT/evidence.zip"; done | best)
$AGG evidence "$EVENT" --out "$WORK/cli.zip" --db "$WORK/agg.db" 2>&1 | sed 's/^vantage-aggregator: //'
./target/release/vantage verify "$WORK/cli.zip" > "$WORK/verify.out" || { tail -5 "$WORK/verify.out"; exit 1; }
verify=$(for _ in $(seq "$ROUNDS"); do seconds ./target/release/vantage verify "$WORK/cli.zip"; done | best)
bytes=$(stat -c %s "$WORK/cli.zip")
envelopes=$(grep -c '^ok   verdict ' "$WORK/verify.out")
printf 'bundle: %d measurements, %d bytes (%.0f bytes a measurement)\n' "$envelopes" "$bytes" "$(awk -v b="$bytes" -v n="$envelopes" 'BEGIN { print b / n }')"
printf 'build (vantage-aggregator evidence): %.2f s\n' "$build"
printf 'build and download (GET .../evidence.zip): %.2f s\n' "$route"
printf 'vantage verify: %.2f s (%s)\n' "$verify" "$(tail -1 "$WORK/verify.out")"
