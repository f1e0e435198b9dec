#!/usr/bin/env bash
# Runs Berqenas locally: builds the coordinator and the node agent, initializes a single-node
# cluster on embedded storage in .berqenas/ (once), starts it in the background, starts a local
# PostgreSQL for the db role (initdb into .berqenas/postgres, 127.0.0.1:5433) with pgBouncer in
# front of it (127.0.0.1:6433), joins a local node agent for the db role with a one-time token,
# and writes .berqenas/env with BERQENAS_ENDPOINT and BERQENAS_API_KEY.
# As root it also runs a real gateway without touching the host's network beyond one veth
# pair with documentation addresses: a second agent (role gateway, public address
# 198.51.100.10, public ports 15000-15999) inside network namespace bq-gw, WireGuard through
# wireguard-go, its nftables table in that namespace; and a namespace bq-dev, a host on the
# gateway's public side (203.0.113.10) to run a demo device in. The gateway agent reaches the
# coordinator's loopback listener through a unix socket (socat on both sides), and its
# wireguard-go control sockets live in .berqenas/gateway/wireguard (a private mount), so other
# WireGuard users of this host never collide with it. Without root the gateway role is only
# recorded in .berqenas/agent/gateway/. Running it again is harmless.
#   deploy/quickstart.sh          start (or confirm it is running)
#   deploy/quickstart.sh wg       `wg show` of the gateway's tenant interfaces
#   deploy/quickstart.sh stop     stop what it started (the gateway namespaces too; state is kept)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE="$ROOT/.berqenas"
DATA="$STATE/coordinator"
PIDFILE="$STATE/coordinator.pid"
LOG="$STATE/coordinator.log"
ENVFILE="$STATE/env"
BIN="$ROOT/target/release/berqenas-coordinator"
AGENT_BIN="$ROOT/target/release/berqenas-node-agent"
AGENT_DIR="$STATE/agent"
AGENT_PIDFILE="$STATE/agent.pid"
AGENT_LOG="$STATE/agent.log"
PG_DIR="$STATE/postgres"
PG_PORT=5433
PGB_DIR="$STATE/pgbouncer"
PGB_PORT=6433
# The db node's realtime port: devices publish (gRPC, device certificates), apps subscribe (SSE).
REALTIME_PORT=7443
RAFT_ADDR=127.0.0.1:7101
API_ADDR=127.0.0.1:7201
NODE_ADDR=127.0.0.1:7301
# The gateway: namespace bq-gw, linked to the host by veth bq-gw0 (host, 198.51.100.1) ↔ bq-gw1
# (bq-gw, the public address 198.51.100.10), and to the demo device namespace bq-dev by
# bq-dev1 (bq-gw, 203.0.113.1) ↔ bq-dev0 (bq-dev, 203.0.113.10). All documentation ranges.
GW_NS=bq-gw
DEV_NS=bq-dev
PUBLIC_ADDR=198.51.100.10
PUBLIC_PORTS=15000-15999
GW_DIR="$STATE/gateway"
GW_PIDFILE="$STATE/gateway.pid"
GW_LOG="$STATE/gateway.log"
GW_WG_RUN="$GW_DIR/wireguard"
GW_SOCK="$STATE/coordinator-node.sock"
BRIDGE_HOST_PIDFILE="$STATE/bridge-host.pid"
BRIDGE_NS_PIDFILE="$STATE/bridge-ns.pid"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
agent_running() { [ -f "$AGENT_PIDFILE" ] && kill -0 "$(cat "$AGENT_PIDFILE")" 2>/dev/null; }
# PostgreSQL refuses to run as root; as root the quickstart runs it as the postgres user.
as_pg() { if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups "$@"; else "$@"; fi; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pgb_bin() { command -v pgbouncer 2>/dev/null || ls /usr/sbin/pgbouncer 2>/dev/null || true; }
pgb_running() { [ -f "$PGB_DIR/pgbouncer.pid" ] && kill -0 "$(cat "$PGB_DIR/pgbouncer.pid")" 2>/dev/null; }
pid_running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
netns_exists() { [ -e "/run/netns/$1" ]; }
in_gw() { ip netns exec "$GW_NS" "$@"; }
json_field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }

