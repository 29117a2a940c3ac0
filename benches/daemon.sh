#!/usr/bin/env bash
# Benchmark of `vantage daemon` (BENCHMARKS.md), release build, everything on loopback, with the
# real release aggregator (its test helper measures every URL as the control):
#   1. idle RSS: default schedule (canary every 60 s, heartbeat every 60 s), list runs off,
#      after IDLE_SECS (default 60) of running;
#   2. peak RSS (VmHWM) over a 1,000-URL list run (plus the 26 URLs of the built-in global list,
#      which a daemon always measures) (10% of the URLs accept the connection and
#      never answer, as in benches/run_1000.sh), the default concurrency of 4, including the
#      upload of the 1,000 results that follows;
#   3. CPU time per canary round: canary every second against 9 loopback targets (6 DNS, 3 TCP,
#      the built-in list's shape), CPU (user + system, from /proc) over ROUNDS rounds.
# Usage: bash benches/daemon.sh [IDLE_SECS] [ROUNDS] [ENGINE_TIMEOUT_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECS="${1:-60}"
ROUNDS="${2:-120}"
TIMEOUT="${3:-5}"
cargo build --release --quiet -p vantage-probe --bin vantage -p vantage-aggregator --bin vantage-aggregator
BIN=target/release/vantage
AGG=target/release/vantage-aggregator
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT

# Loopback servers: a small page, a silent one, TCP canary targets and a DNS responder that
# answers every question (NOERROR, no records), which a canary counts as an answer.
python3 - "$WORK/ports" <<'PY' &
import asyncio, sys
async def fast(r, w):
    try:
        await r.readuntil(b"\r\n\r\n")
        body = b"<html><title>ok</title><p>hello</p></html>"
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await w.drain()
    except Exception:
        pass
    w.close()
async def stall(r, w):
    await asyncio.sleep(3600)
async def hangup(r, w):
    w.close()
class Dns(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, d, addr):
        # One answer of the asked type (A: 127.0.0.1, AAAA: ::1), pointing at the question name.
        end = d.find(b"\0", 12) + 5
        if len(d) < 12 or end < 17 or end > len(d):
            return
        qtype = d[end - 4:end - 2]
        rdata = bytes(15) + b"\1" if qtype == b"\0\x1c" else bytes([127, 0, 0, 1])
        answer = b"\xc0\x0c" + qtype + b"\0\1\0\0\0\x3c" + len(rdata).to_bytes(2, "big") + rdata
        self.t.sendto(d[:2] + b"\x81\x80\0\1\0\1\0\0\0\0" + d[12:end] + answer, addr)
async def main():
    loop = asyncio.get_running_loop()
    a = await asyncio.start_server(fast, "127.0.0.1", 0, backlog=1024)
    b = await asyncio.start_server(stall, "127.0.0.1", 0, backlog=1024)
    c = await asyncio.start_server(hangup, "127.0.0.1", 0, backlog=1024)
    t, _ = await loop.create_datagram_endpoint(Dns, local_addr=("127.0.0.1", 0))
    with open(sys.argv[1], "w") as f:
        f.write(f"{a.sockets[0].getsockname()[1]} {b.sockets[0].getsockname()[1]} "
                f"{c.sockets[0].getsockname()[1]} {t.get_extra_info('sockname')[1]}\n")
    await asyncio.Event().wait()
asyncio.run(main())
PY
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/ports" ] && break; sleep 0.1; done
read -r FAST STALL TCP DNS < "$WORK/ports"

"$AGG" serve --db "$WORK/agg.db" --listen 127.0.0.1:0 --th-allow-private \
  --th-timeout "$TIMEOUT" > "$WORK/agg.out" 2> "$WORK/agg.err" &
PIDS+=($!)
for _ in $(seq 50); do grep -q listening "$WORK/agg.out" 2>/dev/null && break; sleep 0.1; done
AGG_URL=$(sed -n 's|.*listening on ||p' "$WORK/agg.out")

{
  echo "address,port,protocol,description"
  for _ in 1 2 3 4 5 6; do echo "127.0.0.1,$DNS,dns,loopback resolver"; done
  for _ in 1 2 3; do echo "127.0.0.1,$TCP,tcp,loopback server"; done
} > "$WORK/canaries.csv"
{
  echo "url,category_code,category_description,date_added,source,notes"
  for i in $(seq 0 999); do
    if [ $((i % 10)) -eq 9 ]; then port=$STALL; else port=$FAST; fi
    echo "http://127.0.0.1:$port/p/$i,NEWS,News Media,2026-11-23,bench,"
  done
} > "$WORK/list.csv"

