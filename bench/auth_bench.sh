#!/bin/bash
# auth_bench.sh: what authentication costs (issue 9, acceptance 6), in one
# run, everything on 127.0.0.1 and stopped by PID on exit.
#
# Servers: redis-server (no persistence), a docker-registry with one image
# in bench/app, the test OpenID provider (npm oidc-provider,
# tests/integration/idp/provider.mjs, over TLS with a throw-away CA, with
# an RS256 and an ES256 key made here) and two gateways, each with its own
# cache holding the image's manifest:
#
#   on   identity (token service + the provider as issuer "idp"), a
#        policy of a few rules that lets no anonymous caller in, audit to
#        the redis-server (with revocation and secrets on the same Redis)
#   off  no identity, no audit, the open policy (one allow rule for
#        anonymous and authenticated callers, as bench/policy_http.sh's
#        "open": with no policy at all the gateway denies everything)
#
# Every measured request is GET /v2/bench/app/manifests/<digest> with an
# Accept field, a cache hit: the cheapest request that still runs the
# whole path (identity, routing, the policy gate on the repository, the
# cache, the log line and the audit record); GET /v2/ would skip the
# policy gate on a repository and the cache.  Modes, alternating in order
# round by round so that drift hits all alike:
#
#   off          the off gateway, anonymous
#   token        the on gateway, Bearer <one gateway token> from its
#                /token (asked with a provider token as Basic password):
#                the verified-token cache hit path
#   idp-rs256    the on gateway, Bearer <IdP JWT> (CI style), a
#   idp-es256    different token on every request: TOKENS tokens per
#                algorithm minted before the rounds with the provider's
#                own private key (bench/lib/idp_tokens.py), each a copy of
#                a real client_credentials access token of the provider
#                with a new jti, iat and exp; bench/lib/load.c -f sends
#                them round-robin, each run starting where the last
#                stopped, so a token comes back only after TOKENS - 1
#                others (TOKENS > identity.idp_cache_entries, an LRU):
#                none can be a cache hit.  (The gateway fetched the
#                provider's discovery and JWKS.)
#   idp-repeat   the on gateway, Bearer <one IdP JWT> (the provider's own
#                client_credentials token, RS256) on every request, as a
#                CI job repeats its token: the verified IdP token cache
#                hit path (credential.c)
#
# Printed: median req/s per mode, gateway CPU per request (utime + stime,
# steadier than req/s on a shared machine), ratios, the cores and the load
# average before and after; then bench/jose_verify.sh, verifications/s of
# jose_verify() on one core without HTTP, the raw crypto cost.  The on gateway's audit stream must gain one
# record per measured request.  Never fails on a number; not part of CI
# (README.md, "Benchmarks").
#
# Environment (all optional):
#   PORTCULLIS_BIN       gateway binary (default <repo>/portcullis)
#   DOCKER_REGISTRY_BIN  default /usr/bin/docker-registry
#   REDIS_SERVER_BIN     default /usr/bin/redis-server
#   NODE_BIN             default node
#   SECONDS_PER_ROUND    load duration per round (default 5, at most 30)
#   ROUNDS               rounds per mode (default 3, at most 10)
#   CONNS                client connections (default 4, at most 256)
#   TOKENS               IdP tokens minted per algorithm (default 12000,
#                        more than CACHE_ENTRIES, at most 200000)
#   CACHE_ENTRIES        identity.token.cache_entries and
#                        identity.idp_cache_entries (default 10000, the
#                        gateway's default)
#   JOSE_SECONDS         seconds per algorithm of bench/jose_verify.sh,
#                        run at the end (default 2; 0: not run)
#   KEEP_WORK=1          keep the temp dir
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PORTCULLIS_BIN=${PORTCULLIS_BIN:-$repo/portcullis}
DOCKER_REGISTRY_BIN=${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-/usr/bin/redis-server}
NODE_BIN=${NODE_BIN:-node}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-4}
TOKENS=${TOKENS:-12000}
CACHE_ENTRIES=${CACHE_ENTRIES:-10000}
JOSE_SECONDS=${JOSE_SECONDS:-2}
PY=/usr/bin/python3	# python3-cryptography (Debian's)

