#!/bin/bash
# ratelimit_bench.sh: what the rate limits cost a cached manifest GET, side
# by side in one run, everything on 127.0.0.1 and stopped by PID on exit.
#
# Three gateways on one docker-registry, each with its own cache holding
# the same manifest (filled once, so every measured request is a cache
# hit), and one redis-server:
#
#   none    no ratelimit section
#   three   three rules that all count the benched GET (key subject, which
#           for the anonymous load is its address; key repository; key
#           upstream), with counts no load reaches: every request is
#           checked, one EVALSHA for the three, none refused
#   floor   the same binary and config as three, started with
#           bench/lib/rl_floor.so preloaded: its SCRIPT LOAD loads a script
#           that only returns "all allow", so each counted request still
#           makes its one EVALSHA round trip on the same path, and Redis
#           does no bucket work.  floor against none is what one round
#           trip per counted request costs on this machine at all; three
#           against floor is what the buckets add.
#
# Each gateway is one process ("workers": 1): the CPU per request is read
# from its /proc, and two CPUs hold the load generator and Redis too.
#
# Load: bench/lib/load.c, CONNS keep-alive connections, GET by digest,
# SECONDS_PER_ROUND per round, rounds rotating the order of the three;
# medians, the ratios and the costs in per cent, gateway and redis-server
# CPU per request (utime + stime from /proc), and from Redis's INFO
# commandstats per round: EVALSHA calls against the requests answered
# (the goal is exactly one round trip per counted request) and the
# script's own time per call (usec / calls, the usec_per_call of the
# round).  uptime at the start and the end.  Never fails on a number;
# not part of CI (README.md, "Benchmarks").
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
#   PROFILE_GW           which gateway PROFILE watches: three (default), floor
#                        or none
#   B_BIN                a fourth gateway, "three-b": the three config run
#                        by this binary (a build before a change), for an
#                        A/B of the two builds within one run
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
case $PROFILE_GW in none|floor|three) ;; *) echo "PROFILE_GW: none, floor or three" >&2; exit 2;; esac
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
cc -O2 -shared -fPIC -o "$work/rl_floor.so" "$here/lib/rl_floor.c" -ldl
echo "uptime at the start: $(uptime)"
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
evalsha_stats() {	# "calls usec" of EVALSHA so far
	rcli INFO commandstats | tr -d '\r' |
		sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2/p' |
		grep . || echo 0 0
}
redis_pid=${pids[-1]}

# --- docker-registry with one image in bench/app ----------------------------
start_registry
push_small_image

# --- two gateways -------------------------------------------------------------
RULES='[{"id": "per-caller", "key": "subject", "endpoints": ["manifest"],
	  "count": 1000000000, "window": 60},
	 {"id": "per-repository", "key": "repository", "actions": ["pull"],
	  "count": 1000000000, "window": 60},
	 {"id": "upstream-quota", "key": "upstream", "methods": ["GET"],
	  "count": 1000000000, "window": 60}]'