# config NAME EXTRA-TOML: a configuration in $WORK/NAME.toml with its own data directory.
config() {
  cat > "$WORK/$1.toml" <<EOF
informed_consent = true
data_dir = "$WORK/$1"
[aggregator]
url = "$AGG_URL"
[network]
cc = "IR"
asn = "AS64500"
[lists]
fetch = false
files = ["$WORK/list.csv"]
[canary]
targets = "$WORK/canaries.csv"
timeout_seconds = 1
[engine]
timeout_seconds = $TIMEOUT
$2
EOF
}

# status PID FIELD: a field of /proc/PID/status in kB.
status() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# cpu_ticks PID: user + system time in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
wait_log() { # wait_log FILE TEXT SECS
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" && return 0; sleep 0.1; done
  echo "no '$2' in $1 after $3 s" >&2; tail -5 "$1" >&2; return 1
}

# 1. Idle.
config idle "[schedule]
run_seconds = 0"
"$BIN" daemon --config "$WORK/idle.toml" 2> "$WORK/idle.log" &
PID=$!; PIDS+=("$PID")
sleep "$IDLE_SECS"
IDLE_RSS=$(status "$PID" VmRSS); IDLE_HWM=$(status "$PID" VmHWM)
kill -TERM "$PID"; wait "$PID" || true
echo "idle after ${IDLE_SECS} s: RSS $(awk "BEGIN{printf \"%.1f\", $IDLE_RSS/1024}") MB (peak so far $(awk "BEGIN{printf \"%.1f\", $IDLE_HWM/1024}") MB); canary rounds: $(grep -c 'canary: ' "$WORK/idle.log"), heartbeats delivered: $(grep -c 'aggregator reachable' "$WORK/idle.log") reachable line(s)"

# 2. A 1,000-URL list run and its upload.
config run "[schedule]
run_seconds = 86400
run_jitter_seconds = 0
first_run_seconds = 0
upload_seconds = 5"
START=$(date +%s.%N)
"$BIN" daemon --config "$WORK/run.toml" 2> "$WORK/run.log" &
PID=$!; PIDS+=("$PID")
wait_log "$WORK/run.log" "list run: [0-9]* URLs measured" 900
END=$(date +%s.%N)
for _ in $(seq 1200); do
  "$BIN" status --data-dir "$WORK/run" | grep -q "^waiting for upload: 0$" && break; sleep 0.1
done
RUN_HWM=$(status "$PID" VmHWM)
kill -TERM "$PID"; wait "$PID" || true
grep -o "list run: [0-9]* URLs measured.*" "$WORK/run.log"
echo "1,000-URL run: $(awk "BEGIN{printf \"%.0f\", $END-$START}") s wall; peak RSS (VmHWM, run and upload) $(awk "BEGIN{printf \"%.1f\", $RUN_HWM/1024}") MB; uploaded: $(grep -o 'uploaded [0-9]* results' "$WORK/run.log" | awk '{s+=$2} END{print s}')"

# 3. CPU per canary round.
config cpu "[schedule]
run_seconds = 0
canary_seconds = 1"
"$BIN" daemon --config "$WORK/cpu.toml" 2> "$WORK/cpu.log" &
PID=$!; PIDS+=("$PID")
sleep 3
T0=$(cpu_ticks "$PID"); N0=$(grep -c 'canary: ' "$WORK/cpu.log")
sleep "$ROUNDS"
T1=$(cpu_ticks "$PID"); N1=$(grep -c 'canary: ' "$WORK/cpu.log")
kill -TERM "$PID"; wait "$PID" || true
HZ=$(getconf CLK_TCK)
echo "canary rounds: $((N1 - N0)) in ${ROUNDS} s, $(grep -c '9 of 9 targets answered' "$WORK/cpu.log") with 9 of 9 answered; CPU $(awk "BEGIN{printf \"%.2f\", ($T1-$T0)/$HZ}") s, $(awk "BEGIN{printf \"%.1f\", ($T1-$T0)/$HZ*1000/($N1-$N0)}") ms per round (user + system)"
