#!/usr/bin/env bash
# The write path from a cold start (bench/README.md, "A cold start"): PostgreSQL restarted with
# the operating system's page cache dropped, `ledger serve --relay false` on an empty snapshot
# directory, then transfers over all the accounts in back-to-back runs of the bench's generator.
#   bench/cold_start.sh LEDGER LEDGER_BENCH PGDATA PORT DATABASE [ACCOUNTS] [RUNS] [SECONDS]
# PGDATA is a stopped or running cluster owned by `postgres` whose DATABASE holds a bench store
# (a standard `ledger-bench` run leaves one, with accounts a0..a<ACCOUNTS-1>); it listens on
# PORT with its socket in PGDATA's parent directory. Root only: it drops the page cache. Each
# run prints the generator's line (transfers/s, p50, p99). Bounded: RUNS runs of SECONDS each.
set -euo pipefail
if [ $# -lt 5 ]; then
  echo "usage: $0 LEDGER LEDGER_BENCH PGDATA PORT DATABASE [ACCOUNTS] [RUNS] [SECONDS]" >&2
  exit 2
fi
ledger=$(realpath "$1") bench=$(realpath "$2") data=$(realpath "$3") port=$4 database=$5
accounts=${6:-100000} runs=${7:-4} seconds=${8:-20}
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (it drops the page cache)" >&2; exit 2; }
socket_dir=$(dirname "$data")
pg_ctl=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)
url="postgresql://postgres@/$database?host=$socket_dir&port=$port"
secret=cold-start-secret-of-at-least-thirty-two-bytes
home=$(mktemp -d /tmp/ledger-cold-start.XXXXXX)
serve=0
cleanup() {
  if [ "$serve" -ne 0 ]; then kill "$serve" 2>/dev/null && wait "$serve" || true; fi
  rm -rf "$home"
}
trap cleanup EXIT

su postgres -s /bin/bash -c "$pg_ctl -D '$data' -m fast -w stop" >/dev/null 2>&1 || true
sync
echo 3 >/proc/sys/vm/drop_caches
su postgres -s /bin/bash -c "$pg_ctl -D '$data' -l '$socket_dir/cold-start-postgres.log' -w \
  -o \"-p $port -k $socket_dir -c shared_buffers=256MB\" start" >/dev/null

LEDGER_JWT_SECRET=$secret LEDGER_LOG_LEVEL=warn "$ledger" --home "$home" --database-url "$url" \
  serve --http-port 0 --port-file "$home/port" --snapshot-directory "$home/snapshots" \
  --relay false >"$home/serve.log" 2>&1 &
serve=$!
for _ in $(seq 1 600); do [ -s "$home/port" ] && break; sleep 0.1; done
[ -s "$home/port" ] || { echo "$0: serve did not start:" >&2; cat "$home/serve.log" >&2; exit 1; }
token=$(LEDGER_JWT_SECRET=$secret "$ledger" token --role teller --subject cold-start --ttl 1h)
for run in $(seq 1 "$runs"); do
  echo "run $run: $("$bench" --load-port "$(cat "$home/port")" --load-token "$token" \
    --seconds "$seconds" --accounts "$accounts" | tail -1)"
done
