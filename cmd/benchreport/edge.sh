#!/usr/bin/env bash
# Issue 12's targets past the knee, against the project's webhook served by `cmd/dev -no-workers`
# (built once, on a database of its own): the knee on a fine grid and twice the knee
# (`cmd/load -scenario webhook-knee`), then the recovery after a drop from three times the knee
# to half of it (`cmd/load -scenario webhook-recovery`). Both write their blocks into
# BENCHMARKS.md's "Webhook ingest" section (between <!-- webhook-edge:... --> markers).
#
# Usage (from the project's root):
#   cmd/benchreport/edge.sh                    # knee, then recovery from the knee found
#   cmd/benchreport/edge.sh knee               # or: recovery (needs KNEE or SCHEDULE)
#   LOCK=/work/wt/measure.lock cmd/benchreport/edge.sh   # each timed run under flock -x LOCK
# Environment: RATES (default 200,300,...,800), KNEE (skip the sweep's answer), SCHEDULE
# (cmd/load's -schedule; default 3xKNEE for 15 s, then KNEE/2 for 20 s), ADDR (127.0.0.1:3195),
# DB (pf_bench_edge, dropped and created), BENCHMARKS (BENCHMARKS.md; empty: print only).
set -euo pipefail
[ -f template.yaml ] || { echo "run from the project's root" >&2; exit 2; }
what=${1:-all}
addr=${ADDR:-127.0.0.1:3195}
db=${DB:-pf_bench_edge}
url=postgres://postgres@127.0.0.1:5432/$db
work=$(mktemp -d)
lock=()
[ -z "${LOCK:-}" ] || lock=(flock -x "$LOCK")
bench=${BENCHMARKS-BENCHMARKS.md}
server=
cleanup() { [ -z "$server" ] || kill -- -"$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/dev" ./cmd/dev
go build -o "$work/load" ./cmd/load
P="env PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -X -q"
$P -c "drop database if exists $db" -c "create database $db" >/dev/null
DATABASE_URL=$url setsid "$work/dev" -no-workers -ephemeral-standins -addr "$addr" >"$work/dev.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do curl -fs -o /dev/null "http://$addr/v1/health" && break; sleep 0.5; done
curl -fs -o /dev/null "http://$addr/v1/health" || { echo "cmd/dev did not start:"; tail "$work/dev.log"; exit 1; }

load() { "${lock[@]}" "$work/load" -target "http://$addr" -database "$url" -benchmarks "$bench" "$@"; }
knee=${KNEE:-}
if [ "$what" = all ] || [ "$what" = knee ]; then
  load -scenario webhook-knee -rates "${RATES:-200,300,400,500,600,700,800}" | tee "$work/knee.txt"
  knee=$(sed -n 's/^Knee: \([0-9]*\)\/s.*/\1/p' "$work/knee.txt")
fi
if [ "$what" = all ] || [ "$what" = recovery ]; then
  schedule=${SCHEDULE:-}
  if [ -z "$schedule" ]; then
    [ -n "$knee" ] || { echo "no knee found (set KNEE or SCHEDULE)" >&2; exit 1; }
    schedule="$((3 * knee))x15s,$((knee / 2))x20s"
  fi
  load -scenario webhook-recovery -schedule "$schedule"
fi
kill -- -"$server" 2>/dev/null || true
server=
$P -c "drop database if exists $db with (force)" >/dev/null
