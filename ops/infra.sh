#!/usr/bin/env bash
# Brings up (or checks) everything tickstream talks to: the project's own Kafka broker, and the
# machine's Redis and Postgres (never started or stopped here: they are shared).
#   ops/infra.sh up|down|status
# Environment: TICKSTREAM_REDIS_URL (redis://127.0.0.1:6379),
#   TICKSTREAM_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/tickstream), KAFKA_* (see kafka.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
redis_url=${TICKSTREAM_REDIS_URL:-redis://127.0.0.1:6379}
pg_url=${TICKSTREAM_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/tickstream}

die() { printf 'infra: ERROR: %s\n' "$*" >&2; exit 1; }

check_redis() {
  if ! out=$(timeout 5 redis-cli -u "$redis_url" ping 2>&1) || [[ $out != PONG ]]; then
    die "Redis does not answer at $redis_url ($out). Start it (e.g. redis-server --daemonize yes --save '') or set TICKSTREAM_REDIS_URL."
  fi
  echo "infra: redis answers at $redis_url"
}

check_postgres() {
  local admin_url db
  db=${pg_url##*/}; db=${db%%\?*}
  admin_url=${pg_url%/*}/postgres
  if ! out=$(timeout 10 psql "$admin_url" -Atqc 'select 1' 2>&1); then
    die "Postgres does not answer at ${admin_url} ($out). Start it (pg_ctlcluster 15 main start) or set TICKSTREAM_POSTGRES_URL."
  fi
  if [[ $(psql "$admin_url" -Atqc "select 1 from pg_database where datname = '$db'") != 1 ]]; then
    psql "$admin_url" -qc "create database \"$db\"" >/dev/null || die "could not create database $db at $admin_url."
    echo "infra: created database $db"
  fi
  echo "infra: postgres answers at $pg_url"
}

case "${1:-}" in
  up) bash "$here/kafka.sh" up; check_redis; check_postgres ;;
  down) bash "$here/kafka.sh" down ;;
  status) bash "$here/kafka.sh" status || true; check_redis; check_postgres ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
