"""Attacker review of the policy gate (issue 8), one test per hole found:

- requests the gate and the upstream read differently: docker-registry
  (a Go net/http server) takes an upload's `mount`, `from` and `digest`
  with Request.FormValue, which also reads a form body and drops query
  pairs it cannot decode;
- a hostile upstream naming another digest than the manifest it sends;
- a _catalog Link naming a repository the caller may not pull;
- client credentials other than Authorization (Cookie, X-Registry-Auth)
  forwarded upstream;
- immutable tags moved by a PUT that held its body back, or by two
  pushes of a new tag at once;
- a blocked manifest pushed by tag.

Real parts: docker-registry upstreams (their access logs and storage
show what reached them; one with its token issuer, which a test stops
with SIGSTOP to hold two pushes at the same point), certificates made
with the openssl command line (test_policy.py's PKI).  TEST DOUBLES, for
misbehaving or observing peers only: LyingUpstream (lib/lying_upstream,
an upstream that lies about a manifest's digest) and RecordingProxy
(lib/recording_proxy, a wire tap that only relays and records what the
gateway sent upstream)."""

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import threading
import urllib.parse

import requests

from lib.gateway import gateway_config, upstream
from lib.lying_upstream import liar_upstream
from lib.recording_proxy import RecordingProxy
from lib.util import wait_for
# Fixtures (gw, pki, redis_mod, reg) are found by name.
from test_policy import error_of, gw, pki, redis_mod, reg  # noqa: F401
from test_policy_push import push_tiny, rule, walk


def raw(gw, pki, who, method, target, body=b"", headers=None):
    """One request exactly as written (requests would re-encode)."""
    ctx = ssl.create_default_context(cafile=pki.ca)
    if who is not None:
        ctx.load_cert_chain(*who["cert"])
    c = http.client.HTTPSConnection("127.0.0.1", gw.port, context=ctx,
                                    timeout=15)
    try:
        c.request(method, target, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


LINK_Q = re.compile(r'^</v2/_catalog\?([^>]*)>; rel="next"$')
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_mount_source_in_a_form_body(gw, reg, pki):
    """The pusher may push scratch/** but not pull hidden/**: a mount
    whose mount= and from= travel in a form body instead of the query
    must not borrow hidden/app's blob (the upstream reads the body)."""
    mark = reg.mark()
    st, _, body = raw(gw, pki, pki.pusher, "POST",
                      "/v2/scratch/f1/blobs/uploads/",
                      body=("mount=%s&from=hidden/app" % reg.layer).encode(),
                      headers=FORM)
    assert st != 201, body
    assert not reg.has_blob("scratch/f1", reg.layer)
    # multipart/form-data is a form body too.
    bnd = "xyzzy"
    mp = ("--{b}\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n"
          "{d}\r\n--{b}\r\nContent-Disposition: form-data; name=\"from\""
          "\r\n\r\nhidden/app\r\n--{b}--\r\n").format(b=bnd, d=reg.layer)
    st, _, body = raw(gw, pki, pki.pusher, "POST",
                      "/v2/scratch/f2/blobs/uploads/", body=mp.encode(),
                      headers={"Content-Type":
                               "multipart/form-data; boundary=" + bnd})
    assert st != 201, body
    assert not reg.has_blob("scratch/f2", reg.layer)
    posts = [e for e in reg.access_log(since=mark) if e["method"] == "POST"]
    assert all("hidden" not in e["query"] for e in posts), posts


def test_mount_source_after_an_undecodable_one(gw, reg, pki):
    """A first from= that does not decode (%zz) is dropped by the
    upstream, which then mounts from the second (docker-registry does):
    the gateway refuses such a target before the gate (400), so the
    second one never goes through unchecked."""
    for n, q in enumerate((
            "mount=%s&from=%%zz&from=hidden/app" % reg.layer,
            "mount=%%zz&mount=%s&from=hidden/app" % reg.layer)):
        repo = "scratch/q%d" % n
        st, _, body = raw(gw, pki, pki.pusher, "POST",
                          "/v2/%s/blobs/uploads/?%s" % (repo, q))
        assert st == 400, (q, body)
        assert not reg.has_blob(repo, reg.layer), q


# ---------------------------------------------------------------------------
# A hostile upstream (the LyingUpstream test double) naming another digest
# than the manifest it sends.

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest_doc(n):
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "%064x" % n, "size": 2},
        "layers": []}).encode()


