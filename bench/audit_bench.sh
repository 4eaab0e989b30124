#!/bin/bash
# audit_bench.sh: what the audit stream costs and how fast it answers, side
# by side in one run, everything on 127.0.0.1 and stopped by PID on exit:
#
#  1. gateway requests/s with audit off and on, alternating rounds, for
#     GET /v2/ (answered by the gateway itself: the worst case, where the
#     record is most of the work) and GET of a 1 KiB blob proxied to a
#     docker-registry (the common case).  With audit on, the records the
#     stream gained during each round give the gateway's sustained XADD
#     rate, and the run ends by checking that every request was recorded.
#     CPU per request (utime + stime from /proc) of the gateway and of
#     redis-server: they share the machine's CPUs with the load generator,
#     so what Redis spends on a record is throughput the gateway loses.
#  2. `portcullis audit generate`: sustained records/s through the
#     writer's Lua script (XADD of the packed record, one index XADD per
#     index a call touches, trims, dedup mark), 100 records a call as
#     the gateway's writer sends its batches (its rate is the XADD
#     column of 1).
#  3. `portcullis audit query` on a stream of RECORDS (1 million) records:
#     --subject (index), --repo exact (index), --repo 'team3/*' (first-
#     segment index), walks (bench/audit_query_bench.sh: at scale),
#     median wall time of QRUNS runs, process start included.
#  4. what the write-ahead log costs (audit.wal): cached manifest GETs by
#     digest (a cache hit with its repository link) on three gateways
#     with their own caches, alternating rounds: audit off, audit with
#     "wal": false (records reach the spool only while Redis is away, the
#     behaviour before the WAL) and with "wal": true (the default: every
#     record appended to the spool file before it is sent), the latter
#     also with "fsync": "never" (the write alone); median req/s,
#     gateway CPU per request, the WAL's cost next to "wal": false, and a
#     check that each audited request has its record; Redis CPU per
#     record (its utime + stime over the records of the round), and at
#     the end what INFO commandstats counted for the script and for each
#     call it makes (Redis 7 counts those too), per record.  With
#     PORTCULLIS_BIN_BEFORE, two more gateways of that binary ("wal
#     false" and "wal true", rounds alternating with the others): the
#     build before a change, its anchor in the same run.
# Not part of CI; see README.md.
#
# Environment (all optional):
#   PORTCULLIS_BIN       gateway binary (default <repo>/portcullis)
#   PORTCULLIS_BIN_BEFORE  part 4 only: an older build to compare with
#   PERF_STAT=1          part 4: also count the gateway's instructions and
#                        context switches per request (perf stat), steadier
#                        than CPU time on a loaded machine
#   DOCKER_REGISTRY_BIN  default /usr/bin/docker-registry
#   REDIS_SERVER_BIN     default /usr/bin/redis-server
#   SECONDS_PER_ROUND    load duration per round (default 5)
#   ROUNDS               rounds per configuration (default 3)
#   CONNS                client connections (default 4)
#   RECORDS              records for the query bench (default 1000000)
#   QRUNS                runs per query (default 5)
#   PARTS                which parts to run (default "1 2 3 4")
#   KEEP_WORK=1          keep the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
PORTCULLIS_BIN_BEFORE=${PORTCULLIS_BIN_BEFORE:-}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-4}
RECORDS=${RECORDS:-1000000}
QRUNS=${QRUNS:-5}
PARTS=${PARTS:-1 2 3 4}

for v in SECONDS_PER_ROUND ROUNDS CONNS RECORDS QRUNS; do
	case ${!v} in ''|*[!0-9]*) echo "$v must be a number" >&2; exit 2;; esac
done
for tool in cc curl python3 redis-cli "$PORTCULLIS_BIN" \
    "$DOCKER_REGISTRY_BIN" "$REDIS_SERVER_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init audit-bench
echo "start: $(uptime)"

# --- the load generator (bench/lib/load.c): CONNS threads, one keep-alive
# connection each, GET in a loop; prints requests/s. ------------------------
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"

# --- redis-server (no persistence: we measure the gateway, not the disk) ---
redis_port=$(free_port)
mkdir -p "$work/redis"
"$REDIS_SERVER_BIN" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
	--save "" --appendonly no --daemonize no > "$work/redis/log" 2>&1 &
