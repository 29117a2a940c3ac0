#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run): installs what the tests need beyond the
# Rust toolchain, then runs every test of the workspace.
#
# - Chromium, for the web page test (tests/web/install-chromium.sh, apt-get, idempotent).
# - Python 3 (apt-get, only when missing), for the independent verifier of the transparency log
#   (aggregator/tests/log_verify.py, standard library only).
# - ClickHouse, for the aggregator's ClickHouse store (tests/clickhouse.sh, apt-get, idempotent);
#   each test starts its own clickhouse-server on a fresh directory and free loopback ports and
#   stops it at its end.
# - As root, the tests run inside a network namespace that holds only loopback (unshare -n,
#   from util-linux; `ip` from iproute2 brings loopback up), so a test that tried to reach
#   beyond loopback fails instead of sending a packet.
# - Then, as root, the censorship lab (tests/lab/run.sh: network namespaces of its own, with
#   iproute2, iptables and dnsmasq installed by it if missing). Without root it cannot run, and
#   this script says so and fails rather than pass without it.
#
# Every part runs even when an earlier one failed (cargo test with --no-fail-fast), and the log
# ends with one line, `N passed, N failed`, over all of them: the `test result:` lines of every
# cargo test binary, summed; the checks of the lab's passing run (its `vantage-lab: N checks, F
# failed` line); and the lab script's own checks (the sabotaged run fails, the run stopped by
# SIGTERM fails, nothing is left after each of the three runs). The lab's sabotaged run is
# expected to fail: tests/lab/run.sh says so before and after it, and its FAILED lines are not
# counted. A step that fails without a failing test (a build error, a missing tool) counts as one
# failure. The exit status is non-zero when anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp)
finish() {
    local status=$?
    if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
        failed=1
    fi
    rm -f "$log"
    echo "$passed passed, $failed failed"
    exit "$status"
}
trap finish EXIT

# Adds the counts of the `test result: ok. X passed; Y failed; ...` lines of the log to the
# totals.
count_cargo_tests() {
    local counts
    counts=$(awk '/^test result: / {
            for (i = 2; i <= NF; i++) {
                if ($i == "passed;") p += $(i - 1)
                if ($i == "failed;") f += $(i - 1)
            }
        } END { print p + 0, f + 0 }' "$log")
    passed=$((passed + ${counts% *}))
    failed=$((failed + ${counts#* }))
}

if [ "$(id -u)" = 0 ]; then
    bash tests/web/install-chromium.sh
    bash tests/clickhouse.sh
    if ! command -v ip >/dev/null; then
        apt-get update -qq && apt-get install -y -qq iproute2
    fi
    # The transparency log's independent verifier (aggregator/tests/log_verify.py).
    if ! command -v python3 >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3
    fi
elif ! command -v python3 >/dev/null; then
    echo "tests/run.sh: python3 is missing and installing it needs root:" >&2
    echo "    sudo apt-get install -y python3" >&2
    exit 1
elif ! command -v chromium >/dev/null; then
    echo "tests/run.sh: chromium is missing and installing it needs root:" >&2
    echo "    sudo bash tests/web/install-chromium.sh" >&2
    exit 1
elif [ ! -x /usr/sbin/clickhouse-server ]; then
    echo "tests/run.sh: clickhouse-server is missing and installing it needs root:" >&2
    echo "    sudo bash tests/clickhouse.sh" >&2
    exit 1
fi

cargo_status=0
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
    cargo fetch --locked
    CARGO_NET_OFFLINE=true unshare -n bash -c \
        'ip link set lo up && cargo test --workspace --locked --no-fail-fast' 2>&1 |
        tee "$log" || cargo_status=$?
else
    cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || cargo_status=$?
fi
before=$failed
count_cargo_tests
if [ "$cargo_status" != 0 ] && [ "$failed" = "$before" ]; then
    echo "tests/run.sh: cargo test failed (status $cargo_status) with no failing test: see above" >&2
    failed=$((failed + 1))
fi

if [ "$(id -u)" = 0 ]; then
    lab_status=0
    bash tests/lab/run.sh 2>&1 | tee "$log" || lab_status=$?
    # The passing run's checks: its summary line, before the sabotaged run's announcement.
    read -r lab_checks lab_failed < <(awk '/EXPECTED FAILURE NEXT/ { exit }
        /^vantage-lab: [0-9]+ checks, [0-9]+ failed/ { n = $2; f = $4 }
        END { print n + 0, f + 0 }' "$log")
    passed=$((passed + lab_checks - lab_failed))
    failed=$((failed + lab_failed))
    # The script's own checks that passed.
    passed=$((passed + $(grep -c -e "^nothing left from the lab" -e "END OF EXPECTED FAILURE" \
        -e "^--- after a run stopped by SIGTERM" "$log" || true)))
    if [ "$lab_status" != 0 ] && [ "$lab_failed" = 0 ]; then
        echo "tests/run.sh: tests/lab/run.sh failed (status $lab_status): see above" >&2
        failed=$((failed + 1))
    fi
else
    echo "tests/run.sh: the censorship lab needs root; run it with: sudo bash tests/lab/run.sh" >&2
    failed=$((failed + 1))
fi

[ "$failed" = 0 ]
