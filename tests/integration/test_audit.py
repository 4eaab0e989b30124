"""The audit stream: one record per answered request in a real
redis-server, nothing lost while Redis is killed or the gateway restarts
(spool file, in-order replay, no duplicates), the reject and drop
policies with a full spool, GET /admin/audit, `audit tail` and an external
consumer group read with redis-cli.  The query filters over 100,000
records are in test_audit_query.py.

Every redis-server here runs with appendfsync always, so a SIGKILL loses
nothing Redis acknowledged: a missing record is the gateway's fault."""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import time
import urllib.parse

import pytest

from lib import audit_spool
from lib.gateway import (OPEN_TEST_POLICY, gateway_bin, gateway_config,
                         upstream)
from lib.redis import (RespError, audit_record_args, entries_to_dicts,
                       index_refs)
from lib.util import ManagedProcess, free_port, pid_alive, safe_env, wait_for

STREAM = "portcullis:audit"


@pytest.fixture
def redis(start_redis):
    return start_redis


def audit_cfg(redis_port, spool, **kw):
    a = {"redis": "127.0.0.1:%d" % redis_port, "spool_file": str(spool),
         "admin_addresses": ["127.0.0.1"], "timeout": 2}
    a.update(kw)
    return a


def records(redis_srv, key=STREAM):
    with redis_srv.client() as c:
        return entries_to_dicts(c.call("XRANGE", key, "-", "+"))


class Pinger:
    """Sequential GET /v2/ on one keep-alive connection; remembers the
    X-Request-Id of every answer, in order."""

    def __init__(self, gw):
        self.gw = gw
        self.conn = None
        self.ids = []
        self.statuses = []

    def one(self, path="/v2/"):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        "127.0.0.1", self.gw.port, timeout=15)
                self.conn.request("GET", path,
                                  headers={"User-Agent": "audit-test"})
                r = self.conn.getresponse()
                r.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        self.ids.append(r.getheader("X-Request-Id"))
        self.statuses.append(r.status)
        return r.status

    def many(self, n):
        for _ in range(n):
            assert self.one() == 200
        return self


def assert_exactly(recs, ids):
    """The stream holds exactly these request ids, in this order, once."""
    got = [d["request_id"] for _, d in recs]
    dup = {x for x in got if got.count(x) > 1} if len(set(got)) != \
        len(got) else set()
    assert not dup, "duplicates: %r" % sorted(dup)[:10]
    missing = set(ids) - set(got)
    assert not missing, "%d missing, e.g. %r" % (len(missing),
                                                 sorted(missing)[:5])
    assert got == list(ids), "order differs"


def run_ids(recs):
    """(run, n) of each record, as the writer numbered them."""
    return [tuple(int(x) for x in d["id"].rsplit("/", 1)[1].split("-"))
            for _, d in recs]


def assert_numbering(recs):
    """Within each run, n goes 1, 2, 3 ... in stream order."""
    last = {}
    for run, n in run_ids(recs):
        assert n == last.get(run, 0) + 1, (run, n, last.get(run))
        last[run] = n


def spool_size(path):
    """Bytes of records not released (the ring's file size never
    changes); -1 without a spool."""
    return audit_spool.pending_bytes(str(path))


# ---------------------------------------------------------------------------
# Acceptance 1: one record per request, with the right fields.

def _upload(http, gw, repo, data):
    r = http.post("%s/v2/%s/blobs/uploads/" % (gw.url, repo), timeout=30)
    assert r.status_code == 202, r.text
    ids = [r.headers["X-Request-Id"]]
    url = urllib.parse.urljoin(gw.url + "/", r.headers["Location"])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    sep = "&" if "?" in url else "?"
    r = http.put(url + sep + "digest=" + urllib.parse.quote(digest),
                 data=data, timeout=30,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    ids.append(r.headers["X-Request-Id"])
    return digest, ids


def test_one_record_per_request_with_fields(redis, start_registry,
                                            start_gateway, http, tmp_path):
    rs = redis()
    reg = start_registry("up1")
    dead = free_port()
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1", default=True),
        {"name": "down", "url": "http://127.0.0.1:%d" % dead,
         "prefix": "down", "hosts": []},
        instance_id="gw-audit-1",
        audit=audit_cfg(rs.port, tmp_path / "a.spool")))
    sent = []   # (request id, what we expect of its record)

    def req(method, target, expect_status, data=None, headers=None, **exp):
        h = {"User-Agent": "audit-mix/1.0"}
        h.update(headers or {})
        r = http.request(method, gw.url + target, data=data, headers=h,
                         timeout=30)
        assert r.status_code == expect_status, (method, target,
                                                r.status_code, r.text[:300])
        exp.update(method=method, status=str(expect_status),
                   bytes_out=str(len(r.content)) if method != "HEAD"
                   else None)
        sent.append((r.headers["X-Request-Id"], exp))
        return r

    # Pushes: a config blob, a layer, a manifest (POST, PUT, PUT).
    cfg_blob = b'{"architecture":"amd64","os":"linux"}'
    layer = os.urandom(5000)
    cd, ids1 = _upload(http, gw, "up1/aud/app", cfg_blob)
    ld, ids2 = _upload(http, gw, "up1/aud/app", layer)
    for rid in ids1 + ids2:
        sent.append((rid, {"action": "push", "repository": "up1/aud/app",
                           "upstream": "up1", "decision": "allow"}))
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd, "size": len(cfg_blob)},
        "layers": [{"mediaType":
                    "application/vnd.oci.image.layer.v1.tar",
                    "digest": ld, "size": len(layer)}]}).encode()
    md = "sha256:" + hashlib.sha256(manifest).hexdigest()
    mt = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    req("PUT", "/v2/up1/aud/app/manifests/v1", 201, data=manifest,
        headers=mt, action="push", repository="up1/aud/app", reference="v1",
        upstream="up1", error="", decision="allow")
    # Pulls.
    acc = {"Accept": mt["Content-Type"]}
    r = req("GET", "/v2/up1/aud/app/manifests/v1", 200, headers=acc,
            action="pull", repository="up1/aud/app", reference="v1",
            upstream="up1", decision="allow", path="/v2/up1/aud/app/"
            "manifests/v1", client_ip="127.0.0.1",
            user_agent="audit-mix/1.0", subject="anonymous",
            auth_method="none", instance="gw-audit-1", cache="")
    assert r.content == manifest
    req("HEAD", "/v2/up1/aud/app/manifests/" + md, 200, headers=acc,
        action="pull", reference=md)
    r = req("GET", "/v2/up1/aud/app/blobs/" + ld, 200, action="pull",
            reference=ld, bytes_out=str(len(layer)))
    assert r.content == layer
    req("GET", "/v2/up1/aud/app/tags/list", 200, action="pull",
        repository="up1/aud/app", reference="")
    req("GET", "/v2/", 200, action="ping", repository="", upstream="",
        decision="allow")
    # Malformed requests.
    req("GET", "/v2/UPPER/manifests/v1", 400, action="pull",
        error="NAME_INVALID", decision="", repository="")
    req("GET", "/v2/up1/aud/app/blobs/sha256:zz", 400,
        error="DIGEST_INVALID")
    req("DELETE", "/v2/", 405, error="UNSUPPORTED")
    req("GET", "/nowhere", 404, action="other", error="NOT_FOUND")
    req("GET", "/v2/aud/app/manifests/v1?ns=bad/host", 400,
        error="UNSUPPORTED")
    # Upstream errors: unknown manifest (the upstream's 404), upstream down.
    req("GET", "/v2/up1/aud/app/manifests/nope", 404, headers=acc,
        action="pull", reference="nope", error="MANIFEST_UNKNOWN")
    req("GET", "/v2/down/x/manifests/v1", 502, action="pull",
        upstream="down", repository="down/x", error="UNAVAILABLE",
        decision="allow")
    # Admin API: allowed from 127.0.0.1 and itself recorded.
    req("GET", "/admin/audit?limit=1", 200, action="admin",
        decision="allow")
    # A framing error has no request object; it is recorded all the same.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        resp = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
    assert resp.startswith(b"HTTP/1.1 400"), resp[:200]
    # Probes are not audited.
    assert http.get(gw.url + "/healthz", timeout=10).status_code == 200

    n = len(sent) + 1
    rs.wait_xlen(STREAM, n)
    recs = records(rs)
    assert len(recs) == n
    assert_numbering(recs)
    by_id = {d["request_id"]: d for _, d in recs}
    assert len(by_id) == n
    for rid, exp in sent:
        d = by_id.pop(rid)
        for k, v in exp.items():
            if v is not None:
                assert d[k] == v, (rid, k, d[k], v, d)
        assert int(d["duration_ms"]) >= 0
        assert abs(int(d["time"]) - time.time() * 1000) < 600000
    (framing,) = by_id.values()
    assert framing["status"] == "400" and framing["error"] == "UNSUPPORTED"
    assert framing["client_ip"] == "127.0.0.1"
    # bytes_in counts the pushed body.
    assert any(d["method"] == "PUT" and d["bytes_in"] == str(len(layer))
               for _, d in recs)
    # Never a secret: no Authorization value, no query string in path.
    assert all("?" not in d["path"] for _, d in recs)
    # The indexes point at the same ids.
    with rs.client() as c:
        idx = c.call("XRANGE", STREAM + ":repository:up1/aud/app", "-", "+")
        sub = len(index_refs(c.call("XRANGE", STREAM + ":subject:anonymous",
                                    "-", "+")))
    main_ids = {eid for eid, d in recs if d["repository"] == "up1/aud/app"}
    assert {eid for eid, _ in index_refs(idx)} == main_ids
    assert sub == n


