#!/usr/bin/env bash
# Builds static musl binaries of berqenas-coordinator, berqenas-node-agent and berqenas-device, and
# one OCI image per binary with buildah, FROM scratch (no base image is pulled):
#   localhost/berqenas-coordinator:TAG, localhost/berqenas-node-agent:TAG, localhost/berqenas-device:TAG
# Usage: deploy/images/build.sh [--profile release|image-test] [--tag TAG] [--no-cargo] [--no-images] [--postgres]
#   --profile  cargo profile (default release; deploy/test.sh uses image-test, a cheaper one)
#   --tag      image tag (default: the workspace version)
#   --no-cargo use the binaries already in target/x86_64-unknown-linux-musl/PROFILE
#   --no-images only the binaries
#   --postgres also localhost/berqenas-postgres:TAG, PostgreSQL FROM scratch out of this host's
#              Debian postgresql package (for deploy/compose.yaml where no image can be pulled)
# Needs: rustup target x86_64-unknown-linux-musl, musl-tools (musl-gcc compiles ring's C code),
# buildah; for the node agent's image also the host tools it copies in (nftables, wireguard-go,
# postgresql-client: see ARCHITECTURE.md, "Container images"). Images need root (or buildah unshare).
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TRIPLE=x86_64-unknown-linux-musl
PROFILE=release
TAG=
CARGO=1
IMAGES=1
POSTGRES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --no-cargo) CARGO=0; shift ;;
    --no-images) IMAGES=0; shift ;;
    --postgres) POSTGRES=1; shift ;;
    *) echo "usage: $0 [--profile P] [--tag TAG] [--no-cargo] [--no-images] [--postgres]" >&2; exit 2 ;;
  esac
done
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || { echo "no version in $ROOT/Cargo.toml [workspace.package]" >&2; exit 1; }
TAG=${TAG:-$VERSION}
# Where the image says its source is (OCI annotation org.opencontainers.image.source).
SOURCE=${BERQENAS_IMAGE_SOURCE:-$(git -C "$ROOT" config --get remote.origin.url 2>/dev/null || echo "https://github.com/berqenas/berqenas")}
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
# cargo's profile "dev" builds into target/TRIPLE/debug.
PROFILE_DIR=$PROFILE
[ "$PROFILE" = dev ] && PROFILE_DIR=debug
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$TRIPLE/$PROFILE_DIR"
BINS=(berqenas-coordinator berqenas-node-agent berqenas-device)
# The images' user: a numeric id that no Debian package uses, never root (the node agent's
# gateway role is the exception: its manifests run it as 0 with only CAP_NET_ADMIN).
UID_GID=10001

log() { printf '==> %s\n' "$*"; }

if [ "$CARGO" = 1 ]; then
  command -v musl-gcc >/dev/null || { echo "musl-gcc is missing: apt-get install musl-tools" >&2; exit 1; }
  # ring's C and assembly are the only C code in these binaries (zstd-sys in the agent too);
  # musl-gcc compiles them against musl's headers. Rust's self-contained musl CRT links them static.
  log "cargo build --profile $PROFILE --target $TRIPLE (${BINS[*]})"
  start=$(date +%s)
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --manifest-path "$ROOT/Cargo.toml" \
    --profile "$PROFILE" --target "$TRIPLE" -p berqenas-coordinator -p berqenas-node-agent -p berqenas-device --bins
  log "built in $(($(date +%s) - start)) s"
fi
for b in "${BINS[@]}"; do
  f="$BIN_DIR/$b"
  [ -x "$f" ] || { echo "$f is missing: run $0 --profile $PROFILE without --no-cargo" >&2; exit 1; }
  # Static (Rust's musl target links static-pie): no program interpreter, no shared library needed.
  if readelf -l "$f" | grep -q INTERP || readelf -d "$f" | grep -q NEEDED; then
    echo "$f is not static" >&2
    exit 1
  fi
done
[ "$IMAGES" = 1 ] || exit 0

