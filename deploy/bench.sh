#!/usr/bin/env bash
# Benchmarks, each printing one JSON line of figures. Usage: deploy/bench.sh NAME
#   coordinator   3-node loopback cluster: creates/s and latency with 16 clients, single-client
#                 commit latency next to the disk's fsync latency, failover time, RSS at 10k tenants
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-}
case "$name" in
  coordinator)
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-tests --bins
    exec target/release/bench-coordinator target/release/berqenas-coordinator
    ;;
  *)
    echo "usage: $0 coordinator" >&2
    exit 2
    ;;
esac
