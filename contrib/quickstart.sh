#!/bin/sh
# Quick start on Debian 12: install what is needed, build, and run a working
# gateway in the foreground with its own local Redis, a local demo
# upstream (Debian's docker-registry) seeded with a small image, and a
# local demo identity provider (the tests' npm oidc-provider,
# tests/integration/idp/provider.mjs, in its demo mode: a sign-in form for
# one demo user with a password made here) for the browser sign-in.
# Everything listens on 127.0.0.1 only.  Prints how to pull through it and
# how to sign in.  Ctrl-C stops everything this script started.
#
# Environment: GATEWAY_PORT (5000), UPSTREAM_PORT (5001), REDIS_PORT (6390),
# IDP_PORT (5002), STATE (/tmp/portcullis-quickstart), PORTCULLIS_CONFIG
# (use this config instead of the generated one; the local Redis, demo
# upstream and demo IdP still start), QUICKSTART_SKIP_BUILD=1 (neither
# install nor build: the tests run the built tree this way).  Without node
# 20 or later the demo IdP is left out (and sign-in with it).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

GATEWAY_PORT=${GATEWAY_PORT:-5000}
UPSTREAM_PORT=${UPSTREAM_PORT:-5001}
REDIS_PORT=${REDIS_PORT:-6390}
IDP_PORT=${IDP_PORT:-5002}
STATE=${STATE:-/tmp/portcullis-quickstart}
idp_dir=$top/tests/integration/idp

# The demo IdP needs node 20 or later (oidc-provider 9).
idp=no
if command -v node >/dev/null 2>&1 && node -e \
    'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
	idp=yes
fi

if [ "${QUICKSTART_SKIP_BUILD:-}" != 1 ]; then
	contrib/install-deps.sh run
	[ -f Makefile ] || { autoreconf -fi && ./configure; }
	make -j"$(nproc)"
	if [ $idp = yes ] && [ ! -d "$idp_dir/node_modules/oidc-provider" ]
	then
		(cd "$idp_dir" && npm ci --no-audit --no-fund --loglevel=error)
	fi
fi
[ -d "$idp_dir/node_modules/oidc-provider" ] || idp=no

mkdir -p "$STATE"
chmod 700 "$STATE"
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {	# URL WHAT
	i=0
	until curl -s -o /dev/null --noproxy '*' "$1"; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "$2 did not start; see $STATE" >&2; exit 1; }
		sleep 0.1
	done
}

echo "== redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STATE" \
    --save '' --appendonly yes --daemonize no \
    >"$STATE/redis.log" 2>&1 &
pids="$pids $!"

echo "== demo upstream (docker-registry) on 127.0.0.1:$UPSTREAM_PORT"
cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry
http:
  addr: 127.0.0.1:$UPSTREAM_PORT
EOF
docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
pids="$pids $!"
wait_http "http://127.0.0.1:$UPSTREAM_PORT/v2/" docker-registry

echo "== seeding demo/hello:latest and team/app:latest"
rm -rf "$STATE/demo-image"
/usr/bin/python3 contrib/demo-image.py "$STATE/demo-image"
for repo in demo/hello team/app; do
	skopeo copy -q --dest-tls-verify=false "oci:$STATE/demo-image:latest" \
	    "docker://127.0.0.1:$UPSTREAM_PORT/$repo:latest"
done

# The gateway's token signing key, and the demo IdP's: its own RSA key, a
# random password for the demo user and a random client secret for the
# gateway's sign-in, each readable by this user only.
[ -f "$STATE/token.key" ] || ./portcullis keygen -o "$STATE/token" >/dev/null
if [ $idp = yes ]; then
	echo "== demo identity provider on http://127.0.0.1:$IDP_PORT"
	umask 077
	node -e 'const c = require("crypto");
	    const k = c.generateKeyPairSync("rsa", { modulusLength: 2048 })
		.privateKey.export({ format: "jwk" });
	    Object.assign(k, { kid: "demo-1", alg: "RS256", use: "sig" });
	    process.stdout.write(JSON.stringify({ keys: [k] }));' \
	    >"$STATE/idp-jwks.json"
	[ -s "$STATE/demo-password" ] ||
	    node -e 'process.stdout.write(require("crypto").randomBytes(12)
		.toString("base64url") + "\n")' >"$STATE/demo-password"
	node -e 'process.stdout.write(require("crypto").randomBytes(24)
	    .toString("base64url") + "\n")' >"$STATE/idp-client.secret"
	cat >"$STATE/idp-accounts.json" <<EOF
{"accounts": {"demo": {"email": "demo@example.test",
  "name": "Demo User", "groups": ["developers"]}}}
