#!/usr/bin/env bash
# Builds the Debian packages of berqenas-coordinator, berqenas-node-agent and berqenas-device
# with cargo-deb into target/debian/ (or --output DIR): each binary, its man pages and shell
# completions (made by the binary itself: `man --dir`, `completions SHELL`), its hardened systemd
# unit (deploy/debian/units/), its system user (deploy/debian/sysusers/) and maintainer scripts
# (deploy/debian/scripts/), and the example configuration in /etc/berqenas/.
#   deploy/package.sh                         release build, then the three packages
#   deploy/package.sh --profile dev --no-build --fast --output DIR
#                                             package the debug binaries already built (the
#                                             tests: packaging/tests/packages.rs), light compression
# Needs cargo-deb (`cargo install --locked cargo-deb`); deploy/test.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
output=target/debian
deb_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --fast) deb_args+=(--fast); shift ;;
    --output) output=$2; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--no-build] [--fast] [--output DIR]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
target_dir=${CARGO_TARGET_DIR:-target}
bins=(berqenas-coordinator berqenas-node-agent berqenas-device)

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is missing: cargo install --locked cargo-deb" >&2
  exit 1
fi
if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" -p berqenas-coordinator -p berqenas-node-agent -p berqenas-device --bins
fi

mkdir -p "$output"
for bin in "${bins[@]}"; do
  exe="$target_dir/$profile_dir/$bin"
  [ -x "$exe" ] || { echo "$exe is missing: build it first (or drop --no-build)" >&2; exit 1; }
  # The man pages and completions as this very binary describes itself; cargo-deb picks them
  # up from target/<profile>/manual/ (its asset paths say target/release/manual/).
  manual="$target_dir/$profile_dir/manual/$bin"
  rm -rf "$manual"
  mkdir -p "$manual/man" "$manual/completions"
  "$exe" man --dir "$manual/man" >/dev/null
  gzip -9n "$manual"/man/*.1
  "$exe" completions bash >"$manual/completions/$bin.bash"
  "$exe" completions zsh >"$manual/completions/_$bin"
  "$exe" completions fish >"$manual/completions/$bin.fish"
  "$exe" completions powershell >"$manual/completions/$bin.ps1"
  cargo deb --locked --no-build --profile "$profile" --strip --package "$bin" --output "$output" "${deb_args[@]}"
done
