"""`portcullis keygen`, and interop of the gateway's token signer with a
real docker-registry: a registry whose auth.token trusts the keygen
certificate (rootcertbundle) accepts tokens signed by the library's
jose_sign (through tests/tools/jose_sign, a test helper built by `make
check`, not part of the product) for exactly the scopes they carry, with
both key types; tokens for another service, another issuer or another
key are refused."""

import hashlib
import json
import os
import stat
import subprocess

import pytest
import requests

from lib.gateway import REPO_ROOT, gateway_bin
from lib.registry import Registry
from lib.token_issuer import libtrust_kid

SIGNER = os.path.join(REPO_ROOT, "tests", "tools", "jose_sign")
ISSUER = "portcullis-test"
SERVICE = "registry.test"


def keygen(*args):
    return subprocess.run([gateway_bin(), "keygen"] + list(args),
                          capture_output=True, text=True, timeout=120)


def load(prefix):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(prefix + ".key", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    with open(prefix + ".crt", "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(prefix + ".jwk") as f:
        jwk = json.load(f)
    return key, cert, jwk


@pytest.mark.parametrize("args,kty,alg", [
    ([], "EC", "ES256"),
    (["-t", "ec", "-b", "384"], "EC", "ES384"),
    (["-t", "rsa", "-b", "2048"], "RSA", "RS256"),
])
def test_keygen_writes_key_cert_and_jwk(tmp_path, args, kty, alg):
    from cryptography.hazmat.primitives import serialization
    prefix = str(tmp_path / "signing")
    r = keygen(*args, "-o", prefix)
    assert r.returncode == 0, r.stderr
    kid = r.stdout.strip()
    key, cert, jwk = load(prefix)
    assert stat.S_IMODE(os.stat(prefix + ".key").st_mode) == 0o600
    # The kid printed, in the JWK, and libtrust's over the certificate's
    # key (computed here independently) are one.
    assert kid == jwk["kid"] == libtrust_kid(cert.public_key())
    assert len(kid) == 59 and kid.count(":") == 11
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert (cert.public_key().public_bytes(der, spki) ==
            key.public_key().public_bytes(der, spki))
    assert jwk["kty"] == kty and jwk["alg"] == alg and jwk["use"] == "sig"
    assert "d" not in jwk and "p" not in jwk
    with open(prefix + ".key") as f:
        assert f.read().startswith("-----BEGIN PRIVATE KEY-----")


def test_keygen_never_overwrites(tmp_path):
    prefix = str(tmp_path / "k")
    assert keygen("-o", prefix).returncode == 0
    before = {s: open(prefix + s, "rb").read() for s in (".key", ".crt",
                                                       ".jwk")}
    r = keygen("-o", prefix)
    assert r.returncode == 1
    assert "exists" in r.stderr
    for s, data in before.items():
        assert open(prefix + s, "rb").read() == data
    # One of the three present is enough to refuse, and nothing is made.
    os.unlink(prefix + ".key")
    os.unlink(prefix + ".crt")
    r = keygen("-o", prefix)
    assert r.returncode == 1
    assert not os.path.exists(prefix + ".key")


@pytest.mark.parametrize("args", [["-t", "dsa", "-o", "x"], ["-b", "300"],
                                  ["-t", "rsa", "-b", "1024", "-o", "x"],
                                  ["-o"], ["-o", "x", "extra"]])
def test_keygen_usage_errors(tmp_path, args):
    r = subprocess.run([gateway_bin(), "keygen"] + args, cwd=tmp_path,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage: portcullis keygen" in r.stderr
    assert not os.listdir(tmp_path)


def sign(key, scopes, issuer=ISSUER, aud=SERVICE, ttl=300):
    if not os.path.exists(SIGNER):
        subprocess.run(["make", "-C", REPO_ROOT, "tests/tools/jose_sign"],
                       check=True, capture_output=True, timeout=300)
    r = subprocess.run([SIGNER, key, issuer, "alice", aud, str(ttl)] +
                       scopes, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(params=["ec", "rsa"])
def trusting_registry(request, tmp_path):
    """A docker-registry whose auth.token trusts a fresh keygen key."""
    prefix = str(tmp_path / "gw")
    args = ["-t", request.param] + (["-b", "2048"]
                                    if request.param == "rsa" else [])
    assert keygen(*args, "-o", prefix).returncode == 0
    extra = ("auth:\n  token:\n    realm: http://127.0.0.1:1/token\n"
             "    service: %s\n    issuer: %s\n    rootcertbundle: %s\n" % (
                 SERVICE, ISSUER, prefix + ".crt"))
    reg = Registry(tmp_path / "reg", name="trusting", extra_config=extra)
    try:
        yield reg, prefix + ".key"
    finally:
        reg.stop()


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def test_registry_accepts_gateway_tokens(trusting_registry, tmp_path):
    reg, key = trusting_registry
    http = requests.Session()
    http.trust_env = False
    url = reg.url + "/v2/"

    r = http.get(url, timeout=10)
    assert r.status_code == 401
    # The token for /v2/ itself carries no access: the signature, kid,
    # issuer, audience and times are what the registry checks.
    r = http.get(url, headers=bearer(sign(key, [])), timeout=10)
    assert r.status_code == 200, r.text

    push = sign(key, ["repository:itest/app:pull,push"])
    pull = sign(key, ["repository:itest/app:pull"])
    other = sign(key, ["repository:itest/other:pull,push"])
    blob = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    start = reg.url + "/v2/itest/app/blobs/uploads/"
    # Push needs push: a pull token or another repository's is refused.
    for tok in (pull, other):
        r = http.post(start, headers=bearer(tok), timeout=10)
        assert r.status_code == 401, r.text
        assert "insufficient_scope" in r.headers.get("WWW-Authenticate", "")
    r = http.post(start, headers=bearer(push), timeout=10)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = reg.url + loc
    r = http.put(loc, params={"digest": digest}, data=blob,
                 headers=dict(bearer(push), **{
                     "Content-Type": "application/octet-stream"}),
                 timeout=10)
    assert r.status_code == 201, r.text
    r = http.get(reg.url + "/v2/itest/app/blobs/" + digest,
                 headers=bearer(pull), timeout=10)
    assert r.status_code == 200 and r.content == blob


def test_registry_refuses_foreign_tokens(trusting_registry, tmp_path):
    reg, key = trusting_registry
    http = requests.Session()
    http.trust_env = False
    url = reg.url + "/v2/itest/app/tags/list"
    ok = sign(key, ["repository:itest/app:pull"])
    r = http.get(url, headers=bearer(ok), timeout=10)
    assert r.status_code == 404, r.text   # authorised; no such repository
    # Another service, another issuer, expired, an untrusted key.
    assert keygen("-o", str(tmp_path / "stranger")).returncode == 0
    bad = [sign(key, ["repository:itest/app:pull"], aud="elsewhere"),
           sign(key, ["repository:itest/app:pull"], issuer="someone"),
           sign(key, ["repository:itest/app:pull"], ttl=-3600),
           sign(str(tmp_path / "stranger.key"),
                ["repository:itest/app:pull"])]
    for tok in bad:
        r = http.get(url, headers=bearer(tok), timeout=10)
        assert r.status_code == 401, r.text
        assert "invalid_token" in r.headers.get("WWW-Authenticate", "")
