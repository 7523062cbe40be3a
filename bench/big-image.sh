#!/usr/bin/env bash
# Measures commit-to-fleet for a big image: an image of MB megabytes of random data built FROM
# scratch, pushed as CI would, then rolled out to N hosts in batches of BATCH, each host with
# its own Docker engine so that each really pulls. Each run pushes a new build; it is rolled
# out once without fetching ahead (`--concurrent-pulls 0`) and once with the default.
#
#   bench/big-image.sh [N] [BATCH] [MB]      # default 10 hosts, batches of 3 (4 batches), 700 MB
#
# Every engine, process and image it starts is stopped and removed at exit; the last line is
# one JSON object.
source "$(dirname "$0")/lib.sh"
n=${1:-10}
batch=${2:-3}
mb=${3:-700}
bench_setup
start_registry
start_engines "$n"
push_image 0
start_master "$(one_container_roles 'bench-*')"
start_minions "$n"
"$bin/brine-master" highstate --data-dir "$work/master" --output json >"$work/first.json" || {
  echo "the first highstate failed; see $work" >&2; trap - EXIT; exit 1; }

# rollout NAME VARIANT ARGS...: pushes a new build and rolls it out; records push and rollout
# seconds.
rollout() {
  local name=$1 start
  push_image "$2" "$mb"
  shift 2
  start=$(now)
  "$bin/brine-master" highstate --data-dir "$work/master" --batch "$batch" --timeout 30m \
    "$@" --output json >"$work/$name.json"
  echo "$push_s $(elapsed "$start" "$(now)")" >"$work/$name.times"
}

rollout before 1 --concurrent-pulls 0
rollout after 2

python3 - "$work" "$n" "$batch" "$mb" <<'PY'
import json, math, sys
work, n, batch, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {"hosts": n, "batch": batch, "batches": math.ceil(n / batch), "image_mb": mb}
for name in ["before", "after"]:
    push, roll = (float(x) for x in open(f"{work}/{name}.times").read().split())
    job = json.load(open(f"{work}/{name}.json"))
    statuses = sorted({h["status"] for h in job["hosts"]})
    pulls = sorted(h["timings"]["pull_ms"] for h in job["hosts"])
    print(f"{name:>6} ({'--concurrent-pulls 0' if name == 'before' else 'fetching ahead'}): "
          f"push {push:.1f} s, rollout {roll:.1f} s, commit-to-fleet {push + roll:.1f} s; "
          f"per-host pull in its turn: min {pulls[0]} ms, max {pulls[-1]} ms; statuses {statuses}")
    out[f"{name}_push_s"] = push
    out[f"{name}_rollout_s"] = roll
    out[f"{name}_commit_to_fleet_s"] = round(push + roll, 1)
print(json.dumps(out))
PY
