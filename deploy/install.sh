#!/usr/bin/env bash
# Installs brine's binaries and systemd units on this host.
#   deploy/install.sh master   # brine-master (and its CLI), run as the system user brine-master
#   deploy/install.sh minion   # brine-minion, run as root (it drives Docker)
# Run from a checkout after `cargo build --release`, as root. Running it again upgrades the
# binary and the unit; restart the service afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
case "$what" in
  master|minion) ;;
  *) echo "usage: deploy/install.sh master|minion" >&2; exit 2 ;;
esac
binary="target/release/brine-$what"
if [ ! -x "$binary" ]; then
  echo "$binary is missing: run \`cargo build --release\` first" >&2
  exit 1
fi
if [ "$what" = master ] && ! getent passwd brine-master >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/brine-master --no-create-home \
    --shell /usr/sbin/nologin --comment "brine master" brine-master
fi
install -m 0755 "$binary" /usr/local/bin/
# The unit names the Debian package's paths (scripts/package.sh); a manual install lives under
# /usr/local, which the package manager leaves alone.
sed -e "s|/usr/bin/brine-$what|/usr/local/bin/brine-$what|" \
  -e "s|/usr/share/doc/brine-$what/|/usr/local/share/doc/brine/|" \
  "deploy/brine-$what.service" >"/etc/systemd/system/brine-$what.service"
chmod 0644 "/etc/systemd/system/brine-$what.service"
install -D -m 0644 README.md /usr/local/share/doc/brine/README.md
systemctl daemon-reload
echo "installed brine-$what; see README.md, section 'Installing on real hosts', for the next steps"
