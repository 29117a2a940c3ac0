#!/usr/bin/env bash
# Timeline detection quality (issue 6, BENCHMARKS.md): simulated fleets through shutdowns and
# blocking drawn from IODA's investigated outages, fed signed to the aggregator's own ingest,
# and the detected events scored against the truth. Exits non-zero when a target is missed.
# Usage: bash benches/timeline.sh [vantage-eval options]   (e.g. --flaps-per-day 6)
# The default plan (120 shutdowns, 40 blocks, 8 quiet weeks) takes about 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p vantage-eval
/usr/bin/time -f "%e s wall, %M KB peak memory" ./target/release/vantage-eval "$@"
