#!/bin/bash
# ratelimit_bench.sh: what the rate limits cost a cached manifest GET, side
# by side in one run, everything on 127.0.0.1 and stopped by PID on exit.
#
# Two gateways on one docker-registry, each with its own cache holding the
# same manifest (filled once, so every measured request is a cache hit),
# and one redis-server:
#
#   none    no ratelimit section
#   three   three rules that all count the benched GET (key subject, which
#           for the anonymous load is its address; key repository; key
#           upstream), with counts no load reaches: every request is
#           checked, one EVALSHA for the three, none refused
#
# Load: bench/lib/load.c, CONNS keep-alive connections, GET by digest,
# SECONDS_PER_ROUND per round, rounds alternating between the two; medians,
# the ratio and the cost in per cent, gateway CPU per request (utime +
# stime from /proc), and Redis's own count of EVALSHA calls (INFO
# commandstats) against the requests the "three" gateway answered: the
# goal is exactly one round trip per counted request.  Never fails on a
# number; not part of CI (README.md, "Benchmarks").
#
# Environment (all optional):
#   PORTCULLIS_BIN       gateway binary (default <repo>/portcullis)
#   DOCKER_REGISTRY_BIN  default /usr/bin/docker-registry
#   REDIS_BIN            default /usr/bin/redis-server
#   SECONDS_PER_ROUND    load duration per round (default 5, at most 60)
#   ROUNDS               rounds per gateway (default 5, at most 20)
#   CONNS                client connections (default 4, at most 256)
#   PIN=1                redis-server on CPU 1, the gateways on CPU 0 (taskset;
#                        the load generator unpinned): whether the cost is
#                        Redis's share of the same CPUs
#   PROFILE=strace|perf  profile the three gateway in its first round:
#                        strace -c (system calls per request) or perf
#                        record + report (its hottest functions)
#   PROFILE_GW           which gateway PROFILE watches: three (default) or none
#   KEEP_WORK=1          keep the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
REDIS_BIN=${REDIS_BIN:-/usr/bin/redis-server}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-4}

bound() {	# bound VAR MIN MAX
	case ${!1} in ''|*[!0-9]*) echo "$1 must be a number" >&2; exit 2;; esac
	[ "${!1}" -ge "$2" ] && [ "${!1}" -le "$3" ] ||
		{ echo "$1: $2..$3" >&2; exit 2; }
}
bound SECONDS_PER_ROUND 1 60
bound ROUNDS 1 20
bound CONNS 1 256
PIN=${PIN:-0}
PROFILE=${PROFILE:-}
case $PROFILE in ''|strace|perf) ;; *) echo "PROFILE: strace or perf" >&2; exit 2;; esac
PROFILE_GW=${PROFILE_GW:-three}
case $PROFILE_GW in none|three) ;; *) echo "PROFILE_GW: none or three" >&2; exit 2;; esac
redis_cpu=() gw_cpu=()
if [ "$PIN" = 1 ]; then
	[ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs 2 CPUs" >&2; exit 2; }
	redis_cpu=(taskset -c 1) gw_cpu=(taskset -c 0)
fi
for tool in cc curl python3 sha256sum redis-cli "$PORTCULLIS_BIN" \
    "$DOCKER_REGISTRY_BIN" "$REDIS_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init ratelimit
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

# --- redis-server -------------------------------------------------------------
redis_port=$(free_port)
mkdir -p "$work/redis"
"${redis_cpu[@]}" "$REDIS_BIN" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
	--save '' --appendonly no --daemonize no --logfile "$work/redis/log" &
pids+=($!)
for i in $(seq 100); do
	redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
	sleep 0.1
done
rcli() { redis-cli -p "$redis_port" "$@"; }
evalsha_calls() {
	rcli INFO commandstats | tr -d '\r' |
		sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}

# --- docker-registry with one image in bench/app ----------------------------
start_registry
push() {	# push FILE DIGEST
	local loc sep
	loc=$(curl -s -D - -o /dev/null -X POST "$R/v2/bench/app/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^Location: //Ip')
	case $loc in http*) ;; *) loc=$R$loc;; esac
	case $loc in *\?*) sep='&';; *) sep='?';; esac
	curl -sf -X PUT --data-binary @"$1" \
		-H 'Content-Type: application/octet-stream' \
		"$loc${sep}digest=$2" -o /dev/null
}
head -c 4096 /dev/urandom > "$work/layer"
layer_d=sha256:$(sha256sum "$work/layer" | cut -d' ' -f1)
printf '{}' > "$work/config.json"
cfg_d=sha256:$(sha256sum "$work/config.json" | cut -d' ' -f1)
push "$work/layer" "$layer_d"
push "$work/config.json" "$cfg_d"
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
	"$MT" "$cfg_d" "$layer_d" > "$work/manifest.json"
