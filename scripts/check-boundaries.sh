#!/usr/bin/env bash
# Checks the architecture invariant that a script can check (ARCHITECTURE.md): prost types (the
# generated `pb` module of brine-proto) appear only in the proto crate and in the daemons' gRPC
# edges: the master's service handlers and CLI client, the minion's link, enrolment and renewal.
# Everything else works with brine-common's domain types. Tests may use prost types freely.
set -euo pipefail
cd "$(dirname "$0")/.."

allowed=(
  master/src/server.rs
  master/src/fleet.rs
  'master/src/fleet/*'
  master/src/link.rs
  master/src/enrolment.rs
  'master/src/cli/*'
  minion/src/link.rs
  minion/src/enrol.rs
  minion/src/renewal.rs
)

is_allowed() {
  local file=$1 pattern
  for pattern in "${allowed[@]}"; do
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    [[ $file == $pattern ]] && return 0
  done
  return 1
}

status=0
while IFS= read -r file; do
  if ! is_allowed "$file"; then
    echo "$file uses prost types (brine_proto::pb); convert at the gRPC edge instead (ARCHITECTURE.md: prost types stop at proto/ and the gRPC handlers)" >&2
    status=1
  fi
done < <(grep -rlE '\bpb::|brine_proto::pb|brine_proto::\{[^}]*\bpb\b' --include='*.rs' master/src minion/src common | sort)
if [ "$status" -eq 0 ]; then
  echo "prost types stay at the gRPC edges"
fi
exit "$status"
