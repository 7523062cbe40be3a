# Shared by the benchmarks: a private registry, images, a master and minions on this machine.
# Source it; call bench_setup first. Everything started is stopped and removed at exit.
set -euo pipefail

bench_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  scripts/test-deps.sh
  cargo build --release --bins --quiet
  bin="$PWD/target/release"
  work=$(mktemp -d /tmp/brine-bench.XXXXXX)
  role="bench$$"
  pids=()
  images=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${engine_pids+x}" ]; then stop_engines; fi
  wait 2>/dev/null || true
  docker ps -aq --filter "label=io.brine.role=$role" | xargs -r docker rm -f >/dev/null
  for image in "${images[@]}"; do docker rmi -f "$image" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

start_registry() {
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
}

# push_image VARIANT [MB]: builds a busybox image FROM scratch (unique per variant; with MB, it
# also holds MB megabytes of random data), pushes it under $image and removes it locally, as CI
# would. The push's seconds are left in $push_s.
push_image() {
  rm -rf "$work/image" && mkdir -p "$work/image"
  cp /bin/busybox "$work/image/"
  echo "variant $1" >"$work/image/variant.txt"
  local data="" start
  if [ -n "${2:-}" ]; then
    head -c "${2}M" /dev/urandom >"$work/image/data.bin"
    data='COPY data.bin /data.bin\n'
  fi
  printf "FROM scratch\nCOPY busybox /bin/busybox\nCOPY variant.txt /variant.txt\n${data}CMD [\"/bin/busybox\",\"sleep\",\"86400\"]\n" >"$work/image/Dockerfile"
  docker build -q -t "$image" "$work/image" >/dev/null 2>&1
  rm -rf "$work/image"
  start=$(now)
  docker push -q "$image" >/dev/null
  push_s=$(elapsed "$start" "$(now)")
  images+=("$(docker image inspect --format '{{.Id}}' "$image")")
  # As if CI had built it elsewhere: the hosts must pull it from the registry.
  docker rmi "$image" >/dev/null
}

# one_container_roles GLOB: a roles file giving every host whose id matches GLOB the bench's
# role, one container `app` from the bench's image.
one_container_roles() {
  printf '[roles.%s]\nimage = "%s"\n[[roles.%s.containers]]\nname = "app"\n[assign]\n"%s" = ["%s"]\n' \
    "$role" "$image" "$role" "$1" "$role"
}

# rss_kib PID: the resident memory of process PID, in KiB.
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# start_etcd: a three-member etcd cluster (Debian's etcd) on loopback, its data under $work; its
# client URLs, comma-separated, are in $etcd_endpoints.
start_etcd() {
  local m cluster="" urls=()
  declare -A peer client
  for m in 1 2 3; do peer[$m]=$(free_port); client[$m]=$(free_port); done
  for m in 1 2 3; do cluster+="${cluster:+,}etcd-$m=http://127.0.0.1:${peer[$m]}"; done
  for m in 1 2 3; do
    etcd --name "etcd-$m" --data-dir "$work/etcd-$m" \
      --listen-peer-urls "http://127.0.0.1:${peer[$m]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[$m]}" \
      --listen-client-urls "http://127.0.0.1:${client[$m]}" --advertise-client-urls "http://127.0.0.1:${client[$m]}" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "bench-$$" \
      >"$work/etcd-$m.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:${client[$m]}")
  done
  etcd_endpoints=$(IFS=,; echo "${urls[*]}")
  until ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" endpoint health >/dev/null 2>&1; do sleep 0.2; done
}

