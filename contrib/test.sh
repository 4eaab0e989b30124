#!/bin/sh
# Install what the tests need (Debian 12, as root or with sudo), build with
# strict warnings, run the unit tests (make check) and the integration
# suite against real servers started on loopback.  Extra arguments go to
# pytest, e.g. contrib/test.sh -k tls
set -eu
cd "$(dirname "$0")/.."

contrib/install-deps.sh test
# Nothing may be skipped here: without cmocka configure would leave the
# unit tests out, and the integration suite fails a skipped test.
pkg-config --exists cmocka || { echo "cmocka not found" >&2; exit 1; }
export PORTCULLIS_NO_SKIP=1
if [ ! -f Makefile ] || [ configure.ac -nt Makefile ] || [ Makefile.am -nt Makefile ]; then
	autoreconf -fi
	./configure --enable-debug
fi
make -j"$(nproc)"
make -j"$(nproc)" check || { cat tests/unit/*.log 2>/dev/null | tail -50; exit 1; }
# Debian's pytest lives in /usr/bin/python3; another python3 may be first
# on PATH.
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration "$@"