def test_blocked_manifest_under_another_digest_header(liar, start_gateway):
    """A manifest GET through the proxy: the upstream sends the blocked
    manifest's bytes but names a harmless digest, the blocked one in
    upper case, or none in Docker-Content-Digest, or answers a GET by a
    harmless digest with them.  The bytes decide: 403 DENIED, and the
    blocked manifest never reaches the client."""
    bad = manifest_doc(1)
    good = manifest_doc(2)
    bad_d = "sha256:" + hashlib.sha256(bad).hexdigest()
    good_d = "sha256:" + hashlib.sha256(good).hexdigest()
    tags = {"lie": good_d, "upper": "sha256:" + bad_d[7:].upper(),
            "none": None}
    for tag, said in tags.items():
        fields = [("Content-Type", OCI_MANIFEST),
                  ("Content-Length", str(len(bad)))]
        if said is not None:
            fields.append(("Docker-Content-Digest", said))
        liar.canned("GET", "/v2/app/manifests/" + tag, 200, fields, bad)
    # By a harmless digest, answered with the blocked bytes.
    liar.canned("GET", "/v2/app/manifests/" + good_d, 200, [
        ("Content-Type", OCI_MANIFEST), ("Content-Length", str(len(bad))),
        ("Docker-Content-Digest", good_d)], bad)
    tags[good_d] = good_d
    liar.canned("GET", "/v2/app/manifests/ok", 200, [
        ("Content-Type", OCI_MANIFEST), ("Content-Length", str(len(good))),
        ("Docker-Content-Digest", good_d)], good)
    u = liar_upstream(liar, default=True)
    for listed in (bad_d,):
        pol = {"rules": [{"id": "all", "effect": "allow",
                          "repositories": ["**"], "subjects": ["anonymous"],
                          "actions": ["pull"]}],
               "blocked_digests": [{"digest": listed, "reason": "test"}]}
        g = start_gateway(gateway_config(u, policy=pol))
        s = requests.Session()
        s.trust_env = False
        for tag in tags:
            r = s.get(g.url + "/v2/app/manifests/" + tag,
                      headers={"Accept": OCI_MANIFEST}, timeout=15)
            assert r.status_code == 403, (listed, tag, r.status_code)
            assert error_of(r)["code"] == "DENIED", r.text
            assert bad not in r.content
        # The harmless manifest still flows.
        r = s.get(g.url + "/v2/app/manifests/ok",
                  headers={"Accept": OCI_MANIFEST}, timeout=15)
        assert r.status_code == 200 and r.content == good
        g.stop()


# ---------------------------------------------------------------------------
# _catalog: the Link of a page cut at limits.catalog_pages.

def test_catalog_link_names_no_forbidden_repository(start_registry,
                                                    start_gateway):
    """A scan cut at limits.catalog_pages goes on from the last name it
    scanned: that name must not reach the caller when the caller may not
    pull it (here: every name of aa/, the secrets, sorts before the one
    allowed repository).  The walk still ends with exactly the allowed
    names."""
    reg = start_registry("cat")
    http = requests.Session()
    http.trust_env = False
    secret = ["aa/secret%02d" % i for i in range(7)]
    for repo in secret + ["zz/app"]:
        push_tiny(http, reg, repo)
    g = start_gateway(gateway_config(
        upstream(reg, name="up1", prefix="up1", default=True),
        policy={"rules": [rule("list", ["catalog"], ["**"]),
                          rule("pull", ["pull"], ["zz/**"])]},
        limits={"catalog_names": 2, "catalog_pages": 1}))
    pages = walk(http, g, "/v2/_catalog?n=5")
    assert [x for got, _ in pages for x in got] == ["zz/app"], pages
    assert len(pages) > 1           # the bound was hit
    for _, link in pages:
        text = urllib.parse.unquote(link or "")
        assert "secret" not in text and "aa/" not in text, link
    # The position is sealed: one altered or made up is refused.
    link = next(link for _, link in pages if link is not None)
    q = LINK_Q.match(link).group(1)
    pos = urllib.parse.parse_qs(q)["last"][0]
    assert pos.startswith("~"), link
    bad = pos[:-1] + ("0" if pos[-1] != "0" else "1")
    for last in (bad, "~" + "0" * (len(pos) - 1), "~00"):
        r = http.get(g.url + "/v2/_catalog?n=5&last=" + last, timeout=30)
        assert r.status_code == 400, (last, r.text)


# ---------------------------------------------------------------------------
# Credentials a client sends in fields other than Authorization.