EOF
	umask 022
	(cd "$idp_dir" && exec node provider.mjs --port "$IDP_PORT" \
	    --issuer "http://127.0.0.1:$IDP_PORT" \
	    --jwks "$STATE/idp-jwks.json" --state "$STATE/idp-accounts.json" \
	    --demo-password "$STATE/demo-password" \
	    --client-secret "$STATE/idp-client.secret" \
	    --redirect-uri "http://127.0.0.1:$GATEWAY_PORT/oauth2/callback" \
	    --resource "http://127.0.0.1:$GATEWAY_PORT") \
	    >"$STATE/idp.log" 2>&1 &
	pids="$pids $!"
	wait_http "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration" \
	    "the demo identity provider"
else
	echo "== no node 20 or later: the demo identity provider is left out"
fi

config=${PORTCULLIS_CONFIG:-$STATE/portcullis.json}
if [ -z "${PORTCULLIS_CONFIG:-}" ]; then
	sed -e "s|@GATEWAY_PORT@|$GATEWAY_PORT|g" \
	    -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
	    -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
	    -e "s|@IDP_PORT@|$IDP_PORT|g" \
	    -e "s|@STATE@|$STATE|g" \
	    conf/quickstart.json.in >"$config"
	if [ $idp = no ]; then
		# No IdP to trust: the same configuration without sign-in.
		/usr/bin/python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))
del c["identity"]["issuers"], c["identity"]["sso"]
json.dump(c, open(sys.argv[1], "w"), indent="\t")' "$config"
	fi
fi
./portcullis check-config -c "$config"

echo
echo "portcullis is listening on http://127.0.0.1:$GATEWAY_PORT" \
    "(config: $config)."
echo "Pulling needs a login: every repository is for signed-in callers."
if [ $idp = yes ]; then
	cat <<EOF

Sign in in your browser at the demo identity provider (this machine
only, http://127.0.0.1:$IDP_PORT) as its demo user, in group "developers":

    http://127.0.0.1:$GATEWAY_PORT/
    user: demo    password: $(cat "$STATE/demo-password")

The page shows your groups and what you may pull and push.  Create a
secret there and paste it as the password of the login line it shows
(with --tls-verify=false: the quick start serves plain http), e.g.

    skopeo login --tls-verify=false --username demo_demo 127.0.0.1:$GATEWAY_PORT

Or sign in from the terminal, with no secret to paste:

    ./portcullis login http://127.0.0.1:$GATEWAY_PORT
EOF
else
	cat <<EOF

Make yourself a secret (the demo identity provider needs node 20):

    ./portcullis secret create -c $config --subject demo --group demo:developers

and paste it as the password of:

    skopeo login --tls-verify=false --username demo 127.0.0.1:$GATEWAY_PORT
EOF
fi
cat <<EOF

Then pull through the gateway, as that user:

    skopeo inspect --tls-verify=false docker://127.0.0.1:$GATEWAY_PORT/demo/hello:latest
    podman pull --tls-verify=false 127.0.0.1:$GATEWAY_PORT/team/app:latest

demo/hello is for anyone signed in, team/app for the group developers.
The second pull of an image is served from the cache ($STATE/cache).
Every request is recorded in Redis; see who pulled what:

    ./portcullis audit query -c $config
    ./portcullis audit tail -c $config

Ctrl-C stops the gateway, Redis, the demo upstream and the demo IdP.

EOF
./portcullis serve -c "$config" &
gw=$!
pids="$gw $pids"
wait "$gw"