case "${1:-start}" in
  stop)
    if agent_running; then
      kill "$(cat "$AGENT_PIDFILE")"
      echo "stopped the local node agent"
    fi
    rm -f "$AGENT_PIDFILE"
    for f in "$GW_PIDFILE" "$BRIDGE_NS_PIDFILE" "$BRIDGE_HOST_PIDFILE"; do
      if pid_running "$f"; then kill "$(cat "$f")"; fi
      rm -f "$f"
    done
    # Deleting the namespaces deletes their links (the host's veth end too); wireguard-go exits
    # when its tun device goes. Keys and addresses stay in .berqenas/gateway for the next start.
    for ns in "$GW_NS" "$DEV_NS"; do
      if netns_exists "$ns"; then ip netns delete "$ns" && echo "deleted network namespace $ns"; fi
    done
    # The kernel removes a deleted namespace's links a moment later; wait for the host's end.
    for _ in $(seq 1 50); do ip link show bq-gw0 >/dev/null 2>&1 || break; sleep 0.1; done
    rm -f "$GW_SOCK"
    if pgb_running; then
      kill "$(cat "$PGB_DIR/pgbouncer.pid")" && echo "stopped the local pgBouncer"
    fi
    # The agent's per-source limit on pgBouncer's port (an nftables table it kept).
    if [ "$(id -u)" -eq 0 ] && command -v nft >/dev/null 2>&1; then
      nft delete table inet berqenas_pooler 2>/dev/null && echo "removed the agent's nftables table" || true
    fi
    if [ -f "$PG_DIR/data/postmaster.pid" ] && [ -n "$(pg_bin)" ]; then
      as_pg "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null && echo "stopped the local PostgreSQL"
    fi
    if running; then
      kill "$(cat "$PIDFILE")"
      for _ in $(seq 1 100); do running || break; sleep 0.1; done
      echo "stopped the local coordinator"
    else
      echo "the local coordinator is not running"
    fi
    rm -f "$PIDFILE"
    exit 0
    ;;
  wg)
    pid_running "$GW_PIDFILE" || { echo "the gateway agent is not running (deploy/quickstart.sh as root)" >&2; exit 1; }
    # The agent's namespaces: its network and the private mount holding wireguard-go's sockets.
    exec nsenter --target "$(cat "$GW_PIDFILE")" --net --mount wg show
    ;;
  start) ;;
  *) echo "usage: $0 [start|wg|stop]" >&2; exit 2 ;;
esac

echo "==> building berqenas-coordinator and berqenas-node-agent (release)"
cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" -p berqenas-coordinator -p berqenas-node-agent --bins

umask 077
mkdir -p "$STATE"
if [ ! -f "$DATA/node.json" ]; then
  echo "==> initializing a single-node cluster in $DATA"
  out=$("$BIN" init --data-dir "$DATA" --id 1 --raft-listen "$RAFT_ADDR" --api-listen "$API_ADDR" \
        --node-listen "$NODE_ADDR" --vpn-pool 198.18.0.0/15 --output json)
  key=$(printf '%s\n' "$out" | json_field admin_api_key)
  [ -n "$key" ] || { echo "init did not print an admin key" >&2; exit 1; }
  printf 'export BERQENAS_ENDPOINT=http://%s\nexport BERQENAS_API_KEY=%s\n' "$API_ADDR" "$key" > "$ENVFILE"
  chmod 600 "$ENVFILE"
fi

if running; then
  echo "==> the local coordinator is already running (pid $(cat "$PIDFILE"))"
else
  echo "==> starting the coordinator (log: $LOG)"
  nohup "$BIN" serve --data-dir "$DATA" --billing-plans "$ROOT/deploy/billing-plans.toml" >>"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/${API_ADDR%:*}/${API_ADDR#*:}") 2>/dev/null && break
    running || { echo "the coordinator exited; see $LOG" >&2; tail -n 20 "$LOG" >&2; exit 1; }
    sleep 0.1
  done
fi

