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
403, 429), time = first + j * step.  On an empty stream the generator
gives each record a stream id of its time (<time>-0), as the writer's script does
for records that reach Redis at once, so the time bounds of a query
bound its walk and `--stats` (entries read, commands sent) shows it: the
tests below check what a query reads, never how long it takes."""

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


def query(env, *args, config=None):
    out = run([gateway_bin(), "audit", "query", "-c", config or env.config,
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


def query_stats(env, *args, config=None):
    cp = run([gateway_bin(), "audit", "query", "-c", config or env.config,
              "--format", "json", "--stats"] + [str(a) for a in args],
             timeout=120)
    (line,) = [x for x in cp.stderr.splitlines() if x.startswith("stats:")]
    st = dict(kv.split("=") for kv in line.split()[1:])
    return json.loads(cp.stdout), st


def test_ids_follow_times(qenv):
    with qenv.rs.client() as c:
        for (sid, rec) in entries_to_dicts(
                c.call("XRANGE", STREAM, "-", "+", "COUNT", 50)):
            assert int(sid.split("-")[0]) == int(rec["time"])


def test_since_bounds_the_walk(qenv):
    # A filter that matches nothing walks the whole window, and only it.
    page, st = query_stats(qenv, "--repo", "nomatch*", "--since",
                           qenv.t0 + (N - 300) * STEP)
    assert page["records"] == [] and page["next"] is None
    assert st["plan"] == "stream"
    assert int(st["entries_read"]) == 300
    assert int(st["commands"]) <= 2
    page, st = query_stats(qenv, "--repo", "nomatch*")
    assert int(st["entries_read"]) == N
    # Relative: the generator's last record is about now.
    page, st = query_stats(qenv, "--action", "nomatch", "--since", "120s")
    assert int(st["entries_read"]) <= 200


def test_until_bounds_the_walk(qenv):
    lo, hi = 20000, 20400
    page, st = query_stats(qenv, "--action", "nomatch",
                           "--since", qenv.t0 + lo * STEP,
                           "--until", qenv.t0 + hi * STEP)
    assert page["records"] == []
    # The window, and at most AUDIT_LATE_MS (10 s) above it.
    assert hi - lo + 1 <= int(st["entries_read"]) <= hi - lo + 1 + 10
    # Without since the walk starts at until just the same.
    page, st = query_stats(qenv, "--until", qenv.t0 + hi * STEP,
                           "--limit", 5)
    assert got_ids(page) == gen_ids(range(hi, hi - 5, -1))
    assert int(st["entries_read"]) <= 5 + 10


def test_segment_index_plan(qenv):
    pred = lambda j: j % 7 == 3 and status(j) == 201  # noqa: E731
    page, st = query_stats(qenv, "--repo", "team3/*", "--status", "201",
                           "--limit", 40)
    assert st["plan"] == "segment-index"
    assert got_ids(page) == gen_ids(newest(pred, 40))
    # Only team3's entries are read: about 7 times fewer than a walk.
    assert int(st["entries_read"]) <= 40 * 8 * 7 // 7 + AQ_BATCH
    page, st = query_stats(qenv, "--repo", "team3/*", "--since",
                           qenv.t0 + (N - 700) * STEP, "--limit", 1000)
    assert got_ids(page) == gen_ids(
        [j for j in range(N - 1, N - 701, -1) if j % 7 == 3])
    assert int(st["entries_read"]) == 100
    # Refusals are in no repository index: asking for them walks.
    page, st = query_stats(qenv, "--repo", "team3/*", "--decision", "deny",
                           "--limit", 5)
    assert st["plan"] == "stream"
    assert got_ids(page) == gen_ids(newest(
        lambda j: j % 7 == 3 and decision(j) == "deny", 5))
    # A first segment with a glob character walks the stream.
    page, st = query_stats(qenv, "--repo", "tea[m]3/*", "--limit", 5)
    assert st["plan"] == "stream"
    assert got_ids(page) == gen_ids(newest(lambda j: j % 7 == 3, 5))


AQ_BATCH = 500
M = 3000
MSTEP = 1000


@pytest.fixture
def small(qenv, tmp_path):
    """A stream of its own (M records, one a second, the last about now)
    on the module's Redis, for tests that change it."""
    stream = "aq:%s" % tmp_path.name
    cfg = json.loads(open(qenv.config).read())
    cfg["audit"]["stream"] = stream
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(cfg))
    run([gateway_bin(), "audit", "generate", "-c", str(path), "--count",
         str(M), "--step-ms", str(MSTEP)], timeout=120)
    with qenv.rs.client() as c:
        (_, first), = entries_to_dicts(
            c.call("XRANGE", stream, "-", "+", "COUNT", 1))

    class E:
        pass
    e = E()
    e.rs, e.config, e.stream, e.t0 = qenv.rs, str(path), stream, \
        int(first["time"])
    yield e
    with qenv.rs.client() as c:
        keys = c.call("KEYS", stream + "*")
        if keys:
            c.call("DEL", *keys)


