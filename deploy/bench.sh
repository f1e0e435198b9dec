#!/usr/bin/env bash
# Benchmarks, each printing one JSON line of figures. Usage: deploy/bench.sh NAME
#   coordinator   3-node loopback cluster beside a 3-member etcd cluster (Debian's etcd-server,
#                 installed when missing): one replicated write per request on each at 1, 16 and 64
#                 clients (throughput, p50/p99, ratio; the two take turns in 1 s slices, so both
#                 see the same load from whatever else the host runs), creates/s and latency with 16 clients,
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
#   realtime      the db node's realtime ingest (the agent's module in its own process, real
#                 PostgreSQL, loopback): 100 devices with their own certificates on one tenant,
#                 sustained events/s committed and publish→commit p50/p99; at a paced 5,000
#                 events/s publish→commit and publish→subscriber (SSE) p50/p99; ingest RSS; side by
#                 side raw COPY of as many rows with psql and one INSERT per event
#                 (BERQENAS_BENCH_SECONDS=S for another duration, default 10)
#   backup        one tenant schema of about 1 GB in a throwaway PostgreSQL: the agent binary's
#                 `backup run` (pg_dump → zstd → AES-256-GCM → s3s-fs on loopback) and `backup
#                 restore --clone`, MB/s of dump bytes and the agent's peak RSS; side by side
#                 `pg_dump -Fc | zstd -3` to a file and `pg_restore` of it; the backups alternate
#                 (agent, plain, plain, agent; means) on a vacuumed table (BERQENAS_BENCH_MB=N)
#   enroll        token → tunnel up for 100 sequential devices in lab namespaces: real coordinator,
#                 gateway agent (wireguard-go) and db agent; `berqenas-device enroll` + `up` until the
#                 tenant's gateway address answers a ping through the tunnel, p50/p99 and phases;
#                 side by side as many `wg genkey` + `device add --public-key` + `device config` +
#                 `wg-quick up` (bring your own key) to the same ping; `berqenas-device run` RSS;
#                 the device client's sizes (`--profile device`: host, x86_64-pc-windows-gnu,
#                 aarch64-unknown-linux-musl, armv7-unknown-linux-gnueabihf; targets deploy/test.sh installs)
#                 (needs root, wireguard-go, wireguard-tools, nsenter; BERQENAS_BENCH_DEVICES=N)
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
#   panel         one release coordinator (API over TLS on loopback) with 1,000 tenants: the panel's
#                 tenant list in headless Chromium, time to first byte, time until all rows are
#                 shown, bytes of the page and its assets and of the list's JSON; cold, warm
#                 (opened from another site) and reloaded in its tab (needs chromium and
#                 chromium-driver)
#   gateway-nft   the agent's nftables sync in a throwaway network namespace at 100 and 1,000
#                 tenants × 3 exposures: cold sync, converged sync, one tenant changed by a full
#                 sync, one tenant changed between resyncs (through the agent's nft session: the
#                 first change, then the median of 9 and its parts: render, plan, nft), side by
#                 side the same change as a one-shot nft -f and a one-rule session change with
#                 and without a verdict (the kernel's whole-table validation), and nft -f loading
#                 the same ruleset as one file (needs root and nftables); one line each
#   gateway-throughput  TCP throughput (iperf3, 3 × 5 s runs, median Mbit/s) from an outside client
#                 (203.0.113.7) to a device's iperf3 server, in throwaway network namespaces:
#                 (a) through one exposure: public port DNAT by the agent's nftables sync (nft-lab)
#                 → userspace WireGuard (wireguard-go on both ends) → device; (b) plain veth
#                 forwarding through the same gateway, no WireGuard; (c) WireGuard without nft;
#                 the ratios, and the gateway's wireguard-go CPU (% of one core) during (a) and (c)
#                 (needs root, iperf3, nft, wg, wireguard-go, python3; BERQENAS_BENCH_SECONDS=S,
#                 BERQENAS_BENCH_RUNS=N for others)
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
  realtime)
    cargo build --release --locked -q -p berqenas-tests --bins
    exec target/release/bench-realtime
    ;;
  backup)
    command -v s3s-fs >/dev/null || { echo "bench.sh backup: s3s-fs is missing (deploy/test.sh installs it)" >&2; exit 1; }
    command -v zstd >/dev/null || { echo "bench.sh backup: zstd is missing (apt-get install zstd)" >&2; exit 1; }
    cargo build --release --locked -q -p berqenas-node-agent -p berqenas-tests --bins
    exec target/release/bench-backup target/release/berqenas-node-agent
    ;;
  enroll)
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-node-agent -p berqenas-tests --bins
    cargo build --profile device --locked -q -p berqenas-device
    sizes=("x86_64-unknown-linux-gnu=target/device/berqenas-device")
    for t in x86_64-pc-windows-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
      if rustup target list --installed 2>/dev/null | grep -qx "$t"; then
        cargo build --profile device --locked -q -p berqenas-device --target "$t"
        exe=berqenas-device; [ "$t" = x86_64-pc-windows-gnu ] && exe=berqenas-device.exe
        sizes+=("$t=target/$t/device/$exe")
      else
        echo "bench.sh enroll: rust target $t is not installed (deploy/test.sh installs it); its size is left out" >&2
      fi
    done
    exec target/release/bench-enroll target/release/berqenas-coordinator target/release/berqenas-node-agent \
      target/device/berqenas-device "${sizes[@]}"
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
  panel)
    for tool in chromium chromedriver; do
      command -v "$tool" >/dev/null || { echo "bench.sh panel: $tool is missing (deploy/test.sh installs chromium and chromium-driver)" >&2; exit 1; }
    done
    cargo build --release --locked -q -p berqenas-coordinator -p berqenas-tests --bin berqenas-coordinator --bin bench-panel
    exec target/release/bench-panel target/release/berqenas-coordinator
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
  gateway-throughput)
    for tool in iperf3 nft wg wireguard-go ip python3; do
      if ! command -v "$tool" >/dev/null; then
        echo "bench.sh gateway-throughput: $tool is missing (deploy/test.sh installs iperf3, nftables, wireguard-go, wireguard-tools, iproute2, python3)" >&2
        exit 1
      fi
    done
    [ -e /dev/net/tun ] || { echo "bench.sh gateway-throughput: /dev/net/tun is missing (wireguard-go needs it)" >&2; exit 1; }
    cargo build --release --locked -q -p berqenas-tests --bin nft-lab
    secs=${BERQENAS_BENCH_SECONDS:-5}
    runs=${BERQENAS_BENCH_RUNS:-3}
    # Client, gateway and device namespaces. The gateway's tunnel is `bqt{index}` as the agent
    # names it; the index is unique on the machine because wireguard-go's control sockets share
    # /var/run/wireguard across namespaces.
    c="bqtp-c-$$" g="bqtp-g-$$" d="bqtp-d-$$"
    index="9$$" gwif="bqt9$$" devif="bqtpd$$"
    tmp=$(mktemp -d)
    cleanup() {
      for ns in "$c" "$g" "$d"; do
        # Whatever this bench started in them (wireguard-go, iperf3), by pid.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
        ip netns delete "$ns" 2>/dev/null || true
      done
      rm -rf "$tmp"
    }
    trap cleanup EXIT
    for ns in "$c" "$g" "$d"; do
      ip netns add "$ns"
      ip -n "$ns" link set lo up
    done
    ip link add bqtpw$$ netns "$g" type veth peer name eth0 netns "$c"
    ip link add bqtpl$$ netns "$g" type veth peer name eth0 netns "$d"
    ip -n "$g" link set bqtpw$$ name wan0
    ip -n "$g" link set bqtpl$$ name lan0
    ip -n "$g" addr add 198.51.100.10/24 dev wan0
    ip -n "$g" addr add 203.0.113.1/24 dev wan0
    ip -n "$g" addr add 192.0.2.1/24 dev lan0
    ip -n "$c" addr add 203.0.113.7/24 dev eth0
    ip -n "$d" addr add 192.0.2.10/24 dev eth0
    ip -n "$c" link set eth0 up
    ip -n "$d" link set eth0 up
    ip -n "$g" link set wan0 up
    ip -n "$g" link set lan0 up
    ip -n "$c" route add default via 203.0.113.1
    # The device's uplink: the gateway's public address, and the outside for plain forwarding.
    ip -n "$d" route add 198.51.100.10/32 via 192.0.2.1
    ip -n "$d" route add 203.0.113.0/24 via 192.0.2.1
    ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=1

    # The gateway's wireguard-go CPU ticks so far (user + system).
    gw_wg_ticks() {
      local total=0 pid
      for pid in $(ip netns pids "$g"); do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = wireguard-go ]; then
          total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
        fi
      done
      echo "$total"
    }
    # One measurement: `runs` iperf3 runs of `secs` seconds from the client to HOST:PORT, each
    # to a one-off server (-1) on the device's 5201; the JSON reports and the gateway's
    # wireguard-go ticks over all runs land in $tmp/LABEL.*.
    measure() {
      local host=$1 port=$2 label=$3 i before after server
      before=$(gw_wg_ticks)
      for ((i = 0; i < runs; i++)); do
        ip netns exec "$d" timeout $((secs + 30)) iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
        server=$!
        for _ in $(seq 50); do
          ip netns exec "$d" ss -ltnH 'sport = :5201' | grep -q . && break
          sleep 0.1
        done
        if ! ip netns exec "$c" timeout $((secs + 20)) iperf3 -c "$host" -p "$port" -t "$secs" \
          --connect-timeout 3000 -J >"$tmp/$label.$i.json"; then
          echo "bench.sh gateway-throughput: iperf3 ($label) to $host:$port failed:" >&2
          cat "$tmp/$label.$i.json" >&2
          exit 1
        fi
        wait "$server" || true
      done
      after=$(gw_wg_ticks)
      echo $((after - before)) >"$tmp/$label.ticks"
    }

    # (b) Plain veth forwarding: client → gateway → device, no WireGuard, no nft.
    measure 192.0.2.10 5201 veth

    # The tunnel: wireguard-go on both ends, configured with plain `wg` and `ip`.
    (umask 077 && wg genkey >"$tmp/gw.key" && wg genkey >"$tmp/dev.key")
    gwpub=$(wg pubkey <"$tmp/gw.key")
    devpub=$(wg pubkey <"$tmp/dev.key")
    ip netns exec "$g" wireguard-go "$gwif" >/dev/null 2>&1
    ip netns exec "$d" wireguard-go "$devif" >/dev/null 2>&1
    ip netns exec "$g" wg set "$gwif" private-key "$tmp/gw.key" listen-port 51821 \
      peer "$devpub" allowed-ips 198.18.1.10/32
    ip netns exec "$d" wg set "$devif" private-key "$tmp/dev.key" peer "$gwpub" \
      endpoint 198.51.100.10:51821 allowed-ips 198.18.1.0/24,203.0.113.0/24 persistent-keepalive 25
    ip -n "$g" addr add 198.18.1.1/24 dev "$gwif"
    ip -n "$d" addr add 198.18.1.10/24 dev "$devif"
    ip -n "$g" link set mtu 1420 up dev "$gwif"
    ip -n "$d" link set mtu 1420 up dev "$devif"
    # From now on the device answers the outside through its tunnel.
    ip -n "$d" route replace 203.0.113.0/24 dev "$devif"
    if ! ip netns exec "$d" ping -c 3 -i 0.2 -W 2 198.18.1.1 >/dev/null; then
      echo "bench.sh gateway-throughput: the device's tunnel to the gateway does not answer" >&2
      exit 1
    fi

    # (c) WireGuard without nft: the client reaches the device's tunnel address, routed.
    measure 198.18.1.10 5201 wg

    # (a) One exposure: the agent's nftables sync in the gateway (public port 15201 → the
    # device's 5201, source nat), then the client connects to the public address.
    cat >"$tmp/desired.json" <<EOF
{"node": {"public_address": "198.51.100.10", "public_ports": {"first": 15000, "last": 15999}},
 "tenants": [{"name": "bench", "revision": 1, "lifecycle": "run", "index": $index, "gateway": {
   "vpn_subnet": "198.18.1.0/24", "gateway_address": "198.18.1.1", "interface": "$gwif", "listen_port": 51821,
   "exposures": [{"id": "x1", "device_id": "d1", "device_address": "198.18.1.10", "port": 5201,
                  "public_port": 15201, "protocol": "tcp", "allow": [], "rate_per_second": 0,
                  "source": "nat", "enabled": true}],
   "rules": [], "blocked_domains": []}}]}
