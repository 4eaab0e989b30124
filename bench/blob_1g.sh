#!/bin/bash
# blob_1g.sh: push and pull one large blob (1 GiB by default) directly to a
# docker-registry and through portcullis (and through nginx as a plain
# reverse-proxy baseline, when nginx is installed), side by side in one run:
# the pull through portcullis here is the pass-through path (no cache).
# Then, per round, the cached pull: a cold pull through a portcullis with an
# empty cache, and one through docker-registry's own proxy mode (the
# reference registry as a pull-through cache, empty storage), each
# followed by a warm pull; the number of upstream GETs of the blob that
# each cold pull made (portcullis: must be 1).  In the same rounds, the
# floor: bench/lib/fill_floor.c (a measuring device, not a product), which
# does only what a cold fill must (one upstream GET; every byte written to
# a temp file in a cache dir, SHA-256'd from memory on a second thread,
# sent to the client with sendfile, the last byte after the digest
# matched and the file was fdatasync'd and renamed), so the report says
# how far portcullis is from this machine's limit (portcullis/floor) and
# whether the goals are reachable here at all (floor/direct,
# floor/registry proxy).
# Prints MB/s per path, the ratio to direct, each proxy's CPU seconds per
# GiB (utime + stime from /proc/PID/stat around the transfer: steadier
# than MB/s on a shared machine) and its peak RSS.  Everything runs on
# 127.0.0.1 and everything started here is stopped by PID on exit.  Not
# part of CI; see README.md.
#
# Memory: on a virtual machine whose host backs guest memory lazily (and
# takes freed pages back), the first write into never-used page cache
# costs the writer a host fault per page, about 2 s of system time per
# GiB here -- more than everything else a cold pull does.  Every cache
# path writes the blob into the page cache once, so before each cold pull
# PREWARM touches and frees that much anonymous memory (1.5 x the blob),
# making the measurement about the proxies, the same for each of them;
# PREWARM=0 measures the machine as it comes.
#
# Environment (all optional):
#   PORTCULLIS_BIN      gateway binary (default <repo>/portcullis); when it is
#                       missing the run is direct (and nginx) only
#   DOCKER_REGISTRY_BIN default /usr/bin/docker-registry
#   NGINX_BIN           default: nginx on PATH or /usr/sbin/nginx; NGINX=0
#                       skips the nginx baseline
#   SIZE_MIB            blob size in MiB (default 1024)
#   RUNS                rounds of (push, pull) per path (default 3, max 20)
#   PULLS               pass-through pulls per path per round (default 1,
#                       max 10), alternating between the paths; the
#                       proxies' order rotates from round to round
#   BLOB_DIR            where the random blob is created once and cached
#                       (default /tmp/portcullis-bench)
#   WATERMARK           gateway buffers.high_watermark (default 262144)
#   WORKERS             gateway workers (default 1: one process, as the
#                       nginx baseline runs, so that /proc/PID/stat holds
#                       all of its CPU; 0 is one per core, under a master
#                       whose own CPU is then all that is counted)
#   CACHE=0             skip the cold/warm cached pulls
#   PORTCULLIS_BIN_B    a second gateway binary (e.g. an older build) whose
#                       pass-through pushes and pulls and cached pulls run
#                       in the same rounds, as "before"
#   PREWARM=0           no memory touch before the cold pulls (see above)
#   FLOOR=0             skip the floor path (bench/lib/fill_floor.c, built
#                       with cc -lcrypto: the least a cold fill must do)
#   PASS=0              skip the pass-through pushes and pulls (only the
#                       one direct push the cached part reads)
#   KEEP_WORK=1         keep the temp dir (configs, logs, registry storage)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
PULLS=${PULLS:-1}
BLOB_DIR=${BLOB_DIR:-/tmp/portcullis-bench}
WATERMARK=${WATERMARK:-262144}
WORKERS=${WORKERS:-1}
NGINX=${NGINX:-1}
CACHE=${CACHE:-1}
FLOOR=${FLOOR:-1}
PASS=${PASS:-1}
PREWARM=${PREWARM:-1}
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
CURL_MAX_TIME=${CURL_MAX_TIME:-900}

