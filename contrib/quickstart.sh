#!/bin/sh
# Quick start on Debian 12: install what is needed, build, and run a working
# gateway in the foreground with its own local Redis and a local demo
# upstream (Debian's docker-registry) seeded with a small image.  Prints how
# to pull through it.  Ctrl-C stops everything this script started.
#
# Environment: GATEWAY_PORT (5000), UPSTREAM_PORT (5001), REDIS_PORT (6390),
# STATE (/tmp/portcullis-quickstart), PORTCULLIS_CONFIG (use this config
# instead of the generated one; the local Redis and demo upstream still
# start).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

GATEWAY_PORT=${GATEWAY_PORT:-5000}
UPSTREAM_PORT=${UPSTREAM_PORT:-5001}
REDIS_PORT=${REDIS_PORT:-6390}
STATE=${STATE:-/tmp/portcullis-quickstart}

contrib/install-deps.sh run
[ -f Makefile ] || { autoreconf -fi && ./configure; }
make -j"$(nproc)"

mkdir -p "$STATE"
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {	# URL WHAT
	i=0
	until curl -s -o /dev/null --noproxy '*' "$1"; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "$2 did not start; see $STATE" >&2; exit 1; }
		sleep 0.1
	done
}

echo "== redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STATE" \
    --save '' --appendonly yes --daemonize no \
    >"$STATE/redis.log" 2>&1 &
pids="$pids $!"

echo "== demo upstream (docker-registry) on 127.0.0.1:$UPSTREAM_PORT"
cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry
http:
  addr: 127.0.0.1:$UPSTREAM_PORT
EOF
docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
pids="$pids $!"
wait_http "http://127.0.0.1:$UPSTREAM_PORT/v2/" docker-registry

echo "== seeding demo/hello:latest"
rm -rf "$STATE/demo-image"
/usr/bin/python3 contrib/demo-image.py "$STATE/demo-image"
skopeo copy -q --dest-tls-verify=false "oci:$STATE/demo-image:latest" \
    "docker://127.0.0.1:$UPSTREAM_PORT/demo/hello:latest"

config=${PORTCULLIS_CONFIG:-$STATE/portcullis.json}
if [ -z "${PORTCULLIS_CONFIG:-}" ]; then
	sed -e "s|@GATEWAY_PORT@|$GATEWAY_PORT|g" \
	    -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
	    -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
	    -e "s|@STATE@|$STATE|g" \
	    conf/quickstart.json.in >"$config"
fi
./portcullis check-config -c "$config"

cat <<EOF

portcullis is listening on http://127.0.0.1:$GATEWAY_PORT (config: $config).
In another terminal, pull the demo image through it:

    skopeo inspect --tls-verify=false docker://127.0.0.1:$GATEWAY_PORT/demo/hello:latest
    podman pull --tls-verify=false 127.0.0.1:$GATEWAY_PORT/demo/hello:latest

The second pull is served from the cache ($STATE/cache). Every request is
recorded in Redis; see who pulled what:

    ./portcullis audit query -c $config
    ./portcullis audit tail -c $config

Ctrl-C stops the gateway, Redis and the demo upstream.

EOF
./portcullis serve -c "$config" &
gw=$!
pids="$gw $pids"
wait "$gw"
