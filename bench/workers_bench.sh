#!/bin/bash
# workers_bench.sh: what `workers` buys (README "Every core"), next to
# nginx serving the same bytes as a static file, in one run, everything on
# 127.0.0.1 and stopped by PID on exit (issue 12, acceptance 9).
#
# Every measured request is a cached manifest GET by digest (a cache hit
# with its repository link) with the audit stream on (Redis, write-ahead
# log) and a policy of a few rules (no open rule), in five modes,
# alternating round by round:
#
#   nginx    nginx serving the same bytes as a static file at the same
#   nginx-sf path (worker_processes auto), with sendfile off (nginx's
#            default) and on; the ratios are to the better of the two
#   auth-1   the gateway with workers 1, Bearer <one gateway token>: the
#   auth-2   token was asked once from the gateway's /token with a gateway
#            secret (`portcullis secret create`, checked against Redis) as
#            the Basic password; every request carries it, so the gateway
#            verifies it through its verified-token cache, checks the
#            revocation table and the token's access claim, then the
#            policy (repository bench/app: rule pull-bench, authenticated)
#   anon-1   the same gateways, anonymous, on repository pub/app (the same
#   anon-2   manifest; rule pull-pub lets anonymous callers pull pub/**):
#            no credential, for comparison
#   anon-2s  (not run by default) a third gateway, workers 2 with
#   auth-2s  worker_balance 0: the shared accept queue alone, without the
#            accept balance (README "Every core")
#
# The load: wrk (Debian's) with LOAD_THREADS threads and CONNS keep-alive
# connections, SECONDS_PER_ROUND per mode and round; req/s, median and
# 99th percentile latency (wrk's own histogram, through a Lua done()
# hook).  Without wrk (or LOADGEN=load) bench/lib/load.c with
# LOAD_LATENCY=1 (one blocking thread per connection: heavier on a small
# machine).  Printed: the medians over rounds, the ratio to nginx, the
# gateway's CPU per request (utime + stime of the master and its
# workers), the load average (uptime) at start and end.  Every mode must
# answer every request with 200; each gateway's audit stream must gain
# one record per answered request (wrk does not count the ones in flight
# when it stops: up to CONNS more).  With workers 2, how many of the
# CONNS connections each worker held half-way through each round (the
# split, from /proc/net/tcp and each worker's /proc/PID/fd).  Not part
# of CI; see README.md ("Benchmarks").
#
# Environment (all optional):
#   PORTCULLIS_BIN, DOCKER_REGISTRY_BIN, REDIS_SERVER_BIN, NGINX_BIN
#   SECONDS_PER_ROUND (default 5, 1..60), ROUNDS (default 3, 1..10),
#   CONNS (default 64, 1..256), LOAD_THREADS (wrk -t, default 2, 1..16)
#   LOADGEN: wrk (default when installed) or load
#   MODES: the modes to run (default "nginx nginx-sf anon-1 auth-1
#          anon-2 auth-2"; nginx is always run, it is the anchor; add
#          anon-2s auth-2s for the shared queue without the balance)
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
LOAD_THREADS=${LOAD_THREADS:-2}
if [ -z "${LOADGEN:-}" ]; then
	LOADGEN=load
	command -v wrk >/dev/null && LOADGEN=wrk
fi
MODES=${MODES:-nginx nginx-sf anon-1 auth-1 anon-2 auth-2}
bound() {	# bound VAR MIN MAX
	case ${!1} in ''|*[!0-9]*) echo "$1 must be a number" >&2; exit 2;; esac
	[ "${!1}" -ge "$2" ] && [ "${!1}" -le "$3" ] ||
		{ echo "$1: $2..$3" >&2; exit 2; }
}
bound SECONDS_PER_ROUND 1 60
bound ROUNDS 1 10
bound CONNS 1 256
bound LOAD_THREADS 1 16
case $LOADGEN in wrk|load) ;; *) echo "LOADGEN: wrk or load" >&2; exit 2;; esac
modes=(nginx)
for m in $MODES; do
	case $m in
	nginx) ;;
	nginx-sf|anon-1|anon-2|auth-1|auth-2|anon-2s|auth-2s) modes+=("$m");;
	*) echo "unknown mode $m" >&2; exit 2;;
	esac