# ---------------------------------------------------------------------------
# Acceptance 2: Redis killed for 20 s in the middle of 5,000 requests.

def test_redis_outage_loses_nothing(redis, start_registry, start_gateway,
                                    tmp_path):
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "outage.spool"
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(rs.port, spool, fsync="always")))
    p = Pinger(gw)
    p.many(2000)
    rs.kill()
    # The deliberate real-time gap: Redis stays down for 20 s while
    # requests keep coming (1,000 of them, paced over the gap).
    t0 = time.monotonic()
    for i in range(1000):
        assert p.one() == 200
        if i % 50 == 49:
            rest = t0 + (i + 1) * 0.019 - time.monotonic()
            if rest > 0:
                time.sleep(rest)
    assert spool_size(spool) > 0, "nothing was spooled"
    gap = 20 - (time.monotonic() - t0)
    if gap > 0:
        time.sleep(gap)
    rs.start()
    p.many(2000)
    assert len(p.ids) == 5000
    rs.wait_xlen(STREAM, 5000, timeout=60)
    recs = records(rs)
    assert_exactly(recs, p.ids)
    assert_numbering(recs)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="spool emptied after replay")
    log = gw.log_text()
    assert "audit redis_down" in log and "audit redis_up" in log
    gw.stop()
    assert "dropped=0" in gw.log_text()


def test_gateway_restart_replays_spool(redis, start_registry, start_gateway,
                                       tmp_path):
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "restart.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-r",
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    p = Pinger(gw)
    p.many(100)
    rs.wait_xlen(STREAM, 100)
    rs.kill()
    p.many(300)
    # A clean stop keeps what Redis did not acknowledge in the spool.
    assert gw.stop() == 0
    assert spool_size(spool) > 0
    rs.start()
    assert rs.call("XLEN", STREAM) == 100
    gw2 = start_gateway(cfg)
    p2 = Pinger(gw2)
    p2.many(50)
    rs.wait_xlen(STREAM, 450)
    recs = records(rs)
    assert_exactly(recs, p.ids + p2.ids)
    assert_numbering(recs)
    runs = [r for r, _ in run_ids(recs)]
    assert runs[0] == runs[399] < runs[400], "new run after the restart"
    assert "records=300" in gw2.log_text()


def test_torn_spool_tail_after_kill9_is_dropped(redis, start_registry,
                                                start_gateway, tmp_path):
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "torn.spool"
    cfg = gateway_config(upstream(reg, default=True),
                         audit=audit_cfg(rs.port, spool))
    rs.kill()
    gw = start_gateway(cfg)
    p = Pinger(gw)
    p.many(60)
    # Records are written to the spool before their response leaves, so
    # a SIGKILL now keeps all 60; then half a record, as a crash would.
    gw.proc.stop(sig=9)
    assert audit_spool.request_ids(str(spool)) == p.ids
    end = audit_spool.frames(str(spool))[-1]
    end = end[0] + audit_spool.FRAME + len(end[1])
    with open(spool, "r+b") as f:
        f.seek(end)         # no wrap in 60 records of a 1 GiB ring
        f.write(struct.pack("<IIIQ", audit_spool.RING_MAGIC, 64, 0x1234,
                            end) + b"half a payload")
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, 60)
    assert_exactly(records(rs), p.ids)
    assert "torn_tail offset=%d" % end in gw2.log_text()


