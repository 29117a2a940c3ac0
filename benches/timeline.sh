#!/usr/bin/env bash
# Timeline detection quality (BENCHMARKS.md, "Timeline detection quality: simulated fleets"):
# simulated fleets through shutdowns, blocking and throttling drawn from outages with the
# statistics of IODA's investigated outages (tests/data/datasets/generated-outages.csv;
# `--outages FILE` reads IODA's own list), fed signed to the aggregator's own ingest, and the
# detected events scored against the truth. Exits non-zero when a target is missed.
# Usage: bash benches/timeline.sh [vantage-eval options]   (e.g. --flaps-per-day 6)
# The default plan (120 shutdowns, 40 blocks, 8 quiet weeks, 40 throttles) takes about 30 minutes on 2 cores.
# The aggregator checks the probes' network claims, as `serve --prefixes` does; --no-verification
# runs it as without a geolocation source.
# With attackers (fresh keys elsewhere hiding real shutdowns, faking shutdowns and blocks in quiet
# networks), as many as each scenario's real probes:
#   bash benches/timeline.sh --attackers 1000
#   bash benches/timeline.sh --attackers 1000 --no-verification   # what they do unchecked
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p vantage-eval
/usr/bin/time -f "%e s wall, %M KB peak memory" ./target/release/vantage-eval "$@"