pids+=($!)
redis_pid=$!
for i in $(seq 100); do
	redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break
	sleep 0.1
done
rcli() { redis-cli -p "$redis_port" "$@"; }

# --- docker-registry with one 1 KiB blob ------------------------------------
start_registry
head -c 1024 /dev/urandom > "$work/blob"
digest=sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)
push_blob "$work/blob" "$digest"

# --- two gateways: audit off, audit on --------------------------------------
start_gw() {	# NAME AUDIT_JSON [CACHE_JSON [BINARY]] -> sets gw_port
	local name=$1 audit=$2 cache=${3:-} bin=${4:-$PORTCULLIS_BIN} port
	port=$(free_port)
	mkdir -p "$work/$name"
	cat > "$work/$name/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "log": {"level": "warn"},
  "policy": {"rules": [{"id": "open", "effect": "allow",
             "repositories": ["**"], "subjects": ["anonymous"],
             "actions": ["pull"]}]},
  "upstreams": [{"name": "up1", "url": "http://127.0.0.1:$rport",
                 "default": true}]$audit$cache
}
JSON
	"$bin" serve -c "$work/$name/config.json" > "$work/$name/log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$port/healthz" "portcullis ($name)" "$!" "$work/$name/log"
	gw_port=$port
	gw_pid=$!
}
# CPU time of a process and its children (a gateway's workers) in clock
# ticks.
cpu_ticks() {
	local p t=0
	for p in $1 $(pgrep -P "$1" || true); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
start_gw off ""
off_port=$gw_port
off_pid=$gw_pid
start_gw on ", \"audit\": {\"redis\": \"127.0.0.1:$redis_port\", \"stream\": \"bench:audit\", \"spool_file\": \"$work/on/audit.spool\", \"max_len\": 0, \"max_age\": 0}"
on_port=$gw_port
on_pid=$gw_pid
tck=$(getconf CLK_TCK)

part() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }

if part 1; then
echo "== 1. gateway requests/s, audit off vs on ($CONNS connections, ${SECONDS_PER_ROUND}s rounds, $(nproc) CPUs shared by all processes)"
res=$work/results
: > "$res"
total_on=0
for r in $(seq "$ROUNDS"); do
	for target in "/v2/" "/v2/bench/app/blobs/$digest"; do
		for mode in off on; do
			port=$off_port pid=$off_pid
			[ $mode = on ] && port=$on_port pid=$on_pid
			before=$(rcli XLEN bench:audit)
			g0=$(cpu_ticks "$pid") r0=$(cpu_ticks "$redis_pid")
			t0=$(date +%s.%N)
			read -r rps n bad < <("$work/load" "$port" "$target" "$CONNS" "$SECONDS_PER_ROUND")
			g1=$(cpu_ticks "$pid") r1=$(cpu_ticks "$redis_pid")
			[ "$bad" = 0 ] || { echo "round $r $target $mode: $bad failed requests" >&2; exit 1; }
			xadd=-
			if [ $mode = on ]; then
				total_on=$((total_on + n))
				# Records still in flight land within the timeout.
				for i in $(seq 100); do
					[ "$(rcli XLEN bench:audit)" -ge $((before + n)) ] && break
					sleep 0.1
				done
				t1=$(date +%s.%N)
				after=$(rcli XLEN bench:audit)
				xadd=$(python3 -c "print(round(($after-$before)/($t1-$t0)))")
			fi
			gus=$(python3 -c "print(($g1-$g0)*1e6/$tck/max($n,1))")
			rus=$(python3 -c "print(($r1-$r0)*1e6/$tck/max($n,1))")
			echo "$target $mode $r $rps $xadd $gus $rus" >> "$res"
		done
	done
done
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    t, mode, _r, rps, xadd, gus, rus = line.split()
    rows.setdefault((t, mode), []).append(
        (float(rps), float(xadd) if xadd != "-" else 0.0, float(gus),
         float(rus)))
med = lambda t, m, i: statistics.median(x[i] for x in rows[(t, m)])
print("%-22s %10s %10s %7s %10s %17s %17s" % ("target", "off req/s",
      "on req/s", "cost", "XADD/s", "gw us/req off/on", "redis us/req on"))
