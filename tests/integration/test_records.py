"""Records and answers that tell the truth (issue 13): every response
carries its request id, and the log line and the audit record of each
request agree with it and with each other on id, status, bytes and
duration -- framing errors answered before a request object exists, a
client that leaves a blob still filling, an upstream 5xx behind the
cache, the gateway's own errors on an ns= request, reject mode.

Real parts: docker-registry 2.8 and redis-server.  The named test doubles
(lib/lying_upstream.py, lib/hostile_upstream.py) stand in only for an
upstream that stalls half way or answers 5xx on demand."""

import json
import os
import re
import socket

import pytest

from lib import rawhttp
from lib.cache import blob_path, cache_cfg, tmp_files
from lib.gateway import gateway_config, upstream
from lib.hostile_upstream import HostileUpstream
from lib.lying_upstream import LyingUpstream
from lib.redis import entries_to_dicts
from lib.util import free_port, wait_for

STREAM = "portcullis:audit"
API_VERSION = "registry/2.0"
MIB = 1 << 20


@pytest.fixture
def redis(start_redis):
    return start_redis


def audit_cfg(port, spool, **kw):
    a = {"redis": "127.0.0.1:%d" % port, "spool_file": str(spool),
         "admin_addresses": ["127.0.0.1"], "timeout": 2}
    a.update(kw)
    return a


def records(rs):
    with rs.client() as c:
        return [d for _, d in entries_to_dicts(
            c.call("XRANGE", STREAM, "-", "+"))]


def record_of(rs, rid):
    """The one record with request id `rid`, once it is in the stream."""
    found = []

    def there():
        found[:] = [d for d in records(rs) if d["request_id"] == rid]
        return found
    wait_for(there, timeout=30, what="record of %s" % rid)
    assert len(found) == 1, found
    return found[0]


LOG_FIELD = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")


def log_line_of(gw, rid):
    """The fields of the one log line that ends request `rid`."""
    lines = []

    def there():
        lines[:] = [ln for ln in gw.log_text().splitlines()
                    if re.search(r"\bid=%s\b" % rid, ln) and
                    (" req done " in ln or " req framing_error " in ln or
                     " req header_timeout " in ln)]
        return lines
    wait_for(there, timeout=30, what="log line of %s" % rid)
    assert len(lines) == 1, lines
    return dict(LOG_FIELD.findall(lines[0]))


def assert_agree(gw, rs, rid, status, body_len):
    """Log line and record of `rid`: same status, bytes and duration."""
    rec = record_of(rs, rid)
    log = log_line_of(gw, rid)
    assert rec["status"] == str(status), rec
    assert log["status"] == str(status), log
    assert rec["bytes_out"] == log["out"] == str(body_len), (rec, log)
    assert rec["duration_ms"] == log["ms"], (rec, log)
    return rec, log


def raw_exchange(gw, data, timeout=15):
    """Send `data`, read one answer and wait for the close."""
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=timeout) as c:
        c.send(data)
        r = c.read_response(timeout=timeout)
        assert c.wait_closed(timeout=timeout)
    return r


FRAMING = [
    ("cl_te", 400, lambda gw: rawhttp.build(
        "POST", "/v2/", [("Content-Length", "5"),
                         ("Transfer-Encoding", "chunked")],
        b"0\r\n\r\n", host=gw.host)),
    ("dup_cl", 400, lambda gw: rawhttp.build(
        "POST", "/v2/", [("Content-Length", "1"), ("Content-Length", "2")],
        b"xx", host=gw.host)),
    ("obs_fold", 400, lambda gw: rawhttp.build(
        "GET", "/v2/", [b"X-A: b", b" folded"], host=gw.host)),
    ("431", 431, lambda gw: rawhttp.build(
        "GET", "/v2/", [("X-Big", "b" * 3000)], host=gw.host)),
    ("414", 414, lambda gw: rawhttp.build(
        "GET", "/v2/" + "a" * 600, host=gw.host)),
]


