"""A TEST DOUBLE for a hostile registry upstream, and the local "secret"
service it aims the gateway at.

Real registries are used everywhere else; this double exists only for the
faults a real docker-registry will not produce on demand:

- redirects anywhere (`307 http://127.0.0.1:<port>/secret`, redirect
  chains on itself, https -> http), to test the gateway's SSRF rules;
- a 401 challenge whose realm is wherever the test says (another host, a
  plain-http token service), and a token service of its own that can be
  told to refuse tokens it issued before (revocation);
- a kept-alive connection closed right after a POST or DELETE was read
  and before any answer, to test which requests the gateway retries;
- a token service that drips its answer a byte at a time (DripService),
  to test that a sub-request's whole answer is bounded in time.

It runs in threads of the test process on a loopback address, optionally
with TLS, and records every request (method, path, headers).

    secret = SecretService()                   # counts what reaches it
    up = HostileUpstream()                     # or tls=(cert, key)
    up.blob(data)                              # -> digest, served 200
    up.route("GET", path, 307, {"Location": url})
    up.require_token(realm=None)               # Bearer auth, own /token
    up.revoke(token); up.revoke_all = True
    up.drop_after_read = {"POST", "DELETE"}    # on reused connections
    up.token_pad = 100000                      # an oversized token answer
    up.count("GET", path); up.seen(...)
"""

import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import socket
import ssl
import threading



