#!/bin/bash
# policy_http.sh: what the access policy costs a cached manifest GET, side
# by side in one run, everything on 127.0.0.1 and stopped by PID on exit.
#
# Two gateways on one docker-registry (as upstreams up1 and hub, which
# rules name), each with its own cache
# holding the same manifest (filled once through the repository, so every
# measured request is a cache hit with its repository link):
#
#   open       the open policy: one allow rule for everything
#   realistic  RULES rules (default 1,000) of the kinds a site writes:
#              per-team allow and deny rules on team prefixes, group and
#              CIDR subjects, mTLS and claim subjects, ${subject}
#              templates, upstream-limited rules, plus BLOCKED blocked
#              digests; the benched repository is allowed by one of them
#
# Load: bench/lib/load.c, CONNS keep-alive connections, GET by digest with
# an Accept field, SECONDS_PER_ROUND per round, rounds alternating between
# the two so that drift hits both alike; medians, the ratio and the cost in
# per cent, and gateway CPU per request (utime + stime from /proc), which
# a shared machine disturbs less than req/s.  The
# gateways share the machine's CPUs with the load generator.  Never fails
# on a number; not part of CI (README.md, "Benchmarks").
#
# Environment (all optional):
#   PORTCULLIS_BIN       gateway binary (default <repo>/portcullis)
#   DOCKER_REGISTRY_BIN  default /usr/bin/docker-registry
#   SECONDS_PER_ROUND    load duration per round (default 5, at most 60)
#   ROUNDS               rounds per gateway (default 5, at most 20)
#   CONNS                client connections (default 4, at most 256)
#   RULES                rules in the realistic policy (default 1000,
#                        at most 100000)
#   BLOCKED              blocked digests in it (default 100, at most 100000)
#   KEEP_WORK=1          keep the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-4}
RULES=${RULES:-1000}
BLOCKED=${BLOCKED:-100}

bound() {	# bound VAR MIN MAX
	case ${!1} in ''|*[!0-9]*) echo "$1 must be a number" >&2; exit 2;; esac
	[ "${!1}" -ge "$2" ] && [ "${!1}" -le "$3" ] ||
		{ echo "$1: $2..$3" >&2; exit 2; }
}
bound SECONDS_PER_ROUND 1 60
bound ROUNDS 1 20
bound CONNS 1 256
bound RULES 10 100000
bound BLOCKED 0 100000
for tool in cc curl python3 sha256sum "$PORTCULLIS_BIN" \
    "$DOCKER_REGISTRY_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

. "$here/lib/common.sh"
bench_init policy-http
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

# --- docker-registry with one image in bench/app ----------------------------
start_registry
push_small_image

# --- the two policies -------------------------------------------------------
python3 - "$work" "$RULES" "$BLOCKED" <<'PY'
import hashlib, json, sys
work, nrules, nblocked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
json.dump({"rules": [{"id": "open", "effect": "allow",
                      "repositories": ["**"],
                      "subjects": ["anonymous", "authenticated"],
                      "actions": ["*"]}]},
          open(work + "/open.json", "w"), indent=1)
rules = [{"id": "bench-pull", "effect": "allow",
          "repositories": ["bench/**"], "subjects": ["anonymous"],
          "actions": ["pull"]}]
i = 0
while len(rules) < nrules:
    t = "team%d" % i
    kind = i % 8
    if kind == 0:
        r = {"effect": "allow", "repositories": [t + "/**"],
             "subjects": ["group:" + t], "actions": ["pull", "push"]}
    elif kind == 1:
        r = {"effect": "deny", "repositories": [t + "/secret-*/**"],
             "subjects": ["cidr:10.%d.0.0/16" % (i % 250)],
             "actions": ["pull"]}
    elif kind == 2:
        r = {"effect": "allow", "repositories": ["users/${subject}/**"],
             "subjects": ["group:" + t], "actions": ["*"]}
    elif kind == 3:
        r = {"effect": "allow", "repositories": ["ci/${claim.repository}/**"],
             "subjects": [{"claim": "repository", "glob": t + "/*"}],
             "actions": ["push"]}
    elif kind == 4:
        r = {"effect": "allow", "repositories": ["library/" + t + "-*"],
             "upstreams": ["hub"], "subjects": ["authenticated"],
             "actions": ["pull"]}
    elif kind == 5:
        r = {"effect": "allow", "repositories": ["mirror/" + t + "/**"],
             "subjects": ["mtls:CN=node-%d.%s,O=Example" % (i, t)],
             "actions": ["pull"]}
    elif kind == 6:
        r = {"effect": "deny", "repositories": [t + "/**", "shared/" + t],
             "subjects": ["user:leaver-%d" % i], "actions": ["*"]}
    else:
        r = {"effect": "allow", "repositories": ["shared/" + t + "/v?/**"],
             "subjects": ["cidr:fd00:%x::/32" % i, "group:" + t + "-ro"],
             "actions": ["pull"]}
    r["id"] = "r%d" % i
    rules.append(r)
    i += 1
