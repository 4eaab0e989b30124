"""auth_record.py MODE: reads one audit record (redis-cli --raw XREVRANGE
... COUNT 1: the id, then field and value lines) on stdin and prints the
fields that show the path a request of bench/auth_bench.sh's MODE went
through; exits 1 unless it was an allowed cache hit answered 200."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests", "integration"))
from lib.redis import unpack_record  # noqa: E402

lines = sys.stdin.read().split("\n")[1:]
rec = dict(zip(lines[0::2], lines[1::2]))
if list(rec) == ["record"]:     # the packed layout (README "Audit")
    rec = unpack_record(rec["record"])
keys = ("subject", "auth_method", "decision", "rule", "status", "cache")
print("%-10s %s" % (sys.argv[1], " ".join(
    "%s=%s" % (k, rec.get(k, "?")) for k in keys)))
if (rec.get("status"), rec.get("decision"), rec.get("cache")) != (
        "200", "allow", "hit"):
    sys.exit("%s: not an allowed cache hit: %r" % (sys.argv[1], rec))
