#!/usr/bin/env bash
# Measures brine on this machine: N real brine-minion processes (namespaced, sharing the one
# Docker engine), one small container each, one master, one private registry on loopback.
#
#   bench/highstate.sh [N]        # default N=100
#
# Prints: time to enrol and connect N minions, the first highstate (creates N containers), the
# no-change highstate (median of 7, wall clock of the CLI), minion idle RSS and master RSS with
# N minions connected. Everything it starts is stopped and removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
runs=7
scripts/test-deps.sh
cargo build --release --bins --quiet
bin="$PWD/target/release"
work=$(mktemp -d /tmp/brine-bench.XXXXXX)
role="bench$$"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  docker ps -aq --filter "label=io.brine.role=$role" | xargs -r docker rm -f >/dev/null
  docker rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

registry_port=$(free_port)
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$registry_port}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$registry_port) 2>/dev/null && break; sleep 0.1; done

image="127.0.0.1:$registry_port/brine-bench/app:tested"
mkdir -p "$work/image"
cp /bin/busybox "$work/image/"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","sleep","86400"]\n' >"$work/image/Dockerfile"
docker build -q -t "$image" "$work/image" >/dev/null
docker push -q "$image" >/dev/null

master_port=$(free_port)
"$bin/brine-master" init --data-dir "$work/master" --listen "127.0.0.1:$master_port" >/dev/null
cat >"$work/master/roles.toml" <<TOML
[roles.$role]
image = "$image"
[[roles.$role.containers]]
name = "app"
[assign]
"bench-*" = ["$role"]
TOML
RUST_LOG=warn "$bin/brine-master" serve --data-dir "$work/master" 2>"$work/master.log" &
master_pid=$!
pids+=($master_pid)
for _ in $(seq 1 50); do "$bin/brine-master" minions --data-dir "$work/master" >/dev/null 2>&1 && break; sleep 0.1; done

token=$("$bin/brine-master" token create --data-dir "$work/master" 2>/dev/null)
start=$(now)
minion_pids=()
for i in $(seq 1 "$n"); do
  id="bench-$i"
  "$bin/brine-minion" join --master "127.0.0.1:$master_port" --token "$token" --id "$id" \
    --namespace "$id-$$" --data-dir "$work/$id" >/dev/null
  RUST_LOG=warn "$bin/brine-minion" run --data-dir "$work/$id" 2>"$work/$id.log" &
  minion_pids+=($!)
  pids+=($!)
done
until [ "$("$bin/brine-master" minions --data-dir "$work/master" --output json | grep -c '"connected": true')" -eq "$n" ]; do
  sleep 0.2
done
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
sleep 5
rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }
minion_rss=$(for pid in "${minion_pids[@]}"; do rss_kib "$pid"; done | sort -n)
master_rss=$(rss_kib "$master_pid")

python3 - "$n" "$enrolled" "$first" "$master_rss" "${times[*]}" "$(echo $minion_rss)" "$work/again.json" <<'PY'
import json, statistics, sys
n, enrolled, first, master_rss, times, minion, last = sys.argv[1:]
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
print(f"master RSS with {n} connected:    {int(master_rss) / 1024:.1f} MiB")
PY