case $RUNS in ''|*[!0-9]*) echo "RUNS must be a number" >&2; exit 2;; esac
case $PULLS in ''|*[!0-9]*) echo "PULLS must be a number" >&2; exit 2;; esac
[ "$PULLS" -ge 1 ] && [ "$PULLS" -le 10 ] || { echo "PULLS: 1..10" >&2; exit 2; }
case $SIZE_MIB in ''|*[!0-9]*) echo "SIZE_MIB must be a number" >&2; exit 2;; esac
case $WORKERS in ''|*[!0-9]*) echo "WORKERS must be a number" >&2; exit 2;; esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] || { echo "RUNS: 1..20" >&2; exit 2; }
for tool in curl python3 sha256sum "$DOCKER_REGISTRY_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init bench-run

# --- the blob, made once ---------------------------------------------------
mkdir -p "$BLOB_DIR"
blob=$BLOB_DIR/blob_${SIZE_MIB}m.bin
size=$((SIZE_MIB * 1048576))
if [ ! -f "$blob.sha256" ] || [ "$(stat -c %s "$blob" 2>/dev/null || echo 0)" != "$size" ]; then
	echo "creating $blob ($SIZE_MIB MiB of random data)" >&2
	rm -f "$blob.sha256"
	head -c "$size" /dev/urandom > "$blob.tmp"
	mv "$blob.tmp" "$blob"
	sha256sum "$blob" | cut -d' ' -f1 > "$blob.sha256"
fi
digest=sha256:$(cat "$blob.sha256")

# --- docker-registry -------------------------------------------------------
start_registry access
TICK=$(getconf CLK_TCK)
# Allow everything: with no policy the gateway denies every request.
POLICY='"policy": {"rules": [{"id": "all", "effect": "allow",
  "repositories": ["**"], "subjects": ["anonymous"], "actions": ["*"]}]}'

targets=("direct http://127.0.0.1:$rport -")

# --- portcullis ------------------------------------------------------------
gpid=
if [ -x "$PORTCULLIS_BIN" ]; then
	gport=$(free_port)
	mkdir -p "$work/gateway"
	cat > "$work/gateway/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$gport"},
  "workers": $WORKERS,
  "limits": {"header_bytes": 65536, "header_count": 100, "uri_bytes": 8192},
  "buffers": {"high_watermark": $WATERMARK},
  "timeouts": {"header": 30, "idle": 60, "body": 600,
               "upstream_connect": 10, "upstream_response": 600},
  "upstreams": [{"name": "up1", "url": "http://127.0.0.1:$rport",
                 "default": true}],
  $POLICY
}
JSON
	"$PORTCULLIS_BIN" serve -c "$work/gateway/config.json" \
		> "$work/gateway/log" 2>&1 &
	pids+=($!)
	gpid=$!
	wait_http "http://127.0.0.1:$gport/healthz" portcullis "$gpid" "$work/gateway/log"
	targets+=("portcullis http://127.0.0.1:$gport $gpid")
	# The second binary's pass-through, in the same rounds ("before").
	if [ -n "${PORTCULLIS_BIN_B:-}" ]; then
		bport=$(free_port)
		mkdir -p "$work/gateway-b"
		sed "s/127.0.0.1:$gport/127.0.0.1:$bport/" \
			"$work/gateway/config.json" > "$work/gateway-b/config.json"
		"$PORTCULLIS_BIN_B" serve -c "$work/gateway-b/config.json" \
			> "$work/gateway-b/log" 2>&1 &
		pids+=($!)
		bpid=$!
		wait_http "http://127.0.0.1:$bport/healthz" "portcullis (B)" \
			"$bpid" "$work/gateway-b/log"
		targets+=("before http://127.0.0.1:$bport $bpid")
	fi
