#!/bin/bash
# cache_bench.sh: the pull-through cache side by side with nginx, in one
# run, on 127.0.0.1, against one docker-registry upstream:
#
#   warm   1 GiB blob from the cache vs nginx serving the same file
#          statically (sendfile on and off; the better one is the baseline),
#          for portcullis with cache.sendfile auto and off; MB/s and server
#          CPU seconds per GiB
#   cold   1 GiB blob through an empty cache vs straight from the registry;
#          time to first byte, and the number of upstream blob GETs (must
#          be 1)
#   conc   16 concurrent warm pulls of a 64 MiB blob vs nginx proxy_cache
#          (warmed); aggregate MB/s and CPU per GiB
#   mfst   manifest GET by digest from the cache, with cache.sendfile auto,
#          on and off, vs nginx static (sendfile on and off): req/s and
#          server CPU per request (bench/lib/load.c, CONNS keep-alive
#          connections, SECONDS_PER_ROUND per round)
#   rss    peak RSS of the gateway and of nginx (one process each)
#
# Prints ratios; never fails on a number.  Everything started here is
# stopped by PID on exit.  Not part of CI; see README.md.
#
# Environment (all optional):
#   PORTCULLIS_BIN      gateway binary (default <repo>/portcullis)
#   DOCKER_REGISTRY_BIN default /usr/bin/docker-registry
#   NGINX_BIN           default: nginx on PATH or /usr/sbin/nginx
#   CONNS               manifest load connections (default 16)
#   SECONDS_PER_ROUND   manifest load per round and mode (default 5)
#   SIZE_MIB            the big blob, MiB (default 1024)
#   RUNS                rounds per measurement (default 3, max 20)
#   BLOB_DIR            where random blobs are made once (default
#                       /tmp/portcullis-bench)
#   PREWARM=0           no memory touch before each cold pull (see
#                       bench/blob_1g.sh: on a VM the first write into
#                       never-used page cache costs a host fault per page)
#   KEEP_WORK=1         keep the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
PREWARM=${PREWARM:-1}
CONNS=${CONNS:-16}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
BLOB_DIR=${BLOB_DIR:-/tmp/portcullis-bench}

case $RUNS in ''|*[!0-9]*) echo "RUNS must be a number" >&2; exit 2;; esac
case $SIZE_MIB in ''|*[!0-9]*) echo "SIZE_MIB must be a number" >&2; exit 2;; esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] || { echo "RUNS: 1..20" >&2; exit 2; }
for tool in curl python3 sha256sum "$DOCKER_REGISTRY_BIN" "$PORTCULLIS_BIN" \
    "$NGINX_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init cache-bench
TICK=$(getconf CLK_TCK)

# CPU ticks (user + system) of a process.
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$1/stat"
}
hwm_reset() { echo 5 > "/proc/$1/clear_refs" 2>/dev/null || true; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# --- blobs -----------------------------------------------------------------
mkdir -p "$BLOB_DIR"
mkblob() {	# mkblob MiB -> path; made once, with a .sha256 beside it
	local f=$BLOB_DIR/blob_${1}m.bin size=$(($1 * 1048576))
	if [ ! -f "$f.sha256" ] || [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" != "$size" ]; then
		echo "creating $f" >&2
		head -c "$size" /dev/urandom > "$f.tmp"
		mv "$f.tmp" "$f"
		sha256sum "$f" | cut -d' ' -f1 > "$f.sha256"
	fi
	echo "$f"
}
big=$(mkblob "$SIZE_MIB")
mid=$(mkblob 64)
big_d=sha256:$(cat "$big.sha256")
mid_d=sha256:$(cat "$mid.sha256")
big_size=$((SIZE_MIB * 1048576))
mid_size=$((64 * 1048576))

# --- docker-registry, with its access log (the upstream-GET witness) ------
start_registry access

push() {	# push FILE DIGEST
	local loc path url
	loc=$(curl -sS -X POST -H 'Content-Length: 0' -D - -o /dev/null \
		"$R/v2/bench/app/blobs/uploads/" | tr -d '\r' |
		awk 'tolower($1) == "location:" {print $2}')
	case $loc in http://*) path=/${loc#*://*/};; *) path=$loc;; esac
	case $path in *\?*) url="$R$path&digest=$2";; *) url="$R$path?digest=$2";; esac
	curl -sS -f -X PUT -T "$1" -H 'Expect:' -o /dev/null "$url"
}
push "$big" "$big_d"
push "$mid" "$mid_d"
# A manifest naming the 64 MiB blob, for the manifest-by-digest rate.
printf '{}' > "$work/config.json"
cfg_d=sha256:$(sha256sum "$work/config.json" | cut -d' ' -f1)
push "$work/config.json" "$cfg_d"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
	"$cfg_d" "$mid_d" "$mid_size" > "$work/manifest.json"
