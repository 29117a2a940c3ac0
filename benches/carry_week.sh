#!/usr/bin/env bash
# A week of one daemon's results carried out on a file (docs/carry.md): its compressed size, and
# the time `vantage export` and `vantage import` take, release build, everything on loopback.
#   1. Templates, measured for real: one `vantage canary` round of 9 targets (6 DNS, 3 TCP: the
#      built-in list's shape) that all fail, as during a shutdown (when a file is how results
#      leave), and one `vantage run` of 26 URLs (the daemon's default plan measures the global
#      list, 20 URLs, and its country's, about 6): 20 answer a 40 kB HTML page, 6 refuse the
#      connection. No aggregator, so no control measurement.
#   2. A week at the default plan (probe/examples/carry_week.rs): a canary every minute (10,080)
#      and a list run every six hours (28 x 26 = 728), each a template moved to its own time,
#      signed again with the probe's key and stored in a real store.
#   3. `vantage export` of the week (incremental: all of it), then `vantage import` of the file on
#      another probe, then the same import again (all already there).
# Usage: bash benches/carry_week.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --quiet -p vantage-probe --bin vantage --example carry_week
BIN=target/release/vantage
WEEK=target/release/examples/carry_week
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

python3 - "$WORK/ports" <<'PY' &
import asyncio, socket, sys
words = b"censorship measurement network evidence shutdown probe aggregator volunteer ".split()
page = b"<html><head><title>News</title></head><body>" + b" ".join(
    b"<p>%s %d</p>" % (words[i % len(words)], i * 7919 % 100003) for i in range(2600)
) + b"</body></html>"
page = page[:40_000]
async def fast(r, w):
    try:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(page), page))
        await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    a = await asyncio.start_server(fast, "127.0.0.1", 0, backlog=256)
    closed = socket.socket(); closed.bind(("127.0.0.1", 0)); port = closed.getsockname()[1]; closed.close()
    with open(sys.argv[1], "w") as f:
        f.write(f"{a.sockets[0].getsockname()[1]} {port}\n")
    await asyncio.Event().wait()
asyncio.run(main())
PY
SERVER=$!
for _ in $(seq 50); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
read -r FAST CLOSED < "$WORK/ports"

{
  echo "address,port,protocol,description"
  for i in 1 2 3 4 5 6; do echo "127.0.0.$((i + 10)),$CLOSED,dns,dropped resolver $i"; done
  for i in 1 2 3; do echo "127.0.0.1,$CLOSED,tcp,refused anycast $i"; done
} > "$WORK/canaries.csv"
{
  echo "url,category_code,category_description,date_added,source,notes"
  for i in $(seq 0 25); do
    if [ "$i" -lt 20 ]; then port=$FAST; else port=$CLOSED; fi
    echo "http://127.0.0.1:$port/page/$i,NEWS,News Media,2026-11-23,bench,"
  done
} > "$WORK/list.csv"
"$BIN" canary --targets "$WORK/canaries.csv" --timeout 1 --data-dir "$WORK/templates" > /dev/null || true
"$BIN" run --list "$WORK/list.csv" --yes --no-upload --timeout 5 --data-dir "$WORK/templates" > /dev/null
"$WEEK" "$WORK/templates" "$WORK/probe"
STORE_MB=$(du -sm "$WORK/probe" | cut -f1)

timed() { /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" > "$WORK/out"; read -r WALL RSS < "$WORK/time"; }
timed "$BIN" export --out "$WORK/week.jsonl.gz" --data-dir "$WORK/probe"
head -1 "$WORK/out"
EXPORT="$WALL s, peak RSS $((RSS / 1024)) MB"
timed "$BIN" import "$WORK/week.jsonl.gz" --data-dir "$WORK/relay"
tail -1 "$WORK/out"
IMPORT="$WALL s, peak RSS $((RSS / 1024)) MB"
timed "$BIN" import "$WORK/week.jsonl.gz" --data-dir "$WORK/relay"
tail -1 "$WORK/out"
AGAIN="$WALL s"
RAW=$(gzip -dc "$WORK/week.jsonl.gz" | wc -c)
GZ=$(stat -c %s "$WORK/week.jsonl.gz")
python3 - "$RAW" "$GZ" "$STORE_MB" <<PY
import sys
raw, gz, store = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"a week: {raw / 1e6:.1f} MB of envelopes, {gz / 1e6:.1f} MB compressed (x{raw / gz:.1f}); store {store} MB")
print("export: $EXPORT; import: $IMPORT; import again (all already there): $AGAIN")
PY
