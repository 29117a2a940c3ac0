#!/usr/bin/env bash
# Runs every fuzz target in turn, one at a time, on one core: `bash fuzz/run.sh SECONDS`.
#
# Each target runs for SECONDS or 10,000,000 executions, whichever comes first, on a copy of its
# seed corpus (fuzz/corpus/<target>/) in a scratch directory, so the committed corpus never
# grows. Per target it prints: target, executions, seconds, coverage (cov: and ft: from
# libFuzzer's final stats) and crashes. It exits non-zero if any target crashed, and names the
# input that did (cargo fuzz keeps it in fuzz/artifacts/<target>/). See fuzz/README.md.
#
# Environment: TARGETS="a b" runs only those; RUNS (default 10000000); JOBS, the build's
# parallelism (default 1, so the other core stays free); KEEP_SCRATCH=1 keeps the scratch
# directory (the grown corpus and the logs) instead of removing it.
set -euo pipefail

SECONDS_PER_TARGET=${1:?usage: bash fuzz/run.sh SECONDS}
RUNS=${RUNS:-10000000}
JOBS=${JOBS:-1}
ALL="ingest_line ooni_measurement dns_response test_list_csv signed_lists th_request daemon_config"
TARGETS=${TARGETS:-$ALL}

FUZZ=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$FUZZ"
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

dict_for() {
    case "$1" in
        ingest_line | ooni_measurement | th_request) echo dict/json.dict ;;
        signed_lists) echo dict/signed_lists.dict ;;
        test_list_csv) echo dict/csv.dict ;;
        daemon_config) echo dict/toml.dict ;;
        dns_response) echo dict/dns.dict ;;
    esac
}

# -a: overflow checks and debug assertions on, so an arithmetic overflow is a crash, as it is
# in the tests (a release build would wrap silently).
echo "building: cargo +nightly fuzz build -a (jobs: $JOBS)" >&2
CARGO_BUILD_JOBS=$JOBS cargo +nightly fuzz build -a >&2
BIN="$FUZZ/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
echo "commit: $(git -C "$FUZZ" rev-parse --short HEAD)$(git -C "$FUZZ/.." diff --quiet -- probe aggregator || echo ' (probe/ or aggregator/ modified)')" >&2

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/vantage-fuzz.XXXXXX")
if [ "${KEEP_SCRATCH:-0}" != 1 ]; then
    trap 'rm -rf "$SCRATCH"' EXIT
else
    echo "scratch directory kept: $SCRATCH" >&2
fi

failed=0
printf '%-18s %12s %8s %8s %8s %8s\n' target executions seconds cov ft crashes
for t in $TARGETS; do
    corpus="$SCRATCH/corpus/$t"
    mkdir -p "$corpus" "$SCRATCH/tmp/$t" "artifacts/$t"
    cp -r "corpus/$t/." "$corpus/"
    log="$SCRATCH/$t.log"
    start=$(date +%s)
    status=0
    # The binary built above, run directly (`cargo fuzz run` would rebuild it whenever a source
    # changed in between, so targets of one run could test different code). One process, one
    # job: nothing here forks a second fuzzer. TMPDIR is where the targets keep their files (the
    # ingest database, the test key); it goes with the scratch directory. ASAN_OPTIONS as
    # cargo fuzz sets them.
    TMPDIR="$SCRATCH/tmp/$t" ASAN_OPTIONS="detect_odr_violation=0" "$BIN/$t" "$corpus" \
        -max_total_time="$SECONDS_PER_TARGET" -runs="$RUNS" \
        -dict="$FUZZ/$(dict_for "$t")" -artifact_prefix="$FUZZ/artifacts/$t/" \
        -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - start))
    # libFuzzer's closing lines ("Done N runs in S second(s)", then the "#N DONE cov: .. ft: .."
    # status line); a crash ends the run before them, so then its last status line and the
    # wall-clock time.
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -E -n 's/^Done ([0-9]+) runs.*/\1/p' <<<"$done_line")
    secs=$(sed -E -n 's/.* runs in ([0-9]+) second.*/\1/p' <<<"$done_line")
    [ -n "$execs" ] || execs=$(sed -E -n 's/^#([0-9]+).*/\1/p' <<<"$last")
    [ -n "$secs" ] || secs=$elapsed
    cov=$(sed -E -n 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -E -n 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    crashes=0
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
        crashes=1
        failed=1
    fi
    printf '%-18s %12s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "$secs" "${cov:-?}" "${ft:-?}" "$crashes"
    if [ "$crashes" -ne 0 ]; then
        echo "  $t crashed (exit $status); input: ${artifact:-none written}" >&2
        echo "  reproduce: (cd fuzz && cargo +nightly fuzz run -a $t ${artifact:-artifacts/$t/...})" >&2
        grep -m1 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" | sed 's/^/  /' >&2 || true
        cp "$log" "artifacts/$t/last-crash.log"
        echo "  log: fuzz/artifacts/$t/last-crash.log" >&2
    fi
done
exit $failed