command -v buildah >/dev/null || { echo "buildah is missing: apt-get install buildah" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The few files every image carries: a passwd/group naming the numeric user (PostgreSQL's tools
# and the logs want a name for the uid), and the state directory it owns.
printf 'root:x:0:0:root:/:/nonexistent\nberqenas:x:%s:%s:Berqenas:/var/lib/berqenas:/nonexistent\n' "$UID_GID" "$UID_GID" >"$WORK/passwd"
printf 'root:x:0:\nberqenas:x:%s:\n' "$UID_GID" >"$WORK/group"

# Copies a dynamically linked host program and its shared-library closure (and the loader) into
# a rootfs at the same paths. Only the node agent's image uses this: nft, wireguard-go, pg_dump
# and psql are not available as static binaries on Debian.
copy_with_libs() {
  local rootfs=$1 program=$2 dest=$3 lib
  install -D -m 0755 "$program" "$rootfs$dest"
  for lib in $(ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    # With the source's mode: the loader must stay executable.
    [ -e "$rootfs$lib" ] || install -D -m "$(stat -L -c %a "$lib")" "$(readlink -f "$lib")" "$rootfs$lib"
  done
}

# build_image NAME DESCRIPTION [extra setup function]
build_image() {
  local name=$1 description=$2 extra=${3:-} c mnt
  log "buildah: localhost/$name:$TAG (FROM scratch)"
  c=$(buildah from --quiet scratch)
  mnt=$(buildah mount "$c")
  # Stripped in the image (the release profile keeps line tables in target/ for backtraces).
  install -D -m 0755 -s "$BIN_DIR/$name" "$mnt/usr/local/bin/$name"
  install -D -m 0644 "$WORK/passwd" "$mnt/etc/passwd"
  install -D -m 0644 "$WORK/group" "$mnt/etc/group"
  install -d -m 0700 -o "$UID_GID" -g "$UID_GID" "$mnt/var/lib/berqenas"
  install -d -m 1777 "$mnt/tmp"
  if [ -n "$extra" ]; then "$extra" "$mnt"; fi
  buildah umount "$c" >/dev/null
  local labels=(
    "org.opencontainers.image.title=$name"
    "org.opencontainers.image.description=$description"
    "org.opencontainers.image.version=$VERSION"
    "org.opencontainers.image.revision=$REVISION"
    "org.opencontainers.image.source=$SOURCE"
    "org.opencontainers.image.licenses=Apache-2.0"
    "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  )
  local args=()
  for l in "${labels[@]}"; do args+=(--label "$l" --annotation "$l"); done
  buildah config "${args[@]}" \
    --user "$UID_GID:$UID_GID" \
    --entrypoint "[\"/usr/local/bin/$name\"]" \
    --cmd "$(default_cmd "$name")" \
    --workingdir "$(workdir "$name")" \
    --volume "$(state_dir "$name")" \
    --env PATH=/usr/local/bin:/usr/bin:/usr/sbin \
    "$c"
  buildah commit --quiet --rm "$c" "localhost/$name:$TAG" >/dev/null
}

# The image's state volume. The node agent runs as root (its manifests' way: nftables, WireGuard,
# PostgreSQL's files) with few capabilities and no CAP_DAC_OVERRIDE, so it cannot write in the
# image user's 0700 /var/lib/berqenas: its state is in /var/lib/berqenas-agent (root's, 0700),
# which a new named volume (compose) takes over with its owner and mode.
state_dir() {
  case "$1" in
    berqenas-node-agent) echo /var/lib/berqenas-agent ;;
    *) echo /var/lib/berqenas ;;
  esac
}

# The agent's image user (10001, `--driver dir` without root) cannot enter root's state dir.
workdir() {
  case "$1" in
    berqenas-node-agent) echo / ;;
    *) state_dir "$1" ;;
  esac
}

default_cmd() {
  case "$1" in
    berqenas-coordinator) echo '["serve", "--data-dir", "/var/lib/berqenas"]' ;;
    berqenas-node-agent) echo '["run", "--config", "/var/lib/berqenas-agent/agent.toml"]' ;;
    berqenas-device) echo '["--state-dir", "/var/lib/berqenas", "run"]' ;;
  esac
}

