#!/usr/bin/env bash
# Several masters on etcd, measured on this machine: N real brine-minion processes, a private
# registry on loopback, a three-member etcd cluster (Debian's etcd) and two masters.
#
#   bench/ha.sh [N]        # default N=100
#
# Prints: the no-change highstate over N hosts with one master on redb and with two masters on
# etcd (median of 5 each, wall clock of the CLI); host failover (the master every host is
# linked to is killed: until every host is linked to the other); job takeover (the master
# running a rollout of 5 batches is killed in its second batch: until another master runs the
# job on, and until the rollout finished, each host reporting once). The last line is one JSON
# object. Everything it starts is stopped and removed at exit.
source "$(dirname "$0")/lib.sh"
n=${1:-100}
runs=5
bench_setup
start_registry
push_image 1

# median SECONDS...: the median of its arguments.
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }

# no_change_runs DATA_DIR: times $runs no-change highstates through that master.
no_change_runs() {
  local times=() start
  for _ in $(seq 1 "$runs"); do
    start=$(now)
    "$bin/brine-master" highstate --data-dir "$1" --output json >"$work/again.json"
    times+=("$(elapsed "$start" "$(now)")")
    grep -q '"status": "changed"' "$work/again.json" && { echo "a no-change highstate changed something" >&2; exit 1; }
  done
  median "${times[@]}"
}

# linked_to DATA_DIR NAME: how many hosts that master lists as linked to master NAME.
linked_to() {
  "$bin/brine-master" minions --data-dir "$1" --output json |
    python3 -c 'import json, sys; print(sum(m.get("linked_to") == sys.argv[1] for m in json.load(sys.stdin)))' "$2"
}

# --- One master, its fleet in redb (as bench/highstate.sh) ---
start_master "$(one_container_roles 'bench-*')"
start_minions "$n"
"$bin/brine-master" highstate --data-dir "$work/master" --output json >/dev/null
redb_no_change=$(no_change_runs "$work/master")
kill "${minion_pids[@]}" "$master_pid"
wait "${minion_pids[@]}" "$master_pid" 2>/dev/null || true
docker ps -aq --filter "label=io.brine.role=$role" | xargs -r docker rm -f >/dev/null

# --- A three-member etcd cluster and two masters sharing it ---
start_etcd
endpoints=$etcd_endpoints

host_name=$(cat /proc/sys/kernel/hostname)
declare -A port name pid
# start_etcd_master M [CA_FROM]: master M (a or b) on the cluster, with the CA of CA_FROM's.
start_etcd_master() {
  port[$1]=$(free_port)
  name[$1]="$host_name:${port[$1]}"
  mkdir -p "$work/$1"
  if [ -n "${2:-}" ]; then cp "$work/$2/ca.pem" "$work/$2/ca.key" "$work/$2/secrets.key" "$work/$1/"; fi
  "$bin/brine-master" init --data-dir "$work/$1" --listen "127.0.0.1:${port[$1]}" --advertise 127.0.0.1 \
    --etcd "$endpoints" --etcd-prefix "/brine-bench-$$/" >/dev/null
  serve_master "$1"
}
# serve_master M: starts (or starts again) master M's daemon.
serve_master() {
  RUST_LOG=info "$bin/brine-master" serve --data-dir "$work/$1" 2>>"$work/$1.log" &
  pid[$1]=$!
  pids+=(${pid[$1]})
  for _ in $(seq 1 100); do "$bin/brine-master" minions --data-dir "$work/$1" >/dev/null 2>&1 && break; sleep 0.1; done
}
start_etcd_master a
start_etcd_master b a
one_container_roles 'ha-*' >"$work/roles.toml"
"$bin/brine-master" roles apply "$work/roles.toml" --data-dir "$work/a" >/dev/null

