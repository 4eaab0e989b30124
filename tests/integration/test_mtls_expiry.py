"""A client certificate's end is the mTLS credential's end (issue 9,
review): a token the token service issues to an mTLS caller never
outlives the certificate chain that verified (an issuing CA that ends
before the leaf ends the credential with it), and a keep-alive
connection whose certificate has expired since its handshake no longer
identifies its caller, on /v2/ or at /token, and a client offering to
resume its TLS session on such a listener gets a full handshake (it was
refused outright).

Certificates are made here with python's cryptography (the openssl
command line cannot set a notAfter to the second).  Real parts only:
docker-registry, openssl in the gateway."""

import datetime
import http.client
import json
import os
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lib.gateway import gateway_config, upstream
from lib.idfix import SERVICE, acl_redis, blob_registry, claims, cli, \
    redis_section, token_cfg
from lib.idfix import keys  # noqa: F401 (fixture)
from lib.util import wait_for

import pytest

UTC = datetime.timezone.utc


def _name(cn, o=None):
    attrs = []
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _write(d, name, cert, key):
    crt = os.path.join(d, name + ".pem")
    kf = os.path.join(d, name + ".key")
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kf, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return crt, kf


def _cert(subject, issuer, pub, sign_key, not_after, ca=False, eku=None,
          san=None, not_before=None):
    now = datetime.datetime.now(UTC)
    if not_before is None:
        not_before = now - datetime.timedelta(minutes=5)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer).public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                        critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub),
                            critical=False)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName(san),
                            critical=False)
    return b.sign(sign_key, hashes.SHA256())