def test_late_records_found_by_until(small):
    # Records that reach Redis long after their time (a spool replay):
    # generating on a stream whose ids are newer gives them ids of now.
    run([gateway_bin(), "audit", "generate", "-c", small.config,
         "--count", "5", "--step-ms", "600000"], timeout=60)
    with small.rs.client() as c:
        late = entries_to_dicts(c.call("XREVRANGE", small.stream, "+", "-",
                                       "COUNT", 5))
        assert c.call("ZCARD", small.stream + ":late") >= 1
    times = sorted(int(r["time"]) for _, r in late)
    assert all(int(sid.split("-")[0]) - int(r["time"]) > 10000
               for sid, r in late)
    until = times[2] + 1
    page, st = query_stats(small, "--until", until, "--limit", 2000,
                           config=small.config)
    got = [r["id"] for r in page["records"]]
    late_ids = [r["id"] for _, r in late if int(r["time"]) <= until]
    assert len(late_ids) == 3
    for i in late_ids:
        assert i in got
    assert all(int(r["time"]) <= until for r in page["records"])
    # Without the late set the walk would have started at until + 10 s
    # and missed them; with it, it starts at their ids.
    with small.rs.client() as c:
        c.call("DEL", small.stream + ":late")
    page, _ = query_stats(small, "--until", until, "--limit", 2000,
                          config=small.config)
    got = [r["id"] for r in page["records"]]
    assert not any(i in got for i in late_ids)


