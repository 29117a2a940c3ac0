#!/usr/bin/env bash
# Benchmark of `vantage run` (BENCHMARKS.md): 1,000 loopback URLs, 10% of which accept the
# connection and never answer, so they run into the HTTP timeout. Reports wall time, CPU time and
# peak RSS at the default concurrency, and the bound the wall time is judged against:
#   stalled / concurrency x timeout + the time the other URLs take.
# Usage: bash benches/run_1000.sh [TIMEOUT_SECS]   (default 10, vantage's default)
set -euo pipefail
cd "$(dirname "$0")/.."
TIMEOUT="${1:-10}"
CONCURRENCY=8   # vantage run's default
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --quiet -p vantage-probe --bin vantage
BIN=target/release/vantage
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Two loopback servers: one answers a small page, one accepts and stays silent.
python3 - "$WORK/ports" <<'PY' &
import asyncio, sys
async def fast(r, w):
    await r.readuntil(b"\r\n\r\n")
    body = b"<html><title>ok</title><p>hello</p></html>"
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await w.drain(); w.close()
async def stall(r, w):
    await asyncio.sleep(3600)
async def main():
    a = await asyncio.start_server(fast, "127.0.0.1", 0, backlog=1024)
    b = await asyncio.start_server(stall, "127.0.0.1", 0, backlog=1024)
    with open(sys.argv[1], "w") as f:
        f.write(f"{a.sockets[0].getsockname()[1]} {b.sockets[0].getsockname()[1]}\n")
    await asyncio.Event().wait()
asyncio.run(main())
PY
SERVER=$!
for _ in $(seq 50); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
read -r FAST STALL < "$WORK/ports"

{
  echo "url,category_code,category_description,date_added,source,notes"
  for i in $(seq 0 999); do
    if [ $((i % 10)) -eq 9 ]; then port=$STALL; else port=$FAST; fi
    echo "http://127.0.0.1:$port/p/$i,NEWS,News Media,2026-11-23,bench,"
  done
} > "$WORK/list.csv"

/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" \
  "$BIN" run --list "$WORK/list.csv" --yes --no-upload --timeout "$TIMEOUT" --data-dir "$WORK/data" > "$WORK/out"
read -r WALL USER SYS RSS_KB < "$WORK/time"
head -1 "$WORK/out"
python3 - "$WALL" "$USER" "$SYS" "$RSS_KB" "$TIMEOUT" "$CONCURRENCY" <<'PY'
import sys
wall, user, sys_, rss, timeout, conc = map(float, sys.argv[1:])
stalled = 100
bound = stalled / conc * timeout
print(f"wall {wall:.1f} s; cpu {user + sys_:.1f} s (user {user:.1f}, sys {sys_:.1f}); peak RSS {rss / 1024:.1f} MB")
print(f"bound (stalled/concurrency x timeout) {bound:.1f} s + the fast URLs; wall/bound = {wall / bound:.2f} (target <= 1.3)")
PY
ls -l "$BIN" | awk '{printf "release binary: %.1f MB (profile release: lto, codegen-units=1, strip)\n", $5/1048576}'
