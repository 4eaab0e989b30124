"""Hostile and sloppy clients (issue 7, points 9-12 and 14): bytes outside
RFC 3986 in the request target, bare LF line ends, LF in a chunk extension,
connection limits, oversize manifests, protocol details on the way back
(204, 100-continue to HTTP/1.0, Connection-named fields) and the lingering
close after an error.

A real docker-registry is the upstream and the witness (its access log,
its stored manifests and upload offsets) wherever it can play the part;
the lying upstream TEST DOUBLE (lib/lying_upstream.py) only where a real
registry never misbehaves that way (a 204 with Content-Length, fields
named in Connection).  Requests go out byte-exact over lib/rawhttp.py.
"""

import copy
import hashlib
import json
import os

import pytest

from lib import rawhttp
from lib.gateway import OPEN_TEST_POLICY, gateway_config
from lib.lying_upstream import LyingUpstream
from lib.util import pid_alive, wait_for

API_VERSION = "registry/2.0"
TIMEOUT = 30.0
MANIFEST_LIMIT = 65536
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gw_config(reg_url, limits=None, timeouts=None, **extra):
    cfg = gateway_config({"name": "up1", "url": reg_url, "default": True},
                         **extra)
    cfg["limits"] = {"manifest_bytes": MANIFEST_LIMIT}
    cfg["limits"].update(limits or {})
    cfg["timeouts"].update(timeouts or {})
    return cfg


@pytest.fixture(scope="module")
def reg(start_registry_module):
    return start_registry_module(name="up1")


@pytest.fixture(scope="module")
def gw(reg, start_gateway_module):
    return start_gateway_module(gw_config(reg.url))


def send(gw, data, timeout=TIMEOUT, source=None):
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=timeout,
                         source=source) as c:
        c.send(data)
        return c.read_response(method=data.split(b" ", 1)[0].decode())


def assert_oci_error(r, status, code):
    assert r.status == status, (r.status, r.headers, r.body[:300])
    assert r.header("Content-Type", "").startswith("application/json"), \
        r.headers
    assert code in r.error_codes(), r.body[:300]


def upstream_saw(reg, mark, repo):
    """Requests for /v2/<repo>/ in the registry's access log since mark."""
    return [e for e in reg.access_log(since=mark)
            if e["path"].startswith("/v2/%s/" % repo)]


def assert_serves(gw):
    assert pid_alive(gw.pid), gw.log_text()[-3000:]
    r = send(gw, rawhttp.build("GET", "/v2/", host=gw.host))
    assert r.status == 200, r.status


def push_blob(reg, repo, data):
    """Upload `data` straight to the registry (no gateway); its digest."""
    d = sha256(data)
    r = reg.http.post("%s/v2/%s/blobs/uploads/" % (reg.url, repo),
                      timeout=TIMEOUT)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = reg.url + loc
    r = reg.http.put(loc, params={"digest": d}, data=data,
                     headers={"Content-Type": "application/octet-stream"},
                     timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    return d


def big_manifest(reg, repo, size):
    """A valid OCI image manifest of about `size` bytes (padded with an
    annotation) whose config blob the registry holds."""
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":' \
        b'{"type":"layers","diff_ids":[]}}'
    cd = push_blob(reg, repo, cfg)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": cd,
                      "size": len(cfg)},
           "layers": [], "annotations": {"pad": ""}}
    base = len(json.dumps(doc).encode())
    doc["annotations"]["pad"] = "p" * max(0, size - base)
    return json.dumps(doc).encode()


def registry_has_manifest(reg, repo, ref):
    return reg.get_manifest(repo, ref).status_code == 200


# ---------------------------------------------------------------------------
# Point 9: request targets outside RFC 3986, bare LF, LF in a chunk ext.