# A local PostgreSQL for the db role.
if [ -z "$(pg_bin)" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "==> installing PostgreSQL"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL is not installed: sudo apt-get install postgresql, then run this again" >&2
    exit 1
  fi
fi
PGBIN=$(pg_bin)
chmod 711 "$STATE"
if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
  echo "==> initializing PostgreSQL in $PG_DIR (127.0.0.1:$PG_PORT)"
  mkdir -p "$PG_DIR"
  pg_password=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 32)
  printf '%s\n' "$pg_password" > "$STATE/postgres.password"
  printf '%s\n' "$pg_password" > "$PG_DIR/pwfile"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$PG_DIR"; fi
  chmod 700 "$PG_DIR"
  as_pg "$PGBIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$PG_DIR/pwfile" >/dev/null
  rm -f "$PG_DIR/pwfile"
  printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" "$PG_PORT" "$PG_DIR" \
    | as_pg tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
fi
# Realtime subscribers read each tenant's events table through logical decoding.
if ! grep -q '^wal_level = logical' "$PG_DIR/data/postgresql.conf"; then
  printf "wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 32\n" | as_pg tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
  if as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    echo "==> restarting PostgreSQL for wal_level = logical"
    as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w restart >/dev/null
  fi
fi
# Logins of tenant roles reach the audit trail from PostgreSQL's JSON log (README, "Security
# events to a SIEM"); the server's own messages then go to $PG_DIR/data/log/.
if ! grep -q '^log_connections = on' "$PG_DIR/data/postgresql.conf"; then
  printf "logging_collector = on\nlog_destination = 'stderr,jsonlog'\nlog_connections = on\nlog_timezone = 'UTC'\n" \
    | as_pg tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
  if as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    echo "==> restarting PostgreSQL for its JSON log (tenant logins)"
    as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w restart >/dev/null
  fi
fi
if ! as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
  echo "==> starting PostgreSQL"
  as_pg "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w start >/dev/null
fi
# The superuser password never goes on a command line (`ps` shows those): the agent's URL has no
# password, and libpq-style clients (sqlx in the agent, psql) take it from a 0600 pgpass file
# named by PGPASSFILE. `read` and `printf` are shell builtins, so no process carries it either.
PGPASS="$STATE/pgpass"
IFS= read -r pg_password < "$STATE/postgres.password"
printf '127.0.0.1:%s:*:postgres:%s\n' "$PG_PORT" "$pg_password" > "$PGPASS"
unset pg_password
chmod 600 "$PGPASS" "$STATE/postgres.password"
export PGPASSFILE="$PGPASS"
# The operator's shell on this host reaches the same PostgreSQL (psql, `berqenas-node-agent plan`).
grep -q '^export PGPASSFILE=' "$ENVFILE" || printf 'export PGPASSFILE=%s\n' "$PGPASS" >> "$ENVFILE"
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

# pgBouncer in front of it (deploy/pgbouncer.ini with its paths in .berqenas/pgbouncer, on
# 127.0.0.1:6433): the agent writes each tenant's pool, auth_file entry and access rules.
if [ -z "$(pgb_bin)" ] && [ "$(id -u)" -eq 0 ]; then
  echo "==> installing pgBouncer"
  apt-get install -y -qq pgbouncer >/dev/null 2>&1 || \
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }
fi
PGB_ARGS=()
if [ -n "$(pgb_bin)" ]; then
  if [ ! -f "$PGB_DIR/pgbouncer.ini" ]; then
    mkdir -p "$PGB_DIR/berqenas"
    touch "$PGB_DIR/berqenas/berqenas-pools.ini" "$PGB_DIR/berqenas/berqenas-users.txt" \
      "$PGB_DIR/berqenas/berqenas-hba.conf"
    sed -e "s#/etc/pgbouncer/berqenas#$PGB_DIR/berqenas#g" -e "s#/run/postgresql#$PGB_DIR#g" \
      -e "s#^listen_addr = .*#listen_addr = 127.0.0.1#" -e "s#^listen_port = .*#listen_port = $PGB_PORT#" \
      "$ROOT/deploy/pgbouncer.ini" > "$PGB_DIR/pgbouncer.ini"
    printf 'logfile = %s\n' "$PGB_DIR/pgbouncer.log" | sed -i '/^\[pgbouncer\]/r /dev/stdin' "$PGB_DIR/pgbouncer.ini"
    chmod 750 "$PGB_DIR" "$PGB_DIR/berqenas"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$PGB_DIR"; fi
  fi
  if ! pgb_running; then
    echo "==> starting pgBouncer (127.0.0.1:$PGB_PORT)"
    as_pg "$(pgb_bin)" -d "$PGB_DIR/pgbouncer.ini"
  fi
  PGB_ARGS=(--pgbouncer-dir "$PGB_DIR/berqenas" --pgbouncer-pidfile "$PGB_DIR/pgbouncer.pid" --pgbouncer-port "$PGB_PORT")
  # The agent limits connections per source address to pgBouncer with an nftables rule (root).
  if [ "$(id -u)" -eq 0 ]; then
    command -v nft >/dev/null 2>&1 || apt-get install -y -qq nftables >/dev/null 2>&1 || \
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; }
  else
    echo "==> not root: pgBouncer runs without the per-source connection limit (nftables needs root)"
    PGB_ARGS+=(--pgbouncer-max-per-source 0)
  fi