def test_replaying_what_redis_has_writes_nothing_twice(redis, start_registry,
                                                       start_gateway,
                                                       tmp_path):
    """A crash between XADD and the spool's truncation replays records
    Redis already holds: the writer's high-water mark skips them."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "dup.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-dup",
                         audit=audit_cfg(rs.port, spool))
    rs.kill()
    gw = start_gateway(cfg)
    p = Pinger(gw).many(40)
    gw.stop()
    saved = tmp_path / "saved.spool"
    shutil.copy(spool, saved)
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, 40)
    wait_for(lambda: spool_size(spool) == 0, what="spool replayed")
    gw2.stop()
    shutil.copy(saved, spool)       # as if the truncation never happened
    gw3 = start_gateway(cfg)
    wait_for(lambda: spool_size(spool) == 0, what="spool replayed again")
    p3 = Pinger(gw3).many(5)
    rs.wait_xlen(STREAM, 45)
    gw3.stop()
    assert_exactly(records(rs), p.ids + p3.ids)
    assert "duplicates=40" in gw3.log_text()


# ---------------------------------------------------------------------------
# Acceptance 3: reject mode; and drop mode for contrast.

def test_reject_mode_serves_nothing_unrecorded(redis, start_registry,
                                               start_gateway, tmp_path):
    reg = start_registry("up1")
    port = free_port()      # Redis is down from the start
    spool = tmp_path / "reject.spool"
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(port, spool, spool_max_bytes=16384,
                        on_failure="reject")))
    p = Pinger(gw)
    for _ in range(200):
        if p.one() == 503:
            break
    served = [i for i, s in zip(p.ids, p.statuses) if s == 200]
    assert 0 < len(served) < 200 and p.statuses[-1] == 503, p.statuses
    assert set(p.statuses) == {200, 503}
    # Once full, everything is refused: /v2/ and proxied paths alike.
    for path in ("/v2/", "/v2/x/manifests/v1", "/nowhere"):
        assert p.one(path) == 503
    r = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    r.request("GET", "/v2/up1/x/manifests/v1")
    resp = r.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 503
    assert body["errors"][0]["code"] == "UNAVAILABLE"
    assert os.path.getsize(spool) == 16384     # allocated once
    # Redis comes back: everything served is recorded, once, in order.
    rs = redis(port=port)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="spool replayed")
    recs = [x for x in records(rs) if x[1]["status"] != "503"]
    assert_exactly(recs, served)
    # And requests are served again.
    wait_for(lambda: p.one() == 200, timeout=10, what="served again")
    gw.stop()
    assert re.search(r"rejected=[1-9]", gw.log_text())


def test_drop_mode_keeps_serving_and_counts(redis, start_registry,
                                            start_gateway, tmp_path):
    reg = start_registry("up1")
    port = free_port()
    spool = tmp_path / "drop.spool"
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(port, spool, spool_max_bytes=16384)))
    p = Pinger(gw).many(150)
    wait_for(lambda: "audit spool_full dropped=" in gw.log_text(),
             timeout=10, what="drop logged")
    rs = redis(port=port)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="spool replayed")
    recs = records(rs)
    assert 0 < len(recs) < 150
    assert_exactly(recs, p.ids[:len(recs)])     # the oldest are kept
    gw.stop()
    m = re.search(r"audit stop .* dropped=(\d+)", gw.log_text())
    assert int(m.group(1)) == 150 - len(recs)


# ---------------------------------------------------------------------------
# Reading: /admin/audit, tail, a consumer group.

def test_admin_audit_endpoint(redis, start_registry, start_gateway, http,
                              tmp_path):
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(rs.port, tmp_path / "adm.spool")))
    p = Pinger(gw).many(5)
    p.one("/v2/demo/app/manifests/v9")       # upstream 404
    rs.wait_xlen(STREAM, 6)
    r = http.get(gw.url + "/admin/audit", params={"limit": 3}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    page = r.json()
    assert [x["request_id"] for x in page["records"]] == \
        list(reversed(p.ids))[:3]
    assert isinstance(page["records"][0]["status"], int)
    r2 = http.get(gw.url + "/admin/audit", timeout=10, params={
        "limit": 3, "cursor": page["next"]})
    assert [x["request_id"] for x in r2.json()["records"]] == \
        list(reversed(p.ids))[3:6]
    r3 = http.get(gw.url + "/admin/audit", timeout=10, params={
        "repo": "demo/*", "status": "4xx"})
    assert [x["request_id"] for x in r3.json()["records"]] == [p.ids[-1]]
    assert r3.json()["next"] is None
    # The CLI prints the same page.
    out = _cli("query", gw.config_path, "--repo", "demo/*", "--status",
               "4xx", "--format", "json")
    assert json.loads(out) == r3.json()
    assert http.get(gw.url + "/admin/audit", params={"status": "6xx"},
                    timeout=10).status_code == 400
    assert http.post(gw.url + "/admin/audit",
                     timeout=10).status_code == 405


def test_admin_query_outlived_by_its_client(redis, start_registry,
                                            start_gateway, http, tmp_path):
    """A client that leaves while its /admin/audit query waits for Redis
    ends its request (499, recorded); the replies that come later find no
    request and free the query; the gateway goes on serving queries."""
    import signal
    rs = redis()
    reg = start_registry("up1")
    cfg = gateway_config(upstream(reg, default=True),
                         audit=audit_cfg(rs.port, tmp_path / "gone.spool"))
    cfg["log"] = {"level": "debug"}
    gw = start_gateway(cfg)
    Pinger(gw).many(3)
    rs.wait_xlen(STREAM, 3)
    os.kill(rs.pid, signal.SIGSTOP)
    try:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"GET /admin/audit?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: "req stage admin" in gw.log_text(), timeout=10,
                 what="the query to wait for Redis")
        s.close()
        wait_for(lambda: re.search(r"req done method=GET path=/admin/audit "
                                   r"status=499", gw.log_text()),
                 timeout=10, what="the request to end as 499")
    finally:
        os.kill(rs.pid, signal.SIGCONT)
    r = http.get(gw.url + "/admin/audit", params={"limit": 2}, timeout=20)
    assert r.status_code == 200, r.text
    assert len(r.json()["records"]) == 2
    assert pid_alive(gw.pid)


def test_admin_query_on_a_stalled_redis_is_a_503(redis, start_registry,
                                                 start_gateway, http,
                                                 tmp_path):
    """Redis that stops answering (SIGSTOP) an /admin/audit query on an
    otherwise idle gateway counts as down after audit.timeout, as for a
    record: the query is a 503 and the link comes back when Redis does.
    Fails before this change: with no record in flight nothing timed the
    query out, and it waited as long as Redis did (no answer here)."""
    import signal
    rs = redis()
    reg = start_registry("up1")
    cfg = gateway_config(upstream(reg, default=True),
                         audit=audit_cfg(rs.port, tmp_path / "st.spool",
                                         timeout=1))
    gw = start_gateway(cfg)
    Pinger(gw).many(2)
    rs.wait_xlen(STREAM, 2)
    os.kill(rs.pid, signal.SIGSTOP)
    try:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=15)
        s.sendall(b"GET /admin/audit?limit=2 HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        buf = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
        except socket.timeout:
            pass
        s.close()
        assert buf.startswith(b"HTTP/1.1 503 "), buf[:200]
        assert "redis_down reason=\"reply timeout\"" in gw.log_text()
    finally:
        os.kill(rs.pid, signal.SIGCONT)
    wait_for(lambda: "redis_up" in gw.log_text().split("reply timeout")[-1],
             timeout=30, what="the link back")
    r = http.get(gw.url + "/admin/audit", params={"limit": 2}, timeout=20)
    assert r.status_code == 200, r.text
    assert pid_alive(gw.pid)


def test_admin_audit_refused_to_other_addresses(redis, start_registry,
                                               start_gateway, http,
                                               tmp_path):
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(rs.port, tmp_path / "adm2.spool",
                        admin_addresses=["10.9.9.9"])))
    # The caller is anonymous (the policy has no admin rule, its address
    # is not in the alias): 401 with a challenge, as any anonymous denial.
    r = http.get(gw.url + "/admin/audit", timeout=10)
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"].startswith("Basic realm=")
    rs.wait_xlen(STREAM, 1)
    (_, d), = records(rs)
    assert (d["action"], d["decision"], d["status"]) == \
        ("admin", "deny", "401")


def _cli(cmd, config, *args, timeout=60):
    from lib.gateway import gateway_bin
    from lib.util import run
    return run([gateway_bin(), "audit", cmd, "-c", config] + list(args),
               timeout=timeout).stdout


def test_audit_tail_follows_live(redis, start_registry, start_gateway,
                                 tmp_path):
    from lib.gateway import gateway_bin
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(rs.port, tmp_path / "tail.spool")))
    Pinger(gw).many(3)
    rs.wait_xlen(STREAM, 3)
    out = tmp_path / "tail.out"
    tail = ManagedProcess([gateway_bin(), "audit", "tail", "-c",
                           gw.config_path, "--action", "pull"], out,
                          tmp_path / "tail.err", env=safe_env(),
                          name="audit tail")
    try:
        # Ready once it printed its header (it read the newest id).
        wait_for(lambda: "REQUEST_ID" in out.read_text(), timeout=10,
                 what="tail header")
        p = Pinger(gw)
        p.one()                                     # a ping: filtered
        t0 = time.monotonic()
        p.one("/v2/tailed/app/manifests/v1")        # a pull
        wait_for(lambda: p.ids[-1] in out.read_text(), timeout=10,
                 interval=0.01, what="tail shows the record")
        latency = time.monotonic() - t0
        print("audit tail latency: %.3f s" % latency)
        text = out.read_text()
        assert p.ids[-2] not in text
        assert text.count("\n") == 2        # header + the one pull
        assert pid_alive(tail.pid)
    finally:
        tail.stop()


def test_consumer_group_with_redis_cli(redis, start_registry, start_gateway,
                                       tmp_path):
    """The recipe in the README: an external shipper reads the stream
    with a consumer group and acknowledges what it shipped."""
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(rs.port, tmp_path / "cg.spool")))
    p = Pinger(gw).many(7)
    rs.wait_xlen(STREAM, 7)
    assert rs.cli("XGROUP", "CREATE", STREAM, "shipper", "0").strip() == "OK"
    out = rs.cli("--raw", "XREADGROUP", "GROUP", "shipper", "c1", "COUNT",
                 "5", "STREAMS", STREAM, ">")
    ids = re.findall(r"^\d+-\d+$", out, re.M)
    assert len(ids) == 5
    assert all(rid in out for rid in p.ids[:5])
    pending = rs.cli("XPENDING", STREAM, "shipper")
    assert pending.splitlines()[0].strip() == "5"
    assert rs.cli("XACK", STREAM, "shipper", *ids).strip() == "5"
    out2 = rs.cli("--raw", "XREADGROUP", "GROUP", "shipper", "c1",
                  "COUNT", "100", "STREAMS", STREAM, ">")
    assert len(re.findall(r"^\d+-\d+$", out2, re.M)) == 2
    assert all(rid in out2 for rid in p.ids[5:])
    assert rs.cli("XPENDING", STREAM, "shipper").splitlines()[0].strip() \
        == "2"


# ---------------------------------------------------------------------------
# The writer's script, driven directly: batches, the mark, gaps.

def _audit_script():
    """The Lua script compiled into the binary under test."""
    with open(gateway_bin(), "rb") as f:
        data = f.read()
    i = data.find(b"#!lua\n")
    assert i >= 0, "no audit script in the binary"
    return data[i:data.index(b"\0", i)]


def test_script_batches_skip_what_redis_has_and_refuse_gaps(redis):
    """One EVALSHA carries consecutive records of one run: the part of a
    batch at or below the writer's mark is skipped (a retry after a lost
    reply), a batch that does not follow the mark is refused with GAP and
    writes nothing; index entries are one per batch and index, with the
    ids of its records."""
    rs = redis()
    with rs.client() as c:
        sha = c.call("SCRIPT", "LOAD", _audit_script()).decode()

        def batch(run, n, count, inst="gw-s", stream="s"):
            keys = [stream, stream + ":writers", stream + ":indexes"]
            argv = [inst, run, n, 0, 0, 100]
            for k in range(n, n + count):
                rid = "r%d-%d" % (run, k)
                keys += [stream + ":subject:alice",
                         stream + ":repository:team/app" if k % 2 else ""]
                argv += audit_record_args({
                    "time": 1000 + k, "id": "%s/%d-%d" % (inst, run, k),
                    "request_id": rid, "subject": "alice",
                    "repository": "team/app" if k % 2 else "",
                    "action": "pull", "status": 200,
                    "decision": "allow"})
            return c.call("EVALSHA", sha, len(keys), *(keys + argv))

        def rids(key="s"):
            return [d["request_id"] for _, d in
                    entries_to_dicts(c.call("XRANGE", key, "-", "+"))]

        assert batch(5, 1, 3) == 3
        assert rids() == ["r5-1", "r5-2", "r5-3"]
        assert c.call("HGET", "s:writers", "gw-s") == b"5-3"
        # A retry overlapping what Redis has: only 4 and 5 are new.
        assert batch(5, 2, 4) == 2
        assert rids() == ["r5-%d" % k for k in range(1, 6)]
        assert c.call("HGET", "s:writers", "gw-s") == b"5-5"
        assert batch(5, 1, 2) == 0
        assert batch(4, 1, 9) == 0          # an older run
        # Index entries point at the main entries by id: one entry for
        # each batch that wrote (3 then 2 records), with its newest
        # record's id, and what a query's prefilter needs.
        main = [eid for eid, _ in entries_to_dicts(
            c.call("XRANGE", "s", "-", "+"))]
        sub = c.call("XRANGE", "s:subject:alice", "-", "+")
        assert [e[0].decode() for e in sub] == [main[2], main[4]]
        assert index_refs(sub) == [
            (eid, {"action": "pull", "status": "200", "decision": "allow"})
            for eid in main]
        assert [eid for eid, _ in index_refs(c.call(
            "XRANGE", "s:repository:team/app", "-", "+"))] == main[0::2]
        assert [eid for eid, _ in index_refs(c.call(
            "XRANGE", "s:repository:team/", "-", "+"))] == main[0::2]
        # The main entry: one field, the record packed.
        (_, kv), = c.call("XRANGE", "s", main[0], main[0])
        assert kv[0] == b"record" and len(kv) == 2
        assert kv[1].decode().split("\t")[:4] == ["1001", "gw-s/5-1",
                                                   "r5-1", ""]
        # Gaps: 6 is missing; a new run must start at 1.
        for run, n in ((5, 7), (6, 2)):
            with pytest.raises(RespError, match="^GAP"):
                batch(run, n, 2)
        assert len(rids()) == 5
        assert c.call("HGET", "s:writers", "gw-s") == b"5-5"
        assert batch(6, 1, 2) == 2
        # One record alone, as any batch.
        keys = ["s", "s:writers", "s:indexes", "s:subject:bob", ""]
        argv = ["gw-s", 6, 3, 0, 0, 100] + audit_record_args({
            "time": 1, "id": "gw-s/6-3", "request_id": "r6-3",
            "action": "push", "status": 201, "decision": "allow"})
        assert c.call("EVALSHA", sha, len(keys), *(keys + argv)) == 1
        assert c.call("EVALSHA", sha, len(keys), *(keys + argv)) == 0
        assert rids()[-3:] == ["r6-1", "r6-2", "r6-3"]
        # Malformed batches are refused whole: keys and records disagree.
        for bad in (["s", "s:writers", "s:indexes", "s:subject:x"],
                    ["s", "s:writers", "s:indexes", "s:subject:x", "",
                     "s:subject:y", ""]):
            argv = ["gw-s", 6, 4, 0, 0, 100] + audit_record_args({
                "time": 1, "id": "gw-s/6-4", "request_id": "x"})
            with pytest.raises(RespError, match="malformed"):
                c.call("EVALSHA", sha, len(bad), *(bad + argv))
        # A failing write leaves the mark where it was: the batch can be
        # sent again once Redis accepts it.
        c.call("SET", "t", "not a stream")
        with pytest.raises(RespError, match="WRONGTYPE"):
            batch(1, 1, 3, stream="t")
        assert c.call("HGET", "t:writers", "gw-s") is None
        c.call("DEL", "t")
        assert batch(1, 1, 3, stream="t") == 3
        assert rids("t") == ["r1-1", "r1-2", "r1-3"]


def test_script_late_set_and_index_lists(redis):
    """The late set (<stream>:late) from the gateway's path, where the
    script reads the records' ids only when its batch may hold a late
    one: a batch of recent records adds nothing, one mixing recent and
    late records adds one member, the newest id with the earliest late
    time.  Index entries follow the keys of each record, as they change
    from one record to the next (the script keeps the record before's
    lists)."""
    rs = redis()
    with rs.client() as c:
        sha = c.call("SCRIPT", "LOAD", _audit_script()).decode()
        now = int(time.time() * 1000)

        def batch(n, recs):
            keys = ["l", "l:writers", "l:indexes"]
            argv = ["gw-l", 7, n, 0, 0, 100]
            for k, (t, sub, repo) in enumerate(recs):
                keys += ["l:subject:" + sub,
                         "l:repository:" + repo if repo else ""]
                argv += audit_record_args({
                    "time": t, "id": "gw-l/7-%d" % (n + k),
                    "request_id": "r%d" % (n + k), "subject": sub,
                    "repository": repo, "action": "pull",
                    "status": 200, "decision": "allow"})
            return c.call("EVALSHA", sha, len(keys), *(keys + argv))

        assert batch(1, [(now - 2000, "a", "t/x"),
                         (now, "a", "t/x")]) == 2
        assert c.call("EXISTS", "l:late") == 0
        assert batch(3, [(now - 20000, "a", "t/x"),
                         (now, "b", ""),
                         (now - 60000, "a", "u/y"),
                         (now - 5000, "b", "t/x")]) == 4
        main = [eid for eid, _ in entries_to_dicts(
            c.call("XRANGE", "l", "-", "+"))]
        assert len(main) == 6
        (member,) = c.call("ZRANGE", "l:late", 0, -1)
        assert member.decode() == "%s %d" % (main[-1], now - 60000)
        # Every record in its subject's and its repositories' indexes.
        def refs(key):
            return [eid for eid, _ in index_refs(
                c.call("XRANGE", key, "-", "+"))]
        assert refs("l:subject:a") == [main[0], main[1], main[2],
                                       main[4]]
        assert refs("l:subject:b") == [main[3], main[5]]
        assert refs("l:repository:t/x") == [main[0], main[1], main[2],
                                            main[5]]
        assert refs("l:repository:t/") == [main[0], main[1], main[2],
                                           main[5]]
        assert refs("l:repository:u/y") == [main[4]]
        assert refs("l:repository:u/") == [main[4]]
        # An index entry's id is its newest record's.
        assert [e[0].decode() for e in c.call(
            "XRANGE", "l:subject:b", "-", "+")] == [main[5]]


def test_script_random_batches_match_a_model(redis):
    """The script against a model of what it must write, on random
    batches of two writers sharing one stream: records whose times step
    back and forth (late, recent, ahead of Redis's clock, none),
    index keys that alternate, repeat, change every record or are
    skipped ("" or the stream itself), batches of one up to AUDIT_BATCH
    and retries overlapping what Redis has.  After every call: each
    record is in the stream once, in order; each index it belongs to
    (subject, repository, first segment) got one entry for the batch,
    with the id of its newest record there and the refs of all of them
    in order; the late set holds a member for every batch with a record
    whose id is more than AUDIT_LATE_MS after its time, none for any
    other (the script reads ids only when the batch "could hold" one)."""
    import random
    rng = random.Random(20261202)
    late_ms = 10000
    rs = redis()
    with rs.client() as c:
        sha = c.call("SCRIPT", "LOAD", _audit_script()).decode()
        subjects = ["s:subject:a", "s:subject:b", "s:subject:c d", "",
                    "s"]
        repos = ["s:repository:t/x", "s:repository:t/y",
                 "s:repository:u", "s:repository:v/w/z", "", "s",
                 "s:repository:t/x/q"]
        marks = {"gw-a": 0, "gw-b": 0}
        runs = {"gw-a": 3, "gw-b": 9}
        want_idx = {}           # key -> [(entry id, refs)]
        want_late = set()
        want_rids = []
        seen = "0-0"
        nreq = 0

        def ms(eid):
            return int(eid.split("-")[0])

        for step in range(60):
            inst = rng.choice(["gw-a", "gw-b"])
            count = rng.choice([1, 2, 3, 7, 40, 128])
            # A retry of part of what Redis has, now and then.
            back = rng.choice([0, 0, 0, 1, 5]) if marks[inst] else 0
            back = min(back, marks[inst], count - 1)
            n = marks[inst] + 1 - back
            now = int(time.time() * 1000)
            pat = rng.choice(["same", "alt", "rand"])
            keys = ["s", "s:writers", "s:indexes"]
            argv = [inst, runs[inst], n, 0, 0, 1000]
            recs = []
            for k in range(count):
                if pat == "same":
                    ks, kr = subjects[0], repos[step % len(repos)]
                elif pat == "alt":
                    ks, kr = subjects[k % 2], repos[k % 2 + 2 * (k % 3 == 0)]
                else:
                    ks, kr = rng.choice(subjects), rng.choice(repos)
                t = rng.choice([now, now - 500, now - 3000, now - 20000,
                                now - 90000, now + 1500, None])
                tail = " %s %d %s;" % (rng.choice(["pull", "push"]),
                                       rng.choice([200, 404]),
                                       rng.choice(["allow", "deny"]))
                rid = "%s-%d-%d" % (inst, runs[inst], n + k)
                keys += [ks, kr]
                a = audit_record_args({
                    "time": "" if t is None else t,
                    "id": "%s/%d-%d" % (inst, runs[inst], n + k),
                    "request_id": rid, "subject": ks, "repository": kr})
                argv += [a[0], tail, a[2]]
                recs.append((t, ks, kr, tail, rid))
            got = c.call("EVALSHA", sha, len(keys), *(keys + argv))
            new = recs[back:]
            assert got == len(new), (step, got, len(new))
            marks[inst] = n + count - 1
            ents = c.call("XRANGE", "s", "(" + seen, "+")
            ids = [e.decode() for e, _ in ents]
            assert [d["request_id"] for _, d in entries_to_dicts(
                ents)] == [r[4] for r in new]
            seen = ids[-1]
            want_rids += [r[4] for r in new]
            lists = {}
            late = None
            for eid, (t, ks, kr, tail, rid) in zip(ids, new):
                mine = []
                if ks not in ("", "s"):
                    mine.append(ks)
                if kr not in ("", "s"):
                    mine.append(kr)
                    m = re.match(r"^([^/]+)/", kr[len("s:repository:"):])
                    if m:
                        mine.append("s:repository:" + m.group(1) + "/")
                for key in mine:
                    lists.setdefault(key, []).append(eid + tail)
                if t is not None and ms(eid) - t > late_ms and (
                        late is None or t < late):
                    late = t
            for key, refs in lists.items():
                want_idx.setdefault(key, []).append(
                    (refs[-1].split(" ")[0], "".join(refs)))
            if late is not None:
                want_late.add("%s %d" % (ids[-1], late))
            nreq += len(new)
            # The whole state after each call, not only what is new.
            for key, entries in want_idx.items():
                have = [(e.decode(), kv[1].decode()) for e, kv in
                        c.call("XRANGE", key, "-", "+")]
                assert have == entries, (step, key)
            assert {m.decode() for m in c.call(
                "ZRANGE", "s:late", 0, -1)} == want_late, step
        assert c.call("XLEN", "s") == nreq == len(want_rids)
        assert want_late and len(want_late) < 60, "both kinds of batch"
        assert set(k.decode() for k in c.call(
            "ZRANGE", "s:indexes", 0, -1)) == set(want_idx)


def _raw_request(port, head):
    """Send raw request bytes (what a hostile client may put in a
    request line or header), read the answer; its X-Request-Id."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(head)
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
    m = re.search(rb"\r\nX-Request-Id: ([^\r]+)\r\n", resp, re.I)
    assert m, resp[:300]
    return m.group(1).decode()


def test_hostile_fields_same_built_or_replayed(redis, start_registry,
                                               start_gateway, tmp_path):
    """The writer sends a record it built from the offsets audit_buf_add()
    kept, and one replayed from the spool from parsing it back: the same
    hostile requests (a user agent of every byte a header may carry and
    past its cap, a path and a query past AUDIT_VALUE_MAX, names at
    their limits, a framing error) made once with Redis up and once with
    it down must give the same records, and every one of them the index
    entries of its own subject and repository."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "h.spool"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1", default=True), instance_id="gw-h",
        audit=audit_cfg(rs.port, spool)))
    ua = bytes(b for b in range(0x20, 0x100) if b != 0x7f) + b"\t" * 3
    ua = ua * 2
    repo = "up1/" + "/".join(["a" * 60] * 3)
    tag = "t" * 128
    reqs = [
        b"GET /v2/up1/aud/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n"
        b"User-Agent: " + ua + b"\r\nConnection: close\r\n\r\n",
        b"GET /v2/" + repo.encode() + b"/manifests/" + tag.encode() +
        b"?q=" + b"%ff" * 400 + b" HTTP/1.1\r\nHost: x\r\nUser-Agent: " +
        b"\xff\t" * 10 + b"\r\nConnection: close\r\n\r\n",
        b"GET /v2/up1/aud/app/blobs/" + b"x" * 1500 +
        b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /v2/up1/aud/app/manifests/%01%7f%ff HTTP/1.1\r\nHost: x\r\n"
        b"User-Agent: \x80\r\nConnection: close\r\n\r\n",
        b"GET /v2/up1/" + b"b/" * 40 + b"c/tags/list HTTP/1.1\r\n"
        b"Host: x\r\nUser-Agent:\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ]
    built = [_raw_request(gw.port, h) for h in reqs]
    rs.wait_xlen(STREAM, len(reqs))
    rs.kill()
    spooled = [_raw_request(gw.port, h) for h in reqs]
    wait_for(lambda: spool_size(spool) > 0, timeout=30, what="spooled")
    rs.start()
    rs.wait_xlen(STREAM, 2 * len(reqs), timeout=60)
    recs = records(rs)
    assert_exactly(recs, built + spooled)
    by = {d["request_id"]: (eid, d) for eid, d in recs}
    vary = ("time", "id", "request_id", "duration_ms")
    for a, b in zip(built, spooled):
        da, db = by[a][1], by[b][1]
        assert {k: v for k, v in da.items() if k not in vary} == \
            {k: v for k, v in db.items() if k not in vary}, (a, b)
    assert len(by[built[0]][1]["user_agent"]) == 256
    assert set(by[built[0]][1]["user_agent"]) <= set(
        chr(c) for c in range(0x20, 0x7f))
    assert by[built[1]][1]["repository"] == repo
    assert by[built[1]][1]["reference"] == tag
    assert len(by[built[2]][1]["path"]) == 1024
    # Every record in its own subject's and repository's indexes.
    with rs.client() as c:
        for eid, d in recs:
            keys = [STREAM + ":subject:" + d["subject"]]
            if d["repository"]:
                keys.append(STREAM + ":repository:" + d["repository"])
            for key in keys:
                refs = index_refs(c.call("XRANGE", key, "-", "+"))
                assert eid in [r for r, _ in refs], (key, d)


# ---------------------------------------------------------------------------
# The spool as a ring (session 7): allocated once, never truncated; the
# replay walks from the head across the wrap; older spools are replaced.

def _ring_end(path):
    """The position after the last record from the head on."""
    fr = audit_spool.frames(str(path))
    if not fr:
        return audit_spool.header(str(path))[2]
    return fr[-1][0] + audit_spool.FRAME + len(fr[-1][1])


def _ring_offset(path):
    """Where the next record goes, as an offset into the ring's data."""
    return (_ring_end(path) - 4096) % audit_spool.header(str(path))[1]


def test_ring_replays_across_the_wrap_after_kill9(redis, start_registry,
                                                  start_gateway, tmp_path):
    """A ring of 60 KiB: while Redis keeps up the writer wraps early (a
    pad past a quarter of the ring, records of the next lap at its
    start).  Then Redis goes away and the records after it fill the ring
    to its end and past it (a frame split across the file's end); kill
    -9; the next start walks from the head across the wrap, stops at the
    first frame of the previous lap, and every answered request has
    exactly one record."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "ring.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-ring",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=65536))
    gw = start_gateway(cfg)
    size = audit_spool.header(str(spool))[1]
    assert size == 61440 and os.path.getsize(spool) == 65536
    # About 100 KiB, in steps Redis takes before the next (the ring
    # holds about 170 records: a link still starting would fill it).
    p = Pinger(gw)
    for i in range(30):
        p.many(10)
        rs.wait_xlen(STREAM, 10 * (i + 1))
    # Then to a little after a lap's start (records of ~350 bytes), so
    # that what Redis misses reaches the quarter with more than an
    # eighth not acknowledged (no early wrap) and the ring's end.
    for _ in range(200):
        if 2000 <= _ring_offset(spool) <= 5000:
            break
        p.many(1)
    else:
        pytest.fail("no lap start reached")
    rs.wait_xlen(STREAM, len(p.ids))
    rs.kill()
    for _ in range(200):                # the ring holds about 170
        p.many(1)
        offs = [4096 + (pos - 4096) % size + audit_spool.FRAME + len(pl)
                for pos, pl in audit_spool.frames(str(spool))]
        if offs and offs[-1] > 4096 + size:
            break                       # a frame split across the end
    else:
        pytest.fail("the ring's end was not reached: %r %r %s" % (
            offs[-5:], audit_spool.header(str(spool)),
            gw.log_text()[-1500:]))
    p.many(3)
    gw.proc.stop(sig=9)
    fr = audit_spool.frames(str(spool))
    assert audit_spool.request_ids(str(spool))[-60:] == p.ids[-60:]
    assert os.path.getsize(spool) == 65536
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, len(p.ids))
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="the head moved past the replay")
    assert_exactly(records(rs), p.ids)
    gw2.stop()
    assert "dropped=0" in gw2.log_text()
    assert os.path.getsize(spool) == 65536
    assert fr[-1][0] > 2 * size, "the ring lapped"


def test_ring_replays_across_an_early_wrap_after_kill9(
        redis, start_registry, start_gateway, tmp_path):
    """With Redis keeping up, the writer wraps early (a pad past a
    quarter of the ring, everything acknowledged); then Redis stalls and
    the records after the pad are not acknowledged; kill -9: the replay
    walks from the head in the header, before the pad, follows the pad
    to the next lap, and sends each record once."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "pad.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-pad",
                         audit=audit_cfg(rs.port, spool, fsync="never",
                                         spool_max_bytes=65536))
    gw = start_gateway(cfg)
    size = 61440
    p = Pinger(gw)
    last = 0
    for _ in range(300):
        p.many(1)
        rs.wait_xlen(STREAM, len(p.ids))
        off = _ring_offset(spool)
        if off < last:
            break                       # wrapped
        last = off
    else:
        pytest.fail("no wrap")
    assert size // 4 <= last < size // 2, "wrapped early, past a quarter"
    rs.call("CLIENT", "PAUSE", "60000", "ALL")
    p.many(8)
    gw.proc.stop(sig=9)
    assert audit_spool.request_ids(str(spool))[-8:] == p.ids[-8:]
    # The head as a crash may leave it (written now and then): at the
    # pad, where the lap before ended (its first records are overwritten
    # by the next lap's: an older head is never written back).
    lap = audit_spool.frames(str(spool))[-8][0]
    lap -= (lap - 4096) % size
    audit_spool.set_head(str(spool), lap - size + last)
    pads = []
    fr = audit_spool.frames(str(spool), pads)
    assert pads == [lap - size + last], "one pad, where the lap ended"
    assert fr[0][0] == lap, "the next record starts the next lap"
    assert os.path.getsize(spool) == 65536
    rs.kill()
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, len(p.ids))
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="the head moved past the replay")
    assert_exactly(records(rs), p.ids)
    gw2.stop()
    assert "dropped=0" in gw2.log_text()


