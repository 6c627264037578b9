#!/usr/bin/env bash
# Postgres's own work per webhook delivery as a count: the instructions PostgreSQL's backends
# execute per delivery of BenchmarkWebhookDelivery (one invoice.paid at a time through the
# deployed function's shape), counted by valgrind's callgrind on a throwaway cluster. A count
# does not depend on what else the machine is doing (repeatable to about 0.1 % here), so it
# resolves changes of a few percent that the load harness cannot.
#
# Usage (from anywhere; SRC is a checkout of the project, default .):
#   cmd/benchreport/pgcost.sh [SRC] [PORT] [N1] [N2]      (make bench-pg)
# It prints (instructions at N2 deliveries - at N1) / (N2 - N1), so start-up and the test's
# set-up cancel out. Needs valgrind and PostgreSQL 15's server binaries (PGBIN); run as root it
# runs the cluster as the postgres user. About a minute.
# BENCH and PKG choose another benchmark (one operation an iteration). With UPDATE=BENCHMARKS.md
# and LABEL=..., the figure is also written into that file's webhook-pg block, one row a label
# (a label's row is replaced). COMMIT names the commit when SRC is not a git checkout.
set -euo pipefail
src=$(cd "${1:-.}" && pwd); port=${2:-5449}; n1=${3:-30}; n2=${4:-130}
bench=${BENCH:-BenchmarkWebhookDelivery}; pkg=${PKG:-./shared/billing/}
bin=${PGBIN:-/usr/lib/postgresql/15/bin}
base=${TMPDIR:-/tmp}/pgcost-$port
as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
command -v valgrind >/dev/null || { echo "pgcost: valgrind is not installed" >&2; exit 1; }
rm -rf "$base"; mkdir -p "$base/out"; [ "$(id -u)" = 0 ] && chown -R postgres "$base"
as "$bin/initdb" -D "$base/data" -U postgres --auth=trust >/dev/null
as tee -a "$base/data/postgresql.conf" >/dev/null <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$base'
autovacuum = off
max_connections = 40
CONF
trap 'as "$bin/pg_ctl" -D "$base/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
# Without valgrind: build the tests' migrated template, so the counted runs only copy it.
as "$bin/pg_ctl" -D "$base/data" -l "$base/plain.log" -w start >/dev/null
(cd "$src" && DATABASE_URL=$url go test -count=1 -run '^$' -bench "^$bench\$" -benchtime 1x "$pkg" >"$base/setup.txt" 2>&1) ||
  { tail -20 "$base/setup.txt" >&2; exit 1; }
as "$bin/pg_ctl" -D "$base/data" -w stop >/dev/null
(cd "$src" && go test -c -o "$base/bench.test" "$pkg")
run() { # $1 deliveries: prints the backends' instructions over a whole run of the benchmark
  rm -f "$base"/out/*
  as valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$base/out/cg.%p" \
    "$bin/postgres" -D "$base/data" >"$base/valgrind-$1.log" 2>&1 &
  for _ in $(seq 120); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  (cd "$src/$pkg" && DATABASE_URL=$url "$base/bench.test" -test.run '^$' -test.bench "^$bench\$" \
    -test.benchtime "${1}x" >"$base/bench-$1.txt" 2>&1) || { tail -20 "$base/bench-$1.txt" >&2; exit 1; }
  as "$bin/pg_ctl" -D "$base/data" -w -t 300 stop >/dev/null
  wait || true
  local total=0 t
  for f in "$base"/out/cg.*; do
    grep -q PostgresMain "$f" || continue # backends only, not the postmaster's helpers
    t=$(grep -m1 '^summary:' "$f" | awk '{print $2}'); total=$((total + t))
  done
  echo "$total"
}
a=$(run "$n1"); b=$(run "$n2")
per=$(( (b - a) / (n2 - n1) )); commit=${COMMIT:-$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')}
echo "postgres backend instructions per operation of $bench: $per ($n1 operations: $a, $n2: $b; $commit)"
[ -n "${UPDATE:-}" ] || exit 0
python3 - "$UPDATE" "${LABEL:?LABEL names the row}" "$(printf %s "$bench" | tr -d '$^')" "$commit" "$per" <<'PY'
import sys, time
path, label, bench, commit, per = sys.argv[1:]
begin, end = "<!-- webhook-pg:instructions begin -->", "<!-- webhook-pg:instructions end -->"
text = open(path).read()
head = "| what | benchmark | commit | date (UTC) | Postgres instructions per operation |\n| --- | --- | --- | --- | ---: |\n"
row = f"| {label} | {bench} | {commit} | {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} | {int(per):,} |\n"
if begin in text:
    pre, rest = text.split(begin, 1)
    body, post = rest.split(end, 1)
    rows = [r for r in body.strip().splitlines()[2:] if not r.startswith(f"| {label} |")]
    rows.append(row.rstrip("\n"))
    text = pre + begin + "\n" + head + "\n".join(rows) + "\n" + end + post
else:
    text = text.rstrip("\n") + "\n\n" + begin + "\n" + head + row + end + "\n"
open(path, "w").write(text)
PY
