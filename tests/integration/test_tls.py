"""TLS on both sides of the gateway, with certificates made here by the
openssl command line: the listener (TLS 1.2+, optional client-certificate
verification) and upstream connections (CA file, certificate chain and
host name verified, SNI sent)."""

import json
import os
import socket
import ssl
import subprocess

import pytest
import requests

from lib.gateway import gateway_config, upstream
from lib.util import wait_for


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   capture_output=True, timeout=60)


class PKI:
    """A throw-away CA and certificates it signs."""

    def __init__(self, d):
        self.dir = str(d)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", "/CN=portcullis test CA", "-keyout", self.ca_key,
                 "-out", self.ca, cwd=self.dir)

    def issue(self, name, cn, san=None, client=False):
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        crt = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            f.write("extendedKeyUsage=%s\n" %
                    ("clientAuth" if client else "serverAuth"))
            if san:
                f.write("subjectAltName=%s\n" % san)
        _openssl("req", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + cn,
                 "-keyout", key, "-out", csr, cwd=self.dir)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey",
                 self.ca_key, "-CAcreateserial", "-days", "2", "-extfile",
                 ext, "-out", crt, cwd=self.dir)
        return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki-other"))


@pytest.fixture(scope="module")
def server_cert(pki):
    return pki.issue("gateway", "127.0.0.1", san="IP:127.0.0.1")


def tls_listen(cert, key, **extra):
    t = {"cert_file": cert, "key_file": key}
    t.update(extra)
    return {"tls": t}


def session(verify, cert=None):
    s = requests.Session()
    s.trust_env = False
    s.verify = verify
    if cert:
        s.cert = cert
    return s


