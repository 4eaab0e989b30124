"""`portcullis audit query` over 100,000 records: each filter (subject,
repository glob and exact, action, status and status class, decision,
time range), their combinations and pagination, checked against what the
records are known to hold.

The records come from `portcullis audit generate`, which writes through
the gateway's own Lua script (so the indexes are the real ones) and gives
record j (0-based, oldest first) fields with fixed periods:
subject user%03d (j % 97), repository team%d/app%d (j % 7, j % 11),
action [pull, push, pull, delete, pull][j % 5],
status [200, 201, 404, 401, 403, 429, 500, 200][j % 8] (deny for 401,
403, 429), time = first + j * step."""

import json
import os

import pytest

from lib.redis import RedisServer, entries_to_dicts
from lib.gateway import gateway_bin
from lib.util import free_port, run

N = 100000
STEP = 1000
STREAM = "portcullis:audit"
ACTS = ["pull", "push", "pull", "delete", "pull"]
STS = [200, 201, 404, 401, 403, 429, 500, 200]


def subject(j):
    return "user%03d" % (j % 97)


def repo(j):
    return "team%d/app%d" % (j % 7, j % 11)


def status(j):
    return STS[j % 8]


def decision(j):
    return "deny" if status(j) in (401, 403, 429) else "allow"


@pytest.fixture(scope="module")
def qenv(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit-query-")
    rs = RedisServer(d / "redis")
    try:
        cfg = {"listen": {"address": "127.0.0.1:%d" % free_port()},
               "upstreams": [{"name": "up1", "url": "http://127.0.0.1:9",
                              "default": True}],
               "audit": {"redis": "127.0.0.1:%d" % rs.port,
                         "spool_file": str(d / "unused.spool")}}
        path = d / "gw.json"
        path.write_text(json.dumps(cfg))
        out = run([gateway_bin(), "audit", "generate", "-c", str(path),
                   "--count", str(N), "--step-ms", str(STEP)],
                  timeout=300).stdout
        assert "generated %d records" % N in out
        assert rs.call("XLEN", STREAM) == N
        with rs.client() as c:
            (_, first), = entries_to_dicts(
                c.call("XRANGE", STREAM, "-", "+", "COUNT", 1))
        t0 = int(first["time"])
        assert first["request_id"] == "gen0000000000"

        class E:
            pass
        e = E()
        e.rs, e.config, e.t0 = rs, str(path), t0
        yield e
    finally:
        rs.stop()


def query(env, *args):
    out = run([gateway_bin(), "audit", "query", "-c", env.config,
               "--format", "json"] + [str(a) for a in args],
              timeout=120).stdout
    return json.loads(out)


def gen_ids(js):
    return ["gen%010d" % j for j in js]


def got_ids(page):
    return [r["request_id"] for r in page["records"]]


def newest(pred, limit):
    out = []
    for j in range(N - 1, -1, -1):
        if pred(j):
            out.append(j)
            if len(out) == limit:
                break
    return out


@pytest.mark.parametrize("args,pred", [
    (["--subject", "user005"], lambda j: subject(j) == "user005"),
    (["--repo", "team3/*"], lambda j: j % 7 == 3),
    (["--repo", "team3/app4"], lambda j: j % 7 == 3 and j % 11 == 4),
    (["--repo", "team?/app1[01]"], lambda j: j % 11 in (10,)),
    (["--action", "delete"], lambda j: ACTS[j % 5] == "delete"),
    (["--status", "404"], lambda j: status(j) == 404),
    (["--status", "4xx"], lambda j: 400 <= status(j) < 500),
    (["--decision", "deny"], lambda j: decision(j) == "deny"),
    (["--subject", "user010", "--status", "4xx", "--action", "pull"],
     lambda j: subject(j) == "user010" and 400 <= status(j) < 500 and
     ACTS[j % 5] == "pull"),
    (["--repo", "team1/app2", "--decision", "allow", "--status", "5xx"],
     lambda j: j % 7 == 1 and j % 11 == 2 and status(j) == 500),
])
def test_filters(qenv, args, pred):
    page = query(qenv, "--limit", 50, *args)
    want = newest(pred, 50)
    assert got_ids(page) == gen_ids(want)
    assert page["next"] == page["records"][-1]["stream_id"]
    for r in page["records"]:
        j = int(r["request_id"][3:])
        assert r["subject"] == subject(j) and r["repository"] == repo(j)
        assert r["status"] == status(j)


def test_time_range(qenv):
    lo, hi = 50000, 50120
    page = query(qenv, "--since", qenv.t0 + lo * STEP,
                 "--until", qenv.t0 + hi * STEP, "--limit", 1000)
    assert got_ids(page) == gen_ids(range(hi, lo - 1, -1))
    assert page["next"] is None
    # Relative times: the generator ends about now.
    page = query(qenv, "--since", "10m", "--limit", 1000)
    assert 500 <= len(page["records"]) <= 700
    assert page["records"][0]["request_id"] == "gen%010d" % (N - 1)


@pytest.mark.parametrize("args,pred,size", [
    (["--subject", "user042"], lambda j: j % 97 == 42, 300),
    (["--repo", "team6/*", "--status", "201"],
     lambda j: j % 7 == 6 and status(j) == 201, 500),
])
def test_pagination_walks_everything_once(qenv, args, pred, size):
    want = gen_ids(newest(pred, N))
    got, cursor, pages = [], None, 0
    while True:
        extra = ["--cursor", cursor] if cursor else []
        page = query(qenv, "--limit", size, *(list(args) + extra))
        got += got_ids(page)
        pages += 1
        cursor = page["next"]
        if cursor is None or not page["records"]:
            break
        assert pages < 100
    assert got == want
    assert pages >= len(want) // size


def test_table_format_and_errors(qenv):
    out = run([gateway_bin(), "audit", "query", "-c", qenv.config,
               "--subject", "user001", "--limit", "3"], timeout=60).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "ST", "ACTION"]
    assert len(lines) == 5 and lines[-1].startswith("# next page: --cursor ")
    assert "user001" in lines[1]
    for bad in (["--status", "6xx"], ["--since", "yesterday"],
                ["--decision", "maybe"], ["--limit", "0"]):
        cp = run([gateway_bin(), "audit", "query", "-c", qenv.config] + bad,
                 timeout=30, check=False)
        assert cp.returncode == 1 and cp.stderr, bad
