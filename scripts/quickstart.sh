#!/usr/bin/env bash
# Runs brine's main job on this one host: a private registry on loopback, an example image built
# locally FROM scratch (nothing is downloaded), a master, one minion, and a highstate that
# deploys the example role. Everything lives in ./.quickstart; `scripts/quickstart.sh stop`
# stops what it started and removes the example container.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.quickstart"
bin="$PWD/target/release"
registry_port=5000
master_port=4700
dashboard_port=4780

stop() {
  for pidfile in "$root"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  docker rm -f quickstart.hello >/dev/null 2>&1 || true
  echo "stopped; remove $root to start from scratch"
}

if [ "${1:-}" = stop ]; then
  stop
  exit 0
fi

scripts/test-deps.sh
echo "== building brine (release)"
cargo build --release --bins --quiet

mkdir -p "$root"
if [ -e "$root/master.pid" ]; then
  echo "a quickstart is already running; stop it with: scripts/quickstart.sh stop" >&2
  exit 1
fi

echo "== starting a private registry on 127.0.0.1:$registry_port"
cat >"$root/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $root/registry}}
http: {addr: 127.0.0.1:$registry_port}
YAML
docker-registry serve "$root/registry.yml" >"$root/registry.log" 2>&1 &
echo $! >"$root/registry.pid"
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$registry_port) 2>/dev/null && break
  sleep 0.1
done

echo "== building and pushing the example image (busybox httpd, FROM scratch)"
image="127.0.0.1:$registry_port/quickstart/hello:tested"
mkdir -p "$root/image/www"
cp /bin/busybox "$root/image/busybox"
echo "hello from a container deployed by brine at $(date -u +%FT%TZ)" >"$root/image/www/index.html"
cat >"$root/image/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
COPY www /www
CMD ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
DOCKERFILE
docker build -q -t "$image" "$root/image" >/dev/null 2>&1
docker push -q "$image" >/dev/null

echo "== initializing and starting the master on 127.0.0.1:$master_port"
if [ ! -e "$root/master/ca.pem" ]; then
  "$bin/brine-master" init --data-dir "$root/master" --listen "127.0.0.1:$master_port" >/dev/null
fi
cat >"$root/master/roles.toml" <<TOML
[roles.hello]
image = "$image"

[[roles.hello.containers]]
name = "hello"
ports = ["127.0.0.1:8080:8080"]

[assign]
"quickstart" = ["hello"]
TOML
BRINE_MASTER_DASHBOARD_LISTEN="127.0.0.1:$dashboard_port" \
  "$bin/brine-master" serve --data-dir "$root/master" >"$root/master.log" 2>&1 &
echo $! >"$root/master.pid"
for _ in $(seq 1 50); do
  "$bin/brine-master" minions --data-dir "$root/master" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== enrolling and starting a minion"
if [ ! -e "$root/minion/minion.pem" ]; then
  token=$("$bin/brine-master" token create --data-dir "$root/master" 2>/dev/null)
  "$bin/brine-minion" join --master "127.0.0.1:$master_port" --token "$token" \
    --id quickstart --namespace quickstart --data-dir "$root/minion" >/dev/null
fi
"$bin/brine-minion" run --data-dir "$root/minion" >"$root/minion.log" 2>&1 &
echo $! >"$root/minion.pid"
for _ in $(seq 1 50); do
  "$bin/brine-master" minions --data-dir "$root/master" --output json | grep -q '"connected": true' && break
  sleep 0.1
done

echo "== highstate"
"$bin/brine-master" highstate --data-dir "$root/master"
echo
echo "== the deployed container answers:"
curl -fsS http://127.0.0.1:8080/
echo
echo "== its log through the master: the request above, as busybox httpd -v logged it"
"$bin/brine-master" logs hello --tail 20 --data-dir "$root/master"
echo
echo "== the dashboard: open this one-time sign-in link within 5 minutes"
echo "   (the browser warns about the certificate: the fleet's own CA signed it, $root/master/ca.pem;"
echo "   import that file, or accept the warning for this local try)"
"$bin/brine-master" dashboard login --data-dir "$root/master" 2>/dev/null
echo
echo "A new sign-in link:               $bin/brine-master dashboard login --data-dir $root/master"
echo "Run it again (nothing changes):  $bin/brine-master highstate --data-dir $root/master"
echo "See the fleet:                    $bin/brine-master minions --data-dir $root/master"
echo "Follow the container's log:       $bin/brine-master logs hello --follow --data-dir $root/master"
echo "Run a command in it:              $bin/brine-master exec hello --data-dir $root/master -- /bin/busybox uptime"
echo "Stop everything:                  scripts/quickstart.sh stop"