blocked = [{"digest": "sha256:" + hashlib.sha256(b"%d" % k).hexdigest(),
            "reason": "bench"} for k in range(nblocked)]
json.dump({"rules": rules, "blocked_digests": blocked},
          open(work + "/realistic.json", "w"), indent=1)
PY

# --- two gateways -------------------------------------------------------------
start_gw() {	# NAME POLICYFILE -> sets gw_port, gw_pid
	local name=$1 port
	port=$(free_port)
	mkdir -p "$work/$name/cache"
	cat > "$work/$name/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "workers": 1,
  "log": {"level": "warn"},
  "cache": {"dir": "$work/$name/cache", "max_bytes": 1073741824},
  "policy": {"file": "$2", "max_rules": 1000000},
  "upstreams": [{"name": "up1", "url": "$R", "default": true},
                {"name": "hub", "url": "$R", "prefix": "hub",
                 "hosts": ["hub.invalid"]}]
}
JSON
	"$PORTCULLIS_BIN" serve -c "$work/$name/config.json" > "$work/$name/log" 2>&1 &
	gw_pid=$!
	pids+=($gw_pid)
	wait_http "http://127.0.0.1:$port/healthz" "portcullis ($name)" "$gw_pid" "$work/$name/log"
	gw_port=$port
	# Fill: the manifest through its repository (cached and linked).
	curl -sf -o /dev/null -H "Accept: $MT" \
		"http://127.0.0.1:$port/v2/bench/app/manifests/$man_d" ||
		{ echo "$name: the warm-up GET failed; log:" >&2; tail -5 "$work/$name/log" >&2; exit 1; }
}
start_gw open "$work/open.json"
open_port=$gw_port open_pid=$gw_pid
start_gw realistic "$work/realistic.json"
real_port=$gw_port real_pid=$gw_pid
# The realistic policy is in force: a repository no rule allows is refused.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT" \
	"http://127.0.0.1:$real_port/v2/team0/app/manifests/$man_d")
case $code in 401|403) ;; *) echo "realistic policy not in force: $code" >&2; exit 1;; esac
nrules=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['rules']))" "$work/realistic.json")

echo "== cached manifest GET by digest: policy open (1 rule) vs realistic ($nrules rules, $BLOCKED blocked digests)"
echo "   $CONNS connections, ${SECONDS_PER_ROUND}s rounds x $ROUNDS, $(nproc) CPUs shared by all processes"
res=$work/results
: > "$res"
path=/v2/bench/app/manifests/$man_d
for r in $(seq "$ROUNDS"); do
	order="open realistic"
	[ $((r % 2)) = 0 ] && order="realistic open"	# no order bias
	for mode in $order; do
		port=$open_port pid=$open_pid
		[ $mode = realistic ] && port=$real_port pid=$real_pid
		c0=$(cpu_ticks "$pid")
		read -r rps n bad < <("$work/load" "$port" "$path" "$CONNS" \
			"$SECONDS_PER_ROUND" "Accept: $MT")
		c1=$(cpu_ticks "$pid")
		[ "$bad" = 0 ] || { echo "round $r $mode: $bad failed requests" >&2; exit 1; }
		echo "$mode $rps $n $(python3 -c "print(($c1-$c0)*1e6/$tck/max($n,1))")" >> "$res"
		printf '  round %d %-9s %8s req/s\n' "$r" "$mode" "$rps" >&2
	done
done
# Every measured request was a cache hit (no upstream manifest GET).
for mode in open realistic; do
	grep -q "cache=miss" "$work/$mode/log" 2>/dev/null &&
		echo "note: $mode logged a cache miss" >&2
done
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, rps, n, us = line.split()
    rows.setdefault(mode, []).append((float(rps), float(us)))
med = lambda m, i: statistics.median(x[i] for x in rows[m])
o, r = med("open", 0), med("realistic", 0)
print("%-12s %12s %14s" % ("policy", "req/s (med)", "gw us/req"))
print("%-12s %12.0f %14.1f" % ("open", o, med("open", 1)))
print("%-12s %12.0f %14.1f" % ("realistic", r, med("realistic", 1)))
print("ratio realistic/open %.3f; cost %.1f%% of req/s (goal <= 5%%)" % (
    r / o, (o - r) / o * 100))
# On a shared machine req/s moves with the neighbours; the gateway's own
# CPU per request is steadier.
uo, ur = med("open", 1), med("realistic", 1)
print("cost in gateway CPU per request: %+.1f%% (%.1f vs %.1f us)" % (
    (ur - uo) / uo * 100, ur, uo))
PY