# The node agent's roles run host programs: the gateway nft and wireguard-go, the db role's
# backups pg_dump and psql (and nft for pgBouncer's per-source limit). S3 over HTTPS needs the
# public CA bundle. Copied from this host's Debian packages with their libraries.
agent_extras() {
  local mnt=$1 pg missing=()
  pg=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x /usr/sbin/nft ] || missing+=(nftables)
  command -v wireguard-go >/dev/null || missing+=(wireguard-go)
  [ -n "$pg" ] && [ -x "$pg/pg_dump" ] && [ -x "$pg/psql" ] || missing+=(postgresql-client)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "the node agent's image copies host tools; missing: ${missing[*]} (apt-get install them)" >&2
    exit 1
  fi
  copy_with_libs "$mnt" /usr/sbin/nft /usr/sbin/nft
  copy_with_libs "$mnt" "$(command -v wireguard-go)" /usr/bin/wireguard-go
  copy_with_libs "$mnt" "$pg/pg_dump" /usr/bin/pg_dump
  copy_with_libs "$mnt" "$pg/psql" /usr/bin/psql
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$mnt/etc/ssl/certs/ca-certificates.crt"
  wireguard_run_dir "$mnt"
  install -d -m 0700 "$mnt/var/lib/berqenas-agent"
}

# wireguard-go's control sockets: /var/run/wireguard, which is /run/wireguard as on Debian (the
# manifests mount a writable directory there; /var/run itself would be read-only).
wireguard_run_dir() {
  install -d -m 0755 "$1/run/wireguard" "$1/var"
  ln -s ../run "$1/var/run"
}

# The device client brings its tunnel up with wireguard-go where the kernel has no WireGuard.
device_extras() {
  command -v wireguard-go >/dev/null || { echo "the device image copies wireguard-go: apt-get install wireguard-go" >&2; exit 1; }
  copy_with_libs "$1" "$(command -v wireguard-go)" /usr/bin/wireguard-go
  wireguard_run_dir "$1"
}