@pytest.fixture
def audited(redis, start_registry, start_gateway, tmp_path):
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        limits={"header_bytes": 2048, "uri_bytes": 512},
        timeouts={"header": 1.5, "upstream_connect": 2,
                  "upstream_response": 10},
        audit=audit_cfg(rs.port, tmp_path / "a.spool")))
    return gw, rs


@pytest.mark.parametrize("name,status,make", FRAMING,
                         ids=[f[0] for f in FRAMING])
def test_framing_error_answer_log_and_record_agree(audited, name, status,
                                                   make):
    gw, rs = audited
    r = raw_exchange(gw, make(gw))
    assert r.status == status, r
    rid = r.header("X-Request-Id")
    assert rid and re.fullmatch(r"[0-9a-f]{16}", rid), r.headers
    assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
    rec, _ = assert_agree(gw, rs, rid, status, len(r.body))
    assert int(rec["bytes_out"]) > 0


def test_header_timeout_408_has_id_and_real_duration(audited):
    gw, rs = audited
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=15) as c:
        c.send(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")    # never finished
        r = c.read_response(timeout=15)
    assert r.status == 408, r
    rid = r.header("X-Request-Id")
    assert rid, r.headers
    rec, _ = assert_agree(gw, rs, rid, 408, 0)
    # timeouts.header is 1.5 s: the record says how long it took.
    assert int(rec["duration_ms"]) >= 1400, rec


def test_ordinary_request_log_and_record_agree(audited):
    gw, rs = audited
    r = rawhttp.request("127.0.0.1", gw.port, rawhttp.build(
        "GET", "/v2/nothing/manifests/latest", host=gw.host))
    assert r.status == 404
    assert_agree(gw, rs, r.header("X-Request-Id"), 404, len(r.body))


# --- a client that leaves while its blob is still filling --------------

def tmp_bytes(cdir):
    n = 0
    for f in tmp_files(cdir):
        try:
            n += os.path.getsize(os.path.join(str(cdir), "tmp", f))
        except FileNotFoundError:
            pass
    return n


def test_client_leaving_a_filling_blob_is_499_with_partial_bytes(
        redis, start_gateway, tmp_path):
    rs = redis()
    liar = LyingUpstream()
    try:
        size = 4 * MIB
        data = os.urandom(size)
        d = liar.add_blob(data, mode="stall", stall_at=int(size * 0.95))
        cdir = tmp_path / "c"
        gw = start_gateway(gateway_config(
            {"name": "liar", "url": liar.url, "prefix": "liar",
             "hosts": [liar.host]},
            cache=cache_cfg(cdir, fill_finish_fraction=0.9),
            audit=audit_cfg(rs.port, tmp_path / "a.spool")))
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        s.sendall(("GET /v2/liar/app/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n"
                   % (d, gw.host)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
        head, got = buf.split(b"\r\n\r\n", 1)
        assert b" 200 " in head.split(b"\r\n")[0]
        rid = re.search(rb"X-Request-Id: (\w+)", head).group(1).decode()
        while len(got) < MIB:
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        # Leave once the fill is at its stall, nearly done: it goes on.
        wait_for(lambda: tmp_bytes(cdir) >= int(size * 0.95), timeout=30,
                 what="fill at the stall")
        s.close()
        rec = record_of(rs, rid)
        log = log_line_of(gw, rid)
        assert rec["status"] == "499" and log["status"] == "499", (rec, log)
        assert rec["bytes_out"] == log["out"], (rec, log)
        assert MIB <= int(rec["bytes_out"]) < size, rec
        assert rec["cache"] in ("miss", "coalesced"), rec
        # The fill goes on (nearly done) and publishes.
        liar.release(d)
        wait_for(lambda: os.path.exists(blob_path(cdir, d)), timeout=30,
                 what="fill published after its client left")
    finally:
        liar.stop()


# --- upstream 5xx behind the cache -------------------------------------

@pytest.mark.parametrize("kind", ["blob", "manifest"])
def test_upstream_5xx_behind_cache_is_oci_502(start_gateway, tmp_path, kind):
    up = HostileUpstream()
    try:
        ref = "sha256:" + "ab" * 32
        path = "/v2/app/%ss/%s" % (kind, ref)
        up.route("GET", path, 503, {"Content-Type": "text/plain"},
                 b"backend on fire\n")
        gw = start_gateway(gateway_config(
            {"name": "h", "url": up.url, "prefix": "h", "hosts": []},
            cache=cache_cfg(tmp_path / "c")))
        r = rawhttp.request("127.0.0.1", gw.port, rawhttp.build(
            "GET", "/v2/h/app/%ss/%s" % (kind, ref), host=gw.host))
        assert r.status == 502, (r.status, r.body)
        assert r.header("Content-Type").startswith("application/json")
        err = r.json()["errors"][0]
        assert err["code"] == "UNAVAILABLE", err
        assert "503" in json.dumps(err.get("detail", "")), err
        assert b"on fire" not in r.body
    finally:
        up.stop()


# --- the gateway's own errors on an ns= request ------------------------

def test_gateway_errors_on_ns_requests_carry_oci_namespace(start_registry,
                                                           start_gateway):
    reg = start_registry("up1")
    dead = free_port()
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        {"name": "down", "url": "http://127.0.0.1:%d" % dead,
         "hosts": ["down.example:5000"]}))
    for target, status in (
            # the router's own answer, before any upstream is picked
            ("/v2/app/manifests/-bad?ns=down.example:5000", 404),
            # the upstream is unreachable: the gateway's 502
            ("/v2/app/manifests/v1?ns=down.example:5000", 502),
            # no upstream serves it
            ("/v2/app/manifests/v1?ns=nowhere.example", 404)):
        r = rawhttp.request("127.0.0.1", gw.port, rawhttp.build(
            "GET", target, host=gw.host))
        assert r.status == status, (target, r.status, r.body)
        assert r.header("OCI-Namespace") == target.split("ns=")[1], \
            (target, r.headers)
        assert r.header("X-Request-Id"), r.headers


# --- reject mode --------------------------------------------------------

def test_reject_mode_503_on_base_carries_api_version(start_registry,
                                                     start_gateway,
                                                     tmp_path):
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(free_port(), tmp_path / "r.spool",
                        spool_max_bytes=16384, on_failure="reject")))
    last = None
    for _ in range(300):
        last = rawhttp.request("127.0.0.1", gw.port, rawhttp.build(
            "GET", "/v2/", host=gw.host))
        if last.status == 503:
            break
    assert last.status == 503, last
    assert last.header("Docker-Distribution-Api-Version") == API_VERSION, \
        last.headers
    assert last.header("X-Request-Id")
    assert last.json()["errors"][0]["code"] == "UNAVAILABLE"


