"""Bounds on what the audit writer keeps in Redis (issue 7, point 8).

Every distinct repository name a client sends used to create an index
stream <stream>:repository:<name> with a 90-day TTL, outside max_len:
3,000 random names made 3,003 keys.  Now a record goes into its
repository's index only when the request was routed to an upstream and
answered by it or the cache, and audit.max_index_keys caps the index
streams (the least recently written go first).  The records themselves
all stay in the main stream.

Real redis-server and real docker-registry; the requests are plain HTTP
on one keep-alive connection, as a scanning client would send them."""

import hashlib
import http.client
import json
import os
import time
import urllib.parse

from lib.gateway import gateway_bin, gateway_config, upstream
from lib.redis import audit_record_args
from lib.util import run, wait_for

import pytest

STREAM = "portcullis:audit"
INDEX_PREFIX = STREAM + ":repository:"


@pytest.fixture
def redis(start_redis):
    return start_redis


def audit_cfg(redis_port, spool, **kw):
    a = {"redis": "127.0.0.1:%d" % redis_port, "spool_file": str(spool),
         "timeout": 5}
    a.update(kw)
    return a


class Client:
    """Sequential requests on one keep-alive connection; counts them."""

    def __init__(self, gw):
        self.gw = gw
        self.conn = None
        self.sent = 0

    def req(self, method, target, body=None, headers=None):
        h = {"User-Agent": "audit-bounds"}
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        "127.0.0.1", self.gw.port, timeout=30)
                self.conn.request(method, target, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        self.sent += 1
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return r, data

    def close(self):
        if self.conn is not None:
            self.conn.close()


def push(cl, repo, tag):
    """A one-layer image through the gateway; its manifest's digest."""
    digests = []
    for blob in (b'{"architecture":"amd64","os":"linux"}', os.urandom(500)):
        r, _ = cl.req("POST", "/v2/%s/blobs/uploads/" % repo)
        assert r.status == 202
        loc = urllib.parse.urlsplit(r.getheader("Location"))
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        target = loc.path + "?" + (loc.query + "&" if loc.query else "") + \
            "digest=" + urllib.parse.quote(d)
        r, _ = cl.req("PUT", target, body=blob,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status == 201
        digests.append((d, len(blob)))
    mt = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digests[0][0], "size": digests[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digests[1][0], "size": digests[1][1]}]})
    r, _ = cl.req("PUT", "/v2/%s/manifests/%s" % (repo, tag),
                  body=manifest.encode(), headers={"Content-Type": mt})
    assert r.status == 201


def scan_keys(rs, match):
    keys, cursor = [], b"0"
    with rs.client() as c:
        for _ in range(100000):
            cursor, batch = c.call("SCAN", cursor, "MATCH", match,
                                   "COUNT", 1000)
            keys.extend(k.decode() for k in batch)
            if cursor == b"0":
                return keys
    raise AssertionError("SCAN did not finish")


def query(gw, *args):
    out = run([gateway_bin(), "audit", "query", "-c", gw.config_path,
               "--format", "json", "--limit", "1000"] +
              [str(a) for a in args], timeout=120).stdout
    return json.loads(out)


