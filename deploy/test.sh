#!/usr/bin/env bash
# Installs what the tests need, then runs every check: rustfmt, clippy with -D warnings, and the
# whole test suite under cargo-nextest, then schemathesis against the REST API. Usage: deploy/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# System packages the tests use: a C toolchain for ring, iproute2 for the network-namespace lab,
# PostgreSQL and pgBouncer for the lab's database node, nftables for the gateway lab and the agent's
# per-source limit on pgBouncer, python3 for raw-socket attack clients, wireguard-go and
# wireguard-tools for the gateway lab (this machine has no WireGuard module; devices use plain
# `wg`), ping for its tunnels, iptables for `deploy/bench.sh gateway` (the seed's way, side by side),
# iperf3 for `deploy/bench.sh gateway-throughput`. Installed only when missing, so a prepared
# machine runs no apt at all. The lab needs root.
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v wireguard-go >/dev/null 2>&1 || missing+=(wireguard-go)
command -v wg >/dev/null 2>&1 || missing+=(wireguard-tools)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables) # bench.sh gateway: the seed's way
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3) # bench.sh gateway-throughput
command -v zstd >/dev/null 2>&1 || missing+=(zstd) # bench.sh backup: the plain pg_dump | zstd pipeline
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv) # schemathesis's venv
command -v curl >/dev/null 2>&1 || missing+=(curl)
# promtool (Debian's prometheus package) checks deploy/prometheus/ and parses /metrics in
# fleet::metrics.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The device client's cross builds and their runs (tests/tests/fleet/device_cross.rs): Windows
# with mingw-w64 under Wine, static aarch64 and armv7 Linux under qemu-user.
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || missing+=(gcc-arm-linux-gnueabihf)
command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v qemu-arm-static >/dev/null 2>&1 || missing+=(qemu-user-static)
# Container images (deploy/images/build.sh, tests/tests/containers): static musl binaries (musl-gcc
# compiles ring's C), buildah to build FROM scratch, podman and runc to run them.
command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
# The PostgreSQL image for deploy/compose.yaml (build.sh --postgres): its entrypoint is a dash script.
command -v dash >/dev/null 2>&1 || missing+=(dash)
# The Debian packages (tests/tests/fleet/packages.rs): dpkg-deb and dpkg --root, lintian on the
# .debs, systemd-analyze verify and systemd-sysusers (postinst) for the units and users, man and
# groff to render the man pages, bash to load the completions.
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v systemd-sysusers >/dev/null 2>&1 || missing+=(systemd)
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v groff >/dev/null 2>&1 || missing+=(groff-base)
# The units under a real systemd (tests/tests/fleet/units.rs): systemd-nspawn boots this host's
# systemd in a container on a throwaway overlay; Debian's stock users from base-passwd.
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
[ -f /usr/share/base-passwd/passwd.master ] || missing+=(base-passwd)
# The panel's browser tests (tests/tests/fleet/panel.rs) and `deploy/bench.sh panel`: headless
# Chromium driven through chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  log "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi
for t in x86_64-pc-windows-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$t"; then
    log "rustup target add $t"
    rustup target add "$t"
  fi
done
if ! cargo deny --version >/dev/null 2>&1; then
  log "installing cargo-deny"
  cargo install cargo-deny --locked
fi
# The S3-compatible server the backup tests start (tests/src/s3.rs): s3s-fs stores objects on
# disk. 0.14 is the newest that builds with this toolchain (0.17 wants rustc 1.96).
if ! command -v s3s-fs >/dev/null 2>&1; then
  log "installing s3s-fs"
  cargo install s3s-fs --version 0.14.1 --locked --features binary
fi
# The Kubernetes manifests' schema validator (tests/tests/containers/manifests.rs), in its own
# venv like schemathesis's; the schemas ship in the package, so the test needs no network.
if [ ! -x target/k8s-validate-venv/bin/kubernetes-validate ]; then
  log "installing kubernetes-validate (target/k8s-validate-venv)"
  python3 -m venv target/k8s-validate-venv
  target/k8s-validate-venv/bin/pip install --quiet 'kubernetes-validate>=1.32,<2'
