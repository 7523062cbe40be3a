#!/usr/bin/env bash
# Installs brine's binaries and systemd units on this host.
#   deploy/install.sh master   # brine-master (and its CLI), run as the system user brine-master
#   deploy/install.sh minion   # brine-minion, run as root (it drives Docker), and beside it
#                              # brine-proxy, the host's proxy for published ports
# Run from a checkout after `cargo build --release`, as root. Running it again upgrades the
# binaries and the units; restart the minion afterwards (the proxy is restarted here).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
case "$what" in
  master) daemons=(brine-master) ;;
  minion) daemons=(brine-minion brine-proxy) ;;
  *) echo "usage: deploy/install.sh master|minion" >&2; exit 2 ;;
esac
for daemon in "${daemons[@]}"; do
  if [ ! -x "target/release/$daemon" ]; then
    echo "target/release/$daemon is missing: run \`cargo build --release\` first" >&2
    exit 1
  fi
done
if [ "$what" = master ] && ! getent passwd brine-master >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/brine-master --no-create-home \
    --shell /usr/sbin/nologin --comment "brine master" brine-master
fi
for daemon in "${daemons[@]}"; do
  install -m 0755 "target/release/$daemon" /usr/local/bin/
  # The unit names the Debian package's paths (scripts/package.sh); a manual install lives
  # under /usr/local, which the package manager leaves alone.
  sed -e "s|/usr/bin/$daemon|/usr/local/bin/$daemon|" \
    -e "s|/usr/share/doc/brine-$what/|/usr/local/share/doc/brine/|" \
    "deploy/$daemon.service" >"/etc/systemd/system/$daemon.service"
  chmod 0644 "/etc/systemd/system/$daemon.service"
done
install -D -m 0644 README.md /usr/local/share/doc/brine/README.md
if [ "$what" = minion ]; then
  install -D -m 0644 deploy/proxy.toml.example /usr/local/share/doc/brine/examples/proxy.toml.example
fi
systemctl daemon-reload
if [ "$what" = minion ]; then
  # As the package does: the proxy needs no configuration and serves nothing until the minion
  # routes a port, so it runs from now on, and at every boot. A restart (of a running proxy,
  # on upgrade) keeps its ports open: the listening sockets wait in systemd's store.
  systemctl enable brine-proxy
  systemctl restart brine-proxy
fi
echo "installed ${daemons[*]}; see README.md, section 'Installing on real hosts', for the next steps"
