"""Routing through the gateway to real docker-registry upstreams: path
prefix, containerd's ns= (stripped before forwarding), the default upstream,
docker_hub library/ mapping, and the headers a proxy must keep or rewrite.

Each upstream holds a *different* image under the same name, so the digest
a response carries tells which upstream answered."""

import hashlib
import http.client
import urllib.parse

import pytest

from lib.gateway import gateway_config, upstream
from lib.lying_upstream import LyingUpstream
from lib.images import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, HOST_ARCH)
from lib.registry import MANIFEST_TYPES
from lib.util import wait_for

API_HEADER = "Docker-Distribution-Api-Version"
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)


@pytest.fixture(scope="module")
def stack(start_registry_module, start_gateway_module, image_factory, skopeo):
    r1 = start_registry_module("up1")
    r2 = start_registry_module("up2")
    img_a = image_factory("route-a", platforms=[("linux", HOST_ARCH)],
                          seed="route-a")
    img_b = image_factory("route-b", platforms=[("linux", HOST_ARCH)],
                          seed="route-b")
    multi = image_factory("route-multi", seed="route-multi")
    for reg, img, repo in ((r1, img_a, "demo/app:v1"),
                           (r2, img_b, "demo/app:v1"),
                           (r1, img_a, "team/app:v1"),
                           (r1, img_a, "library/alpinedemo:v1"),
                           (r1, multi, "multi/app:v1")):
        skopeo("copy", "--all", "--dest-tls-verify=false", img.ref,
               "docker://%s/%s" % (reg.host, repo))
    gw = start_gateway_module(gateway_config(
        upstream(r1, prefix="up1", default=True),
        upstream(r2, prefix="up2")))
    hub = start_gateway_module(gateway_config(
        upstream(r1, name="hub", prefix="hub", default=True,
                 docker_hub=True)))

    class S:
        pass
    s = S()
    s.r1, s.r2, s.gw, s.hub = r1, r2, gw, hub
    s.img_a, s.img_b, s.multi = img_a, img_b, multi
    return s


def get_manifest(http, base, path, accept=ACCEPT_ALL, method="GET"):
    return http.request(method, base + path, headers={"Accept": accept},
                        timeout=30)


def upstream_paths(reg, marker, method=None):
    return [e for e in reg.access_log(since=marker)
            if method is None or e["method"] == method]


def test_prefix_routes_to_that_upstream_without_prefix(stack, http):
    m1, m2 = stack.r1.mark(), stack.r2.mark()
    r = get_manifest(http, stack.gw.url, "/v2/up2/demo/app/manifests/v1")
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == stack.img_b.digest
    assert hashlib.sha256(r.content).hexdigest() == \
        stack.img_b.digest.split(":")[1]
    got = upstream_paths(stack.r2, m2, "GET")
    assert [e["path"] for e in got] == ["/v2/demo/app/manifests/v1"], got
    assert not [e for e in upstream_paths(stack.r1, m1)
                if e["path"].startswith("/v2/demo/")]


def test_explicit_prefix_of_default_upstream_is_stripped(stack, http):
    m1 = stack.r1.mark()
    r = get_manifest(http, stack.gw.url, "/v2/up1/demo/app/manifests/v1")
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == stack.img_a.digest
    assert "/v2/demo/app/manifests/v1" in [
        e["path"] for e in upstream_paths(stack.r1, m1, "GET")]


def test_ns_selects_upstream_and_is_not_forwarded(stack, http):
    m1, m2 = stack.r1.mark(), stack.r2.mark()
    r = get_manifest(http, stack.gw.url,
                     "/v2/demo/app/manifests/v1?ns=%s" % stack.r2.host)
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == stack.img_b.digest
    got = upstream_paths(stack.r2, m2, "GET")
    assert [e["path"] for e in got] == ["/v2/demo/app/manifests/v1"], got
    assert all("ns=" not in e["uri"] for e in got), got
    assert not [e for e in upstream_paths(stack.r1, m1)
                if e["path"].startswith("/v2/demo/")]


def test_ns_blob_request_routed_and_stripped(stack, http):
    layer = stack.img_b.images[0]["layers"][0]["digest"]
    m2 = stack.r2.mark()
    r = http.get("%s/v2/demo/app/blobs/%s?ns=%s" % (
        stack.gw.url, layer, stack.r2.host), timeout=30)
    assert r.status_code == 200
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == layer
    got = [e for e in upstream_paths(stack.r2, m2, "GET")
           if "/blobs/" in e["path"]]
    assert got and all(e["uri"] == "/v2/demo/app/blobs/" + layer
                       for e in got), got