man_d=sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
MT=application/vnd.oci.image.manifest.v1+json
curl -sS -f -X PUT -H "Content-Type: $MT" --data-binary @"$work/manifest.json" \
	-o /dev/null "$R/v2/bench/app/manifests/v1"

# --- portcullis ------------------------------------------------------------
gpid=
G=
start_gw() {	# start_gw CACHEDIR SENDFILE
	local port
	port=$(free_port)
	cat > "$work/gw.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "workers": 1,
  "timeouts": {"body": 600, "upstream_response": 600},
  "log": {"level": "warn"},
  "cache": {"dir": "$1", "max_bytes": 17179869184, "sendfile": "$2"},
  "upstreams": [{"name": "up1", "url": "$R", "default": true}],
  "policy": {"rules": [{"id": "all", "effect": "allow",
    "repositories": ["**"], "subjects": ["anonymous"], "actions": ["*"]}]}
}
JSON
	"$PORTCULLIS_BIN" serve -c "$work/gw.json" >> "$work/gw.log" 2>&1 &
	gpid=$!
	pids+=($gpid)
	G=http://127.0.0.1:$port
	wait_http "$G/healthz" portcullis "$gpid" "$work/gw.log"
}

# --- nginx: static (sendfile on, off) and proxy_cache, one process --------
n=$work/nginx
mkdir -p "$n/tmp" "$n/static/v2/bench/app/blobs" "$n/static/v2/bench/app/manifests" "$n/pcache"
ln -sf "$big" "$n/static/v2/bench/app/blobs/$big_d"
ln -sf "$mid" "$n/static/v2/bench/app/blobs/$mid_d"
cp "$work/manifest.json" "$n/static/v2/bench/app/manifests/$man_d"
p_on=$(free_port) p_off=$(free_port) p_pc=$(free_port)
cat > "$n/nginx.conf" <<NGX
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    # The manifest load keeps its connections (nginx closes one after
    # 1,000 requests by default, which the load counts as a failure).
    keepalive_requests 100000000;
    types { application/octet-stream bin; }
    default_type application/octet-stream;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    proxy_cache_path $n/pcache levels=1:2 keys_zone=blobs:10m max_size=4g
                     inactive=1h use_temp_path=off;
    server { listen 127.0.0.1:$p_on;  root $n/static; sendfile on; tcp_nopush on; }
    server { listen 127.0.0.1:$p_off; root $n/static; sendfile off; output_buffers 2 256k; }
    server {
        listen 127.0.0.1:$p_pc;
        sendfile on;
        location / {
            proxy_pass http://127.0.0.1:$rport;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache blobs;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_read_timeout 600s;
        }
    }
}
NGX
"$NGINX_BIN" -p "$n" -c "$n/nginx.conf" > "$n/log" 2>&1 &
npid=$!
pids+=($npid)
wait_http "http://127.0.0.1:$p_on/v2/bench/app/manifests/$man_d" nginx "$npid" "$n/log"

# --- measurements ----------------------------------------------------------
res=$work/results
: > "$res"

# get NAME PID URL SIZE: one GET to /dev/null; appends
# "NAME secs ttfb cpu_ticks" to the results.
get() {
	local c0 c1 out
	c0=$(cpu_ticks "$2")
	out=$(curl -sS --max-time 900 -o /dev/null \
		-w '%{http_code} %{size_download} %{time_total} %{time_starttransfer}' "$3")
	c1=$(cpu_ticks "$2")
	set -- "$1" "$2" "$3" "$4" $out
	[ "$5" = 200 ] && [ "$6" = "$4" ] || { echo "GET $3: HTTP $5, $6 bytes" >&2; exit 1; }
	echo "$1 $7 $8 $((c1 - c0))" >> "$res"
	printf '  %-22s %7.3f s  ttfb %6.1f ms  cpu %d ticks\n' "$1" "$7" \
		"$(python3 -c "print($8*1000)")" $((c1 - c0)) >&2
}

# conc NAME PID URL: 16 concurrent GETs of the 64 MiB blob.
conc() {
	local c0 c1 t0 t1 i
	c0=$(cpu_ticks "$2")
	t0=$(date +%s.%N)
	for i in $(seq 16); do
		curl -sS -f --max-time 900 -o /dev/null "$3" &
		cpids[$i]=$!
	done
	for i in $(seq 16); do wait "${cpids[$i]}"; done
	t1=$(date +%s.%N)
	c1=$(cpu_ticks "$2")
	echo "$1 $(python3 -c "print($t1-$t0)") 0 $((c1 - c0))" >> "$res"
}