fi
# deploy/compose.yaml is run by tests/tests/containers/compose.rs with podman-compose, in its
# own venv like the others (1.x: `run -T`, `--profile`, file secrets as bind mounts).
if [ ! -x target/compose-venv/bin/podman-compose ]; then
  log "installing podman-compose (target/compose-venv)"
  python3 -m venv target/compose-venv
  target/compose-venv/bin/pip install --quiet 'podman-compose>=1.5,<2'
fi
# deploy/package.sh builds the Debian packages with cargo-deb. Pinned: it packages the debug
# build in the tests (`--profile dev`), which newer releases say they may refuse.
if ! cargo deb --version >/dev/null 2>&1; then
  log "installing cargo-deb"
  cargo install cargo-deb --version 3.8.0 --locked
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deploy/test.sh: the end-to-end lab creates network namespaces and must run as root" >&2
  exit 1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The device client's Windows code (cfg(windows)) is linted for its own target.
cargo clippy -p berqenas-device --all-targets --locked --target x86_64-pc-windows-gnu -- -D warnings

log "cargo deny check bans licenses sources (no advisory fetch)"
cargo fetch --locked -q
cargo deny --offline check --hide-inclusion-graph bans licenses sources

# The shipped Prometheus configuration: alert rules, and the scrape config with stand-ins for the
# key and CA files an operator puts beside it (promtool insists they exist).
log "promtool check rules / check config (deploy/prometheus)"
promtool check rules deploy/prometheus/rules.yml
prom_dir=$(mktemp -d)
cp deploy/prometheus/prometheus.yml deploy/prometheus/rules.yml "$prom_dir/"
touch "$prom_dir/berqenas-metrics.key" "$prom_dir/berqenas-ca.pem"
promtool check config "$prom_dir/prometheus.yml"
rm -rf "$prom_dir"

log "cargo build --bins (the end-to-end tests run the real binaries)"
cargo build --workspace --bins --locked

# The device client as shipped: static, stripped, for Windows, aarch64 and armv7 boards
# (< 10 MB); fleet::device_cross runs them under Wine and qemu.
# fleet::device_events measures the host build's RSS in `run`.
log "cargo build --profile device -p berqenas-device (host, Windows, aarch64, armv7)"
cargo build --profile device -p berqenas-device --locked
for t in x86_64-pc-windows-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  cargo build --profile device -p berqenas-device --locked --target "$t"
done
ls -l target/device/berqenas-device target/x86_64-pc-windows-gnu/device/berqenas-device.exe \
  target/aarch64-unknown-linux-musl/device/berqenas-device target/armv7-unknown-linux-gnueabihf/device/berqenas-device

# Static musl binaries for the container images, in the cheap image-test profile (a cold build
# for a new target); tests/tests/containers builds the images from them with buildah and runs them.
log "deploy/images/build.sh --profile image-test --no-images (static musl binaries)"
deploy/images/build.sh --profile image-test --no-images

# The previous release's coordinator and agent for the rolling-upgrade test (fleet::upgrade):
# the commit in deploy/previous-release, built with its own target dir seeded from target/debug.
log "deploy/previous-release.sh (build $(cat deploy/previous-release))"
deploy/previous-release.sh

log "cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast

# The OpenAPI document is the contract: schemathesis (every check, every phase including the
# stateful one, a few minutes) against a single coordinator on loopback must find nothing.
log "schemathesis against /api/v1/openapi.json"
deploy/schemathesis.sh target/debug/berqenas-coordinator

# SQL Server cannot run on our build machines; its end-to-end test needs one named by
# BERQENAS_TEST_MSSQL_URL (the driver's statement generation is unit tested above either way).
if [ -n "${BERQENAS_TEST_MSSQL_URL:-}" ]; then
  log "cargo nextest run: SQL Server end-to-end test against BERQENAS_TEST_MSSQL_URL"
  cargo nextest run --workspace --locked --run-ignored ignored-only -E 'test(mssql)'
else
  log "NOT RUN: the SQL Server end-to-end test (fleet::mssql) — set BERQENAS_TEST_MSSQL_URL to run it"
fi