# start_master ROLES_TOML: one master; with BENCH_STORE=etcd its fleet is kept in a
# three-member etcd cluster (start_etcd) instead of its data directory.
start_master() {
  master_port=$(free_port)
  if [ "${BENCH_STORE:-redb}" = etcd ]; then
    [ -n "${etcd_endpoints:-}" ] || start_etcd
    "$bin/brine-master" init --data-dir "$work/master" --listen "127.0.0.1:$master_port" \
      --advertise 127.0.0.1 --etcd "$etcd_endpoints" --etcd-prefix "/brine-bench-$$/" >/dev/null
  else
    "$bin/brine-master" init --data-dir "$work/master" --listen "127.0.0.1:$master_port" >/dev/null
    printf '%s' "$1" >"$work/master/roles.toml"
  fi
  RUST_LOG=warn "$bin/brine-master" serve --data-dir "$work/master" 2>"$work/master.log" &
  master_pid=$!
  pids+=($master_pid)
  for _ in $(seq 1 50); do "$bin/brine-master" minions --data-dir "$work/master" >/dev/null 2>&1 && break; sleep 0.1; done
  if [ "${BENCH_STORE:-redb}" = etcd ]; then
    printf '%s' "$1" >"$work/roles.toml"
    "$bin/brine-master" roles apply "$work/roles.toml" --data-dir "$work/master" >/dev/null
  fi
}

# start_minions N: bench-1 ... bench-N, each in its own namespace on this engine, or on the
# engine at ${minion_docker_hosts[i-1]} (a DOCKER_HOST) when that array is set.
start_minions() {
  local token
  token=$("$bin/brine-master" token create --data-dir "$work/master" 2>/dev/null)
  minion_pids=()
  for i in $(seq 1 "$1"); do
    "$bin/brine-minion" join --master "127.0.0.1:$master_port" --token "$token" --id "bench-$i" \
      --namespace "bench-$i-$$" --data-dir "$work/bench-$i" >/dev/null
    local engine=${minion_docker_hosts[$((i - 1))]:-}
    env ${engine:+DOCKER_HOST=$engine} RUST_LOG=warn \
      "$bin/brine-minion" run --data-dir "$work/bench-$i" 2>"$work/bench-$i.log" &
    minion_pids+=($!)
    pids+=($!)
  done
  until [ "$("$bin/brine-master" minions --data-dir "$work/master" --output json | grep -c '"connected": true')" -eq "$1" ]; do
    sleep 0.2
  done
}

# start_engines N: N more Docker engines (dockerd with its own containerd, data and socket under
# $work), so that each host pulls for itself as on a real fleet; their sockets are in
# ${minion_docker_hosts[@]}. Each runs in a network namespace of its own, where it cannot touch
# the host's Docker networks, and reaches the registry (start it first) on the same loopback
# address and port through a relay. They are stopped and their data removed at exit.
start_engines() {
  minion_docker_hosts=()
  engine_pids=()
  engine_netns=()
  echo '{}' >"$work/daemon.json"
  socat "UNIX-LISTEN:$work/registry.sock,fork" "TCP:127.0.0.1:$registry_port" &
  pids+=($!)
  for i in $(seq 1 "$1"); do
    local dir="$work/engine-$i" netns="brine-bench-$$-$i"
    mkdir -p "$dir"
    ip netns add "$netns"
    engine_netns+=("$netns")
    # Only the network namespace changes (`ip netns exec` would hide the host's cgroups).
    nsenter --net="/run/netns/$netns" ip link set lo up
    nsenter --net="/run/netns/$netns" \
      socat "TCP-LISTEN:$registry_port,bind=127.0.0.1,fork,reuseaddr" \
      "UNIX-CONNECT:$work/registry.sock" &
    pids+=($!)
    nsenter --net="/run/netns/$netns" dockerd --config-file "$work/daemon.json" --data-root "$dir/root" \
      --exec-root "$dir/exec" --pidfile "$dir/pid" -H "unix://$dir/docker.sock" --bridge none \
      --iptables=false --ip-masq=false --storage-driver fuse-overlayfs >"$dir/log" 2>&1 &
    engine_pids+=($!)
    minion_docker_hosts+=("unix://$dir/docker.sock")
  done
  for engine in "${minion_docker_hosts[@]}"; do
    for _ in $(seq 1 100); do DOCKER_HOST=$engine docker version >/dev/null 2>&1 && break; sleep 0.2; done
  done
}

stop_engines() {
  for pid in "${engine_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${engine_pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  done
  # What an engine leaves mounted under its data goes before the data does.
  awk -v under="$work/engine-" 'index($2, under) == 1 {print $2}' /proc/mounts | sort -r |
    xargs -r -n1 umount -l 2>/dev/null || true
  for netns in "${engine_netns[@]}"; do ip netns del "$netns" 2>/dev/null || true; done
}
