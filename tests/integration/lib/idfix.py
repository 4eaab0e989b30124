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
import subprocess

import pytest

from .gateway import gateway_bin
from .idp import IdP, idp_available
from .redis import RedisServer, readme_acl, readme_acl_lines

SERVICE = "gw.test"
ISSUER = "portcullis-gw"
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