def test_random_repository_names_keep_index_keys_bounded(
        redis, start_registry, start_gateway, tmp_path):
    cap = 50
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1", default=True),
        audit=audit_cfg(rs.port, tmp_path / "a.spool",
                        max_index_keys=cap)))
    cl = Client(gw)
    try:
        push(cl, "up1/keep/app", "v1")
        keep_ids = []
        names = []
        for i in range(3000):
            if i % 3 == 2:
                # Refused before routing: ns= is not a registry host
                # (ns= counts for a name without an upstream prefix).
                name = "rnd/%s-%d" % (os.urandom(6).hex(), i)
                r, _ = cl.req("GET", "/v2/%s/manifests/latest?ns=bad!host"
                              % name)
                assert r.status == 400
            else:
                # Routed: the real registry answers 404 NAME_UNKNOWN.
                name = "up1/rnd/%s-%d" % (os.urandom(6).hex(), i)
                r, _ = cl.req("GET", "/v2/%s/manifests/latest" % name)
                assert r.status == 404
            names.append(name)
            if i % 25 == 0:
                r, _ = cl.req("GET", "/v2/up1/keep/app/manifests/v1", headers={
                    "Accept": "application/vnd.oci.image.manifest.v1+json"})
                assert r.status == 200
                keep_ids.append(r.getheader("X-Request-Id"))
    finally:
        cl.close()
    # Every record is in the main stream: nothing was dropped.
    rs.wait_xlen(STREAM, cl.sent, timeout=60)
    # Keys: the stream, the writers' hash, the index set, and at most
    # max_index_keys index streams.
    dbsize = rs.call("DBSIZE")
    indexes = scan_keys(rs, STREAM + ":*")
    assert dbsize <= cap + 3, (dbsize, sorted(indexes)[:10])
    assert len(indexes) <= cap + 2
    assert rs.call("ZCARD", STREAM + ":indexes") <= cap
    repo_keys = {k[len(INDEX_PREFIX):] for k in indexes
                 if k.startswith(INDEX_PREFIX)}
    # The refused names were never indexed, the newest routed ones are.
    assert not repo_keys & {n for i, n in enumerate(names) if i % 3 == 2}
    assert names[2998] in repo_keys and names[2997] in repo_keys
    # A kept index still answers a query: every pull of the kept repo.
    page = query(gw, "--repo", "up1/keep/app", "--action", "pull")
    assert [r["request_id"] for r in page["records"]] == keep_ids[::-1]
    # An evicted index: the query by its exact name still finds the
    # record (the main stream is walked below the evicted mark), and so
    # does a glob.
    assert names[0] not in repo_keys
    recs = query(gw, "--repo", names[0])["records"]
    assert [r["repository"] for r in recs] == [names[0]]
    glob = names[0][:-1] + "[" + names[0][-1] + "]"
    recs = query(gw, "--repo", glob)["records"]
    assert [r["repository"] for r in recs] == [names[0]]
    assert recs[0]["status"] == 404 and recs[0]["upstream"] == "up1"


def test_refused_and_unrouted_names_create_no_index(
        redis, start_registry, start_gateway, tmp_path):
    rs = redis()
    reg = start_registry("up1")
    # No default upstream: a name without the up1/ prefix is unrouted.
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        audit=audit_cfg(rs.port, tmp_path / "a.spool")))
    cl = Client(gw)
    want = {}
    try:
        for i in range(600):
            name = "rnd%s/n%d" % (os.urandom(4).hex(), i)
            if i % 3 == 0:
                r, _ = cl.req("GET", "/v2/%s/manifests/latest" % name)
                assert r.status == 404      # no upstream for it
            elif i % 3 == 1:
                r, _ = cl.req("GET", "/v2/%s/manifests/latest?ns=bad!host"
                              % name)
                assert r.status == 400
            else:
                r, _ = cl.req("PATCH", "/v2/%s/manifests/latest" % name)
                assert r.status == 405
            want[r.getheader("X-Request-Id")] = name
    finally:
        cl.close()
    rs.wait_xlen(STREAM, len(want), timeout=60)
    assert scan_keys(rs, INDEX_PREFIX + "*") == []
    # The records carry their names, and a glob finds them all.
    recs = query(gw, "--repo", "rnd*")["records"]
    assert {r["request_id"]: r["repository"] for r in recs} == want


def _audit_script():
    """The Lua script compiled into the binary under test."""
    with open(gateway_bin(), "rb") as f:
        data = f.read()
    i = data.find(b"#!lua\n")
    assert i >= 0, "no audit script in the binary"
    return data[i:data.index(b"\0", i)]


