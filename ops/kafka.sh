#!/usr/bin/env bash
# A real single-node KRaft Kafka broker from Maven Central jars, owned by this project.
#
#   ops/kafka.sh up|down|status|jars
#
# Environment (all optional):
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HOST (127.0.0.1),
#   KAFKA_STATE_DIR (<repo>/.infra/kafka/<port>): data, logs and pid file of this broker,
#   KAFKA_HEAP (512m): the JVM's -Xmx; the broker's RSS settles around 300-350 MB.
# `up` is idempotent: a broker of ours that answers is left alone. Tests that need to stop a
# broker start their own with other ports and state dir, never the shared one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
host=${KAFKA_HOST:-127.0.0.1}
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-9093}
state=${KAFKA_STATE_DIR:-$repo/.infra/kafka/$port}
libs=$repo/.infra/kafka/libs
heap=${KAFKA_HEAP:-512m}
pidfile=$state/broker.pid
log=$state/broker.log

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: ERROR: %s\n' "$*" >&2; exit 1; }

ping() { node "$here/kafka-ping.mjs" "$host" "$port" "${1:-1500}" 2>/dev/null; }
our_pid() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"; }
port_busy() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

jars() {
  if [[ -f $libs/.complete ]] && ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1; then return 0; fi
  command -v java >/dev/null || die "java is not installed. Install a JDK 17+ (apt-get install -y openjdk-17-jre-headless) and retry."
  command -v mvn >/dev/null || die "Maven is not installed. Install it (apt-get install -y maven) and retry."
  say "fetching the Kafka jars from Maven Central into $libs (once)"
  mkdir -p "$libs"
  if ! mvn -B -q -f "$here/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs" >"$repo/.infra/kafka/mvn.log" 2>&1; then
    tail -20 "$repo/.infra/kafka/mvn.log" >&2
    die "Maven could not fetch the Kafka jars (see .infra/kafka/mvn.log). Check that Maven Central is reachable (mvn -v; proxy settings in ~/.m2/settings.xml) and retry."
  fi
  touch "$libs/.complete"
}

write_config() {
  mkdir -p "$state/data"
  sed -e "s#@HOST@#$host#g" -e "s#@PORT@#$port#g" -e "s#@CPORT@#$cport#g" -e "s#@DATA@#$state/data#g" \
    "$here/kafka/server.properties" >"$state/server.properties"
}

up() {
  if pid=$(our_pid) && ping; then say "already up on $host:$port (pid $pid)"; return 0; fi
  if ping; then say "a Kafka broker not started by this script answers on $host:$port; using it"; return 0; fi
  for p in "$port" "$cport"; do
    if port_busy "$p"; then
      who=$(ss -ltnpH "sport = :$p" 2>/dev/null | sed -n 's/.*users:((\("[^"]*",pid=[0-9]*\).*/\1/p' | head -1)
      die "port $p on $host is taken by another process ${who:+($who) }that is not a Kafka broker. Stop it, or choose other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT (and point tickstream at them with TICKSTREAM_KAFKA_BROKERS)."
    fi
  done
  jars
  command -v java >/dev/null || die "java is not installed. Install a JDK 17+ and retry."
  write_config
  if [[ ! -f $state/data/meta.properties ]]; then
    java -cp "$libs/*" kafka.tools.StorageTool format --cluster-id "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      --config "$state/server.properties" --ignore-formatted >"$state/format.log" 2>&1 \
      || { cat "$state/format.log" >&2; die "formatting the KRaft log dir $state/data failed (log above)."; }
  fi
  say "starting a KRaft broker on $host:$port (controller $cport, heap -Xmx$heap, state $state)"
  # setsid: the broker outlives this script and the npm/vitest process that called it.
  setsid java -Xms128m "-Xmx$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -Dkafka.logs.dir="$state" \
    -cp "$libs/*" kafka.Kafka "$state/server.properties" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if ping 1000; then say "up on $host:$port after ${SECONDS}s (pid $(cat "$pidfile"))"; return 0; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      tail -30 "$log" >&2
      die "the broker exited during start-up (log above, full log $log)."
    fi
    sleep 0.5
  done
  tail -30 "$log" >&2
  die "the broker did not answer metadata requests within 60 s (log: $log)."
}

down() {
  if pid=$(our_pid); then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidfile"
    say "stopped (pid $pid)"
  else
    say "not running (no broker started by this script on port $port)"
  fi
}

status() {
  if pid=$(our_pid) && ping; then
    rss=$(ps -o rss= -p "$pid" | awk '{printf "%d MB", $1/1024}')
    say "up on $host:$port (pid $pid, RSS $rss)"
  elif ping; then say "a broker not started by this script answers on $host:$port"
  else say "down on $host:$port"; return 3; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  jars) jars ;;
  *) echo "usage: $0 up|down|status|jars" >&2; exit 2 ;;
esac
