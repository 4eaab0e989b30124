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
import socket
import time
import urllib.parse

import pytest

from lib.gateway import gateway_bin, gateway_config, upstream
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
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


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
    assert spool_size(spool) > 32, "nothing was spooled"
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
    wait_for(lambda: spool_size(spool) == 32, timeout=30,
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
    assert spool_size(spool) > 32
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
    with open(spool, "ab") as f:
        f.write(b"1RCP\x40\x00\x00\x00\x12\x34")
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, 60)
    assert_exactly(records(rs), p.ids)
    assert "torn_tail bytes=10" in gw2.log_text()


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
    wait_for(lambda: spool_size(spool) == 32, what="spool replayed")
    gw2.stop()
    shutil.copy(saved, spool)       # as if the truncation never happened
    gw3 = start_gateway(cfg)
    wait_for(lambda: spool_size(spool) == 32, what="spool replayed again")
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
    assert spool_size(spool) <= 16384
    # Redis comes back: everything served is recorded, once, in order.
    rs = redis(port=port)
    wait_for(lambda: spool_size(spool) == 32, timeout=30,
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
    wait_for(lambda: spool_size(spool) == 32, timeout=30,
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