@pytest.mark.parametrize("query", [
    b"n=1\tx",          # raw TAB
    b"n=1\x0cx",        # raw FF
    b"n=\xc3\xa9",      # obs-text (UTF-8 bytes >= 0x80)
    b"last=a\"b",       # '"' is no RFC 3986 character
    b"n=%zz",           # a broken percent escape
    b"n=1#frag",        # a fragment: never part of a request target
], ids=["tab", "ff", "obs-text", "dquote", "bad-pct", "fragment"])
def test_target_bytes_outside_rfc3986_are_refused(reg, gw, query):
    repo = "bq" + hashlib.sha1(query).hexdigest()[:8]
    mark = reg.mark()
    r = send(gw, b"GET /v2/" + repo.encode() + b"/tags/list?" + query +
             b" HTTP/1.1\r\nHost: " + gw.host.encode() + b"\r\n\r\n")
    assert_oci_error(r, 400, "UNSUPPORTED")
    assert r.header("Docker-Distribution-Api-Version") == API_VERSION
    assert upstream_saw(reg, mark, repo) == []
    # Nor do the raw bytes reach the gateway's own log.
    with open(gw.log_path, "rb") as f:
        assert query not in f.read()
    assert_serves(gw)


@pytest.mark.parametrize("head", [
    b"GET /v2/%s/tags/list HTTP/1.1\nHost: h\n\n",
    b"GET /v2/%s/tags/list HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n",
    b"GET /v2/%s/tags/list HTTP/1.1\r\nHost: h\r\n\n",
], ids=["all-lf", "lf-in-fields", "lf-ends-head"])
def test_bare_lf_line_ends_are_refused(reg, gw, head):
    repo = "lf" + hashlib.sha1(head).hexdigest()[:8]
    mark = reg.mark()
    r = send(gw, head % repo.encode())
    assert_oci_error(r, 400, "UNSUPPORTED")
    assert upstream_saw(reg, mark, repo) == []
    assert_serves(gw)


def upload_offset(reg, path):
    """Bytes the registry holds for the upload at `path` (GET status)."""
    r = reg.http.get(reg.url + path, timeout=TIMEOUT)
    assert r.status_code == 204, (r.status_code, r.text)
    return int(r.headers["Range"].split("-")[1]) + 1 \
        if r.headers["Range"] != "0-0" else 0


@pytest.mark.parametrize("chunks", [
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",          # LF inside the extension
    b"5\nhello\r\n0\r\n\r\n",                   # bare LF after the size
    b"5\r\nhelloXY0\r\n\r\n",                   # no CRLF after the data
], ids=["lf-in-ext", "bare-lf-size", "no-crlf-after-data"])
def test_bad_chunk_lines_never_reach_the_upload(reg, gw, chunks):
    r = reg.http.post("%s/v2/chunky/blobs/uploads/" % reg.url,
                      timeout=TIMEOUT)
    assert r.status_code == 202
    path = r.headers["Location"].split(reg.host, 1)[-1]
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("PATCH", path, [
            ("Content-Type", "application/octet-stream"),
            ("Transfer-Encoding", "chunked")], chunks, host=gw.host))
        try:
            resp = c.read_response()
        except rawhttp.PeerClosed:
            resp = None         # closed without an answer: also safe
        if resp is not None:
            assert_oci_error(resp, 400, "UNSUPPORTED")
        assert c.wait_closed(TIMEOUT)
    # The upstream never got a byte of the body.
    assert upload_offset(reg, path) == 0
    assert_serves(gw)


# ---------------------------------------------------------------------------
# Point 10: connection limits.

