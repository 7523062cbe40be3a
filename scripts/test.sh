#!/usr/bin/env bash
# Runs every test: unit, mutual-TLS integration and end-to-end against the real Docker engine
# and a private registry on loopback. Installs or starts what the tests need first.
#
#   scripts/test.sh            everything (what CI runs, with --profile ci)
#   scripts/test.sh --quick    unit and in-process tests only: no Docker, no registry, no root
#
# Other arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests that need Docker (and a registry, network namespaces or systemd): the nextest
# group `docker` in .config/nextest.toml names the same binaries.
docker_tests='binary(/^e2e_/) | binary(faults) | binary(registry_auth) | binary(docker_runtime)'

quick=false
args=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    *) args+=("$arg") ;;
  esac
done

scripts/check-boundaries.sh
if $quick; then
  echo "quick run: unit and in-process tests only; the Docker end-to-end tests are left out" >&2
  if ! command -v protoc >/dev/null 2>&1; then
    echo "protoc is missing: apt-get install protobuf-compiler (the etcd client crate compiles etcd's .proto files)" >&2
    exit 1
  fi
  cargo build --workspace --bins
  cargo nextest run --workspace --no-fail-fast -E "not ($docker_tests)" ${args[@]+"${args[@]}"}
  exit
fi
scripts/test-deps.sh
# The end-to-end tests run the real brine-master and brine-minion binaries.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast ${args[@]+"${args[@]}"}
