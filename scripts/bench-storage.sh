#!/usr/bin/env bash
# Storage engine benchmark: ringdb beside the fjall crate and RocksDB's
# db_bench. Installs db_bench (Debian's rocksdb-tools) if it is missing,
# builds the release binary and runs `ringdb bench storage` with the
# arguments given, e.g.:
#
#   scripts/bench-storage.sh --quick
#   scripts/bench-storage.sh --json bench.json --svg docs/storage-bench.svg
#
# See docs/performance.md for what each figure means.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v db_bench >/dev/null 2>&1 && [ ! -x /usr/bin/db_bench ]; then
    echo "installing rocksdb-tools (db_bench)..." >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rocksdb-tools >/dev/null; }; then
        echo "could not install rocksdb-tools; the db_bench peer will be skipped" >&2
    fi
fi

cargo build --release --quiet
exec target/release/ringdb bench storage "$@"
