#!/usr/bin/env bash
# Builds static musl binaries of berqenas-coordinator, berqenas-node-agent and berqenas-device, and
# one OCI image per binary with buildah, FROM scratch (no base image is pulled):
#   localhost/berqenas-coordinator:TAG, localhost/berqenas-node-agent:TAG, localhost/berqenas-device:TAG
# Usage: deploy/images/build.sh [--profile release|image-test] [--tag TAG] [--no-cargo] [--no-images]
#   --profile  cargo profile (default release; deploy/test.sh uses image-test, a cheaper one)
#   --tag      image tag (default: the workspace version)
#   --no-cargo use the binaries already in target/x86_64-unknown-linux-musl/PROFILE
#   --no-images only the binaries
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
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --no-cargo) CARGO=0; shift ;;
    --no-images) IMAGES=0; shift ;;
    *) echo "usage: $0 [--profile P] [--tag TAG] [--no-cargo] [--no-images]" >&2; exit 2 ;;
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
    --workingdir /var/lib/berqenas \
    --volume /var/lib/berqenas \
    --env PATH=/usr/local/bin:/usr/bin:/usr/sbin \
    "$c"
  buildah commit --quiet --rm "$c" "localhost/$name:$TAG" >/dev/null
}

default_cmd() {
  case "$1" in
    berqenas-coordinator) echo '["serve", "--data-dir", "/var/lib/berqenas"]' ;;
    berqenas-node-agent) echo '["run", "--config", "/var/lib/berqenas/agent.toml"]' ;;
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
  # wireguard-go's control sockets.
  install -d -m 0755 "$mnt/run/wireguard"
}

# The device client brings its tunnel up with wireguard-go where the kernel has no WireGuard.
device_extras() {
  command -v wireguard-go >/dev/null || { echo "the device image copies wireguard-go: apt-get install wireguard-go" >&2; exit 1; }
  copy_with_libs "$1" "$(command -v wireguard-go)" /usr/bin/wireguard-go
  install -d -m 0755 "$1/run/wireguard"
}

build_image berqenas-coordinator "Berqenas coordinator (Raft control plane, REST API, admin CLI)"
build_image berqenas-node-agent "Berqenas node agent (gateway, db and realtime roles)" agent_extras
build_image berqenas-device "Berqenas device client" device_extras
for b in "${BINS[@]}"; do echo "localhost/$b:$TAG"; done