def test_old_append_log_spool_is_replayed_once_then_a_ring(
        redis, start_registry, start_gateway, tmp_path):
    """A spool of the format before the ring (PCAUDSP1, PCR2 frames,
    no acknowledged mark) is copied into a ring at start, replayed once,
    and the file is the ring from then on; a ring of another size
    (spool_max_bytes changed) likewise."""
    reg = start_registry("up1")
    port = free_port()                  # Redis down: records spooled
    spool = tmp_path / "old.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-old",
                         audit=audit_cfg(port, spool))
    gw = start_gateway(cfg)
    p = Pinger(gw).many(40)
    gw.stop()
    payloads = [pl for _, pl in audit_spool.frames(str(spool))]
    assert len(payloads) == 40
    audit_spool.old_log(str(spool), payloads)
    rs = redis(port=port)
    gw = start_gateway(cfg)
    rs.wait_xlen(STREAM, 40)
    log = gw.log_text()
    assert "spool converted from=log records=40 dropped=0" in log
    assert audit_spool.header(str(spool)) is not None, "not a ring"
    # A ring of 1 GiB: allocated a step of 4 MiB at a time, as far as
    # records reach (while Redis keeps up, the writer wraps within it).
    assert os.path.getsize(spool) == 4 << 20
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="the replay released")
    p2 = Pinger(gw).many(5)
    rs.wait_xlen(STREAM, 45)
    gw.stop()
    gw = start_gateway(cfg)             # nothing replayed twice
    gw.stop()
    assert "records=0 " in gw.log_text()
    assert_exactly(records(rs), p.ids + p2.ids)
    # A ring of another size: spooled while Redis is down, then the
    # next start with a larger spool_max_bytes copies it over.
    rs.kill()
    gw = start_gateway(cfg)
    p3 = Pinger(gw).many(20)
    gw.stop()
    rs.start()
    cfg2 = gateway_config(upstream(reg, default=True), instance_id="gw-old",
                          audit=audit_cfg(port, spool,
                                          spool_max_bytes=1 << 20))
    gw = start_gateway(cfg2)
    rs.wait_xlen(STREAM, 65)
    assert "spool converted from=ring records=20 dropped=0" in \
        gw.log_text()
    assert os.path.getsize(spool) == 1 << 20
    gw.stop()
    assert_exactly(records(rs), p.ids + p2.ids + p3.ids)


@pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb")
def test_kill9_before_the_first_header_leaves_a_startable_spool(
        redis, start_registry, start_gateway, tmp_path):
    """kill -9 at the first start after the ring's first allocation and
    before its header is written (gdb stops the gateway at
    audit_new_run() and kills it): the file is 4 MiB of zeros.  The
    next start takes it as an empty ring (no record can be in it), not
    as a foreign file it refuses to start with."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "zero.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-z",
                         audit=audit_cfg(rs.port, spool))
    # What the harness writes (one process, its open policy), by hand:
    # this start runs under gdb.
    cfg["workers"] = 1
    cfg["listen"] = {"address": "127.0.0.1:%d" % free_port()}
    cfg["policy"] = OPEN_TEST_POLICY
    path = tmp_path / "gdb.json"
    path.write_text(json.dumps(cfg))
    out = ManagedProcess(
        [shutil.which("gdb"), "-q", "-nx", "-batch",
         "-ex", "break audit_new_run", "-ex", "run", "-ex", "kill",
         "--args", gateway_bin(), "serve", "-c", str(path)],
        str(tmp_path / "gdb.log"), env=safe_env(), name="gdb")
    wait_for(lambda: not out.alive(), timeout=60, what="gdb to end")
    assert "Breakpoint 1, audit_new_run" in \
        (tmp_path / "gdb.log").read_text()
    assert os.path.getsize(spool) == 4 << 20
    with open(spool, "rb") as f:
        assert f.read(4096) == bytes(4096), "a header was written"
    gw = start_gateway(cfg)
    assert "audit spool_header_missing" in gw.log_text()
    p = Pinger(gw).many(5)
    rs.wait_xlen(STREAM, 5)
    gw.stop()
    assert_exactly(records(rs), p.ids)
    assert audit_spool.header(str(spool)) is not None


def test_ring_converted_into_a_smaller_one_keeps_a_prefix(
        redis, start_registry, start_gateway, tmp_path):
    """Records spooled in a 1 GiB ring while Redis is down, then a start
    with a ring too small for them (spool_max_bytes 16 KiB): the copy
    keeps the oldest ones, in order, without a hole, and drops the rest
    (counted).  Review: a smaller record after one that did not fit was
    still copied, a hole in the run that Redis refused as a GAP and the
    writer reported as records Redis lost (a false alarm)."""
    reg = start_registry("up1")
    port = free_port()                  # Redis down: records spooled
    spool = tmp_path / "shrink.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-shr",
                         audit=audit_cfg(port, spool))
    gw = start_gateway(cfg)
    p = Pinger(gw)
    for i in range(30):
        # Records of about 1.3 KiB and 0.4 KiB, alternating.
        p.one("/v2/" + ("x" * 900 if i % 2 == 0 else "y"))
    gw.stop()
    assert len(audit_spool.frames(str(spool))) == 30
    rs = redis(port=port)
    cfg2 = gateway_config(upstream(reg, default=True), instance_id="gw-shr",
                          audit=audit_cfg(port, spool,
                                          spool_max_bytes=16384))
    gw = start_gateway(cfg2)
    m = re.search(r"spool converted from=ring records=(\d+) dropped=(\d+)",
                  gw.log_text())
    assert m, gw.log_text()
    kept, dropped = int(m.group(1)), int(m.group(2))
    assert kept + dropped == 30 and dropped > 0
    rs.wait_xlen(STREAM, kept)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="the replay released")
    p2 = Pinger(gw).many(3)
    rs.wait_xlen(STREAM, kept + 3)
    gw.stop()
    assert "redis_gap" not in gw.log_text()
    assert_exactly(records(rs), p.ids[:kept] + p2.ids)


def test_outage_right_after_an_early_wrap_loses_nothing(
        redis, start_registry, start_gateway, tmp_path):
    """Redis keeps up until the write position is past a quarter of the
    ring (the next append wraps early: a pad, then the next lap), then
    goes away: the records of the outage start the next lap and, more
    than a quarter of the ring of them, overwrite the pad.  Redis comes
    back: each of them is replayed once.  Review: the acknowledged
    position (and the replay, and the head) stayed at the pad, which
    the outage overwrote: the replay met a frame of the next lap there,
    called it corrupt and dropped everything spooled."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "padout.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-po",
                         audit=audit_cfg(rs.port, spool, fsync="never",
                                         spool_max_bytes=65536))
    gw = start_gateway(cfg)
    size = audit_spool.header(str(spool))[1]
    assert size == 61440
    p = Pinger(gw)
    last, rec = 0, 0
    for _ in range(300):
        p.many(1)
        rs.wait_xlen(STREAM, len(p.ids))
        off = _ring_offset(spool)
        if off > last:
            rec = max(rec, off - last)      # a record's bytes
        last = off
        if off >= size // 4:
            break
    else:
        pytest.fail("the quarter was not reached")
    # The head written (the tick): room for the early wrap.
    end = _ring_end(spool)
    wait_for(lambda: audit_spool.header(str(spool))[2] == end, timeout=10,
             what="the head at the last record")
    rs.kill()
    pad_off = _ring_offset(spool)
    # Records of the next lap past the pad's offset (the ring holds
    # about 170 of them).
    n = (pad_off + 2000) // rec + 5
    assert n * rec < size * 3 // 4
    p.many(n)
    rs.start()
    rs.wait_xlen(STREAM, len(p.ids), timeout=30)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="the replay released")
    gw.stop()
    assert "spool_corrupt" not in gw.log_text()
    assert "dropped=0" in gw.log_text()
    assert_exactly(records(rs), p.ids)


