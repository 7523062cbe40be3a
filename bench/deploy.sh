#!/usr/bin/env bash
# Measures a CI deploy of a new build to N hosts (default 10) until all are healthy, and where
# the time goes: resolving the tag, Docker pulling, Docker creating/starting/stopping/removing
# containers, waiting for health, and the rest (brine's own overhead).
#
#   bench/deploy.sh [N] [RUNS]     # default N=10, RUNS=5
#
# Each run pushes a new build under the same tag, then times `brine-master deploy` (wall clock
# of the command). The critical path is the host that took longest; brine's overhead is the
# wall clock minus that host's Docker and health-wait time.
source "$(dirname "$0")/lib.sh"
n=${1:-10}
runs=${2:-5}
bench_setup
start_registry
push_image 0
start_master "[roles.$role]
image = \"$image\"
[[roles.$role.containers]]
name = \"app\"
command = [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]
health = { http = \"http://127.0.0.1:8080/variant.txt\", interval = \"200ms\", min_healthy = \"1s\", deadline = \"30s\" }
[assign]
\"bench-*\" = [\"$role\"]
"
start_minions "$n"
"$bin/brine-master" highstate --data-dir "$work/master" --output json >/dev/null

for run in $(seq 1 "$runs"); do
  push_image "$run"
  start=$(now)
  "$bin/brine-master" deploy --data-dir "$work/master" --role "$role" --image "$image" \
    --output json >"$work/deploy-$run.json"
  echo "$(elapsed "$start" "$(now)")" >"$work/deploy-$run.wall"
done

python3 - "$work" "$runs" "$n" <<'PY'
import json, statistics, sys
work, runs, n = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for run in range(1, runs + 1):
    job = json.load(open(f"{work}/deploy-{run}.json"))
    assert job["success"], job
    wall_ms = float(open(f"{work}/deploy-{run}.wall").read()) * 1000
    slowest = max(job["hosts"], key=lambda h: h["duration_ms"])
    t = slowest["timings"]
    docker_and_health = t["pull_ms"] + t["containers_ms"] + t["health_ms"]
    rows.append({
        "wall": wall_ms, "resolve": job["resolve_ms"], "pull": t["pull_ms"],
        "containers": t["containers_ms"], "health": t["health_ms"],
        "rest": wall_ms - docker_and_health,
    })
med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
print(f"deploy of a new build to {n} hosts until all healthy, median of {runs} runs:")
print(f"  total (CLI wall clock)            {med['wall']:8.0f} ms")
print(f"  resolve tag to digest (master)    {med['resolve']:8.0f} ms")
print(f"  pull (slowest host)               {med['pull']:8.0f} ms")
print(f"  create/start/stop/remove (Docker) {med['containers']:8.0f} ms")
print(f"  health wait (min_healthy 1 s)     {med['health']:8.0f} ms")
print(f"  the rest, resolve included: brine {med['rest']:8.0f} ms ({100 * med['rest'] / med['wall']:.1f}% of the total)")
PY
