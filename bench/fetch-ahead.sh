#!/usr/bin/env bash
# The rollout of a big image when every host pulls on its own network and disk: N simulated
# hosts (brine-fleet-sim: real minions and links, in-memory engines) whose pull of a new image
# takes PULL, rolled out in batches of BATCH, once without fetching ahead
# (`--concurrent-pulls 0`) and once with the default. PULL stands for the download: 7s is a
# 700 MB image at 100 MB/s. bench/big-image.sh measures real pulls, which on one machine all
# share its cores and disk.
#
#   bench/fetch-ahead.sh [N] [BATCH] [PULL]    # default 10 hosts, batches of 3, 7s
#
# The last line is one JSON object. Everything it starts is stopped and removed at exit.
source "$(dirname "$0")/lib.sh"
n=${1:-10}
batch=${2:-3}
pull=${3:-7s}
bench_setup
start_registry
push_image 0
start_master "$(one_container_roles 'sim-*')"
hosts="$work/hosts"
token=$("$bin/brine-master" token create --uses "$n" --data-dir "$work/master" 2>/dev/null)
"$bin/brine-fleet-sim" enrol --master "127.0.0.1:$master_port" --token "$token" --hosts "$n" \
  --data-dir "$hosts" >/dev/null
RUST_LOG=error "$bin/brine-fleet-sim" run --hosts "$n" --data-dir "$hosts" --pull-delay "$pull" \
  --report-every 1s >"$work/sim.jsonl" 2>"$work/sim.log" &
pids+=($!)
until grep -q '"event":"all_linked"' "$work/sim.jsonl"; do sleep 0.2; done
"$bin/brine-master" highstate --data-dir "$work/master" --output json >/dev/null

# rollout NAME VARIANT ARGS...: pushes a new build and times its rollout in batches.
rollout() {
  local name=$1 start
  push_image "$2"
  shift 2
  start=$(now)
  "$bin/brine-master" highstate --data-dir "$work/master" --batch "$batch" --output json "$@" \
    >"$work/$name.json"
  elapsed "$start" "$(now)" >"$work/$name.wall"
}
rollout before 1 --concurrent-pulls 0
rollout after 2

python3 - "$work" "$n" "$batch" "$pull" <<'PY'
import json, math, sys
work, n, batch, pull = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = {"hosts": n, "batch": batch, "batches": math.ceil(n / batch), "pull": pull}
for name in ["before", "after"]:
    wall = float(open(f"{work}/{name}.wall").read())
    job = json.load(open(f"{work}/{name}.json"))
    pulls = sorted(h["timings"]["pull_ms"] for h in job["hosts"])
    statuses = sorted({h["status"] for h in job["hosts"]})
    label = "--concurrent-pulls 0" if name == "before" else "fetching ahead"
    print(f"{name:>6} ({label}): rollout {wall:.1f} s; pull in a host's turn: "
          f"min {pulls[0]} ms, max {pulls[-1]} ms; statuses {statuses}")
    out[f"{name}_rollout_s"] = wall
print(json.dumps(out))
PY
