"""`portcullis login` against a hostile registry and provider (review of
issue 10's terminal sign-in, the CLI side).

TEST DOUBLE: the "registry" and "provider" here are a small Python HTTP
server that misbehaves on purpose (escape sequences in what the CLI
prints, an answer dribbled a byte at a time, an oversized answer); no
real registry or provider does these things on request.  The CLI under
test is the real binary."""

import json
import os
import socket
import ssl
import subprocess
import threading
import time

from lib.gateway import gateway_bin
from lib.hostile_upstream import make_ca_and_cert
from lib.util import safe_env

ESC = "\x1b"


class Double:
    """One listening socket; handler(conn, request_text) answers."""

    def __init__(self, handler, tls=None):
        self.tls = tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http",
                                          self.port)
        self.got = []
        self.handler = handler
        self.stopping = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        try:
            c.settimeout(10)
            if self.tls is not None:
                c = self.tls.wrap_socket(c, server_side=True)
            req = b""
            while b"\r\n\r\n" not in req:
                b = c.recv(4096)
                if not b:
                    return
                req += b
            head, _, body = req.partition(b"\r\n\r\n")
            n = 0
            for ln in head.split(b"\r\n"):
                if ln.lower().startswith(b"content-length:"):
                    n = int(ln.split(b":")[1])
            while len(body) < n:
                b = c.recv(4096)
                if not b:
                    break
                body += b
            self.got.append(head + b"\r\n\r\n" + body)
            self.handler(self, c, head.decode("latin-1"))
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


def answer(c, doc, status=200):
    body = json.dumps(doc).encode()
    c.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (status, len(body)) + body)


def discovery(d):
    return {"token_endpoint": d.url + "/token", "service": "s",
            "device": {"client_id": "cli", "issuer": d.url,
                       "device_authorization_endpoint": d.url + "/device",
                       "token_endpoint": d.url + "/ptoken"}}