else
  echo "==> pgBouncer is not installed (apt-get install pgbouncer); tenants connect to PostgreSQL directly"
fi

# As root the gateway is real, in its own namespace (below); the local agent then takes only the
# db role. Without root, gateway assignments are recorded in a directory by the local agent.
if [ "$(id -u)" -eq 0 ]; then REAL_GATEWAY=1; LOCAL_ROLES=db; else REAL_GATEWAY=0; LOCAL_ROLES=gateway,db; fi

# A local node agent, joined once with a one-time token and the pinned CA: the PostgreSQL driver
# for the db role.
if [ ! -f "$AGENT_DIR/agent.toml" ]; then
  echo "==> joining a local node agent (roles $LOCAL_ROLES)"
  # shellcheck disable=SC1090
  . "$ENVFILE"
  tok=$("$BIN" node token create --roles "$LOCAL_ROLES" --ttl 10m --output json)
  GW_RECORD_ARGS=()
  [ "$REAL_GATEWAY" = 1 ] || GW_RECORD_ARGS=(--driver-path "$AGENT_DIR/gateway")
  "$AGENT_BIN" join --coordinator "https://$NODE_ADDR" --token "$(printf '%s\n' "$tok" | json_field token)" \
    --ca-pin "$(printf '%s\n' "$tok" | json_field ca_fingerprint)" --roles "$LOCAL_ROLES" \
    --data-dir "$AGENT_DIR" --driver postgres --driver-url "$PG_URL" "${GW_RECORD_ARGS[@]}" \
    "${PGB_ARGS[@]}" --realtime-listen "127.0.0.1:$REALTIME_PORT" >/dev/null
fi
if agent_running; then
  echo "==> the local node agent is already running (pid $(cat "$AGENT_PIDFILE"))"
else
  echo "==> starting the node agent (log: $AGENT_LOG)"
  nohup "$AGENT_BIN" run --config "$AGENT_DIR/agent.toml" >>"$AGENT_LOG" 2>&1 &
  echo $! > "$AGENT_PIDFILE"
fi