def test_max_connections_waits_in_backlog(reg, start_gateway):
    gw = start_gateway(gw_config(reg.url, limits={"max_connections": 2}))
    gw.http.close()             # the harness's keep-alive health check
    get = rawhttp.build("GET", "/v2/", host=gw.host)
    c1 = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT)
    c2 = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT)
    c3 = None
    try:
        for c in (c1, c2):
            c.send(get)
            assert c.read_response().status == 200
        # Both are open and kept alive: the third waits in the backlog.
        c3 = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT)
        c3.send(get)
        assert c3.is_open_now(), "third connection was closed or answered"
        assert c1.is_open_now() and c2.is_open_now()
        c1.close()
        r = c3.read_response()          # served once a slot is free
        assert r.status == 200
        c3.send(get)
        assert c3.read_response().status == 200
    finally:
        for c in (c1, c2, c3):
            if c is not None:
                c.close()
    assert "pause_accept" in gw.log_text()
    assert_serves(gw)


def test_out_of_descriptors_pauses_accept(reg, start_gateway):
    # Below max_connections the descriptor limit can bite first (Debian's
    # default soft limit is 1024, max_connections 4096).  accept(2) then
    # fails with EMFILE and leaves the connection in the backlog: the
    # listener must pause, not spin logging "accept_error" (it wrote
    # hundreds of thousands of lines a second), and resume once a
    # connection ends.
    import resource
    gw = start_gateway(gw_config(reg.url))
    gw.http.close()             # the harness's keep-alive health check
    resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (32, 32))
    conns = []
    try:
        for _ in range(40):
            conns.append(rawhttp.RawConn("127.0.0.1", gw.port,
                                         timeout=TIMEOUT,
                                         source="127.0.0.2"))
        wait_for(lambda: "accept_error" in gw.log_text(), timeout=TIMEOUT,
                 what="accept to fail with EMFILE")
        # Free every accepted one: the backlog must be served.
        for c in conns[:-1]:
            c.close()
        last = conns[-1]
        last.send(rawhttp.build("GET", "/v2/", host=gw.host))
        assert last.read_response().status == 200
    finally:
        for c in conns:
            c.close()
    n = gw.log_text().count("accept_error")
    assert n < 100, "%d accept_error lines: accept spins" % n
    assert_serves(gw)


def _soft_nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no Max open files line")


@pytest.mark.parametrize("hard", [10000, 300])
def test_descriptor_limit_raised_or_warned_at_start(reg, start_gateway,
                                                    tmp_path, monkeypatch,
                                                    hard):
    # max_connections 1000 wants about 2064 descriptors.  The gateway
    # raises its soft limit toward that, up to the hard limit, and says
    # at start when the hard limit keeps it below.  (Before: a soft
    # limit of 256 stayed 256, silently.)  prlimit(1) execs the gateway
    # with the limits, so the PID is the gateway's.
    from lib.gateway import gateway_bin
    wrapper = tmp_path / "portcullis-limited"
    wrapper.write_text("#!/bin/sh\nexec prlimit --nofile=256:%d %s \"$@\"\n"
                       % (hard, gateway_bin()))
    wrapper.chmod(0o755)
    monkeypatch.setenv("PORTCULLIS_BIN", str(wrapper))
    gw = start_gateway(gw_config(reg.url, limits={"max_connections": 1000}))
    soft = _soft_nofile(gw.pid)
    if hard >= 2064:
        assert soft >= 2064, soft
        assert "fd_limit" not in gw.log_text()
    else:
        assert soft == hard, soft
        assert "fd_limit open_files=300" in gw.log_text()
    assert_serves(gw)


def test_descriptor_limit_follows_a_reload(reg, start_gateway, tmp_path,
                                          monkeypatch):
    # max_connections is reloadable: a reload that raises it raises the
    # soft descriptor limit too (up to the hard limit), as a start with
    # it would.  Fails before this change: the soft limit stayed 256
    # after max_connections went from 40 to 1000 (wanting 4064: four
    # descriptors a connection with buffers.splice, server_fd_limit).
    import signal
    from lib.gateway import gateway_bin
    wrapper = tmp_path / "portcullis-limited"
    wrapper.write_text("#!/bin/sh\nexec prlimit --nofile=256:10000 %s "
                       "\"$@\"\n" % gateway_bin())
    wrapper.chmod(0o755)
    monkeypatch.setenv("PORTCULLIS_BIN", str(wrapper))
    gw = start_gateway(gw_config(reg.url, limits={"max_connections": 40}))
    assert _soft_nofile(gw.pid) == 256     # 40 * 4 + 64 fit
    cfg = dict(gw.config)
    cfg["limits"] = dict(cfg["limits"], max_connections=1000)
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "reload done" in gw.log_text(), what="the reload")
    assert _soft_nofile(gw.pid) >= 4064
    assert "fd_limit" not in gw.log_text()
    assert_serves(gw)


