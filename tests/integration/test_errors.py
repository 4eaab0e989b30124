"""Failures around the gateway: upstreams that are down, hang, lie or cut
off; clients that stop sending a body or stop reading a response; and the
connection handling (keep-alive, pipelining) the error paths rely on.

The upstream is a real docker-registry, except where the test needs a
misbehaving peer: `MisbehavingUpstream` below is a deliberate fake that
accepts TCP on loopback and then hangs, closes, sends garbage or truncates.
"""

import hashlib
import http.client
import os
import random
import socket
import threading
import time
import urllib.parse

import pytest

from lib import rawhttp
from lib.util import free_port, pid_alive, wait_for

API_VERSION = "registry/2.0"
CLIENT_TIMEOUT = 15.0


def gw_config(upstream_url, limits=None, timeouts=None, buffers=None):
    cfg = {
        "limits": {"header_bytes": 65536, "header_count": 100,
                   "uri_bytes": 8192},
        "buffers": {"high_watermark": 262144},
        "timeouts": {"header": 30, "idle": 60, "body": 60,
                     "upstream_connect": 10, "upstream_response": 60},
        "upstreams": [{"name": "up1", "url": upstream_url, "default": True}],
    }
    cfg["limits"].update(limits or {})
    cfg["timeouts"].update(timeouts or {})
    cfg["buffers"].update(buffers or {})
    return cfg


def send(gw, data, method=None, timeout=CLIENT_TIMEOUT):
    return rawhttp.request("127.0.0.1", gw.port, data, timeout=timeout,
                           method=method)


def get(gw, target, headers=()):
    return send(gw, rawhttp.build("GET", target, list(headers),
                                  host=gw.host))


def assert_alive(gw):
    assert pid_alive(gw.pid), "gateway died:\n" + gw.log_text()[-3000:]


def assert_serves(gw):
    """Alive, and a normal GET /v2/ on a fresh connection answers 200."""
    assert_alive(gw)
    r = get(gw, "/v2/")
    assert r.status == 200, (r.status, r.body[:500])
    assert r.header("Docker-Distribution-Api-Version") == API_VERSION


