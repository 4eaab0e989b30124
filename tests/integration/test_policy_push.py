"""Policy on what the catalog shows and what tags point at, against a real
docker-registry and skopeo:

- `_catalog` lists only the repositories the caller may pull: two
  gateways with different policies on one upstream (both callers are
  anonymous on loopback, so the policies, not the callers, differ), walked
  page by page with n/last and the Link header; and with the gateway's
  scan bounded (limits.catalog_names, limits.catalog_pages), the walk
  still comes out whole.
- An immutable tag cannot be moved by `skopeo copy` (403, the upstream's
  tag unchanged, no manifest PUT in its access log) while a new tag, a
  mutable one and an identical re-push go through, against a
  token-protected upstream.
- A blocked manifest digest pulled by tag is refused, through the proxy
  and through the cache (from the tag record, and after revalidation).

Three tests use HostileUpstream, a TEST DOUBLE for a misbehaving upstream,
for faults a real docker-registry will not make: a catalog page larger
than limits.catalog_page_bytes, a HEAD that fails while the PUT would be
taken (the immutable check must fail closed), and a manifest answered
without Docker-Content-Digest (the gateway computes it).
"""

import hashlib
import json
import re
import urllib.parse

import pytest

from lib.cache import cache_cfg
from lib.gateway import gateway_config, upstream
from lib.hostile_upstream import HostileUpstream
from lib.images import HOST_ARCH, OCI_CONFIG, OCI_MANIFEST
from lib.registry import MANIFEST_TYPES