bound() {	# bound VAR MIN MAX
	case ${!1} in ''|*[!0-9]*) echo "$1 must be a number" >&2; exit 2;; esac
	[ "${!1}" -ge "$2" ] && [ "${!1}" -le "$3" ] ||
		{ echo "$1: $2..$3" >&2; exit 2; }
}
bound SECONDS_PER_ROUND 1 30
bound ROUNDS 1 10
bound CONNS 1 256
bound CACHE_ENTRIES 1 16777216
bound TOKENS $((CACHE_ENTRIES + 1)) 200000
bound JOSE_SECONDS 0 600
for tool in cc curl python3 redis-cli openssl "$PY" "$NODE_BIN" \
    "$PORTCULLIS_BIN" "$DOCKER_REGISTRY_BIN" "$REDIS_SERVER_BIN"; do
	command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
[ -d "$repo/tests/integration/idp/node_modules/oidc-provider" ] || {
	echo "oidc-provider is not installed: contrib/install-deps.sh test" \
	    "(npm ci in tests/integration/idp)" >&2; exit 2; }

. "$here/lib/common.sh"
bench_init auth-bench
cc -O2 -pthread -o "$work/load" "$here/lib/load.c"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(loadavg)

# --- redis-server (no persistence: we measure the gateway, not the disk) ---
redis_port=$(free_port)
mkdir -p "$work/redis"
"$REDIS_SERVER_BIN" --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
	--save "" --appendonly no --daemonize no > "$work/redis/log" 2>&1 &
redis_pid=$!
pids+=($redis_pid)
rcli() { redis-cli -p "$redis_port" "$@"; }
for i in $(seq 100); do
	rcli PING >/dev/null 2>&1 && break
	kill -0 "$redis_pid" 2>/dev/null || { cat "$work/redis/log" >&2; exit 1; }
	[ "$i" = 100 ] && { echo "redis-server not ready after 10 s" >&2; exit 1; }
	sleep 0.1
done

# --- docker-registry with one image in bench/app ----------------------------
start_registry
push_small_image
path=/v2/bench/app/manifests/$man_d

# --- the OpenID provider (as tests/integration/lib/idp.py starts it) --------
"$PY" "$here/lib/idp_tokens.py" setup "$work/idp"
idp_port=$(free_port)
ISS=https://127.0.0.1:$idp_port
AUD=https://portcullis.test
(cd "$repo/tests/integration/idp" && exec "$NODE_BIN" provider.mjs \
	--port "$idp_port" --issuer "$ISS" --jwks "$work/idp/jwks.json" \
	--resource "$AUD" --at-alg RS256 \
	--cert "$work/idp/pki/idp.pem" --key "$work/idp/pki/idp.key") \
	> "$work/idp/log" 2>&1 &
idp_pid=$!
pids+=($idp_pid)
icurl() { curl -s --cacert "$work/idp/pki/ca.pem" --max-time 10 "$@"; }
for i in $(seq 300); do
	icurl -o /dev/null "$ISS/.well-known/openid-configuration" && break
	kill -0 "$idp_pid" 2>/dev/null ||
		{ echo "oidc-provider exited; log:" >&2; tail -20 "$work/idp/log" >&2; exit 1; }
	[ "$i" = 300 ] && { echo "oidc-provider not ready after 30 s" >&2; exit 1; }
	sleep 0.1
done
# A real access token of the provider (client_credentials, RS256): the
# template of the minted ones, and the Basic password that buys the
# gateway token.  Kept in files; never on a command line or the terminal.
icurl -u ci:ci-test-secret -d grant_type=client_credentials -d scope=pull \
	--data-urlencode "resource=$AUD" "$ISS/token" > "$work/idp/cc.json"
"$PY" - "$work/idp" <<'PY'
import json, sys
d = sys.argv[1]
tok = json.load(open(d + "/cc.json")).get("access_token")
if not tok:
    sys.exit("the provider issued no access token")
open(d + "/cc.jwt", "w").write(tok)
open(d + "/cc.hdr", "w").write("Authorization: Bearer %s\n" % tok)
PY

# --- keys, policies, the two gateways ---------------------------------------
"$PORTCULLIS_BIN" keygen -o "$work/gwkey" > /dev/null
"$PY" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
json.dump({"rules": [{"id": "open", "effect": "allow",
                      "repositories": ["**"],
                      "subjects": ["anonymous", "authenticated"],
                      "actions": ["*"]}]},
          open(work + "/off.json", "w"), indent=1)