def test_max_connections_per_ip_answers_503(reg, start_gateway):
    gw = start_gateway(gw_config(reg.url,
                                 limits={"max_connections_per_ip": 2}))
    get = rawhttp.build("GET", "/v2/", host=gw.host)
    conns = []
    try:
        for _ in range(2):
            c = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                                source="127.0.0.2")
            conns.append(c)
            c.send(get)
            assert c.read_response().status == 200
        extra = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                                source="127.0.0.2")
        conns.append(extra)
        extra.send(get)
        r = extra.read_response()
        assert_oci_error(r, 503, "UNAVAILABLE")
        assert r.wants_close()
        assert extra.wait_closed(TIMEOUT)
        # Another address is not affected, nor are the first two.
        other = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                                source="127.0.0.3")
        conns.append(other)
        other.send(get)
        assert other.read_response().status == 200
        conns[0].send(get)
        assert conns[0].read_response().status == 200
        # Once one of the first two ends, the address may connect again.
        conns[1].close()

        def served():
            with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                                 source="127.0.0.2") as c:
                c.send(get)
                return c.read_response().status == 200
        wait_for(served, timeout=TIMEOUT, what="a freed per-address slot")
    finally:
        for c in conns:
            c.close()
    assert_serves(gw)


def test_lingering_connections_count_against_the_address(reg, start_gateway):
    # Each framing error leaves its connection lingering (the client
    # never closes).  Those hold slots of max_connections too: were they
    # left out of the per-address count, one address could hold them all
    # and another would wait in the backlog for timeouts.linger.
    gw = start_gateway(gw_config(reg.url, limits={
        "max_connections": 8, "max_connections_per_ip": 2},
        timeouts={"linger": 300}))
    gw.http.close()             # the harness's keep-alive health check
    bad = b"GET /v2/x\x01 HTTP/1.1\r\nHost: h\r\n\r\n"
    conns = []
    try:
        statuses = []
        for _ in range(8):
            c = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                                source="127.0.0.2")
            conns.append(c)
            c.send(bad)
            try:
                statuses.append(c.read_response().status)
            except rawhttp.PeerClosed:
                statuses.append(None)   # closed unanswered: also a refusal
        assert statuses[:2] == [400, 400], statuses
        assert 400 not in statuses[2:], statuses
        other = rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                                source="127.0.0.3")
        conns.append(other)
        other.send(rawhttp.build("GET", "/v2/", host=gw.host))
        # Far less than timeouts.linger: served, not left in the backlog.
        assert other.read_response(timeout=TIMEOUT).status == 200
    finally:
        for c in conns:
            c.close()
    assert_serves(gw)


