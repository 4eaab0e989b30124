#!/bin/sh
# Regenerate the configuration reference in README.md from the schema
# (`portcullis config-reference`), and the metrics table from their
# declarations (`portcullis metrics-reference`).  Tests check that they
# agree.
#   contrib/update-readme.sh [PORTCULLIS_BIN]
set -eu
cd "$(dirname "$0")/.."
bin=${1:-./portcullis}
"$bin" config-reference >/tmp/portcullis-config-ref.$$
"$bin" metrics-reference >/tmp/portcullis-metrics-ref.$$
/usr/bin/python3 - /tmp/portcullis-config-ref.$$ \
    /tmp/portcullis-metrics-ref.$$ <<'PY'
import sys
s = open("README.md").read()
for name, path in (("config", sys.argv[1]), ("metrics", sys.argv[2])):
    ref = open(path).read()
    b = "<!-- %s-reference:begin -->\n" % name
    e = "<!-- %s-reference:end -->" % name
    i, j = s.index(b) + len(b), s.index(e)
    s = s[:i] + ref + s[j:]
open("README.md", "w").write(s)
PY
rm -f /tmp/portcullis-config-ref.$$ /tmp/portcullis-metrics-ref.$$