# A few rules of the kinds a site writes; the benched repository is
# allowed to authenticated callers by the first, and nothing to anyone
# anonymous.
json.dump({"rules": [
    {"id": "pull-bench", "effect": "allow", "repositories": ["bench/**"],
     "subjects": ["authenticated"], "actions": ["pull"]},
    {"id": "no-secrets", "effect": "deny",
     "repositories": ["bench/secret-*/**"], "subjects": ["authenticated"],
     "actions": ["*"]},
    {"id": "ci-push", "effect": "allow",
     "repositories": ["ci/${claim.client_id}/**"],
     "subjects": [{"claim": "client_id", "glob": "*"}],
     "actions": ["push"]},
    {"id": "team", "effect": "allow", "repositories": ["team/**"],
     "subjects": ["group:idp:team"], "actions": ["pull", "push"]},
    {"id": "leaver", "effect": "deny", "repositories": ["**"],
     "subjects": ["user:idp:leaver"], "actions": ["*"]},
    {"id": "office", "effect": "deny", "repositories": ["internal/**"],
     "subjects": ["cidr:10.0.0.0/8"], "actions": ["pull"]}]},
    open(work + "/on.json", "w"), indent=1)
PY
start_gw() {	# NAME EXTRA_JSON -> sets gw_port, gw_pid
	local name=$1 port
	port=$(free_port)
	mkdir -p "$work/$name/cache"
	cat > "$work/$name/config.json" <<JSON
{
  "listen": {"address": "127.0.0.1:$port"},
  "workers": 1,
  "log": {"level": "warn"},
  "cache": {"dir": "$work/$name/cache", "max_bytes": 1073741824},
  "upstreams": [{"name": "up1", "url": "$R", "default": true}],
  "policy": {"file": "$work/$name.json"}$2
}
JSON
	"$PORTCULLIS_BIN" serve -c "$work/$name/config.json" > "$work/$name/log" 2>&1 &
	gw_pid=$!
	pids+=($gw_pid)
	wait_http "http://127.0.0.1:$port/healthz" "portcullis ($name)" "$gw_pid" "$work/$name/log"
	gw_port=$port
}
start_gw off ""
off_port=$gw_port off_pid=$gw_pid
start_gw on ",
  \"redis\": {\"address\": \"127.0.0.1:$redis_port\"},
  \"audit\": {\"stream\": \"bench:audit\", \"spool_file\": \"$work/on/audit.spool\",
            \"max_len\": 0, \"max_age\": 0},
  \"identity\": {
    \"token\": {\"signing_key\": \"$work/gwkey.key\", \"expires_in\": 3600,
              \"cache_entries\": $CACHE_ENTRIES},
    \"idp_cache_entries\": $CACHE_ENTRIES,
    \"issuers\": [{\"name\": \"idp\", \"issuer\": \"$ISS\",
                  \"ca_file\": \"$work/idp/pki/ca.pem\",
                  \"audiences\": [\"$AUD\"], \"prefix\": \"idp:\",
                  \"groups_claim\": \"groups\",
                  \"algorithms\": [\"RS256\", \"ES256\"]}]}"
on_port=$gw_port on_pid=$gw_pid
ON=http://127.0.0.1:$on_port

# The on gateway has the provider's keys once a provider token opens /v2/.
for i in $(seq 300); do
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
		-H @"$work/idp/cc.hdr" "$ON/v2/" || true)
	[ "$code" = 200 ] && break
	[ "$i" = 300 ] && { echo "the on gateway never accepted a provider token ($code); log:" >&2
		tail -20 "$work/on/log" >&2; exit 1; }
	sleep 0.1
done
# Anonymous callers are refused on the on gateway (auth is not optional).
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT" "$ON$path")
[ "$code" = 401 ] || { echo "on gateway: anonymous manifest GET got $code, not 401" >&2; exit 1; }
# The gateway token: /token with the provider token as Basic password.
"$PY" - "$work/idp/cc.jwt" "$work/basic.hdr" <<'PY'
import base64, sys
tok = open(sys.argv[1]).read().strip()
open(sys.argv[2], "w").write("Authorization: Basic %s\n" % base64.b64encode(
    b"ci:" + tok.encode()).decode())
PY
curl -sf -H @"$work/basic.hdr" -o "$work/token.json" \
	"$ON/token?service=portcullis&scope=repository:bench/app:pull" ||
	{ echo "GET /token failed; log:" >&2; tail -5 "$work/on/log" >&2; exit 1; }
"$PY" - "$work/token.json" "$work/token.hdr" <<'PY'
import base64, json, sys
tok = json.load(open(sys.argv[1]))["token"]
p = tok.split(".")[1]
access = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["access"]
if access != [{"type": "repository", "name": "bench/app", "actions": ["pull"]}]:
    sys.exit("unexpected access claim in the gateway token: %r" % access)