def test_credential_fields_never_forwarded_or_logged(reg, start_gateway):
    """Cookie, X-Registry-Auth (the docker engine API's credentials) and
    Proxy-Authorization are a client's secrets: none reaches the upstream
    (the wire tap, a test double that only relays, shows every byte the
    gateway sent) nor the gateway's debug log; the pull works."""
    tap = RecordingProxy(reg.host)
    try:
        g = start_gateway(gateway_config(
            upstream(reg, default=True, url=tap.url),
            log={"level": "debug"},
            policy={"rules": [rule("all", ["pull"], ["**"])]}))
        s = requests.Session()
        s.trust_env = False
        secrets = {"Cookie": "session=COOKIESECRET1",
                   "X-Registry-Auth": "XREGAUTHSECRET2",
                   "Proxy-Authorization": "Basic UFJPWFlTRUNSRVQz",
                   "Authorization": "Basic QVVUSFNFQ1JFVDQ="}
        for path in ("/v2/pub/app/manifests/v1",
                     "/v2/pub/app/blobs/" + reg.layer,
                     "/v2/pub/app/tags/list"):
            r = s.get(g.url + path, headers=dict(
                secrets, Accept="application/vnd.oci.image.manifest."
                "v1+json"), timeout=15)
            assert r.status_code == 200, (path, r.status_code)
        wire = tap.sent()
        log = g.log_text()
        for token in ("COOKIESECRET1", "XREGAUTHSECRET2",
                      "UFJPWFlTRUNSRVQz", "QVVUSFNFQ1JFVDQ"):
            assert token.encode() not in wire, (token, wire[-2000:])
            assert token not in log, token
    finally:
        tap.stop()


# ---------------------------------------------------------------------------
# Immutable tags: the check and the PUT it lets on.

def test_immutable_tag_check_not_stale_when_body_held(start_registry,
                                                      start_gateway):
    """The immutable check must be made once the pushed manifest is in,
    not when its head came: a client that sends the head of a PUT to a
    tag that does not exist yet and holds the body back must not move
    the tag that someone else created meanwhile."""
    reg = start_registry("imm")
    http = requests.Session()
    http.trust_env = False
    ma, _ = push_tiny(http, reg, "apps/race", tag="a", seed="one")
    mb, db = push_tiny(http, reg, "apps/race", tag="b", seed="two")
    pol = {"rules": [rule("all", ["pull", "push"], ["**"])],
           "immutable_tags": [{"id": "releases", "repositories": ["apps/**"],
                               "tags": ["v*"]}]}
    g = start_gateway(gateway_config(
        upstream(reg, name="up1", prefix="up1", default=True), policy=pol,
        log={"level": "debug"}))
    sock = socket.create_connection(("127.0.0.1", g.port), timeout=15)
    try:
        sock.sendall((
            "PUT /v2/apps/race/manifests/v9 HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
                OCI_MANIFEST, len(ma))).encode())
        # The gateway has the head: its check starts (before the fix its
        # HEAD of v9 went out now and got a 404).
        wait_for(lambda: "immutable_check repo=apps/race tag=v9" in
                 g.log_text(), what="the check of the held PUT")
        # Someone creates v9 meanwhile: a new immutable tag.
        r = http.put(g.url + "/v2/apps/race/manifests/v9", data=mb,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=15)
        assert r.status_code == 201, r.text
        sock.sendall(ma)
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = sock.recv(65536)
            if not chunk:
                break
            resp += chunk
    finally:
        sock.close()
    assert resp.startswith(b"HTTP/1.1 403 "), resp[:300]
    r = http.get(reg.url + "/v2/apps/race/manifests/v9",
                 headers={"Accept": OCI_MANIFEST}, timeout=15)
    assert r.headers["Docker-Content-Digest"] == db


def test_blocked_manifest_pushed_by_tag(start_registry, start_gateway):
    """A PUT by digest of a blocked manifest is refused; the same bytes
    pushed by tag (as docker push and skopeo do) must be refused too, and
    never reach the upstream; another manifest pushed by tag still goes."""
    reg = start_registry("blk")
    http = requests.Session()
    http.trust_env = False
    bad, bad_d = push_tiny(http, reg, "src/app", tag="x", seed="bad")
    good, good_d = push_tiny(http, reg, "src/app", tag="y", seed="good")
    # The blobs they name, in the target repository too.
    push_tiny(http, reg, "dst/app", tag="x", seed="bad")
    push_tiny(http, reg, "dst/app", tag="y", seed="good")
    pol = {"rules": [rule("all", ["pull", "push"], ["**"])],
           "blocked_digests": [{"digest": bad_d, "reason": "test"}]}
    g = start_gateway(gateway_config(
        upstream(reg, name="up1", prefix="up1", default=True), policy=pol))
    mark = reg.mark()
    hdrs = {"Content-Type": OCI_MANIFEST}
    r = http.put(g.url + "/v2/dst/app/manifests/" + bad_d, data=bad,
                 headers=hdrs, timeout=15)
    assert r.status_code == 403, r.text
    for body in (bad, iter([bad[:9], bad[9:]])):
        r = http.put(g.url + "/v2/dst/app/manifests/t1", data=body,
                     headers=hdrs, timeout=15)
        assert r.status_code == 403, r.text
        assert error_of(r)["code"] == "DENIED"
    assert not [e for e in reg.access_log(since=mark)
                if e["method"] == "PUT"]
    r = http.put(g.url + "/v2/dst/app/manifests/t2", data=good,
                 headers=hdrs, timeout=15)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == good_d


