#!/bin/sh
# Build the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and
# run each for FUZZ_SECONDS (default 30) from its corpus directory under
# $WORK (default /tmp/portcullis-fuzz).  Not part of CI: a crash leaves a
# crash-* file in $WORK and a non-zero exit.  FUZZ_JOBS=N runs N targets
# at once (one per core).
#   contrib/fuzz.sh [target...]      targets: router url challenge hframe
#                                    netaddr pattern jose scope web
#                                    login_http
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-30}
WORK=${WORK:-/tmp/portcullis-fuzz}
CC=${CC:-clang}
targets=${*:-router url challenge hframe netaddr pattern jose scope web login_http}
mkdir -p "$WORK"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -Isrc -D_GNU_SOURCE"
for t in $targets; do
	case $t in
	router)    srcs="src/router.c" ;;
	url)       srcs="src/url.c" ;;
	challenge) srcs="src/challenge.c src/url.c" ;;
	hframe)    srcs="src/hframe.c src/headers.c -lhttp_parser" ;;
	netaddr)   srcs="src/netaddr.c" ;;
	pattern)   srcs="src/pattern.c" ;;
	jose)      srcs="src/jose.c src/jwk.c -ljwt -ljansson -lcrypto" ;;
	scope)     srcs="src/scope.c src/router.c -ljansson" ;;
	web)       srcs="src/web.c -lcrypto" ;;
	login_http) srcs="src/login_http.c src/url.c -DPACKAGE_VERSION=\"fuzz\" -lssl
		    -lcrypto -ljansson" ;;
	*) echo "unknown target $t" >&2; exit 2 ;;
	esac
	$CC $flags -o "$WORK/fuzz_$t" "tests/fuzz/fuzz_$t.c" $srcs
	mkdir -p "$WORK/corpus_$t"
	if [ "$t" = hframe ] && [ ! -e "$WORK/corpus_$t/seed1" ]; then
		# First byte: bit 0 response, the rest the feed size.
		printf '\020GET /v2/a/manifests/t HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\n\r\n' >"$WORK/corpus_$t/seed1"
		printf '\006PUT /v2/a/blobs/uploads/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: h\r\n\r\n' >"$WORK/corpus_$t/seed2"
		printf '\010PATCH /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: x\r\n\r\n' >"$WORK/corpus_$t/seed3"
		printf '\041HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n' >"$WORK/corpus_$t/seed4"
		printf '\003HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' >"$WORK/corpus_$t/seed5"
		printf '\002GET /v2/a/tags/list?n=1\tx\fy\303\251 HTTP/1.1\r\nHost: h\r\n\r\n' >"$WORK/corpus_$t/seed6"
		printf '\004GET /x HTTP/1.1\nHost: h\n\nGET /y HTTP/1.1\r\nHost: h\r\n\r\n' >"$WORK/corpus_$t/seed7"
		printf '\010POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n' >"$WORK/corpus_$t/seed8"
	fi
	if [ "$t" = pattern ] && [ ! -e "$WORK/corpus_$t/seed1" ]; then
		# pattern NUL name NUL template value
		printf 'base/**\000base/a/b\000x' >"$WORK/corpus_$t/seed1"
		printf 'users/${subject}/**\000users/bob/app\000bob' >"$WORK/corpus_$t/seed2"
		printf '**/a*b?/**/c\000x/aXbY/z/c\000v' >"$WORK/corpus_$t/seed3"
		printf 'ci/${claim.r}-*/${subject}\000ci/app-1/u\000app' >"$WORK/corpus_$t/seed4"
	fi
	if [ "$t" = jose ] && [ ! -e "$WORK/corpus_$t/seed1" ]; then
		# Mode byte: 0 token, 1 header NUL payload (signed here), 2 JWKS.
		printf '\000eyJhbGciOiJFUzI1NiIsImtpZCI6ImVjMSJ9.eyJpc3MiOiJodHRwczovL2lkcC50ZXN0Iiwic3ViIjoiYWxpY2UiLCJhdWQiOiJwb3J0Y3VsbGlzIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDAsImdyb3VwcyI6WyJkZXYiLCJvcHMiXX0.AA' >"$WORK/corpus_$t/seed1"
		printf '\001{"alg":"ES256","kid":"ec1"}\000{"iss":"https://idp.test","aud":["portcullis"],"exp":1700000600,"nbf":1699999999,"iat":1.7e9,"groups":["a","b"],"x":"y"}' >"$WORK/corpus_$t/seed2"
		printf '\002{"keys":[{"kty":"EC","crv":"P-256","kid":"ec1","x":"0nf-VH2sinYflq8Zv3JLTA7NAIXMjOHEKlfovLN3gWQ","y":"1KkksT2_uCUZYMsCmuUDaTTnUS5XSDxDQTY2RMTORIw","alg":"ES256","use":"sig"}]}' >"$WORK/corpus_$t/seed3"
	fi
	if [ "$t" = login_http ] && [ ! -e "$WORK/corpus_$t/seed1" ]; then
		printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":1}' >"$WORK/corpus_$t/seed1"
		printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4;x=y\r\n":1}\r\n0\r\nT: v\r\n\r\n' >"$WORK/corpus_$t/seed2"
		printf 'HTTP/1.0 400 Bad\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n' >"$WORK/corpus_$t/seed3"
	fi
	if [ "$t" = scope ] && [ ! -e "$WORK/corpus_$t/seed1" ]; then
		printf 'repository:library/alpine:pull,push repository(plugin):a/b:*' >"$WORK/corpus_$t/seed1"
		printf 'registry:catalog:* repository:a:pull repository:a:delete' >"$WORK/corpus_$t/seed2"
	fi
done

# Run the built targets, FUZZ_JOBS at a time (default 1), each into its
# own log; print each one's final lines and fail if any target failed.
run_one() {
	(cd "$WORK" && "./fuzz_$1" -max_total_time="$SECONDS_EACH" \
	    -max_len=4096 -print_final_stats=1 "corpus_$1" \
	    >"fuzz_$1.log" 2>&1)
}
JOBS=${FUZZ_JOBS:-1}
status=0
set -- $targets
while [ $# -gt 0 ]; do
	pids=""
	n=0
	while [ $# -gt 0 ] && [ "$n" -lt "$JOBS" ]; do
		echo "== fuzz_$1 for ${SECONDS_EACH}s (log: $WORK/fuzz_$1.log)"
		run_one "$1" &
		pids="$pids $!:$1"
		n=$((n + 1))
		shift
	done
	for p in $pids; do
		if wait "${p%%:*}"; then r=ok; else r=FAILED; status=1; fi
		echo "== fuzz_${p#*:}: $r"
		grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)' \
		    "$WORK/fuzz_${p#*:}.log" || tail -4 "$WORK/fuzz_${p#*:}.log"
	done
done
exit $status