def seed_manifest(reg):
    """Put a one-layer image into `reg` with plain HTTP API calls; returns
    the manifest's digest."""
    import hashlib
    s = reg.http
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers",' \
          b'"diff_ids":[]}}'
    digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
    r = s.post(reg.url + "/v2/tls/app/blobs/uploads/", timeout=10)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = reg.url + loc
    r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + digest,
              data=cfg, timeout=10)
    assert r.status_code == 201, r.text
    man = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest, "size": len(cfg)},
        "layers": []}).encode()
    r = s.put(reg.url + "/v2/tls/app/manifests/v1", data=man, timeout=10,
              headers={"Content-Type":
                       "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(man).hexdigest()


@pytest.fixture(scope="module")
def plain_reg(start_registry_module):
    reg = start_registry_module("tlsplain")
    reg.digest = seed_manifest(reg)
    return reg


ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


# ---------------------------------------------------------------------------
# The listener.

def test_tls_listener_serves_the_api(plain_reg, start_gateway, pki,
                                     server_cert):
    cert, key = server_cert
    cfg = gateway_config(upstream(plain_reg, default=True),
                         listen=tls_listen(cert, key))
    gw = start_gateway(cfg, tls_client={"ca": pki.ca})
    assert gw.url.startswith("https://")
    s = session(pki.ca)
    r = s.get(gw.url + "/v2/tls/app/manifests/v1", headers=ACCEPT, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == plain_reg.digest
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_listener_refuses_plain_http_and_old_tls(plain_reg, start_gateway,
                                                     pki, server_cert):
    cert, key = server_cert
    gw = start_gateway(gateway_config(upstream(plain_reg, default=True),
                                      listen=tls_listen(cert, key)),
                       tls_client={"ca": pki.ca})
    # Plain HTTP on the TLS port never reaches the API.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as so:
        so.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = so.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert b"registry/2.0" not in data and b"HTTP/1.1 200" not in data
    # TLS 1.1 is refused; TLS 1.2 is taken.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with socket.create_connection(("127.0.0.1", gw.port),
                                      timeout=10) as so:
            with ctx.wrap_socket(so, server_hostname="127.0.0.1"):
                pass
    ctx12 = ssl.create_default_context(cafile=pki.ca)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as so:
        with ctx12.wrap_socket(so, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.2"
    assert gw.alive()


def test_client_certificate_required_and_verified(plain_reg, start_gateway,
                                                  pki, other_pki,
                                                  server_cert):
    cert, key = server_cert
    good = pki.issue("alice", "alice", client=True)
    stranger = other_pki.issue("mallory", "mallory", client=True)
    cfg = gateway_config(
        upstream(plain_reg, default=True),
        listen=tls_listen(cert, key, client_ca_file=pki.ca,
                          verify_client="require"),
        log={"level": "debug"})
    gw = start_gateway(cfg, tls_client={"ca": pki.ca, "cert": good[0],
                                        "key": good[1]})
    url = gw.url + "/v2/tls/app/manifests/v1"
    r = session(pki.ca, good).get(url, headers=ACCEPT, timeout=10)
    assert r.status_code == 200, r.text
    # RFC 2253, as mtls: policy subjects name it.
    assert 'client_subject="CN=alice"' in gw.log_text()
    for who in (None, stranger):
        with pytest.raises(requests.exceptions.SSLError):
            session(pki.ca, who).get(url, headers=ACCEPT, timeout=10)
    assert "CN=mallory" not in gw.log_text()
    assert gw.alive()


def test_optional_client_certificate(plain_reg, start_gateway, pki,
                                     server_cert):
    cert, key = server_cert
    good = pki.issue("bob", "bob", client=True)
    cfg = gateway_config(
        upstream(plain_reg, default=True),
        listen=tls_listen(cert, key, client_ca_file=pki.ca,
                          verify_client="optional"),
        log={"level": "debug"})
    gw = start_gateway(cfg, tls_client={"ca": pki.ca})
    url = gw.url + "/v2/tls/app/manifests/v1"
    assert session(pki.ca).get(url, headers=ACCEPT,
                               timeout=10).status_code == 200
    assert session(pki.ca, good).get(url, headers=ACCEPT,
                                     timeout=10).status_code == 200
    assert 'client_subject="CN=bob"' in gw.log_text()


def test_tls_config_errors_name_their_path(start_gateway, plain_reg, tmp_path,
                                           server_cert):
    cert, key = server_cert
    cfg = gateway_config(upstream(plain_reg, default=True),
                         listen=tls_listen(cert, str(tmp_path / "missing.key")))
    gw = start_gateway(cfg, expect_fail=True)
    assert gw.returncode != 0
    assert "/listen/tls/key_file" in gw.log_text()
    cfg = gateway_config(upstream(plain_reg, default=True),
                         listen=tls_listen(cert, key,
                                           verify_client="require"))
    gw = start_gateway(cfg, expect_fail=True)
    assert gw.returncode != 0
    assert "client_ca_file" in gw.log_text()


# ---------------------------------------------------------------------------
# Upstream TLS.

@pytest.fixture(scope="module")
def tls_reg(start_registry_module, pki):
    crt, key = pki.issue("upstream", "127.0.0.1", san="IP:127.0.0.1")
    reg = start_registry_module("tlsup", tls={"cert": crt, "key": key,
                                              "ca": pki.ca})
    reg.digest = seed_manifest(reg)
    return reg


@pytest.fixture(scope="module")
def misnamed_reg(start_registry_module, pki):
    # Signed by the trusted CA, but for another name than the one the
    # gateway connects to.  The harness's own checks skip verification
    # ("ca": False); the gateway's must not.
    crt, key = pki.issue("misnamed", "registry.invalid",
                         san="DNS:registry.invalid")
    requests.packages.urllib3.disable_warnings()
    reg = start_registry_module("tlsmisnamed", tls={"cert": crt, "key": key,
                                                    "ca": False})
    return reg


def test_upstream_tls_with_ca_file(tls_reg, start_gateway, pki, http):
    gw = start_gateway(gateway_config(
        dict(upstream(tls_reg, default=True), ca_file=pki.ca)))
    r = http.get(gw.url + "/v2/tls/app/manifests/v1", headers=ACCEPT,
                 timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == tls_reg.digest
    # Blobs too, on a pooled TLS connection.
    r = http.get(gw.url + "/v2/tls/app/manifests/" + tls_reg.digest,
                 headers=ACCEPT, timeout=10)
    assert r.status_code == 200


@pytest.mark.parametrize("case", ["unknown-ca", "wrong-name"])
def test_upstream_certificate_is_verified(case, tls_reg, misnamed_reg,
                                          other_pki, pki, start_gateway,
                                          http):
    if case == "unknown-ca":
        up = dict(upstream(tls_reg, default=True), ca_file=other_pki.ca)
        reg = tls_reg
    else:
        up = dict(upstream(misnamed_reg, default=True), ca_file=pki.ca)
        reg = misnamed_reg
    mark = reg.mark()
    gw = start_gateway(gateway_config(up))
    r = http.get(gw.url + "/v2/tls/app/manifests/v1", headers=ACCEPT,
                 timeout=30)
    assert r.status_code == 502, r.text
    err = r.json()["errors"][0]
    assert "certificate" in json.dumps(err).lower() or \
        "verify" in json.dumps(err).lower(), err
    # Nothing reached the registry's handlers.
    assert [e for e in reg.access_log(since=mark)] == []
    assert gw.alive()


def test_tls_client_on_plain_listener_is_told(plain_reg, start_gateway):
    """skopeo and podman with TLS verification off try https first; the
    plain listener answers their ClientHello with a 400 that says why, logs
    it, and keeps serving."""
    gw = start_gateway(gateway_config(upstream(plain_reg, default=True)))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with socket.create_connection(("127.0.0.1", gw.port),
                                      timeout=10) as so:
            with ctx.wrap_socket(so, server_hostname="127.0.0.1"):
                pass
    wait_for(lambda: "TLS handshake on a plain HTTP listener"
             in gw.log_text(), what="the framing error to be logged")
    assert gw.http.get(gw.url + "/v2/", timeout=10).status_code == 200
