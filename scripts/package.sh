#!/usr/bin/env bash
# Builds the Debian packages of brine's two host roles with cargo-deb, brine-master and
# brine-minion (which also holds brine-proxy, the host's proxy for published ports), and prints
# the path of each .deb on a line of its own (everything else goes to standard error).
#   scripts/package.sh           # a release build, then its packages
#   scripts/package.sh --debug   # packages the debug binaries already built (`cargo build
#                                # --bins`): the tests' packages, without a release build
# Honours CARGO_TARGET_DIR; the packages land in its debian/ directory. Installs nothing: see
# README.md, "Debian packages". The packages' contents are in master/Cargo.toml and
# minion/Cargo.toml ([package.metadata.deb]) and deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "") debug=false ;;
  --debug) debug=true ;;
  *) echo "usage: scripts/package.sh [--debug]" >&2; exit 2 ;;
esac

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is missing: install it with \`cargo install cargo-deb --locked\` (scripts/test-deps.sh does)" >&2
  exit 1
fi

# One cargo build for both packages and the three binaries in them (they share most of their
# dependencies), then cargo-deb packages what it built without building again.
deb_args=(--no-build)
if $debug; then
  # cargo-deb warns that the dev profile is not for releases: these packages are for tests.
  # --fast: lighter compression of the large debug binaries.
  deb_args+=(--profile dev --fast)
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -e 's/.*"target_directory":"\([^"]*\)".*/\1/')
  for binary in brine-master brine-minion brine-proxy; do
    if [ ! -x "$target_dir/debug/$binary" ]; then
      echo "$target_dir/debug/$binary is missing: run \`cargo build --bins\` first" >&2
      exit 1
    fi
  done
else
  cargo build --release --locked -p brine-master -p brine-minion -p brine-proxy >&2
fi

for package in brine-master brine-minion; do
  # cargo-deb prints the path of the package it wrote on standard output.
  cargo deb "${deb_args[@]}" -p "$package" | grep '\.deb$'
done