def test_no_prefix_no_ns_goes_to_default(stack, http):
    m1, m2 = stack.r1.mark(), stack.r2.mark()
    r = get_manifest(http, stack.gw.url, "/v2/demo/app/manifests/v1")
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == stack.img_a.digest
    assert "/v2/demo/app/manifests/v1" in [
        e["path"] for e in upstream_paths(stack.r1, m1, "GET")]
    assert not [e for e in upstream_paths(stack.r2, m2)
                if e["path"].startswith("/v2/demo/")]


def test_unknown_first_component_is_part_of_name_on_default(stack, http):
    m1 = stack.r1.mark()
    r = get_manifest(http, stack.gw.url, "/v2/team/app/manifests/v1")
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == stack.img_a.digest
    assert "/v2/team/app/manifests/v1" in [
        e["path"] for e in upstream_paths(stack.r1, m1, "GET")]


def test_ns_of_unknown_host_is_name_unknown(stack, http):
    """A client that names a registry the gateway does not front must not be
    answered with another registry's content under that name: 404
    NAME_UNKNOWN, and no upstream is asked."""
    m1, m2 = stack.r1.mark(), stack.r2.mark()
    r = get_manifest(http, stack.gw.url,
                     "/v2/demo/app/manifests/v1?ns=127.0.0.1:9")
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert "127.0.0.1:9" in r.json()["errors"][0]["detail"]
    assert upstream_paths(stack.r1, m1) == []
    assert upstream_paths(stack.r2, m2) == []


