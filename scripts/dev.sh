#!/usr/bin/env bash
# Starts a local ringdb cluster (3 server processes on 127.0.0.1 by default)
# and opens the CQL-lite shell on node 1; leaving the shell stops the nodes.
# Data is kept in ./ringdb-dev (delete it to start afresh). Extra arguments
# go to `ringdb dev` (e.g. --nodes 1, --port 9043, -e "...").
# Installs what the build needs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
# gcc for ring and jemalloc, make for jemalloc (the binary's allocator).
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc make
fi
cargo build --release --locked --bin ringdb
exec target/release/ringdb dev "$@"