open(sys.argv[2], "w").write("Authorization: Bearer %s\n" % tok)
PY
# Fill each cache: the manifest through its repository, once.
curl -sf -o /dev/null -H "Accept: $MT" "http://127.0.0.1:$off_port$path" ||
	{ echo "off: the warm-up GET failed" >&2; exit 1; }
curl -sf -o /dev/null -H "Accept: $MT" -H @"$work/token.hdr" "$ON$path" ||
	{ echo "on: the warm-up GET failed" >&2; tail -5 "$work/on/log" >&2; exit 1; }

# --- the fresh IdP tokens ------------------------------------------------------
t0=$(date +%s.%N)
"$PY" "$here/lib/idp_tokens.py" mint "$work/idp/jwks.json" "$work/idp/cc.jwt" \
	rsa-1 "$TOKENS" "$work/rs256.txt"
"$PY" "$here/lib/idp_tokens.py" mint "$work/idp/jwks.json" "$work/idp/cc.jwt" \
	ec-1 "$TOKENS" "$work/es256.txt"
t1=$(date +%s.%N)
# Minted tokens live as long as the provider's (600 s): the rounds must
# end well before.
life=$("$PY" - "$work/idp/cc.jwt" <<'PY'
import base64, json, sys
p = open(sys.argv[1]).read().split(".")[1]
c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
print(c["exp"] - c["iat"])
PY
)
[ $((ROUNDS * 5 * (SECONDS_PER_ROUND + 2))) -lt $((life - 60)) ] ||
	{ echo "ROUNDS x SECONDS_PER_ROUND too long for $life s tokens" >&2; exit 2; }
# One of each is accepted on its own (the gateway verifies them).
for alg in rs256 es256; do
	head -1 "$work/$alg.txt" > "$work/one.hdr"
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT" \
		-H @"$work/one.hdr" "$ON$path")
	[ "$code" = 200 ] || { echo "a minted $alg token got $code; log:" >&2
		tail -5 "$work/on/log" >&2; exit 1; }
	# ... and a flipped signature byte is refused (it is really checked).
	"$PY" - "$work/one.hdr" <<'PY'
import sys
s = open(sys.argv[1]).read().rstrip("\n")
c = "A" if s[-2] != "A" else "B"
open(sys.argv[1], "w").write(s[:-2] + c + s[-1] + "\n")
PY
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT" \
		-H @"$work/one.hdr" "$ON$path")
	[ "$code" = 401 ] || { echo "a forged $alg token got $code, not 401" >&2; exit 1; }
	# Start the measured runs past the line used here.
	{ tail -n +2 "$work/$alg.txt"; head -1 "$work/$alg.txt"; } > "$work/rot" &&
		mv "$work/rot" "$work/$alg.txt"
done
rm -f "$work/one.hdr"
sent_rs256=0 sent_es256=0

echo "== auth bench: cached manifest GET by digest, $CONNS connections, ${SECONDS_PER_ROUND}s rounds x $ROUNDS"
echo "   $(nproc) CPUs shared by all processes ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)); loadavg before: $load_before"
printf '   %d RS256 + %d ES256 tokens minted in %.1f s; identity.token.cache_entries and idp_cache_entries %d\n' \
	"$TOKENS" "$TOKENS" "$(python3 -c "print($t1-$t0)")" "$CACHE_ENTRIES"
