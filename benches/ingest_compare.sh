#!/usr/bin/env bash
# Ingest throughput of this tree against an earlier commit, in one run (BENCHMARKS.md): each
# side's own benches/ingest.sh, alternated, ROUNDS times. The earlier commit is checked out in a
# worktree beside this repository, with its own target directory; a commit from before tests/data
# read its measurements from a data directory beside the repository, which a worktree beside it
# finds too (this tree's own side reads tests/data only).
# Usage: bash benches/ingest_compare.sh BASE_COMMIT [COUNT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="$1"
COUNT="${2:-50000}"
ROUNDS="${3:-2}"
TREE="$(cd .. && pwd)/vantage-bench-$(git rev-parse --short "$BASE")"
[ -d "$TREE" ] || git worktree add --detach "$TREE" "$BASE" >/dev/null
for round in $(seq "$ROUNDS"); do
    echo "round $round, base $(git rev-parse --short "$BASE"):"
    (cd "$TREE" && CARGO_TARGET_DIR="$TREE/target" bash benches/ingest.sh "$COUNT") | sed 's/^/  /'
    echo "round $round, this tree $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (modified)'):"
    bash benches/ingest.sh "$COUNT" | sed 's/^/  /'
done
