#!/usr/bin/env bash
# A copy of ../shared/bench/side-by-side.sh (see its README) with three additions for issue 12:
#   - system "before": cmd/dev built from BEFORE (a source folder, e.g. a git archive of the
#     commit before a change) on :3193 with its own database, so before and after share a run;
#   - the CPU of each system's own Postgres backends (bench_<system>) over the measured window,
#     in results/<system>-<rate>.dbcpu, because "all postgres processes" includes every other
#     database on the server;
#   - QUIET_TRIES bounds the wait for a quiet machine (default 60 as in the original);
#   - systems deno+V: the Deno function made to keep one more guarantee (deno-variants/README.md),
#     each on its own port (3201, 3202, ...) and database (bench_deno_V).
# cmd/benchreport/run.sh drives it and writes BENCHMARKS.md's section.
#
# Webhook ingest, side by side, in one run on this machine: the project's payment-webhook
# (served by its own dev server, cmd/dev -no-workers), a Supabase-style Edge Function on
# Deno doing the same job (verify, dedupe, guarded upsert, CRM job, one transaction), and a
# floor (Go: verify + one INSERT ... ON CONFLICT). Same driver, same events, same Postgres.
#
# Usage (from the project's root):  ../shared/bench/side-by-side.sh [RATE ...]
#   default rates: 200 800 1600 2400 3200; DURATION=30s per rate (after a 10 s warm-up);
#   SYSTEMS="project deno floor" to choose; WORK=<dir> for the scratch folder.
# Needs: Go, Node/npm (installs Deno 2.9.6 from the npm registry into WORK once), PostgreSQL on
# 127.0.0.1:5432 (user postgres, trust). Creates databases bench_project, bench_deno, bench_floor.
# Prints one line per system and rate, and writes WORK/results/<system>-<rate>.{txt,json}.
#
# Driver: webhookload (open model: request i is due at start + i/rate whatever came before,
# latency measured from the due time, so a slow server cannot hide its queue). Events are
# Stripe API version 2023-10-16 objects for 1,000 tenants whose ids are UUIDs seeded into the
# project's tenants table, with 10 % redeliveries. CPU columns are % of one core over the
# measured window: the server process, all postgres processes, the driver, the whole machine.
set -uo pipefail
here=$(pwd)/../shared/bench
self=$(cd "$(dirname "$0")" && pwd)
proj=$(pwd)
[ -f "$proj/template.yaml" ] || { echo "run from the project's root" >&2; exit 2; }
work=${WORK:-${TMPDIR:-/tmp}/pf-bench}
mkdir -p "$work/results" "$work/run"
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(200 800 1600 2400 3200)
systems=${SYSTEMS:-project deno floor}
tenants='00000000-0000-4000-8000-%012d'
P="env PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -X -q -At"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null; done; }
trap cleanup EXIT

echo "building the driver and the floor"
(cd "$here/webhookload" && go build -o "$work/webhookload" .) || exit 1
(cd "$here/floor" && go build -o "$work/floor" .) || exit 1
(cd "$proj" && go build -o "$work/project-dev" ./cmd/dev) || exit 1
[ -z "${BEFORE:-}" ] || (cd "$BEFORE" && go build -o "$work/before-dev" ./cmd/dev) || exit 1

wait_port() { for _ in $(seq 1 120); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.5; done; return 1; }

