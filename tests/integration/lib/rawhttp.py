"""A raw-socket HTTP/1.1 client for tests that must send what no library will.

urllib, requests and http.client all normalise what they send (they fix up
paths, refuse obs-fold, compute Content-Length).  Bad-input tests need the
opposite: put exact bytes on the wire, then parse whatever comes back
without trusting it.  This module does only that:

- `RawConn` owns one TCP connection to a loopback address.  `send()` writes
  bytes as given; `read_response()` parses one response (status line,
  headers kept as an ordered list so repeated fields survive, body framed by
  Content-Length, chunked encoding or connection close); `wait_closed()`
  polls until the peer closes, with a deadline.
- `request()` is the one-shot form: connect, send, read one response.
- `build()` assembles a request from parts without "fixing" anything.

Every blocking call has a timeout.  Nothing here retries or sleeps.
"""

import json
import select
import socket
import time

__all__ = [
    "RawConn", "Response", "PeerClosed", "ResponseTimeout", "build",
    "request",
]

CRLF = b"\r\n"

# Hard ceilings so a broken server cannot make a test eat memory.
MAX_HEAD = 1 << 20
MAX_BODY = 64 << 20


class PeerClosed(Exception):
    """The peer closed (or reset) before a complete response arrived.

    `partial` holds whatever bytes of the response were read.
    """

    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


class ResponseTimeout(Exception):
    """No complete response within the deadline.  `partial` as above."""

    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


class Response:
    """One parsed response.

    `headers` is a list of (name, value) in wire order; names keep their
    case, lookups through `header()`/`header_all()` ignore it.  `body` is
    the decoded body (chunked framing removed).  `chunked` says how it was
    framed; `closed_after` is True when the body was delimited by close.
    """

    def __init__(self, version, status, reason, headers, body, chunked,
                 closed_after, trailers=()):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.chunked = chunked
        self.closed_after = closed_after
        self.trailers = list(trailers)

    def header_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name, default=None):
        vals = self.header_all(name)
        return vals[0] if vals else default

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def error_codes(self):
        """The `code` of each entry of an OCI error body, [] if none."""
        try:
            doc = self.json()
        except (ValueError, UnicodeDecodeError):
            return []
        if not isinstance(doc, dict) or \
                not isinstance(doc.get("errors"), list):
            return []
        return [e.get("code") for e in doc["errors"] if isinstance(e, dict)]

    def wants_close(self):
        """True when the server announced it will close the connection."""
        conn = ",".join(self.header_all("Connection")).lower()
        if "close" in [t.strip() for t in conn.split(",")]:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in conn

    def __repr__(self):
        return "<Response %s %s %s, %d body bytes>" % (
            self.version, self.status, self.reason, len(self.body))


def build(method, target, headers=(), body=b"", host="127.0.0.1",
          version="HTTP/1.1", add_host=True):
    """Assemble a request exactly as described; nothing is fixed up.

    `headers` is a list of (name, value) or raw header lines (bytes or
    str, without CRLF).  Host is added first unless `add_host` is False or
    a Host header is already present.  No Content-Length is invented.
    """
    def b(x):
        return x if isinstance(x, bytes) else x.encode("latin-1")

    lines = [b(method) + b" " + b(target) + b" " + b(version)]
    have_host = False
    rest = []
    for h in headers:
        if isinstance(h, (bytes, str)):
            line = b(h)
        else:
            line = b(h[0]) + b": " + b(h[1])
        if line.lower().startswith(b"host:"):
            have_host = True
        rest.append(line)
    if add_host and not have_host:
        lines.append(b"Host: " + b(host))
    lines.extend(rest)
    return CRLF.join(lines) + CRLF + CRLF + b(body)


