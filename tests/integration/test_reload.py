"""Reload under load (issue 12, acceptance 3): a 1 GiB blob pull and a loop
of manifest requests run across three SIGHUPs, each of which changes the
policy and rotates the listener's TLS certificate (new content at the same
path, then new paths).  New connections see the new certificate (checked
with `openssl s_client`), the pull's bytes all arrive and digest-verify,
no manifest request fails.  Also: a reload with a broken certificate keeps
the old one and says why, and every reload is counted in /metrics.

The 1 GiB blob is written straight into the docker-registry's filesystem
storage (its documented layout: blobs/sha256/XX/HEX/data and the
repository's _layers link), so making it costs one sequential write, not
an HTTP upload.  The pull goes through curl into a pipe this test reads
and hashes in 1 MiB steps: memory stays bounded, and the reader pauses
at 25/50/75 % while a reload happens, so each SIGHUP lands while the
transfer is provably in flight (no timing assumptions)."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.parse

import pytest
import requests

from lib.gateway import gateway_config, upstream
from lib.pki import PKI
from lib.util import wait_for

BIG = 1 << 30
STEP = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _write_big_blob(reg, repo, size):
    """A size-byte blob in the registry's storage, linked into repo.
    Returns its digest.  Deterministic pseudo-random content, 1 MiB at a
    time."""
    h = hashlib.sha256()
    tmp = os.path.join(reg.root, "big.tmp")
    seed = hashlib.sha256(b"portcullis reload").digest()
    chunk = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
                     for i in range(STEP // 32))
    with open(tmp, "wb") as f:
        for i in range(size // STEP):
            # Vary each MiB so that a dropped or repeated chunk shows.
            c = i.to_bytes(8, "big") + chunk[8:]
            h.update(c)
            f.write(c)
    hexd = h.hexdigest()
    v2 = os.path.join(reg.root, "docker", "registry", "v2")
    bdir = os.path.join(v2, "blobs", "sha256", hexd[:2], hexd)
    os.makedirs(bdir, exist_ok=True)
    os.rename(tmp, os.path.join(bdir, "data"))
    ldir = os.path.join(v2, "repositories", repo, "_layers", "sha256", hexd)
    os.makedirs(ldir, exist_ok=True)
    with open(os.path.join(ldir, "link"), "w") as f:
        f.write("sha256:" + hexd)
    return "sha256:" + hexd


def _push_blob(s, reg, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.post("%s/v2/%s/blobs/uploads/" % (reg.url, repo), timeout=30)
    assert r.status_code == 202, r.text
    loc = urllib.parse.urljoin(reg.url + "/", r.headers["Location"])
    r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + d, data=data,
              headers={"Content-Type": "application/octet-stream"},
              timeout=60)
    assert r.status_code == 201, r.text
    return d


def _push_image(reg, repo):
    """A small image (config + one layer) tagged v1; its manifest digest."""
    s = requests.Session()
    s.trust_env = False
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(2048)
    cd, ld = _push_blob(s, reg, repo, cfg), _push_blob(s, reg, repo, layer)
    man = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd, "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ld, "size": len(layer)}]}).encode()
    r = s.put("%s/v2/%s/manifests/v1" % (reg.url, repo), data=man,
              headers={"Content-Type":
                       "application/vnd.oci.image.manifest.v1+json"},
              timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def _served_cert(port, ca):
    """Subject and serial of the certificate a new connection gets, as
    `openssl s_client` sees it (and whether it verified against ca)."""
    p = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
         "-CAfile", ca, "-verify_return_error", "-brief"],
        input="", capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    pem = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
         "-CAfile", ca, "-showcerts"],
        input="", capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                  pem, re.S)
    assert m, pem
    out = subprocess.run(["openssl", "x509", "-noout", "-subject",
                          "-serial", "-nameopt", "RFC2253"],
                         input=m.group(0), capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return out


def _cert_text(path):
    return subprocess.run(["openssl", "x509", "-noout", "-subject",
                           "-serial", "-nameopt", "RFC2253", "-in", path],
                          capture_output=True, text=True, timeout=30,
                          check=True).stdout


def _policy(deny_other):
    rules = []
    if deny_other:
        rules.append({"id": "deny-other", "effect": "deny",
                      "repositories": ["lab/other"],
                      "subjects": ["anonymous", "authenticated"],
                      "actions": ["pull"]})
    rules.append({"id": "open", "effect": "allow", "repositories": ["**"],
                  "subjects": ["anonymous", "authenticated"],
                  "actions": ["pull", "catalog"]})
    return {"rules": rules}


def _metric(gw, name):
    r = gw.http.get(gw.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.text, re.M)
    return int(m.group(1)) if m else 0


class Puller(threading.Thread):
    """curl -> pipe -> sha256, pausing at each of `marks` (byte counts)
    until resume() is called."""

    def __init__(self, url, ca, marks):
        super().__init__(daemon=True)
        self.url, self.ca = url, ca
        self.marks = list(marks)
        self.got = 0
        self.digest = None
        self.error = None
        self.paused = threading.Event()
        self.go = threading.Event()
        self.proc = None

    def run(self):
        try:
            self.proc = subprocess.Popen(
                ["curl", "-sS", "--fail", "--noproxy", "*", "--cacert",
                 self.ca, "--max-time", "600", self.url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            h = hashlib.sha256()
            while True:
                b = self.proc.stdout.read(STEP)
                if not b:
                    break
                h.update(b)
                self.got += len(b)
                if self.marks and self.got >= self.marks[0]:
                    # Handshake: the test clears paused, then sets go.
                    self.marks.pop(0)
                    self.paused.set()
                    self.go.wait(300)
                    self.go.clear()
            rc = self.proc.wait(60)
            if rc != 0:
                self.error = "curl exit %d: %s" % (
                    rc, self.proc.stderr.read().decode(errors="replace"))
            self.digest = "sha256:" + h.hexdigest()
        except Exception as e:  # reported by the test
            self.error = repr(e)
        finally:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)

    def resume(self):
        self.go.set()


class ManifestLoop(threading.Thread):
    """GET the manifest again and again, a new connection each time."""

    def __init__(self, url, ca):
        super().__init__(daemon=True)
        self.url, self.ca = url, ca
        self.ok = 0
        self.failures = []
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set() and n < 100000:
            n += 1
            try:
                with requests.Session() as s:
                    s.trust_env = False
                    r = s.get(self.url, verify=self.ca, timeout=30,
                              headers={"Accept": OCI_MANIFEST})
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append("status %d" % r.status_code)
            except Exception as e:
                self.failures.append(repr(e))


def _sighup_and_wait(gw, n_done):
    """SIGHUP; wait for the n_done-th "reload done"."""
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: gw.log_text().count("server reload done") >= n_done,
             timeout=60, what="reload %d to finish" % n_done)


def test_reload_under_load_rotates_cert_and_policy(start_registry,
                                                   start_gateway, tmp_path):
    pki = PKI(tmp_path / "pki")
    gen = [pki.issue("gw%d" % i, "/O=Portcullis Test/CN=gw-gen%d" % i,
                     san="IP:127.0.0.1") for i in range(4)]
    live_crt = str(tmp_path / "live.pem")
    live_key = str(tmp_path / "live.key")
    shutil.copy(gen[0][0], live_crt)
    shutil.copy(gen[0][1], live_key)

    reg = start_registry("up")
    mdigest = _push_image(reg, "lab/img")
    _push_image(reg, "lab/other")
    big = _write_big_blob(reg, "lab/img", BIG)

    cfg = gateway_config(upstream(reg, default=True),
                         listen={"tls": {"cert_file": live_crt,
                                         "key_file": live_key}},
                         metrics={"allow": ["127.0.0.1"]},
                         policy=_policy(False),
                         timeouts={"upstream_connect": 5,
                                   "upstream_response": 60})
    gw = start_gateway(cfg, tls_client={"ca": pki.ca})
    cfg = gw.config  # with the listen address it chose
    assert _served_cert(gw.port, pki.ca) == _cert_text(gen[0][0])

    def other_status():
        return gw.http.get(gw.url + "/v2/up/lab/other/manifests/v1",
                           headers={"Accept": OCI_MANIFEST},
                           timeout=30).status_code
    assert other_status() == 200

    loop = ManifestLoop(gw.url + "/v2/up/lab/img/manifests/" + mdigest,
                        pki.ca)
    puller = Puller(gw.url + "/v2/up/lab/img/blobs/" + big, pki.ca,
                    [BIG // 4, BIG // 2, 3 * BIG // 4])
    rss = []
    loop.start()
    puller.start()
    try:
        for k in (1, 2, 3):
            assert puller.paused.wait(300), "pull stalled before mark %d" % k
            puller.paused.clear()
            assert puller.got < BIG
            # Streaming: the gateway holds a window, not the blob.
            rss.append(gw.rss_kib())
            before = loop.ok
            if k == 1:
                # Same paths, new content (certbot-style renewal).
                shutil.copy(gen[1][0], live_crt)
                shutil.copy(gen[1][1], live_key)
            else:
                cfg["listen"]["tls"] = {"cert_file": gen[k][0],
                                        "key_file": gen[k][1]}
            cfg["policy"] = _policy(k % 2 == 1)
            with open(gw.config_path, "w") as f:
                json.dump(cfg, f)
            _sighup_and_wait(gw, k)
            # New connections get the new certificate and policy.
            assert _served_cert(gw.port, pki.ca) == _cert_text(gen[k][0])
            # Denied anonymously: 401 with a challenge (no identity here).
            assert other_status() in ((401, 403) if k % 2 == 1 else (200,))
            # The manifest loop went on across the reload.
            wait_for(lambda: loop.ok >= before + 3, timeout=60,
                     what="manifest requests after reload %d" % k)
            puller.resume()
        puller.join(600)
        assert not puller.is_alive()
    finally:
        loop.stop.set()
        puller.resume()
        loop.join(60)
    assert puller.error is None, puller.error
    assert puller.got == BIG
    assert puller.digest == big
    assert loop.failures == []
    assert loop.ok >= 9
    assert max(rss) < 128 * 1024, rss
    print("gateway RSS at the reloads (KiB):", rss, "manifest GETs:",
          loop.ok)
    assert _metric(gw, 'portcullis_reloads_total{result="ok"}') == 3
    assert _metric(gw, 'portcullis_reloads_total{result="failed"}') == 0
    assert gw.alive()


def test_reload_with_a_bad_certificate_keeps_the_old_one(start_registry,
                                                        start_gateway,
                                                        tmp_path):
    pki = PKI(tmp_path / "pki")
    crt1, key1 = pki.issue("a", "/CN=gw-a", san="IP:127.0.0.1")
    crt2, key2 = pki.issue("b", "/CN=gw-b", san="IP:127.0.0.1")
    reg = start_registry("up")
    cfg = gateway_config(upstream(reg, default=True),
                         listen={"tls": {"cert_file": crt1,
                                         "key_file": key1}},
                         metrics={"allow": ["127.0.0.1"]})
    gw = start_gateway(cfg, tls_client={"ca": pki.ca})
    cfg = gw.config
    # A certificate with another certificate's key: refused.
    cfg["listen"]["tls"] = {"cert_file": crt2, "key_file": key1}
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "server reload failed" in gw.log_text(),
             what="the reload to fail")
    assert "cannot load key" in gw.log_text()
    assert _served_cert(gw.port, pki.ca) == _cert_text(crt1)
    assert _metric(gw, 'portcullis_reloads_total{result="failed"}') == 1
    # A file that is not a certificate at all: refused too.
    with open(str(tmp_path / "junk.pem"), "w") as f:
        f.write("not a certificate\n")
    cfg["listen"]["tls"] = {"cert_file": str(tmp_path / "junk.pem"),
                            "key_file": key2}
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: gw.log_text().count("server reload failed") >= 2,
             what="the second reload to fail")
    assert "cannot load certificate" in gw.log_text()
    assert _served_cert(gw.port, pki.ca) == _cert_text(crt1)
    # Turning TLS off is a restart, not a reload.
    del cfg["listen"]["tls"]
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "server reload refused" in gw.log_text(),
             what="the reload to be refused")
    assert "/listen/tls: a reload cannot add or remove it" in gw.log_text()
    # The good pair again: accepted.
    cfg["listen"]["tls"] = {"cert_file": crt2, "key_file": key2}
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "server reload done" in gw.log_text(),
             what="the reload to succeed")
    assert _served_cert(gw.port, pki.ca) == _cert_text(crt2)
    assert _metric(gw, 'portcullis_reloads_total{result="failed"}') == 3
    assert _metric(gw, 'portcullis_reloads_total{result="ok"}') == 1
