#!/usr/bin/env bash
# Runs every test: unit, mutual-TLS integration and end-to-end against the real Docker engine
# and a private registry on loopback. Installs or starts what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
# The end-to-end tests run the real brine-master and brine-minion binaries.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
