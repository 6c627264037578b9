#!/usr/bin/env bash
# Postgres's own work per delivery of the side-by-side harness's stream, as a count, for each
# system of ../shared/bench (the project's cmd/dev, the Deno Edge Function, the Go floor): the
# instructions PostgreSQL's backends execute per delivery, counted by valgrind's callgrind on a
# throwaway cluster while the harness's driver (webhookload) sends the harness's events (its
# four types in its weights, 1,000 UUID tenants, 10 % redeliveries) at a low rate.
#
# The load harness compares Postgres's CPU per delivery as "% of a core" sampled from /proc on
# a 2-core box whose speed varies about 2x over a day; a count does not depend on what else the
# machine is doing, so the ratio to the Deno function is repeatable. Unlike make bench-pg (one
# invoice.paid at a time), this is the harness's mix: redeliveries, subscription updates,
# checkouts and the CRM jobs they queue.
#
# Usage (from the project's root, next to ../shared):
#   cmd/benchreport/pgcost-side.sh [PORT] [SYSTEM ...]      default: 5458 project deno floor
# Each system: its server against the cluster for D1 and then D2 seconds of deliveries at
# RATE/s (defaults 10, 40 and 10), each on a fresh start of the cluster under callgrind; it
# prints (instructions of the D2 run - of the D1 run) / (deliveries answered 2xx in the D2 run
# - in the D1 run), so the backends' start-up and first compiles cancel out. Each server's pool
# has CONNS connections (default 2: under valgrind a backend takes seconds to start, and a
# pool that grows at different moments in the two runs would not cancel out; the line says
# when the runs' backends differ).
# Needs valgrind, PostgreSQL 15's server binaries (PGBIN), Go, and Node/npm for Deno (installed
# into WORK from the npm registry once, as side-by-side.sh does). About 3 minutes a system.
# MIX=type=w,... sends only some event types (the driver's -mix; default the harness's mix).
# SYSTEM deno+V is the Deno function with cmd/benchreport/deno-variants/V.patch applied to its
# index.ts and V.sql run after its schema: the reference made to keep one more of the project's
# guarantees, to price that guarantee in the same count (deno-variants/README.md).
# PROJECT_ENV="DB_PREPARED_STATEMENTS=false" runs the project's server as deployed (unnamed
# statements); by default it prepares, as make dev and the harness do.
# With UPDATE=BENCHMARKS.md and LABEL=..., the figures are written into that file's
# webhook-pg:side block, one row a system and label (a row is replaced).
set -euo pipefail
proj=$(pwd)
[ -f "$proj/template.yaml" ] || { echo "run from the project's root" >&2; exit 2; }
here=$proj/../shared/bench
port=${1:-5458}; shift || true
systems=("$@"); [ ${#systems[@]} -gt 0 ] || systems=(project deno floor)
rate=${RATE:-10}; d1=${D1:-10}; d2=${D2:-40}; conns=${CONNS:-2}
bin=${PGBIN:-/usr/lib/postgresql/15/bin}
work=${WORK:-${TMPDIR:-/tmp}/pf-bench}
base=${TMPDIR:-/tmp}/pgcost-side-$port
tenants='00000000-0000-4000-8000-%012d'
as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
command -v valgrind >/dev/null || { echo "pgcost-side: valgrind is not installed" >&2; exit 1; }
mkdir -p "$work"
(cd "$here/webhookload" && go build -o "$work/webhookload" .)
(cd "$here/floor" && go build -o "$work/floor" .)
(cd "$proj" && go build -o "$work/project-dev" ./cmd/dev)
if [[ " ${systems[*]} " == *" deno"* ]] && [ ! -x "$work/deno/node_modules/.bin/deno" ]; then
  mkdir -p "$work/deno" && cp "$here/deno-edge/package.json" "$here/deno-edge/package-lock.json" "$work/deno/"
  (cd "$work/deno" && npm ci --silent)
fi
export DENO_DIR=$work/deno/cache

rm -rf "$base"; mkdir -p "$base"; [ "$(id -u)" = 0 ] && chown -R postgres "$base"
as "$bin/initdb" -D "$base/data" -U postgres --auth=trust >/dev/null
as tee -a "$base/data/postgresql.conf" >/dev/null <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$base'
autovacuum = off
max_connections = 60
CONF
server_pid=
stop_server() { [ -z "$server_pid" ] || { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=; }; }
trap 'stop_server; as "$bin/pg_ctl" -D "$base/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
P() { env PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -p "$port" -U postgres -X -q -At "$@"; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.5; done; return 1; }
db() { local s=${1//[^a-z]/_}; echo "bench_$s"; } # a system's database: deno+raw -> bench_deno_raw
variants=$proj/cmd/benchreport/deno-variants
dburl() { echo "postgres://postgres@127.0.0.1:$port/$1?sslmode=disable"; }

# start_server SYSTEM: serves SYSTEM against its database on this cluster; sets url, secret.
start_server() {
  case $1 in
  project)
    (cd "$proj" && exec env ${PROJECT_ENV:-} DATABASE_URL="$(dburl bench_project)" "$work/project-dev" -no-workers \
      -ephemeral-standins -db-conns "$conns" -addr 127.0.0.1:3197 >"$base/project.log" 2>&1) &
    server_pid=$!; wait_port 3197 || { tail "$base/project.log" >&2; exit 1; }
    url=http://127.0.0.1:3197/v1/webhooks/stripe
    secret=$(sed -n 's/.*"STRIPE_WEBHOOK_SECRET": *"\([^"]*\)".*/\1/p' "$proj/env.json" | head -1) ;;
  deno|deno+*)
    F=$base/deno-fn; rm -rf "$F"; cp -r "$here/deno-edge/stripe-webhooks" "$F"; chmod -R u+w "$F"
    [ "$1" = deno ] || patch -s -d "$F" -p1 <"$variants/${1#deno+}.patch"
    "$work/deno/node_modules/.bin/deno" install --quiet --config "$F/deno.json" --entrypoint "$F/index.ts"
    DATABASE_URL="$(dburl "$(db "$1")")" POOL_MAX=$conns PORT=3198 STRIPE_WEBHOOK_SIGNING_SECRET=whsec_bench_test_secret \
      "$work/deno/node_modules/.bin/deno" run --config "$F/deno.json" --allow-net=127.0.0.1 --allow-env \
      "$F/index.ts" >"$base/deno.log" 2>&1 &
    server_pid=$!; wait_port 3198 || { tail "$base/deno.log" >&2; exit 1; }
    url=http://127.0.0.1:3198/webhook; secret=whsec_bench_test_secret ;;
  floor)
    "$work/floor" -pool "$conns" -addr 127.0.0.1:3199 -db "$(dburl bench_floor)" >"$base/floor.log" 2>&1 &
    server_pid=$!; wait_port 3199 || { tail "$base/floor.log" >&2; exit 1; }
    url=http://127.0.0.1:3199/webhook; secret=whsec_bench_test_secret ;;
  esac
}

# send SECONDS OUT: the harness's stream at $rate for SECONDS; prints the deliveries answered 2xx.
# Every run has the harness's seed, so its customers are the warm-up's (each run's event ids
# are new): a customer's first event, which maps it to its tenant, is not what is counted.
send() {
  "$work/webhookload" -url "$url" -secret "$secret" -rate "$rate" -duration "${1}s" -warmup 0s -timeout 60s \
    -tenants 1000 -dup 0.1 -seed 1 ${MIX:+-mix "$MIX"} -tenant-format "$tenants" -cpu-comm '' -json "$2.json" >"$2.txt" 2>&1 || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["ok"] if "ok" in r else round(r["throughput_ok_rps"]*r["duration_s"]))' "$2.json"
}