upstream_gets() {	# upstream GETs of a blob so far
	grep -c "\"GET /v2/bench/app/blobs/$1 " "$work/registry/access.log" || true
}

echo "== cold: $SIZE_MIB MiB through an empty cache vs direct" >&2
for run in $(seq "$RUNS"); do
	get direct "$rpid" "$R/v2/bench/app/blobs/$big_d" "$big_size"
	before=$(upstream_gets "$big_d")
	start_gw "$work/cache-cold-$run" auto
	[ "$PREWARM" = 0 ] || python3 -c "
n = $big_size * 3 // 2
b = bytearray(n)
b[::4096] = b'\x01' * len(range(0, n, 4096))"
	hwm_reset "$gpid"
	get cold "$gpid" "$G/v2/bench/app/blobs/$big_d" "$big_size"
	after=$(upstream_gets "$big_d")
	echo "cold_upstream_gets $((after - before)) 0 0" >> "$res"
	echo "rss_cold $(hwm_kib "$gpid") 0 0" >> "$res"
	[ "$run" = "$RUNS" ] || { stop_pid "$gpid"; rm -rf "$work/cache-cold-$run"; }
done
cdir=$work/cache-cold-$RUNS

echo "== warm: $SIZE_MIB MiB from the cache vs nginx static" >&2
get warm-fill "$gpid" "$G/v2/bench/app/blobs/$mid_d" "$mid_size"
for sf in auto off; do
	stop_pid "$gpid"
	start_gw "$cdir" "$sf"
	hwm_reset "$gpid"
	for run in $(seq "$RUNS"); do
		get "warm_$sf" "$gpid" "$G/v2/bench/app/blobs/$big_d" "$big_size"
	done
	echo "rss_warm_$sf $(hwm_kib "$gpid") 0 0" >> "$res"
done
hwm_reset "$npid"
for run in $(seq "$RUNS"); do
	get nginx_sendfile_on "$npid" "http://127.0.0.1:$p_on/v2/bench/app/blobs/$big_d" "$big_size"
	get nginx_sendfile_off "$npid" "http://127.0.0.1:$p_off/v2/bench/app/blobs/$big_d" "$big_size"
done
echo "rss_nginx $(hwm_kib "$npid") 0 0" >> "$res"

echo "== 16 concurrent warm pulls of 64 MiB" >&2
stop_pid "$gpid"
start_gw "$cdir" auto
curl -sS -f -o /dev/null "http://127.0.0.1:$p_pc/v2/bench/app/blobs/$mid_d"	# warm nginx
curl -sS -f -o /dev/null "http://127.0.0.1:$p_pc/v2/bench/app/blobs/$mid_d"
for run in $(seq "$RUNS"); do
	conc conc_portcullis "$gpid" "$G/v2/bench/app/blobs/$mid_d"
	conc conc_nginx_proxy_cache "$npid" "http://127.0.0.1:$p_pc/v2/bench/app/blobs/$mid_d"
done
echo "rss_conc $(hwm_kib "$gpid") 0 0" >> "$res"

echo "== manifest GET by digest: requests/s ($CONNS connections, ${SECONDS_PER_ROUND}s per round)" >&2
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"
# mfst NAME PID PORT: one round; "NAME req/s 0 cpu_ticks requests".
mfst() {
	local c0 c1 out
	c0=$(cpu_ticks "$2")
	out=$("$work/load" "$3" "/v2/bench/app/manifests/$man_d" "$CONNS" \
		"$SECONDS_PER_ROUND" "Accept: $MT")
	c1=$(cpu_ticks "$2")
	set -- "$1" "$2" "$3" $out
	[ "$6" = 0 ] || echo "note: $1: $6 failed requests" >&2
	echo "$1 $4 0 $((c1 - c0)) $5" >> "$res"
	printf '  %-26s %9.0f req/s\n' "$1" "$4" >&2
}
for run in $(seq "$RUNS"); do
	for sf in auto on off; do
		stop_pid "$gpid"
		start_gw "$cdir" "$sf"
		curl -sS -f -o /dev/null -H "Accept: $MT" "$G/v2/bench/app/manifests/$man_d"
		mfst "mfst_portcullis_$sf" "$gpid" "${G##*:}"
	done
	mfst mfst_nginx_sendfile_on "$npid" "$p_on"
	mfst mfst_nginx_sendfile_off "$npid" "$p_off"
done

python3 "$here/lib/cache_report.py" "$res" "$big_size" "$mid_size" "$TICK"
