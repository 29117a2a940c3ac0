#!/usr/bin/env bash
# Import benchmark (BENCHMARKS.md "Importing OONI's archive"): builds an archive of about
# SIZE_MB megabytes of gzipped JSONL, laid out as OONI publishes it
# (raw/YYYYMMDD/HH/CC/TESTNAME/*.jsonl.gz), by repeating the repository's OONI measurements
# (tests/data/ooni/real and tests/data/ooni/webconnectivity), each copy changed just enough to
# be a new measurement (its report_id, and its measurement_start_time moved by a minute per
# copy). Then, with the release binary:
#   1. `import-ooni --dry-run`: reading, gunzipping, parsing and scoring, nothing stored (the
#      bound on the import's speed);
#   2. `import-ooni` into a fresh SQLite file;
#   3. the same import again, which skips every file as already imported.
# For each: measurements/s, MB/s of compressed input, and peak memory (max RSS, /usr/bin/time).
# Usage: bash benches/import.sh [SIZE_MB] (default 1024). Needs python3 and /usr/bin/time
# (apt-get install time).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${1:-1024}"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
cargo build --release --quiet -p vantage-aggregator --bin vantage-aggregator
AGG=target/release/vantage-aggregator
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$WORK/archive" "$SIZE_MB" <<'PY'
import datetime, glob, gzip, json, os, re, sys
root, size_mb = sys.argv[1], float(sys.argv[2])
corpus = []
for path in sorted(glob.glob("tests/data/ooni/real/*.json*") + glob.glob("tests/data/ooni/webconnectivity/*.json")):
    text = open(path, encoding="utf-8").read()
    dec, i = json.JSONDecoder(), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        m, i = dec.raw_decode(text, i)
        m.setdefault("report_id", "")
        corpus.append(m)
# Compact, as OONI writes its JSONL; the two fields a copy changes are found by pattern.
lines = []
for m in corpus:
    line = json.dumps(m, separators=(",", ":"), ensure_ascii=False)
    t = datetime.datetime.strptime(m["measurement_start_time"], "%Y-%m-%d %H:%M:%S")
    key = (t.strftime("%Y%m%d"), m.get("probe_cc") or "ZZ", m["test_name"].replace("_", ""))
    lines.append((key, t, line))
lines.sort(key=lambda x: x[0])
rid = re.compile(r'"report_id":"[^"]*"')
mst = re.compile(r'"measurement_start_time":"[^"]*"')
target, written, copy = size_mb * 1e6, 0, 0
while written < target:
    groups = {}
    for key, t, line in lines:
        when = (t + datetime.timedelta(minutes=copy)).strftime("%Y-%m-%d %H:%M:%S")
        line = rid.sub('"report_id":"bench-%d"' % copy, line, count=1)
        line = mst.sub('"measurement_start_time":"%s"' % when, line, count=1)
        groups.setdefault(key, []).append(line)
    for (day, cc, test), group in groups.items():
        d = os.path.join(root, "raw", day, "00", cc, test)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "%s_%s_%s.n%d.jsonl.gz" % (day, cc, test, copy))
        with gzip.open(p, "wb", compresslevel=6) as f:
            f.write(("\n".join(group) + "\n").encode("utf-8"))
        written += os.path.getsize(p)
    copy += 1
print("archive: %.1f MB of .jsonl.gz in %d copies of %d measurements (%d measurements)"
      % (written / 1e6, copy, len(lines), copy * len(lines)))
PY
FILES=$(find "$WORK/archive" -name '*.jsonl.gz' | wc -l)
echo "files: $FILES"

run() {
    local name="$1"; shift
    /usr/bin/time -v "$@" > "$WORK/out" 2> "$WORK/err" || true
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$WORK/err")
    echo "== $name: peak memory ${rss} MiB"
    grep -E '^(files|measurements|read)' "$WORK/out" | sed 's/^/   /'
    grep -vE '^\s|Command being timed|^$' "$WORK/err" | grep -v ': ' | head -5 | sed 's/^/   stderr: /' || true
}

run "dry run (gunzip + parse + score, nothing stored)" "$AGG" import-ooni --dry-run "$WORK/archive"
run "import into a fresh SQLite file" "$AGG" import-ooni --db "$WORK/agg.db" "$WORK/archive"
echo "   database: $(du -m "$WORK/agg.db" | cut -f1) MB"
run "the same import again (every file skipped as done)" "$AGG" import-ooni --db "$WORK/agg.db" "$WORK/archive"
