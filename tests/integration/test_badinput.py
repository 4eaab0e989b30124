"""Bad input from clients: malformed names, tags and digests, oversized
heads, request smuggling shapes, slowloris.

Each case is sent byte-exact over a raw socket (lib/rawhttp.py) to a real
portcullis in front of a real docker-registry.  What is asserted:

- the status and OCI error code the gateway answers with, and the
  Docker-Distribution-Api-Version header on /v2/ answers;
- for requests the gateway must refuse on its own, that the upstream's
  access log shows no request for them (the upstream is the witness);
- for framing attacks, that the connection is closed after the error, so
  no smuggled second request is ever parsed;
- after every case, that the gateway process is still alive and a normal
  `GET /v2/` on a fresh connection still works.
"""

import time

import pytest

from lib import rawhttp
from lib.util import pid_alive

API_VERSION = "registry/2.0"
CLIENT_TIMEOUT = 15.0


def gw_config(reg, limits=None, timeouts=None):
    """A gateway config with one default upstream `reg` and the given
    overrides of limits/timeouts (other keys keep the documented values)."""
    cfg = {
        "limits": {"header_bytes": 65536, "header_count": 100,
                   "uri_bytes": 8192},
        "buffers": {"high_watermark": 262144},
        "timeouts": {"header": 30, "idle": 60, "body": 60,
                     "upstream_connect": 10, "upstream_response": 60},
        "upstreams": [{"name": "up1", "url": reg.url, "default": True}],
    }
    cfg["limits"].update(limits or {})
    cfg["timeouts"].update(timeouts or {})
    return cfg


# One upstream and one gateway for the whole module: the parametrized
# cases below are many and each checks the gateway still serves after it,
# so a case that kills or wedges the gateway is the one that fails.
@pytest.fixture(scope="module")
def reg(start_registry_module):
    return start_registry_module(name="up1")


@pytest.fixture(scope="module")
def gw(reg, start_gateway_module):
    return start_gateway_module(gw_config(reg))


def send(gw, data, method=None, timeout=CLIENT_TIMEOUT):
    """One raw request on a fresh connection; returns the Response."""
    return rawhttp.request("127.0.0.1", gw.port, data, timeout=timeout,
                           method=method)


def assert_serves(gw):
    """The gateway process is alive and answers a normal GET /v2/."""
    assert pid_alive(gw.pid), "gateway died:\n" + gw.log_text()[-3000:]
    r = send(gw, rawhttp.build("GET", "/v2/", host=gw.host))
    assert r.status == 200, (r.status, r.body[:500])
    assert r.header("Docker-Distribution-Api-Version") == API_VERSION


