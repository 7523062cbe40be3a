#!/usr/bin/env bash
# Measures brine on this machine: N real brine-minion processes (namespaced, sharing the one
# Docker engine), one small container each, one master, one private registry on loopback.
#
#   bench/highstate.sh [N]        # default N=100
#   BENCH_STORE=etcd bench/highstate.sh [N]   # the same, the fleet kept in a three-member etcd cluster
#
# Prints: time to enrol and connect N minions, the first highstate (creates N containers), the
# no-change highstate (median of 7, wall clock of the CLI), a round trip to every host (a plan,
# median of 5: each host compares and answers, like `salt '*' test.ping` with a look at its
# containers), minion idle RSS and master RSS with N minions connected; the last line is one
# JSON object. Everything it starts is stopped and removed at exit.
source "$(dirname "$0")/lib.sh"
n=${1:-100}
runs=7
bench_setup
start_registry
push_image 1
start_master "$(one_container_roles 'bench-*')"
start=$(now)
start_minions "$n"
enrolled=$(elapsed "$start" "$(now)")

start=$(now)
"$bin/brine-master" highstate --data-dir "$work/master" --output json >"$work/first.json" || {
  echo "the first highstate failed; see $work" >&2; trap - EXIT; exit 1; }
first=$(elapsed "$start" "$(now)")

times=()
for _ in $(seq 1 "$runs"); do
  start=$(now)
  "$bin/brine-master" highstate --data-dir "$work/master" --output json >"$work/again.json"
  times+=("$(elapsed "$start" "$(now)")")
  grep -q '"status": "changed"' "$work/again.json" && { echo "a no-change highstate changed something" >&2; exit 1; }
done
plans=()
for _ in $(seq 1 5); do
  start=$(now)
  "$bin/brine-master" highstate --plan --data-dir "$work/master" --output json >"$work/plan.json"
  plans+=("$(elapsed "$start" "$(now)")")
done
sleep 5
minion_rss=$(for pid in "${minion_pids[@]}"; do rss_kib "$pid"; done | sort -n)
master_rss=$(rss_kib "$master_pid")

python3 - "$n" "$enrolled" "$first" "$master_rss" "${times[*]}" "$(echo $minion_rss)" "$work/again.json" "${plans[*]}" <<'PY'
import json, statistics, sys
n, enrolled, first, master_rss, times, minion, last, plans = sys.argv[1:]
plans = sorted(float(t) for t in plans.split())
job = json.load(open(last))
hosts = sorted(h["duration_ms"] for h in job["hosts"])
job_ms = job["finished_at_unix_ms"] - job["started_at_unix_ms"]
times = sorted(float(t) for t in times.split())
minion = [int(k) / 1024 for k in minion.split()]
print(f"minions:                          {n}")
print(f"enrol + connect all:              {float(enrolled):.1f} s")
print(f"first highstate ({n} created):    {float(first):.2f} s")
print(f"no-change highstate, median of {len(times)}: {statistics.median(times):.3f} s (min {times[0]:.3f}, max {times[-1]:.3f})")
print(f"  inside the master (last run):   job {job_ms} ms; per host median {statistics.median(hosts):.0f} ms, max {hosts[-1]} ms")
print(f"minion idle RSS:                  median {statistics.median(minion):.1f} MiB, max {max(minion):.1f} MiB")
print(f"round trip to all (a plan), median of {len(plans)}: {statistics.median(plans):.3f} s")
print(f"master RSS with {n} connected:    {int(master_rss) / 1024:.1f} MiB")
print(json.dumps({
    "minions": int(n),
    "no_change_median_s": statistics.median(times),
    "plan_median_s": statistics.median(plans),
    "first_highstate_s": float(first),
    "minion_rss_mib": round(statistics.median(minion), 1),
    "master_rss_mib": round(int(master_rss) / 1024, 1),
}))
PY