done
for tool in cc curl python3 redis-cli "$PORTCULLIS_BIN" \
    "$DOCKER_REGISTRY_BIN" "$REDIS_SERVER_BIN" "$NGINX_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
[ "$LOADGEN" = load ] || command -v wrk >/dev/null ||
	{ echo "missing: wrk (contrib/install-deps.sh bench)" >&2; exit 2; }

. "$here/lib/common.sh"
bench_init workers-bench
echo "uptime at start: $(uptime)"
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"
cpu_ticks() {	# PID: utime + stime of PID and its children now alive
	local p t=0
	for p in "$1" $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null ||
		    echo 0)))
	done
	echo "$t"
}
tck=$(getconf CLK_TCK)

redis_port=$(free_port)
mkdir -p "$work/redis"
"$REDIS_SERVER_BIN" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
	--save "" --appendonly no --daemonize no > "$work/redis/log" 2>&1 &
pids+=($!)
rcli() { redis-cli -p "$redis_port" "$@"; }
for i in $(seq 100); do
	rcli PING >/dev/null 2>&1 && break
	[ "$i" = 100 ] && { echo "redis-server not ready after 10 s" >&2; exit 1; }
	sleep 0.1
done

# --- a small image in bench/app and pub/app, pushed to docker-registry ------
start_registry
head -c 4096 /dev/urandom > "$work/layer"
layer_d=sha256:$(sha256sum "$work/layer" | cut -d' ' -f1)
printf '{}' > "$work/img-config.json"
cfg_d=sha256:$(sha256sum "$work/img-config.json" | cut -d' ' -f1)
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
	"$MT" "$cfg_d" "$layer_d" > "$work/manifest.json"
man_d=sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
for repo_name in bench/app pub/app; do
	for f in layer:$layer_d img-config.json:$cfg_d; do
		loc=$(curl -s -D - -o /dev/null -X POST \
		    "$R/v2/$repo_name/blobs/uploads/" |
			tr -d '\r' | sed -n 's/^Location: //Ip')
		case $loc in http*) ;; *) loc=$R$loc;; esac
		case $loc in *\?*) sep='&';; *) sep='?';; esac
		curl -sf -X PUT --data-binary @"$work/${f%%:*}" \
			-H 'Content-Type: application/octet-stream' \
			"$loc${sep}digest=${f#*:}" -o /dev/null
	done
	curl -sf -X PUT -H "Content-Type: $MT" \
		--data-binary @"$work/manifest.json" \
		-o /dev/null "$R/v2/$repo_name/manifests/v1"
done
mpath=/v2/bench/app/manifests/$man_d
ppath=/v2/pub/app/manifests/$man_d

# --- nginx: the same bytes as a static file at the same path ----------------
nport=$(free_port)
nsport=$(free_port)
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
		sendfile off;
	}
	server {
		listen 127.0.0.1:$nsport;
		root $work/nginx/root;
		sendfile on;
	}
}
NGX
"$NGINX_BIN" -c "$work/nginx/nginx.conf" > "$work/nginx/log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$nport$mpath" nginx "$!" "$work/nginx/error.log"

# --- the gateways with workers 1 and 2 ---------------------------------------
# A few rules of the kinds a site writes: the benched repository is allowed
# to authenticated callers by the first, pub/** to anyone (the anonymous
# rows), nothing else to anyone anonymous.
cat > "$work/policy.json" <<'JSON'
{"rules": [
 {"id": "pull-bench", "effect": "allow", "repositories": ["bench/**"],
  "subjects": ["authenticated"], "actions": ["pull"]},
 {"id": "no-secrets", "effect": "deny", "repositories": ["bench/secret-*/**"],
  "subjects": ["authenticated"], "actions": ["*"]},
 {"id": "ci-push", "effect": "allow",
  "repositories": ["ci/${claim.client_id}/**"],
  "subjects": [{"claim": "client_id", "glob": "*"}], "actions": ["push"]},
 {"id": "team", "effect": "allow", "repositories": ["team/**"],
  "subjects": ["group:builders"], "actions": ["pull", "push"]},
 {"id": "leaver", "effect": "deny", "repositories": ["**"],
  "subjects": ["user:leaver"], "actions": ["*"]},
 {"id": "office", "effect": "deny", "repositories": ["internal/**"],
  "subjects": ["cidr:10.0.0.0/8"], "actions": ["pull"]},
 {"id": "pull-pub", "effect": "allow", "repositories": ["pub/**"],
  "subjects": ["anonymous", "authenticated"], "actions": ["pull"]}]}