# --- a malformed chunked request body ----------------------------------

@pytest.mark.parametrize("body", [
    b"zz\r\nhello\r\n0\r\n\r\n",                 # bad chunk size
    b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",  # bad trailer
], ids=["bad-size", "bad-trailer"])
@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_malformed_chunked_body_is_400_and_recorded(audited, body, method):
    gw, rs = audited
    r = rawhttp.request("127.0.0.1", gw.port, rawhttp.build(
        "POST", "/v2/chunky/blobs/uploads/", [("Content-Length", "0")],
        host=gw.host))
    assert r.status == 202, r
    target = (r.header("Location").split(gw.host, 1)[-1]
              if method == "PATCH" else "/v2/chunky/blobs/uploads/")
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=15) as c:
        c.send(rawhttp.build(method, target, [
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked")], body, host=gw.host))
        resp = c.read_response(timeout=15)
        assert c.wait_closed(timeout=15)
    assert resp.status == 400, resp
    assert resp.json()["errors"][0]["code"] == "UNSUPPORTED"
    rid = resp.header("X-Request-Id")
    rec, log = assert_agree(gw, rs, rid, 400, len(resp.body))
    assert rec["error"] == "UNSUPPORTED" and \
        log["error"] == "ERR_BAD_REQUEST", (rec, log)


# --- the upstream's own OCI error code in the record -------------------

def test_record_names_the_upstreams_oci_error(redis, start_registry,
                                              start_gateway, tmp_path):
    rs = redis()
    reg = start_registry("up1")
    up = HostileUpstream()
    try:
        big = json.dumps({"errors": [{"code": "DENIED", "message": "no",
                                      "detail": "x" * 5000}]}).encode()
        small = b'{"errors":[{"code":"DENIED","message":"not yours"}]}'
        up.route("GET", "/v2/app/manifests/big", 403,
                 {"Content-Type": "application/json"}, big)
        up.route("GET", "/v2/app/manifests/small", 403,
                 {"Content-Type": "application/json"}, small)
        up.route("GET", "/v2/app/manifests/odd", 403,
                 {"Content-Type": "application/json"},
                 b'{"errors":[{"code":"no such\\nthing"}]}')
        gw = start_gateway(gateway_config(
            upstream(reg, prefix="up1", default=True),
            {"name": "h", "url": up.url, "prefix": "h", "hosts": []},
            audit=audit_cfg(rs.port, tmp_path / "a.spool")))
        cases = [("/v2/up1/app/manifests/nope", 404, "MANIFEST_UNKNOWN"),
                 ("/v2/up1/app/blobs/sha256:" + "0" * 64, 404,
                  "BLOB_UNKNOWN"),
                 ("/v2/h/app/manifests/small", 403, "DENIED"),
                 ("/v2/h/app/manifests/big", 403, ""),   # over 4 KiB
                 ("/v2/h/app/manifests/odd", 403, "")]   # not a code
        for target, status, code in cases:
            r = rawhttp.request("127.0.0.1", gw.port, rawhttp.build(
                "GET", target, [("Accept", "application/vnd.oci.image."
                                 "manifest.v1+json")], host=gw.host))
            assert r.status == status, (target, r.status, r.body[:200])
            rec, log = assert_agree(gw, rs, r.header("X-Request-Id"),
                                    status, len(r.body))
            assert rec["error"] == code, (target, rec)
            assert log.get("up_error", "") == code, (target, log)
    finally:
        up.stop()


# --- /admin/audit: a larger limit is cut to 1,000 ----------------------

def test_admin_audit_limit_is_capped_not_refused(redis, start_registry,
                                                 start_gateway, tmp_path,
                                                 http):
    from lib.gateway import gateway_bin
    from lib.util import run
    rs = redis()
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(
        upstream(reg, default=True),
        audit=audit_cfg(rs.port, tmp_path / "a.spool")))
    out = run([gateway_bin(), "audit", "generate", "-c", gw.config_path,
               "--count", "1200"], timeout=120).stdout
    assert "generated 1200 records" in out
    r = http.get(gw.url + "/admin/audit", params={"limit": 5000},
                 timeout=30)
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["records"]) == 1000 and page["next"], len(
        page["records"])
    r = http.get(gw.url + "/admin/audit", timeout=30,
                 params={"limit": 5000, "cursor": page["next"]})
    assert r.status_code == 200 and len(r.json()["records"]) >= 200


# --- the README's word on ranges of cached manifests -------------------

def test_cached_manifest_hit_ignores_range_as_documented(start_registry,
                                                         start_gateway,
                                                         tmp_path, http):
    from test_protocol import MT, push_image
    reg = start_registry("up1")
    d = push_image(reg, "rg/app", ["v1"])
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      cache=cache_cfg(tmp_path / "c")))
    url = "%s/v2/rg/app/manifests/%s" % (gw.url, d)
    whole = http.get(url, headers={"Accept": MT}, timeout=30)
    assert whole.status_code == 200
    for _ in range(2):      # a miss, then a hit: the same answer
        r = http.get(url, headers={"Accept": MT, "Range": "bytes=0-9"},
                     timeout=30)
        assert r.status_code == 200 and r.content == whole.content
        assert "Accept-Ranges" not in r.headers
        assert "Content-Range" not in r.headers