def test_script_evicts_the_least_recently_written_index(redis):
    """The writer's script, driven directly with max_index_keys 3: a
    fourth index stream evicts the one written longest ago, not the one
    created first; the records stay in the main stream."""
    rs = redis()
    with rs.client() as c:
        sha = c.call("SCRIPT", "LOAD", _audit_script()).decode()
        n = [0]

        def write(repo):
            n[0] += 1
            keys = ["s", "s:writers", "s:indexes", "",
                    "s:repository:" + repo]
            argv = ["gw", 1, n[0], 0, 0, 3] + audit_record_args({
                "time": n[0], "id": "gw/1-%d" % n[0], "repository": repo,
                "action": "pull", "status": 200, "decision": "allow"})
            assert c.call("EVALSHA", sha, len(keys), *(keys + argv)) == 1
            # Scores are the entry's ms: the next write gets a later one.
            (last, _), = c.call("XREVRANGE", "s", "+", "-", "COUNT", 1)
            ms = int(last.split(b"-")[0])

            def later():
                sec, usec = c.call("TIME")
                return int(sec) * 1000 + int(usec) // 1000 > ms
            wait_for(later, timeout=5, what="Redis clock past %d" % ms)

        def kept():
            return sorted(k.decode()[len("s:repository:"):] for k in
                          c.call("KEYS", "s:repository:*"))

        for r in "abc":
            write(r)
        assert kept() == ["a", "b", "c"]
        write("d")
        assert kept() == ["b", "c", "d"]
        write("b")
        write("e")
        assert kept() == ["b", "d", "e"]
        assert sorted(m.decode() for m in c.call(
            "ZRANGE", "s:indexes", 0, -1)) == \
            ["s:repository:b", "s:repository:d", "s:repository:e"]
        assert c.call("XLEN", "s") == 6
        assert c.call("XLEN", "s:repository:b") == 2


def _tracked_indexes(c, n, score):
    """n index streams in the set, as a run with a larger cap (or one
    idle longer than max_age) leaves them: one entry each."""
    c.call("EVAL", """
for i = 1, tonumber(ARGV[1]) do
  local k = 's:repository:old' .. i
  redis.call('XADD', k, '1-' .. i, 'action', 'pull')
  redis.call('ZADD', 's:indexes', tonumber(ARGV[2]) + i, k)
end
return 1""", 0, n, score)


@pytest.mark.parametrize("why", ["smaller_cap", "aged_out"])
def test_script_evicts_a_bounded_number_per_call(redis, why):
    """3,000 index streams tracked from before, then calls whose cap (or
    max_age) leaves room for one: one call deletes at most 2 + 1024 of
    them (it used to delete all of them at once, a call that blocks Redis
    for as long as the backlog is large: 0.45 s for 200,000), and
    successive calls work the backlog off down to the cap.  Records all
    land in the main stream."""
    rs = redis()
    backlog, budget = 3000, 2 + 1024
    with rs.client() as c:
        sha = c.call("SCRIPT", "LOAD", _audit_script()).decode()
        if why == "smaller_cap":
            cap, maxage = 1, 0
            _tracked_indexes(c, backlog, 1000)
        else:
            # Last written long ago: older than max_age (one day).
            cap, maxage = 100000, 86400000
            _tracked_indexes(c, backlog, 1000)
        n = [0]

        def write():
            n[0] += 1
            keys = ["s", "s:writers", "s:indexes", "",
                    "s:repository:new%d" % n[0]]
            argv = ["gw", 1, n[0], 0, maxage, cap] + audit_record_args({
                "time": n[0], "id": "gw/1-%d" % n[0], "action": "pull",
                "status": 200, "decision": "allow"})
            assert c.call("EVALSHA", sha, len(keys), *(keys + argv)) == 1

        def old_left():
            tracked = c.call("ZCOUNT", "s:indexes", "-inf", 1000 + backlog)
            # Deleted with their entry in the set (the aged-out ones
            # would have expired by now; these have no TTL).
            assert len(c.call("KEYS", "s:repository:old*")) == tracked
            return tracked

        write()
        assert old_left() >= backlog - budget
        calls = 1
        while old_left() > 0 and calls < 10:
            write()
            calls += 1
        assert old_left() == 0 and calls <= backlog // budget + 2
        assert c.call("ZCARD", "s:indexes") <= max(cap, calls)
        assert c.call("XLEN", "s") == calls


def admin_page(gw, **params):
    url = "http://127.0.0.1:%d/admin/audit?%s" % (
        gw.port, urllib.parse.urlencode(params))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("GET", url[len("http://127.0.0.1:%d" % gw.port):])
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 200, body
    return json.loads(body)


