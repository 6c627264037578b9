#!/usr/bin/env bash
# What one database's active backends wait on during a load run, sampled every few
# milliseconds from pg_stat_activity: the share of each wait event over the run, and the
# stalls, the samples where at least STALL backends waited on the WAL at once (a slow fsync
# holds every commit behind it). This is how issue 12 found the cause of its sporadic 503s:
# 45 ms WAL fsyncs that took all 16 of the limiter's slots at once.
#
# Usage (from anywhere; start it once the run is under way):
#   cmd/benchreport/pgwaits.sh DATABASE SECONDS [INTERVAL]     e.g. pgwaits.sh bench_project 20
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres); STALL (8, backends at once);
# OUT (a file to keep the raw samples in: time, wait, backends).
# The sampler is psql's \watch (INTERVAL seconds, default 0.005), so a sample takes a connection
# of its own on the server; it does not count itself.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DATABASE SECONDS [INTERVAL]" >&2; exit 2; }
db=$1; seconds=$2; interval=${3:-0.005}; stall=${STALL:-8}
out=${OUT:-$(mktemp)}
sql=$(mktemp)
trap 'rm -f "$sql"; [ -n "${OUT:-}" ] || rm -f "$out"' EXIT
cat >"$sql" <<SQL
select clock_timestamp()::time(3), coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, 'cpu'), count(*)
from pg_stat_activity where datname = '$db' and state = 'active' and pid <> pg_backend_pid() group by 1, 2
\\watch $interval
SQL
timeout "$seconds" psql -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" -X -q -At -F' ' \
  -d "$db" -f "$sql" >"$out" 2>/dev/null || true

awk -v stall="$stall" '
NF == 3 { n[$2] += $3; total += $3; at[$1] = 1
          if ($2 ~ /^(IO:WALSync|LWLock:WALWrite|IO:WALWrite)$/) wal[$1] += $3 }
END {
  samples = length(at)
  if (total == 0) { print "no active backend sampled"; exit }
  printf "%d samples, %.1f active backends a sample on average\n", samples, total / samples
  for (w in n) printf "%6.1f %%  %s\n", 100 * n[w] / total, w | "sort -rn"
  close("sort -rn")
  stalls = 0
  for (t in wal) if (wal[t] >= stall) stalls++
  printf "samples with at least %d backends waiting on the WAL: %d (the first 40 below)\n", stall, stalls
  for (t in wal) if (wal[t] >= stall) print t | "sort | head -40"
}' "$out"
