#!/usr/bin/env bash
# Measures webhook ingest before and after a change, side by side with the Deno Edge Function
# and the Go floor, and writes BENCHMARKS.md's "Webhook ingest" section from the run.
#
# Usage (from the project's root, with no `make dev` running):
#   cmd/benchreport/run.sh BEFORE_COMMIT [RATE ...]      (default rates 200 800 1600 2400 3200)
#   DURATION=10s QUIET_TRIES=1 cmd/benchreport/run.sh 3607b83 200 800 1600
# BEFORE_COMMIT must contain TestDeliveryRoundTrips (the first commit of issue 12 does, with
# the code before it unchanged).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BEFORE_COMMIT [RATE ...]" >&2; exit 2; }
before=$(git rev-parse --short "$1"); shift
after=$(git rev-parse --short HEAD)
work=${WORK:-${TMPDIR:-/tmp}/pf-bench-webhook}
mkdir -p "$work"
rm -rf "$work/before-src" && mkdir -p "$work/before-src"
git archive "$before" | tar -x -C "$work/before-src"

echo "counting round trips and statements at $before and $after"
{
  echo "== $before"; (cd "$work/before-src" && go test -count=1 -run '^TestDeliveryRoundTrips$' -v ./shared/billing/) || true
  echo "== $after"; go test -count=1 -run '^TestDeliveryRoundTrips$' -v ./shared/billing/ || true
} >"$work/counts.txt" 2>&1

rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(200 800 1600 2400 3200)
rm -rf "$work/results"
BEFORE="$work/before-src" WORK="$work" SYSTEMS="before project deno floor" \
  "$(dirname "$0")/side-by-side.sh" "${rates[@]}" | tee "$work/summary.txt"

go run ./cmd/benchreport -results "$work/results" -rates "$(IFS=,; echo "${rates[*]}")" \
  -counts "$work/counts.txt" -commit "$after" -before "$before" -update BENCHMARKS.md
