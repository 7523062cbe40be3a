#!/usr/bin/env bash
# Measures deploys of a published port under a steady HTTP load: the requests that fail while
# brine replaces the container, through brine-proxy and without it, and the latency the proxy
# adds against the container reached directly.
#
#   bench/zero-downtime.sh [DEPLOYS]     # default 20
#
# One host (a release master and minion, the release brine-proxy), a web container (busybox
# httpd, which answers each request on a fresh connection) from a private registry, and Debian's
# wrk on loopback (1 thread, 8 connections kept alive, as fast as it goes). Deploys alternate
# between two builds of the image, pinned by digest, with a real HTTP health check; each is a
# `brine-master highstate` that replaces the container. The load runs for the whole series of
# deploys, in 5-second wrk runs back to back; every non-2xx answer, connection error and
# timeout counts as a failure. Then the same series with the proxy off (Docker publishes the
# port, and a replacement must stop the old container before the new one can take the port).
# Last line: one JSON object.
source "$(dirname "$0")/lib.sh"
deploys=${1:-20}
bench_setup
start_registry

# build_web VARIANT: pushes a web image serving "variant VARIANT" and prints its digest.
build_web() {
  rm -rf "$work/web" && mkdir -p "$work/web"
  cp /bin/busybox "$work/web/"
  echo "variant $1" >"$work/web/index.html"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\nCMD ["/bin/busybox","httpd","-f","-p","8000","-h","/www"]\n' \
    >"$work/web/Dockerfile"
  docker build -q -t "$image" "$work/web" >/dev/null
  docker push -q "$image" >/dev/null
  images+=("$(docker image inspect --format '{{.Id}}' "$image")")
  docker image inspect --format '{{index .RepoDigests 0}}' "$image"
  docker rmi "$image" >/dev/null
}
builds=("$(build_web 1)" "$(build_web 2)")
# The hosts pull them by digest; removed with the rest at exit.
images+=("${builds[@]}")

cat >"$work/proxy.toml" <<TOML
control_socket = "$work/proxy.sock"
state_file = "$work/routes.json"
TOML
RUST_LOG=warn "$bin/brine-proxy" run --config "$work/proxy.toml" 2>"$work/proxy.log" &
pids+=($!)
until [ -S "$work/proxy.sock" ]; do sleep 0.1; done
export BRINE_MINION_PROXY_SOCKET="$work/proxy.sock"

port=$(free_port)
# roles BUILD PROXY_LINE: the web role on bench-1, running BUILD.
roles() {
  printf '[roles.%s]\nimage = "%s"\n[[roles.%s.containers]]\nname = "web"\nports = ["127.0.0.1:%s:8000"]\nhealth = { http = "http://127.0.0.1:8000/", interval = "200ms", min_healthy = "1s", deadline = "30s" }\n%s\n[assign]\n"bench-1" = ["%s"]\n' \
    "$role" "$1" "$role" "$port" "$2" "$role"
}
highstate() {
  "$bin/brine-master" highstate --data-dir "$work/master" --output json >"$work/highstate.json" ||
    { cat "$work/highstate.json" >&2; exit 1; }
}
start_master "$(roles "${builds[0]}" 'proxy = { mode = "http", drain = "30s" }')"
start_minions 1
highstate

cat >"$work/count.lua" <<'LUA'
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"failures":%d,"seconds":%f,"p50_ms":%f,"p99_ms":%f}\n',
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
# wrk_json URL SECONDS: one wrk run, its counts as JSON.
# wrk gives up at once, without counts, when its first connection is refused: that counts as
# one failed request, and the run is retried after its time.
wrk_json() {
  local out
  out=$(wrk -t1 -c8 --timeout 5s -d"$2"s -s "$work/count.lua" "$1" 2>&1 || true)
  if grep -q '^{' <<<"$out"; then
    grep '^{' <<<"$out"
  else
    sleep "$2"
    echo '{"requests":0,"failures":1,"seconds":0,"p50_ms":0,"p99_ms":0}'
  fi
}

# Latency: the container reached directly, then through the proxy, 10 s each.
container=$(docker ps -q --filter "label=io.brine.role=$role")
address=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$container")
direct=$(wrk_json "http://$address:8000/" 10)
proxied=$(wrk_json "http://127.0.0.1:$port/" 10)

# series NAME PROXY_LINE: DEPLOYS deploys under load; the load's runs go to $work/NAME.load.
series() {
  local name=$1 line=$2 i
  roles "${builds[0]}" "$line" >"$work/master/roles.toml"
  highstate
  rm -f "$work/stop-load"
  (while [ ! -e "$work/stop-load" ]; do wrk_json "http://127.0.0.1:$port/" 5; done >"$work/$name.load") &
  local load=$!
  sleep 1
  local started
  started=$(now)
  for i in $(seq 1 "$deploys"); do
    roles "${builds[$((i % 2))]}" "$line" >"$work/master/roles.toml"
    highstate
  done
  echo "$(elapsed "$started" "$(now)")" >"$work/$name.seconds"
  touch "$work/stop-load"
  wait "$load"
}
series proxy 'proxy = { mode = "http", drain = "30s" }'
series docker ''

python3 - "$work" "$deploys" "$direct" "$proxied" <<'PY'
import json, sys
work, deploys = sys.argv[1], int(sys.argv[2])
direct, proxied = json.loads(sys.argv[3]), json.loads(sys.argv[4])
def load(name):
    runs = [json.loads(line) for line in open(f"{work}/{name}.load")]
    return {"requests": sum(r["requests"] for r in runs), "failures": sum(r["failures"] for r in runs),
            "seconds": round(sum(r["seconds"] for r in runs), 1),
            "deploys_s": float(open(f"{work}/{name}.seconds").read())}
with_proxy, without = load("proxy"), load("docker")
print(f"latency, container direct: p50 {direct['p50_ms']:.2f} ms, p99 {direct['p99_ms']:.2f} ms, "
      f"{direct['requests'] / direct['seconds']:.0f} requests/s")
print(f"latency, through brine-proxy: p50 {proxied['p50_ms']:.2f} ms, p99 {proxied['p99_ms']:.2f} ms, "
      f"{proxied['requests'] / proxied['seconds']:.0f} requests/s")
for name, run in (("with the proxy", with_proxy), ("without (Docker publishes)", without)):
    print(f"{deploys} deploys {name}: {run['failures']} failed of {run['requests']} requests "
          f"over {run['seconds']} s of load ({run['deploys_s']:.1f} s of deploys)")
print(json.dumps({
    "deploys": deploys,
    "failed_with_proxy": with_proxy["failures"], "requests_with_proxy": with_proxy["requests"],
    "failed_without_proxy": without["failures"], "requests_without_proxy": without["requests"],
    "direct_p50_ms": direct["p50_ms"], "direct_p99_ms": direct["p99_ms"],
    "proxy_p50_ms": proxied["p50_ms"], "proxy_p99_ms": proxied["p99_ms"],
}))
PY