def test_segment_index_whole_only_after_its_mark(small):
    # A stream written before the first-segment index existed: the
    # index holds the newer half only, and the mark says so.
    half = small.t0 + (M // 2) * MSTEP
    key = small.stream + ":repository:team2/"
    with small.rs.client() as c:
        c.call("XTRIM", key, "MINID", str(half + 1))
        c.call("HSET", small.stream + ":writers", "prefix indexes",
               str(half))
    want = [j for j in range(M - 1, -1, -1) if j % 7 == 2]
    page, st = query_stats(small, "--repo", "team2/*", "--limit", M,
                           config=small.config)
    assert got_ids(page) == gen_ids(want)
    # No mark at all (an older writer's stream): the whole walk.
    with small.rs.client() as c:
        c.call("HDEL", small.stream + ":writers", "prefix indexes")
        c.call("DEL", key)
    page, st = query_stats(small, "--repo", "team2/*", "--limit", M,
                           config=small.config)
    assert got_ids(page) == gen_ids(want)
    assert int(st["entries_read"]) == M


def export(env, *args, check=True):
    cp = run([gateway_bin(), "audit", "export", "-c", env.config] +
             [str(a) for a in args], timeout=120, check=check)
    recs = [json.loads(x) for x in cp.stdout.splitlines()]
    nxt = [x for x in cp.stderr.splitlines() if x.startswith("next: ")]
    assert len(nxt) == 1
    return recs, nxt[0][6:], cp


def test_export_all_and_filters(small):
    recs, nxt, _ = export(small)
    assert nxt == "none"
    assert [r["request_id"] for r in recs] == gen_ids(range(M - 1, -1, -1))
    lo, hi = 1000, 1999
    recs, nxt, _ = export(small, "--since", small.t0 + lo * MSTEP,
                          "--until", small.t0 + hi * MSTEP,
                          "--repo", "team4/*", "--status", "4xx")
    want = [j for j in range(hi, lo - 1, -1)
            if j % 7 == 4 and 400 <= status(j) < 500]
    assert [r["request_id"] for r in recs] == gen_ids(want)
    assert nxt == "none"


def test_export_resumes_by_cursor(small):
    want = gen_ids([j for j in range(M - 1, -1, -1) if j % 97 != 5])
    got, cursor, rounds = [], None, 0
    while True:
        extra = ["--cursor", cursor] if cursor else []
        recs, nxt, _ = export(small, "--limit", 700, "--since",
                              small.t0, *extra)
        got += [r["request_id"] for r in recs if r["subject"] != "user005"]
        rounds += 1
        if nxt == "none":
            break
        assert nxt == recs[-1]["stream_id"]
        cursor = nxt
        assert rounds < 20
    assert rounds == 5
    assert got == want and len(set(got)) == len(got)
    # An export cut short (Redis gone) says where to resume from.
    recs, nxt, cp = export(small, "--subject", "user001", "--limit", 3)
    assert len(recs) == 3 and nxt == recs[-1]["stream_id"]
    rest, nxt2, _ = export(small, "--subject", "user001", "--cursor", nxt)
    ids = [r["request_id"] for r in recs + rest]
    assert ids == gen_ids([j for j in range(M - 1, -1, -1) if j % 97 == 1])
    assert nxt2 == "none"


def test_both_layouts_read(qenv, tmp_path):
    """A stream a portcullis before the packed layout wrote (one field per
    value; index entries of the record's own id with action, status and
    decision), continued by this one (records packed, index entries of
    refs): queries through the indexes, walks, pages across the boundary
    and export read both alike."""
    stream = "mix:%s" % tmp_path.name
    cfg = json.loads(open(qenv.config).read())
    cfg["audit"]["stream"] = stream
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(cfg))
    old = 30
    with qenv.rs.client() as c:
        sec, _ = c.call("TIME")
        t = (int(sec) - 3600) * 1000
        for j in range(old):
            rec = {"time": t + j, "id": "old/1-%d" % (j + 1),
                   "request_id": "old%02d" % j, "subject": "user042",
                   "action": "pull", "repository": "team3/app4",
                   "upstream": "up1", "status": "200",
                   "decision": "allow"}
            args = []
            for k, v in rec.items():
                args += [k, v]
            eid = c.call("XADD", stream, "%d-0" % (t + j), *args)
            for key in (stream + ":subject:user042",
                        stream + ":repository:team3/app4"):
                c.call("XADD", key, eid, "action", "pull", "status", "200",
                       "decision", "allow")
    run([gateway_bin(), "audit", "generate", "-c", str(path), "--count",
         "500", "--step-ms", "10"], timeout=120)
    with qenv.rs.client() as c:
        assert c.call("XLEN", stream + ":subject:user042") > old
        (_, kv), = c.call("XREVRANGE", stream, "+", "-", "COUNT", 1)
        assert kv[0] == b"record"
        (_, kv), = c.call("XREVRANGE", stream + ":subject:user042", "+",
                          "-", "COUNT", 1)
        assert kv[0] == b"refs"
    olds = ["old%02d" % j for j in range(old - 1, -1, -1)]
    for args, pred in ((["--subject", "user042"], lambda j: True),
                       # The prefilter on what both kinds of entry keep.
                       (["--subject", "user042", "--action", "pull"],
                        lambda j: ACTS[j % 5] == "pull")):
        want = gen_ids(reversed([j for j in range(500)
                                 if j % 97 == 42 and pred(j)])) + olds
        assert len(want) > old
        # One page, and pages of 3 that cross from refs to the old entries.
        page = query(qenv, "--limit", 100, *args, config=str(path))
        assert got_ids(page) == want
        got, cursor = [], None
        for _ in range(40):
            extra = ["--cursor", cursor] if cursor else []
            page = query(qenv, "--limit", 3, *(args + extra),
                         config=str(path))
            got += got_ids(page)
            cursor = page["next"]
            if cursor is None:
                break
        assert got == want
    # The repository index of old entries, and a walk of both.
    page = query(qenv, "--limit", 1000, "--repo", "team3/app4",
                 config=str(path))
    assert got_ids(page) == gen_ids(reversed(
        [j for j in range(500) if j % 7 == 3 and j % 11 == 4])) + \
        ["old%02d" % j for j in range(old - 1, -1, -1)]
    page = query(qenv, "--limit", 1000, "--repo", "team3/app[4]",
                 config=str(path))
    assert len(got_ids(page)) == len(
        [j for j in range(500) if j % 7 == 3 and j % 11 == 4]) + old
    rec = [r for r in page["records"] if r["request_id"] == "old05"][0]
    assert rec["status"] == 200 and rec["subject"] == "user042"
    out = run([gateway_bin(), "audit", "export", "-c", str(path),
               "--subject", "user042"], timeout=60).stdout
    assert [json.loads(x)["request_id"] for x in out.splitlines()] == \
        gen_ids(reversed([j for j in range(500) if j % 97 == 42])) + olds
    with qenv.rs.client() as c:
        c.call("DEL", *c.call("KEYS", stream + "*"))
