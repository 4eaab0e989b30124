#!/bin/bash
# audit_wal_perf.sh: where the write-ahead log's cost goes (audit.wal),
# by perf, on the request loop of bench/audit_bench.sh part 4: cached
# manifest GETs by digest, CONNS keep-alive connections, gateways with
# their own caches, one Redis, alternating rounds, everything on
# 127.0.0.1 and stopped by PID on exit.
#
# Gateways: "off" (audit off), "nowal" (audit, "wal": false: the anchor)
# and "wal" (audit, "wal": true, fsync interval, the default) with
# PORTCULLIS_BIN; with BEFORE_BIN set, also "before" ("wal": true) with
# that binary, so that an old and a new WAL compare in one run.  Each
# round is recorded by `perf record -g` on the loaded gateway (every
# gateway, so that perf's overhead is the same for all).  Printed: the
# median req/s and gateway CPU per request of each, and for the WAL
# gateways the share of the gateway's samples spent on the WAL: in the
# kernel, the syscalls it makes (pwritev/pwrite64, fdatasync, ftruncate,
# fallocate, with what the kernel does under them) and the page faults
# of its stores into the mapped file; in user space the framing (self
# time of audit_spool_*, audit_wal_*) and the CRC (audit_crc32*).  Run
# under the bench lock (flock /work/wt/bench.lock).
#
# Environment (all optional):
#   PORTCULLIS_BIN       gateway binary (default <repo>/portcullis)
#   BEFORE_BIN           a second binary to compare (wal true)
#   SECONDS_PER_ROUND    load duration per round (default 5)
#   ROUNDS               rounds per configuration (default 3)
#   CONNS                client connections (default 4)
#   WAL_SPOOL_MAX_BYTES  spool_max_bytes of the "wal" gateway, the size of
#                        its ring (default: the config's default)
#   KEEP_WORK=1          keep the temp dir (and the perf data)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
BEFORE_BIN=${BEFORE_BIN:-}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-4}
WAL_SPOOL_MAX_BYTES=${WAL_SPOOL_MAX_BYTES:-}

for v in SECONDS_PER_ROUND ROUNDS CONNS; do
	case ${!v} in ''|*[!0-9]*) echo "$v must be a number" >&2; exit 2;; esac
done
for tool in cc curl perf python3 redis-cli "$PORTCULLIS_BIN" \
    "$DOCKER_REGISTRY_BIN" "$REDIS_SERVER_BIN" ${BEFORE_BIN:+"$BEFORE_BIN"}; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init audit-wal-perf
echo "start: $(uptime)"
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

# --- docker-registry with a small image ---------------------------------------
start_registry
push_small_image
mpath=/v2/bench/app/manifests/$man_d

start_gw() {	# NAME BIN AUDIT_JSON -> gw_port, gw_pid
	local name=$1 bin=$2 audit=$3 port
	port=$(free_port)
	mkdir -p "$work/$name"
	cat > "$work/$name/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "log": {"level": "warn"},
  "workers": 1,
  "policy": {"rules": [{"id": "open", "effect": "allow",
             "repositories": ["**"], "subjects": ["anonymous"],
             "actions": ["pull"]}]},
  "upstreams": [{"name": "up1", "url": "http://127.0.0.1:$rport",
                 "default": true}],
  "cache": {"dir": "$work/$name/cache"}$audit
}
JSON
	"$bin" serve -c "$work/$name/config.json" > "$work/$name/log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$port/healthz" "portcullis ($name)" "$!" "$work/$name/log"
	gw_port=$port
	gw_pid=$!
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

modes="off nowal wal"
[ -n "$BEFORE_BIN" ] && modes="$modes before"
declare -A wport wpid
for mode in $modes; do
	bin=$PORTCULLIS_BIN audit=""
	case $mode in
	nowal|wal|before)
		w=true
		[ $mode = nowal ] && w=false
		[ $mode = before ] && bin=$BEFORE_BIN
		smax=
		[ $mode = wal ] && [ -n "$WAL_SPOOL_MAX_BYTES" ] &&
			smax=", \"spool_max_bytes\": $WAL_SPOOL_MAX_BYTES"
		audit=", \"audit\": {\"redis\": \"127.0.0.1:$redis_port\", \"stream\": \"bench:$mode\", \"spool_file\": \"$work/$mode/audit.spool\", \"max_len\": 0, \"max_age\": 0, \"wal\": $w, \"fsync\": \"interval\"$smax}";;
	esac
	start_gw "$mode" "$bin" "$audit"
	wport[$mode]=$gw_port wpid[$mode]=$gw_pid
	curl -sf -o /dev/null -H "Accept: $MT" "http://127.0.0.1:$gw_port$mpath"
	curl -sf -o /dev/null -H "Accept: $MT" "http://127.0.0.1:$gw_port$mpath"
done

