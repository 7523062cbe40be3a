#!/usr/bin/env bash
# Builds the Docker image in which the tests run brine under a real systemd (PID 1): Debian
# bookworm from Debian's debootstrap (minbase, systemd, socat, and ca-certificates, which the
# brine-master package depends on), imported into the local engine.
# Does nothing when the image is there already. Needs root and debootstrap (scripts/test-deps.sh
# installs it). About 2 minutes, once per machine.
#
# Inside, `docker.service` is a socket forwarder to the engine of the machine running the tests
# (bind-mounted at /host/docker.sock), so a test can stop and restart "Docker" under systemd
# without touching the real engine.
set -euo pipefail

# Bump the tag when the recipe below changes.
image=brine-test-systemd:bookworm-2
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
exec 9>/tmp/brine-systemd-test-image.lock
flock 9
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

root=$(mktemp -d /tmp/brine-systemd-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "building $image with debootstrap (once per machine)" >&2
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,socat,procps,ca-certificates \
  bookworm "$root/fs" http://deb.debian.org/debian >"$root/debootstrap.log" 2>&1 || {
  tail -20 "$root/debootstrap.log" >&2
  exit 1
}

cat >"$root/fs/etc/systemd/system/docker.service" <<'UNIT'
[Unit]
Description=Docker Engine API (forwarded to the engine of the machine running the tests)

[Service]
ExecStartPre=/bin/rm -f /run/docker.sock
ExecStart=/usr/bin/socat UNIX-LISTEN:/run/docker.sock,fork,mode=660 UNIX-CONNECT:/host/docker.sock

[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/docker.service "$root/fs/etc/systemd/system/multi-user.target.wants/docker.service"
# Nothing in the container needs a login prompt or a network manager.
rm -f "$root/fs/etc/systemd/system/getty.target.wants/"*
apt_clean="$root/fs/var/cache/apt/archives"
rm -rf "$apt_clean"/*.deb "$root/fs/var/lib/apt/lists/"*

tar -C "$root/fs" -c . | docker import -c 'CMD ["/sbin/init"]' -c 'LABEL io.brine.test=systemd-image' - "$image" >/dev/null
echo "built $image" >&2