def test_refusals_waiting_for_tls_do_not_fill_the_slots(reg, start_gateway,
                                                       tmp_path):
    # Over TLS a refusal's 503 waits for a handshake the client may never
    # start.  Refused connections must not pile up holding slots of
    # max_connections: beyond twice the per-address limit one is closed
    # at once, unanswered.
    from test_tls import PKI, tls_listen
    import ssl
    pki = PKI(tmp_path)
    cert, key = pki.issue("gateway", "127.0.0.1", san="IP:127.0.0.1")
    gw = start_gateway(gw_config(reg.url, limits={
        "max_connections": 6, "max_connections_per_ip": 1},
        timeouts={"header": 300, "body": 300},
        listen=tls_listen(cert, key)), tls_client={"ca": pki.ca})
    gw.http.close()
    conns = []
    try:
        for _ in range(6):      # TCP only: no ClientHello, ever
            conns.append(rawhttp.RawConn("127.0.0.1", gw.port,
                                         timeout=TIMEOUT,
                                         source="127.0.0.2"))
        ctx = ssl.create_default_context(cafile=pki.ca)
        with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT,
                             source="127.0.0.3") as other:
            other.sock = ctx.wrap_socket(other.sock,
                                         server_hostname="127.0.0.1")
            other.send(rawhttp.build("GET", "/v2/", host=gw.host))
            # Far less than timeouts.header: served, not in the backlog.
            assert other.read_response(timeout=TIMEOUT).status == 200
    finally:
        for c in conns:
            c.close()
    assert "answer=none" in gw.log_text()


# ---------------------------------------------------------------------------
# Point 11: limits.manifest_bytes on pushes and pass-through pulls.

def test_manifest_put_over_limit_with_length_is_413(reg, gw):
    body = big_manifest(reg, "mput", 4 * MANIFEST_LIMIT)
    mark = reg.mark()
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("PUT", "/v2/mput/manifests/big", [
            ("Content-Type", OCI_MANIFEST),
            ("Content-Length", str(len(body)))], body, host=gw.host))
        r = c.read_response()
        assert_oci_error(r, 413, "SIZE_INVALID")
        assert c.wait_closed(TIMEOUT)
    # Refused before the upstream was contacted.
    assert [e for e in upstream_saw(reg, mark, "mput")
            if e["method"] == "PUT"] == []
    assert not registry_has_manifest(reg, "mput", "big")
    assert_serves(gw)


def test_manifest_put_over_limit_chunked_is_413(reg, gw):
    body = big_manifest(reg, "mchunk", 4 * MANIFEST_LIMIT)
    step = 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]),
                                        body[i:i + step])
                      for i in range(0, len(body), step)) + b"0\r\n\r\n"
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("PUT", "/v2/mchunk/manifests/big", [
            ("Content-Type", OCI_MANIFEST),
            ("Transfer-Encoding", "chunked")], chunks, host=gw.host))
        r = c.read_response()
        assert_oci_error(r, 413, "SIZE_INVALID")
        assert c.wait_closed(TIMEOUT)
    assert not registry_has_manifest(reg, "mchunk", "big")
    assert not registry_has_manifest(reg, "mchunk", sha256(body))
    # A manifest under the limit still goes through, chunked too.
    small = big_manifest(reg, "mchunk", MANIFEST_LIMIT // 2)
    r = send(gw, rawhttp.build("PUT", "/v2/mchunk/manifests/small", [
        ("Content-Type", OCI_MANIFEST), ("Transfer-Encoding", "chunked")],
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small), host=gw.host))
    assert r.status == 201, r.body[:300]
    assert registry_has_manifest(reg, "mchunk", "small")