start_gw() {	# NAME RATELIMIT-JSON [PRELOAD] [BIN] -> sets gw_port, gw_pid
	local name=$1 port pre=() bin=${4:-$PORTCULLIS_BIN}
	[ -n "${3:-}" ] && pre=(env "LD_PRELOAD=$3")
	port=$(free_port)
	mkdir -p "$work/$name/cache"
	cat > "$work/$name/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "log": {"level": "warn"},
  "workers": 1,
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
	"${gw_cpu[@]}" "${pre[@]}" "$bin" serve -c "$work/$name/config.json" > "$work/$name/log" 2>&1 &
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
start_gw floor "\"ratelimit\": {\"rules\": $RULES, \"instances\": 1}," \
	"$work/rl_floor.so"
floor_port=$gw_port floor_pid=$gw_pid
modes="none floor three"
if [ -n "${B_BIN:-}" ]; then
	start_gw three-b "\"ratelimit\": {\"rules\": $RULES, \"instances\": 1}," \
		"" "$B_BIN"
	b_port=$gw_port b_pid=$gw_pid
	modes="$modes three-b"
fi
# The limits are in force: the answers carry them, and the floor's came
# from the floor script (remaining 0, which the real one never says here).
for mode in three floor; do
	port=$three_port
	[ $mode = floor ] && port=$floor_port
	curl -s -D - -o /dev/null -H "Accept: $MT" \
		"http://127.0.0.1:$port/v2/bench/app/manifests/$man_d" |
		tr -d '\r' > "$work/$mode/headers"
	grep -qi '^RateLimit-Limit: 1000000000;w=60' "$work/$mode/headers" ||
		{ echo "rate limits not in force on the $mode gateway" >&2; exit 1; }
done
grep -qi '^RateLimit-Remaining: 0;' "$work/floor/headers" &&
	grep -q 'rl_floor: rate-limit script replaced' "$work/floor/log" &&
	! grep -qi '^RateLimit-Remaining: 0;' "$work/three/headers" ||
	{ echo "the floor gateway does not run the floor script" >&2; exit 1; }

echo "== cached manifest GET by digest: no rate limits vs three rules (one EVALSHA)"
echo "   vs the floor (one EVALSHA of a script that does nothing)"
echo "   $CONNS connections, ${SECONDS_PER_ROUND}s rounds x $ROUNDS, $(nproc) CPUs shared by all processes"
[ "$PIN" = 1 ] && echo "   pinned: redis-server on CPU 1, gateways on CPU 0, load unpinned"
prof_pid=
res=$work/results
: > "$res"
path=/v2/bench/app/manifests/$man_d
for r in $(seq "$ROUNDS"); do
	# The order rotates each round: no order bias.
	set -- $modes
	for i in $(seq $(((r - 1) % $#))); do set -- "${@:2}" "$1"; done
	for mode in "$@"; do
		case $mode in
		none) port=$none_port pid=$none_pid;;
		floor) port=$floor_port pid=$floor_pid;;
		three-b) port=$b_port pid=$b_pid;;
		*) port=$three_port pid=$three_pid;;
		esac
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
		r0=$(cpu_ticks "$redis_pid")
		read -r e0 u0 < <(evalsha_stats)
		read -r rps n bad < <("$work/load" "$port" "$path" "$CONNS" \
			"$SECONDS_PER_ROUND" "Accept: $MT")
		read -r e1 u1 < <(evalsha_stats)
		r1=$(cpu_ticks "$redis_pid")
		c1=$(cpu_ticks "$pid")
		[ "$bad" = 0 ] || { echo "round $r $mode: $bad failed requests" >&2; exit 1; }
		if [ -n "$prof_pid" ]; then
			wait "$prof_pid" || true
			prof_pid=
			prof_n=$n
		fi
		echo "$mode $rps $n $(python3 -c "print(($c1-$c0)*1e6/$tck/max($n,1))") $((e1 - e0)) $((u1 - u0)) $(python3 -c "print(($r1-$r0)*1e6/$tck/max($n,1))")" >> "$res"
		printf '  round %d %-6s %8s req/s %9s requests %9s EVALSHA\n' \
			"$r" "$mode" "$rps" "$n" "$((e1 - e0))" >&2
	done
done
for mode in $modes; do
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
echo "redis-cli INFO commandstats (EVALSHA), the whole run (floor and three):"
rcli INFO commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|script)' | sed 's/^/   /'
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, rps, n, us, ev, evus, rus = line.split()
    rows.setdefault(mode, []).append(
        (float(rps), float(us), int(n), int(ev), int(evus), float(rus)))
med = lambda m, i: statistics.median(x[i] for x in rows[m])
tot = lambda m, i: sum(x[i] for x in rows[m])
print("%-6s %11s %10s %12s %14s %14s" % ("limits", "req/s (med)",
    "gw us/req", "redis us/req", "usec_per_call", "EVALSHA/req"))
for m in [m for m in ("none", "floor", "three", "three-b") if m in rows]:
    calls, n = tot(m, 3), tot(m, 2)
    upc = "%.2f" % (tot(m, 4) / calls) if calls else "-"
    print("%-6s %11.0f %10.1f %12.1f %14s %9d/%d = %.4f" % (m, med(m, 0),
        med(m, 1), med(m, 5), upc, calls, n, calls / max(n, 1)))
o, f, r = med("none", 0), med("floor", 0), med("three", 0)
print("ratio three/none %.3f: cost %.1f%% of req/s (goal <= 5%%)" % (
    r / o, (o - r) / o * 100))
print("floor: ratio floor/none %.3f: one EVALSHA that does nothing costs "
    "%.1f%%; three/floor %.3f: the buckets add %.1f%%" % (f / o,
    (o - f) / o * 100, r / f, (f - r) / f * 100))
print("<= 5%% with one round trip per counted request on this machine: %s" % (
    "within reach (the floor costs %.1f%%)" % ((o - f) / o * 100)
    if (o - f) / o <= 0.05 else
    "NOT reachable: the floor alone costs %.1f%%" % ((o - f) / o * 100)))
uo, uf, ur = med("none", 1), med("floor", 1), med("three", 1)
print("gateway CPU per request: floor %+.1f us (%+.1f%%), three %+.1f us "
    "(%+.1f%%) over none" % (uf - uo, (uf - uo) / uo * 100, ur - uo,
    (ur - uo) / uo * 100))
if "three-b" in rows:
    b, ub = med("three-b", 0), med("three-b", 1)
    print("B_BIN: three-b/none %.3f (cost %.1f%%), three/three-b %.3f; "
        "gateway CPU %+.1f us over none (three: %+.1f)" % (b / o,
        (o - b) / o * 100, r / b, ub - uo, ur - uo))
PY
echo "uptime at the end: $(uptime)"
