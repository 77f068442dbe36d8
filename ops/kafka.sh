#!/usr/bin/env bash
# A real single-node KRaft Kafka broker from Maven Central jars, owned by this project.
#
#   ops/kafka.sh up|down|status|jars
#   ops/kafka.sh cluster up|down|status
#
# Environment (all optional):
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HOST (127.0.0.1),
#   KAFKA_STATE_DIR (<repo>/.infra/kafka/<port>): data, logs and pid file of this broker,
#   KAFKA_HEAP (512m): the JVM's -Xmx; the broker's RSS settles around 300-350 MB.
# `cluster`: three KRaft nodes (each broker and controller, the three controllers are the quorum)
# from the same jars, for replication factor 3 and failover. Environment (optional):
#   KAFKA_CLUSTER_PORTS (19092,19093,19094), KAFKA_CLUSTER_CONTROLLER_PORTS (19192,19193,19194),
#   KAFKA_CLUSTER_DIR (<repo>/.infra/kafka/cluster): node-<id>/ with data, log and pid per node,
#   KAFKA_CLUSTER_HEAP (384m): -Xmx of each node.
# `cluster up` starts the nodes that are not running (all of them, or one that was killed) and
# waits until every node answers; `cluster status` prints `node <id> port <port> pid <pid>|down`.
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

cluster_ports=${KAFKA_CLUSTER_PORTS:-19092,19093,19094}
cluster_cports=${KAFKA_CLUSTER_CONTROLLER_PORTS:-19192,19193,19194}
cluster_dir=${KAFKA_CLUSTER_DIR:-$repo/.infra/kafka/cluster}
cluster_heap=${KAFKA_CLUSTER_HEAP:-384m}
IFS=, read -r -a cports_a <<<"$cluster_cports"
IFS=, read -r -a ports_a <<<"$cluster_ports"

node_pid() {
  local f=$cluster_dir/node-$1/broker.pid
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

cluster_up() {
  (( ${#ports_a[@]} == 3 && ${#cports_a[@]} == 3 )) \
    || die "KAFKA_CLUSTER_PORTS and KAFKA_CLUSTER_CONTROLLER_PORTS must each list 3 ports (got '$cluster_ports' and '$cluster_cports')."
  jars
  mkdir -p "$cluster_dir"
  local voters="" id started=()
  for id in 1 2 3; do voters+="${voters:+,}$id@$host:${cports_a[id-1]}"; done
  if [[ ! -f $cluster_dir/cluster.id ]]; then
    java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 >"$cluster_dir/cluster.id"
  fi
  SECONDS=0
  for id in 1 2 3; do
    local p=${ports_a[id-1]} cp=${cports_a[id-1]} dir=$cluster_dir/node-$id
    if pid=$(node_pid "$id"); then continue; fi
    for q in "$p" "$cp"; do
      port_busy "$q" && die "port $q on $host is taken by another process (node $id of the cluster needs it). Stop it or choose other ports with KAFKA_CLUSTER_PORTS / KAFKA_CLUSTER_CONTROLLER_PORTS."
    done
    mkdir -p "$dir/data"
    sed -e "s#@HOST@#$host#g" -e "s#@PORT@#$p#g" -e "s#@CPORT@#$cp#g" -e "s#@DATA@#$dir/data#g" \
      -e "s#@NODE@#$id#g" -e "s#@VOTERS@#$voters#g" "$here/kafka/cluster.properties" >"$dir/server.properties"
    if [[ ! -f $dir/data/meta.properties ]]; then
      java -cp "$libs/*" kafka.tools.StorageTool format --cluster-id "$(cat "$cluster_dir/cluster.id")" \
        --config "$dir/server.properties" --ignore-formatted >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; die "formatting node $id's log dir $dir/data failed (log above)."; }
    fi
    setsid java -Xms128m "-Xmx$cluster_heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -Dkafka.logs.dir="$dir" \
      -cp "$libs/*" kafka.Kafka "$dir/server.properties" >"$dir/broker.log" 2>&1 </dev/null &
    echo $! >"$dir/broker.pid"
    started+=("$id")
  done
  (( ${#started[@]} )) || { say "cluster already up ($cluster_dir)"; cluster_status; return 0; }
  say "starting cluster node(s) ${started[*]} (heap -Xmx$cluster_heap each, state $cluster_dir)"
  for id in 1 2 3; do
    local p=${ports_a[id-1]}
    for _ in $(seq 1 180); do
      node_ping "$p" && break
      if ! node_pid "$id" >/dev/null; then
        tail -30 "$cluster_dir/node-$id/broker.log" >&2
        die "cluster node $id exited during start-up (log above, full log $cluster_dir/node-$id/broker.log)."
      fi
      sleep 0.5
    done
    node_ping "$p" || die "cluster node $id did not answer on $host:$p within 90 s (log: $cluster_dir/node-$id/broker.log)."
  done
  say "cluster up after ${SECONDS}s"
  cluster_status
}

node_ping() { node "$here/kafka-ping.mjs" "$host" "$1" 1000 2>/dev/null; }

cluster_down() {
  local id pid pids=()
  # All at once: stopped one by one, the last ones would wait on a quorum that is going away.
  for id in 1 2 3; do
    if pid=$(node_pid "$id"); then kill "$pid"; pids[id]=$pid; fi
  done
  for id in "${!pids[@]}"; do
    pid=${pids[id]}
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "node $id stopped (pid $pid)"
  done
  (( ${#pids[@]} )) || say "cluster not running ($cluster_dir)"
  rm -f "$cluster_dir"/node-*/broker.pid
}

cluster_status() {
  local id pid down=0
  for id in 1 2 3; do
    if pid=$(node_pid "$id"); then
      rss=$(ps -o rss= -p "$pid" | awk '{printf "%d", $1/1024}')
      echo "node $id port ${ports_a[id-1]} pid $pid rss_mb $rss"
    else
      echo "node $id port ${ports_a[id-1]} down"; down=1
    fi
  done
  return $(( down ? 3 : 0 ))
}

cluster() {
  case "${1:-}" in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    *) echo "usage: $0 cluster up|down|status" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up) up ;;
  cluster) cluster "${2:-}" ;;
  down) down ;;
  status) status ;;
  jars) jars ;;
  *) echo "usage: $0 up|down|status|jars|cluster up|down|status" >&2; exit 2 ;;
esac