JSON
"$PORTCULLIS_BIN" keygen -o "$work/gwkey" > /dev/null
declare -A port gwpid
gws="1 2"
case " $MODES " in *-2s\ *) gws="1 2 2s";; esac
for w in $gws; do
	p=$(free_port)
	balance='"worker_balance": 4,'
	case $w in *s) balance='"worker_balance": 0,';; esac
	mkdir -p "$work/gw$w"
	cat > "$work/gw$w/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$p"},
  "log": {"level": "warn"},
  "workers": ${w%s}, $balance
  "instance_id": "bench-w$w",
  "policy": {"file": "$work/policy.json"},
  "upstreams": [{"name": "up1", "url": "$R", "default": true}],
  "cache": {"dir": "$work/gw$w/cache"},
  "redis": {"address": "127.0.0.1:$redis_port"},
  "secrets": {"key_prefix": "bench-w$w:secret:"},
  "identity": {"token": {"signing_key": "$work/gwkey.key",
                         "expires_in": 3600}},
  "audit": {"stream": "bench:w$w",
            "spool_file": "$work/gw$w/audit.spool", "max_len": 0,
            "max_age": 0}
}
JSON
	"$PORTCULLIS_BIN" serve -c "$work/gw$w/config.json" \
		> "$work/gw$w/log" 2>&1 &
	pids+=($!)
	gwpid[$w]=$!
	wait_http "http://127.0.0.1:$p/healthz" "portcullis (workers $w)" "$!" \
		"$work/gw$w/log"
	port[$w]=$p
	G=http://127.0.0.1:$p
	# A gateway secret (printed once, first line; kept in a file, never
	# on a command line), then the gateway token it buys at /token.
	"$PORTCULLIS_BIN" secret create -c "$work/gw$w/config.json" \
		--subject robot:bench --name bench | head -1 > "$work/gw$w/secret"
	python3 - "$work/gw$w/secret" "$work/gw$w/basic.hdr" <<'PY'
import base64, sys
s = open(sys.argv[1]).read().strip()
if not s.startswith("pcs_"):
    sys.exit("secret create printed no secret")
open(sys.argv[2], "w").write("Authorization: Basic %s\n" %
    base64.b64encode(b"robot-bench:" + s.encode()).decode())
PY
	code=$(curl -s -H @"$work/gw$w/basic.hdr" -o "$work/gw$w/token.json" \
		-w '%{http_code}' \
		"$G/token?service=portcullis&scope=repository:bench/app:pull")
	[ "$code" = 200 ] || { echo "GET /token: $code; answer and log:" >&2
		head -c 300 "$work/gw$w/token.json" >&2; echo >&2
		tail -5 "$work/gw$w/log" >&2; exit 1; }
	python3 - "$work/gw$w/token.json" "$work/gw$w/token.hdr" <<'PY'
import base64, json, sys
tok = json.load(open(sys.argv[1]))["token"]
p = tok.split(".")[1]
c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
if c["access"] != [{"type": "repository", "name": "bench/app",
                    "actions": ["pull"]}]:
    sys.exit("unexpected access claim in the gateway token: %r" % c["access"])
open(sys.argv[2], "w").write("Authorization: Bearer %s\n" % tok)
PY
	rm -f "$work/gw$w/secret" "$work/gw$w/basic.hdr" "$work/gw$w/token.json"
	# Anonymous callers are refused on bench/app (auth is not optional).
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT" "$G$mpath")
	[ "$code" = 401 ] || { echo "workers $w: anonymous GET of bench/app" \
		"got $code, not 401" >&2; exit 1; }
	# Cached, with its link, in every worker's view (the directory is
	# shared, the first request of each worker adopts the file).
	for i in 1 2 3 4; do
		curl -sf -o /dev/null -H "Accept: $MT" -H @"$work/gw$w/token.hdr" \
			-H 'Connection: close' "$G$mpath"
		curl -sf -o /dev/null -H "Accept: $MT" \
			-H 'Connection: close' "$G$ppath"
	done
