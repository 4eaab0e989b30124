"""Protocol fidelity (issue 13): the gateway makes Debian's
docker-registry 2.8, which lacks each of these, answer like a current
OCI distribution-spec registry -- DELETE of a manifest by tag, tag list
pagination.  Each test first shows what the registry itself answers (the
witness), then what the gateway answers in front of it.  Real
docker-registry; no test double."""

import hashlib
import json
import urllib.parse

import pytest

from lib.cache import push_blob, session
from lib.gateway import gateway_config, upstream

MT = "application/vnd.oci.image.manifest.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(reg, repo, tags):
    """A tiny OCI image under each of `tags`; returns its digest."""
    cfg = b'{"architecture":"amd64","os":"linux"}'
    cd = push_blob(reg, repo, cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": MT,
                    "config": {"mediaType":
                               "application/vnd.oci.image.config.v1+json",
                               "digest": cd, "size": len(cfg)},
                    "layers": []}).encode()
    with session() as s:
        for t in tags:
            r = s.put("%s/v2/%s/manifests/%s" % (reg.url, repo, t), data=m,
                      headers={"Content-Type": MT}, timeout=30)
            assert r.status_code == 201, r.text
    return sha256(m)


@pytest.fixture
def reg(start_registry):
    return start_registry("up1")


@pytest.fixture
def gw(reg, start_gateway):
    return start_gateway(gateway_config(upstream(reg, default=True)))


# --- DELETE of a manifest by tag ---------------------------------------

def test_delete_by_tag_is_405_unsupported(reg, gw, http):
    d = push_image(reg, "del/app", ["v1"])
    # The witness: registry 2.8 parses the tag as a digest.
    r = http.delete("%s/v2/del/app/manifests/v1" % reg.url, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    # Through the gateway: the spec's answer for "no deletion by tag".
    r = http.delete("%s/v2/del/app/manifests/v1" % gw.url, timeout=30)
    assert r.status_code == 405, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "UNSUPPORTED", err
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    # Nothing was deleted; deleting by digest still works.
    r = http.get("%s/v2/del/app/manifests/v1" % gw.url,
                 headers={"Accept": MT}, timeout=30)
    assert r.status_code == 200
    r = http.delete("%s/v2/del/app/manifests/%s" % (gw.url, d), timeout=30)
    assert r.status_code == 202, r.text


# --- tag list pagination -----------------------------------------------

TAGS = ["v10", "b", "latest", "A1", "v2", "a", "1.0", "z_last", "v1", "m-2"]


def walk(http, url, first):
    """Follow Link: rel="next" from `first` (a path with query); returns
    the pages' tag lists and the Link of each page."""
    pages, links, path = [], [], first
    for _ in range(50):
        r = http.get(url + path, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        pages.append(r.json()["tags"])
        link = r.headers.get("Link")
        links.append(link)
        if link is None:
            return pages, links
        assert link.endswith('>; rel="next"'), link
        path = link[1:link.index(">")]
    raise AssertionError("Link chain does not end")


def test_tag_list_pages_in_order_though_the_upstream_does_not(reg, gw,
                                                              http):
    push_image(reg, "tl/app", TAGS)
    # The witness: registry 2.8 ignores n and last.
    r = http.get("%s/v2/tl/app/tags/list?n=2" % reg.url, timeout=30)
    assert r.status_code == 200 and len(r.json()["tags"]) == len(TAGS)
    assert "Link" not in r.headers
    want = sorted(TAGS)
    # Through the gateway: pages of n, lexical, a Link to each next one.
    pages, links = walk(http, gw.url, "/v2/tl/app/tags/list?n=3")
    assert [len(p) for p in pages] == [3, 3, 3, 1], pages
    assert sum(pages, []) == want
    assert links[0] == '</v2/tl/app/tags/list?n=3&last=%s>; rel="next"' \
        % want[2]
    r = http.get("%s/v2/tl/app/tags/list" % gw.url, timeout=30)
    assert r.json() == {"name": "tl/app", "tags": want}
    assert "Link" not in r.headers
    # last alone, last with n, past the end, n=0.
    r = http.get("%s/v2/tl/app/tags/list?last=m-2" % gw.url, timeout=30)
    assert r.json()["tags"] == [t for t in want if t > "m-2"]
    r = http.get("%s/v2/tl/app/tags/list?last=b&n=2" % gw.url, timeout=30)
    assert r.json()["tags"] == [t for t in want if t > "b"][:2]
    assert "Link" in r.headers
    r = http.get("%s/v2/tl/app/tags/list?last=zzz" % gw.url, timeout=30)
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = http.get("%s/v2/tl/app/tags/list?n=0" % gw.url, timeout=30)
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = http.head("%s/v2/tl/app/tags/list?n=3" % gw.url, timeout=30)
    assert r.status_code == 200 and "Link" in r.headers
    # Refused: a bad n or last; an unknown repository is the upstream's.
    for q in ("n=x", "n=-1", "last=.bad"):
        r = http.get("%s/v2/tl/app/tags/list?%s" % (gw.url, q), timeout=30)
        assert r.status_code == 400, (q, r.text)
    r = http.get("%s/v2/tl/none/tags/list" % gw.url, timeout=30)
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_tag_list_bound_answers_in_order_with_a_link(reg, start_gateway,
                                                     http):
    push_image(reg, "tl/big", TAGS)
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      limits={"tag_list_names": 4}))
    # No n: at most limits.tag_list_names per answer, every tag once.
    pages, links = walk(http, gw.url, "/v2/tl/big/tags/list")
    assert [len(p) for p in pages] == [4, 4, 2], pages
    assert sum(pages, []) == sorted(TAGS)
    # A larger n is cut to the bound.
    r = http.get("%s/v2/tl/big/tags/list?n=100" % gw.url, timeout=30)
    assert r.json()["tags"] == sorted(TAGS)[:4]
    assert "n=4&last=" in r.headers["Link"]


