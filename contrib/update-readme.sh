#!/bin/sh
# Regenerate the configuration reference in README.md from the schema
# (`portcullis config-reference`).  A test checks that the two agree.
#   contrib/update-readme.sh [PORTCULLIS_BIN]
set -eu
cd "$(dirname "$0")/.."
bin=${1:-./portcullis}
"$bin" config-reference >/tmp/portcullis-config-ref.$$
/usr/bin/python3 - /tmp/portcullis-config-ref.$$ <<'PY'
import sys
ref = open(sys.argv[1]).read()
s = open("README.md").read()
b, e = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
i, j = s.index(b) + len(b), s.index(e)
open("README.md", "w").write(s[:i] + ref + s[j:])
PY
rm -f /tmp/portcullis-config-ref.$$
