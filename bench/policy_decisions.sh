#!/bin/sh
# policy_decisions.sh: decisions per second of the policy engine for 1,000
# rules over 10,000 repository names on one core (taskset -c 0), for
# SECONDS (default 3, at most 600) of whole passes over the names.  The
# rules and names are described at the top of bench/policy_decisions.c.
# The goal (issue 8) is at least 1,000,000 decisions/s.
#
# The policy objects are compiled here with -O2 from src/ (the in-tree
# libportcullis.a may be a -O0 debug build); LIB=path/to/libportcullis.a
# links that library instead (with its dependencies).  Not part of CI.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SECONDS_RUN=${SECONDS:-3}
CC=${CC:-cc}
work=$(mktemp -d /tmp/portcullis-policy-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
if [ -n "${LIB:-}" ]; then
	$CC -O2 -D_GNU_SOURCE -I"$repo/src" -o "$work/bench" \
	    "$here/policy_decisions.c" "$LIB" \
	    $(pkg-config --libs libevent libevent_openssl openssl jansson \
	    2>/dev/null) -lhiredis -lhttp_parser -ljwt -lpthread
else
	$CC -O2 -D_GNU_SOURCE -I"$repo/src" -o "$work/bench" \
	    "$here/policy_decisions.c" "$repo/src/policy.c" \
	    "$repo/src/policy_eval.c" \
	    "$repo/src/pattern.c" "$repo/src/router.c"
fi
if command -v taskset >/dev/null 2>&1; then
	pin="taskset -c 0"
else
	pin=""
fi
echo "== policy_decide, one core, ${SECONDS_RUN}s"
timeout $((SECONDS_RUN + 60)) $pin "$work/bench" "$SECONDS_RUN"