ACCEPT = ", ".join(MANIFEST_TYPES)
LINK_RE = re.compile(r'^<(/v2/_catalog\?[^>]*)>; rel="next"$')


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_tiny(http, reg, repo, tag="v1", seed=None):
    """Push a one-blob image straight to an unauthenticated registry;
    returns the manifest's bytes and digest."""
    cfg = json.dumps({"architecture": HOST_ARCH, "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": []},
                      "comment": seed or repo}).encode()
    d = sha256(cfg)
    r = http.post("%s/v2/%s/blobs/uploads/" % (reg.url, repo), timeout=30)
    assert r.status_code == 202, r.text
    loc = urllib.parse.urljoin(reg.url, r.headers["Location"])
    r = http.put(loc + ("&" if "?" in loc else "?") + "digest=" + d,
                 data=cfg, timeout=30,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": d,
                                 "size": len(cfg)},
                      "layers": []}).encode()
    r = http.put("%s/v2/%s/manifests/%s" % (reg.url, repo, tag), data=man,
                 headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 201, r.text
    return man, sha256(man)


def rule(id_, actions, repos, effect="allow", subjects=("anonymous",)):
    return {"id": id_, "effect": effect, "subjects": list(subjects),
            "actions": list(actions), "repositories": list(repos)}


def walk(http, gw, first):
    """Follow the catalog's Link from `first` to the end: the list of
    (names, link) pages."""
    url, pages = gw.url + first, []
    for _ in range(200):
        r = http.get(url, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        names = r.json()["repositories"]
        link = r.headers.get("Link")
        pages.append((names, link))
        if link is None:
            return pages
        m = LINK_RE.match(link)
        assert m, link
        url = gw.url + m.group(1)
    raise AssertionError("catalog walk did not end: %r" % pages[-3:])


# -- _catalog --------------------------------------------------------------

TEAM_A = ["team-a/r%02d" % i for i in range(10)]
TEAM_B = ["team-b/r%02d" % i for i in range(8)]
SHARED = ["shared/x%d" % i for i in range(5)]
SECRET = ["shared/secret1", "shared/secret2"]
ALL_REPOS = TEAM_A + TEAM_B + SHARED + SECRET      # 25


@pytest.fixture(scope="module")
def catalog_stack(start_registry_module, start_gateway_module):
    import requests
    reg = start_registry_module("cat")
    http = requests.Session()
    http.trust_env = False
    for repo in ALL_REPOS:
        push_tiny(http, reg, repo)
    # Through the gateway "up1/hidden" routes to up1's "hidden" (up1 is
    # the upstream's prefix): not a name a client could use, so unlisted
    # even though a rule allows it.
    push_tiny(http, reg, "up1/hidden")
    up = upstream(reg, name="up1", prefix="up1", default=True)
    pol_a = {"rules": [
        rule("a-list", ["catalog"], ["**"]),
        rule("a-pull", ["pull"], ["team-a/**", "shared/**", "up1/**"]),
        rule("a-no-secrets", ["pull"], ["shared/secret*"], effect="deny")]}
    pol_b = {"rules": [
        rule("b-list", ["catalog"], ["**"]),
        rule("b-pull", ["pull"], ["team-b/**", "shared/**"])]}
    gw_a = start_gateway_module(gateway_config(up, policy=pol_a))
    gw_b = start_gateway_module(gateway_config(up, policy=pol_b))
    # A small scan per request: 3 names a page, 2 pages, for team-b only
    # (whose names sort after 17 others).
    gw_c = start_gateway_module(gateway_config(
        up, policy={"rules": [rule("c-list", ["catalog"], ["**"]),
                              rule("c-pull", ["pull"], ["team-b/**"])]},
        limits={"catalog_names": 3, "catalog_pages": 2}))

    class S:
        pass
    s = S()
    s.reg, s.a, s.b, s.c = reg, gw_a, gw_b, gw_c
    return s


def _check_walk(pages, allowed, n):
    names = [x for got, _ in pages for x in got]
    assert names == sorted(allowed), names
    assert len(set(names)) == len(names)
    assert all(len(got) <= n for got, _ in pages)
    # A Link on every page but the last.
    assert all(link is not None for _, link in pages[:-1])
    assert pages[-1][1] is None
    return names


def test_catalog_filtered_per_caller_and_paginated(catalog_stack, http):
    s = catalog_stack
    # The upstream holds all 25; each gateway shows its caller's share.
    direct = http.get(s.reg.url + "/v2/_catalog?n=1000", timeout=30).json()
    assert set(ALL_REPOS + ["up1/hidden"]) <= set(direct["repositories"])

    allowed_a = TEAM_A + SHARED
    pages = walk(http, s.a, "/v2/_catalog?n=4")
    names = _check_walk(pages, allowed_a, 4)
    # Full pages of exactly n until the end: 15 names, n=4.
    assert [len(got) for got, _ in pages] == [4, 4, 4, 3]
    assert not set(names) & set(TEAM_B + SECRET)
    for got, link in pages[:-1]:
        assert link == '</v2/_catalog?n=4&last=%s>; rel="next"' % (
            got[-1].replace("/", "%2F"))

    pages = walk(http, s.b, "/v2/_catalog?n=4")
    names = _check_walk(pages, TEAM_B + SHARED + SECRET, 4)
    assert not set(names) & set(TEAM_A)

    # Starting after a name, and one page holding everything.
    r = http.get(s.a.url + "/v2/_catalog?n=3&last=shared/x3", timeout=30)
    assert r.json()["repositories"] == ["shared/x4", "team-a/r00",
                                        "team-a/r01"]
    r = http.get(s.a.url + "/v2/_catalog", timeout=30)
    assert r.json()["repositories"] == sorted(allowed_a)
    assert "Link" not in r.headers
    # HEAD: the same head, no body.
    h = http.head(s.a.url + "/v2/_catalog?n=4", timeout=30)
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Link"] == pages_first_link(http, s.a)
    # Routed by containerd's ns=: the Link keeps it.
    r = http.get(s.a.url + "/v2/_catalog?n=4&ns=" + s.reg.host, timeout=30)
    assert r.json()["repositories"] == sorted(allowed_a)[:4]
    assert r.headers["Link"] == \
        '</v2/_catalog?n=4&last=shared%%2Fx3&ns=%s>; rel="next"' % (
            s.reg.host.replace(":", "%3A"))
    # Bad n or last: 400, nothing asked of the upstream.
    for q in ("n=-1", "n=abc", "last=UPPER"):
        r = http.get(s.a.url + "/v2/_catalog?" + q, timeout=30)
        assert r.status_code == 400, (q, r.text)


def pages_first_link(http, gw):
    return http.get(gw.url + "/v2/_catalog?n=4", timeout=30).headers["Link"]


def test_catalog_bounded_scan_continues_with_link(catalog_stack, http):
    s = catalog_stack
    m = s.reg.mark()
    pages = walk(http, s.c, "/v2/_catalog?n=2")
    names = [x for got, _ in pages for x in got]
    assert names == TEAM_B, pages
    assert all(len(got) <= 2 for got, _ in pages)
    # The bound was hit: pages with nothing allowed, and a Link on.
    assert any(got == [] and link is not None for got, link in pages)
    # At most catalog_pages (2) upstream pages of catalog_names (3) per
    # request.
    ups = [e for e in s.reg.access_log(since=m)
           if e["path"] == "/v2/_catalog"]
    assert len(ups) <= 2 * len(pages)
    assert all("n=3" in e["query"] for e in ups)
    # No n: catalog_names at most, with a Link on.
    r = http.get(s.c.url + "/v2/_catalog?last=team-a/r09", timeout=30)
    assert r.json()["repositories"] == TEAM_B[:3]
    assert r.headers["Link"] == \
        '</v2/_catalog?n=3&last=team-b%2Fr02>; rel="next"'


def test_catalog_page_over_limit_is_502(start_gateway, http):
    # The test double answers the catalog with a page larger than
    # limits.catalog_page_bytes: refused, never read whole.
    up = HostileUpstream()
    try:
        names = ["big/r%04d" % i for i in range(200)]
        page = json.dumps({"repositories": names}).encode()
        assert len(page) > 1024
        up.route("GET", "/v2/_catalog", 200,
                 {"Content-Type": "application/json"}, page)
        gw = start_gateway(gateway_config(
            {"name": "up1", "url": up.url, "prefix": "up1",
             "default": True, "hosts": []},
            policy={"rules": [rule("all", ["pull", "catalog"], ["**"])]},
            limits={"catalog_page_bytes": 1024}))
        r = http.get(gw.url + "/v2/_catalog?n=5", timeout=30)
        assert r.status_code == 502, r.text
        assert "catalog_page_bytes" in r.json()["errors"][0]["detail"]
        assert up.count("GET", "/v2/_catalog") == 1
    finally:
        up.stop()


# -- immutable tags ----------------------------------------------------------

@pytest.fixture(scope="module")
def imm_stack(start_registry_module, start_gateway_module, tmp_path_factory):
    reg = start_registry_module("immup", auth="token")
    d = tmp_path_factory.mktemp("imm-creds-")
    creds = d / "creds"
    creds.write_text("%s:%s\n" % (reg.issuer.username, reg.issuer.password))
    creds.chmod(0o600)
    pol = {"rules": [rule("all", ["pull", "push"], ["**"])],
           "immutable_tags": [{"id": "releases",
                               "repositories": ["apps/**"],
                               "tags": ["v*"]}]}
    gw = start_gateway_module(gateway_config(
        upstream(reg, name="up1", prefix="up1", default=True,
                 credentials_file=creds,
                 auth_hosts=["127.0.0.1:%d" % reg.issuer.port]),
        policy=pol))

    class S:
        pass
    s = S()
    s.reg, s.gw = reg, gw
    return s


def _manifest_puts(reg, since, repo, tag):
    return [e for e in reg.access_log(since=since)
            if e["method"] == "PUT" and
            e["path"] == "/v2/%s/manifests/%s" % (repo, tag)]


def test_immutable_tag_not_overwritten_new_tag_pushed(imm_stack, skopeo,
                                                      image_factory):
    s = imm_stack
    one = image_factory("imm-one", platforms=[("linux", HOST_ARCH)],
                        seed="imm-one")
    two = image_factory("imm-two", platforms=[("linux", HOST_ARCH)],
                        seed="imm-two")
    assert one.digest != two.digest
    dest = "docker://%s/apps/web:%%s" % s.gw.host

    # A new immutable tag may be created: the upstream says 404 first.
    m = s.reg.mark()
    skopeo("copy", "--dest-tls-verify=false", one.ref, dest % "v1")
    log = s.reg.access_log(since=m)
    heads = [e for e in log if e["method"] == "HEAD" and
             e["path"] == "/v2/apps/web/manifests/v1"]
    assert heads and heads[0]["status"] == 404
    assert len(_manifest_puts(s.reg, m, "apps/web", "v1")) == 1
    assert s.reg.get_manifest("apps/web", "v1").headers[
        "Docker-Content-Digest"] == one.digest

    # The same manifest again: allowed (idempotent re-push).
    m = s.reg.mark()
    skopeo("copy", "--dest-tls-verify=false", one.ref, dest % "v1")
    assert len(_manifest_puts(s.reg, m, "apps/web", "v1")) == 1

    # Another image under v1: refused, and the upstream never sees it.
    m = s.reg.mark()
    r = skopeo("copy", "--dest-tls-verify=false", two.ref, dest % "v1",
               check=False)
    assert r.returncode != 0
    assert "immutable" in r.stderr, r.stderr
    assert _manifest_puts(s.reg, m, "apps/web", "v1") == []
    assert s.reg.get_manifest("apps/web", "v1").headers[
        "Docker-Content-Digest"] == one.digest
    assert "policy immutable repo=apps/web tag=v1 rule=releases" in \
        s.gw.log_text()

    # A new tag, a tag no rule names, a repository no rule names: pushed.
    skopeo("copy", "--dest-tls-verify=false", two.ref, dest % "v2")
    skopeo("copy", "--dest-tls-verify=false", one.ref, dest % "latest")
    skopeo("copy", "--dest-tls-verify=false", two.ref, dest % "latest")
    other = "docker://%s/other/web:v1" % s.gw.host
    skopeo("copy", "--dest-tls-verify=false", one.ref, other)
    skopeo("copy", "--dest-tls-verify=false", two.ref, other)
    for repo, tag, want in (("apps/web", "v2", two), ("apps/web", "latest",
                            two), ("other/web", "v1", two)):
        assert s.reg.get_manifest(repo, tag).headers[
            "Docker-Content-Digest"] == want.digest, (repo, tag)
    # The check asked with a pull token, the push with a push token.
    scopes = set()
    for rec in s.reg.issuer.requests():
        for sc in rec["scopes"]:
            scopes.update(x for x in sc.split(" ") if x)
    assert "repository:apps/web:pull" in scopes
    assert "repository:apps/web:pull,push" in scopes


def test_immutable_tag_raw_put_refused_with_oci_error(imm_stack, http,
                                                      skopeo, image_factory):
    s = imm_stack
    one = image_factory("imm-raw", platforms=[("linux", HOST_ARCH)],
                        seed="imm-raw")
    skopeo("copy", "--dest-tls-verify=false", one.ref,
           "docker://%s/apps/raw:v1" % s.gw.host)
    url = "%s/v2/apps/raw/manifests/v1" % s.gw.url
    body = s.reg.get_manifest("apps/raw", "v1").content
    assert sha256(body) == one.digest
    changed = json.dumps(dict(json.loads(body), annotations={
        "x": "moved"})).encode()
    hdrs = {"Content-Type": json.loads(body)["mediaType"]}

    m = s.reg.mark()
    r = http.put(url, data=changed, headers=hdrs, timeout=30)
    assert r.status_code == 403, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "DENIED"
    assert err["message"] == "manifest tag is immutable"
    assert err["detail"] == "tag v1 of apps/raw is immutable (releases)"
    # Chunked (the body read whole first, then sent with a length).
    r = http.put(url, data=iter([changed[:10], changed[10:]]), headers=hdrs,
                 timeout=30)
    assert r.status_code == 403, r.text
    r = http.put(url, data=iter([body[:7], body[7:]]), headers=hdrs,
                 timeout=30)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == one.digest
    puts = _manifest_puts(s.reg, m, "apps/raw", "v1")
    assert [e["status"] for e in puts] == [201]
    assert s.reg.get_manifest("apps/raw", "v1").headers[
        "Docker-Content-Digest"] == one.digest


def test_immutable_check_fails_closed(start_gateway, http):
    # A misbehaving upstream (the test double) that fails the HEAD but
    # would take the PUT: the push is refused (502), never forwarded.
    up = HostileUpstream()
    try:
        up.route("HEAD", "/v2/apps/x/manifests/v1", 500)
        up.route("PUT", "/v2/apps/x/manifests/v1", 201)
        up.route("HEAD", "/v2/apps/y/manifests/v1", 401)
        up.route("PUT", "/v2/apps/y/manifests/v1", 201)
        gw = start_gateway(gateway_config(
            {"name": "up1", "url": up.url, "prefix": "up1",
             "default": True, "hosts": []},
            policy={"rules": [rule("all", ["pull", "push"], ["**"])],
                    "immutable_tags": [{"id": "releases",
                                        "repositories": ["**"],
                                        "tags": ["v*"]}]}))
        for repo in ("apps/x", "apps/y"):
            r = http.put("%s/v2/%s/manifests/v1" % (gw.url, repo),
                         data=b"{}", headers={"Content-Type": OCI_MANIFEST},
                         timeout=30)
            assert r.status_code == 502, (repo, r.text)
            assert up.count("HEAD", "/v2/%s/manifests/v1" % repo) >= 1
            assert up.count("PUT", "/v2/%s/manifests/v1" % repo) == 0
        # A tag no rule names goes straight to the upstream.
        r = http.put("%s/v2/apps/x/manifests/latest" % gw.url, data=b"{}",
                     headers={"Content-Type": OCI_MANIFEST}, timeout=30)
        assert up.count("HEAD", "/v2/apps/x/manifests/latest") == 0
        assert up.count("PUT", "/v2/apps/x/manifests/latest") == 1
    finally:
        up.stop()


# -- blocked digests pulled by tag -----------------------------------------

@pytest.fixture(scope="module")
def blk_stack(start_registry_module):
    import requests
    reg = start_registry_module("blk")
    http = requests.Session()
    http.trust_env = False
    bad_man, bad = push_tiny(http, reg, "blk/app", "v1", seed="bad")
    push_tiny(http, reg, "other/app", "v1", seed="bad")
    _, good = push_tiny(http, reg, "ok/app", "v1", seed="good")

    class S:
        pass
    s = S()
    s.reg, s.bad, s.good = reg, bad, good
    return s


def _blk_policy(bad):
    return {"rules": [rule("all", ["pull"], ["**"])],
            "blocked_digests": [{"digest": bad, "reason": "test: bad"}]}


def _get(http, gw, repo, ref, head=False):
    f = http.head if head else http.get
    return f("%s/v2/%s/manifests/%s" % (gw.url, repo, ref),
             headers={"Accept": ACCEPT}, timeout=30)


def test_blocked_digest_pulled_by_tag_through_proxy(blk_stack, start_gateway,
                                                     http, skopeo, tmp_path):
    s = blk_stack
    gw = start_gateway(gateway_config(
        upstream(s.reg, name="up1", prefix="up1", default=True),
        policy=_blk_policy(s.bad)))
    for repo in ("blk/app", "other/app", "up1/blk/app"):
        for head in (False, True):
            r = _get(http, gw, repo, "v1", head=head)
            assert r.status_code == 403, (repo, head, r.status_code)
            if not head:
                assert r.json()["errors"][0]["code"] == "DENIED"
                err = r.json()["errors"][0]
                assert err["message"] == "manifest digest is blocked"
                assert err["detail"] == "manifest %s of %s:v1 is blocked" % (
                    s.bad, repo)
    r = _get(http, gw, "ok/app", "v1")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == s.good
    res = skopeo("copy", "--src-tls-verify=false",
                 "docker://%s/other/app:v1" % gw.host,
                 "oci:%s:v1" % (tmp_path / "out"), check=False)
    assert res.returncode != 0
    assert "blocked" in res.stderr or "denied" in res.stderr.lower()


def test_blocked_digest_pulled_by_tag_through_cache(blk_stack, start_gateway,
                                                     http, tmp_path):
    s = blk_stack
    up = upstream(s.reg, name="up1", prefix="up1", default=True)
    cdir = tmp_path / "cache"
    # Fill the cache and the tag record while nothing is blocked.
    gw1 = start_gateway(gateway_config(up, cache=cache_cfg(cdir,
                        tag_ttl=3600),
                        policy={"rules": [rule("all", ["pull"], ["**"])]}))
    r = _get(http, gw1, "blk/app", "v1")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == \
        s.bad
    r = _get(http, gw1, "blk/app", "v1")
    assert r.status_code == 200
    assert "cache=hit" in gw1.log_text()
    gw1.stop()

    # The same cache with the digest blocked: the tag record leads to it.
    gw2 = start_gateway(gateway_config(up, cache=cache_cfg(cdir,
                        tag_ttl=3600), policy=_blk_policy(s.bad)))
    m = s.reg.mark()
    for head in (False, True):
        r = _get(http, gw2, "blk/app", "v1", head=head)
        assert r.status_code == 403, (head, r.status_code)
    assert not [e for e in s.reg.access_log(since=m)
                if e["path"].startswith("/v2/blk/app/manifests/")]
    gw2.stop()

    # A record too old: revalidated with a HEAD, refused before a fill.
    gw3 = start_gateway(gateway_config(up, cache=cache_cfg(cdir, tag_ttl=0),
                        policy=_blk_policy(s.bad)))
    m = s.reg.mark()
    r = _get(http, gw3, "other/app", "v1")
    assert r.status_code == 403
    log = [e for e in s.reg.access_log(since=m)
           if e["path"].startswith("/v2/other/app/manifests/")]
    assert [e["method"] for e in log] == ["HEAD"]
    r = _get(http, gw3, "ok/app", "v1")
    assert r.status_code == 200


def test_blocked_digest_without_upstream_digest_header(start_gateway, http):
    # The double answers a manifest by tag with no Docker-Content-Digest:
    # the gateway holds the (bounded) body and computes the digest.
    up = HostileUpstream()
    try:
        bad = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {}, "layers": [], "x": 1}).encode()
        good = bad.replace(b'"x": 1', b'"x": 2')
        for tag, body in (("bad", bad), ("good", good)):
            up.route("GET", "/v2/app/manifests/" + tag, 200,
                     {"Content-Type": OCI_MANIFEST}, body)
        gw = start_gateway(gateway_config(
            {"name": "up1", "url": up.url, "prefix": "up1",
             "default": True, "hosts": []}, policy=_blk_policy(sha256(bad))))
        r = _get(http, gw, "app", "bad")
        assert r.status_code == 403, r.text
        assert r.json()["errors"][0]["code"] == "DENIED"
        r = _get(http, gw, "app", "good")
        assert r.status_code == 200
        assert r.content == good
        assert r.headers["Content-Type"] == OCI_MANIFEST
    finally:
        up.stop()