def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_ca_and_cert(d, hosts=("127.0.0.1",)):
    """A throw-away CA and a server certificate it signs for `hosts` (IP
    addresses or names).  Returns (ca_path, cert_path, key_path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def pem_key(k, path):
        with open(path, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))

    now = datetime.datetime.utcnow()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            "hostile-upstream test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name)
          .issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(
                NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(str(d), n) for n in ("ca.pem", "srv.pem",
                                                 "srv.key")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    pem_key(key, paths[2])
    return tuple(paths)


class _Server:
    """A threading HTTP server on addr (loopback), TLS when tls=(cert,
    key); handler classes read their state from self.server.owner."""

    def __init__(self, owner, handler, addr="127.0.0.1", tls=None):
        self.lock = threading.Lock()
        self.log = []           # (method, path, {header: value})
        self.addr = addr
        # Port 0: the kernel picks a free one on exactly this address.
        self.httpd = http.server.ThreadingHTTPServer((addr, 0), handler)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        self.host = "%s:%d" % (addr, self.port)
        self.url = "%s://%s" % (self.scheme, self.host)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket,
                                                server_side=True)
        self.httpd.daemon_threads = True
        self.httpd.owner = owner
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def record(self, h):
        with self.lock:
            self.log.append((h.command, h.path, dict(h.headers.items())))

    def count(self, method=None, path=None):
        with self.lock:
            return len([x for x in self.log
                        if (method is None or x[0] == method) and
                        (path is None or x[1].split("?")[0] == path)])

    def seen(self):
        with self.lock:
            return list(self.log)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.nreq = 0           # requests on this connection

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""


class _SecretHandler(_Base):
    def _serve(self):
        srv = self.server.owner
        srv.record(self)
        self._read_body()
        self.reply(200, srv.body, {"Content-Type":
                                   "application/octet-stream"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve


class SecretService(_Server):
    """A "secret" local HTTP service: answers everything 200 with `body`
    and records every request.  It must never see one from the gateway
    unless a test allowed it."""

    def __init__(self, addr="127.0.0.1", body=b"the secret\n", tls=None):
        self.body = body
        super().__init__(self, _SecretHandler, addr=addr, tls=tls)


class _UpHandler(_Base):
    def _serve(self):
        up = self.server.owner
        self.nreq += 1
        up.record(self)
        body = self._read_body()
        path = self.path.split("?")[0]
        with up.lock:
            drop = self.command in up.drop_after_read and self.nreq > 1
            route = up.routes.get((self.command, path))
            if route is None and self.command == "HEAD":
                route = up.routes.get(("GET", path))
            auth = up.auth
        if drop:
            # Read, then close without a word: a pooled connection the
            # upstream dropped after the request went out.
            self.close_connection = True
            return
        if path == "/token" and up.token_service:
            self._token()
            return
        if auth is not None and path.startswith("/v2") and \
                not self._authorized():
            realm = auth or (up.url + "/token")
            self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED",'
                       b'"message":"token please"}]}',
                       {"Content-Type": "application/json",
                        "WWW-Authenticate": 'Bearer realm="%s",'
                        'service="hostile",scope="repository:app:pull"' %
                        realm})
            return
        if route is None:
            if path in ("/v2/", "/v2"):
                self.reply(200, b"{}", {"Content-Type": "application/json"})
                return
            if self.command == "POST" and path.endswith("/blobs/uploads/"):
                self.reply(202, b"", {"Location": path + "u1",
                                      "Docker-Upload-UUID": "u1"})
                return
            if self.command == "DELETE":
                self.reply(202)
                return
            self.reply(404, b'{"errors":[{"code":"NOT_FOUND",'
                       b'"message":"unknown"}]}',
                       {"Content-Type": "application/json"})
            return
        status, headers, data = route
        self.reply(status, data, headers)

    def _authorized(self):
        up = self.server.owner
        h = self.headers.get("Authorization", "")
        if not h.startswith("Bearer "):
            return False
        tok = h[7:].strip()
        with up.lock:
            return tok in up.issued and tok not in up.revoked and \
                not up.revoke_all

    def _token(self):
        up = self.server.owner
        with up.lock:
            up.ntokens += 1
            tok = "tok-%d" % up.ntokens
            up.issued.add(tok)
        with up.lock:
            pad = up.token_pad
        doc = {"token": tok, "expires_in": 300}
        if pad:
            doc["padding"] = "x" * pad
        self.reply(200, json.dumps(doc).encode(),
                   {"Content-Type": "application/json"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def do_PATCH(self):  # noqa: N802
        self._serve()


class HostileUpstream(_Server):
    """The double described in the module docstring.  Attributes: url,
    host, port, scheme, routes, issued, revoked, revoke_all, ntokens,
    drop_after_read."""

    def __init__(self, addr="127.0.0.1", tls=None):
        self.routes = {}
        self.auth = None            # None: open; "": own realm; else URL
        self.token_service = False
        self.issued = set()
        self.revoked = set()
        self.revoke_all = False
        self.ntokens = 0
        self.drop_after_read = set()
        self.token_pad = 0          # bytes of padding in token answers
        super().__init__(self, _UpHandler, addr=addr, tls=tls)

    def route(self, method, path, status, headers=None, body=b""):
        with self.lock:
            self.routes[(method, path)] = (status, dict(headers or {}),
                                           body)

    def blob(self, data, repo="app"):
        d = sha256(data)
        self.route("GET", "/v2/%s/blobs/%s" % (repo, d), 200,
                   {"Content-Type": "application/octet-stream",
                    "Docker-Content-Digest": d}, data)
        return d

    def manifest(self, repo, ref, data, media_type):
        """Serve a manifest under its tag `ref` and its digest."""
        for r in (ref, sha256(data)):
            self.route("GET", "/v2/%s/manifests/%s" % (repo, r), 200,
                       {"Content-Type": media_type,
                        "Docker-Content-Digest": sha256(data)}, data)
        return sha256(data)

    def require_token(self, realm=""):
        """Answer /v2/... 401 with a Bearer challenge naming `realm` (""
        means this double's own /token, which then issues tokens)."""
        with self.lock:
            self.auth = realm
            self.token_service = True

    def revoke(self, token):
        with self.lock:
            self.revoked.add(token)


class DripService:
    """A "token service" on addr that answers every request with a head
    announcing `length` bytes, then sends one byte every `every` seconds,
    at most `count` bytes, stopping early when the peer has gone.
    .sent[i] is how many body bytes connection i took before it ended;
    .done(i) whether connection i has ended."""

    def __init__(self, addr="127.0.0.2", count=100, every=0.2,
                 length=60000):
        self.count, self.every, self.length = count, every, length
        self.lock = threading.Lock()
        self.sent = []
        self.ended = []
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind((addr, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.host = "%s:%d" % (addr, self.port)
        self.url = "http://" + self.host
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                i = len(self.sent)
                self.sent.append(0)
                self.ended.append(False)
            threading.Thread(target=self._one, args=(c, i),
                             daemon=True).start()

    def _one(self, c, i):
        try:
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                      b"\r\nContent-Length: %d\r\n\r\n" % self.length)
            for _ in range(self.count):
                if self.stopping.wait(self.every):
                    break
                c.sendall(b" ")
                with self.lock:
                    self.sent[i] += 1
        except OSError:
            pass        # the gateway gave up: what the tests look for
        finally:
            c.close()
            with self.lock:
                self.ended[i] = True

    def done(self, i):
        with self.lock:
            return i < len(self.ended) and self.ended[i]

    def stop(self):
        self.stopping.set()
        self.sock.close()