for t in dict.fromkeys(k[0] for k in rows):
    off, on = med(t, "off", 0), med(t, "on", 0)
    name = "GET /v2/" if t == "/v2/" else "GET blob (proxied)"
    print("%-22s %10.0f %10.0f %6.1f%% %10.0f %8.1f / %-6.1f %17.1f" % (
        name, off, on, (off - on) / off * 100, med(t, "on", 1),
        med(t, "off", 2), med(t, "on", 2), med(t, "on", 3)))
PY
xlen=$(rcli XLEN bench:audit)
echo "records in the stream: $xlen, requests sent with audit on: $total_on"
[ "$xlen" -eq "$total_on" ] || { echo "MISMATCH: a request was not recorded" >&2; exit 1; }
fi

if part 2; then
echo
echo "== 2. sustained records/s through the writer's script (audit generate, pipelined)"
cat > "$work/gen.json" <<JSON
{"upstreams": [{"name": "up1", "url": "http://127.0.0.1:$rport"}],
 "audit": {"redis": "127.0.0.1:$redis_port", "stream": "q:audit",
           "spool_file": "$work/gen.spool"}}
JSON
t0=$(date +%s.%N)
"$PORTCULLIS_BIN" audit generate -c "$work/gen.json" --count "$RECORDS" --step-ms 100 >/dev/null
t1=$(date +%s.%N)
python3 -c "print('%d records in %.1f s: %.0f records/s' % ($RECORDS, $t1-$t0, $RECORDS/($t1-$t0)))"
echo "redis used_memory: $(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p')"
fi

if part 3; then
[ -f "$work/gen.json" ] || { echo "part 3 needs part 2's records" >&2; exit 2; }
echo
echo "== 3. audit query on $RECORDS records (median of $QRUNS, wall time incl. process start)"
qbench() {	# LABEL ARGS...
	local label=$1; shift
	local times=() i t0 t1
	for i in $(seq "$QRUNS"); do
		t0=$(date +%s%N)
		"$PORTCULLIS_BIN" audit query -c "$work/gen.json" --format json "$@" > "$work/q.out"
		t1=$(date +%s%N)
		times+=($(( (t1 - t0) / 1000 )))
	done
	python3 - "$label" "$work/q.out" "${times[@]}" <<'PY'
import json, statistics, sys
label, out, times = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]]
n = len(json.load(open(out))["records"])
print("%-44s %8.1f ms  (min %.1f, max %.1f)  %d records" % (
    label, statistics.median(times) / 1000, min(times) / 1000,
    max(times) / 1000, n))
PY
}
qbench "--subject user042 --limit 100 (index)" --subject user042 --limit 100
qbench "--subject user042 --status 4xx (index)" --subject user042 --status 4xx --limit 100
qbench "--repo team3/app4 --limit 100 (index)" --repo team3/app4 --limit 100
qbench "--repo 'team3/*' --limit 100 (segment index)" --repo 'team3/*' --limit 100
qbench "--action delete --status 403 --limit 100 (walk)" --action delete --status 403 --limit 100
qbench "--limit 1000 (walk)" --limit 1000
fi

if part 4; then
rcli CONFIG RESETSTAT >/dev/null
echo
echo "== 4. the write-ahead log: cached manifest GET by digest, audit off / wal false / wal true ($CONNS connections, ${SECONDS_PER_ROUND}s rounds)"
# A small image in bench/app, its manifest cached by each gateway.
push_small_image
mpath=/v2/bench/app/manifests/$man_d
declare -A wport wpid
modes="off nowal wal walnf"
if [ -n "$PORTCULLIS_BIN_BEFORE" ]; then
	command -v "$PORTCULLIS_BIN_BEFORE" >/dev/null ||
		{ echo "missing: $PORTCULLIS_BIN_BEFORE" >&2; exit 2; }
	modes="$modes nowal0 wal0"