def test_manifest_get_over_limit_is_413(reg, gw):
    body = big_manifest(reg, "mget", 4 * MANIFEST_LIMIT)
    r = reg.http.put("%s/v2/mget/manifests/big" % reg.url, data=body,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    r = send(gw, rawhttp.build("GET", "/v2/mget/manifests/big",
                               [("Accept", OCI_MANIFEST)], host=gw.host))
    assert_oci_error(r, 413, "SIZE_INVALID")
    assert len(r.body) < 4096       # not a byte of the manifest
    # The same for a manifest under the limit passes.
    small = big_manifest(reg, "mget", MANIFEST_LIMIT // 2)
    r = reg.http.put("%s/v2/mget/manifests/small" % reg.url, data=small,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    r = send(gw, rawhttp.build("GET", "/v2/mget/manifests/small",
                               [("Accept", OCI_MANIFEST)], host=gw.host))
    assert r.status == 200 and r.body == small


def test_manifest_get_over_limit_through_the_cache_is_413(reg,
                                                         start_gateway,
                                                         tmp_path):
    """The cache path answers an oversize manifest as the pass-through
    path does: 413 SIZE_INVALID, nothing cached.  Before: 502."""
    body = big_manifest(reg, "mcache", 4 * MANIFEST_LIMIT)
    r = reg.http.put("%s/v2/mcache/manifests/big" % reg.url, data=body,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    cdir = tmp_path / "c"
    gwc = start_gateway(gw_config(reg.url, cache={
        "dir": str(cdir), "max_bytes": 1 << 30}))
    for ref in ("big", sha256(body)):
        r = send(gwc, rawhttp.build("GET", "/v2/mcache/manifests/" + ref,
                                    [("Accept", OCI_MANIFEST)],
                                    host=gwc.host))
        assert_oci_error(r, 413, "SIZE_INVALID")
        assert len(r.body) < 4096
    assert not os.path.exists(cdir / "manifests" / "sha256" /
                              sha256(body)[7:9] / sha256(body)[7:])


# ---------------------------------------------------------------------------
# Point 12: protocol details on the way back.

def test_204_from_registry_has_no_content_length(reg, gw):
    r = send(gw, rawhttp.build("POST", "/v2/del204/blobs/uploads/",
                               [("Content-Length", "0")], host=gw.host))
    assert r.status == 202, r.body[:300]
    path = r.header("Location").split(gw.host, 1)[-1]
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("DELETE", path, host=gw.host))
        r = c.read_response()
        assert r.status == 204, r.body[:300]
        assert r.header_all("Content-Length") == []
        assert r.header_all("Transfer-Encoding") == []
        c.send(rawhttp.build("GET", "/v2/", host=gw.host))
        assert c.read_response().status == 200


@pytest.fixture
def liar(start_gateway):
    up = LyingUpstream()
    try:
        yield up, start_gateway(gw_config(up.url))
    finally:
        up.stop()


def test_204_drops_the_upstreams_content_length(liar):
    up, gw = liar
    up.canned("DELETE", "/v2/app/blobs/uploads/u1", 204, [
        ("Content-Length", "0"),
        ("Docker-Distribution-Api-Version", API_VERSION)])
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("DELETE", "/v2/app/blobs/uploads/u1",
                             host=gw.host))
        r = c.read_response()
        assert r.status == 204
        assert r.header_all("Content-Length") == [], r.headers
        c.send(rawhttp.build("GET", "/v2/", host=gw.host))
        assert c.read_response().status == 200
    assert up.requests("DELETE", "/v2/app/blobs/uploads/u1") == 1


def test_connection_named_fields_are_dropped(liar):
    up, gw = liar
    # A blob relayed as is (tags/list is the gateway's own answer now).
    body = b"relayed blob bytes"
    d = sha256(body)
    up.canned("GET", "/v2/app/blobs/" + d, 200, [
        ("Content-Type", "application/octet-stream"),
        ("Connection", "keep-alive, X-Hop-Secret"),
        ("X-Hop-Secret", "upstream-internal"),
        ("X-Kept", "yes"),
        ("Content-Length", str(len(body)))], body)
    r = send(gw, rawhttp.build("GET", "/v2/app/blobs/" + d, host=gw.host))
    assert r.status == 200 and r.body == body
    assert r.header_all("X-Hop-Secret") == [], r.headers
    assert r.header("X-Kept") == "yes"


def test_no_100_continue_for_http10(reg, gw):
    data = b"layer bytes for an HTTP/1.0 client"
    d = sha256(data)
    r = send(gw, rawhttp.build("POST", "/v2/e10/blobs/uploads/", [
        ("Content-Length", "0")], host=gw.host))
    assert r.status == 202
    path = r.header("Location").split(gw.host, 1)[-1]
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("PUT", path + "&digest=" + d, [
            ("Expect", "100-continue"),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(data)))], data, host=gw.host,
            version="HTTP/1.0"))
        first = c.read_response(skip_1xx=False)
        assert first.status != 100, "100 Continue sent to HTTP/1.0"
        assert first.status == 201, first.body[:300]
    assert reg.has_blob("e10", d)
    # HTTP/1.1 still gets its 100 Continue.
    r = send(gw, rawhttp.build("POST", "/v2/e11/blobs/uploads/", [
        ("Content-Length", "0")], host=gw.host))
    path = r.header("Location").split(gw.host, 1)[-1]
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("PUT", path + "&digest=" + d, [
            ("Expect", "100-continue"),
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(data)))], host=gw.host))
        first = c.read_response(skip_1xx=False)
        assert first.status == 100
        c.send(data)
        assert c.read_response().status == 201