token=$("$bin/brine-master" token create --data-dir "$work/a" 2>/dev/null)
minion_pids=()
for i in $(seq 1 "$n"); do
  "$bin/brine-minion" join --master "127.0.0.1:${port[a]}" --token "$token" --id "ha-$i" \
    --namespace "ha-$i-$$" --data-dir "$work/ha-$i" >/dev/null 2>>"$work/join.log"
  RUST_LOG=info "$bin/brine-minion" run --data-dir "$work/ha-$i" 2>"$work/ha-$i.log" &
  minion_pids+=($!)
  pids+=($!)
done
until [ "$(linked_to "$work/a" "${name[a]}")" -eq "$n" ]; do sleep 0.2; done
"$bin/brine-master" highstate --data-dir "$work/a" --output json >/dev/null
etcd_no_change=$(no_change_runs "$work/a")
# Every host knows both masters before one goes.
until [ "$(grep -l "${port[b]}" "$work"/ha-*/masters.json 2>/dev/null | wc -l)" -eq "$n" ]; do sleep 0.2; done

# --- Host failover: the master every host is linked to dies ---
kill -9 "${pid[a]}"
start=$(now)
until [ "$(linked_to "$work/b" "${name[b]}")" -eq "$n" ]; do sleep 0.05; done
failover=$(elapsed "$start" "$(now)")
serve_master a

# --- Job takeover: the master running a 5-batch rollout dies in its second batch ---
push_image 2
batch=$(( (n + 4) / 5 ))
"$bin/brine-master" highstate --data-dir "$work/b" --batch "$batch" --output json >/dev/null 2>&1 &
follower=$!
job=""
until [ -n "$job" ]; do
  job=$("$bin/brine-master" jobs --data-dir "$work/a" --output json |
    python3 -c 'import json, sys; jobs = [j for j in json.load(sys.stdin) if j["running"]]; print(jobs[0]["job_id"] if jobs else "")')
  sleep 0.05
done
reported() {
  "$bin/brine-master" jobs show "$job" --data-dir "$work/a" --output json |
    python3 -c 'import json, sys; j = json.load(sys.stdin); print(len(j["hosts"]), "running" if j["running"] else "done")'
}
until [ "$(reported | cut -d' ' -f1)" -ge "$batch" ]; do sleep 0.05; done
kill -9 "${pid[b]}"
start=$(now)
kill "$follower" 2>/dev/null || true
until grep -q "taking over a job whose master stopped" "$work/a.log"; do sleep 0.05; done
takeover=$(elapsed "$start" "$(now)")
until [ "$(reported | cut -d' ' -f2)" = done ]; do sleep 0.1; done
finished=$(elapsed "$start" "$(now)")
"$bin/brine-master" jobs show "$job" --data-dir "$work/a" --output json >"$work/taken.json"
applied_twice=$(for i in $(seq 1 "$n"); do grep -c "$job.* applied status=" "$work/ha-$i.log" || true; done | awk '$1 > 1' | wc -l)

python3 - "$n" "$redb_no_change" "$etcd_no_change" "$failover" "$takeover" "$finished" "$work/taken.json" "$applied_twice" <<'PY'
import json, sys
n, redb, etcd, failover, takeover, finished, taken, twice = sys.argv[1:]
job = json.load(open(taken))
statuses = {}
for h in job["hosts"]:
    statuses[h["status"]] = statuses.get(h["status"], 0) + 1
print(f"hosts:                                   {n}")
print(f"no-change highstate, redb, median of 5:  {float(redb):.3f} s")
print(f"no-change highstate, etcd, median of 5:  {float(etcd):.3f} s")
print(f"host failover (all {n} hosts):           {float(failover):.2f} s")
print(f"job takeover (another master runs it):   {float(takeover):.2f} s")
print(f"rollout finished after the kill:         {float(finished):.2f} s; reports {len(job['hosts'])}: {statuses}; hosts that applied twice: {twice}")
print(json.dumps({"hosts": int(n), "no_change_redb_s": float(redb), "no_change_etcd_s": float(etcd),
                  "failover_s": float(failover), "takeover_s": float(takeover),
                  "rollout_finished_after_kill_s": float(finished), "reports": len(job["hosts"]),
                  "applied_twice": int(twice)}))
PY