man_d=sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
curl -sf -X PUT -H "Content-Type: $MT" --data-binary @"$work/manifest.json" \
	-o /dev/null "$R/v2/bench/app/manifests/v1"

# --- two gateways -------------------------------------------------------------
RULES='[{"id": "per-caller", "key": "subject", "endpoints": ["manifest"],
	  "count": 1000000000, "window": 60},
	 {"id": "per-repository", "key": "repository", "actions": ["pull"],
	  "count": 1000000000, "window": 60},
	 {"id": "upstream-quota", "key": "upstream", "methods": ["GET"],
	  "count": 1000000000, "window": 60}]'
start_gw() {	# NAME RATELIMIT-JSON -> sets gw_port, gw_pid
	local name=$1 port
	port=$(free_port)
	mkdir -p "$work/$name/cache"
	cat > "$work/$name/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "log": {"level": "warn"},
  "cache": {"dir": "$work/$name/cache", "max_bytes": 1073741824},
  "policy": {"rules": [{"id": "open", "effect": "allow",
                        "repositories": ["**"],
                        "subjects": ["anonymous", "authenticated"],
                        "actions": ["*"]}]},
  "redis": {"address": "127.0.0.1:$redis_port"},
  $2
  "upstreams": [{"name": "up1", "url": "$R", "default": true}]
}
JSON
	"${gw_cpu[@]}" "$PORTCULLIS_BIN" serve -c "$work/$name/config.json" > "$work/$name/log" 2>&1 &
	gw_pid=$!
	pids+=($gw_pid)
	wait_http "http://127.0.0.1:$port/healthz" "portcullis ($name)" "$gw_pid" "$work/$name/log"
	gw_port=$port
	curl -sf -o /dev/null -H "Accept: $MT" \
		"http://127.0.0.1:$port/v2/bench/app/manifests/$man_d" ||
		{ echo "$name: the warm-up GET failed; log:" >&2; tail -5 "$work/$name/log" >&2; exit 1; }
}
start_gw none ""
none_port=$gw_port none_pid=$gw_pid
start_gw three "\"ratelimit\": {\"rules\": $RULES, \"instances\": 1},"
three_port=$gw_port three_pid=$gw_pid
# The limits are in force: the three gateway's answer carries them.
curl -s -D - -o /dev/null -H "Accept: $MT" \
	"http://127.0.0.1:$three_port/v2/bench/app/manifests/$man_d" |
	grep -qi '^RateLimit-Limit: 1000000000;w=60' ||
	{ echo "rate limits not in force on the three gateway" >&2; exit 1; }