def test_docker_hub_one_component_name_gets_library(stack, http):
    m1 = stack.r1.mark()
    for path in ("/v2/alpinedemo/manifests/v1",
                 "/v2/hub/alpinedemo/manifests/v1",
                 "/v2/library/alpinedemo/manifests/v1"):
        r = get_manifest(http, stack.hub.url, path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["Docker-Content-Digest"] == stack.img_a.digest
    got = [e["path"] for e in upstream_paths(stack.r1, m1, "GET")]
    assert got.count("/v2/library/alpinedemo/manifests/v1") == 3, got
    assert "/v2/alpinedemo/manifests/v1" not in got


def test_docker_hub_two_component_name_unchanged(stack, http):
    m1 = stack.r1.mark()
    r = get_manifest(http, stack.hub.url, "/v2/team/app/manifests/v1")
    assert r.status_code == 200, r.text
    got = [e["path"] for e in upstream_paths(stack.r1, m1, "GET")]
    assert "/v2/team/app/manifests/v1" in got
    assert not [p for p in got if p.startswith("/v2/library/team")]


def test_api_version_header_on_every_v2_answer(stack, http):
    gw = stack.gw.url
    layer = stack.img_a.images[0]["layers"][0]["digest"]
    cases = [
        ("GET", "/v2/", {}, None),
        ("GET", "/v2/demo/app/manifests/v1", {"Accept": ACCEPT_ALL}, 200),
        ("HEAD", "/v2/demo/app/manifests/v1", {"Accept": ACCEPT_ALL}, 200),
        ("GET", "/v2/demo/app/manifests/nosuchtag", {}, 404),
        ("GET", "/v2/up2/demo/app/manifests/nosuchtag", {}, 404),
        ("HEAD", "/v2/demo/app/blobs/" + layer, {}, 200),
        ("HEAD", "/v2/demo/app/blobs/sha256:" + "0" * 64, {}, 404),
        ("GET", "/v2/demo/app/tags/list", {}, 200),
        ("POST", "/v2/up2/hdr/app/blobs/uploads/", {}, 202),
    ]
    for method, path, hdrs, want in cases:
        r = http.request(method, gw + path, headers=hdrs, timeout=30)
        if want is not None:
            assert r.status_code == want, (method, path, r.status_code)
        assert r.headers.get(API_HEADER) == "registry/2.0", \
            (method, path, dict(r.headers))


def test_head_manifest_keeps_length_type_and_digest(stack):
    # Raw client so nothing is normalised: containerd fails when a manifest
    # HEAD answers Content-Length: 0.
    direct = stack.r1.get_manifest("demo/app", "v1")
    c = http.client.HTTPConnection("127.0.0.1", stack.gw.port, timeout=30)
    try:
        c.request("HEAD", "/v2/demo/app/manifests/v1",
                  headers={"Accept": ACCEPT_ALL})
        r = c.getresponse()
        r.read()
        assert r.status == 200
        assert int(r.getheader("Content-Length")) == len(direct.content) > 0
        assert r.getheader("Content-Type") == OCI_MANIFEST
        assert r.getheader("Docker-Content-Digest") == stack.img_a.digest
    finally:
        c.close()


def _abs_location(gw, resp):
    loc = resp.headers["Location"]
    return urllib.parse.urljoin(gw.url + "/", loc), loc


@pytest.mark.parametrize("prefix", ["up2", None])
def test_upload_location_points_at_gateway_and_keeps_query(stack, http,
                                                           prefix):
    reg = stack.r2 if prefix else stack.r1
    name = "demo/upl-%s" % (prefix or "default")
    base = "/v2/%s%s" % (prefix + "/" if prefix else "", name)
    r = http.post(stack.gw.url + base + "/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    url, raw = _abs_location(stack.gw, r)
    u = urllib.parse.urlsplit(url)
    assert u.netloc == stack.gw.host, raw
    assert u.path.startswith(base + "/blobs/uploads/"), raw
    assert "_state=" in u.query, raw   # docker-registry's upload state
    data = b"location-rewrite-%s" % (prefix or "default").encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    put = http.put(url + "&digest=" + urllib.parse.quote(digest), data=data,
                   headers={"Content-Type": "application/octet-stream"},
                   timeout=30)
    assert put.status_code == 201, put.text
    assert put.headers.get("Docker-Content-Digest") == digest
    url2, raw2 = _abs_location(stack.gw, put)
    u2 = urllib.parse.urlsplit(url2)
    assert u2.netloc == stack.gw.host, raw2
    assert u2.path == base + "/blobs/" + digest, raw2
    assert reg.has_blob(name, digest)


def _raw_get(port, path, accepts):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.putrequest("GET", path, skip_accept_encoding=True)
        for a in accepts:
            c.putheader("Accept", a)
        c.endheaders()
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_separate_accept_lines_are_all_forwarded(stack):
    # dockerd sends several Accept lines.  The index type sits in the
    # middle, so a gateway keeping only the first or only the last line
    # gets something else back.
    accepts = [DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST]
    # Control, straight to the registry: with only the first line it
    # answers 404, with only the last the host platform's manifest.
    for one in (accepts[:1], accepts[-1:]):
        st, h, _ = _raw_get(stack.r1.port, "/v2/multi/app/manifests/v1", one)
        assert not (st == 200 and
                    h.get("Docker-Content-Digest") == stack.multi.digest)
    st, h, _ = _raw_get(stack.r1.port, "/v2/multi/app/manifests/v1", accepts)
    assert st == 200 and h["Docker-Content-Digest"] == stack.multi.digest

    st, h, body = _raw_get(stack.gw.port, "/v2/multi/app/manifests/v1",
                           accepts)
    assert st == 200, body
    assert h["Content-Type"] == OCI_INDEX
    assert h["Docker-Content-Digest"] == stack.multi.digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == stack.multi.digest


def test_request_ids_are_unique_and_logged(stack, http):
    ids = set()
    for _ in range(50):
        r = http.get(stack.gw.url + "/v2/", timeout=10)
        rid = r.headers["X-Request-Id"]
        assert len(rid) == 16 and all(c in "0123456789abcdef" for c in rid)
        ids.add(rid)
    assert len(ids) == 50
    wait_for(lambda: all("id=" + rid in stack.gw.log_text() for rid in ids),
             what="every request id in the gateway's log")



def test_tags_list_link_keeps_the_route(stack, start_gateway, http):
    # The gateway pages tag lists itself (test_protocol.py); its Link
    # must name the path the client used, prefix included: followed as
    # the upstream names it, it would reach the default upstream.  The
    # lying upstream (a TEST DOUBLE) answers with a Link of its own path.
    up = LyingUpstream()
    try:
        gw = start_gateway(gateway_config(
            upstream(stack.r1, prefix="up1", default=True),
            {"name": "pager", "url": up.url, "prefix": "pg"}))
        up.canned("GET", "/v2/paged/app/tags/list", 200, [
            ("Content-Type", "application/json"),
            ("Link", '</v2/paged/app/tags/list?last=t2&n=2>; '
                     'rel="next"'),
            ("Content-Length", "43")],
            b'{"name":"paged/app","tags":["t1","t2"]}\n   ')
        r = http.get(gw.url + "/v2/pg/paged/app/tags/list?n=1", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "pg/paged/app", "tags": ["t1"]}
        link = r.headers["Link"]
        target = link[link.index("<") + 1:link.index(">")]
        parts = urllib.parse.urlsplit(target)
        assert parts.path == "/v2/pg/paged/app/tags/list", link
        assert parts.query == "n=1&last=t1", link
        assert link.endswith('; rel="next"'), link
    finally:
        up.stop()
