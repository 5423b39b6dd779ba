#!/usr/bin/env bash
# Hint replay: how long a node that was down takes to receive the hints
# the others kept for it.
#
#   scripts/bench-hints.sh [ROWS]      (default 20000 rows of 400 bytes)
#
# Starts a local 3-node cluster (RF=3), kills node 3 (SIGKILL), writes ROWS
# rows at QUORUM through node 1 (node 1 keeps a hint for node 3 per row),
# starts node 3 again and times until node 1 holds no more hints for it;
# then checks that node 3 alone (the others killed) answers every row.
# With BASELINE_BIN set to another build of ringdb it runs the same with
# that build first and prints the ratio. RINGDB_BIN names the build under
# test (default: build target/release/ringdb).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-20000}"
if [ -z "${RINGDB_BIN:-}" ]; then
  cargo build --release --locked --bin ringdb >&2
  RINGDB_BIN=$PWD/target/release/ringdb
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringdb-bench-hints.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
VALUE=$(head -c 400 /dev/zero | tr '\0' 'x')
{
  echo "CONSISTENCY QUORUM"
  for i in $(seq 1 "$ROWS"); do echo "INSERT INTO b.t (k, v) VALUES ($i, '$VALUE');"; done
} >"$WORK/rows.cql"

# How many lines of node 1's `admin status` (with build $1) match the
# regex $2. (Not `| grep -q`: under pipefail a grep that stops reading
# early fails the pipeline.)
status_count() {
  local text
  text=$("$1" admin status --host "127.0.0.1:$BASE_PORT" --ca-cert "$RINGDB_CLUSTER_DIR/certs/ca.pem" 2>/dev/null || true)
  grep -Ec "$2" <<<"$text" || true
}

# One run with build $1; prints the seconds the replay took.
run() {
  local bin=$1 dir="$WORK/cluster"
  rm -rf "$dir"
  export RINGDB_CLUSTER_DIR=$dir RINGDB_BIN=$bin BASE_PORT=${BASE_PORT:-29042} PEER_BASE_PORT=${PEER_BASE_PORT:-27000}
  local c1=127.0.0.1:$BASE_PORT c3=127.0.0.1:$((BASE_PORT + 2))
  local ca=(--ca-cert "$dir/certs/ca.pem")
  scripts/cluster.sh start 3 >/dev/null
  # (This runs in a subshell: its exit stops the cluster, the caller's
  # trap removes the work directory.)
  trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
  # Up and normal (a node still joining would be killed mid-join).
  until [ "$(status_count "$bin" "^UN")" -eq 3 ]; do sleep 0.5; done
  "$bin" shell --host "$c1" "${ca[@]}" -e "CREATE KEYSPACE b WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}; CREATE TABLE b.t (k int PRIMARY KEY, v text);" >/dev/null
  scripts/cluster.sh kill 3 >/dev/null
  until [ "$(status_count "$bin" "^DN")" -eq 1 ]; do sleep 0.5; done
  "$bin" shell --host "$c1" "${ca[@]}" -f "$WORK/rows.cql" >"$WORK/write.log" 2>&1 || { echo "writes failed:" >&2; tail -3 "$WORK/write.log" >&2; exit 1; }
  local start end
  start=$(date +%s.%N)
  scripts/cluster.sh restart 3 >/dev/null
  until [ "$(status_count "$bin" "pending_targets=0")" -eq 1 ]; do sleep 0.1; done
  end=$(date +%s.%N)
  scripts/cluster.sh kill 1 >/dev/null
  scripts/cluster.sh kill 2 >/dev/null
  local count=""
  for _ in $(seq 1 60); do
    count=$("$bin" shell --host "$c3" "${ca[@]}" -e "CONSISTENCY ONE; SELECT count(*) FROM b.t;" 2>/dev/null || true)
    count=$(grep -Eo '^\| +[0-9]+' <<<"$count" | tr -dc '0-9' || true)
    [ -n "$count" ] && break
    sleep 0.5
  done
  scripts/cluster.sh stop >/dev/null
  if [ "$count" != "$ROWS" ]; then
    echo "node 3 alone holds ${count:-no answer} of $ROWS rows" >&2
    exit 1
  fi
  echo "$end - $start" | bc
}

report() {
  printf '%-10s %8.2f s from restart to no hints left, %8.0f rows/s (node 3 alone holds all %s rows)\n' \
    "$1" "$2" "$(echo "$ROWS / $2" | bc -l)" "$ROWS"
}
if [ -n "${BASELINE_BIN:-}" ]; then
  base=$(run "$BASELINE_BIN")
  report baseline "$base"
fi
test_secs=$(run "$RINGDB_BIN")
report ringdb "$test_secs"
if [ -n "${BASELINE_BIN:-}" ]; then
  printf 'ringdb / baseline replay speed: %.1fx\n' "$(echo "$base / $test_secs" | bc -l)"
fi
