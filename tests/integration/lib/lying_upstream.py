"""A TEST DOUBLE for a misbehaving registry upstream ("lying upstream").

Real registries are used everywhere else; this small HTTP server exists
only to produce the faults a real docker-registry will not: a blob whose
bytes do not match its digest, a body cut short, a transfer that stalls
half way until the test lets it go on, a 404 that stalls before its head
(for repositories other than the ones a blob is served for), 429 answers
with Retry-After and Docker Hub's ratelimit-* headers, and 5xx.  Canned
answers put exact status lines and header fields on the wire for protocol
faults a real registry never makes (a 204 with Content-Length, fields
named in Connection).  It runs in a thread of the test process on
127.0.0.1, counts every request it gets, and counts the connections open
to it (now and at most), so a test can bound the upstream connections the
gateway holds.  A stalled answer ends as soon as its peer closes the
connection.

    up = LyingUpstream()
    up.add_blob(data, mode="wrong")  # "ok", "truncate", "stall", "stall_wrong"
                                     # "extra" (EXTRA_ANSWER after the body),
                                     # "small" (100-byte segments), "reset"
    up.add_blob(data, mode="stall", stall_at=1 << 20); ...; up.release(d)
    up.add_blob(data, repos=["b"], stall_404=True)  # "a": 404 on release
    up.open_connections(), up.max_open, up.answering()  # connections
    up.accepted                                 # connections ever made
    up.set_tag("app", "v1", manifest_bytes, media_type)
    up.fail_all(429, retry_after="17")     # every later request
    up.canned("DELETE", "/v2/app/x", 204, [("Content-Length", "0")])
    up.requests("GET", "/v2/app/blobs/" + d)   # how many so far
    up.stop()
    liar_upstream(up)        # its entry in the gateway's upstreams
"""

import hashlib
import http.server
import select
import socket
import threading
import time

from .util import free_port

RATELIMIT_LIMIT = "100;w=21600"
RATELIMIT_REMAINING = "42;w=21600"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


STALL_MAX = 120     # seconds any stall lasts at most

