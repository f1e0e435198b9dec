#!/usr/bin/env bash
# Benchmarks, each printing one JSON line of figures. Usage: deploy/bench.sh NAME
#   coordinator   3-node loopback cluster beside a 3-member etcd cluster (Debian's etcd-server,
#                 installed when missing): one replicated write per request on each at 1, 16 and 64
#                 clients (throughput, p50/p99, ratio), creates/s and latency with 16 clients,
#                 single-client commit latency next to the disk's fsync latency, failover time,
#                 RSS at 10k tenants, then at 10k tenants and 1M audit entries (one follower
#                 stopped during the fill), the last snapshot's build time and size, a restarted
#                 follower's RSS, the stopped follower's catch-up through a snapshot (time, RSS)
#                 (BERQENAS_BENCH_VS_ETCD_ONLY=1: only the etcd comparison;
#                 BERQENAS_BENCH_AUDIT_ENTRIES=N: another history size)
#   fanout        50 then 200 simulated agents (real mTLS watch streams) on a 3-node cluster:
#                 write → all placed nodes p50/p99, coordinator CPU and RSS, handshakes/s
#   flood         1 release coordinator under a 60 s anonymous flood (keyless GETs, bare TCP
#                 connects on the node and Raft ports, garbage TLS): Raft and audit entries
#                 added, RSS before/after, create p99 idle vs during the flood (creates spread
#                 over the flood); BERQENAS_BENCH_BASELINE=BIN measures a baseline binary beside it
#   provision     1,000 tenants on one db node (real PostgreSQL): create → active p50/p99, full
#                 resync, one usage pass, agent RSS; side by side psql running the seed's SQL
#   wg-peers      the gateway driver's WireGuard side in its own namespace (wireguard-go): a cold
#                 pass with 10,000 peers on one interface, a converged pass, one peer added and
#                 removed by diff, suspend, resume, delete (BERQENAS_BENCH_PEERS=N for another N)
#   gateway       one gateway at 1,000 tenants × 10 devices × 3 exposures, in throwaway network
#                 namespaces: the agent's nftables sync (cold full apply, one tenant's change at 100
#                 and 1,000 tenants, nft -f of the same ruleset as one file and the ratio), peak RSS,
#                 the WireGuard driver with 10,000 peers (wg-peers below), and side by side the
#                 seed's way: one iptables command per rule (iptables-nft; part timed, the whole
#                 extrapolated and labelled so) and wg set per peer (needs root, nft, iptables,
#                 wg, wireguard-go; BERQENAS_BENCH_TENANTS=N, BERQENAS_BENCH_PEERS=N for others)
#   gateway-nft   the agent's nftables sync in a throwaway network namespace at 100 and 1,000
#                 tenants × 3 exposures: cold sync, converged sync, one tenant changed, and nft -f
#                 loading the same ruleset as one file (needs root and nftables); one line each
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-}
case "$name" in
  coordinator)
    if ! command -v etcd >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
    fi
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-tests --bins
    exec target/release/bench-coordinator target/release/berqenas-coordinator "$(command -v etcd)"
    ;;
  fanout)
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-tests --bins
    exec target/release/bench-fanout target/release/berqenas-coordinator
    ;;
  flood)
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-tests --bins
    # BERQENAS_BENCH_BASELINE=PATH measures another coordinator binary (say, a build from before
    # the refusal accounting) side by side in the same run.
    args=(target/release/berqenas-coordinator)
    if [ -n "${BERQENAS_BENCH_BASELINE:-}" ]; then args+=("$BERQENAS_BENCH_BASELINE"); fi
    exec target/release/bench-flood "${args[@]}"
    ;;
  provision)
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-node-agent -p berqenas-tests --bins
    exec target/release/bench-provision target/release/berqenas-coordinator target/release/berqenas-node-agent
    ;;
  wg-peers)
    cargo build --release --locked -q -p berqenas-tests --bins
    exec target/release/bench-wg-peers "${BERQENAS_BENCH_PEERS:-10000}"
    ;;
  gateway)
    for tool in nft iptables iptables-restore wg wireguard-go; do
      if ! command -v "$tool" >/dev/null; then
        echo "bench.sh gateway: $tool is missing (deploy/test.sh installs iptables, nftables, wireguard-go, wireguard-tools)" >&2
        exit 1
      fi
    done
    cargo build --release --locked -q -p berqenas-tests --bin bench-gateway --bin bench-wg-peers
    exec target/release/bench-gateway "${BERQENAS_BENCH_TENANTS:-1000}" "${BERQENAS_BENCH_PEERS:-10000}"
    ;;
  gateway-nft)
    cargo build --release --locked -q -p berqenas-tests --bin nft-lab
    ns="bqbench-$$"
    ip netns add "$ns"
    trap 'ip netns delete "$ns"' EXIT
    for n in 100 1000; do
      ip netns exec "$ns" nft flush ruleset
      ip netns exec "$ns" target/release/nft-lab bench "$n"
    done
    ;;
  *)
    echo "usage: $0 coordinator|fanout|flood|provision|gateway|gateway-nft|wg-peers" >&2
    exit 2
    ;;
esac
