"""idp_tokens.py: the IdP side of bench/auth_bench.sh (/usr/bin/python3,
python3-cryptography).

    idp_tokens.py setup DIR
        The provider's keys (an RS256 and an ES256 private JWK, kids
        rsa-1 and ec-1, made by tests/integration/lib/idp.py's make_jwk,
        as the integration tests' provider gets them) in DIR/jwks.json,
        and a throw-away CA and a server certificate for 127.0.0.1
        (lib/pki.py) in DIR/pki/: ca.pem, idp.pem, idp.key.

    idp_tokens.py mint JWKS TEMPLATE KID N OUT
        N distinct tokens signed with the provider's own private key KID
        (its alg from the JWK), one "Authorization: Bearer <jwt>" line
        each, in OUT.  TEMPLATE is a real access token the running
        provider issued (client_credentials): every token carries its
        header (typ) and its claims (iss, aud, sub, client_id, scope, and
        the lifetime exp - iat), with iat = now, exp = now + that
        lifetime and a unique jti, so each is a token the provider could
        have issued and the gateway has never seen.

Nothing here prints a token.
"""

import base64
import json
import os
import secrets
import sys
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import \
    decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64int(s):
    return int.from_bytes(b64d(s), "big")


def setup(d):
    from lib.idp import make_jwk
    from lib.pki import PKI
    os.makedirs(d, exist_ok=True)
    jwks = {"keys": [make_jwk("RS256", "rsa-1"), make_jwk("ES256", "ec-1")]}
    path = os.path.join(d, "jwks.json")
    with open(path, "w") as f:
        json.dump(jwks, f)
    os.chmod(path, 0o600)
    pki = PKI(os.path.join(d, "pki"), name="auth bench IdP CA")
    pki.issue("idp", "/CN=127.0.0.1", san="IP:127.0.0.1")


def private_key(jwk):
    if jwk["kty"] == "RSA":
        pub = rsa.RSAPublicNumbers(b64int(jwk["e"]), b64int(jwk["n"]))
        return rsa.RSAPrivateNumbers(
            b64int(jwk["p"]), b64int(jwk["q"]), b64int(jwk["d"]),
            b64int(jwk["dp"]), b64int(jwk["dq"]), b64int(jwk["qi"]),
            pub).private_key()
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[jwk["crv"]]
    pub = ec.EllipticCurvePublicNumbers(b64int(jwk["x"]), b64int(jwk["y"]),
                                        curve)
    return ec.EllipticCurvePrivateNumbers(b64int(jwk["d"]),
                                          pub).private_key()


def sign(key, jwk, data):
    if jwk["kty"] == "RSA":
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    size = {"P-256": 32, "P-384": 48}[jwk["crv"]]
    h = hashes.SHA256() if size == 32 else hashes.SHA384()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def mint(jwks_path, template, kid, n, out):
    jwk = [k for k in json.load(open(jwks_path))["keys"]
           if k["kid"] == kid][0]
    key = private_key(jwk)
    parts = template.strip().split(".")
    hdr = json.loads(b64d(parts[0]))
    claims = json.loads(b64d(parts[1]))
    life = int(claims["exp"]) - int(claims["iat"])
    hdr.update(alg=jwk["alg"], kid=kid)
    h64 = b64e(json.dumps(hdr, separators=(",", ":")).encode())
    now = int(time.time())
    with open(out, "w") as f:
        for _ in range(n):
            c = dict(claims, iat=now, exp=now + life,
                     jti=b64e(secrets.token_bytes(16)))
            if "nbf" in c:
                c["nbf"] = now
            si = h64 + "." + b64e(json.dumps(
                c, separators=(",", ":")).encode())
            f.write("Authorization: Bearer %s.%s\n" % (
                si, b64e(sign(key, jwk, si.encode()))))
    os.chmod(out, 0o600)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "setup":
        setup(sys.argv[2])
    elif len(sys.argv) == 7 and sys.argv[1] == "mint":
        mint(sys.argv[2], open(sys.argv[3]).read(), sys.argv[4],
             int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(__doc__)