declare -A url secret pid
db() { local s=${1//[^a-z]/_}; echo "bench_$s"; } # a system's database: deno+raw -> bench_deno_raw
variant=0
for s in $systems; do
  case $s in
  project)
    $P -c "drop database if exists bench_project" -c "create database bench_project" >/dev/null || exit 1
    # cmd/dev finds template.yaml from its working directory.
    (cd "$proj" && DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_project setsid "$work/project-dev" -no-workers -addr 127.0.0.1:3190 >"$work/run/project.log" 2>&1) &
    wait_port 3190 || { echo "project dev server did not start"; tail "$work/run/project.log"; exit 1; }
    pid[project]=$(pgrep -n -f "$work/project-dev"); pids+=("${pid[project]}")
    $P -d bench_project -c "insert into public.tenants (id, name) select format('00000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))::uuid, 'bench ' || i from generate_series(0, 999) i on conflict do nothing" || exit 1
    url[project]=http://127.0.0.1:3190/v1/webhooks/stripe
    secret[project]=$(sed -n 's/.*"STRIPE_WEBHOOK_SECRET": *"\([^"]*\)".*/\1/p' "$proj/env.json" | head -1) ;;
  before)
    $P -c "drop database if exists bench_before" -c "create database bench_before" >/dev/null || exit 1
    (cd "$BEFORE" && DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_before setsid "$work/before-dev" -no-workers -ephemeral-standins -addr 127.0.0.1:3193 >"$work/run/before.log" 2>&1) &
    wait_port 3193 || { echo "before dev server did not start"; tail "$work/run/before.log"; exit 1; }
    pid[before]=$(pgrep -n -f "$work/before-dev"); pids+=("${pid[before]}")
    $P -d bench_before -c "insert into public.tenants (id, name) select format('00000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))::uuid, 'bench ' || i from generate_series(0, 999) i on conflict do nothing" || exit 1
    url[before]=http://127.0.0.1:3193/v1/webhooks/stripe
    secret[before]=$(sed -n 's/.*"STRIPE_WEBHOOK_SECRET": *"\([^"]*\)".*/\1/p' "$BEFORE/env.json" | head -1) ;;
  deno|deno+*)
    # deno+V: the Deno function with deno-variants/V.patch and V.sql (deno-variants/README.md).
    if [ ! -x "$work/deno/node_modules/.bin/deno" ]; then
      mkdir -p "$work/deno" && cp "$here/deno-edge/package.json" "$here/deno-edge/package-lock.json" "$work/deno/" &&
        (cd "$work/deno" && npm ci --silent) || { echo "could not install deno"; exit 1; }
    fi
    d=$(db "$s")
    $P -c "drop database if exists $d" -c "create database $d" >/dev/null && $P -d "$d" -f "$here/deno-edge/schema.sql" >/dev/null || exit 1
    [ "$s" = deno ] || $P -v ON_ERROR_STOP=1 -d "$d" -f "$self/deno-variants/${s#deno+}.sql" >/dev/null || exit 1
    export DENO_DIR=$work/deno/cache
    F=$work/deno/fn-$d; rm -rf "$F"; cp -r "$here/deno-edge/stripe-webhooks" "$F"; chmod -R u+w "$F"
    [ "$s" = deno ] || patch -s -d "$F" -p1 <"$self/deno-variants/${s#deno+}.patch" || exit 1
    "$work/deno/node_modules/.bin/deno" install --quiet --config "$F/deno.json" --entrypoint "$F/index.ts" || exit 1
    port=3191; [ "$s" = deno ] || port=$((3200 + ++variant))
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/$d PORT=$port STRIPE_WEBHOOK_SIGNING_SECRET=whsec_bench_test_secret \
      setsid "$work/deno/node_modules/.bin/deno" run --config "$F/deno.json" --allow-net=127.0.0.1 --allow-env "$F/index.ts" >"$work/run/$d.log" 2>&1 &
    wait_port "$port" || { echo "$s did not start"; tail "$work/run/$d.log"; exit 1; }
    pid[$s]=$(pgrep -n -f "$F/index.ts"); pids+=("${pid[$s]}")
    url[$s]=http://127.0.0.1:$port/webhook; secret[$s]=whsec_bench_test_secret ;;
  floor)
    $P -c "drop database if exists bench_floor" -c "create database bench_floor" >/dev/null || exit 1
    setsid "$work/floor" -addr 127.0.0.1:3192 -db postgres://postgres@127.0.0.1:5432/bench_floor >"$work/run/floor.log" 2>&1 &
    wait_port 3192 || { echo "floor did not start"; exit 1; }
    pid[floor]=$(pgrep -n -f "$work/floor"); pids+=("${pid[floor]}")
    url[floor]=http://127.0.0.1:3192/webhook; secret[floor]=whsec_bench_test_secret ;;
  *) echo "unknown system $s"; exit 2 ;;
  esac
done

printf '%-8s %6s %9s %8s %8s %8s %8s  %s\n' system rate ok/s p50_ms p95_ms p99_ms errors 'cpu % of a core: server postgres driver machine'
for rate in "${rates[@]}"; do
  for s in $systems; do
    for _ in $(seq 1 ${QUIET_TRIES:-60}); do b=$("$here/busy.py" 5); [ "${b%% *}" -lt 15 ] && break; sleep 5; done
    out=$work/results/$s-$rate
    db=$(db "$s")
    ( sleep 10; a=$("$self/dbcpu.py" "$db"); sleep "${DURATION%s}"; b=$("$self/dbcpu.py" "$db"); echo "$a $b ${DURATION%s}" >"$out.dbcpu" ) &
    timeout 150 "$work/webhookload" -url "${url[$s]}" -secret "${secret[$s]}" -rate "$rate" -duration "${DURATION:-30s}" \
      -warmup 10s -tenants 1000 -dup 0.1 -seed 1 -tenant-format "$tenants" -cpu-pids "${pid[$s]}" -cpu-comm postgres \
      -label "$s" -json "$out.json" >"$out.txt" 2>&1
    python3 - "$out.json" "$s" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s, rate = sys.argv[2], sys.argv[3]
lat = r.get("latency_ok") or {}
errs = sum((r.get("errors") or {}).values())
cpu = r.get("cpu") or {}
server = sum((cpu.get("pid_pct") or {}).values())
print(f"{s:<8} {rate:>6} {r.get('throughput_ok_rps', 0):>9.0f} {lat.get('p50_ms', 0):>8.2f} {lat.get('p95_ms', 0):>8.2f} {lat.get('p99_ms', 0):>8.2f} {errs:>8}  "
      f"{server:.0f} {cpu.get('comm_pct', 0):.0f} {cpu.get('driver_pct', 0):.0f} {cpu.get('system_busy_pct', 0):.0f}")
PY
    sleep 3
  done
done