def assert_oci_error(r, status, codes):
    assert r.status == status, (r.status, r.headers, r.body[:500])
    ctype = r.header("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/json", ctype
    assert r.header("Docker-Distribution-Api-Version") == API_VERSION, \
        r.headers
    got = r.error_codes()
    assert set(got) & set(codes), "codes %r, expected one of %r" % (
        got, codes)


# ---------------------------------------------------------------------------
# Direct registry helpers (bypass the gateway).

def _conn(url, timeout=60):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def _path(location):
    u = urllib.parse.urlsplit(location)
    return u.path + ("?" + u.query if u.query else "")


def start_upload(base_url, repo, via_host=None):
    """POST an upload session; returns the Location path+query."""
    c = _conn(base_url)
    try:
        c.request("POST", "/v2/%s/blobs/uploads/" % repo,
                  headers={"Content-Length": "0"})
        r = c.getresponse()
        r.read()
        assert r.status == 202, (r.status, r.getheaders())
        return _path(r.getheader("Location"))
    finally:
        c.close()


def push_blob(reg_url, repo, data):
    """Monolithic push of `data` straight to the registry; its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = start_upload(reg_url, repo)
    sep = "&" if "?" in loc else "?"
    c = _conn(reg_url)
    try:
        c.request("PUT", loc + sep + "digest=" + digest, body=data,
                  headers={"Content-Type": "application/octet-stream",
                           "Content-Length": str(len(data))})
        r = c.getresponse()
        r.read()
        assert r.status == 201, (r.status, r.getheaders())
    finally:
        c.close()
    return digest


def push_big_blob(reg_url, repo, size, seed=1):
    """Stream `size` pseudo-random bytes to the registry (PATCH then PUT),
    hashing on the way; never holds the blob in memory.  Its digest."""
    rnd = random.Random(seed)
    h = hashlib.sha256()
    block = 1 << 20

    def gen():
        left = size
        while left > 0:
            b = rnd.randbytes(min(block, left))
            h.update(b)
            left -= len(b)
            yield b

    loc = start_upload(reg_url, repo)
    c = _conn(reg_url, timeout=120)
    try:
        c.request("PATCH", loc, body=gen(),
                  headers={"Content-Type": "application/octet-stream",
                           "Content-Length": str(size)})
        r = c.getresponse()
        r.read()
        assert r.status == 202, (r.status, r.getheaders())
        loc = _path(r.getheader("Location"))
    finally:
        c.close()
    digest = "sha256:" + h.hexdigest()
    sep = "&" if "?" in loc else "?"
    c = _conn(reg_url, timeout=120)
    try:
        c.request("PUT", loc + sep + "digest=" + digest,
                  headers={"Content-Length": "0"})
        r = c.getresponse()
        r.read()
        assert r.status == 201, (r.status, r.getheaders())
    finally:
        c.close()
    return digest


# ---------------------------------------------------------------------------
# A misbehaving upstream.  Fake on purpose: no real registry hangs,
# truncates or talks nonsense on demand.

class MisbehavingUpstream:
    """Listens on a free loopback port; every accepted connection is read
    until the end of the request head, then handled by `mode`:

    - "hang":     never answer, keep the socket open until stop();
    - "close":    close without a byte;
    - "garbage":  send a non-HTTP line, then close;
    - "truncate": send a 200 head announcing 1000 bytes, send 10, close.

    `.connections` counts accepted connections, `.heads` keeps the request
    heads received (the witness that the gateway really came here).
    """

    def __init__(self, mode):
        self.mode = mode
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.connections = 0
        self.heads = []
        self._socks = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._ls.bind(("127.0.0.1", self.port))
        self._ls.listen(64)
        self._ls.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                s, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(s)
            threading.Thread(target=self._serve, args=(s,),
                             daemon=True).start()

    def _serve(self, s):
        s.settimeout(0.2)
        buf = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in buf and not self._stop.is_set() and \
                time.monotonic() < deadline and len(buf) < 1 << 20:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                break
            buf += d
        with self._lock:
            self.heads.append(buf.split(b"\r\n\r\n")[0])
        try:
            if self.mode == "hang":
                # Drain whatever comes until told to stop; answer nothing.
                while not self._stop.is_set():
                    try:
                        if not s.recv(65536):
                            break
                    except socket.timeout:
                        continue
            elif self.mode == "garbage":
                s.sendall(b"SSH-2.0-definitely-not-http\r\n\r\n")
            elif self.mode == "truncate":
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
                          b"Content-Type: application/octet-stream\r\n"
                          b"Docker-Distribution-Api-Version: registry/2.0"
                          b"\r\n\r\n" + b"x" * 10)
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self._stop.set()
        self._ls.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass
        self._thread.join(timeout=5)


@pytest.fixture
def misbehaving():
    made = []

    def make(mode):
        u = MisbehavingUpstream(mode)
        made.append(u)
        return u
    yield make
    for u in made:
        u.stop()


# ---------------------------------------------------------------------------
# Upstream failures.

MANIFEST = "/v2/some/repo/manifests/v1"
BLOB = "/v2/some/repo/blobs/sha256:" + "0" * 64


def test_upstream_down_is_502(start_gateway):
    port = free_port()           # nobody listens here
    gw = start_gateway(gw_config("http://127.0.0.1:%d" % port,
                                 timeouts={"upstream_connect": 2}))
    for target in (MANIFEST, BLOB, MANIFEST):
        r = get(gw, target)
        assert_oci_error(r, 502, ["UNAVAILABLE"])
    assert_alive(gw)


def test_hanging_upstream_is_504(start_gateway, misbehaving):
    up = misbehaving("hang")
    gw = start_gateway(gw_config(up.url, timeouts={
        "upstream_connect": 1, "upstream_response": 1}))
    r = get(gw, MANIFEST)
    assert_oci_error(r, 504, ["UNAVAILABLE"])
    assert any(b"/some/repo/manifests/v1" in h for h in up.heads), up.heads
    # Twice in a row: the first timeout left nothing behind.
    r = get(gw, BLOB)
    assert_oci_error(r, 504, ["UNAVAILABLE"])
    assert_alive(gw)


@pytest.mark.parametrize("mode", ["close", "garbage"])
def test_broken_upstream_answer_is_502(start_gateway, misbehaving, mode):
    up = misbehaving(mode)
    gw = start_gateway(gw_config(up.url, timeouts={
        "upstream_connect": 2, "upstream_response": 5}))
    r = get(gw, MANIFEST)
    assert_oci_error(r, 502, ["UNAVAILABLE"])
    assert up.connections >= 1
    assert_alive(gw)


def test_upstream_cut_mid_body_is_not_passed_off_as_complete(
        start_gateway, misbehaving):
    # The status line is already out when the upstream dies: the only honest
    # signal left is to cut the client connection, not to end the body
    # cleanly (a terminating chunk would make a short blob look whole).
    up = misbehaving("truncate")
    gw = start_gateway(gw_config(up.url, timeouts={
        "upstream_connect": 2, "upstream_response": 5}))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        c.send_request("GET", BLOB)
        try:
            r = c.read_response()
        except rawhttp.PeerClosed:
            r = None
        if r is not None:
            # Only acceptable if the gateway turned it into an error before
            # sending the head.
            assert r.status in (502, 504), (r.status, len(r.body))
    assert_alive(gw)


# ---------------------------------------------------------------------------
# Request bodies that stop.

def test_truncated_upload_body_is_not_completed(start_registry,
                                                start_gateway):
    reg = start_registry(name="up1")
    cfg = gw_config(reg.url)
    cfg["log"] = {"level": "debug"}
    gw = start_gateway(cfg)
    data = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    loc = start_upload(gw.url, "trunc/blob")
    sep = "&" if "?" in loc else "?"
    mark = reg.mark()
    seen = len(gw.log_text())
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        c.send(rawhttp.build("PUT", loc + sep + "digest=" + digest,
                             [("Content-Type", "application/octet-stream"),
                              ("Content-Length", "1000")], data[:10],
                             host=gw.host))
        # Hold the connection until the gateway has started the upstream
        # PUT, so that there is an upstream request to abort.
        wait_for(lambda: "proxy sent head" in gw.log_text()[seen:],
                 timeout=CLIENT_TIMEOUT, what="the upstream PUT to start")
    # The client is gone.  The gateway must abort the upstream request: the
    # registry logs a request only when its handler returns, which for a
    # PUT waiting on 990 more bytes happens only when the gateway closes
    # that upstream connection.  It must not have succeeded.
    puts = wait_for(lambda: [e for e in reg.access_log(since=mark)
                             if e["method"] == "PUT"],
                    timeout=CLIENT_TIMEOUT,
                    what="the upstream PUT to be aborted")
    assert not any(200 <= e["status"] < 300 for e in puts), puts
    assert not reg.has_blob("trunc/blob", digest)
    assert_serves(gw)


def test_stalled_upload_body_times_out(start_registry, start_gateway):
    reg = start_registry(name="up1")
    gw = start_gateway(gw_config(reg.url, timeouts={"body": 1}))
    data = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    loc = start_upload(gw.url, "stall/blob")
    sep = "&" if "?" in loc else "?"
    mark = reg.mark()
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        c.send(rawhttp.build("PUT", loc + sep + "digest=" + digest,
                             [("Content-Type", "application/octet-stream"),
                              ("Content-Length", "1000")], data[:10],
                             host=gw.host))
        # Hold the socket open, sending nothing more.  The gateway must give
        # up on its own (body timeout 1 s); a generous client deadline.
        closed = c.wait_closed(timeout=CLIENT_TIMEOUT)
        assert closed, "gateway kept a stalled upload open for %ss" % \
            CLIENT_TIMEOUT
        if c.buf:
            assert c.buf.split(b" ", 2)[1] in (b"408", b"400", b"502",
                                               b"504"), c.buf[:200]
    puts = wait_for(lambda: [e for e in reg.access_log(since=mark)
                             if e["method"] == "PUT"],
                    timeout=CLIENT_TIMEOUT,
                    what="the upstream PUT to be aborted")
    assert not any(200 <= e["status"] < 300 for e in puts), puts
    assert not reg.has_blob("stall/blob", digest)
    assert_serves(gw)


def test_complete_upload_through_gateway_control(start_registry,
                                                 start_gateway):
    # Control for the two tests above: the same PUT, whole, succeeds.
    reg = start_registry(name="up1")
    gw = start_gateway(gw_config(reg.url, timeouts={"body": 1}))
    data = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = start_upload(gw.url, "whole/blob")
    sep = "&" if "?" in loc else "?"
    r = send(gw, rawhttp.build("PUT", loc + sep + "digest=" + digest,
                               [("Content-Type", "application/octet-stream"),
                                ("Content-Length", "1000")], data,
                               host=gw.host))
    assert r.status == 201, (r.status, r.body[:300])
    assert reg.has_blob("whole/blob", digest)


# ---------------------------------------------------------------------------
# A client that never reads: memory is bounded by the watermarks.

BIG = 256 << 20
RSS_BOUND_KIB = 64 << 10


def _status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def test_never_reading_client_does_not_grow_memory(start_registry,
                                                   start_gateway):
    reg = start_registry(name="up1")
    digest = push_big_blob(reg.url, "big/blob", BIG)
    gw = start_gateway(gw_config(reg.url))
    target = "/v2/big/blob/blobs/" + digest

    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _status_kib(gw.pid, "VmRSS"))
            except (OSError, KeyError, ValueError):
                return
            stop.wait(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT,
                             rcvbuf=4096) as stalled:
            stalled.send_request("GET", target)
            assert stalled.peek_available(CLIENT_TIMEOUT), \
                "no response started for the stalled client"

            # Meanwhile a second client pulls the whole blob.
            c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
            try:
                c.request("GET", target)
                r = c.getresponse()
                assert r.status == 200, r.status
                h = hashlib.sha256()
                n = 0
                deadline = time.monotonic() + 300
                while n < BIG + 1 and time.monotonic() < deadline:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
                assert n == BIG, n
                assert "sha256:" + h.hexdigest() == digest
            finally:
                c.close()

            # Observation window: with no backpressure a gateway would
            # pull the rest of the 256 MiB from loopback well within it.
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end and pid_alive(gw.pid):
                stop.wait(0.1)
            hwm = _status_kib(gw.pid, "VmHWM")
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert peak[0] > 0
    assert peak[0] < RSS_BOUND_KIB, "VmRSS peaked at %d KiB" % peak[0]
    assert hwm < RSS_BOUND_KIB, "VmHWM %d KiB" % hwm
    assert_serves(gw)


# ---------------------------------------------------------------------------
# Keep-alive and pipelining.

@pytest.fixture
def reg_blobs(start_registry):
    """A registry holding three small blobs of distinct sizes in ka/repo."""
    reg = start_registry(name="up1")
    blobs = []
    for size in (1 << 20, 777, 70000):
        data = os.urandom(size)
        blobs.append((push_blob(reg.url, "ka/repo", data), data))
    return reg, blobs


def test_keepalive_serves_several_requests(reg_blobs, start_gateway):
    reg, blobs = reg_blobs
    gw = start_gateway(gw_config(reg.url))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        for _ in range(2):
            for digest, data in blobs:
                c.send_request("GET", "/v2/ka/repo/blobs/" + digest)
                r = c.read_response()
                assert r.status == 200 and r.body == data, r
                assert not r.wants_close()
            c.send_request("HEAD", "/v2/ka/repo/blobs/" + blobs[0][0])
            r = c.read_response(method="HEAD")
            assert r.status == 200, r
            assert r.header("Content-Length") == str(len(blobs[0][1]))
            c.send_request("GET", "/v2/")
            r = c.read_response()
            assert r.status == 200
            assert r.header("Docker-Distribution-Api-Version") == API_VERSION
            # An error answered by the gateway itself keeps the connection.
            c.send_request("GET", "/v2/ka/repo/blobs/sha256:zz")
            r = c.read_response()
            assert_oci_error(r, 400, ["DIGEST_INVALID"])
        assert c.is_open_now()


def test_pipelined_requests_answered_in_order(reg_blobs, start_gateway):
    reg, blobs = reg_blobs
    gw = start_gateway(gw_config(reg.url))
    reqs = b""
    for digest, _ in blobs:
        reqs += rawhttp.build("GET", "/v2/ka/repo/blobs/" + digest,
                              host=gw.host)
    reqs += rawhttp.build("HEAD", "/v2/ka/repo/blobs/" + blobs[1][0],
                          host=gw.host)
    reqs += rawhttp.build("GET", "/v2/", host=gw.host)
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        c.send(reqs)
        for digest, data in blobs:
            r = c.read_response()
            assert r.status == 200, r
            assert r.body == data, "pipelined responses out of order"
        r = c.read_response(method="HEAD")
        assert r.status == 200 and \
            r.header("Content-Length") == str(len(blobs[1][1])), r.headers
        r = c.read_response()
        assert r.status == 200 and r.body.strip() in (b"{}", b""), r.body
        assert c.is_open_now()


def test_pipelined_local_error_stays_in_order(reg_blobs, start_gateway):
    # A 400 the gateway makes itself must not overtake the proxied answer
    # queued before it, nor be overtaken by the one after it.
    reg, blobs = reg_blobs
    gw = start_gateway(gw_config(reg.url))
    reqs = (rawhttp.build("GET", "/v2/ka/repo/blobs/" + blobs[0][0],
                          host=gw.host) +
            rawhttp.build("GET", "/v2/UPPER/manifests/t", host=gw.host) +
            rawhttp.build("GET", "/v2/ka/repo/blobs/" + blobs[2][0],
                          host=gw.host) +
            rawhttp.build("GET", "/v2/ka/repo/manifests/" + "t" * 129,
                          host=gw.host) +
            rawhttp.build("GET", "/v2/ka/repo/blobs/" + blobs[1][0],
                          host=gw.host))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        c.send(reqs)
        r = c.read_response()
        assert r.status == 200 and r.body == blobs[0][1], r
        r = c.read_response()
        assert_oci_error(r, 400, ["NAME_INVALID"])
        r = c.read_response()
        assert r.status == 200 and r.body == blobs[2][1], r
        r = c.read_response()
        assert_oci_error(r, 404, ["MANIFEST_UNKNOWN"])
        r = c.read_response()
        assert r.status == 200 and r.body == blobs[1][1], r
    assert_serves(gw)


def test_connection_close_is_honoured(reg_blobs, start_gateway):
    reg, blobs = reg_blobs
    gw = start_gateway(gw_config(reg.url))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT) as c:
        c.send_request("GET", "/v2/ka/repo/blobs/" + blobs[1][0],
                       [("Connection", "close")])
        r = c.read_response()
        assert r.status == 200 and r.body == blobs[1][1]
        assert c.wait_closed(timeout=CLIENT_TIMEOUT), \
            "connection kept open after Connection: close"
    assert_serves(gw)
