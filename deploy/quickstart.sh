#!/usr/bin/env bash
# Runs Berqenas locally: builds the coordinator and the node agent, initializes a single-node
# cluster on embedded storage in .berqenas/ (once), starts it in the background, joins a local
# node agent (roles gateway,db) with a one-time token, and writes .berqenas/env with
# BERQENAS_ENDPOINT and BERQENAS_API_KEY. Running it again is harmless.
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
RAFT_ADDR=127.0.0.1:7101
API_ADDR=127.0.0.1:7201
NODE_ADDR=127.0.0.1:7301

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
agent_running() { [ -f "$AGENT_PIDFILE" ] && kill -0 "$(cat "$AGENT_PIDFILE")" 2>/dev/null; }
json_field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }

case "${1:-start}" in
  stop)
    if agent_running; then
      kill "$(cat "$AGENT_PIDFILE")"
      echo "stopped the local node agent"
    fi
    rm -f "$AGENT_PIDFILE"
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

# A local node agent for both roles, joined once with a one-time token and the pinned CA.
if [ ! -f "$AGENT_DIR/agent.toml" ]; then
  echo "==> joining a local node agent (roles gateway,db)"
  # shellcheck disable=SC1090
  . "$ENVFILE"
  tok=$("$BIN" node token create --roles gateway,db --ttl 10m --output json)
  "$AGENT_BIN" join --coordinator "https://$NODE_ADDR" --token "$(printf '%s\n' "$tok" | json_field token)" \
    --ca-pin "$(printf '%s\n' "$tok" | json_field ca_fingerprint)" --roles gateway,db \
    --data-dir "$AGENT_DIR" --driver dir --driver-path "$AGENT_DIR/tenants" >/dev/null
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

The local node agent records each tenant it is given under .berqenas/agent/tenants/ (the
WireGuard, nftables and PostgreSQL drivers are not in this release yet).
Stop everything with: deploy/quickstart.sh stop
TXT
