"""What the identity tests share (test_token.py, test_idp_login.py,
test_secrets.py): the Redis they run against, the gateway's signing keys
and token settings, the npm oidc-provider, and small token helpers.

Redis for identity is hardened as a production one would be: the default
user off, and the gateway (and its CLIs) logging in as the ACL user of
the README's `ACL SETUSER` line (README "Redis" and "Secrets": the
`<!-- acl:all -->` line, checked here to be the audit's and the secrets'
lines together), so that the documented ACL is the one the tests prove
sufficient."""

import base64
import json
import os
import socket
import ssl
import subprocess

import pytest
import requests

from .gateway import REPO_ROOT, gateway_bin
from .idp import IdP, idp_available
from .pki import PKI
from .redis import RedisServer, entries_to_dicts, readme_acl, \
    readme_acl_lines
from .soak import push_blob
from .util import run, wait_for

SERVICE = "gw.test"
ISSUER = "portcullis-gw"
SIGNER = os.path.join(REPO_ROOT, "tests", "tools", "jose_sign")
STREAM = "portcullis:audit"
ADMIN_PW = "admin-Pw-idfix-4e1c"
USER_PW = "gw-user-idfix-Zq81"

needs_idp = pytest.mark.skipif(idp_available() is not None,
                               reason=str(idp_available()))


def acl_redis(workdir, **kw):
    """A redis-server with the default user off and user portcullis
    holding exactly the README's combined ACL line."""
    lines = readme_acl_lines()
    assert set(lines["all"]) == set(lines["audit"]) | set(lines["secrets"]), \
        "README: the acl:all line is not the audit and secrets lines together"
    return RedisServer(workdir, admin_password=ADMIN_PW,
                       users=[readme_acl(USER_PW, "all")], **kw)


def redis_section(rs, workdir, **extra):
    """The gateway's "redis" object for an acl_redis() server."""
    pw = os.path.join(str(workdir), "redis-%d.pw" % rs.port)
    with open(pw, "w") as f:
        f.write(USER_PW + "\n")
    os.chmod(pw, 0o600)
    r = {"address": rs.host, "username": "portcullis", "password_file": pw}
    r.update(extra)
    return r


def keygen(prefix):
    r = subprocess.run([gateway_bin(), "keygen", "-o", prefix],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _part(tok, i):
    p = tok.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def claims(tok):
    """A JWT's claims, unverified."""
    return _part(tok, 1)


def claims_header(tok):
    """A JWT's header, unverified."""
    return _part(tok, 0)


def access_of(tok):
    return {(a["type"], a["name"]): sorted(a["actions"])
            for a in claims(tok)["access"]}


def make_keys(d):
    """Signing keys in directory d: cur (signs), old (rotated out, still
    valid), gone (rotated out, expired), other (not configured)."""
    d = str(d)
    k = {"cur": os.path.join(d, "cur"), "old": os.path.join(d, "old"),
         "gone": os.path.join(d, "gone"), "other": os.path.join(d, "other")}
    k["kids"] = {n: keygen(p) for n, p in k.items() if n != "kids"}
    return k


def token_cfg(keys):
    return {"signing_key": keys["cur"] + ".key", "issuer": ISSUER,
            "service": SERVICE, "expires_in": 120,
            "verification_keys": [
                {"file": keys["old"] + ".key",
                 "valid_until": "2099-01-01T00:00:00Z"},
                {"file": keys["gone"] + ".key",
                 "valid_until": "2001-01-01T00:00:00Z"}]}


def issuer_cfg(idp, **kw):
    """identity.issuers entry for the test provider, prefix idp:."""
    c = {"name": "idp", "issuer": idp.issuer, "ca_file": idp.ca,
         "audiences": ["https://portcullis.test"], "prefix": "idp:",
         "groups_claim": "groups", "algorithms": ["RS256", "ES256"]}
    c.update(kw)
    return c


def start_idp(workdir, **kw):
    if idp_available() is not None:
        pytest.skip(idp_available())
    return IdP(workdir, **kw)


def _b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _b64int(s):
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)),
                          "big")