else
	echo "note: $PORTCULLIS_BIN not found or not executable: direct only" >&2
fi

# --- nginx baseline ---------------------------------------------------------
if [ "$NGINX" != 0 ] && [ -x "$NGINX_BIN" ]; then
	nport=$(free_port)
	n=$work/nginx
	mkdir -p "$n/tmp"
	# One process (master_process off) so its RSS is the whole proxy's.
	cat > "$n/nginx.conf" <<NGX
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    server {
        listen 127.0.0.1:$nport;
        client_max_body_size 0;
        proxy_request_buffering off;
        # Stream responses through memory buffers only (like portcullis's
        # watermarks): never spool to disk.
        proxy_buffering on;
        proxy_buffer_size 64k;
        proxy_buffers 4 64k;
        proxy_busy_buffers_size 128k;
        proxy_max_temp_file_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$http_host;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        location / { proxy_pass http://127.0.0.1:$rport; }
    }
}
NGX
	"$NGINX_BIN" -p "$n" -c "$n/nginx.conf" > "$n/log" 2>&1 &
	pids+=($!)
	npid=$!
	wait_http "http://127.0.0.1:$nport/v2/" nginx "$npid" "$n/log"
	targets+=("nginx http://127.0.0.1:$nport $npid")
fi

# --- measurements -----------------------------------------------------------

# Reset a process's peak RSS (Linux >= 4.0: "5" > clear_refs); 0 on success.
hwm_reset() {
	[ "$1" != - ] && { echo 5 > "/proc/$1/clear_refs"; } 2>/dev/null
}
hwm_kib() {
	[ "$1" = - ] && { echo -; return; }
	awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -
}
# CPU ticks (utime + stime) of a process, "-" for none.
cpu_ticks() {
	[ "$1" = - ] && { echo -; return; }
	awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo -
}
cpu_delta() {	# cpu_delta BEFORE AFTER
	if [ "$1" = - ] || [ "$2" = - ]; then echo -; else echo $(($2 - $1)); fi
}

# push BASE REPO -> "seconds"; one monolithic PUT of the whole blob.
push() {
	local base=$1 repo=$2 loc path url out
	loc=$(curl -sS --max-time 30 -X POST -H 'Content-Length: 0' -D - -o /dev/null \
		"$base/v2/$repo/blobs/uploads/" | tr -d '\r' |
		awk 'tolower($1) == "location:" {print $2}')
	[ -n "$loc" ] || { echo "push $base: no Location" >&2; return 1; }
	case $loc in
	http://*|https://*) path=/${loc#*://*/} ;;
	*) path=$loc ;;
	esac
	case $path in *\?*) url="$base$path&digest=$digest";; *) url="$base$path?digest=$digest";; esac
	# "Expect:" off: curl would otherwise wait for 100-continue.
	out=$(curl -sS --max-time "$CURL_MAX_TIME" -X PUT -T "$blob" -H 'Expect:' \
		-H 'Content-Type: application/octet-stream' -o /dev/null \
		-w '%{http_code} %{time_total}' "$url")
	[ "${out%% *}" = 201 ] || { echo "push $base: HTTP ${out%% *}" >&2; return 1; }
	echo "${out#* }"
}

# pull BASE REPO -> "seconds"; GET into /dev/null, size checked.
pull() {
	local out
	out=$(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null \
		-w '%{http_code} %{size_download} %{time_total}' \
		"$1/v2/$2/blobs/$digest")
	set -- $out
	[ "$1" = 200 ] && [ "$2" = "$size" ] ||
		{ echo "pull: HTTP $1, $2 bytes" >&2; return 1; }
	echo "$3"
}

