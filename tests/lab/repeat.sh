#!/usr/bin/env bash
# The lab's shutdown, N times in a row (README "Censorship lab"): each run builds the lab, starts
# the daemons (no pinned network: they learn it from whoami), cuts the uplink for
# --outage-secs, and requires exactly one shutdown event, the real one, and no other event of
# any kind or country (`vantage-lab run --shutdown-only`). Each run takes the lab lock, so it
# never shares the namespaces with another lab. Needs root; CI does not run it.
#
#   sudo bash tests/lab/repeat.sh 5 [--outage-secs 60]
#
# Prints per run the events found and ends with "K of N runs: exactly one event"; exits 1
# unless K = N and every check of every run passed (a run whose other checks fail, e.g. the
# evidence carried during the cut, still counts its events). Logs in target/lab-repeat/run-I.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

n=${1:-5}
shift || true
case $n in
'' | *[!0-9]*)
    echo "tests/lab/repeat.sh: N must be a number of runs, got '$n'" >&2
    exit 2
    ;;
esac
if [ "$n" -lt 1 ] || [ "$n" -gt 50 ]; then
    echo "tests/lab/repeat.sh: N must be 1 to 50, got $n" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "tests/lab/repeat.sh: the lab needs root: sudo bash tests/lab/repeat.sh $n" >&2
    exit 1
fi
outage=(--outage-secs 60)
if [ $# -gt 0 ]; then
    outage=("$@")
fi

cargo build --workspace --bins --locked
logs=target/lab-repeat
mkdir -p "$logs/bin"
trap 'rm -rf "$logs/bin"' EXIT
# The runs use a copy of the binaries, so that a build in the tree meanwhile changes none of them.
cp target/debug/vantage target/debug/vantage-aggregator target/debug/vantage-lab "$logs/bin/"
lab=$logs/bin/vantage-lab

good=0
failed=0
for i in $(seq 1 "$n"); do
    log=$logs/run-$i.log
    started=$(date -u +%H:%M:%S)
    status=0
    flock /tmp/vantage-lab.lock "$lab" run --shutdown-only "${outage[@]}" \
        --dir "$logs/dir-$i" >"$log" 2>&1 || status=$?
    events=$(grep '^lab: events: ' "$log" | tail -1 | sed 's/^lab: events: //')
    echo "run $i of $n (from $started, exit $status): events ${events:-(no events line)}"
    grep -E '^lab: (ok|FAIL) +timeline: (one shutdown of|[0-9]+ event\(s\) in all)' "$log" |
        sed 's/^lab: /    /' || true
    # Exactly one event in all, the real shutdown: its check and the no-phantom check passed.
    if grep -q '^lab: ok    timeline: one shutdown of' "$log" &&
        grep -q '^lab: ok    timeline: 1 event(s) in all' "$log" &&
        [[ $events == "1 [shutdown IR AS64500 "* ]]; then
        good=$((good + 1))
    fi
    # Any other failing check of the run is shown, and makes the script fail too.
    if [ "$status" != 0 ]; then
        failed=$((failed + 1))
        grep -E '^(lab: FAIL|vantage-lab: )' "$log" | grep -v 'FAILED' | cut -c1-300 | sed 's/^/    /' || true
    fi
done
echo "$good of $n runs: exactly one event"
if [ "$failed" != 0 ]; then
    echo "($failed of $n runs had a failing check; see $logs/run-I.log)"
fi
[ "$good" = "$n" ] && [ "$failed" = 0 ]
