#!/usr/bin/env bash
# Records the gRPC API as released: compiles proto/proto/brine/v1/*.proto into the descriptor set
# proto/released/brine.v1.binpb (commit it). Run it when a version of the API is released; from
# then on, the test `the_api_is_wire_compatible_with_the_released_one` (proto/tests/api_rules.rs)
# fails on any change to the proto files that breaks wire compatibility with that version.
set -euo pipefail
cd "$(dirname "$0")/.."

BRINE_WRITE_RELEASED_API=1 cargo test -p brine-proto --test api_rules -- \
  --exact write_the_released_api_when_asked --nocapture