# mode "extra": sent right after a blob's body, as if answering ahead.
EXTRA_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 17\r\n\r\n{\"poisoned\":true}")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def handle(self):
        up = self.server.up
        with up.lock:
            up.open += 1
            up.accepted += 1
            up.max_open = max(up.max_open, up.open)
        try:
            super().handle()
        finally:
            with up.lock:
                up.open -= 1

    def _peer_closed(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(
                1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stall(self, gate):
        """Wait for the gate; False when the peer left first."""
        end = time.monotonic() + STALL_MAX
        while not gate.wait(0.05):
            if self._peer_closed() or time.monotonic() > end:
                self.close_connection = True
                return False
        return True

    def _count(self):
        up = self.server.up
        with up.lock:
            key = (self.command, self.path.split("?")[0])
            up.counts[key] = up.counts.get(key, 0) + 1
            fail = up.fail

        if fail is not None:
            status, retry_after = fail
            body = (b'{"errors":[{"code":"TOOMANYREQUESTS","message":'
                    b'"slow down"}]}' if status == 429 else b"oops\n")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("RateLimit-Limit", RATELIMIT_LIMIT)
            self.send_header("RateLimit-Remaining", "0;w=21600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return True
        return False

    def _send_head(self, status, ctype, length, digest=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("RateLimit-Limit", RATELIMIT_LIMIT)
        self.send_header("RateLimit-Remaining", RATELIMIT_REMAINING)
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()

    def _not_found(self, code):
        body = ('{"errors":[{"code":"%s","message":"unknown"}]}' %
                code).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _canned(self):
        """Send the canned answer for this request, if one is set."""
        up = self.server.up
        with up.lock:
            c = up.canned_replies.get((self.command,
                                       self.path.split("?")[0]))
        if c is None:
            return False
        status, headers, body = c
        # Raw bytes: send_response() would add Server and Date only.
        self.wfile.write(("HTTP/1.1 %d Canned\r\n" % status).encode())
        for k, v in headers:
            self.wfile.write(("%s: %s\r\n" % (k, v)).encode("latin-1"))
        self.wfile.write(b"\r\n")
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        return True

    def _serve(self):
        if self._count():
            return
        if self._canned():
            return
        up = self.server.up
        path = self.path.split("?")[0]
        if path == "/v2/" or path == "/v2":
            self._send_head(200, "application/json", 2)
            if self.command != "HEAD":
                self.wfile.write(b"{}")
            return
        parts = path.split("/")
        # /v2/<name...>/blobs/<digest>  or  /v2/<name...>/manifests/<ref>
        if len(parts) < 5:
            self._not_found("NAME_UNKNOWN")
            return
        kind, ref = parts[-2], parts[-1]
        name = "/".join(parts[2:-2])
        if kind == "manifests":
            with up.lock:
                m = up.manifests.get((name, ref)) or up.by_digest.get(ref)
            if m is None:
                self._not_found("MANIFEST_UNKNOWN")
                return
            data, mtype = m
            self._send_head(200, mtype, len(data), sha256(data))
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        if kind != "blobs":
            self._not_found("NAME_UNKNOWN")
            return
        with up.lock:
            b = up.blobs.get(ref)
            only = up.repos.get(ref)
        if b is None:
            self._not_found("BLOB_UNKNOWN")
            return
        data, mode, stall_at, gate = b
        if only is not None and name not in only[0]:
            if only[1] and not self._stall(gate):
                return
            self._not_found("BLOB_UNKNOWN")
            return
        self._send_head(200, "application/octet-stream", len(data), ref)
        if self.command == "HEAD":
            return
        if mode == "ok":
            self.wfile.write(data)
        elif mode == "wrong":
            # Same length, one byte changed near the end.
            bad = bytearray(data)
            bad[-2] ^= 0xFF
            self.wfile.write(bytes(bad))
        elif mode == "extra":
            # The body, then a whole second answer no one asked for.
            self.wfile.write(data + EXTRA_ANSWER)
        elif mode == "small":
            # The body in 100-byte segments (as a slow link delivers it).
            self.wfile.flush()
            self.connection.setsockopt(socket.IPPROTO_TCP,
                                       socket.TCP_NODELAY, 1)
            for i in range(0, len(data), 100):
                self.connection.sendall(data[i:i + 100])
        elif mode == "reset":
            # Half the body, then a reset (SO_LINGER 0), not a FIN.
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
        elif mode == "truncate":
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif mode in ("stall", "stall_wrong"):
            # stall_wrong: the bytes after the stall are not the blob's.
            self.wfile.write(data[:stall_at])
            self.wfile.flush()
            if not self._stall(gate):
                return
            rest = bytearray(data[stall_at:])
            if mode == "stall_wrong":
                rest[-1] ^= 0xFF
            self.wfile.write(bytes(rest))
        self.wfile.flush()

    def do_GET(self):  # noqa: N802
        up = self.server.up
        with up.lock:
            up.active += 1
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with up.lock:
                up.active -= 1

    do_HEAD = do_GET

    def do_DELETE(self):  # noqa: N802
        try:
            if not self._count() and not self._canned():
                self._not_found("NAME_UNKNOWN")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class LyingUpstream:
    """The test double described in the module docstring.  Attributes:
    port, host ("127.0.0.1:P"), url."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.blobs = {}
        self.manifests = {}
        self.by_digest = {}
        self.repos = {}
        self.fail = None
        self.open = 0
        self.max_open = 0
        self.accepted = 0       # connections ever accepted
        self.active = 0
        self.canned_replies = {}
        self.port = free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.host
        self.name = "liar"
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                     _Handler)
        self.httpd.daemon_threads = True
        self.httpd.up = self
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def add_blob(self, data, mode="ok", stall_at=0, repos=None,
                 stall_404=False):
        """Serve `data` under its own digest the way `mode` says; returns
        the digest.  With `repos`, only for those repositories: the others
        get 404, after the gate opens (release) when `stall_404`."""
        d = sha256(data)
        with self.lock:
            self.blobs[d] = (data, mode, stall_at, threading.Event())
            if repos is not None:
                self.repos[d] = (list(repos), stall_404)
        return d

    def open_connections(self):
        with self.lock:
            return self.open

    def answering(self):
        """Requests being answered now (a stalled one included)."""
        with self.lock:
            return self.active

    def set_mode(self, digest, mode):
        with self.lock:
            data, _, stall_at, gate = self.blobs[digest]
            self.blobs[digest] = (data, mode, stall_at, gate)

    def release(self, digest):
        """Let stalled transfers of `digest` finish."""
        with self.lock:
            gate = self.blobs[digest][3]
        gate.set()

    def set_tag(self, name, tag, data, media_type):
        with self.lock:
            self.manifests[(name, tag)] = (data, media_type)
            self.by_digest[sha256(data)] = (data, media_type)
        return sha256(data)

    def fail_all(self, status, retry_after=None):
        """Answer every later request with `status` (None: stop)."""
        with self.lock:
            self.fail = None if status is None else (status, retry_after)

    def canned(self, method, path, status, headers, body=b""):
        """Answer `method` on `path` (no query) with exactly this status
        line and these (name, value) fields, then `body` as given: no
        field is added or checked."""
        with self.lock:
            self.canned_replies[(method, path)] = (status, list(headers),
                                                   body)

    def requests(self, method, path):
        with self.lock:
            return self.counts.get((method, path), 0)

    def stop(self):
        with self.lock:
            for b in self.blobs.values():
                b[3].set()
        self.httpd.shutdown()
        self.httpd.server_close()


def liar_upstream(up, **kw):
    """The gateway's upstreams entry for `up`: name and prefix "liar", its
    host; kw adds or replaces keys."""
    u = {"name": "liar", "url": up.url, "prefix": "liar",
         "hosts": [up.host]}
    u.update(kw)
    return u