# ---------------------------------------------------------------------------
# Point 14: lingering close.

@pytest.mark.parametrize("target,status,code", [
    (b"/v2/BAD..NAME/manifests/x", 400, "NAME_INVALID"),
    (b"/v2/linger/manifests/big", 413, "SIZE_INVALID"),
], ids=["400-bad-name", "413-manifest"])
def test_refused_body_still_gets_the_full_error(reg, gw, target, status,
                                                code):
    # More than loopback socket buffers hold, less than the default
    # limits.linger_bytes (16 MiB).
    body = b"x" * (12 << 20)
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        # sendall must complete: the gateway reads and discards the body
        # after answering instead of closing on it (no reset).
        c.send(b"PUT " + target + b" HTTP/1.1\r\nHost: " +
               gw.host.encode() + b"\r\nContent-Type: " +
               OCI_MANIFEST.encode() + b"\r\nContent-Length: " +
               str(len(body)).encode() + b"\r\n\r\n" + body)
        r = c.read_response()
        assert_oci_error(r, status, code)
        assert c.wait_closed(TIMEOUT)
    assert_serves(gw)


def test_linger_is_bounded_by_bytes(reg, start_gateway):
    gw = start_gateway(gw_config(reg.url, limits={"linger_bytes": 1 << 20}))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(b"PUT /v2/BAD..NAME/manifests/x HTTP/1.1\r\nHost: h\r\n"
               b"Content-Length: 1073741824\r\n\r\n")
        sent = 0
        try:
            while sent < 256 << 20:
                c.sock.sendall(b"y" * (1 << 20))
                sent += 1 << 20
        except OSError:
            pass
        assert sent < 256 << 20, "gateway kept reading past linger_bytes"
    assert_serves(gw)


def test_linger_timeout_zero_closes_at_once(reg, start_gateway):
    gw = start_gateway(gw_config(reg.url, timeouts={"linger": 0}))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(b"PUT /v2/BAD..NAME/manifests/x HTTP/1.1\r\nHost: h\r\n"
               b"Content-Length: 10\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert c.wait_closed(TIMEOUT)
    assert_serves(gw)


def test_chunked_manifest_over_limit_is_cut_off(liar):
    # A real registry always sends a manifest's Content-Length; only the
    # double sends one chunked, so the limit can only bite mid-body.
    up, gw = liar
    body = b'{"schemaVersion":2,"pad":"' + b"p" * (4 * MANIFEST_LIMIT) + \
        b'"}'
    step = 8192
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]),
                                         body[i:i + step])
                       for i in range(0, len(body), step)) + b"0\r\n\r\n"
    up.canned("GET", "/v2/app/manifests/big", 200, [
        ("Content-Type", OCI_MANIFEST), ("Transfer-Encoding", "chunked")],
        chunked)
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
        c.send(rawhttp.build("GET", "/v2/app/manifests/big",
                             [("Accept", OCI_MANIFEST)], host=gw.host))
        with pytest.raises(rawhttp.PeerClosed) as e:
            c.read_response()
        # Never more than the limit (plus chunk framing) reached us.
        assert len(e.value.partial) < MANIFEST_LIMIT + 16384
    assert_serves(gw)