if [ "$REAL_GATEWAY" = 1 ]; then
  if grep -q '^gateway_dir' "$AGENT_DIR/agent.toml" 2>/dev/null; then
    echo "==> note: the local agent joined with roles gateway,db before the gateway was real; VPN tenants may"
    echo "    still be placed on it. For a clean start: deploy/quickstart.sh stop && rm -rf .berqenas"
  fi
  missing=()
  command -v wireguard-go >/dev/null 2>&1 || missing+=(wireguard-go)
  command -v wg >/dev/null 2>&1 || missing+=(wireguard-tools)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v socat >/dev/null 2>&1 || missing+=(socat)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || \
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  fi
  [ -e /dev/net/tun ] || { echo "/dev/net/tun is missing: wireguard-go needs tun devices" >&2; exit 1; }

  # The namespaces and their links (each step only when missing).
  netns_exists "$GW_NS" || { echo "==> creating network namespace $GW_NS (the gateway)"; ip netns add "$GW_NS"; }
  netns_exists "$DEV_NS" || { echo "==> creating network namespace $DEV_NS (a demo device host)"; ip netns add "$DEV_NS"; }
  # Checked from the namespace's side: a host end left by a namespace the kernel is still
  # tearing down (that is asynchronous) is deleted first.
  if ! in_gw ip link show bq-gw1 >/dev/null 2>&1; then
    ip link delete bq-gw0 2>/dev/null || true
    ip link add bq-gw0 type veth peer name bq-gw1 netns "$GW_NS"
  fi
  ip addr replace 198.51.100.1/24 dev bq-gw0
  ip link set bq-gw0 up
  if ! ip netns exec "$DEV_NS" ip link show bq-dev0 >/dev/null 2>&1; then
    in_gw ip link add bq-dev1 type veth peer name bq-dev0 netns "$DEV_NS"
  fi
  in_gw ip link set lo up
  in_gw ip addr replace "$PUBLIC_ADDR/24" dev bq-gw1
  in_gw ip link set bq-gw1 up
  in_gw ip addr replace 203.0.113.1/24 dev bq-dev1
  in_gw ip link set bq-dev1 up
  in_gw ip route replace default via 198.51.100.1 dev bq-gw1
  in_gw sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$DEV_NS" ip link set lo up
  ip netns exec "$DEV_NS" ip addr replace 203.0.113.10/24 dev bq-dev0
  ip netns exec "$DEV_NS" ip link set bq-dev0 up
  ip netns exec "$DEV_NS" ip route replace default via 203.0.113.1 dev bq-dev0

  # The coordinator's node listener is on the host's loopback; inside bq-gw, 127.0.0.1:7301 is
  # bridged to it through a unix socket (the certificate names 127.0.0.1, so mTLS is unchanged).
  if ! pid_running "$BRIDGE_HOST_PIDFILE"; then
    rm -f "$GW_SOCK"
    nohup socat "UNIX-LISTEN:$GW_SOCK,fork,mode=600" "TCP:$NODE_ADDR" >/dev/null 2>&1 &
    echo $! > "$BRIDGE_HOST_PIDFILE"
  fi
  if ! pid_running "$BRIDGE_NS_PIDFILE"; then
    nohup ip netns exec "$GW_NS" socat "TCP-LISTEN:${NODE_ADDR#*:},bind=127.0.0.1,fork,reuseaddr" \
      "UNIX-CONNECT:$GW_SOCK" >/dev/null 2>&1 &
    echo $! > "$BRIDGE_NS_PIDFILE"
  fi
  for _ in $(seq 1 50); do
    [ -S "$GW_SOCK" ] && in_gw bash -c "exec 3<>/dev/tcp/127.0.0.1/${NODE_ADDR#*:}" 2>/dev/null && break
    sleep 0.1
  done

  if [ ! -f "$GW_DIR/agent.toml" ]; then
    echo "==> joining the gateway agent in $GW_NS (public address $PUBLIC_ADDR, ports $PUBLIC_PORTS)"
    # shellcheck disable=SC1090
    . "$ENVFILE"
    tok=$("$BIN" node token create --roles gateway --ttl 10m --output json)
    in_gw "$AGENT_BIN" join --coordinator "https://$NODE_ADDR" --token "$(printf '%s\n' "$tok" | json_field token)" \
      --ca-pin "$(printf '%s\n' "$tok" | json_field ca_fingerprint)" --roles gateway --address "$PUBLIC_ADDR" \
      --data-dir "$GW_DIR" --driver none --public-address "$PUBLIC_ADDR" --public-ports "$PUBLIC_PORTS" >/dev/null
  fi
  if pid_running "$GW_PIDFILE"; then
    echo "==> the gateway agent is already running (pid $(cat "$GW_PIDFILE"))"
  else
    echo "==> starting the gateway agent in $GW_NS (log: $GW_LOG)"
    # wireguard-go keeps its control sockets in /run/wireguard, shared by every namespace; the
    # gateway's get a private mount of .berqenas/gateway/wireguard there instead.
    mkdir -p "$GW_WG_RUN" /run/wireguard
    nohup ip netns exec "$GW_NS" unshare --mount --propagation private \
      sh -c 'mount --bind "$1" /run/wireguard && exec "$2" run --config "$3"' sh \
      "$GW_WG_RUN" "$AGENT_BIN" "$GW_DIR/agent.toml" >>"$GW_LOG" 2>&1 &
    echo $! > "$GW_PIDFILE"
  fi