def idp_sign(idp, claims_, kid=None):
    """A JWT signed RS256 with the provider's own RSA key (kid: the first
    RSA one): what the provider would issue, with claims of the test's
    choosing (an exp in the past, say), which its token endpoint will
    not mint."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    jwk = next(k for k in idp.jwks["keys"]
               if k["kty"] == "RSA" and (kid is None or k["kid"] == kid))
    pub = rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"]))
    key = rsa.RSAPrivateNumbers(
        _b64int(jwk["p"]), _b64int(jwk["q"]), _b64int(jwk["d"]),
        _b64int(jwk["dp"]), _b64int(jwk["dq"]), _b64int(jwk["qi"]),
        pub).private_key()
    head = {"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]}
    signing = "%s.%s" % (_b64url(json.dumps(head).encode()),
                         _b64url(json.dumps(claims_).encode()))
    sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing + "." + _b64url(sig)


# ---------------------------------------------------------------------------
# The token-service tests' shared parts (test_token.py, test_idp_login.py):
# module fixtures a test module imports by name (pki, redis_mod, keys),
# the gateway's base policy, and request helpers.

def jose_sign(key, scopes, aud=SERVICE, ttl=300, issuer=ISSUER,
              gateway=False):
    """gateway: with the claims of the gateway's own access tokens."""
    if not os.path.exists(SIGNER):
        subprocess.run(["make", "-C", REPO_ROOT, "tests/tools/jose_sign"],
                       check=True, capture_output=True, timeout=300)
    env = dict(os.environ)
    if gateway:
        env["JOSE_SIGN_GATEWAY"] = "1"
    r = subprocess.run([SIGNER, key, issuer, "alice", aud, str(ttl)] +
                       scopes, capture_output=True, text=True, timeout=30,
                       env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, the gateway's server certificate and the client
    certificate of "pusher" (an mTLS caller), with a cert dir for
    skopeo."""
    p = PKI(tmp_path_factory.mktemp("token-pki"))
    p.server = p.issue("gateway", "/CN=127.0.0.1", san="IP:127.0.0.1")
    p.pusher = p.issue("pusher", "/O=Token Test/CN=pusher", client=True)
    p.pusher_dn = p.rfc2253(p.pusher[0])
    # A cert dir for skopeo: the CA, and the client certificate it
    # presents (to the gateway, its token server).
    p.cert_dir = os.path.join(p.dir, "certs-pusher")
    os.makedirs(p.cert_dir, exist_ok=True)
    for src, dst in ((p.ca, "ca.crt"), (p.pusher[0], "client.cert"),
                     (p.pusher[1], "client.key")):
        with open(src, "rb") as f, \
                open(os.path.join(p.cert_dir, dst), "wb") as g:
            g.write(f.read())
    return p


@pytest.fixture(scope="module")
def redis_mod(tmp_path_factory):
    # Acceptance 5: the default user off, the README's ACL user.
    s = acl_redis(tmp_path_factory.mktemp("token-redis-"))
    try:
        yield s
    finally:
        s.stop()


def records(rs):
    with rs.client() as c:
        return [d for _, d in entries_to_dicts(c.call("XRANGE", STREAM, "-",
                                                      "+"))]


def record_of(rs, rid):
    def find():
        for d in records(rs):
            if d["request_id"] == rid:
                return d
        return None
    return wait_for(find, timeout=20, what="audit record of %s" % rid)


def policy(pki, push_team=True):
    rules = [
        {"id": "anon-pub", "effect": "allow", "repositories": ["pub/**"],
         "subjects": ["anonymous", "authenticated"], "actions": ["pull"]},
        {"id": "pusher-ro", "effect": "allow", "repositories": ["ro/**"],
         "subjects": ["mtls:" + pki.pusher_dn], "actions": ["pull"]},
        {"id": "pusher-pub", "effect": "allow", "repositories": ["pub/**"],
         "subjects": ["mtls:" + pki.pusher_dn], "actions": ["push"]},
        {"id": "pusher-team", "effect": "allow",
         "repositories": ["team/**"], "subjects": ["mtls:" + pki.pusher_dn],
         "actions": ["pull", "push"] if push_team else ["pull"]},
    ]
    return {"rules": rules}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("token-keys"))


def blob_registry(start_registry_module):
    """Registry up1 with one small blob (r.blob, r.digest) in pub/app,
    pub/other, ro/app and team/app."""
    r = start_registry_module("up1")
    s = requests.Session()
    s.trust_env = False
    r.blob = b"token test blob\n" * 64
    for repo in ("pub/app", "pub/other", "ro/app", "team/app"):
        r.digest = push_blob(s, r.url, repo, r.blob)
    return r


def sess(pki, cert=None):
    s = requests.Session()
    s.trust_env = False
    s.verify = pki.ca
    if cert is not None:
        s.cert = cert
    return s


def get_token(g, s, scopes, **params):
    p = [("service", SERVICE)] + [("scope", sc) for sc in scopes]
    p += list(params.items())
    r = s.get(g.url + "/token", params=p, timeout=15)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] >= 60
    assert "issued_at" in body
    return body


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def chal(r):
    return r.headers.get("WWW-Authenticate", "")


def chunked_post(g, pki, form):
    """POST /token with a chunked body and no Content-Length, as
    containers-image sends its refresh grant."""
    body = form.encode()
    ctx = ssl.create_default_context(cafile=pki.ca)
    host, port = g.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as c:
        half = len(body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                          for p in (body[:half], body[half:]) if p)
        c.sendall(b"POST /token HTTP/1.1\r\nHost: %s\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
                  b"\r\n" % g.host.encode() + chunks + b"0\r\n\r\n")
        data = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            data += d
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, payload


REGISTRY_AUTH = """auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {crt}
"""


def cli(*args, check=True, input=None):
    return run([gateway_bin()] + list(args), timeout=60, check=check,
               input=input)


def plain():
    s = requests.Session()
    s.trust_env = False
    return s
