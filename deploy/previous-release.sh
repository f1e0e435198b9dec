#!/usr/bin/env bash
# Builds the previous release's `berqenas-coordinator` and `berqenas-node-agent` (the commit named
# in deploy/previous-release) into target/previous-release/, for the rolling-upgrade test
# (coordinator/tests/integration/upgrade.rs). The commit's tree is exported with `git archive`
# into target/previous-release/src and built with its own target directory, seeded once from
# target/debug so the dependencies compiled from the same Cargo.lock are reused.
# Usage: deploy/previous-release.sh   (deploy/test.sh runs it before nextest)
set -euo pipefail
cd "$(dirname "$0")/.."

commit="$(tr -d '[:space:]' <deploy/previous-release)"
out=target/previous-release
if [ -x "$out/berqenas-coordinator" ] && [ -x "$out/berqenas-node-agent" ] && [ "$(cat "$out/commit" 2>/dev/null)" = "$commit" ]; then
  echo "previous release $commit: already built in $out"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "the previous release $commit (deploy/previous-release) is not in this clone; fetch the full history (git fetch --unshallow)" >&2
  exit 1
fi

started=$SECONDS
src="$out/src"
target="$PWD/$out/target"
rm -rf "$src" "$out/berqenas-coordinator" "$out/berqenas-node-agent" "$out/commit"
mkdir -p "$src" "$target/debug"
git archive "$commit" | tar -x -C "$src"
# git archive stamps every file with the commit's time, older than the seeded fingerprints: without
# this, cargo would take the seeded build-script output of this tree's own crates (the current
# proto's generated code) as fresh and compile the old sources against it.
find "$src" -type f -exec touch {} +
# Seeded by hard links, not copies (a copy doubled the disk the suite needs by 5 GB, and CI ran out
# of it): only the dependencies' entries are linked, and cargo never writes a fresh unit's files.
# This tree's own crates (berqenas-*) are left out, so cargo writes them anew beside, never through
# a link into target/debug.
if [ -d target/debug/deps ] && [ ! -d "$target/debug/deps" ]; then
  for d in deps build .fingerprint; do
    mkdir -p "$target/debug/$d"
    find "target/debug/$d" -mindepth 1 -maxdepth 1 ! -name '*berqenas*' -exec cp -al -t "$target/debug/$d/" {} +
  done
fi
copied=$((SECONDS - started))
# Not incremental: this tree is built once and thrown away, and incremental state is gigabytes.
CARGO_INCREMENTAL=0 CARGO_TARGET_DIR="$target" cargo build --manifest-path "$src/Cargo.toml" --locked \
  -p berqenas-coordinator -p berqenas-node-agent --bins
cp "$target/debug/berqenas-coordinator" "$target/debug/berqenas-node-agent" "$out/"
echo "$commit" >"$out/commit"
rm -rf "$src" "$target" # the binaries are all the test needs
echo "previous release $commit built in $((SECONDS - started)) s (seeding the target directory: $copied s)"
