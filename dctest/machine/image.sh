#!/bin/sh
# Builds the base root of dctest's boot-server machines: Debian bookworm with
# systemd as init, and what ferry's units and actions use on a boot server
# (containerd for image actions), and nftables for the faults a test makes
# inside a machine.
# a name that is the hash of this file, so a change here builds a new one.
#
#   image.sh CACHE_DIR   prints the root's path, building it if missing
#
# The Debian mirror is the one apt on this host is configured with.
set -eu

cache=${1:?usage: image.sh CACHE_DIR}
key=$(sha256sum "$0" | cut -c1-16)
root="$cache/base-$key"
mkdir -p "$cache"
# One build at a time: a second run waits for the first, then finds it.
exec 9>"$cache/.lock"
flock 9
if [ -e "$root/.ferry-image-done" ]; then
	echo "$root"
	exit 0
fi

mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
if [ -z "$mirror" ]; then
	mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\)[[:space:]]\+bookworm[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1)
fi
if [ -z "$mirror" ]; then
	echo "image.sh: no Debian mirror for bookworm in apt's sources (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)" >&2
	exit 1
fi
for tool in debootstrap systemd-nspawn; do
	if ! command -v "$tool" >/dev/null; then
		echo "image.sh: $tool is missing; run: apt-get install -y debootstrap systemd-container" >&2
		exit 1
	fi
done

# Old images are of an older recipe: nothing uses them any more.
for old in "$cache"/base-*; do
	[ -e "$old" ] && [ "$old" != "$root" ] && rm -rf "$old"
done
tmp="$root.tmp"
rm -rf "$tmp"
started=$(date +%s)
echo "image.sh: debootstrap bookworm from $mirror into $tmp (2-6 minutes)" >&2
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,dbus,iproute2,containerd,ca-certificates,nftables \
	bookworm "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
	tail -n 30 "$cache/debootstrap.log" >&2
	exit 1
}

# A machine boots to multi-user without a console, a getty or anything
# that waits for a network manager.
ln -sf /lib/systemd/system/multi-user.target "$tmp/etc/systemd/system/default.target"
for unit in getty@tty1.service console-getty.service systemd-networkd-wait-online.service \
	systemd-update-utmp.service systemd-update-utmp-runlevel.service \
	apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
	ln -sf /dev/null "$tmp/etc/systemd/system/$unit"
done
# The machine's journal is kept in memory, and small.
mkdir -p "$tmp/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' >"$tmp/etc/systemd/journald.conf.d/dctest.conf"
# Images come from the lab registry over plain http; nothing else is set.
: >"$tmp/etc/machine-id"
apt-get -o RootDir="$tmp" clean >/dev/null 2>&1 || true
rm -rf "$tmp/var/lib/apt/lists"/* "$tmp/var/cache/apt"/*.bin
touch "$tmp/.ferry-image-done"
mv "$tmp" "$root"
echo "image.sh: built $root in $(($(date +%s) - started))s" >&2
echo "$root"
