#!/bin/sh
# Install what portcullis needs to build, run and test on Debian 12.
# Usage: contrib/install-deps.sh [build|run|test|bench]   (default: test)
set -eu
what=${1:-test}

build="build-essential autoconf automake libtool pkg-config
    libevent-dev libssl-dev libjansson-dev libjwt-dev libhiredis-dev
    libhttp-parser-dev libcmocka-dev"
run="redis-server redis-tools docker-registry skopeo busybox-static ca-certificates curl"
test="podman containerd docker.io nginx python3-pytest python3-requests
    python3-cryptography uidmap iptables chromium prometheus systemd
    redis-sentinel haproxy strace gdb"

case "$what" in
build)	pkgs="$build" ;;
run)	pkgs="$build $run" ;;
test)	pkgs="$build $run $test" ;;
bench)	pkgs="$build $run $test apache2-utils wrk" ;;
*)	echo "usage: $0 [build|run|test|bench]" >&2; exit 2 ;;
esac

# The tests' OpenID Connect provider (npm oidc-provider, versions pinned
# by tests/integration/idp/package-lock.json) on the machine's node.
idp_deps() {
	case "$what" in test|bench) ;; *) return 0 ;; esac
	command -v npm >/dev/null 2>&1 || {
		echo "$0: npm (node 20 or later) is needed for the tests' IdP" >&2
		exit 1
	}
	(cd "$(dirname "$0")/../tests/integration/idp" &&
	    npm ci --no-audit --no-fund --loglevel=error)
	# The browser sign-in tests: playwright-core (pinned by
	# tests/integration/browser/package-lock.json) drives Debian's
	# chromium; it downloads no browser of its own.
	(cd "$(dirname "$0")/../tests/integration/browser" &&
	    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund \
	    --loglevel=error)
}

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
	    grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
	idp_deps
	exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian starts redis-server, docker-registry, containerd and dockerd as
# services on install; the tests and the quick start run their own on
# private ports, so keep the packaged ones from starting.
policy=/usr/sbin/policy-rc.d
created=no
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
	$SUDO chmod 755 "$policy"
	created=yes
fi
$SUDO apt-get install -y -qq --no-install-recommends $missing
[ "$created" = yes ] && $SUDO rm -f "$policy"
idp_deps
exit 0