def test_tag_list_follows_an_upstream_that_pages(reg, start_gateway, http):
    # A paging upstream: a second gateway, in front of the registry.
    push_image(reg, "tl/paged", TAGS)
    inner = start_gateway(gateway_config(upstream(reg, default=True),
                                         limits={"tag_list_names": 3}))
    inner_up = {"name": "inner", "url": inner.url, "default": True}
    outer = start_gateway(gateway_config(inner_up,
                                         limits={"tag_list_names": 3,
                                                 "tag_list_pages": 2}))
    r = http.get("%s/v2/tl/paged/tags/list?n=2" % inner.url, timeout=30)
    assert r.json()["tags"] == sorted(TAGS)[:2] and "Link" in r.headers
    # The outer one reads the inner's pages (Link followed) as needed.
    pages, _ = walk(http, outer.url, "/v2/tl/paged/tags/list?n=2")
    assert sum(pages, []) == sorted(TAGS)
    assert all(len(p) <= 2 for p in pages)
    pages, _ = walk(http, outer.url, "/v2/tl/paged/tags/list")
    assert sum(pages, []) == sorted(TAGS)
    assert all(len(p) <= 3 for p in pages)


# --- chunked uploads: offsets, 416, the status of an old location ------

def test_chunked_upload_out_of_order_and_retried_chunks(reg, gw, http):
    data = b"hello, chunked world"
    c1, c2 = data[:5], data[5:]
    r = http.post("%s/v2/up/app/blobs/uploads/" % gw.url, timeout=30)
    assert r.status_code == 202, r.text
    loc0 = urllib.parse.urljoin(gw.url + "/", r.headers["Location"])
    assert loc0.startswith(gw.url)
    hdr = {"Content-Type": "application/octet-stream"}
    r = http.patch(loc0, data=c1, timeout=30,
                   headers=dict(hdr, **{"Content-Range": "0-4"}))
    assert r.status_code == 202 and r.headers["Range"] == "0-4", r.text
    loc1 = urllib.parse.urljoin(gw.url + "/", r.headers["Location"])
    assert loc1 != loc0     # registry 2.8 keeps the state in the query
    # The witness: the registry itself refuses the old location (its
    # state is in the location's _state): 404 BLOB_UPLOAD_INVALID.
    up_loc0 = reg.url + loc0[len(gw.url):]
    w = http.get(up_loc0, timeout=30)
    assert w.status_code == 404, (w.status_code, w.headers, w.text)
    # Through the gateway, the old location's status is the current one.
    mark = reg.mark()
    r = http.get(loc0, timeout=30)
    assert r.status_code == 204, r.text
    assert r.headers["Range"] == "0-4"
    assert urllib.parse.urljoin(gw.url + "/", r.headers["Location"]) == loc1
    # A chunk out of order, and chunk 1 retried: 416, never upstream.
    for cr, body in (("10-14", b"xxxxx"), ("0-4", c1)):
        r = http.patch(loc1, data=body, timeout=30,
                       headers=dict(hdr, **{"Content-Range": cr}))
        assert r.status_code == 416, (cr, r.status_code, r.text)
        assert r.headers["Range"] == "0-4"
        assert urllib.parse.urljoin(gw.url + "/", r.headers["Location"]) \
            == loc1
        assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    seen = [(e["method"], e["path"]) for e in reg.access_log(since=mark)]
    assert not [s for s in seen if s[0] in ("GET", "PATCH")], seen
    # The right chunk goes on; the upload completes with the right bytes.
    r = http.patch(loc1, data=c2, timeout=30,
                   headers=dict(hdr, **{"Content-Range": "5-%d" %
                                        (len(data) - 1)}))
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-%d" % (len(data) - 1)
    loc2 = urllib.parse.urljoin(gw.url + "/", r.headers["Location"])
    d = sha256(data)
    r = http.put(loc2 + ("&" if "?" in loc2 else "?") + "digest=" + d,
                 timeout=30, headers={"Content-Length": "0"})
    assert r.status_code == 201, r.text
    assert reg.get_blob("up/app", d).content == data
    # Finished: the gateway forgets it and relays the upstream's answer.
    r = http.get(loc1, timeout=30)
    assert r.status_code == 404, (r.status_code, r.text)


def test_first_chunk_not_at_zero_is_416(reg, gw, http):
    r = http.post("%s/v2/up/two/blobs/uploads/" % gw.url, timeout=30)
    assert r.status_code == 202
    loc = urllib.parse.urljoin(gw.url + "/", r.headers["Location"])
    r = http.patch(loc, data=b"abc", timeout=30, headers={
        "Content-Type": "application/octet-stream", "Content-Range": "3-5"})
    assert r.status_code == 416, r.text
    assert r.headers["Range"] == "0-0"
    # Without Content-Range (a streamed upload) it goes on as before.
    r = http.patch(loc, data=b"abc", timeout=30,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-2", r.text
