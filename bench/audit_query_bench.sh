#!/bin/bash
# audit_query_bench.sh: `portcullis audit query` and `audit export` on
# streams of growing size, to show that a query's cost follows what it
# reads (its time window, its index) and not the length of the stream.
# For each size in SIZES: an empty redis-server database, SIZE records
# written by `portcullis audit generate` (through the writer's Lua script,
# so every index is real; one record every STEP_MS ms, the last about
# now, each with a stream id of its time), then:
#  - Redis memory: used_memory before and after, per record (the stream,
#    the subject, repository and first-segment indexes, the writers hash),
#    and the script's cost: generate's records/s and Redis CPU per record
#    (INFO commandstats: EVALSHA usec over the records; generate sends
#    100 records a call, as the gateway's writer sends its batches);
#  - queries, median wall time of QRUNS runs (process start included),
#    with --stats' entries read: indexed ones (--subject, --repo exact,
#    --repo 'team3/*'), and walks that match nothing in a window of WINDOW
#    records (--since, --since/--until, a glob, a first-segment index),
#    which read the whole window: the worst case for that window;
#  - for contrast, one walk of the whole stream without --since (SIZE
#    entries read; skipped above FULLWALK_MAX records);
#  - `audit export` of the window (WINDOW records as JSON lines).
# Everything on 127.0.0.1, stopped by PID on exit.  Not part of CI.
#
# Environment (all optional):
#   PORTCULLIS_BIN    gateway binary (default <repo>/portcullis)
#   REDIS_SERVER_BIN  default /usr/bin/redis-server
#   SIZES             stream sizes (default "1000000 3000000")
#   STEP_MS           ms between generated records (default 10)
#   WINDOW            records in the time window of the walks (100000)
#   QRUNS             runs per query (default 5)
#   FULLWALK_MAX      largest stream walked whole for contrast (1000000)
#   KEEP_WORK=1       keep the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
SIZES=${SIZES:-1000000 3000000}
STEP_MS=${STEP_MS:-10}
WINDOW=${WINDOW:-100000}
QRUNS=${QRUNS:-5}
FULLWALK_MAX=${FULLWALK_MAX:-1000000}

for v in STEP_MS WINDOW QRUNS FULLWALK_MAX; do
	case ${!v} in ''|*[!0-9]*) echo "$v must be a number" >&2; exit 2;; esac
done
for s in $SIZES; do
	case $s in ''|*[!0-9]*) echo "SIZES: numbers" >&2; exit 2;; esac
done
for tool in python3 redis-cli "$PORTCULLIS_BIN" "$REDIS_SERVER_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init audit-query-bench
echo "start: $(uptime)"

redis_port=$(free_port)
mkdir -p "$work/redis"
"$REDIS_SERVER_BIN" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
	--save "" --appendonly no --daemonize no > "$work/redis/log" 2>&1 &
redis_pid=$!
pids+=($redis_pid)
for i in $(seq 100); do
	redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break
	sleep 0.1
done
rcli() { redis-cli -p "$redis_port" "$@"; }
info() {	# SECTION FIELD
	rcli INFO "$1" | tr -d '\r' | sed -n "s/^$2://p"
}

cat > "$work/gen.json" <<JSON
{"listen": {"address": "127.0.0.1:$(free_port)"},
 "upstreams": [{"name": "up1", "url": "http://127.0.0.1:9", "default": true}],
 "audit": {"redis": "127.0.0.1:$redis_port", "max_len": 0, "max_age": 0,
           "spool_file": "$work/unused.spool"}}
JSON

# qbench LABEL ARGS...: median wall time of QRUNS runs, entries read.
qbench() {
	local label=$1; shift
	local times=() i t0 t1 runs=$QRUNS
	case $label in *"(contrast)"*) runs=1;; esac
	for i in $(seq "$runs"); do
		t0=$(date +%s%N)
		"$PORTCULLIS_BIN" audit query -c "$work/gen.json" --format json \
		    --stats "$@" > "$work/q.out" 2> "$work/q.err"
		t1=$(date +%s%N)
		times+=($(( (t1 - t0) / 1000 )))
	done
	python3 - "$label" "$work/q.out" "$work/q.err" "${times[@]}" <<'PY'
