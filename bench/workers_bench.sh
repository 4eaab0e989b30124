#!/bin/bash
# workers_bench.sh: what `workers` buys (README "Every core"), next to
# nginx serving the same bytes as a static file, in one run, everything on
# 127.0.0.1 and stopped by PID on exit.  A cached manifest GET by digest
# (a cache hit with its repository link) with the policy and the audit
# stream (Redis, write-ahead log) on, anonymous (no credential check),
# CONNS keep-alive connections (bench/lib/load.c with LOAD_LATENCY=1: req/s,
# median and 99th percentile latency), ROUNDS rounds of SECONDS_PER_ROUND
# each, alternating: nginx (worker_processes auto), the gateway with
# workers 1, the gateway with workers 2.  Prints the medians over rounds.
# Not part of CI; see README.md ("Every core").
#
# Environment (all optional):
#   PORTCULLIS_BIN, DOCKER_REGISTRY_BIN, REDIS_SERVER_BIN, NGINX_BIN
#   SECONDS_PER_ROUND (default 5), ROUNDS (default 3), CONNS (default 64)
#   KEEP_WORK=1 keeps the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
for v in SECONDS_PER_ROUND ROUNDS CONNS; do
	case ${!v} in ''|*[!0-9]*) echo "$v must be a number" >&2; exit 2;; esac
done
for tool in cc curl python3 redis-cli "$PORTCULLIS_BIN" \
    "$DOCKER_REGISTRY_BIN" "$REDIS_SERVER_BIN" "$NGINX_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init workers-bench
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"

redis_port=$(free_port)
mkdir -p "$work/redis"
"$REDIS_SERVER_BIN" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
	--save "" --appendonly no --daemonize no > "$work/redis/log" 2>&1 &
pids+=($!)
for i in $(seq 100); do
	redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break
	sleep 0.1
done

# --- a small image in bench/app, pushed to docker-registry -----------------
start_registry
head -c 4096 /dev/urandom > "$work/layer"
layer_d=sha256:$(sha256sum "$work/layer" | cut -d' ' -f1)
printf '{}' > "$work/img-config.json"
cfg_d=sha256:$(sha256sum "$work/img-config.json" | cut -d' ' -f1)
for f in layer:$layer_d img-config.json:$cfg_d; do
	loc=$(curl -s -D - -o /dev/null -X POST "$R/v2/bench/app/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^Location: //Ip')
	case $loc in http*) ;; *) loc=$R$loc;; esac
	case $loc in *\?*) sep='&';; *) sep='?';; esac
	curl -sf -X PUT --data-binary @"$work/${f%%:*}" \
		-H 'Content-Type: application/octet-stream' \
		"$loc${sep}digest=${f#*:}" -o /dev/null
done
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
	"$MT" "$cfg_d" "$layer_d" > "$work/manifest.json"
man_d=sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
curl -sf -X PUT -H "Content-Type: $MT" --data-binary @"$work/manifest.json" \
	-o /dev/null "$R/v2/bench/app/manifests/v1"
mpath=/v2/bench/app/manifests/$man_d

# --- nginx: the same bytes as a static file at the same path ----------------
nport=$(free_port)
mkdir -p "$work/nginx/root/v2/bench/app/manifests" "$work/nginx/tmp"
cp "$work/manifest.json" "$work/nginx/root$mpath"
cat > "$work/nginx/nginx.conf" <<NGX
daemon off;
user $(id -un) $(id -gn);
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	keepalive_requests 100000000;
	keepalive_timeout 300s;
	client_body_temp_path $work/nginx/tmp;
	proxy_temp_path $work/nginx/tmp;
	fastcgi_temp_path $work/nginx/tmp;
	uwsgi_temp_path $work/nginx/tmp;
	scgi_temp_path $work/nginx/tmp;
	default_type $MT;
	server {
		listen 127.0.0.1:$nport;
		root $work/nginx/root;
	}
}
NGX
"$NGINX_BIN" -c "$work/nginx/nginx.conf" > "$work/nginx/log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$nport$mpath" nginx "$!" "$work/nginx/error.log"

# --- the gateway with workers 1 and 2 ---------------------------------------
declare -A port
for w in 1 2; do
	p=$(free_port)
	mkdir -p "$work/gw$w"
	cat > "$work/gw$w/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$p"},
  "log": {"level": "warn"},
  "workers": $w,
  "instance_id": "bench-w$w",
  "policy": {"rules": [{"id": "open", "effect": "allow",
             "repositories": ["**"], "subjects": ["anonymous"],
             "actions": ["pull"]}]},
  "upstreams": [{"name": "up1", "url": "$R", "default": true}],
  "cache": {"dir": "$work/gw$w/cache"},
  "audit": {"redis": "127.0.0.1:$redis_port", "stream": "bench:w$w",
            "spool_file": "$work/gw$w/audit.spool", "max_len": 0,
            "max_age": 0}
}
JSON
	"$PORTCULLIS_BIN" serve -c "$work/gw$w/config.json" \
		> "$work/gw$w/log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$p/healthz" "portcullis (workers $w)" "$!" \
		"$work/gw$w/log"
	port[$w]=$p
	# Cached, with its link, in every worker's view (the directory is
	# shared, the first request of each worker adopts the file).
	for i in 1 2 3 4; do
		curl -sf -o /dev/null -H "Accept: $MT" \
			-H 'Connection: close' "http://127.0.0.1:$p$mpath"
	done
done
port[nginx]=$nport

echo "== cached manifest GET by digest, policy and audit on; $CONNS connections, ${SECONDS_PER_ROUND}s rounds; $(nproc) cores"
res=$work/results
: > "$res"
for r in $(seq "$ROUNDS"); do
	for k in nginx 1 2; do
		read -r rps n bad p50 p99 < <(LOAD_LATENCY=1 "$work/load" \
		    "${port[$k]}" "$mpath" "$CONNS" "$SECONDS_PER_ROUND" \
		    "Accept: $MT")
		[ "$bad" = 0 ] || { echo "round $r $k: $bad failed requests" >&2; exit 1; }
		echo "$k $r $rps $p50 $p99" >> "$res"
	done
done
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, _r, rps, p50, p99 = line.split()
    rows.setdefault(k, []).append((float(rps), float(p50), float(p99)))
med = lambda k, i: statistics.median(x[i] for x in rows[k])
print("%-22s %10s %9s %9s %10s   %s" % ("", "req/s", "p50 ms", "p99 ms",
      "x nginx", "rounds req/s"))
for k, name in (("nginx", "nginx static file"), ("1", "portcullis workers 1"),
                ("2", "portcullis workers 2")):
    print("%-22s %10.0f %9.2f %9.2f %10.2f   %s" % (
        name, med(k, 0), med(k, 1), med(k, 2), med(k, 0) / med("nginx", 0),
        " ".join("%.0f" % x[0] for x in rows[k])))
PY