def test_query_on_an_evicted_index_finds_every_record(
        redis, start_registry, start_gateway, tmp_path):
    """A client pulls a repository, then floods random names until its
    index is evicted, then pulls once more (the index comes back with
    that pull only).  An exact `audit query --repo` and /admin/audit used
    to return only the last pull (or nothing): a flood hid the earlier
    ones from an exact query.  Now they return every pull, newest first,
    also page by page across the evicted mark, and still leave out what
    the index leaves out (a 405 for the same name)."""
    cap = 5
    rs = redis()
    reg = start_registry("up1")
    a = audit_cfg(rs.port, tmp_path / "a.spool", max_index_keys=cap)
    a["admin_addresses"] = ["127.0.0.1"]
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1", default=True), audit=a))
    cl = Client(gw)
    repo = "up1/hide/app"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    pulls = []
    try:
        push(cl, repo, "v1")
        for round_ in range(3):
            r, _ = cl.req("GET", "/v2/%s/manifests/v1" % repo,
                          headers=accept)
            assert r.status == 200
            pulls.append(r.getheader("X-Request-Id"))
            # Refused: in the stream, not in the index.
            r, _ = cl.req("PATCH", "/v2/%s/manifests/v1" % repo)
            assert r.status == 405
            if round_ == 2:
                break
            for i in range(3 * cap):
                r, _ = cl.req("GET", "/v2/up1/rnd/%s-%d/manifests/latest"
                              % (os.urandom(6).hex(), i))
                assert r.status == 404
            # The flood went through: the repository's index is gone.
            rs.wait_xlen(STREAM, cl.sent, timeout=60)
            assert rs.call("EXISTS", INDEX_PREFIX + repo) == 0
    finally:
        cl.close()
    rs.wait_xlen(STREAM, cl.sent, timeout=60)
    assert rs.call("XLEN", INDEX_PREFIX + repo) == 1
    want = pulls[::-1]
    got = query(gw, "--repo", repo, "--action", "pull")
    assert [r["request_id"] for r in got["records"]] == want
    assert [r["request_id"] for r in admin_page(
        gw, repo=repo, action="pull")["records"]] == want
    # One record a page: the cursor crosses the mark.
    seen, cursor = [], None
    for _ in range(10):
        params = {"repo": repo, "action": "pull", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = admin_page(gw, **params)
        seen += [r["request_id"] for r in page["records"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == want
    # The same through the first-segment index ("up1/"), with time bounds
    # (the late-batch step first), on the gateway's own link.
    now = int(time.time() * 1000)
    page = admin_page(gw, repo="up1/hid*", action="pull",
                      since=now - 600000, until=now + 1000)
    assert [r["request_id"] for r in page["records"]] == want
    got = query(gw, "--repo", "up1/hid*", "--action", "pull", "--since",
                now - 600000, "--until", now + 1000)
    assert [r["request_id"] for r in got["records"]] == want
    assert admin_page(gw, repo="up1/hid*", action="pull",
                      until=now - 600000)["records"] == []


def test_script_replaces_an_index_set_of_another_type(redis):
    """A key of another type at <stream>:indexes (left by something
    else) made every batch fail after its records were written: the
    writer reconnected for each batch, and no index stream was counted,
    so the cap was not enforced.  The script replaces it, as it does an
    index stream of another type, and the cap holds."""
    rs = redis()
    with rs.client() as c:
        sha = c.call("SCRIPT", "LOAD", _audit_script()).decode()
        c.call("SET", "s:indexes", "not a sorted set")
        for n in range(1, 5):
            keys = ["s", "s:writers", "s:indexes", "",
                    "s:repository:r%d" % n]
            argv = ["gw", 1, n, 0, 0, 2] + audit_record_args({
                "time": n, "id": "gw/1-%d" % n, "action": "pull",
                "status": 200, "decision": "allow"})
            assert c.call("EVALSHA", sha, len(keys), *(keys + argv)) == 1
        assert c.call("TYPE", "s:indexes") == b"zset"
        assert c.call("ZCARD", "s:indexes") == 2
        assert len(c.call("KEYS", "s:repository:*")) == 2
        assert c.call("XLEN", "s") == 4