echo "== cached manifest GET by digest: no rate limits vs three rules (one EVALSHA)"
echo "   $CONNS connections, ${SECONDS_PER_ROUND}s rounds x $ROUNDS, $(nproc) CPUs shared by all processes"
[ "$PIN" = 1 ] && echo "   pinned: redis-server on CPU 1, gateways on CPU 0, load unpinned"
prof_pid=
res=$work/results
: > "$res"
path=/v2/bench/app/manifests/$man_d
for r in $(seq "$ROUNDS"); do
	order="none three"
	[ $((r % 2)) = 0 ] && order="three none"	# no order bias
	for mode in $order; do
		port=$none_port pid=$none_pid
		[ $mode = three ] && port=$three_port pid=$three_pid
		if [ -n "$PROFILE" ] && [ $mode = "$PROFILE_GW" ] && [ "$r" = 1 ]; then
			if [ "$PROFILE" = strace ]; then
				timeout -s INT "$SECONDS_PER_ROUND" strace -c -f \
				    -o "$work/profile" -p "$pid" 2>/dev/null &
			else
				perf record -g -o "$work/perf.data" -p "$pid" -- \
				    sleep "$SECONDS_PER_ROUND" >/dev/null 2>&1 &
			fi
			prof_pid=$!
			pids+=($prof_pid)
		fi
		c0=$(cpu_ticks "$pid")
		e0=$(evalsha_calls)
		read -r rps n bad < <("$work/load" "$port" "$path" "$CONNS" \
			"$SECONDS_PER_ROUND" "Accept: $MT")
		e1=$(evalsha_calls)
		c1=$(cpu_ticks "$pid")
		[ "$bad" = 0 ] || { echo "round $r $mode: $bad failed requests" >&2; exit 1; }
		if [ -n "$prof_pid" ]; then
			wait "$prof_pid" || true
			prof_pid=
			prof_n=$n
		fi
		echo "$mode $rps $n $(python3 -c "print(($c1-$c0)*1e6/$tck/max($n,1))") $((e1 - e0))" >> "$res"
		printf '  round %d %-6s %8s req/s %9s requests %9s EVALSHA\n' \
			"$r" "$mode" "$rps" "$n" "$((e1 - e0))" >&2
	done
done
for mode in none three; do
	grep -q "cache=miss" "$work/$mode/log" 2>/dev/null &&
		echo "note: $mode logged a cache miss" >&2
done
if [ "$PROFILE" = strace ] && [ -s "$work/profile" ]; then
	echo "strace -c of the $PROFILE_GW gateway, round 1 ($prof_n requests):"
	sed 's/^/   /' "$work/profile"
elif [ "$PROFILE" = perf ] && [ -s "$work/perf.data" ]; then
	echo "perf report of the $PROFILE_GW gateway, round 1 (self, top 25):"
	perf report -i "$work/perf.data" --no-children --stdio 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -25 | sed 's/^/   /'
fi
echo "redis-cli INFO commandstats (EVALSHA):"
rcli INFO commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|script)' | sed 's/^/   /'
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, rps, n, us, ev = line.split()
    rows.setdefault(mode, []).append((float(rps), float(us), int(n), int(ev)))
med = lambda m, i: statistics.median(x[i] for x in rows[m])
o, r = med("none", 0), med("three", 0)
print("%-8s %12s %14s" % ("limits", "req/s (med)", "gw us/req"))
print("%-8s %12.0f %14.1f" % ("none", o, med("none", 1)))
print("%-8s %12.0f %14.1f" % ("three", r, med("three", 1)))
print("ratio three/none %.3f; cost %.1f%% of req/s (goal <= 5%%)" % (
    r / o, (o - r) / o * 100))
uo, ur = med("none", 1), med("three", 1)
print("cost in gateway CPU per request: %+.1f%% (%.1f vs %.1f us)" % (
    (ur - uo) / uo * 100, ur, uo))
n3 = sum(x[2] for x in rows["three"])
e3 = sum(x[3] for x in rows["three"])
en = sum(x[3] for x in rows["none"])
print("EVALSHA per counted request: %d calls / %d requests = %.4f "
      "(the none gateway: %d calls)" % (e3, n3, e3 / max(n3, 1), en))
PY