EOF
    report=$(ip netns exec "$g" target/release/nft-lab sync "$tmp/desired.json")
    if [ "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("failed") == {})' "$report")" != True ]; then
      echo "bench.sh gateway-throughput: the agent's nft sync failed: $report" >&2
      exit 1
    fi
    measure 198.51.100.10 15201 exposure

    python3 - "$tmp" "$runs" "$secs" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
tmp, runs, secs, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {"bench": "gateway-throughput", "runs": runs, "seconds": secs, "tool": "iperf3 TCP, 1 stream",
       "wireguard": "wireguard-go (userspace) on gateway and device, MTU 1420"}
names = {"exposure": "exposure_nft_dnat_wg", "veth": "plain_veth_forwarding", "wg": "wg_without_nft"}
med = {}
for label, key in names.items():
    mbit = [json.load(open(f"{tmp}/{label}.{i}.json"))["end"]["sum_received"]["bits_per_second"] / 1e6
            for i in range(runs)]
    med[label] = statistics.median(mbit)
    out[key + "_mbit_s"] = round(med[label], 1)
    out[key + "_runs_mbit_s"] = [round(m, 1) for m in mbit]
    if label != "veth":
        ticks = int(open(f"{tmp}/{label}.ticks").read())
        # Percent of one core over the runs' seconds (iperf3's own setup adds a little time).
        out[key + "_gateway_wireguard_go_cpu_pct"] = round(100 * ticks / hz / (runs * secs), 1)
out["exposure_vs_veth_ratio"] = round(med["exposure"] / med["veth"], 4)
out["wg_vs_veth_ratio"] = round(med["wg"] / med["veth"], 4)
out["exposure_vs_wg_ratio"] = round(med["exposure"] / med["wg"], 4)
print(json.dumps(out))
PY
    ;;
  *)
    echo "usage: $0 coordinator|enroll|fanout|flood|provision|realtime|gateway|gateway-nft|gateway-throughput|wg-peers" >&2
    exit 2
    ;;
esac
