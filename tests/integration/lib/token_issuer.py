"""A test token issuer implementing the Docker registry token
authentication spec (distribution's docs/spec/auth/token.md), run as its own
process by the harness.

GET  /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] with HTTP
     Basic credentials -> {"token", "access_token", "expires_in", "issued_at"}
POST /token (OAuth2 form: grant_type=password with username/password, or
     grant_type=refresh_token) -> the same body.
Wrong or missing credentials -> 401.  Every request it answers is appended
(before the answer is written) as one JSON line to the record file, so a test
that holds the response can already read the record.

The JWT is ES256, signed with a P-256 key whose self-signed certificate is
the registry's auth.token.rootcertbundle; the header carries `kid` in
libtrust form, which docker-registry 2.8 matches against its trusted keys.

Run as a script: python3 token_issuer.py --port P --key K --username U
--password W --issuer I --record FILE.  The TokenIssuer class starts it.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ != "__main__":
    from .util import ManagedProcess, free_port, port_open, safe_env


def libtrust_kid(public_key):
    """libtrust key ID: base32 of the first 240 bits of SHA-256 of the DER
    SubjectPublicKeyInfo, in 12 groups of 4 joined by ':'."""
    from cryptography.hazmat.primitives import serialization
    der = public_key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def make_key_and_cert(key_path, cert_path, cn="portcullis-test-issuer"):
    """Write a fresh P-256 private key and a self-signed certificate for it
    (PEM).  Returns the libtrust kid of the key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return libtrust_kid(key.public_key())


def parse_scope(s):
    """'repository:a/b:pull,push' -> {type, name, actions}; the name may
    hold a ':port' (registry host), so split type first and actions last."""
    typ, rest = s.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return {"type": typ, "name": name,
            "actions": [a for a in actions.split(",") if a]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-token-issuer/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _record(self, rec):
        srv = self.server
        with srv.lock:
            with open(srv.opts.record, "a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()

    def _reply(self, status, body, extra=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = b""
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _basic(self):
        h = self.headers.get("Authorization", "")
        if not h.lower().startswith("basic "):
            return None, None
        try:
            u, p = base64.b64decode(h[6:].strip()).decode().split(":", 1)
            return u, p
        except Exception:  # noqa: BLE001
            return "<malformed>", None

    def _issue(self, service, scopes, user, password, via, query, form):
        opts = self.server.opts
        ok = (user == opts.username and password == opts.password)
        rec = {"time": time.time(), "method": self.command,
               "path": self.path.split("?")[0], "via": via,
               "query": query, "form": form, "user": user,
               "authorization": ("basic" if self.headers.get(
                   "Authorization", "").lower().startswith("basic ")
                   else ("bearer" if self.headers.get("Authorization")
                         else None)),
               "service": service, "scopes": scopes, "ok": ok,
               "user_agent": self.headers.get("User-Agent")}
        if not ok:
            rec["status"] = 401
            self._record(rec)
            self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                          "message": "bad credentials"}]},
                        {"WWW-Authenticate": 'Basic realm="test-issuer"'})
            return
        access = []
        for s in scopes:
            for one in s.split(" "):
                if one:
                    try:
                        access.append(parse_scope(one))
                    except ValueError:
                        pass
        now = int(time.time())
        claims = {"iss": opts.issuer, "sub": user, "aud": service,
                  "exp": now + opts.expires_in, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        import jwt
        tok = jwt.encode(claims, self.server.key, algorithm="ES256",
                         headers={"kid": self.server.kid})
        rec["status"] = 200
        rec["access"] = access
        self._record(rec)
        body = {"token": tok, "access_token": tok,
                "expires_in": opts.expires_in,
                "issued_at": datetime.datetime.utcfromtimestamp(
                    now).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if (query or {}).get("offline_token") == ["true"] or via == "post":
            body["refresh_token"] = "refresh-" + uuid.uuid4().hex
        self._reply(200, body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/healthz":
            self._reply(200, {"ok": True})
            return
        if u.path != "/token":
            self._reply(404, {"error": "not found"})
            return
        q = urllib.parse.parse_qs(u.query)
        user, pw = self._basic()
        self._issue((q.get("service") or [None])[0], q.get("scope", []),
                    user, pw, "get", q, None)

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path != "/token":
            self._reply(404, {"error": "not found"})
            return
        body = self._read_body().decode("utf-8", "replace")
        form = urllib.parse.parse_qs(body)
        first = {k: v[0] for k, v in form.items()}
        scopes = form.get("scope", [])
        if first.get("grant_type") == "password":
            user, pw = first.get("username"), first.get("password")
        elif first.get("grant_type") == "refresh_token" and \
                first.get("refresh_token", "").startswith("refresh-"):
            user, pw = self.server.opts.username, self.server.opts.password
        else:
            user, pw = self._basic()
        self._issue(first.get("service"), scopes, user, pw, "post", None,
                    {k: v for k, v in form.items() if k != "password"})


def serve(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--issuer", default="portcullis-test-issuer")
    ap.add_argument("--record", required=True)
    ap.add_argument("--expires-in", type=int, default=300)
    opts = ap.parse_args(argv)
    from cryptography.hazmat.primitives import serialization
    with open(opts.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    srv = ThreadingHTTPServer(("127.0.0.1", opts.port), _Handler)
    srv.daemon_threads = True
    srv.opts = opts
    srv.key = key
    srv.kid = libtrust_kid(key.public_key())
    srv.lock = threading.Lock()
    srv.serve_forever()


class TokenIssuer:
    """A running token issuer process.  .realm is the URL registries point
    clients to; .requests() returns the recorded requests (list of dicts with
    method, via, user, authorization, service, scopes, ok, status, access)."""

    def __init__(self, workdir, username="gwuser", password="gw-s3cret",
                 issuer="portcullis-test-issuer", expires_in=300):
        os.makedirs(workdir, exist_ok=True)
        self.dir = str(workdir)
        self.username = username
        self.password = password
        self.issuer = issuer
        self.key_path = os.path.join(self.dir, "issuer-key.pem")
        self.cert_path = os.path.join(self.dir, "issuer-cert.pem")
        self.kid = make_key_and_cert(self.key_path, self.cert_path)
        self.record_path = os.path.join(self.dir, "issuer-requests.jsonl")
        open(self.record_path, "w").close()
        self.log_path = os.path.join(self.dir, "issuer.log")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.realm = self.url + "/token"
        self.proc = ManagedProcess(
            ["/usr/bin/python3", os.path.join(HERE, "token_issuer.py"),
             "--port", self.port, "--key", self.key_path,
             "--username", username, "--password", password,
             "--issuer", issuer, "--record", self.record_path,
             "--expires-in", expires_in],
            self.log_path, env=safe_env(), name="token-issuer")
        self.pid = self.proc.pid
        try:
            self.proc.wait_ready(lambda: port_open(self.port), timeout=20)
        except Exception:
            self.proc.stop()
            raise

    def requests(self):
        with open(self.record_path) as f:
            return [json.loads(l) for l in f if l.strip()]

    def mark(self):
        return len(self.requests())

    def requests_since(self, marker):
        return self.requests()[marker:]

    def stop(self):
        return self.proc.stop()


if __name__ == "__main__":
    serve()