results=$work/results
: > "$results"
echo "blob $SIZE_MIB MiB $digest, $RUNS run(s), paths: $(for t in "${targets[@]}"; do printf '%s ' "${t%% *}"; done)" >&2
# order RUN: the targets' indexes, direct first, the proxies rotated by
# RUN - 1, so that no proxy always comes right after direct or last.
order() {
	local n=$((${#targets[@]} - 1)) i
	echo 0
	for ((i = 0; i < n; i++)); do echo $((1 + (i + $1 - 1) % n)); done
}
for run in $(seq "$RUNS"); do
	for op in push pull; do
		reps=1
		[ "$op" = pull ] && reps=$PULLS
		for i in $(for rep in $(seq "$reps"); do order "$run"; done); do
			set -- ${targets[$i]}
			name=$1 base=$2 pid=$3
			# PASS=0: only the push the cached pulls read.
			[ "$PASS" != 0 ] || { [ "$op $name $run" = "push direct 1" ] ||
				continue; }
			if hwm_reset "$pid"; then reset=1; else reset=0; fi
			c0=$(cpu_ticks "$pid")
			secs=$($op "$base" "bench/$name-$run") || exit 1
			c1=$(cpu_ticks "$pid")
			echo "$op $name $run $secs $(hwm_kib "$pid") $reset $(cpu_delta "$c0" "$c1")" >> "$results"
			printf '  run %d %-4s %-10s %6.2f s\n' "$run" "$op" "$name" "$secs" >&2
		done
	done
done

# --- cold and warm pulls through a cache --------------------------------------
# prewarm: touch and free 1.5 x the blob of anonymous memory (see the top).
prewarm() {
	[ "$PREWARM" = 0 ] && return 0
	python3 -c "
n = $size * 3 // 2
b = bytearray(n)
b[::4096] = b'\x01' * len(range(0, n, 4096))"
}
upstream_gets() {	# GETs of the blob the upstream registry has answered
	grep -c "\"GET /v2/[^ ]*/blobs/$digest " "$work/registry/access.log" || true
}

# start_cache_gw DIR -> cport, cpid: a portcullis with an empty cache.
start_cache_gw() {	# start_cache_gw DIR [BIN]
	local bin=${2:-$PORTCULLIS_BIN}
	cport=$(free_port)
	mkdir -p "$1/cache"
	cat > "$1/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$cport"},
  "workers": $WORKERS,
  "buffers": {"high_watermark": $WATERMARK},
  "timeouts": {"header": 30, "idle": 60, "body": 600,
               "upstream_connect": 10, "upstream_response": 600},
  "cache": {"dir": "$1/cache", "max_bytes": $((size * 4))},
  "upstreams": [{"name": "up1", "url": "http://127.0.0.1:$rport",
                 "default": true}],
  $POLICY
}
JSON
	"$bin" serve -c "$1/config.json" > "$1/log" 2>&1 &
	cpid=$!
	pids+=($cpid)
	wait_http "http://127.0.0.1:$cport/healthz" "portcullis (cache)" "$cpid" "$1/log"
}

# start_regproxy DIR -> pport, ppid: docker-registry in proxy mode
# (remoteurl: the upstream registry), empty storage.
start_regproxy() {
	pport=$(free_port)
	mkdir -p "$1/storage"
	cat > "$1/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $1/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$pport
  secret: portcullis-bench
health:
  storagedriver:
    enabled: false
proxy:
  remoteurl: http://127.0.0.1:$rport
YML
	"$DOCKER_REGISTRY_BIN" serve "$1/config.yml" > "$1/log" 2>&1 &
	ppid=$!
	pids+=($ppid)
	wait_http "http://127.0.0.1:$pport/v2/" "docker-registry (proxy)" "$ppid" "$1/log"
}

# stored FILE: wait (at most 300 s) until FILE holds the whole blob.
stored() {
	local i
	for i in $(seq 3000); do
		[ "$(stat -c %s "$1" 2>/dev/null || echo 0)" = "$size" ] && return 0
		sleep 0.1
	done
	echo "note: $1 not complete after 300 s" >&2
}

# cached NAME BASE PID RUN [STOREFILE]: cold pull, then warm pull, of
# bench/direct-1.  With STOREFILE (the reference registry, which stores
# a blob in the background, from a second upstream GET, after the client
# has it) the cold pull's CPU and upstream GETs are counted until the
# store is complete; its MB/s is the client's.
cached() {
	local name=$1 base=$2 pid=$3 run=$4 g0 g1 c0 c1 secs
	for temp in ${TEMPS:-cold warm}; do
		[ "$temp" = cold ] && prewarm
		hwm_reset "$pid" || true
		g0=$(upstream_gets)
		c0=$(cpu_ticks "$pid")
		secs=$(pull "$base" bench/direct-1) || exit 1
		if [ "$temp" = cold ] && [ -n "${5:-}" ]; then
			stored "$5"
			sleep 1		# its last writes and the upload's cleanup
		fi
		c1=$(cpu_ticks "$pid")
		g1=$(upstream_gets)
		echo "pull $name-$temp $run $secs $(hwm_kib "$pid") 1 $(cpu_delta "$c0" "$c1") $((g1 - g0))" >> "$results"
		printf '  run %d pull %-22s %6.2f s  upstream GETs %d\n' "$run" \
			"$name-$temp" "$secs" $((g1 - g0)) >&2
	done
}

# The floor of a cold fill on this machine: bench/lib/fill_floor.c, built
# here (FLOOR=0 skips it).
floor=
if [ "$CACHE" != 0 ] && [ "$FLOOR" != 0 ]; then
	floor=$work/fill_floor
	cc -O2 -pthread -o "$floor" "$here/lib/fill_floor.c" -lcrypto ||
		{ echo "cannot build fill_floor" >&2; exit 2; }
fi

if [ "$CACHE" != 0 ]; then
	for run in $(seq "$RUNS"); do
		# A direct pull in the same round, for the ratio.
		secs=$(pull "http://127.0.0.1:$rport" bench/direct-1) || exit 1
		echo "pull direct $run $secs - 0 -" >> "$results"
		if [ -x "$PORTCULLIS_BIN" ]; then
			start_cache_gw "$work/cache-$run"
			cached portcullis-cache "http://127.0.0.1:$cport" "$cpid" "$run"
			stop_pid "$cpid"
			rm -rf "$work/cache-$run"
		fi
		if [ -n "${PORTCULLIS_BIN_B:-}" ]; then
			start_cache_gw "$work/cache-b-$run" "$PORTCULLIS_BIN_B"
			cached before-cache "http://127.0.0.1:$cport" "$cpid" "$run"
			stop_pid "$cpid"
			rm -rf "$work/cache-b-$run"
		fi
		if [ -n "$floor" ]; then
			# The floor (bench/lib/fill_floor.c): cold only, it
			# keeps nothing between requests.
			fport=$(free_port)
			mkdir -p "$work/floor-$run"
			"$floor" "$fport" "$rport" "$work/floor-$run" \
				> "$work/floor-$run.log" 2>&1 &
			fpid=$!
			pids+=($fpid)
			wait_http "http://127.0.0.1:$fport/healthz" "fill_floor" \
				"$fpid" "$work/floor-$run.log"
			TEMPS=cold cached floor "http://127.0.0.1:$fport" "$fpid" "$run"
			stop_pid "$fpid"
			rm -rf "$work/floor-$run"
		fi
		start_regproxy "$work/regproxy-$run"
		hex=${digest#sha256:}
		cached registry-proxy "http://127.0.0.1:$pport" "$ppid" "$run" \
			"$work/regproxy-$run/storage/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
		stop_pid "$ppid"
		rm -rf "$work/regproxy-$run"
	done
fi

# Median MB/s per (op, path); ratio to direct; CPU per GiB; max peak RSS.
python3 "$here/lib/report.py" "$results" "$size" "$TICK"
