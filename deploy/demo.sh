#!/usr/bin/env bash
# Walks issue 11's story on one machine, printing each step; every step really happens:
#   tenant → device token → the device enrolled in its own network namespace → tunnel up (ping of
#   the gateway through WireGuard) → a TCP service on the device exposed on a gateway port with
#   --source keep and reached from an outside namespace (the device sees the client's address) →
#   events sent by the device, stored in tenant_acme.events and received by a subscriber (SSE
#   with a customer key).
# Everything lives in network namespaces bqdemo-<pid>-* joined by a bridge (documentation
# addresses only: 192.0.2.0/24 inside, 198.51.100.0/24 the gateway's public side, 203.0.113.0/24
# the outside client, 198.18.0.0/15 tenant subnets) and in a temp dir; the host's own network is
# not touched. Everything is removed on exit.
#   core   192.0.2.1   coordinator, PostgreSQL (wal_level = logical), db node agent with its
#                      realtime port 192.0.2.1:7443 (devices publish, apps subscribe)
#   gw     192.0.2.2   gateway node agent (wireguard-go, nftables), public 198.51.100.10
#   dev    192.0.2.3   the device (berqenas-device), on the internet as 198.51.100.21
#   out    192.0.2.4   an outside client 203.0.113.7 and the tenant's subscribing app
# The device publishes to the realtime port over the lab network, not through the tunnel (the
# tunnel carries the tenant's subnet only).
# Needs root, wireguard-go, wg, ip, nft, python3, PostgreSQL (Debian layout). Binaries from
# target/debug (BERQENAS_BIN_DIR to change); built first unless BERQENAS_DEMO_NO_BUILD=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${BERQENAS_BIN_DIR:-$ROOT/target/debug}
[ "$(id -u)" -eq 0 ] || { echo "deploy/demo.sh needs root (network namespaces, tun devices)" >&2; exit 1; }
for tool in wireguard-go wg ip nft python3 setpriv; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is not installed" >&2; exit 1; }
done
[ -e /dev/net/tun ] || { echo "/dev/net/tun is missing: wireguard-go needs tun devices" >&2; exit 1; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
if [ "${BERQENAS_DEMO_NO_BUILD:-0}" != 1 ]; then
  echo "==> building the coordinator, the node agent and the device client"
  cargo build --manifest-path "$ROOT/Cargo.toml" -p berqenas-coordinator -p berqenas-node-agent -p berqenas-device --bins
fi
COORD="$BIN_DIR/berqenas-coordinator"
AGENT="$BIN_DIR/berqenas-node-agent"
DEVICE="$BIN_DIR/berqenas-device"

P="bqdemo-$$"
BR="$P-br" CORE="$P-core" GW="$P-gw" DEV="$P-dev" OUT="$P-out"
WG_IF="bqdm$(($$ % 100000))"
WORK=$(mktemp -d /tmp/berqenas-demo.XXXXXX)
chmod 711 "$WORK"
PIDS=()

cleanup() {
  set +e
  echo
  echo "==> cleaning up"
  ip -n "$DEV" link del "$WG_IF" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  [ -f "$WORK/pg/data/postmaster.pid" ] && setpriv --reuid=postgres --regid=postgres --clear-groups \
    "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "$CORE" "$GW" "$DEV" "$OUT" "$BR"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
  echo "    removed namespaces $P-* and $WORK"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
# Shows a command as the user would type it, then runs it.
show() { printf '    $ %s\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
jget() { python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))' "$@"; }
indent() { sed 's/^/    /'; }
wait_until() { # seconds, what, command…
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out after ${secs}s: $what" >&2; return 1
}

step "network: namespaces $P-{core,gw,dev,out} on a bridge (documentation addresses only)"
ip netns add "$BR"
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
i=0
for ns in "$CORE" "$GW" "$DEV" "$OUT"; do
  i=$((i + 1))
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name "bqd$(($$ % 100000))x$i" netns "$BR"
  ip -n "$BR" link set "bqd$(($$ % 100000))x$i" master br0 up
  ip -n "$ns" addr add "192.0.2.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
done
ip -n "$GW" addr add 198.51.100.10/24 dev eth0
ip -n "$GW" addr add 203.0.113.1/24 dev eth0
ip -n "$DEV" addr add 198.51.100.21/24 dev eth0
ip -n "$OUT" addr add 203.0.113.7/24 dev eth0
ip -n "$OUT" route add 198.51.100.0/24 via 203.0.113.1

step "PostgreSQL (wal_level = logical) in $CORE at 192.0.2.1:5432"
mkdir -p "$WORK/pg"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/pg/pw"
chown -R postgres:postgres "$WORK/pg"
chmod 700 "$WORK/pg"
as_pg() { setpriv --reuid=postgres --regid=postgres --clear-groups "$@"; }
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pg/pw" >/dev/null
printf "listen_addresses = '192.0.2.1'\nport = 5432\nunix_socket_directories = '%s'\nwal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 32\nfsync = off\n" \
  "$WORK/pg" >> "$WORK/pg/data/postgresql.conf"
echo "host all all 192.0.2.0/24 scram-sha-256" >> "$WORK/pg/data/pg_hba.conf"
in_ns "$CORE" setpriv --reuid=postgres --regid=postgres --clear-groups \
  "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start >/dev/null
# The superuser password never goes on a command line: libpq-style clients (sqlx in the agent,
# psql) read it from this 0600 file.
printf '192.0.2.1:5432:*:postgres:%s\n' "$(cat "$WORK/pg/pw")" > "$WORK/pgpass"
chmod 600 "$WORK/pgpass"
export PGPASSFILE="$WORK/pgpass"

step "coordinator in $CORE (API https://192.0.2.1:7201, node listener 192.0.2.1:7301)"
out=$(in_ns "$CORE" "$COORD" init --data-dir "$WORK/coord" --id 1 --raft-listen 192.0.2.1:7101 \
  --api-listen 192.0.2.1:7201 --node-listen 192.0.2.1:7301 --vpn-pool 198.18.0.0/15 --output json)
export BERQENAS_API_KEY=$(printf '%s' "$out" | jget admin_api_key)
export BERQENAS_ENDPOINT=https://192.0.2.1:7201 BERQENAS_CA_CERT="$WORK/coord/ca.pem"
ip netns exec "$CORE" "$COORD" serve --data-dir "$WORK/coord" --id 1 --raft-listen 192.0.2.1:7101 \
  --api-listen 192.0.2.1:7201 --node-listen 192.0.2.1:7301 >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
wait_until 30 "the coordinator" grep -q "node listener serving" "$WORK/coordinator.log"
bq() { in_ns "$CORE" "$COORD" "$@"; }

step "db node agent in $CORE: PostgreSQL driver, realtime port 192.0.2.1:7443"
tok=$(bq node token create --roles db --output json)
in_ns "$CORE" "$AGENT" join --coordinator https://192.0.2.1:7301 --token "$(printf '%s' "$tok" | jget token)" \
  --ca-pin "$(printf '%s' "$tok" | jget ca_fingerprint)" --roles db --data-dir "$WORK/db" \
  --driver postgres --driver-url postgres://postgres@192.0.2.1:5432/postgres \
  --realtime-listen 192.0.2.1:7443 --resync-interval 2s >/dev/null
ip netns exec "$CORE" "$AGENT" run --config "$WORK/db/agent.toml" >"$WORK/agent-db.log" 2>&1 &
PIDS+=($!)

step "gateway node agent in $GW: public address 198.51.100.10, ports 15000-15999"
tok=$(bq node token create --roles gateway --output json)
in_ns "$GW" "$AGENT" join --coordinator https://192.0.2.1:7301 --token "$(printf '%s' "$tok" | jget token)" \
  --ca-pin "$(printf '%s' "$tok" | jget ca_fingerprint)" --roles gateway --data-dir "$WORK/gw" \
  --public-address 198.51.100.10 --public-ports 15000-15999 --resync-interval 2s >/dev/null
# wireguard-go keeps its control sockets in /run/wireguard: the gateway's get a private tmpfs
# there (`ip netns exec` runs in a mount namespace of its own).
mkdir -p /run/wireguard
ip netns exec "$GW" sh -c 'mount -t tmpfs tmpfs /run/wireguard && exec "$0" run --config "$1"' \
  "$AGENT" "$WORK/gw/agent.toml" >"$WORK/agent-gw.log" 2>&1 &
PIDS+=($!)
bq node list | indent

step "1. a tenant (VPN on), placed on the db node and the gateway"
show "berqenas-coordinator tenant create --name acme --vpn enabled --wait"
bq tenant create --name acme --vpn enabled --wait --wait-timeout 60s --output json > "$WORK/tenant.json"
GATEWAY=$(jget network gateway_address < "$WORK/tenant.json")
echo "    tenant acme: subnet $(jget network vpn_subnet < "$WORK/tenant.json"), gateway address $GATEWAY"

step "2. a customer key for the tenant's app (it subscribes to the tenant's events)"
show "berqenas-coordinator apikey create --role customer --tenant acme"
CUSTOMER_KEY=$(bq apikey create --role customer --tenant acme --output json | jget token)
echo "    customer key ${CUSTOMER_KEY:0:12}… (shown once)"

step "3. a one-time device token"
show "berqenas-coordinator device token create --tenant acme --name plc1"
bq device token create --tenant acme --name plc1 --output json > "$WORK/token.json"
ENROLL=$(jget command < "$WORK/token.json")
echo "    the device runs: $(printf '%s' "$ENROLL" | sed -E 's/(--token [^ ]{12})[^ ]*/\1…/')"
flag() { printf '%s' "$ENROLL" | tr ' ' '\n' | grep -A1 -x -- "$1" | tail -n 1; }

dev() { in_ns "$DEV" env BERQENAS_DEVICE_WG=userspace "$DEVICE" --state-dir "$WORK/plc1" "$@"; }
step "4. the device enrolls from its own namespace ($DEV): keys made there, never sent"
show "berqenas-device enroll --coordinator $(flag --coordinator) --token … --ca-pin $(flag --ca-pin) --interface $WG_IF"
dev enroll --coordinator "$(flag --coordinator)" --token "$(flag --token)" --ca-pin "$(flag --ca-pin)" \
  --interface "$WG_IF" | indent
DEVICE_ID=$(jget device_id < "$WORK/plc1/device.json")
echo "    realtime endpoint from enrollment: $(jget realtime_endpoint < "$WORK/plc1/device.json")"
bq device list --tenant acme | indent

step "5. tunnel up (WireGuard, wireguard-go) and a ping of the gateway through it"
show "berqenas-device up"
wait_until 30 "up (the gateway's key)" dev up
dev up | indent
show "ping -c 3 $GATEWAY"
wait_until 20 "a ping of $GATEWAY" in_ns "$DEV" ping -c 1 -W 1 "$GATEWAY"
in_ns "$DEV" ping -c 3 "$GATEWAY" | indent

step "6. a TCP service on the device (port 8080; it answers with the address it sees)"
ip netns exec "$DEV" python3 -c 'import socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(("plc1 sees you as %s\n" % self.client_address[0]).encode())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 8080), H).serve_forever()' >/dev/null 2>&1 &
PIDS+=($!)
show "berqenas-coordinator expose add --tenant acme --device plc1 --port 8080 --source keep"
ENDPOINT=$(bq expose add --tenant acme --device plc1 --port 8080 --source keep --output json | jget endpoint)
echo "    exposed at $ENDPOINT"
show "berqenas-device up      # the coordinator now sends source-keep routing"
dev up | indent
in_ns "$DEV" ip rule show | grep 51820 | indent
connect() { in_ns "$OUT" python3 -c 'import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((h, int(p)), 3, (sys.argv[2], 0))
print(s.recv(100).decode().strip())' "$ENDPOINT" 203.0.113.7; }
show "(from $OUT, 203.0.113.7) connect $ENDPOINT"
wait_until 30 "the exposed service from outside" connect
connect | indent

step "7. the tenant's app subscribes (SSE, customer key) from $OUT"
cp "$WORK/db/ca.pem" "$WORK/cluster-ca.pem"
# Verifies the node's chain to the cluster CA; node certificates name no address, so no host
# name check (the device client and the test check the berqenas://node/… identity instead).
ip netns exec "$OUT" python3 -u -c 'import json, ssl, sys, time, urllib.request, urllib.error
url, ca, key = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
deadline = time.time() + 60
while True:
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer " + key}), context=ctx, timeout=120)
        break
    except urllib.error.HTTPError as e:
        if time.time() > deadline:
            print("refused:", e.code, e.read().decode().strip()); sys.exit(1)
        time.sleep(0.3)
print("subscribed", flush=True)
for line in r:
    line = line.decode().rstrip("\n")
    if line.startswith("data:"):
        print("received", line[5:].strip(), flush=True)' \
  "https://192.0.2.1:7443/v1/tenants/acme/events" "$WORK/cluster-ca.pem" "$CUSTOMER_KEY" >"$WORK/subscriber.out" 2>&1 &
PIDS+=($!)
show "GET https://192.0.2.1:7443/v1/tenants/acme/events  (Authorization: Bearer <customer key>)"
wait_until 60 "the subscription" grep -q subscribed "$WORK/subscriber.out"
cat "$WORK/subscriber.out" | indent

step "8. the device sends events (acknowledged only after commit)"
# A refused send keeps its event in the spool and the next send delivers it too.
send_one() {
  local out
  for _ in $(seq 1 20); do
    if out=$(dev send --type reading --payload "$1" 2>&1); then echo "$out" | indent; return 0; fi
    sleep 1
  done
  echo "$out" | indent
  return 1
}
for c in 21.5 21.7 22.0; do
  show "berqenas-device send --type reading --payload '{\"celsius\": $c}'"
  send_one "{\"celsius\": $c}"
done

step "9. the rows in tenant_acme.events"
show "psql -c 'SELECT created_at, device_id, event_type, payload FROM tenant_acme.events'"
in_ns "$CORE" "$PGBIN/psql" -h 192.0.2.1 -U postgres -d postgres \
  -c "SELECT created_at, device_id, event_type, payload FROM tenant_acme.events ORDER BY created_at" | indent

step "10. what the subscriber received"
wait_until 20 "three events at the subscriber" sh -c "[ \$(grep -c received '$WORK/subscriber.out') -ge 3 ]"
cat "$WORK/subscriber.out" | indent
[ "$(grep -c "\"device_id\":\"$DEVICE_ID\"" "$WORK/subscriber.out")" -ge 3 ]
echo
echo "==> done: tenant, token, enrolled device, tunnel, exposed service, events stored and delivered"
