#!/usr/bin/env bash
# What one master carries: N simulated hosts (brine-fleet-sim: real minions, each with its own
# certificate and mutual-TLS link, over in-memory container engines) against one release master
# and a private registry on loopback.
#
#   bench/scale.sh [N]            # default N=10000
#   BENCH_STORE=etcd bench/scale.sh [N]   # the same, the fleet kept in a three-member etcd cluster
#
# Measures: enrolment through Join and the time until all are linked; the first highstate
# (creates a container on every host); a no-change highstate (median and p99 of 10) with the
# master's CPU seconds per run; a highstate that changes every host (a new image);
# `minions --output json` and `jobs show` at that size; the master's RSS and its growth per
# 1,000 links; then `kill -9` of the master, a restart, and the time until every host is linked
# again with the link attempts that failed meanwhile. The last line is one JSON object.
#
# File limits are raised for this script's processes only (ulimit), never for the machine.
# The simulated hosts keep their data directories in memory (/dev/shm): every minion flushes
# a job's id to its disk before applying it, which a real fleet does on as many disks at once,
# while here one disk would serialize them all and measure the disk instead of the master.
source "$(dirname "$0")/lib.sh"
n=${1:-10000}
runs=10
# Each link holds a socket in the master and one in the simulator, plus the data files the
# simulator opens; raise the soft limit to what the machine allows this shell.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((n + 1024)) ]; then
  echo "the open-file limit ($(ulimit -n)) is too low for $n hosts" >&2
  exit 1
fi
bench_setup
hosts=$(mktemp -d /dev/shm/brine-scale-hosts.XXXXXX)
trap 'rm -rf "$hosts"; bench_cleanup' EXIT
start_registry
push_image 1
start_master "$(one_container_roles 'sim-*')"
master() { "$bin/brine-master" "$@" --data-dir "$work/master"; }
# The master's user and system CPU time, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)

token=$(master token create --uses "$n" --ttl 2h 2>/dev/null)
enrolment=$("$bin/brine-fleet-sim" enrol --master "127.0.0.1:$master_port" --token "$token" \
  --hosts "$n" --data-dir "$hosts")
sleep 2
rss_unlinked=$(rss_kib "$master_pid")

RUST_LOG=error "$bin/brine-fleet-sim" run --hosts "$n" --data-dir "$hosts" \
  --report-every 5s >"$work/sim.jsonl" 2>"$work/sim.log" &
sim_pid=$!
pids+=($sim_pid)
# wait_line EVENT K: waits until the simulator reported EVENT K times; prints that line.
wait_line() {
  local line
  until line=$(grep "\"event\":\"$1\"" "$work/sim.jsonl" | sed -n "${2}p") && [ -n "$line" ]; do
    kill -0 "$sim_pid" 2>/dev/null || { echo "the simulator stopped; see $work/sim.log" >&2; trap - EXIT; exit 1; }
    sleep 0.1
  done
  echo "$line"
}
linked=$(wait_line all_linked 1)
sleep 5
rss_linked=$(rss_kib "$master_pid")

start=$(now)
master highstate --timeout 10m --output json >"$work/first.json" || {
  echo "the first highstate failed; see $work" >&2; trap - EXIT; exit 1; }
first=$(elapsed "$start" "$(now)")

times=()
cpu_before=$(cpu_ticks "$master_pid")
for _ in $(seq 1 "$runs"); do
  start=$(now)
  master highstate --timeout 10m --output json >"$work/again.json"
  times+=("$(elapsed "$start" "$(now)")")
  if grep -q '"status": "changed"' "$work/again.json"; then
    echo "a no-change highstate changed something; see $work/again.json" >&2; trap - EXIT; exit 1
  fi
done
cpu_after=$(cpu_ticks "$master_pid")
rss_after_jobs=$(rss_kib "$master_pid")
job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' "$work/again.json")

start=$(now); master minions --output json >"$work/minions.json"; minions_s=$(elapsed "$start" "$(now)")
start=$(now); master jobs show "$job" --output json >"$work/job.json"; job_show_s=$(elapsed "$start" "$(now)")

