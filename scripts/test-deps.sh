#!/usr/bin/env bash
# Makes sure what the tests need is here: Debian's docker-registry and busybox-static (test
# images are built FROM scratch around the static busybox), a running Docker engine,
# cargo-nextest, and cargo-deb. Installs or starts what is missing, or says exactly what it cannot do.
set -euo pipefail

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=(busybox-static)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
# The systemd tests build a Debian machine image with debootstrap.
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# The fault tests put hosts in network namespaces and cut, slow and drop their links.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v socat >/dev/null 2>&1 || missing+=(socat)
# ...and run a minion with its clock set off by libfaketime.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
# The etcd store's tests and the several-masters tests run real etcd clusters.
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
# The metrics test scrapes both daemons with a real Prometheus and checks names with promtool.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The zero-downtime test puts a steady HTTP load on a published port while hosts deploy; the
# proxy's tests hand it a listening socket the way systemd does.
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
# The dashboard's test drives Debian's Chromium through its WebDriver (Selenium, below).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# The etcd client crate compiles etcd's .proto files with protoc when it is built.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the Docker engine is not running and only root can start it here" >&2
    exit 1
  fi
  echo "starting dockerd" >&2
  (dockerd >/tmp/brine-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/brine-dockerd.log" >&2; exit 1; }
fi

# The systemd tests run brine in a Debian machine with systemd as PID 1; building its image
# takes a minute or two, once per machine.
"$(dirname "$0")/systemd-test-image.sh"

# The CI-client test calls the gRPC API from Python, as a CI pipeline would.
venv="$(dirname "$0")/../.venv-tests"
if ! "$venv/bin/python" -c 'import grpc, grpc_tools, grpc_status, grpc_reflection, selenium' >/dev/null 2>&1; then
  echo "installing grpcio for the Python client test and Selenium for the dashboard's" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$(dirname "$0")/../tests/python/requirements.txt"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# The packaging test builds brine's Debian packages (scripts/package.sh). Pinned: the tests
# package debug builds, which cargo-deb only warns about today.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb" >&2
  cargo install cargo-deb --locked --version 3.8.0
fi