fi
for mode in $modes; do
	audit="" bin=$PORTCULLIS_BIN
	case $mode in
	*0) bin=$PORTCULLIS_BIN_BEFORE;;
	esac
	case $mode in
	nowal*|wal*)
		w=true fs=interval
		case $mode in nowal*) w=false;; esac
		[ $mode = walnf ] && fs=never
		audit=", \"audit\": {\"redis\": \"127.0.0.1:$redis_port\", \"stream\": \"bench:$mode\", \"spool_file\": \"$work/c-$mode/audit.spool\", \"max_len\": 0, \"max_age\": 0, \"wal\": $w, \"fsync\": \"$fs\"}";;
	esac
	start_gw "c-$mode" "$audit" ", \"cache\": {\"dir\": \"$work/c-$mode/cache\", \"sendfile\": \"off\"}" "$bin"
	wport[$mode]=$gw_port wpid[$mode]=$gw_pid
	curl -sf -o /dev/null -H "Accept: $MT" "http://127.0.0.1:$gw_port$mpath"
	curl -sf -o /dev/null -H "Accept: $MT" "http://127.0.0.1:$gw_port$mpath"
done
echo "spool files on: $(df -T "$work" | awk 'NR==2 {print $2}') (fsync interval)"
res4=$work/results4
: > "$res4"
declare -A sent
for mode in $modes; do sent[$mode]=2; done
for r in $(seq "$ROUNDS"); do
	for mode in $modes; do
		port=${wport[$mode]} pid=${wpid[$mode]}
		pst=
		if [ "${PERF_STAT:-0}" = 1 ]; then
			perf stat -x, -e instructions,context-switches \
			    -p "$(echo $pid $(pgrep -P "$pid" || true) | tr ' ' ,)" \
			    -o "$work/pstat" &
			pst=$!
			sleep 0.2
		fi
		g0=$(cpu_ticks "$pid") r0=$(cpu_ticks "$redis_pid")
		read -r rps n bad < <("$work/load" "$port" "$mpath" "$CONNS" "$SECONDS_PER_ROUND" "Accept: $MT")
		g1=$(cpu_ticks "$pid") r1=$(cpu_ticks "$redis_pid")
		ins=0 csw=0
		if [ -n "$pst" ]; then
			kill -INT "$pst"
			wait "$pst" || true
			# "<not supported>" (no PMU in a VM) counts as 0.
			ins=$(awk -F, '$3 ~ /^instructions/ {print $1 + 0}' "$work/pstat")
			csw=$(awk -F, '$3 ~ /^context-switches/ {print $1 + 0}' "$work/pstat")
		fi
		[ "$bad" = 0 ] || { echo "round $r $mode: $bad failed requests" >&2; exit 1; }
		[ $mode = off ] || sent[$mode]=$((${sent[$mode]} + n))
		gus=$(python3 -c "print(($g1-$g0)*1e6/$tck/max($n,1))")
		rus=$(python3 -c "print(($r1-$r0)*1e6/$tck/max($n,1))")
		echo "$mode $r $rps $gus $rus ${ins:-0} ${csw:-0} $n" >> "$res4"
	done
done
python3 - "$res4" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, _r, rps, gus, rus, ins, csw, n = line.split()
    n = max(int(n), 1)
    rows.setdefault(mode, []).append((float(rps), float(gus), float(rus),
                                      float(ins) / n, float(csw) / n))
med = lambda m, i: statistics.median(x[i] for x in rows[m])
print("%-28s %10s %7s %14s %16s %12s" % ("cached manifest GET", "req/s",
      "cost", "gw us/request", "redis us/record", "rounds req/s"))
for m, name in (("off", "audit off"), ("nowal", "audit, wal false"),
                ("wal", "audit, wal true"),
                ("walnf", "audit, wal true, fsync never"),
                ("nowal0", "before: audit, wal false"),
                ("wal0", "before: audit, wal true")):
    if m not in rows:
        continue
    print("%-28s %10.0f %6.1f%% %9.1f %+4.0f%% %16s   %s" % (name,
          med(m, 0), (med("off", 0) - med(m, 0)) / med("off", 0) * 100,
          med(m, 1), (med(m, 1) - med("off", 1)) / med("off", 1) * 100,
          "-" if m == "off" else "%.1f" % med(m, 2),
          " ".join("%.0f" % x[0] for x in rows[m])))
