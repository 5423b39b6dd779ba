#!/usr/bin/env bash
# YCSB core workloads (A, B, C, F) against a 3-node RF=3 QUORUM and a
# 1-node RF=1 local cluster of real processes: builds the release binary
# and runs `ringdb bench ycsb` with the arguments given (e.g. --quick, or
# --records 50000 --operations 50000 --concurrency 64 --json ycsb.json).
# Figures and how to read them: docs/performance.md (the YCSB section).
set -euo pipefail
cd "$(dirname "$0")/.."
# gcc for ring and jemalloc, make for jemalloc (the binary's allocator).
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc make
fi
cargo build --release --locked --bin ringdb
exec target/release/ringdb bench ycsb "$@"