done
port[nginx]=$nport
port[nginx-sf]=$nsport

# split.py PORT SECONDS PID...: half-way through SECONDS, the established
# connections on 127.0.0.1:PORT each worker PID holds, "a/b" (the
# workers' share of the load's connections).
cat > "$work/split.py" <<'PY'
import os, re, sys, time
port, pids = int(sys.argv[1]), [int(x) for x in sys.argv[3:]]
time.sleep(float(sys.argv[2]) / 2)
est = set()
with open("/proc/net/tcp") as f:
    for line in f.read().splitlines()[1:]:
        fl = line.split()
        if fl[3] == "01" and int(fl[1].split(":")[1], 16) == port:
            est.add(fl[9])
counts = []
for pid in pids:
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            m = re.match(r"socket:\[(\d+)\]$",
                         os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        n += bool(m and m.group(1) in est)
    counts.append(n)
print("/".join(str(n) for n in sorted(counts, reverse=True)))
PY

# wrk: req/s, requests, non-200 or failed, p50 ms, p99 ms
cat > "$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("RESULT %.0f %d %d %.2f %.2f\n",
	    summary.requests / (summary.duration / 1e6), summary.requests,
	    e.connect + e.read + e.write + e.status + e.timeout,
	    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
LUA
run_load() {	# PORT PATH [HEADER] -> "rps n bad p50 p99"
	if [ "$LOADGEN" = wrk ]; then
		local hdr=()
		[ -n "${3:-}" ] && hdr=(-H "$3")
		wrk -t "$LOAD_THREADS" -c "$CONNS" -d "${SECONDS_PER_ROUND}s" \
			-s "$work/report.lua" -H "Accept: $MT" "${hdr[@]}" \
			"http://127.0.0.1:$1$2" | sed -n 's/^RESULT //p'
	elif [ -n "${3:-}" ]; then
		printf '%s\n' "$3" > "$work/hdr.line"
		LOAD_LATENCY=1 "$work/load" -f "$work/hdr.line" "$1" "$2" \
			"$CONNS" "$SECONDS_PER_ROUND" "Accept: $MT" |
			awk '{print $1, $2, $3, "nan", "nan"}'
	else
		LOAD_LATENCY=1 "$work/load" "$1" "$2" "$CONNS" \
			"$SECONDS_PER_ROUND" "Accept: $MT"
	fi
}

echo "== cached manifest GET by digest, policy and audit on; $LOADGEN" \
	"($([ "$LOADGEN" = wrk ] && echo "$LOAD_THREADS threads, ")$CONNS" \
	"connections), ${SECONDS_PER_ROUND}s rounds x $ROUNDS; $(nproc) cores" \
	"shared by the load generator, nginx, the gateways and Redis"
res=$work/results
: > "$res"
nm=${#modes[@]}
for r in $(seq "$ROUNDS"); do
	# Rotate the order each round (no order bias).
	order=("${modes[@]:$(( (r - 1) % nm ))}" "${modes[@]:0:$(( (r - 1) % nm ))}")
	for k in "${order[@]}"; do
		hdr= path=$mpath w=1
		case $k in
		nginx|nginx-sf) p=${port[$k]};;
		anon-*) w=${k#anon-} path=$ppath;;
		auth-*) w=${k#auth-}; hdr=$(cat "$work/gw$w/token.hdr");;
		esac
		case $k in nginx*) w=;; *) p=${port[$w]};; esac
		nw=${w%s}
		before=0 c0=0
		if [ -n "$w" ]; then
			before=$(rcli XLEN "bench:w$w")
			c0=$(cpu_ticks "${gwpid[$w]}")
		fi
		split=-
		if [ "${nw:-1}" -gt 1 ]; then
			# Half-way through the round: how many of the CONNS
			# connections each worker holds (started before the
			# load, at nice 10: it must take little from what is
			# measured, yet look while the round still runs).
			nice -n 10 python3 "$work/split.py" "$p" \
			    "$SECONDS_PER_ROUND" $(cat \
			    "/proc/${gwpid[$w]}/task/${gwpid[$w]}/children") \
			    > "$work/split" 2>/dev/null &
			splitpid=$!
		fi
		read -r rps n bad p50 p99 < <(run_load "$p" "$path" "$hdr")
		if [ "${nw:-1}" -gt 1 ]; then
			wait "$splitpid" || true
			split=$(cat "$work/split")
			[ -n "$split" ] || split=-
		fi
		[ -n "${rps:-}" ] || { echo "round $r $k: no result" >&2; exit 1; }
		[ "$bad" = 0 ] || { echo "round $r $k: $bad failed requests" >&2
			[ -n "$w" ] && tail -5 "$work/gw$w/log" >&2; exit 1; }
		us=0
		if [ -n "$w" ]; then
			c1=$(cpu_ticks "${gwpid[$w]}")
			us=$(python3 -c "print(($c1-$c0)*1e6/$tck/max($n,1))")
			# One audit record per answered request (the ones in
			# flight land within a bounded wait).
			for i in $(seq 100); do
				[ "$(rcli XLEN "bench:w$w")" -ge $((before + n)) ] && break
				sleep 0.1
			done
			after=$(rcli XLEN "bench:w$w")
			[ "$after" -ge $((before + n)) ] &&
			    [ "$after" -le $((before + n + CONNS)) ] ||
				{ echo "round $r $k: $((after - before)) audit" \
				  "records for $n answered requests" >&2; exit 1; }
			[ "$r" = 1 ] && echo "$k: $(rcli --raw XREVRANGE \
			    "bench:w$w" + - COUNT 1 | python3 -c '
