#!/bin/sh
# Try ferry on one machine: three boot servers from the .deb's own
# binaries, Debian's etcd, and a local release directory instead of
# GitHub. Each server is a dpkg root of its own under $T; nothing is
# installed on this machine. See docs/operator-guide.md, "Try it on one
# machine", for what each step does.
#
#   sh docs/try-it.sh          # build two releases, start the fleet, roll out both
#   sh docs/try-it.sh stop     # stop every process it started
#
# Needs: etcd (apt-get install etcd-server), dpkg, and a build of ferry
# (make, Go); run it from the top of a ferry checkout.
set -eu
T=${T:-/tmp/ferry-try}
V1=${V1:-2026.12.06-1}
V2=${V2:-2026.12.06-2}
SERVERS="boot-0 boot-1 boot-2"

# Each process runs in a session of its own, so that stop ends it with
# everything it started (a worker's restart loop and the worker).
stop() {
	if [ -f "$T/pids" ]; then
		for p in $(cat "$T/pids"); do kill -- "-$p" 2>/dev/null || true; done
	fi
	rm -f "$T/pids"
}
if [ "${1:-}" = stop ]; then
	stop
	exit 0
fi
command -v etcd >/dev/null || { echo "etcd is missing: apt-get install etcd-server" >&2; exit 1; }
stop
rm -rf "$T"
mkdir -p "$T/releases" "$T/later"
bg() { setsid "$@" & echo $! >>"$T/pids"; }

echo "== two releases of ferry, and the key that signs them"
make -s deb VERSION="$V1" >/dev/null && cp "dist/ferry_${V1}_amd64.deb" "$T/releases/"
make -s deb VERSION="$V2" >/dev/null && cp "dist/ferry_${V2}_amd64.deb" "$T/later/"
bin/ferry-ci keygen "$T/try"

echo "== etcd, and the release directory served as GitHub would"
bg etcd --name try --data-dir "$T/etcd" --listen-client-urls http://127.0.0.1:2379 \
	--advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
	--initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster try=http://127.0.0.1:2380 >"$T/etcd.log" 2>&1
bg bin/ferry-ci serve-releases --key "$T/try.key" --listen 127.0.0.1:8480 "$T/releases" >"$T/serve.log" 2>&1

# The plan the servers roll out: one step that says where each one is.
cat >"$T/artifacts.yaml" <<EOF
plan:
  steps:
    - name: hello
      strategy: lockstep
      actions:
        - run: {command: sh, args: [-c, 'echo "\$FERRY_SERVER runs \$FERRY_VERSION" >>$T/hello.log']}
EOF

echo "== three servers, each a dpkg root with ferry $V1"
i=0
for s in $SERVERS; do
	R="$T/$s/root"
	mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers" "$T/$s/keys"
	: >"$R/var/lib/dpkg/status"
	install="dpkg,--root=$R,--admindir=$R/var/lib/dpkg,--force-not-root,--force-script-chrootless,--log=$T/$s/dpkg.log,-i"
	$(echo "$install" | tr , ' ') "$T/releases/ferry_${V1}_amd64.deb" >/dev/null
	cp "$T/try.pub" "$T/$s/keys/"
	cat >"$T/$s/config.yml" <<EOF
endpoints: http://127.0.0.1:2379
server-id: $s
data-dir: $T/$s/data
trusted-keys: $T/$s/keys
github-api-url: http://127.0.0.1:8480/api/v3/
install-command: [$(echo "$install" | sed "s/,/, /g")]
# Three servers on one host: each serves its peers on a port of its own.
peer-listen: 127.0.0.1:97${i}4
EOF
	# A worker that upgraded itself exits 75; systemd would start the new
	# binary, this loop does.
	bg sh -c "while :; do $R/usr/sbin/ferry-worker --config $T/$s/config.yml --listen 127.0.0.1:97${i}2 --artifacts $T/artifacts.yaml; [ \$? = 75 ] || break; done" >"$T/$s/worker.log" 2>&1
	bg "$R/usr/sbin/ferry-updater" --config "$T/$s/config.yml" --listen "127.0.0.1:97${i}1" >"$T/$s/updater.log" 2>&1
	i=$((i + 1))
done

echo "== the fleet: its members, its repository, its env"
export FERRY_ENDPOINTS=http://127.0.0.1:2379
ferry() { "$T/boot-0/root/usr/bin/ferry" "$@"; }
for s in $SERVERS; do ferry join "$s"; done
ferry config set github-repo local/ferry
ferry config set env prod
ferry release check-now
ferry status --until-finished --for "$V1" | tail -n 5

echo "== a new release: ferry $V2"
cp "$T/later/ferry_${V2}_amd64.deb" "$T/releases/"
sleep 3 # serve-releases looks at the directory every 2 seconds
ferry release check-now
ferry status --until-finished --for "$V2" | tail -n 5
cat "$T/hello.log"
echo "== the status page: http://127.0.0.1:9701/   stop it all: sh docs/try-it.sh stop"