def test_chunked_manifest_over_limit_is_502_when_digests_are_blocked(
        start_gateway):
    # With a blocklist, a manifest pulled by tag without the upstream's
    # Docker-Content-Digest is held and hashed before its head goes out,
    # so the limit bites before anything is sent: a clean 502, no bytes.
    up = LyingUpstream()
    try:
        cfg = gw_config(up.url)
        cfg["policy"] = copy.deepcopy(OPEN_TEST_POLICY)
        cfg["policy"]["blocked_digests"] = ["sha256:" + "0" * 64]
        gw = start_gateway(cfg)
        body = b'{"schemaVersion":2,"pad":"' + \
            b"p" * (4 * MANIFEST_LIMIT) + b'"}'
        step = 8192
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]),
                                             body[i:i + step])
                           for i in range(0, len(body), step)) + b"0\r\n\r\n"
        up.canned("GET", "/v2/app/manifests/big", 200, [
            ("Content-Type", OCI_MANIFEST),
            ("Transfer-Encoding", "chunked")], chunked)
        with rawhttp.RawConn("127.0.0.1", gw.port, timeout=TIMEOUT) as c:
            c.send(rawhttp.build("GET", "/v2/app/manifests/big",
                                 [("Accept", OCI_MANIFEST)], host=gw.host))
            r = c.read_response()
            assert r.status == 502, r.status
            assert b"pppp" not in r.body
        assert_serves(gw)
    finally:
        up.stop()


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_upload_to_a_stalled_upstream_does_not_spin(start_registry,
                                                       start_gateway):
    """A client streams a 64 MiB chunk to an upstream that stopped
    reading (SIGSTOP): once the gateway's buffers are full it stops
    reading the client and waits, using no CPU.  Before, libevent ran
    the read callback on every loop turn while the input sat at its
    high watermark, so such an upload kept a core busy (2.9 s of CPU in
    3 s).  When the upstream goes on, the upload completes."""
    import signal
    import socket
    import threading
    import time
    import requests
    from lib.gateway import upstream
    reg = start_registry("up1")
    gw = start_gateway(gateway_config(upstream(reg, default=True)))
    s = requests.Session()
    s.trust_env = False
    r = s.post("%s/v2/busy/app/blobs/uploads/" % gw.url, timeout=30)
    assert r.status_code == 202, r.text
    path = r.headers["Location"]
    if path.startswith("http"):
        path = "/" + path.split("/", 3)[3]
    body = b"x" * (64 << 20)
    sent = [0]
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=120)

    def send():
        try:
            for i in range(0, len(body), 1 << 20):
                c.sendall(body[i:i + (1 << 20)])
                sent[0] = i + (1 << 20)
        except OSError:
            pass
    os.kill(reg.pid, signal.SIGSTOP)
    try:
        c.sendall(("PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                   "application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                   % (path, gw.host, len(body))).encode())
        t = threading.Thread(target=send, daemon=True)
        t.start()
        # Stalled: the client's sends stop moving (every buffer on the
        # way is full), well before the 64 MiB are out.
        last = [-1]

        def stalled():
            now, prev = sent[0], last[0]
            last[0] = now
            return now == prev and now < len(body)
        wait_for(stalled, timeout=60, interval=0.5, what="the upload stalls")
        a = _cpu_seconds(gw.pid)
        time.sleep(2)       # the window the CPU is measured over
        used = _cpu_seconds(gw.pid) - a
        assert used < 0.5, "gateway used %.2f s of CPU in 2 s" % used
    finally:
        os.kill(reg.pid, signal.SIGCONT)
    t.join(timeout=120)
    assert sent[0] == len(body)
    c.settimeout(120)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = c.recv(65536)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 202"), got[:200]
    c.close()