def test_restart_with_the_head_at_a_pad_keeps_the_whole_ring(
        redis, start_registry, start_gateway, tmp_path):
    """A kill -9 right after an early wrap (before the tick writes the
    head past it) leaves the header's head at the pad.  The next start,
    with Redis down, has the whole ring but the records after the pad
    for new records: 100 more (about 35 KiB of a 60 KiB ring) are all
    kept and replayed.  Review: the bytes from the pad to the lap's end
    counted as unacknowledged until Redis came back, and the ring held
    only the pad's offset (a quarter; 4 MiB of a 1 GiB ring): the rest
    was dropped."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "padhead.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-ph",
                         audit=audit_cfg(rs.port, spool, fsync="never",
                                         spool_max_bytes=65536))
    gw = start_gateway(cfg)
    size = 61440
    p = Pinger(gw)
    last = 0
    for _ in range(300):
        p.many(1)
        rs.wait_xlen(STREAM, len(p.ids))
        off = _ring_offset(spool)
        if off < last:
            break                       # wrapped
        last = off
    else:
        pytest.fail("no wrap")
    rs.call("CLIENT", "PAUSE", "60000", "ALL")
    p.many(3)
    gw.proc.stop(sig=9)
    lap = audit_spool.frames(str(spool))[-3][0]
    lap -= (lap - 4096) % size
    audit_spool.set_head(str(spool), lap - size + last)
    pads = []
    audit_spool.frames(str(spool), pads)
    assert pads == [lap - size + last]
    rs.kill()
    gw2 = start_gateway(cfg)            # Redis down
    p2 = Pinger(gw2).many(100)
    rs.start()
    rs.wait_xlen(STREAM, len(p.ids) + 100, timeout=30)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="the replay released")
    gw2.stop()
    assert "dropped=0" in gw2.log_text()
    assert_exactly(records(rs), p.ids + p2.ids)


def test_outage_log_counts_the_bytes_spooled_not_the_write_position(
        redis, start_registry, start_gateway, tmp_path):
    """When Redis goes away with records in flight, the gateway logs how
    many it spooled and the bytes they take ("audit spool records=N
    bytes=B").  B is what the ring holds unacknowledged (what the
    spool_bytes metric says), not the ring's 64-bit write position.
    Review: the line printed the position, which starts at 4096 and
    grows by every record ever written, lap after lap (after a wrap more
    than the whole ring)."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "logbytes.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-lb",
                         audit=audit_cfg(rs.port, spool, fsync="never",
                                         spool_max_bytes=65536))
    gw = start_gateway(cfg)
    size = audit_spool.header(str(spool))[1]
    p = Pinger(gw)
    for _ in range(300):                # past the ring's first lap
        p.many(1)
        rs.wait_xlen(STREAM, len(p.ids))
        if _ring_end(spool) > 4096 + size:
            break
    else:
        pytest.fail("no wrap")
    rs.call("CLIENT", "PAUSE", "60000", "ALL")
    p.many(3)
    rs.kill()
    wait_for(lambda: re.search(r"audit spool records=3 bytes=\d+",
                               gw.log_text()), timeout=30,
             what="the outage's spool line")
    got = int(re.search(r"audit spool records=3 bytes=(\d+)",
                        gw.log_text()).group(1))
    # The three records (a stale head may name acknowledged ones too).
    pending = sum(audit_spool.FRAME + len(pl)
                  for _, pl in audit_spool.frames(str(spool))[-3:])
    assert 0 < pending < 3 * 1024
    assert got == pending, (got, pending)
    rs.start()
    rs.wait_xlen(STREAM, len(p.ids), timeout=30)
    gw.stop()
    assert_exactly(records(rs), p.ids)


