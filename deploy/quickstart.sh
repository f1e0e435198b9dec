#!/usr/bin/env bash
# Runs Berqenas locally: builds the coordinator and the node agent, initializes a single-node
# cluster on embedded storage in .berqenas/ (once), starts it in the background, starts a local
# PostgreSQL for the db role (initdb into .berqenas/postgres, 127.0.0.1:5433) with pgBouncer in
# front of it (127.0.0.1:6433), joins a local node
# agent (roles gateway,db) with a one-time token, and writes .berqenas/env with BERQENAS_ENDPOINT
# and BERQENAS_API_KEY. Running it again is harmless.
#   deploy/quickstart.sh          start (or confirm it is running)
#   deploy/quickstart.sh stop     stop what it started
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
RAFT_ADDR=127.0.0.1:7101
API_ADDR=127.0.0.1:7201
NODE_ADDR=127.0.0.1:7301

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
agent_running() { [ -f "$AGENT_PIDFILE" ] && kill -0 "$(cat "$AGENT_PIDFILE")" 2>/dev/null; }
# PostgreSQL refuses to run as root; as root the quickstart runs it as the postgres user.
as_pg() { if [ "$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups "$@"; else "$@"; fi; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
pgb_bin() { command -v pgbouncer 2>/dev/null || ls /usr/sbin/pgbouncer 2>/dev/null || true; }
pgb_running() { [ -f "$PGB_DIR/pgbouncer.pid" ] && kill -0 "$(cat "$PGB_DIR/pgbouncer.pid")" 2>/dev/null; }
json_field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }

case "${1:-start}" in
  stop)
    if agent_running; then
      kill "$(cat "$AGENT_PIDFILE")"
      echo "stopped the local node agent"
    fi
    rm -f "$AGENT_PIDFILE"
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
  start) ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
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
  nohup "$BIN" serve --data-dir "$DATA" >>"$LOG" 2>&1 &
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

# A local node agent for both roles, joined once with a one-time token and the pinned CA: the
# PostgreSQL driver for the db role; gateway assignments are recorded in a directory until the
# WireGuard/nftables driver exists.
if [ ! -f "$AGENT_DIR/agent.toml" ]; then
  echo "==> joining a local node agent (roles gateway,db)"
  # shellcheck disable=SC1090
  . "$ENVFILE"
  tok=$("$BIN" node token create --roles gateway,db --ttl 10m --output json)
  "$AGENT_BIN" join --coordinator "https://$NODE_ADDR" --token "$(printf '%s\n' "$tok" | json_field token)" \
    --ca-pin "$(printf '%s\n' "$tok" | json_field ca_fingerprint)" --roles gateway,db \
    --data-dir "$AGENT_DIR" --driver postgres --driver-url "$PG_URL" --driver-path "$AGENT_DIR/gateway" \
    "${PGB_ARGS[@]}" >/dev/null
fi
if agent_running; then
  echo "==> the local node agent is already running (pid $(cat "$AGENT_PIDFILE"))"
else
  echo "==> starting the node agent (log: $AGENT_LOG)"
  nohup "$AGENT_BIN" run --config "$AGENT_DIR/agent.toml" >>"$AGENT_LOG" 2>&1 &
  echo $! > "$AGENT_PIDFILE"
fi

cat <<TXT

Berqenas is running at http://$API_ADDR (data in $DATA).
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

Gateway assignments are recorded under .berqenas/agent/gateway/ (the WireGuard and nftables
driver is not in this release yet).
Stop everything with: deploy/quickstart.sh stop
TXT