class ShortPKI:
    """A root CA valid a day, with the gateway's server certificate, and
    client certificates issued with any notAfter, by the root or by an
    intermediate CA of any notAfter."""

    def __init__(self, d):
        self.dir = str(d)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root_name = _name("review root CA")
        self.root = _cert(self.root_name, self.root_name,
                          self.root_key.public_key(), self.root_key,
                          datetime.datetime.now(UTC) +
                          datetime.timedelta(days=1), ca=True)
        self.ca = _write(self.dir, "root", self.root, self.root_key)[0]
        k = ec.generate_private_key(ec.SECP256R1())
        import ipaddress
        srv = _cert(_name("127.0.0.1"), self.root_name, k.public_key(),
                    self.root_key, datetime.datetime.now(UTC) +
                    datetime.timedelta(days=1),
                    eku=ExtendedKeyUsageOID.SERVER_AUTH,
                    san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.server = _write(self.dir, "server", srv, k)

    def client(self, name, not_after, ca_not_after=None, not_before=None):
        """(cert chain file, key file, RFC 2253 subject, notAfter of the
        chain as epoch seconds)."""
        issuer_name, issuer_key, chain = self.root_name, self.root_key, []
        ends = [not_after]
        if ca_not_after is not None:
            ik = ec.generate_private_key(ec.SECP256R1())
            issuer_name = _name("review intermediate " + name)
            inter = _cert(issuer_name, self.root_name, ik.public_key(),
                          self.root_key, ca_not_after, ca=True)
            issuer_key, chain = ik, [inter]
            ends.append(ca_not_after)
        k = ec.generate_private_key(ec.SECP256R1())
        subj = _name(name, o="Review")
        c = _cert(subj, issuer_name, k.public_key(), issuer_key, not_after,
                  eku=ExtendedKeyUsageOID.CLIENT_AUTH, not_before=not_before)
        crt, kf = _write(self.dir, name + ("" if not_before is None else
                                           "-%d" % not_before.timestamp()),
                         c, k)
        with open(crt, "ab") as f:
            for ic in chain:
                f.write(ic.public_bytes(serialization.Encoding.PEM))
        return crt, kf, "CN=%s,O=Review" % name, \
            int(min(e.timestamp() for e in ends))


@pytest.fixture(scope="module")
def spki(tmp_path_factory):
    return ShortPKI(tmp_path_factory.mktemp("short-pki"))


@pytest.fixture(scope="module")
def reg(start_registry_module):
    return blob_registry(start_registry_module)


def _gateway(start_gateway, reg, spki, keys, subject, redis=None, **tok):
    pol = {"rules": [
        {"id": "anon-pub", "effect": "allow", "repositories": ["pub/**"],
         "subjects": ["anonymous"], "actions": ["pull"]},
        {"id": "client-team", "effect": "allow",
         "repositories": ["team/**"], "subjects": ["mtls:" + subject],
         "actions": ["pull"]}]}
    tc = token_cfg(keys)
    tc.update(tok)
    extra = {} if redis is None else {"redis": redis}
    return start_gateway(gateway_config(
        upstream(reg, default=True), **extra,
        listen={"tls": {"cert_file": spki.server[0],
                        "key_file": spki.server[1],
                        "client_ca_file": spki.ca,
                        "verify_client": "optional"}},
        policy=pol, identity={"token": tc}),
        tls_client={"ca": spki.ca})


def _conn(g, spki, crt, kf):
    ctx = ssl.create_default_context(cafile=spki.ca)
    ctx.load_cert_chain(crt, kf)
    host, port = g.host.rsplit(":", 1)
    return http.client.HTTPSConnection(host, int(port), context=ctx,
                                       timeout=15)


def _get(c, path):
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read(), r.getheader("WWW-Authenticate", "")


def test_refresh_token_ends_with_the_issuing_ca(start_gateway, reg, spki,
                                                keys):
    """The leaf is valid two days, its intermediate CA one hour: after
    the hour the certificate verifies no more, so the refresh token (a
    week configured) ends with the CA, not with the leaf."""
    now = datetime.datetime.now(UTC)
    crt, kf, subj, end = spki.client(
        "shortca", now + datetime.timedelta(days=2),
        ca_not_after=now + datetime.timedelta(hours=1))
    g = _gateway(start_gateway, reg, spki, keys, subj,
                 refresh_expires_in=7 * 86400)
    c = _conn(g, spki, crt, kf)
    try:
        st, body, _ = _get(c, "/token?service=%s&offline_token=true"
                           "&scope=repository:team/app:pull" % SERVICE)
    finally:
        c.close()
    assert st == 200, body
    b = json.loads(body)
    assert claims(b["token"])["sub"] == subj
    rc = claims(b["refresh_token"])
    assert rc["exp"] <= end, (rc["exp"], end)
    assert rc["exp"] >= end - 60


def test_expired_certificate_on_a_kept_connection(start_gateway, reg, spki,
                                                  keys):
    """A certificate valid a few more seconds: its connection identifies
    the caller while it is valid; once it has expired, the same
    keep-alive connection is anonymous on /v2/ and gets no token."""
    na = datetime.datetime.now(UTC).replace(microsecond=0) + \
        datetime.timedelta(seconds=6)
    crt, kf, subj, end = spki.client("brief", na)
    g = _gateway(start_gateway, reg, spki, keys, subj)
    blob = "/v2/team/app/blobs/" + reg.digest
    c = _conn(g, spki, crt, kf)
    try:
        st, body, _ = _get(c, blob)
        assert st == 200 and body == reg.blob
        sock = c.sock
        wait_for(lambda: time.time() > end + 1, timeout=30,
                 what="the client certificate to expire")
        st, body, ch = _get(c, blob)
        assert c.sock is sock, "the connection was not kept"
        assert st == 401, (st, body)
        # At /token it is anonymous too: a token with no subject, no
        # team access and nothing to refresh.
        st, body, _ = _get(c, "/token?service=%s&offline_token=true"
                           "&scope=repository:team/app:pull" % SERVICE)
        assert c.sock is sock
        assert st == 200, (st, body)
        b = json.loads(body)
        assert claims(b["token"])["sub"] == ""
        assert claims(b["token"])["access"] == []
        assert "refresh_token" not in b
    finally:
        c.close()
    assert "identity client_certificate_expired" in g.log_text()


def test_tls13_resumption_on_a_client_verifying_listener(start_gateway, reg,
                                                         spki, keys):
    """A client that resumes its TLS 1.3 session (curl, Java, Go with a
    session cache do) on a listener that verifies client certificates:
    the second connection must work, and name its caller by a
    certificate verified now (every connection verifies it afresh)."""
    crt, kf, subj, end = spki.client(
        "resumer", datetime.datetime.now(UTC) + datetime.timedelta(days=1))
    g = _gateway(start_gateway, reg, spki, keys, subj)
    ctx = ssl.create_default_context(cafile=spki.ca)
    ctx.load_cert_chain(crt, kf)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    host, port = g.host.rsplit(":", 1)
    blob = "/v2/team/app/blobs/" + reg.digest
    c1 = http.client.HTTPSConnection(host, int(port), context=ctx,
                                     timeout=15)
    try:
        st, body, _ = _get(c1, blob)
        assert st == 200 and body == reg.blob
        # The session (with its ticket, if any came) after a response.
        session = c1.sock.session
    finally:
        c1.close()
    c2 = http.client.HTTPSConnection(host, int(port), context=ctx,
                                     timeout=15)
    c2.sock = ctx.wrap_socket(
        __import__("socket").create_connection((host, int(port)),
                                               timeout=15),
        server_hostname=host, session=session)
    try:
        # A full handshake: the certificate was verified again.
        assert not c2.sock.session_reused
        st, body, _ = _get(c2, blob)
        assert st == 200 and body == reg.blob
    finally:
        c2.close()


def test_revoked_subject_refuses_its_certificate(start_gateway, reg, spki,
                                                 keys, tmp_path):
    """`portcullis token revoke --subject DN` applies to the client
    certificate itself, with its notBefore as its issue time: a
    certificate issued before the revocation names nobody from then on,
    on a connection kept from before as on a new one (anonymous on /v2/
    with auth_failure revoked, a refused login at /token, so no fresh
    token either), and a certificate of the same subject issued after it
    works."""
    rs = acl_redis(tmp_path / "redis")
    try:
        now = datetime.datetime.now(UTC).replace(microsecond=0)
        na = now + datetime.timedelta(days=1)
        crt, kf, subj, _ = spki.client(
            "revokee", na, not_before=now - datetime.timedelta(hours=1))
        g = _gateway(start_gateway, reg, spki, keys, subj,
                     redis=redis_section(rs, tmp_path))
        wait_for(lambda: "revoke synced" in g.log_text(), timeout=20,
                 what="the revocation table's first sync")
        blob = "/v2/team/app/blobs/" + reg.digest
        tok_path = ("/token?service=%s&scope=repository:team/app:pull"
                    % SERVICE)
        c = _conn(g, spki, crt, kf)
        try:
            st, body, _ = _get(c, blob)
            assert st == 200 and body == reg.blob
            st, body, _ = _get(c, tok_path)
            assert st == 200, body
            assert claims(json.loads(body)["token"])["sub"] == subj
            sock = c.sock
            # Revoked from ten minutes ago: the certificate is older.
            before = int(now.timestamp()) - 600
            out = cli("token", "revoke", "-c", g.config_path, "--subject",
                      subj, "--before", "@%d" % before).stdout
            assert "1 listening instance(s) told" in out
            wait_for(lambda: _get(c, blob)[0] == 401, timeout=1.0,
                     what="the kept connection's certificate refused")
            assert c.sock is sock, "the connection was not kept"
            st, body, ch = _get(c, tok_path)
            assert st == 401, (st, body)
            assert ch.startswith("Basic ")
        finally:
            c.close()
        c = _conn(g, spki, crt, kf)
        try:
            assert _get(c, blob)[0] == 401
            assert _get(c, tok_path)[0] == 401
            # Public content stays open to it, as to anyone.
            st, _, _ = _get(c, "/v2/pub/app/blobs/" + reg.digest)
            assert st in (200, 404), st
        finally:
            c.close()
        log = g.log_text()
        assert "identity client_certificate_revoked" in log
        assert "token login_failed reason=revoked" in log
        # The same subject, certificate issued after the revocation.
        crt2, kf2, subj2, _ = spki.client(
            "revokee", na, not_before=now - datetime.timedelta(minutes=5))
        assert subj2 == subj
        c = _conn(g, spki, crt2, kf2)
        try:
            st, body, _ = _get(c, blob)
            assert st == 200 and body == reg.blob
            st, body, _ = _get(c, tok_path)
            assert st == 200, body
            assert claims(json.loads(body)["token"])["sub"] == subj
        finally:
            c.close()
    finally:
        rs.stop()