import json, statistics, sys
label, out, err = sys.argv[1:4]
times = [int(x) for x in sys.argv[4:]]
n = len(json.load(open(out))["records"])
st = [l for l in open(err) if l.startswith("stats:")][0].split()[1:]
st = dict(kv.split("=") for kv in st)
print("%-52s %8.1f ms (min %6.1f)  %4d records  %7s read  %-13s" % (
    label, statistics.median(times) / 1000, min(times) / 1000, n,
    st["entries_read"], st["plan"]))
PY
}

for size in $SIZES; do
	rcli FLUSHALL >/dev/null
	rcli CONFIG RESETSTAT >/dev/null
	m0=$(info memory used_memory)
	echo
	echo "== $size records, one every $STEP_MS ms"
	t0=$(date +%s.%N)
	"$PORTCULLIS_BIN" audit generate -c "$work/gen.json" --count "$size" \
	    --step-ms "$STEP_MS" >/dev/null
	t1=$(date +%s.%N)
	m1=$(info memory used_memory)
	usec=$(rcli INFO commandstats | tr -d '\r' |
	    sed -n 's/^cmdstat_evalsha:calls=[0-9]*,usec=\([0-9]*\),.*/\1/p')
	python3 -c "print('generate: %.1f s, %.0f records/s; Redis %.1f us CPU per record (EVALSHA usec / records; 100 records a call)' % ($t1-$t0, $size/($t1-$t0), float('$usec' or 0) / $size))"
	python3 -c "print('memory: used_memory +%.0f MiB, %.0f bytes per record (stream + indexes)' % (($m1-$m0)/1048576, ($m1-$m0)/$size))"
	echo "main stream alone (MEMORY USAGE, sampled): $(( $(rcli MEMORY USAGE portcullis:audit) / size )) bytes per record"
	# The time: the first value of a packed record (or the "time" field).
	last=$(rcli XREVRANGE portcullis:audit + - COUNT 1 | sed -n 3p | cut -f1)
	since=$(( last - (WINDOW - 1) * STEP_MS ))
	mid=$(( last - (WINDOW / 2) * STEP_MS ))
	since2=$(( mid - (WINDOW - 1) * STEP_MS ))
	qbench "--subject user042 --limit 100 (index)" --subject user042 --limit 100
	qbench "--repo team3/app4 --limit 100 (index)" --repo team3/app4 --limit 100
	qbench "--repo 'team3/*' --limit 100 (segment index)" --repo 'team3/*' --limit 100
	qbench "--since W --action nomatch (walk W)" --since "$since" --action nomatch
	qbench "--since W2 --until W2+W --action nomatch (walk W)" \
	    --since "$since2" --until "$mid" --action nomatch
	qbench "--since W --repo 'nomatch*' (glob, walk W)" --since "$since" --repo 'nomatch*'
	qbench "--since W --repo 'team3/*' --action nomatch" --since "$since" --repo 'team3/*' --action nomatch
	qbench "--since W --subject user042 --action nomatch" --since "$since" --subject user042 --action nomatch
	if [ "$size" -le "$FULLWALK_MAX" ]; then
		qbench "--action nomatch, no --since (contrast)" --action nomatch
	fi
	t0=$(date +%s%N)
	"$PORTCULLIS_BIN" audit export -c "$work/gen.json" --since "$since" \
	    > "$work/export.out" 2> "$work/export.err"
	t1=$(date +%s%N)
	echo "export --since W: $(wc -l < "$work/export.out") records in $(( (t1 - t0) / 1000000 )) ms, $(( $(stat -c %s "$work/export.out") / 1048576 )) MiB; $(tail -1 "$work/export.err")"
done
echo
echo "(W: a window of $WINDOW records; 'read': entries the query read, from --stats)"
echo "end: $(uptime)"