# Set-up without valgrind: databases, the project's migrations (cmd/dev applies them at start)
# and the project's tenants.
as "$bin/pg_ctl" -D "$base/data" -l "$base/plain.log" -w start >/dev/null
for s in "${systems[@]}"; do
  P -d postgres -c "create database $(db "$s")"
  case $s in deno|deno+*) P -d "$(db "$s")" -f "$here/deno-edge/schema.sql" >/dev/null ;; esac
  case $s in deno+*) P -v ON_ERROR_STOP=1 -d "$(db "$s")" -f "$variants/${s#deno+}.sql" >/dev/null ;; esac
  start_server "$s"
  [ "$s" != project ] || P -d bench_project -c "insert into public.tenants (id, name) select format('00000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))::uuid, 'bench ' || i from generate_series(0, 999) i on conflict do nothing"
  stop_server
done
as "$bin/pg_ctl" -D "$base/data" -w stop >/dev/null

# warm SYSTEM: one run at 200/s without valgrind, so every tenant has its rows. The project
# keeps a tenant's delivery count for the current 5-minute bucket on its billing account and
# moves it to a table when a delivery lands in a new bucket (about 80k instructions, once a
# tenant and bucket): the warm-up and both counted runs must fall in one bucket, or nearly
# every counted delivery pays that move. So for the project, when less than WINDOW seconds
# (default 170) are left of the current bucket, it first waits for the next one.
bucket() { echo $(( $(date +%s) / 300 )); }
warm() {
  if [ "$1" = project ]; then
    local left=$(( 300 - $(date +%s) % 300 ))
    if [ "$left" -lt "${WINDOW:-170}" ]; then echo "pgcost-side: waiting ${left}s for the next 5-minute bucket" >&2; sleep $(( left + 2 )); fi
  fi
  as "$bin/pg_ctl" -D "$base/data" -l "$base/plain.log" -w start >/dev/null
  start_server "$1"
  local rate_was=$rate; rate=200; send 10 "$base/warm-$1" >/dev/null; rate=$rate_was
  stop_server
  as "$bin/pg_ctl" -D "$base/data" -w stop >/dev/null
}