def assert_oci_error(r, status, codes):
    """`r` is an OCI JSON error with this status and one of `codes`."""
    assert r.status == status, (r.status, r.headers, r.body[:500])
    ctype = r.header("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/json", ctype
    assert r.header("Docker-Distribution-Api-Version") == API_VERSION, \
        r.headers
    doc = r.json()
    assert isinstance(doc.get("errors"), list) and doc["errors"], doc
    for e in doc["errors"]:
        assert isinstance(e.get("code"), str) and \
            isinstance(e.get("message"), str), e
    got = r.error_codes()
    assert set(got) & set(codes), "codes %r, expected one of %r" % (
        got, codes)


def upstream_requests(reg, mark):
    """Requests the upstream saw since `mark`, ignoring the bare base
    endpoint (a gateway may probe it for readiness)."""
    return [e for e in reg.access_log(since=mark) if e["path"] != "/v2/"]


def read_then_closed(conn, timeout=CLIENT_TIMEOUT):
    """Read one response (None when the peer closed without one), then
    wait for the close.  Returns (response, closed, trailing bytes)."""
    try:
        resp = conn.read_response(timeout=timeout)
    except rawhttp.PeerClosed:
        return None, True, b""
    closed = conn.wait_closed(timeout=timeout)
    return resp, closed, conn.buf


# ---------------------------------------------------------------------------
# Names, tags, digests, traversal: refused by the gateway, never forwarded.

TAG129 = "t" * 129
LONG_NAME = "/".join(["a" * 60] * 5)          # 304 bytes > 255
SHA = "0" * 64

MALFORMED = [
    # (method, target, expected codes)
    ("GET", "/v2/UPPER/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/a%2fb/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2//a/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/../etc/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/a/%2e%2e/b/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/a/../b/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/a/./b/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/-a/manifests/t", ["NAME_INVALID"]),
    ("GET", "/v2/a\\b/manifests/t", ["NAME_INVALID", "UNSUPPORTED"]),
    ("GET", "/v2/%s/manifests/t" % LONG_NAME, ["NAME_INVALID"]),
    ("HEAD", "/v2/UPPER/manifests/t", ["NAME_INVALID"]),
    ("PUT", "/v2/UPPER/manifests/t", ["NAME_INVALID"]),
    ("DELETE", "/v2/a/../b/manifests/sha256:" + SHA, ["NAME_INVALID"]),
    ("POST", "/v2/UPPER/blobs/uploads/", ["NAME_INVALID"]),
    ("GET", "/v2/UPPER/tags/list", ["NAME_INVALID"]),
    ("GET", "/v2/a/blobs/sha256:zz", ["DIGEST_INVALID"]),
    ("GET", "/v2/a/blobs/sha256:" + "0" * 63, ["DIGEST_INVALID"]),
    ("GET", "/v2/a/blobs/sha256:" + "A" * 64, ["DIGEST_INVALID"]),
    ("GET", "/v2/a/blobs/notadigest", ["DIGEST_INVALID"]),
    ("HEAD", "/v2/a/blobs/sha256:zz", ["DIGEST_INVALID"]),
    ("PUT", "/v2/a/manifests/bad:digest", ["DIGEST_INVALID"]),
    ("PUT", "/v2/a/manifests/sha256:zz", ["DIGEST_INVALID"]),
    ("PUT", "/v2/a/manifests/" + TAG129, ["TAG_INVALID"]),
    ("PUT", "/v2/a/manifests/.dot", ["TAG_INVALID"]),
    ("PUT", "/v2/a/manifests/-dash", ["TAG_INVALID"]),
]

# A read or delete of a manifest reference that is neither a tag nor a
# digest is unknown, not malformed: the reference registry answers 404
# MANIFEST_UNKNOWN there, and so does the gateway, without the upstream.
UNKNOWN_REFS = [
    (m, "/v2/a/manifests/" + ref)
    for m in ("GET", "HEAD", "DELETE")
    for ref in ("bad:digest", "sha256:zz", TAG129, ".dot", "-dash",
                "sha256:" + "0" * 63)
]


@pytest.mark.parametrize("method,target,codes", MALFORMED,
                         ids=["%s %s" % (m, t[:60]) for m, t, _ in MALFORMED])
def test_malformed_reference_is_refused_by_gateway(reg, gw, method, target,
                                                   codes):
    mark = reg.mark()
    headers = [("Content-Length", "0")] if method in ("PUT", "POST") else []
    r = send(gw, rawhttp.build(method, target, headers, host=gw.host))
    if method == "HEAD":
        assert r.status == 400, (r.status, r.headers)
        assert r.header("Docker-Distribution-Api-Version") == API_VERSION
    else:
        assert_oci_error(r, 400, codes)
    seen = upstream_requests(reg, mark)
    assert seen == [], "gateway forwarded a malformed request: %r" % seen
    assert_serves(gw)


@pytest.mark.parametrize("method,target", UNKNOWN_REFS,
                         ids=["%s %s" % (m, t[:60]) for m, t in UNKNOWN_REFS])
def test_impossible_manifest_reference_is_unknown(reg, gw, method, target):
    mark = reg.mark()
    r = send(gw, rawhttp.build(method, target, host=gw.host))
    if method == "HEAD":
        assert r.status == 404, (r.status, r.headers)
        assert r.header("Docker-Distribution-Api-Version") == API_VERSION
    else:
        assert_oci_error(r, 404, ["MANIFEST_UNKNOWN"])
    assert upstream_requests(reg, mark) == [], \
        "gateway asked the upstream about a reference that cannot exist"
    assert_serves(gw)


def test_impossible_reference_matches_reference_registry(reg):
    # The reference registry itself: what the gateway imitates above
    # (Debian's 2.8 answers a bad digest such as "sha256:zz" with a 500,
    # which the gateway does not imitate).
    for ref in ("-dash", ".dot", "t" * 129):
        r = rawhttp.request("127.0.0.1", reg.port, rawhttp.build(
            "GET", "/v2/a/manifests/" + ref, host=reg.host))
        assert r.status == 404, (ref, r.status, r.body[:200])


UNKNOWN = [
    "/v2/a/nothing/here",
    "/v2/a/manifest/t",
    "/v2/a/tags/lists",
    "/v2x/",
    "/v3/",
]


@pytest.mark.parametrize("target", UNKNOWN)
def test_unknown_endpoint_is_404_json(gw, target):
    r = send(gw, rawhttp.build("GET", target, host=gw.host))
    assert r.status == 404, (r.status, r.body[:500])
    if target.startswith("/v2/"):
        assert_oci_error(r, 404, ["NOT_FOUND", "NAME_UNKNOWN"])
    assert_serves(gw)


def test_valid_reference_is_forwarded(reg, gw):
    # Control for the cases above: a well-formed request of the same shape
    # does reach the upstream, so "nothing in the access log" means refused.
    mark = reg.mark()
    r = send(gw, rawhttp.build("GET", "/v2/good/name/manifests/v1",
                               host=gw.host))
    assert_oci_error(r, 404, ["MANIFEST_UNKNOWN", "NAME_UNKNOWN"])
    seen = upstream_requests(reg, mark)
    assert [(e["method"], e["path"]) for e in seen] == \
        [("GET", "/v2/good/name/manifests/v1")], seen


# ---------------------------------------------------------------------------
# Head size limits.

def test_header_bytes_limit_is_431(reg, start_gateway):
    gw = start_gateway(gw_config(reg, limits={"header_bytes": 8192}))
    # Control: well under the limit works.
    r = send(gw, rawhttp.build("GET", "/v2/", [("X-Pad", "p" * 2000)],
                               host=gw.host))
    assert r.status == 200, r.status

    mark = reg.mark()
    for headers in ([("X-Big", "b" * 12000)],
                    [("X-Pad-%d" % i, "p" * 500) for i in range(24)]):
        with rawhttp.RawConn("127.0.0.1", gw.port,
                             timeout=CLIENT_TIMEOUT) as c:
            try:
                c.send(rawhttp.build("GET", "/v2/a/manifests/t", headers,
                                     host=gw.host))
            except OSError:
                pass        # the gateway may close before reading it all
            r = c.read_response()
            assert r.status == 431, (r.status, r.body[:300])
    assert upstream_requests(reg, mark) == []
    assert_serves(gw)


def test_header_count_limit_is_431(reg, start_gateway):
    gw = start_gateway(gw_config(reg, limits={"header_count": 20}))
    r = send(gw, rawhttp.build("GET", "/v2/",
                               [("X-N-%d" % i, "v") for i in range(10)],
                               host=gw.host))
    assert r.status == 200, r.status

    mark = reg.mark()
    r = send(gw, rawhttp.build("GET", "/v2/a/manifests/t",
                               [("X-N-%d" % i, "v") for i in range(40)],
                               host=gw.host))
    assert r.status == 431, (r.status, r.body[:300])
    # The same header repeated counts each time.
    r = send(gw, rawhttp.build("GET", "/v2/a/manifests/t",
                               [("Accept", "x/y")] * 40, host=gw.host))
    assert r.status == 431, (r.status, r.body[:300])
    assert upstream_requests(reg, mark) == []
    assert_serves(gw)


def test_uri_limit_is_414(reg, start_gateway):
    gw = start_gateway(gw_config(reg, limits={"uri_bytes": 1024}))
    r = send(gw, rawhttp.build("GET", "/v2/?pad=" + "p" * 500,
                               host=gw.host))
    assert r.status == 200, r.status

    mark = reg.mark()
    r = send(gw, rawhttp.build("GET", "/v2/a/manifests/t?pad=" + "p" * 2000,
                               host=gw.host))
    assert r.status == 414, (r.status, r.body[:300])
    r = send(gw, rawhttp.build("GET", "/v2/" + "a/" * 1000 + "manifests/t",
                               host=gw.host))
    assert r.status == 414, (r.status, r.body[:300])
    assert upstream_requests(reg, mark) == []
    assert_serves(gw)


def test_endless_request_line_is_cut_off(reg, start_gateway):
    # A request line that never ends must not be buffered without bound:
    # the gateway answers 414 (or closes) once the limit is passed.
    gw = start_gateway(gw_config(reg, limits={"uri_bytes": 1024,
                                              "header_bytes": 8192}))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        sent = 0
        chunk = b"GET /v2/" + b"a" * 4088
        try:
            while sent < 4 << 20:          # at most 4 MiB
                c.send(chunk)
                sent += len(chunk)
                chunk = b"a" * 4096
                if not c.is_open_now():
                    break
        except OSError:
            pass
        assert sent < 4 << 20, "gateway kept reading a 4 MiB request line"
        resp, closed, _ = read_then_closed(c)
        if resp is not None:
            assert resp.status in (400, 414, 431), resp.status
        assert closed
    assert_serves(gw)


# ---------------------------------------------------------------------------
# Framing: request smuggling shapes.  Each must be refused and the
# connection closed, so the bytes after the head are never parsed as a
# second request, and nothing reaches the upstream.

SMUGGLED = (b"GET /v2/smuggled/manifests/x HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n\r\n")
UPLOAD = "/v2/smug/blobs/uploads/"


def _req(headers, body=b"", target=UPLOAD, method="POST"):
    return rawhttp.build(method, target, headers, body)


FRAMING = [
    # id, raw request, accepted statuses (None: close without a response
    # is acceptable too), upstream must stay silent
    ("cl-and-te",
     _req([("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
          b"0\r\n\r\n" + SMUGGLED), {400}, True),
    ("te-and-cl",
     _req([("Transfer-Encoding", "chunked"), ("Content-Length", "60")],
          b"0\r\n\r\n" + SMUGGLED), {400}, True),
    ("two-content-lengths",
     _req([("Content-Length", "5"), ("Content-Length", "6")],
          b"hello!" + SMUGGLED), {400}, True),
    ("content-length-list",
     _req([("Content-Length", "5, 6")], b"hello!" + SMUGGLED), {400}, True),
    ("content-length-12a",
     _req([("Content-Length", "12a")], b"x" * 12), {400}, True),
    ("content-length-negative",
     _req([("Content-Length", "-1")], b"x"), {400}, True),
    ("content-length-plus",
     _req([("Content-Length", "+5")], b"hello"), {400}, True),
    ("content-length-hex",
     _req([("Content-Length", "0x10")], b"x" * 16), {400}, True),
    ("content-length-overflow",
     _req([("Content-Length", "9" * 30)], b"x"), {400, 413}, True),
    ("content-length-space-before-colon",
     _req(["Content-Length : 5"], b"hello" + SMUGGLED), {400}, True),
    ("te-gzip-chunked",
     _req([("Transfer-Encoding", "gzip, chunked")], b"0\r\n\r\n"),
     {400, 501}, True),
    ("te-chunked-identity",
     _req([("Transfer-Encoding", "chunked, identity")], b"0\r\n\r\n"),
     {400, 501}, True),
    ("te-identity",
     _req([("Transfer-Encoding", "identity")], b"0\r\n\r\n" + SMUGGLED),
     {400, 501}, True),
    ("te-xchunked",
     _req([("Transfer-Encoding", "xchunked")], b"0\r\n\r\n" + SMUGGLED),
     {400, 501}, True),
    ("te-in-http10",
     _req([("Transfer-Encoding", "chunked")],
          b"0\r\n\r\n" + SMUGGLED).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
     {400, 501}, True),
    ("bad-chunk-size",
     _req([("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n"),
     {400}, False),
    ("chunk-size-overflow",
     _req([("Transfer-Encoding", "chunked")],
          b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
     {400}, False),
    ("obs-fold",
     _req([("Content-Length", "0"), "X-Folded: a", "  b"]), {400}, True),
    ("obs-fold-on-transfer-encoding",
     _req([("Content-Length", "5"), "Transfer-Encoding: identity",
           " chunked"], b"0\r\n\r\n" + SMUGGLED), {400}, True),
    ("header-without-colon",
     _req([("Content-Length", "0"), "NoColonHere"]), {400}, True),
    ("nul-in-header-value",
     _req([("Content-Length", "0"), b"X-Nul: a\x00b"]), {400, None}, True),
    ("bad-method-token",
     rawhttp.build("G@T", "/v2/", []), {400, 405, 501, None}, True),
    ("http-2-request-line",
     rawhttp.build("GET", "/v2/", [], version="HTTP/2.0"),
     {400, 505, None}, True),
    ("missing-host",
     rawhttp.build("GET", "/v2/a/manifests/t", [], add_host=False),
     {400}, True),
    ("two-hosts",
     rawhttp.build("GET", "/v2/a/manifests/t",
                   [("Host", "127.0.0.1"), ("Host", "example.invalid")]),
     {400}, True),
]


@pytest.mark.parametrize("data,statuses,silent",
                         [c[1:] for c in FRAMING],
                         ids=[c[0] for c in FRAMING])
def test_bad_framing_is_refused_and_closed(reg, gw, data, statuses, silent,
                                           request):
    # A repository name of this case's own: the upstream logs a request
    # when its handler returns, possibly after the next case has begun.
    own = ("/v2/smug-%d/" % (abs(hash(request.node.name)) % 10**8)).encode()
    data = data.replace(b"/v2/smug/", own, 1)
    mark = reg.mark()
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        try:
            c.send(data)
        except OSError:
            pass
        resp, closed, trailing = read_then_closed(c)
    if resp is None:
        assert None in statuses, \
            "connection closed without an error response"
    else:
        assert resp.status in statuses, (resp.status, resp.body[:300])
        if 400 <= resp.status < 500:
            ctype = resp.header("Content-Type", "")
            assert ctype.split(";")[0].strip() == "application/json", ctype
    assert closed, "connection left open after a framing error"
    assert b"HTTP/1." not in trailing, \
        "a second response followed: %r" % trailing[:300]
    seen = upstream_requests(reg, mark)
    assert not any("smuggled" in e["path"] for e in seen), seen
    seen = [e for e in seen if e["path"].startswith(own.decode())]
    if silent:
        assert seen == [], "gateway forwarded a malformed request: %r" % seen
    assert_serves(gw)


def test_good_framing_controls(reg, gw):
    # The framing cases above differ from these only in the bad part; these
    # must be accepted, so a refusal above is about the defect.
    for data in (
            _req([("Content-Length", "0")]),
            _req([("Transfer-Encoding", "chunked")], b"0\r\n\r\n"),
            _req([("Transfer-Encoding", "chunked")],
                 b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")):
        r = send(gw, data)
        assert r.status == 202, (data[:120], r.status, r.body[:300])
    assert_serves(gw)


# ---------------------------------------------------------------------------
# Slowloris.

def test_slowloris_head_is_cut_off_while_others_are_served(reg,
                                                           start_gateway):
    gw = start_gateway(gw_config(reg, timeouts={"header": 1}))
    head = b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200
    pace = 0.25          # well under the 1 s timeout between two bytes
    served = []
    t0 = time.monotonic()
    deadline = t0 + 20.0
    closed = False
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        for i in range(len(head)):                 # bounded by count
            if time.monotonic() > deadline:
                break
            try:
                c.send(head[i:i + 1])
            except OSError:
                closed = True
                break
            if i == 2:
                # Another client is served while this one dribbles.
                r = send(gw, rawhttp.build("GET", "/v2/", host=gw.host))
                served.append(r.status)
            # Pace the bytes; wakes early if the gateway answers/closes.
            if c.wait_closed(timeout=pace):
                closed = True
                break
        if not closed:
            closed = c.wait_closed(timeout=5.0)
        trailing = c.buf
    assert served == [200], served
    assert closed, "a client dribbling its head for %.0fs was not closed" % (
        time.monotonic() - t0)
    if trailing:
        assert trailing.startswith(b"HTTP/1.1 408"), trailing[:200]
    assert_serves(gw)


def test_idle_connection_before_first_byte_is_closed(reg, start_gateway):
    gw = start_gateway(gw_config(reg, timeouts={"header": 1, "idle": 1}))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        assert c.wait_closed(timeout=CLIENT_TIMEOUT), \
            "silent connection not closed"
        if c.buf:
            assert c.buf.startswith(b"HTTP/1.1 408"), c.buf[:200]
    assert_serves(gw)


def test_many_bad_requests_in_a_row_do_not_hurt(reg, gw):
    # Every malformed case once more, back to back, then a normal request:
    # nothing accumulates or leaks into the good request.
    for method, target, _ in MALFORMED:
        try:
            send(gw, rawhttp.build(method, target, host=gw.host))
        except (rawhttp.PeerClosed, OSError):
            pass
    for _, data, _, _ in FRAMING:
        with rawhttp.RawConn("127.0.0.1", gw.port,
                             timeout=CLIENT_TIMEOUT) as c:
            try:
                c.send(data)
            except OSError:
                pass
            read_then_closed(c)
    assert_serves(gw)