push_image 2
start=$(now)
master highstate --timeout 10m --output json >"$work/changed.json"
changed_s=$(elapsed "$start" "$(now)")

# A crash of the master with every host linked.
alive=$(grep -c '"event":"all_linked"' "$work/sim.jsonl")
kill -9 "$master_pid"
wait "$master_pid" 2>/dev/null || true
lost=$(wait_line not_all_linked "$alive")
restart=$(now)
RUST_LOG=warn "$bin/brine-master" serve --data-dir "$work/master" 2>>"$work/master.log" &
master_pid=$!
pids+=($master_pid)
back=$(wait_line all_linked $((alive + 1)))
rss_relinked=$(rss_kib "$master_pid")

python3 - "$n" "$enrolment" "$linked" "$first" "${times[*]}" "$((cpu_after - cpu_before))" \
  "$ticks_per_s" "$rss_unlinked" "$rss_linked" "$rss_after_jobs" "$rss_relinked" \
  "$minions_s" "$job_show_s" "$changed_s" "$lost" "$restart" "$back" \
  "$work/first.json" "$work/changed.json" <<'PY'
import json, statistics, sys
(n, enrolment, linked, first, times, cpu_ticks, ticks_per_s, rss_unlinked, rss_linked,
 rss_after_jobs, rss_relinked, minions_s, job_show_s, changed_s, lost, restart, back,
 first_json, changed_json) = sys.argv[1:]
n = int(n)
enrolment, linked, lost, back = (json.loads(x) for x in (enrolment, linked, lost, back))
times = sorted(float(t) for t in times.split())
p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
mib = lambda kib: int(kib) / 1024
for path in (first_json, changed_json):
    job = json.load(open(path))
    statuses = {}
    for h in job["hosts"]:
        statuses[h["status"]] = statuses.get(h["status"], 0) + 1
    if statuses.get("changed") != n:
        sys.exit(f"{path}: not every host changed: {statuses}")
result = {
    "hosts": n,
    "enrol_s": round(enrolment["seconds"], 2),
    "refused_joins": enrolment["refused"],
    "connect_s": round(linked["elapsed_s"], 2),
    "first_highstate_s": float(first),
    "highstate_p50_s": statistics.median(times),
    "highstate_p99_s": p99,
    "changed_highstate_s": float(changed_s),
    "cpu_s_per_highstate": round(int(cpu_ticks) / int(ticks_per_s) / len(times), 3),
    "minions_json_s": float(minions_s),
    "jobs_show_s": float(job_show_s),
    "master_rss_mib": round(mib(rss_linked), 1),
    "master_rss_after_jobs_mib": round(mib(rss_after_jobs), 1),
    "rss_per_1000_links_mib": round((mib(rss_linked) - mib(rss_unlinked)) * 1000 / n, 2),
    "reconnect_s": round(back["unix_s"] - float(restart), 2),
    "failed_handshakes": back["failed_attempts"] - lost["failed_attempts"],
}
print(f"hosts:                               {n}")
print(f"enrol through Join:                  {result['enrol_s']} s ({result['refused_joins']} refused and retried)")
print(f"all linked after start:              {result['connect_s']} s")
print(f"first highstate ({n} created):       {result['first_highstate_s']:.2f} s")
print(f"no-change highstate, {len(times)} runs:       p50 {result['highstate_p50_s']:.3f} s, p99 {p99:.3f} s; master CPU {result['cpu_s_per_highstate']} s per run")
print(f"highstate changing every host:       {result['changed_highstate_s']:.2f} s")
print(f"minions --output json:               {result['minions_json_s']:.2f} s; jobs show: {result['jobs_show_s']:.2f} s")
print(f"master RSS:                          {mib(rss_unlinked):.1f} MiB unlinked, {result['master_rss_mib']} MiB linked ({result['rss_per_1000_links_mib']} MiB per 1,000 links), {result['master_rss_after_jobs_mib']} MiB after the jobs")
print(f"after kill -9 and restart:           all linked in {result['reconnect_s']} s, {result['failed_handshakes']} link attempts failed meanwhile")
print(json.dumps(result))
PY