import sys
sys.path.insert(0, sys.argv[1])
from lib.redis import unpack_record
l = sys.stdin.read().split("\n")[1:]
rec = dict(zip(l[0::2], l[1::2]))
if list(rec) == ["record"]:
    rec = unpack_record(rec["record"])
print(" ".join("%s=%s" % (k, rec.get(k, "?")) for k in
    ("subject", "auth_method", "decision", "rule", "status", "cache")))' \
			    "$repo/tests/integration")" \
			    >> "$work/records"
		fi
		echo "$k $r $rps $p50 $p99 $us $split" >> "$res"
		printf '  round %d %-6s %8s req/s\n' "$r" "$k" "$rps" >&2
	done
done
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, _r, rps, p50, p99, us, split = line.split()
    rows.setdefault(k, []).append((float(rps), float(p50), float(p99),
                                   float(us), split))
med = lambda k, i: statistics.median(x[i] for x in rows[k])
best = max(med(k, 0) for k in ("nginx", "nginx-sf") if k in rows)
print("%-34s %9s %8s %8s %8s %9s   %s" % ("", "req/s", "p50 ms", "p99 ms",
      "x best", "gw us/req", "rounds: req/s p99 [split]"))
for k, name in (("nginx", "nginx static file, sendfile off"),
                ("nginx-sf", "nginx static file, sendfile on"),
                ("anon-1", "portcullis workers 1, anonymous"),
                ("auth-1", "portcullis workers 1, token"),
                ("anon-2", "portcullis workers 2, anonymous"),
                ("auth-2", "portcullis workers 2, token"),
                ("anon-2s", "  the same, worker_balance 0, anon"),
                ("auth-2s", "  the same, worker_balance 0, token")):
    if k not in rows:
        continue
    print("%-34s %9.0f %8.2f %8.2f %8.2f %9s   %s" % (
        name, med(k, 0), med(k, 1), med(k, 2), med(k, 0) / best,
        "-" if k.startswith("nginx") else "%.1f" % med(k, 3),
        ", ".join("%.0f %.1f" % (x[0], x[2]) +
                  ("" if x[4] == "-" else " [%s]" % x[4])
                  for x in rows[k])))
print("x best: median req/s over the better nginx median (%.0f); gw us/req:"
      " the gateway's CPU (master and workers) per answered request;"
      " split: the load's connections each worker held half-way through"
      " the round" % best)
PY
echo "last audit record of each mode's first round:"
sed 's/^/  /' "$work/records"
echo "uptime at end: $(uptime)"