def push_tiny_token(http, reg, repo, tag, seed):
    """push_tiny straight to a token-protected registry (its own issuer's
    token), so that the gateway holds no push token for `repo`."""
    class Authed:
        url = reg.url
    s = requests.Session()
    s.trust_env = False
    s.headers.update(reg._headers(repo, "pull,push"))
    return push_tiny(s, Authed, repo, tag=tag, seed=seed)


def test_immutable_tag_pushes_in_flight_are_serialised(start_registry,
                                                       start_gateway,
                                                       tmp_path):
    """Two PUTs to a new immutable tag at once: each HEAD says 404 before
    either PUT lands (here the upstream's token issuer is held stopped
    while both are checked, so neither PUT can go on), and both would
    create the tag, the second moving it.  At most one may succeed."""
    reg = start_registry("immrace", auth="token")
    creds = tmp_path / "creds"
    creds.write_text("%s:%s\n" % (reg.issuer.username, reg.issuer.password))
    creds.chmod(0o600)
    http = requests.Session()
    http.trust_env = False
    ma, da = push_tiny_token(http, reg, "apps/race", "a", "one")
    mb, db = push_tiny_token(http, reg, "apps/race", "b", "two")
    pol = {"rules": [rule("all", ["pull", "push"], ["**"])],
           "immutable_tags": [{"id": "releases", "repositories": ["apps/**"],
                               "tags": ["v*"]}]}
    g = start_gateway(gateway_config(
        upstream(reg, name="up1", prefix="up1", default=True,
                 credentials_file=creds,
                 auth_hosts=["127.0.0.1:%d" % reg.issuer.port]),
        policy=pol))
    # The gateway's pull token for apps/race, cached: the checks' HEADs
    # need no issuer; the PUTs need a push token, which they wait for.
    r = http.get(g.url + "/v2/apps/race/manifests/a",
                 headers={"Accept": OCI_MANIFEST}, timeout=15)
    assert r.status_code == 200, r.text
    mark = reg.mark()
    results = {}

    def put(name, body):
        try:
            results[name] = requests.put(
                g.url + "/v2/apps/race/manifests/v9", data=body,
                headers={"Content-Type": OCI_MANIFEST}, timeout=30)
        except Exception as e:  # noqa: BLE001 - reported below
            results[name] = e

    os.kill(reg.issuer.pid, signal.SIGSTOP)
    threads = [threading.Thread(target=put, args=("A", ma)),
               threading.Thread(target=put, args=("B", mb))]
    try:
        threads[0].start()
        wait_for(lambda: [e for e in reg.access_log(since=mark)
                          if e["method"] == "HEAD"], what="A's check")
        threads[1].start()
        # B's check: its HEAD (before the fix), or its answer.
        wait_for(lambda: len([e for e in reg.access_log(since=mark)
                              if e["method"] == "HEAD"]) >= 2 or
                 "B" in results, what="B's check")
    finally:
        os.kill(reg.issuer.pid, signal.SIGCONT)
        for t in threads:
            t.join(60)
    codes = sorted(r.status_code for r in results.values())
    assert codes.count(201) <= 1, (codes, [r.text for r in
                                           results.values()])
    # The one checked while the other was in flight: 503, to retry.
    assert codes == [201, 503], codes
    late = [r for r in results.values() if r.status_code == 503][0]
    assert late.headers["Retry-After"] == "1"
    assert "in progress" in error_of(late)["detail"]
    tagged = reg.get_manifest("apps/race", "v9").headers[
        "Docker-Content-Digest"]
    winner = [n for n, r in results.items() if r.status_code == 201]
    assert tagged == {"A": da, "B": db}[winner[0]]
    # The tag is free again: the retry is checked, and refused as a move.
    loser = {"A": ma, "B": mb}["B" if winner[0] == "A" else "A"]
    r = http.put(g.url + "/v2/apps/race/manifests/v9", data=loser,
                 headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 403, r.text
    assert error_of(r)["message"] == "manifest tag is immutable"