for m, name in (("wal", "wal true"), ("walnf", "wal true, fsync never")):
    nw, w = med("nowal", 0), med(m, 0)
    print("cost of %s next to wal false: %.1f%% req/s, %.1f%% gateway "
          "CPU per request" % (name, (nw - w) / nw * 100,
                               (med(m, 1) - med("nowal", 1)) /
                               med("nowal", 1) * 100))
if any(x[3] > 0 or x[4] > 0 for x in rows["off"]):
    print("perf stat, per request (median): instructions (0: no PMU), "
          "context switches of the gateway")
    for m in rows:
        print("  %-8s %8.0f %+5.1f%%  %6.3f" % (m, med(m, 3),
              (med(m, 3) - med("off", 3)) / max(med("off", 3), 1) * 100,
              med(m, 4)))
for m in ("nowal", "wal"):
    if m + "0" not in rows:
        continue
    b = m + "0"
    print("%s, this build next to the one before: %+.1f%% req/s, %+.1f%% "
          "gateway CPU per request, %+.1f%% Redis CPU per record" % (
          "wal false" if m == "nowal" else "wal true",
          (med(m, 0) - med(b, 0)) / med(b, 0) * 100,
          (med(m, 1) - med(b, 1)) / med(b, 1) * 100,
          (med(m, 2) - med(b, 2)) / med(b, 2) * 100))
    if med(b, 3) > 0:
        print("  and %+.1f%% instructions per request" % (
              (med(m, 3) - med(b, 3)) / med(b, 3) * 100))
PY
for mode in ${modes#off }; do
	want=${sent[$mode]}
	for i in $(seq 100); do
		[ "$(rcli XLEN bench:$mode)" -ge "$want" ] && break
		sleep 0.1
	done
	got=$(rcli XLEN bench:$mode)
	echo "$mode: records $got, requests $want"
	[ "$got" -eq "$want" ] || { echo "MISMATCH ($mode): a request was not recorded" >&2; exit 1; }
done
# The anchor for Redis's CPU per record, in this run: a plain XADD of a
# record's 23 fields (the layout before: one field per value), one per
# command, pipelined (redis-cli --pipe), of the records just written.
n_anchor=200000
rcli --raw XREVRANGE bench:nowal + - COUNT 1 | python3 -c '
import sys
names = ("time id request_id instance client_ip user_agent subject "
         "auth_method action repository reference upstream method path "
         "status error decision rule bytes_in bytes_out duration_ms cache "
         "auth_failure").split()
lines = sys.stdin.read().split("\n")
args = ["XADD", "bench:anchor", "*"]
if lines[1] == "record":    # packed (either layout is in the stream)
    for k, v in zip(names, lines[2].split("\t")[:-1]):
        args += [k, v]
else:
    args += lines[1:1 + 2 * len(names)]
cmd = "*%d\r\n" % len(args) + "".join(
    "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)
sys.stdout.write(cmd * int(sys.argv[1]))
' "$n_anchor" > "$work/anchor.resp"
r0=$(cpu_ticks "$redis_pid")
rcli --pipe < "$work/anchor.resp" > /dev/null
r1=$(cpu_ticks "$redis_pid")
python3 -c "print('anchor: plain XADD of the 23 fields, pipelined: %.1f us of Redis CPU per record' % (($r1-$r0)*1e6/$tck/$n_anchor))"
rcli DEL bench:anchor > /dev/null
# Redis's own account of the writer's script and the calls it makes
# (Redis 7 counts a script's calls too), per record written.
recs=0
for mode in ${modes#off }; do recs=$((recs + ${sent[$mode]})); done
echo "INFO commandstats over the writers' records (the anchor's XADDs included: $n_anchor):"
rcli INFO commandstats | tr -d '\r' | python3 -c '
import re, sys
recs = int(sys.argv[1])
for line in sys.stdin:
    m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
    if m and m.group(1) not in ("info", "config", "xlen", "ping"):
        print("  %-18s %9d calls  %6.3f per record  %5.2f us per record" % (
            m.group(1), int(m.group(2)), int(m.group(2)) / recs,
            int(m.group(3)) / recs))
' "$recs"
fi
echo "end: $(uptime)"
