#!/bin/sh
# jose_verify.sh: JWT verifications per second on one core (taskset -c 0)
# of jose_verify() for RS256 (RSA 2048) and ES256 (P-256) tokens, and
# the keyed hash a verified-token cache hit costs instead, SECONDS each
# (default 2, at most 600); see the top of bench/jose_verify.c.  The raw
# crypto cost to read bench/auth_bench.sh's HTTP figures against (it runs
# this at its end).
#
# jose.c and jwk.c are compiled here with -O2 from src/ (the in-tree
# build may be a -O0 debug build).  Not part of CI.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SECONDS_RUN=${SECONDS:-2}
CC=${CC:-cc}
case $SECONDS_RUN in ''|*[!0-9]*) echo "SECONDS must be a number" >&2; exit 2;; esac
[ "$SECONDS_RUN" -ge 1 ] && [ "$SECONDS_RUN" -le 600 ] ||
	{ echo "SECONDS: 1..600" >&2; exit 2; }
work=$(mktemp -d /tmp/portcullis-jose-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
$CC -O2 -D_GNU_SOURCE -I"$repo/src" -o "$work/bench" \
    "$here/jose_verify.c" "$repo/src/jose.c" "$repo/src/jwk.c" \
    $(pkg-config --libs openssl jansson 2>/dev/null || echo -lcrypto -ljansson) \
    -ljwt
if command -v taskset >/dev/null 2>&1; then
	pin="taskset -c 0"
else
	pin=""
fi
echo "== jose_verify, one core, ${SECONDS_RUN}s per algorithm"
timeout $((SECONDS_RUN * 3 + 60)) $pin "$work/bench" "$SECONDS_RUN" > "$work/out"
while read -r alg rate us; do
	case $alg in
	hash) printf '  %-28s %10s /s %8s us each\n' \
		"cache key (HMAC-SHA-256)" "$rate" "$us";;
	*) printf '  %-28s %10s /s %8s us each\n' \
		"jose_verify $alg" "$rate" "$us";;
	esac
done < "$work/out"