# Run by gdb around the gateway: once the file ARM exists, the next
# pwrite of the ring's header (40 bytes at offset 0 of the spool's
# descriptor) fails (its descriptor made -1: EBADF), once; "failed"
# written to OUT then.  A test double for a disk that refuses one write.
HDR_FAIL_GDB = r"""
import gdb, os
ARM, OUT = os.environ["HDR_ARM"], os.environ["HDR_OUT"]
for c in ("set pagination off", "set confirm off",
          "set startup-with-shell off"):
    gdb.execute(c)
for sig in ("SIGPIPE", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGCHLD",
            "SIGINT"):
    gdb.execute("handle %s nostop noprint pass" % sig)
gdb.execute("catch syscall pwrite64")
fired = False
gdb.execute("run", to_string=True)
while True:
    try:
        # At a system call's entry stop, rax holds -ENOSYS.
        if not fired and int(gdb.parse_and_eval("$rax")) == -38 and \
                int(gdb.parse_and_eval("$r10")) == 0 and \
                int(gdb.parse_and_eval("$rdx")) == 40 and \
                os.path.exists(ARM):
            gdb.execute("set $rdi = -1")
            fired = True
            with open(OUT, "a") as f:
                f.write("failed\n")
        gdb.execute("continue", to_string=True)
    except gdb.error:
        break
"""


@pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb")
def test_a_failed_head_write_is_not_taken_for_the_head_on_disk(
        redis, start_registry, start_gateway, tmp_path, monkeypatch):
    """The tick's write of the ring's head fails once (gdb makes the
    pwrite fail: a disk refusing a write); Redis then stalls and the
    records of the next 60 KiB fill the ring (fsync never).  Before the
    appends reuse the bytes of the head on disk, that head is moved
    (ring_room()); a kill -9 then, and the next start replays every
    record not acknowledged.  Review: the writer took the head it had
    failed to write for the one on disk (and with fsync on, for the one
    synced), let the appends overwrite the head's record, and the
    replay after the kill -9 found a frame of the next lap at the head:
    every record of the stall was lost."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "hdrfail.spool"
    arm, out = tmp_path / "arm", tmp_path / "gdb.out"
    script = tmp_path / "hdrfail.py"
    script.write_text(HDR_FAIL_GDB)
    wrap = tmp_path / "portcullis-gdb"
    wrap.write_text("#!/bin/sh\nHDR_ARM=%s HDR_OUT=%s exec %s -q -nx "
                    "-batch -x %s --args %s \"$@\"\n" % (
                        arm, out, shutil.which("gdb"), script,
                        os.path.abspath(gateway_bin())))
    wrap.chmod(0o700)
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-hf",
                         audit=audit_cfg(rs.port, spool, fsync="never",
                                         spool_max_bytes=65536))
    monkeypatch.setenv("PORTCULLIS_BIN", str(wrap))
    gw = start_gateway(cfg, start_timeout=60)
    monkeypatch.delenv("PORTCULLIS_BIN")
    size = audit_spool.header(str(spool))[1]
    p = Pinger(gw)
    p.many(1)
    rs.wait_xlen(STREAM, 1)
    h0 = _ring_end(spool)
    wait_for(lambda: audit_spool.header(str(spool))[2] == h0, timeout=10,
             what="the head at the first record")
    small = h0 - 4096                       # a record's bytes
    arm.write_text("")
    # A long record next (its path): the head stays at its start on
    # disk, and the stall overwrites its frame with room to spare.
    p.one("/v2/" + "a" * 2000)
    rs.wait_xlen(STREAM, 2)
    wait_for(lambda: out.exists() and "failed" in out.read_text(),
             timeout=30, what="the failed head write")
    big = _ring_end(spool) - h0
    assert big > 3 * small
    rs.call("CLIENT", "PAUSE", "120000", "ALL")
    # From the long record's end past its start + a lap, within the
    # ring's room (records differ by a byte or two).
    n = (size - big // 2) // small
    assert n * (small + 2) <= size and n * small > size - big
    p.many(n)
    stalled = p.ids[2:]
    m = re.search(r"server start .* pid=(\d+)", gw.log_text())
    assert m is not None
    os.kill(int(m.group(1)), signal.SIGKILL)
    gw.stop()
    assert audit_spool.request_ids(str(spool))[-len(stalled):] == \
        stalled, "the head on disk no longer starts the records"
    rs.kill()                           # the pause with it
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, len(p.ids), timeout=60)
    gw2.stop()
    assert_exactly(records(rs), p.ids)