res=$work/results
: > "$res"
for r in $(seq "$ROUNDS"); do
	for mode in $modes; do
		port=${wport[$mode]} pid=${wpid[$mode]}
		perf record -q -g -F 999 -p "$pid" -o "$work/perf-$mode-$r.data" \
			>/dev/null 2>&1 &
		perf_pid=$!
		g0=$(cpu_ticks "$pid")
		read -r rps n bad < <("$work/load" "$port" "$mpath" "$CONNS" "$SECONDS_PER_ROUND" "Accept: $MT")
		g1=$(cpu_ticks "$pid")
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
		[ "$bad" = 0 ] || { echo "round $r $mode: $bad failed requests" >&2; exit 1; }
		gus=$(python3 -c "print(($g1-$g0)*1e6/$tck/max($n,1))")
		echo "$mode $r $rps $gus" >> "$res"
	done
done

# The WAL's share of a gateway's samples, one perf file, sample by
# sample (perf script): "kernel" is a sample in one of the spool's
# syscalls (by the kernel frames under it: pwritev/pwrite64, fdatasync,
# ftruncate, fallocate; and the close(2) that frees the old file's pages
# after a release, under ext4_evict_inode, which a cache hit never
# makes), or a page fault taken by stores into a mapped spool (the first
# user-space frame audit_spool_append: a build that maps it); "user" is
# self time in the WAL's functions (audit_crc32*, audit_spool_*,
# audit_wal_*).  User-space frames of an -O2 build are no reliable
# chains beyond the first, so only the first is read.
wal_share() {
	perf script -i "$1" -F period,ip,sym,dso 2>/dev/null | python3 -c '
import re, sys
calls = re.compile(r"^(do_pwritev|__x64_sys_pwritev|ksys_pwrite64|"
                   r"__x64_sys_pwrite64|do_fsync|__x64_sys_fdatasync|"
                   r"do_sys_ftruncate|__x64_sys_ftruncate|vfs_fallocate|"
                   r"ksys_fallocate|__x64_sys_fallocate)$")
wal_user = re.compile(r"^(audit_crc32\w*|audit_spool_\w+|audit_wal_\w+)$")
tot = kern = user = crc = 0.0
def done(period, frames):
    global tot, kern, user, crc
    if period is None:
        return
    tot += period
    ks = [s for s, d in frames if d == "[kernel.kallsyms]"]
    us = [s for s, d in frames if d != "[kernel.kallsyms]"]
    first = us[0] if us else ""
    if any(calls.match(s) for s in ks):
        kern += period
    elif "ext4_evict_inode" in ks:      # the old file closed by a release
        kern += period
    elif ks and first == "audit_spool_append":
        kern += period
    elif not ks and first.startswith("audit_crc32"):
        crc += period
    elif not ks and wal_user.match(first):
        user += period
period, frames = None, []
for line in sys.stdin:
    if not line.strip():
        continue
    if not line.startswith("\t"):
        done(period, frames)
        period, frames = float(line.split()[0]), []
        continue
    m = re.match(r"\s*[0-9a-f]+ (\S+?)(?:\+0x[0-9a-f]+)? \((.*)\)$", line)
    if m:
        frames.append((m.group(1), m.group(2)))
done(period, frames)
tot = tot or 1
print("%.2f %.2f %.2f" % (kern / tot * 100, user / tot * 100,
                          crc / tot * 100))'
}
for mode in $modes; do
	case $mode in wal|before|nowal) ;; *) continue;; esac
	for r in $(seq "$ROUNDS"); do
		echo "perf $mode $r $(wal_share "$work/perf-$mode-$r.data")" >> "$res"
	done
done

python3 - "$res" <<'PY'
import statistics, sys
rows, perf = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "perf":
        perf.setdefault(f[1], []).append((float(f[3]), float(f[4]),
                                          float(f[5])))
    else:
        rows.setdefault(f[0], []).append((float(f[2]), float(f[3])))
med = lambda d, m, i: statistics.median(x[i] for x in d[m])
print("%-26s %9s %14s %11s %9s %8s %8s" % ("cached manifest GET", "req/s",
      "gw us/request", "WAL kernel", "WAL user", "WAL CRC", "WAL all"))
for m in ("off", "nowal", "wal", "before"):
    if m not in rows:
        continue
    p = ""
    if m in perf:
        k, u, c = med(perf, m, 0), med(perf, m, 1), med(perf, m, 2)
        a = statistics.median(sum(x) for x in perf[m])
        p = "%10.2f%% %8.2f%% %7.2f%% %7.2f%%" % (k, u, c, a)
    print("%-26s %9.0f %14.1f %s" % (m, med(rows, m, 0), med(rows, m, 1), p))
    print("%-26s rounds req/s: %s" % ("", " ".join("%.0f" % x[0]
                                                    for x in rows[m])))
for m in ("nowal", "wal", "before"):
    if m in rows:
        o, w = med(rows, "off", 0), med(rows, m, 0)
        print("%s next to audit off: %.1f%% req/s, %+.1f%% gateway CPU per "
              "request" % (m, (o - w) / o * 100,
                           (med(rows, m, 1) - med(rows, "off", 1)) /
                           med(rows, "off", 1) * 100))
for m in ("wal", "before"):
    if m in rows:
        nw, w = med(rows, "nowal", 0), med(rows, m, 0)
        print("%s next to wal false: %.1f%% req/s, %.1f%% gateway CPU per "
              "request" % (m, (nw - w) / nw * 100,
                           (med(rows, m, 1) - med(rows, "nowal", 1)) /
                           med(rows, "nowal", 1) * 100))
PY
echo "end: $(uptime)"
