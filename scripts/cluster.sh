#!/usr/bin/env bash
# A local ringdb cluster of real processes, for tests and demos.
#
#   scripts/cluster.sh start [N]   start N nodes (default 3) on 127.0.0.1
#   scripts/cluster.sh stop        stop every node (SIGTERM, then SIGKILL)
#   scripts/cluster.sh kill I      kill node I with SIGKILL
#   scripts/cluster.sh restart I   start node I again (after kill or stop)
#   scripts/cluster.sh add         start one more node; it streams its ranges, then serves
#   scripts/cluster.sh decommission I   node I hands its ranges over, leaves and stops
#   scripts/cluster.sh repair I [KS [TABLE]]   anti-entropy repair of node I's ranges
#   scripts/cluster.sh cleanup I [KS [TABLE]]  node I drops the ranges it gave away
#   scripts/cluster.sh removenode I J  node I takes node J (down for good) out of the ring
#   scripts/cluster.sh status      which nodes run, and the cluster as node 1 sees it
#
# Node I listens for clients on 127.0.0.1:$((BASE_PORT + I - 1)) and for
# peers on 127.0.0.1:$((PEER_BASE_PORT + I - 1)); node 1 is everyone's seed.
# Data, certificates, logs and pid files live in $RINGDB_CLUSTER_DIR
# (default ./ringdb-cluster). $RINGDB_BIN names the binary (default: build
# target/release/ringdb).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${RINGDB_CLUSTER_DIR:-ringdb-cluster}"
BASE_PORT="${BASE_PORT:-9042}"
PEER_BASE_PORT="${PEER_BASE_PORT:-7000}"
BIN="${RINGDB_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release --locked --bin ringdb >&2
  BIN=target/release/ringdb
fi

client_port() { echo $((BASE_PORT + $1 - 1)); }
peer_port() { echo $((PEER_BASE_PORT + $1 - 1)); }
pid_of() { cat "$DIR/node$1.pid" 2>/dev/null || true; }
# Whether process $1 runs. A node that exited but whose parent has not
# reaped it (the nodes outlive this script, so their parent becomes an
# init, which in many containers never reaps) is a zombie, and still
# answers kill -0: without /proc (not Linux) kill -0 is all we have.
alive() { kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && alive "$pid"; }

start_node() {
  local i=$1
  if running "$i"; then echo "node $i already runs (pid $(pid_of "$i"))"; return; fi
  if [ ! -f "$DIR/certs/node$i/node.pem" ]; then
    "$BIN" certs node "node$i" --dir "$DIR/certs" --ip 127.0.0.1 >/dev/null
  fi
  local seeds=()
  [ "$i" -ne 1 ] && seeds=(--seeds "127.0.0.1:$(peer_port 1)")
  # The nodes share this machine's CPUs: more async threads than CPUs
  # only add wake-ups (docs/performance.md).
  local size workers
  size=$(cat "$DIR/size" 2>/dev/null || echo 3)
  workers=$(($(nproc) / size))
  [ "$workers" -ge 1 ] || workers=1
  "$BIN" server --data-dir "$DIR/node$i" --certs-dir "$DIR/certs/node$i" \
    --listen "127.0.0.1:$(client_port "$i")" --peer-listen "127.0.0.1:$(peer_port "$i")" \
    --worker-threads "$workers" "${seeds[@]}" >>"$DIR/node$i.log" 2>&1 &
  echo $! >"$DIR/node$i.pid"
  echo "node $i: pid $!, clients 127.0.0.1:$(client_port "$i"), peers 127.0.0.1:$(peer_port "$i")"
}

case "${1:-}" in
  start)
    n="${2:-3}"
    mkdir -p "$DIR"
    [ -f "$DIR/certs/ca.pem" ] || "$BIN" certs init --dir "$DIR/certs" >/dev/null
    echo "$n" >"$DIR/size"
    for i in $(seq 1 "$n"); do
      start_node "$i"
      # Let the seed come up before the others join it.
      [ "$i" -eq 1 ] && sleep 1
    done
    echo "shell: $BIN shell --host 127.0.0.1:$(client_port 1) --ca-cert $DIR/certs/ca.pem"
    ;;
  stop)
    for pidfile in "$DIR"/node*.pid; do
      [ -e "$pidfile" ] || continue
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    done
    echo "stopped"
    ;;
  kill)
    i="${2:?node number}"
    pid=$(pid_of "$i")
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/node$i.pid"
    echo "node $i killed"
    ;;
  restart)
    i="${2:?node number}"
    start_node "$i"
    ;;
  add)
    n=$(($(cat "$DIR/size" 2>/dev/null || echo 0) + 1))
    echo "$n" >"$DIR/size"
    start_node "$n"
    echo "node $n joins: 'status' shows it UJ while it streams its ranges, then UN"
    ;;
  decommission)
    i="${2:?node number}"
    "$BIN" admin decommission --host "127.0.0.1:$(client_port "$i")" --ca-cert "$DIR/certs/ca.pem"
    pid=$(pid_of "$i")
    for _ in $(seq 1 100); do [ -n "$pid" ] && alive "$pid" || break; sleep 0.1; done
    rm -f "$DIR/node$i.pid"
    ;;
  removenode)
    i="${2:?node number}"
    j="${3:?number of the node to remove}"
    # Node J's host id: the 16 hex digits on its line of node I's status.
    host_id=$("$BIN" admin status --host "127.0.0.1:$(client_port "$i")" --ca-cert "$DIR/certs/ca.pem" |
      grep -F " 127.0.0.1:$(peer_port "$j") " | grep -oE '\b[0-9a-f]{16}\b' | head -n 1 || true)
    if [ -z "$host_id" ]; then
      echo "node $i does not list node $j (peer port $(peer_port "$j"))" >&2
      exit 1
    fi
    "$BIN" admin removenode "$host_id" --host "127.0.0.1:$(client_port "$i")" --ca-cert "$DIR/certs/ca.pem"
    ;;
  repair|cleanup)
    what="$1"
    i="${2:?node number}"
    shift 2
    "$BIN" admin "$what" "$@" --host "127.0.0.1:$(client_port "$i")" --ca-cert "$DIR/certs/ca.pem"
    ;;
  status)
    n=$(cat "$DIR/size" 2>/dev/null || echo 0)
    for i in $(seq 1 "$n"); do
      if running "$i"; then echo "node $i: up (pid $(pid_of "$i"))"; else echo "node $i: down"; fi
    done
    for i in $(seq 1 "$n"); do
      if running "$i"; then
        "$BIN" admin status --host "127.0.0.1:$(client_port "$i")" --ca-cert "$DIR/certs/ca.pem" || true
        break
      fi
    done
    ;;
  *)
    sed -n '2,19p' "$0"
    exit 2
    ;;
esac