class RawConn:
    """One client connection to host:port.

    `rcvbuf` sets SO_RCVBUF before connect, which is what a test needs to
    make a slow reader whose kernel buffer fills quickly.  `source` binds
    the client end to that loopback address first (e.g. "127.0.0.2"), so
    a test can play several client addresses.
    """

    def __init__(self, host, port, timeout=10.0, rcvbuf=None, source=None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            if source is not None:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, data):
        """Write all of `data`.  Raises OSError (e.g. EPIPE) if the peer
        has gone away; callers testing "closed" expect that."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_request(self, method, target, headers=(), body=b"", **kw):
        self.send(build(method, target, headers, body,
                        host=kw.pop("host", "%s:%d" % (self.host, self.port)),
                        **kw))

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    # -- reading ------------------------------------------------------

    def _fill(self, deadline, partial_from=0):
        """Read more bytes into self.buf; False on EOF."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResponseTimeout("no complete response before deadline",
                                  self.buf[partial_from:])
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(256 * 1024)
        except socket.timeout:
            raise ResponseTimeout("no complete response before deadline",
                                  self.buf[partial_from:]) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_line(self, deadline, limit):
        while True:
            i = self.buf.find(CRLF)
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if len(self.buf) > limit:
                raise ValueError("line longer than %d bytes" % limit)
            if not self._fill(deadline):
                raise PeerClosed("connection closed mid-line", self.buf)

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise PeerClosed("connection closed mid-body (%d of %d)"
                                 % (len(self.buf), n), self.buf)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, timeout=None, method="GET", skip_1xx=True,
                      max_body=MAX_BODY):
        """Parse and return one Response.

        Raises PeerClosed if the connection ends before a full response
        (including the case where nothing at all was sent back), and
        ResponseTimeout when `timeout` (default: the connection's) passes.
        `method` matters only for HEAD, whose responses carry no body.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None
                                       else timeout)
        while True:
            resp = self._read_one(deadline, method, max_body)
            if skip_1xx and 100 <= resp.status < 200 and resp.status != 101:
                continue
            return resp

    def _read_one(self, deadline, method, max_body):
        # Tolerate stray CRLFs between responses (RFC 9112 section 2.2).
        while True:
            while len(self.buf) < 2:
                if not self._fill(deadline):
                    if self.buf in (b"", b"\r"):
                        raise PeerClosed("connection closed before any "
                                         "response", self.buf)
                    break
            if self.buf.startswith(CRLF):
                self.buf = self.buf[2:]
                continue
            break
        start = self.buf
        status_line = self._read_line(deadline, MAX_HEAD)
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or \
                not parts[1].isdigit() or len(parts[1]) != 3:
            raise ValueError("bad status line %r" % status_line[:200])
        version = parts[0].decode("latin-1")
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""

        headers = []
        size = 0
        while True:
            try:
                line = self._read_line(deadline, MAX_HEAD)
            except PeerClosed as e:
                raise PeerClosed("connection closed inside headers",
                                 start) from e
            if line == b"":
                break
            size += len(line)
            if size > MAX_HEAD:
                raise ValueError("response head larger than %d" % MAX_HEAD)
            if line[:1] in (b" ", b"\t"):
                raise ValueError("obs-fold in response header %r" % line)
            name, sep, value = line.partition(b":")
            if not sep:
                raise ValueError("header line without colon %r" % line)
            headers.append((name.decode("latin-1"),
                            value.strip(b" \t").decode("latin-1")))

        def hvals(n):
            return [v for k, v in headers if k.lower() == n]

        te = ",".join(hvals("transfer-encoding")).lower()
        cls = hvals("content-length")
        no_body = (method.upper() == "HEAD" or 100 <= status < 200 or
                   status in (204, 304))
        body = b""
        chunked = False
        closed_after = False
        trailers = []
        if no_body:
            pass
        elif te:
            codings = [t.strip() for t in te.split(",") if t.strip()]
            if codings[-1:] != ["chunked"]:
                raise ValueError("response Transfer-Encoding %r" % te)
            chunked = True
            body, trailers = self._read_chunked(deadline, max_body)
        elif cls:
            if len(set(cls)) != 1 or not cls[0].isdigit():
                raise ValueError("bad response Content-Length %r" % cls)
            n = int(cls[0])
            if n > max_body:
                raise ValueError("response body of %d bytes too big" % n)
            body = self._read_exact(n, deadline)
        else:
            # Delimited by close.
            while self._fill(deadline):
                if len(self.buf) > max_body:
                    raise ValueError("close-delimited body too big")
            body, self.buf = self.buf, b""
            closed_after = True
        return Response(version, status, reason, headers, body, chunked,
                        closed_after, trailers)

    def _read_chunked(self, deadline, max_body):
        out = []
        total = 0
        while True:
            line = self._read_line(deadline, 4096)
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise ValueError("bad chunk size line %r" % line) from None
            if size == 0:
                break
            total += size
            if total > max_body:
                raise ValueError("chunked body too big")
            out.append(self._read_exact(size, deadline))
            if self._read_exact(2, deadline) != CRLF:
                raise ValueError("chunk not followed by CRLF")
        trailers = []
        while True:
            line = self._read_line(deadline, MAX_HEAD)
            if line == b"":
                break
            trailers.append(line.decode("latin-1"))
        return b"".join(out), trailers

    def wait_closed(self, timeout=10.0, drain_limit=MAX_BODY):
        """Poll until the peer closes the connection; True if it did.

        Bytes that arrive meanwhile are kept in self.buf (up to
        `drain_limit`), so a caller can still parse a final response
        from them.  A reset counts as closed.
        """
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.eof = True
                break
            if len(self.buf) < drain_limit:
                self.buf += data
        return True

    def is_open_now(self):
        """True if the peer has neither closed nor sent anything pending."""
        r, _, _ = select.select([self.sock], [], [], 0)
        if not r:
            return True
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except (ConnectionResetError, BrokenPipeError):
            return False
        return bool(data)

    def peek_available(self, timeout):
        """Wait until at least one response byte is readable, without
        consuming it.  Returns True if data arrived before `timeout`."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except (ConnectionResetError, BrokenPipeError):
            return False


def request(host, port, data, timeout=10.0, method=None):
    """Connect, send raw `data`, read one response, close.

    `method` defaults to the first word of `data` (for HEAD handling).
    """
    if method is None:
        method = data.split(b" ", 1)[0].decode("latin-1")
    with RawConn(host, port, timeout=timeout) as c:
        c.send(data)
        return c.read_response(method=method)