res=$work/results
: > "$res"
modes=(off token idp-rs256 idp-es256 idp-repeat)
for r in $(seq "$ROUNDS"); do
	# Rotate the order each round (no order bias).
	order=("${modes[@]:$(( (r - 1) % 5 ))}" "${modes[@]:0:$(( (r - 1) % 5 ))}")
	for mode in "${order[@]}"; do
		port=$on_port pid=$on_pid file=
		case $mode in
		off) port=$off_port pid=$off_pid;;
		token) file=$work/token.hdr;;
		idp-rs256) file=$work/rs256.txt;;
		idp-es256) file=$work/es256.txt;;
		idp-repeat) file=$work/idp/cc.hdr;;
		esac
		before=$(rcli XLEN bench:audit)
		c0=$(cpu_ticks "$pid")
		if [ -z "$file" ]; then
			read -r rps n bad < <("$work/load" "$port" "$path" "$CONNS" \
				"$SECONDS_PER_ROUND" "Accept: $MT")
			sent=$n
		else
			read -r rps n bad sent < <("$work/load" -f "$file" "$port" \
				"$path" "$CONNS" "$SECONDS_PER_ROUND" "Accept: $MT")
		fi
		c1=$(cpu_ticks "$pid")
		[ "$bad" = 0 ] || { echo "round $r $mode: $bad failed requests; log:" >&2
			tail -5 "$work/on/log" >&2; exit 1; }
		if [ "$mode" != off ]; then
			# One audit record per request (records in flight land
			# within a bounded wait).
			for i in $(seq 100); do
				[ "$(rcli XLEN bench:audit)" -ge $((before + n)) ] && break
				sleep 0.1
			done
			after=$(rcli XLEN bench:audit)
			[ "$after" -eq $((before + n)) ] || { echo "round $r $mode:" \
				"$((after - before)) audit records for $n requests" >&2; exit 1; }
			# The last one says what the request went through.
			[ "$r" = 1 ] && rcli --raw XREVRANGE bench:audit + - COUNT 1 |
				python3 "$here/lib/auth_record.py" "$mode" >> "$work/records"
		fi
		case $mode in idp-rs256|idp-es256)
			# The next run starts where this one stopped.
			f=$file k=$((sent % TOKENS))
			{ tail -n +$((k + 1)) "$f"; head -n "$k" "$f"; } > "$work/rot"
			mv "$work/rot" "$f"
			[ $mode = idp-rs256 ] && sent_rs256=$((sent_rs256 + sent))
			[ $mode = idp-es256 ] && sent_es256=$((sent_es256 + sent))
		esac
		echo "$mode $rps $n $(python3 -c "print(($c1-$c0)*1e6/$tck/max($n,1))")" >> "$res"
		printf '  round %d %-10s %8s req/s\n' "$r" "$mode" "$rps" >&2
	done
done
load_after=$(loadavg)
grep -q "cache=miss" "$work/on/log" "$work/off/log" 2>/dev/null &&
	echo "note: a gateway logged a cache miss" >&2
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, rps, n, us = line.split()
    rows.setdefault(mode, []).append((float(rps), float(us)))
med = lambda m, i: statistics.median(x[i] for x in rows[m])
desc = {
    "off": "all off: anonymous, open policy, no audit",
    "token": "on: cached gateway token (a)",
    "idp-rs256": "on: fresh IdP JWT, RS256 (b)",
    "idp-es256": "on: fresh IdP JWT, ES256 (b)",
    "idp-repeat": "on: repeated IdP JWT, RS256 (d)",
}
print()
print("%-44s %12s %10s %9s" % ("mode (manifest GET by digest, cache hit)",
                               "req/s (med)", "gw us/req", "vs off"))
off = med("off", 0)
for m in ("off", "token", "idp-rs256", "idp-es256", "idp-repeat"):
    print("%-44s %12.0f %10.1f %9.3f" % (desc[m], med(m, 0), med(m, 1),
                                         med(m, 0) / off))
t = med("token", 0)
print()
print("(c) auth + policy + audit on / all off: %.3f of req/s (%.1f%% cost); "
      "gateway CPU per request x%.2f" % (t / off, (off - t) / off * 100,
                                         med("token", 1) / med("off", 1)))
print("fresh RS256 / cached token: %.3f; fresh ES256 / cached token: %.3f"
      % (med("idp-rs256", 0) / t, med("idp-es256", 0) / t))
print("gateway CPU per verification over the cached path: RS256 +%.1f us, "
      "ES256 +%.1f us" % (med("idp-rs256", 1) - med("token", 1),
                          med("idp-es256", 1) - med("token", 1)))
print("(d) repeated IdP JWT / cached gateway token: %.3f; / fresh RS256: "
      "%.3f" % (med("idp-repeat", 0) / t,
                med("idp-repeat", 0) / med("idp-rs256", 0)))
PY
echo "last audit record of each mode's first round:"
sed 's/^/  /' "$work/records"
echo "IdP tokens sent: RS256 $sent_rs256, ES256 $sent_es256 (of $TOKENS distinct each; none repeated within $TOKENS requests)"
echo "loadavg before: $load_before; after: $load_after ($(nproc) CPUs)"
# The raw crypto cost, to read the verification figures above against.
if [ "$JOSE_SECONDS" -gt 0 ]; then
	echo
	env SECONDS="$JOSE_SECONDS" sh "$here/jose_verify.sh"
fi