# PostgreSQL for deploy/compose.yaml, FROM scratch out of this host's Debian PostgreSQL (the
# newest major installed: the agent image's pg_dump is the same one), since no base image can be
# pulled here: the server, initdb, psql and pg_isready with their libraries, the server's modules
# (pgoutput for the realtime role; not the LLVM JIT), its share/ files and the zone database.
# A first start initializes the empty data volume (postgres-entrypoint, run by dash, also
# /bin/sh for initdb: the one shell here, as upstream's image has one; never in the Berqenas
# images) with the superuser
# password from POSTGRES_PASSWORD_FILE, SCRAM for every TCP login and peer on the socket.
# It runs as uid 999 (postgres), listens on every address of its container and on a socket in
# /tmp (the one writable place of a read-only container; PGHOST points psql there).
POSTGRES_UID=999
postgres_image() {
  local bin lib share major c mnt f l args=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] && [ -x "$bin/postgres" ] && [ -x "$bin/initdb" ] ||
    { echo "--postgres copies this host's PostgreSQL server: apt-get install postgresql" >&2; exit 1; }
  command -v dash >/dev/null || { echo "--postgres needs dash for the entrypoint: apt-get install dash" >&2; exit 1; }
  major=$(basename "$(dirname "$bin")")
  lib=/usr/lib/postgresql/$major/lib
  share=/usr/share/postgresql/$major
  log "buildah: localhost/berqenas-postgres:$TAG (FROM scratch, PostgreSQL $major from this host)"
  c=$(buildah from --quiet scratch)
  mnt=$(buildah mount "$c")
  for f in postgres initdb psql pg_isready; do copy_with_libs "$mnt" "$bin/$f" "$bin/$f"; done
  for f in "$lib"/*.so; do
    case "$(basename "$f")" in llvmjit*) continue ;; esac
    copy_with_libs "$mnt" "$f" "$f"
  done
  mkdir -p "$mnt$share" "$mnt/usr/share"
  cp -a "$share/." "$mnt$share/"
  cp -a /usr/share/zoneinfo "$mnt/usr/share/zoneinfo"
  # initdb starts its server through popen(3), which runs /bin/sh.
  copy_with_libs "$mnt" "$(command -v dash)" /bin/dash
  ln -s dash "$mnt/bin/sh"
  # The entrypoint: $bin is this build's; everything escaped is the container's at run time.
  cat >"$WORK/postgres-entrypoint" <<ENTRYPOINT
#!/bin/dash
# Initializes an empty data directory once, then runs PostgreSQL with the given arguments.
set -eu
PGDATA=\${PGDATA:-/var/lib/postgresql/data}
if [ ! -s "\$PGDATA/PG_VERSION" ]; then
  if [ -z "\${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -s "\$POSTGRES_PASSWORD_FILE" ]; then
    echo "postgres-entrypoint: the first start needs POSTGRES_PASSWORD_FILE (the superuser's password)" >&2
    exit 1
  fi
  $bin/initdb --pgdata="\$PGDATA" --username=postgres --pwfile="\$POSTGRES_PASSWORD_FILE" \\
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C
  printf '%s\n' "host all all all scram-sha-256" >>"\$PGDATA/pg_hba.conf"
  printf '%s\n' "listen_addresses = '*'" "unix_socket_directories = '/tmp'" >>"\$PGDATA/postgresql.conf"
fi
exec $bin/postgres -D "\$PGDATA" "\$@"
ENTRYPOINT
  install -D -m 0755 "$WORK/postgres-entrypoint" "$mnt/usr/local/bin/postgres-entrypoint"
  printf 'root:x:0:0:root:/:/nonexistent\npostgres:x:%s:%s:PostgreSQL:/var/lib/postgresql:/nonexistent\n' \
    "$POSTGRES_UID" "$POSTGRES_UID" >"$WORK/postgres-passwd"
  printf 'root:x:0:\npostgres:x:%s:\n' "$POSTGRES_UID" >"$WORK/postgres-group"
  install -D -m 0644 "$WORK/postgres-passwd" "$mnt/etc/passwd"
  install -D -m 0644 "$WORK/postgres-group" "$mnt/etc/group"
  install -d -m 0755 -o "$POSTGRES_UID" -g "$POSTGRES_UID" "$mnt/var/lib/postgresql"
  install -d -m 0700 -o "$POSTGRES_UID" -g "$POSTGRES_UID" "$mnt/var/lib/postgresql/data"
  install -d -m 1777 "$mnt/tmp"
  buildah umount "$c" >/dev/null
  for l in "org.opencontainers.image.title=berqenas-postgres" \
    "org.opencontainers.image.description=PostgreSQL $major from Debian's packages, for deploy/compose.yaml" \
    "org.opencontainers.image.version=$major" "org.opencontainers.image.revision=$REVISION" \
    "org.opencontainers.image.source=$SOURCE" "org.opencontainers.image.licenses=PostgreSQL" \
    "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    args+=(--label "$l" --annotation "$l")
  done
  buildah config "${args[@]}" \
    --user "$POSTGRES_UID:$POSTGRES_UID" \
    --entrypoint '["/usr/local/bin/postgres-entrypoint"]' \
    --cmd '[]' \
    --workingdir /var/lib/postgresql \
    --volume /var/lib/postgresql/data \
    --env "PATH=$bin:/usr/bin" --env PGDATA=/var/lib/postgresql/data --env PGHOST=/tmp --env TZ=UTC \
    --stop-signal SIGINT \
    --port 5432 \
    "$c"
  buildah commit --quiet --rm "$c" "localhost/berqenas-postgres:$TAG" >/dev/null
}

build_image berqenas-coordinator "Berqenas coordinator (Raft control plane, REST API, admin CLI)"
build_image berqenas-node-agent "Berqenas node agent (gateway, db and realtime roles)" agent_extras
build_image berqenas-device "Berqenas device client" device_extras
if [ "$POSTGRES" = 1 ]; then postgres_image; fi
for b in "${BINS[@]}"; do echo "localhost/$b:$TAG"; done
if [ "$POSTGRES" = 1 ]; then echo "localhost/berqenas-postgres:$TAG"; fi