def run_login(d, tmp_path, timeout=120, ca=None):
    home = str(tmp_path / "home")
    os.makedirs(home, exist_ok=True)
    env = safe_env({"HOME": home,
                    "XDG_CONFIG_HOME": os.path.join(home, ".config")})
    return subprocess.run([gateway_bin(), "login"] +
                          (["--ca-file", ca] if ca else []) + [d.url],
                          capture_output=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_escape_sequences_from_the_provider_are_not_printed(tmp_path):
    """review: the provider's user_code, verification URIs and error
    description reached the terminal raw: an OSC or CSI sequence there
    can retitle or clear the terminal, hide text, or (some terminals)
    write to the clipboard.  Control bytes are printed as '?'."""
    def h(d, c, head):
        if head.startswith("GET /.well-known/portcullis"):
            answer(c, discovery(d))
        elif head.startswith("POST /device"):
            answer(c, {"device_code": "dc", "user_code": ESC + "]0;pwn\x07"
                       "ABCD", "verification_uri": "https://idp.test/"
                       + ESC + "[2J", "verification_uri_complete":
                       "https://idp.test/?c=" + ESC + "[8m", "interval": 1,
                       "expires_in": 60})
        elif head.startswith("POST /ptoken"):
            answer(c, {"error": "access_denied_x", "error_description":
                       "no" + ESC + "[31m\x9b2J"}, status=400)
        else:
            answer(c, {}, status=404)
    d = Double(h)
    try:
        p = run_login(d, tmp_path)
    finally:
        d.stop()
    out = p.stdout.decode("latin-1")
    err = p.stderr.decode("latin-1")
    assert p.returncode == 1
    assert "enter the code" in out, (out, err)
    assert "the provider refused" in err, err
    for s in (out, err):
        assert ESC not in s and "\x07" not in s and "\x9b" not in s, \
            repr(s)


def test_a_dribbled_answer_ends_within_the_time_bound(tmp_path):
    """review: LOGIN_IO_TIMEOUT bounded each read, not the answer: a
    peer sending one byte every few seconds (up to 1 MiB) held the CLI
    (and docker, through the credential helper) for days.  The whole
    answer now has 30 s."""
    def h(d, c, head):
        c.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(120):
            if d.stopping:
                return
            c.sendall(b"X")
            time.sleep(1)
    d = Double(h)
    t0 = time.monotonic()
    try:
        p = run_login(d, tmp_path, timeout=150)
    finally:
        d.stop()
    took = time.monotonic() - t0
    assert p.returncode == 1
    assert b"no answer" in p.stderr, p.stderr
    # The double dribbles for 120 s; the CLI must give up well before.
    assert took < 90, took


def test_an_answer_over_one_mebibyte_is_refused(tmp_path):
    """review: the answer cap let up to 2 MiB in (the buffer doubled
    past LOGIN_MAX_ANSWER before the check)."""
    def h(d, c, head):
        doc = discovery(d)
        doc["pad"] = "x" * (1536 * 1024)
        answer(c, doc)
    d = Double(h)
    try:
        p = run_login(d, tmp_path)
    finally:
        d.stop()
    assert p.returncode == 1
    assert b"over 1048576 bytes" in p.stderr, p.stderr


def tls_ctx(d, hosts):
    ca, cert, key = make_ca_and_cert(d, hosts)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ca, ctx


def device_flow(d, c, head):
    """The provider's half, answered at once (the code approved)."""
    if head.startswith("POST /device"):
        answer(c, {"device_code": "dc", "user_code": "ABCD",
                   "verification_uri": "https://idp.test/", "interval": 1,
                   "expires_in": 60})
    elif head.startswith("POST /ptoken"):
        answer(c, {"id_token": "a.b.c", "refresh_token": "prt-SECRET"})
    else:
        return False
    return True


def test_tls_names_are_checked(tmp_path):
    """review (sound): the registry's certificate must name the address
    dialled (an IP SAN for an IP), from the CA given."""
    ca, ctx = tls_ctx(tmp_path, ("127.0.0.2", "localhost"))

    def h(d, c, head):
        answer(c, {}, status=404)
    d = Double(h, tls=ctx)
    try:
        p = run_login(d, tmp_path, ca=ca)
    finally:
        d.stop()
    assert p.returncode == 1
    assert b"TLS with 127.0.0.1" in p.stderr, p.stderr
    assert d.got == []


def test_an_https_registry_cannot_send_the_tokens_over_plain_http(
        tmp_path):
    """review: the discovery document of an https registry could name
    plain http endpoints (the gateway's token endpoint, the provider's
    device and token endpoints): the CLI then sent the provider's
    id_token and refresh token in the clear.  Refused now, before
    anything goes out."""
    plain = Double(lambda d, c, head: answer(c, {}, status=500))
    ca, ctx = tls_ctx(tmp_path, ("127.0.0.1",))

    def h(d, c, head):
        if head.startswith("GET /.well-known/portcullis"):
            doc = discovery(d)
            doc["token_endpoint"] = plain.url + "/token"
            answer(c, doc)
        elif not device_flow(d, c, head):
            answer(c, {}, status=404)
    d = Double(h, tls=ctx)
    try:
        p = run_login(d, tmp_path, ca=ca)
    finally:
        d.stop()
        plain.stop()
    assert p.returncode == 1
    assert not any(b"prt-SECRET" in g for g in plain.got), plain.got
    assert plain.got == []
    assert b"plain http" in p.stderr, p.stderr


def test_helper_gives_back_an_identity_token_docker_stored(tmp_path):
    """review: `store` of an identity token (docker login keeps the
    refresh token a registry gave this way) for a registry never signed
    in with portcullis login had no token endpoint, so every `get`
    "refreshed" it, failed ("no token endpoint known") and answered that
    the sign-in was over: docker never got its token back.  Without a
    token endpoint, get answers the token as stored (docker refreshes it
    at the endpoint the registry's challenge names)."""
    home = str(tmp_path / "home")
    os.makedirs(home)
    env = safe_env({"HOME": home,
                    "XDG_CONFIG_HOME": os.path.join(home, ".config")})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = str(bindir / "docker-credential-portcullis")
    os.symlink(os.path.abspath(gateway_bin()), helper)

    def call(verb, data):
        return subprocess.run([helper, verb], input=data.encode(),
                              capture_output=True, env=env, timeout=60,
                              start_new_session=True)
    p = call("store", json.dumps({"ServerURL": "reg.example.test:5000",
                                  "Username": "<token>",
                                  "Secret": "docker-kept-token"}))
    assert p.returncode == 0, p.stdout
    p = call("get", "reg.example.test:5000")
    assert p.returncode == 0, p.stdout
    ans = json.loads(p.stdout)
    assert ans["Username"] == "<token>"
    assert ans["Secret"] == "docker-kept-token"