# count SYSTEM SECONDS: the backends' instructions over a run of SECONDS of deliveries
# (the server started on a cluster started under callgrind), the deliveries answered 2xx, and
# the backends counted.
count() {
  local o=$base/out-$1-$2; rm -rf "$o"; mkdir -p "$o"; [ "$(id -u)" = 0 ] && chown postgres "$o"
  as valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$o/cg.%p" \
    "$bin/postgres" -D "$base/data" >"$base/valgrind-$1-$2.log" 2>&1 &
  for _ in $(seq 120); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  start_server "$1"
  local ok; ok=$(send "$2" "$base/run-$1-$2")
  stop_server
  as "$bin/pg_ctl" -D "$base/data" -w -t 300 stop >/dev/null
  wait || true
  local total=0 t n=0 f
  for f in "$o"/cg.*; do
    grep -q PostgresMain "$f" || continue # backends only, not the postmaster's helpers
    t=$(grep -m1 '^summary:' "$f" | awk '{print $2}'); total=$((total + t)); n=$((n + 1))
  done
  echo "$total $ok $n"
}

commit=${COMMIT:-$(git -C "$proj" rev-parse --short HEAD 2>/dev/null || echo '?')}
rows=()
for s in "${systems[@]}"; do
  warm "$s"; first=$(bucket)
  read -r a oka na <<<"$(count "$s" "$d1")"
  read -r b okb nb <<<"$(count "$s" "$d2")"
  per=$(( (b - a) / (okb - oka) ))
  note=""; [ "$na" = "$nb" ] || note=" (backends differ: the start-up of $((nb - na)) is in the figure; run again)"
  [ "$s" != project ] || [ "$first" = "$(bucket)" ] || note="$note (the runs crossed a 5-minute bucket: tenants' counts moved in them; run again)"
  echo "$s: postgres backend instructions per delivery: $per ($oka deliveries: $a in $na backends; $okb: $b in $nb; $commit)$note"
  rows+=("$s $per $((okb - oka))")
done
[ -n "${UPDATE:-}" ] || exit 0
python3 - "$UPDATE" "${LABEL:?LABEL names the rows}" "$commit" "$rate" "${rows[@]}" <<'PY'
import datetime, re, sys
path, label, commit, rate, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
begin, end = "<!-- webhook-pg:side begin -->", "<!-- webhook-pg:side end -->"
text = open(path).read()
head = ("| what | system | commit | date (UTC) | deliveries counted | Postgres instructions per delivery |\n"
        "| --- | --- | --- | --- | ---: | ---: |\n")
if begin in text:
    i, j = text.index(begin) + len(begin), text.index(end)
    old = [l for l in text[i:j].strip().splitlines()[2:] if l.startswith("|")]
else:
    i = j = None
    old = []
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
new = {}
for r in rows:
    s, per, ok = r.split()
    new[s] = f"| {label} | {s} | {commit} | {now} | {ok} at {rate}/s | {int(per):,} |"
kept = [l for l in old if not any(l.startswith(f"| {label} | {s} |") for s in new)]
block = "\n" + head + "\n".join(kept + list(new.values())) + "\n"
if i is None:
    text = text.rstrip("\n") + "\n\n" + begin + block + end + "\n"
else:
    text = text[:i] + block + text[j:]
open(path, "w").write(text)
PY
