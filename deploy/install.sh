#!/usr/bin/env bash
# Installs brine's binaries and systemd units on this host.
#   deploy/install.sh master   # brine-master (and its CLI)
#   deploy/install.sh minion   # brine-minion
# Run from a checkout after `cargo build --release`, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: deploy/install.sh master|minion}
case "$what" in
  master|minion) ;;
  *) echo "usage: deploy/install.sh master|minion" >&2; exit 2 ;;
esac
install -m 0755 "target/release/brine-$what" /usr/local/bin/
install -m 0644 "deploy/brine-$what.service" /etc/systemd/system/
systemctl daemon-reload
echo "installed brine-$what; see README.md, section 'Installing on real hosts', for the next steps"