fi

# The panel's first platform admin, made once; its password is shown only now (it is stored only
# as an Argon2id hash) and TOTP enrolment follows at the first sign-in.
PANEL_SIGNIN="user admin (its password was shown when it was made; reset: berqenas-coordinator user reset-password admin)"
if [ ! -f "$STATE/panel-admin" ]; then
  admin=$(. "$ENVFILE" && "$BIN" user create --name admin --role platform_admin --output json)
  pw=$(printf '%s\n' "$admin" | json_field initial_password)
  [ -n "$pw" ] || { echo "user create did not print an initial password" >&2; exit 1; }
  : > "$STATE/panel-admin"
  PANEL_SIGNIN="user admin, password $pw (shown only now; scan the TOTP code at the first sign-in)"
fi

cat <<TXT

Berqenas is running at http://$API_ADDR (data in $DATA).

The panel: http://$API_ADDR/ — sign in as $PANEL_SIGNIN.
Load the CLI settings and create your first tenant:

  . .berqenas/env
  export PATH="$ROOT/target/release:\$PATH"
  berqenas-coordinator tenant create --name acme --db-quota 5GB --vpn enabled --public-api true --wait
  berqenas-coordinator node list
  berqenas-coordinator tenant list
  berqenas-coordinator audit verify
  berqenas-node-agent plan --config .berqenas/agent/agent.toml   # what the agent would change; 0 = converged

The create prints the tenant's database user and password (once). Connect as the tenant:

  psql "postgres://tenant_acme_user:<password>@127.0.0.1:$PG_PORT/postgres" -c 'select * from events'

or through its pgBouncer pool (when pgBouncer is installed):

  psql "postgres://tenant_acme_user:<password>@127.0.0.1:$PGB_PORT/tenant_acme" -c 'select * from events'

TXT
if [ "$REAL_GATEWAY" = 1 ]; then
  cat <<TXT
The gateway runs in network namespace $GW_NS at public address $PUBLIC_ADDR (ports $PUBLIC_PORTS);
namespace $DEV_NS (203.0.113.10) is a host on its public side to run a device in. Add a device by
its WireGuard key (the private key stays in a 0600 file, never on a command line), bring it up
with plain wg-quick (wireguard-go: this host needs no WireGuard module), and ping its gateway:

  (umask 077; wg genkey > .berqenas/plc1.key)
  berqenas-coordinator device add --tenant acme --name plc1 --public-key "\$(wg pubkey < .berqenas/plc1.key)"
  berqenas-coordinator device config plc1 --tenant acme --format wg-quick \\
    | sed "s#^PrivateKey = .*#PostUp = wg set %i private-key \$PWD/.berqenas/plc1.key#" > .berqenas/plc1.conf
  ip netns exec $DEV_NS env WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go wg-quick up "\$PWD/.berqenas/plc1.conf"
  ip netns exec $DEV_NS ping -c 3 <the tenant subnet's .1, e.g. 198.18.1.1 (device show: its address)>

Expose a port of the device on the gateway's public address and reach it from this host:

  ip netns exec $DEV_NS python3 -m http.server 8080 >/dev/null 2>&1 &
  berqenas-coordinator expose add --tenant acme --device plc1 --port 8080     # prints the public port
  curl http://$PUBLIC_ADDR:15000/
  berqenas-coordinator expose list --tenant acme
  berqenas-coordinator device show plc1 --tenant acme      # last handshake, endpoint, rx/tx, last connect
  berqenas-coordinator audit list                          # device.connect, by the gateway node
  deploy/quickstart.sh wg                                  # wg show inside the gateway

Take the device down with: ip netns exec $DEV_NS wg-quick down "\$PWD/.berqenas/plc1.conf"
TXT
else
  cat <<TXT
Not root: the gateway role is only recorded under .berqenas/agent/gateway/ (a real gateway runs
in its own network namespace, which needs root: run this script as root for it).
TXT
fi
echo "Stop everything with: deploy/quickstart.sh stop"
