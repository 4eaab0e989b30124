"""The cache does not leak across repositories (issue 8): a blob or
manifest is served from the shared store for repository R only when the
gateway knows R's upstream holds it in R -- filled or revalidated through
R, or confirmed by a HEAD to the upstream for R before serving.

docker-registry is the upstream: its access log witnesses every HEAD and
GET, and it links blobs to repositories as the reference registry does
(a HEAD for a blob of another repository is a 404).  The LyingUpstream
TEST DOUBLE is used only where a fill must stall half way (a reader of
another repository joining it) or a confirming HEAD must stall (the bound
on confirms)."""

import json
import os
import re
import signal
import stat
import threading

import pytest

from lib.cache import blob_path, cache_cfg, session
from lib.gateway import gateway_config, upstream
from lib.images import sha256
from lib.lying_upstream import liar_upstream
from lib.util import wait_for
from test_cache_fills import get_head, push_blob, push_manifest, read_rest

MIB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def upstream_log(reg, since, method, path):
    return [e for e in reg.access_log(since=since)
            if e["method"] == method and e["path"] == path]


def done_lines(gw, path):
    """The gateway's summary lines for requests to `path`."""
    return [l for l in gw.log_text().splitlines()
            if " req done " in l and (" path=%s " % path) in l]


def wait_done(gw, path, n=1):
    wait_for(lambda: len(done_lines(gw, path)) >= n, timeout=10,
             what="summary line for %s" % path)
    return done_lines(gw, path)


def image_in(reg, repos, layer):
    """An OCI image of one layer pushed to each repository; returns
    (manifest digest, manifest bytes, config digest)."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers",
                                 "diff_ids": [sha256(layer)]}}).encode()
    man = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(cfg),
                   "size": len(cfg)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer),
                    "size": len(layer)}]}).encode()
    for r in repos:
        push_blob(reg, r, cfg)
        push_blob(reg, r, layer)
        assert push_manifest(reg, r, "v1", man, OCI_MANIFEST) == sha256(man)
    return sha256(man), man, sha256(cfg)


@pytest.fixture
def world(start_registry, start_gateway, tmp_path):
    """private/y and public/z hold layer B (and one image of it);
    public/x holds another layer only.  Returns a dict."""
    reg = start_registry("up1")
    priv = os.urandom(MIB + 17)
    pub = os.urandom(64 * 1024)
    mdig, man, _ = image_in(reg, ["private/y", "public/z"], priv)
    push_blob(reg, "public/x", pub)
    cdir = tmp_path / "cache"
    cfg = gateway_config(upstream(reg, prefix="up1"), cache=cache_cfg(cdir))
    gw = start_gateway(cfg)
    return {"reg": reg, "gw": gw, "cfg": cfg, "cdir": cdir, "priv": priv,
            "b": sha256(priv), "pub": pub, "m": mdig, "man": man}


def get(gw, path, method="GET", headers=None):
    with session() as s:
        return s.request(method, gw.url + path, headers=headers or {},
                         timeout=30)


def fill_private(w):
    r = get(w["gw"], "/v2/up1/private/y/blobs/" + w["b"])
    assert r.status_code == 200 and r.content == w["priv"]
    assert os.path.getsize(blob_path(w["cdir"], w["b"])) == len(w["priv"])


def test_blob_of_another_repository_is_not_served_from_the_cache(world):
    """The leak: the digest of private/y's blob asked through public/x."""
    w = world
    fill_private(w)
    reg, gw, b = w["reg"], w["gw"], w["b"]
    m = reg.mark()
    for method in ("GET", "HEAD"):
        r = get(gw, "/v2/up1/public/x/blobs/" + b, method=method)
        assert r.status_code == 404, (method, r.status_code)
        assert w["priv"] not in r.content
        if method == "GET":
            assert r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    heads = upstream_log(reg, m, "HEAD", "/v2/public/x/blobs/" + b)
    assert len(heads) == 2 and all(e["status"] == 404 for e in heads)
    assert upstream_log(reg, m, "GET", "/v2/public/x/blobs/" + b) == []
    lines = wait_done(gw, "/v2/up1/public/x/blobs/" + b, 2)
    assert not any("cache=hit" in l for l in lines)
    # The file is still there for the repository that holds it.
    m = reg.mark()
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == w["priv"]
    assert [e for e in reg.access_log(since=m) if b in e["path"]] == []


def test_same_blob_through_a_repository_that_holds_it_is_a_hit(world):
    """public/z holds the layer too: one confirming HEAD, then a hit, and
    no upstream GET of the blob; the link then spares the HEAD."""
    w = world
    fill_private(w)
    reg, gw, b = w["reg"], w["gw"], w["b"]
    path = "/v2/up1/public/z/blobs/" + b
    m = reg.mark()
    r = get(gw, path)
    assert r.status_code == 200 and r.content == w["priv"]
    assert r.headers["Docker-Content-Digest"] == b
    heads = upstream_log(reg, m, "HEAD", "/v2/public/z/blobs/" + b)
    assert len(heads) == 1 and heads[0]["status"] == 200
    assert upstream_log(reg, m, "GET", "/v2/public/z/blobs/" + b) == []
    assert "cache=hit" in wait_done(gw, path)[0]
    assert re.search(r"cache confirmed digest=%s name=public/z" % b,
                     gw.log_text())
    # Linked now: HEAD and GET again, nothing upstream.
    m = reg.mark()
    assert get(gw, path, method="HEAD").status_code == 200
    r = get(gw, path)
    assert r.status_code == 200 and r.content == w["priv"]
    assert [e for e in reg.access_log(since=m) if b in e["path"]] == []
    assert all("cache=hit" in l for l in wait_done(gw, path, 3))


def test_manifest_by_digest_follows_the_same_rule(world):
    w = world
    reg, gw, d = w["reg"], w["gw"], w["m"]
    acc = {"Accept": OCI_MANIFEST}
    r = get(gw, "/v2/up1/private/y/manifests/" + d, headers=acc)
    assert r.status_code == 200 and r.content == w["man"]
    m = reg.mark()
    r = get(gw, "/v2/up1/public/x/manifests/" + d, headers=acc)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert w["man"] not in r.content
    assert len(upstream_log(reg, m, "HEAD",
                            "/v2/public/x/manifests/" + d)) == 1
    assert upstream_log(reg, m, "GET", "/v2/public/x/manifests/" + d) == []
    m = reg.mark()
    path = "/v2/up1/public/z/manifests/" + d
    r = get(gw, path, headers=acc)
    assert r.status_code == 200 and r.content == w["man"]
    assert r.headers["Content-Type"] == OCI_MANIFEST
    assert len(upstream_log(reg, m, "HEAD",
                            "/v2/public/z/manifests/" + d)) == 1
    assert upstream_log(reg, m, "GET", "/v2/public/z/manifests/" + d) == []
    assert "cache=hit" in wait_done(gw, path)[0]


def test_tag_revalidation_links_the_manifest_for_requests_by_digest(world):
    """A tag of public/z revalidated names the digest: the manifest by
    digest through public/z is then a hit without a confirming HEAD."""
    w = world
    reg, gw, d = w["reg"], w["gw"], w["m"]
    acc = {"Accept": OCI_MANIFEST}
    r = get(gw, "/v2/up1/private/y/manifests/" + d, headers=acc)
    assert r.status_code == 200
    r = get(gw, "/v2/up1/public/z/manifests/v1", headers=acc)
    assert r.status_code == 200 and r.content == w["man"]
    m = reg.mark()
    r = get(gw, "/v2/up1/public/z/manifests/" + d, headers=acc)
    assert r.status_code == 200 and r.content == w["man"]
    assert [e for e in reg.access_log(since=m) if d in e["path"]] == []


def test_links_survive_a_restart(world, start_gateway):
    """Links are kept in cache.dir/links: after a restart a hit through a
    linked repository asks the upstream nothing, even while it is down,
    and the leak stays closed."""
    w = world
    fill_private(w)
    reg, b = w["reg"], w["b"]
    w["gw"].stop()
    lines = open(os.path.join(str(w["cdir"]), "links")).read().splitlines()
    assert "b\t%s\tprivate/y\tup1\t%s" % (b, reg.url) in lines
    gw = start_gateway(w["cfg"])
    m = reg.mark()
    path = "/v2/up1/private/y/blobs/" + b
    r = get(gw, path)
    assert r.status_code == 200 and r.content == w["priv"]
    assert [e for e in reg.access_log(since=m) if b in e["path"]] == []
    assert "cache=hit" in wait_done(gw, path)[0]
    r = get(gw, "/v2/up1/public/x/blobs/" + b)
    assert r.status_code == 404 and w["priv"] not in r.content
    reg.stop()
    r = get(gw, path)
    assert r.status_code == 200 and r.content == w["priv"]


def test_links_file_damaged_or_foreign_costs_a_head_not_a_leak(
        world, start_gateway, tmp_path):
    """A links file with torn and foreign lines: the good ones count, the
    rest are skipped.  One that is a symbolic link is removed, never
    followed (what it points at is left as it was)."""
    w = world
    fill_private(w)
    reg, b, cdir = w["reg"], w["b"], w["cdir"]
    w["gw"].stop()
    lf = os.path.join(str(cdir), "links")
    good = open(lf).read()
    with open(lf, "w") as f:
        # Foreign lines first (one would link public/x), then the real
        # one torn, then garbage.
        f.write("b\t%s\tpublic/x\tup1\t%s\textra\n" % (b, reg.url))
        f.write("x\t%s\tpublic/x\tup1\t%s\n" % (b, reg.url))
        f.write("b\tsha256:zz\tpublic/x\tup1\t%s\n" % reg.url)
        f.write("A" * 100000 + "\n")
        f.write(good.rstrip("\n")[:20] + "\n")
    gw = start_gateway(w["cfg"])
    m = reg.mark()
    r = get(gw, "/v2/up1/public/x/blobs/" + b)
    assert r.status_code == 404 and w["priv"] not in r.content
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == w["priv"]
    # Not linked any more, in no repository of up1: nothing says up1
    # ever sent these bytes, so it sends them again (one GET, verified);
    # its HEAD alone would not do.
    assert [e["method"] for e in reg.access_log(since=m)
            if e["path"] == "/v2/private/y/blobs/" + b] == ["GET"]
    gw.stop()
    outside = tmp_path / "outside"
    outside.write_text("b\t%s\tpublic/x\tup1\t%s\n" % (b, reg.url))
    os.unlink(lf)
    os.symlink(str(outside), lf)
    gw = start_gateway(w["cfg"])
    r = get(gw, "/v2/up1/public/x/blobs/" + b)
    assert r.status_code == 404 and w["priv"] not in r.content
    assert outside.read_text() == "b\t%s\tpublic/x\tup1\t%s\n" % (
        b, reg.url)
    assert not os.path.islink(lf)
    assert "foreign_file path=%s: a symbolic link, removed" % lf in \
        gw.log_text()


def test_upstream_down_during_confirm_fails_closed(world):
    w = world
    fill_private(w)
    gw, b = w["gw"], w["b"]
    # Linked for private/y before the upstream goes away.
    w["reg"].stop()
    r = get(gw, "/v2/up1/public/z/blobs/" + b)
    assert r.status_code in (502, 503, 504), r.status_code
    assert w["priv"] not in r.content
    r = get(gw, "/v2/up1/public/x/blobs/" + b, method="HEAD")
    assert r.status_code in (502, 503, 504), r.status_code
    # What is linked is still served.
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == w["priv"]


def test_max_repo_links_drops_the_least_recently_used_link(
        start_registry, start_gateway, tmp_path):
    reg = start_registry("up1")
    b1 = push_blob(reg, "a/a", os.urandom(4096))
    b2 = push_blob(reg, "a/a", os.urandom(4096))
    cdir = tmp_path / "cache"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(cdir, max_repo_links=1)))
    for d in (b1, b2):
        assert get(gw, "/v2/up1/a/a/blobs/" + d).status_code == 200
    m = reg.mark()
    assert get(gw, "/v2/up1/a/a/blobs/" + b2).status_code == 200
    assert [e for e in reg.access_log(since=m) if b2 in e["path"]] == []
    # b1's link went when b2's came, and with it the last word that up1
    # sent b1: fetched again (a GET, verified), not served on a HEAD.
    assert get(gw, "/v2/up1/a/a/blobs/" + b1).status_code == 200
    log = [(e["method"], e["status"]) for e in reg.access_log(since=m)
           if b1 in e["path"]]
    assert log == [("GET", 200)]
    # The file is bounded too: at most twice max_repo_links lines.
    more = [push_blob(reg, "a/a", os.urandom(1024)) for _ in range(6)]
    for d in more:
        assert get(gw, "/v2/up1/a/a/blobs/" + d).status_code == 200
    lines = open(os.path.join(str(cdir), "links")).read().splitlines()
    assert 1 <= len(lines) <= 2
    assert lines[-1].startswith("b\t%s\ta/a\t" % more[-1])


def liar_gateway(start_gateway, liar, cdir, **kw):
    return start_gateway(gateway_config(
        liar_upstream(liar), cache=cache_cfg(cdir, **kw)))


def test_reader_of_another_repository_does_not_join_a_fill_unconfirmed(
        liar, start_gateway, tmp_path):
    """A fill through repository a stalls half way.  A reader through b,
    which does not hold the blob, gets the upstream's 404 for b, not the
    fill's bytes; a reader through c, which does, joins the fill after
    one HEAD and gets the verified blob without a GET of its own."""
    data = os.urandom(4 * MIB)
    d = liar.add_blob(data, mode="stall", stall_at=MIB, repos=["a", "c"])
    gw = liar_gateway(start_gateway, liar, tmp_path / "cache")
    s1, st1, buf1 = get_head(gw, "/v2/liar/a/blobs/" + d)
    assert st1 == 200
    wait_for(lambda: liar.answering() == 1, what="the fill stalled")
    s2, st2, buf2 = get_head(gw, "/v2/liar/b/blobs/" + d)
    s2.close()
    assert st2 == 404, buf2[:200]
    assert liar.requests("HEAD", "/v2/b/blobs/" + d) == 1
    assert liar.requests("GET", "/v2/b/blobs/" + d) == 0
    s3, st3, buf3 = get_head(gw, "/v2/liar/c/blobs/" + d)
    assert st3 == 200
    assert liar.requests("HEAD", "/v2/c/blobs/" + d) == 1
    liar.release(d)
    assert read_rest(s1, buf1) == (d, len(data))
    assert read_rest(s3, buf3) == (d, len(data))
    assert liar.requests("GET", "/v2/c/blobs/" + d) == 0
    assert liar.requests("GET", "/v2/a/blobs/" + d) == 1
    assert "cache=coalesced" in wait_done(gw, "/v2/liar/c/blobs/" + d)[0]


def test_confirms_coalesce_and_max_confirms_passes_further_hits_through(
        liar, start_gateway, tmp_path):
    """One confirming HEAD stalls.  Three more hits through the same
    repository share it (one HEAD upstream); with cache.max_confirms 1 a
    hit through another repository is not served from the cache: it goes
    to the upstream as is."""
    data = os.urandom(256 * 1024)
    d = liar.add_blob(data, repos=["a"], stall_404=True)
    gw = liar_gateway(start_gateway, liar, tmp_path / "cache",
                      max_confirms=1)
    r = get(gw, "/v2/liar/a/blobs/" + d)
    assert r.status_code == 200 and r.content == data
    out = {}

    def req(key, path, method):
        out[key] = get(gw, path, method=method)

    ts = [threading.Thread(target=req, args=(
        i, "/v2/liar/b/blobs/" + d, "HEAD" if i == 0 else "GET"))
        for i in range(4)]
    ts[0].start()
    wait_for(lambda: liar.requests("HEAD", "/v2/b/blobs/" + d) == 1,
             what="the confirming HEAD stalled")
    for t in ts[1:]:
        t.start()
    wait_for(lambda: gw.log_text().count("cache confirm_coalesced") == 3,
             what="three readers sharing the HEAD")
    t2 = threading.Thread(target=req, args=(
        "b2", "/v2/liar/b2/blobs/" + d, "GET"))
    t2.start()
    wait_for(lambda: liar.requests("GET", "/v2/b2/blobs/" + d) == 1,
             what="the other repository's hit passed through")
    liar.release(d)
    for t in ts + [t2]:
        t.join(30)
    for i in range(4):
        assert out[i].status_code == 404 and data not in out[i].content
    assert liar.requests("HEAD", "/v2/b/blobs/" + d) == 1
    assert liar.requests("GET", "/v2/b/blobs/" + d) == 0
    assert out["b2"].status_code == 404 and data not in out["b2"].content
    assert liar.requests("HEAD", "/v2/b2/blobs/" + d) == 0
    assert "confirm_refused digest=%s reason=cache.max_confirms" % d in \
        gw.log_text()


def test_confirm_answered_5xx_fails_closed(liar, start_gateway, tmp_path):
    data = os.urandom(128 * 1024)
    d = liar.add_blob(data, repos=["a", "b"])
    gw = liar_gateway(start_gateway, liar, tmp_path / "cache")
    assert get(gw, "/v2/liar/a/blobs/" + d).content == data
    liar.fail_all(503)
    r = get(gw, "/v2/liar/b/blobs/" + d)
    assert r.status_code in (502, 503, 504) and data not in r.content
    liar.fail_all(None)
    r = get(gw, "/v2/liar/b/blobs/" + d)
    assert r.status_code == 200 and r.content == data


def test_confirm_asks_with_a_token_scoped_for_the_repository(
        start_registry, start_gateway, tmp_path):
    """A token-protected upstream: the confirming HEAD goes with the
    gateway's credentials and a token for the repository asked through,
    as every fetch does, and its answer decides as before."""
    reg = start_registry("authup", auth="token")
    creds = tmp_path / "creds"
    creds.write_text("%s:%s\n" % (reg.issuer.username, reg.issuer.password))
    creds.chmod(0o600)
    gw = start_gateway(gateway_config(
        upstream(reg, name="up1", prefix="up1", credentials_file=creds,
                 auth_hosts=["127.0.0.1:%d" % reg.issuer.port]),
        cache=cache_cfg(tmp_path / "cache")))

    class ThroughGateway:
        url = gw.url
    data = os.urandom(64 * 1024)
    for repo in ("private/y", "public/z"):
        d = push_blob(ThroughGateway, "up1/" + repo, data)
    push_blob(ThroughGateway, "up1/public/x", os.urandom(1024))
    r = get(gw, "/v2/up1/private/y/blobs/" + d)
    assert r.status_code == 200 and r.content == data
    mark = reg.issuer.mark()
    m = reg.mark()
    r = get(gw, "/v2/up1/public/z/blobs/" + d)
    assert r.status_code == 200 and r.content == data
    assert [(e["method"], e["status"]) for e in reg.access_log(since=m)
            if e["path"] == "/v2/public/z/blobs/" + d and
            e["status"] != 401] == [("HEAD", 200)]
    scopes = {s for rec in reg.issuer.requests_since(mark)
              for one in rec["scopes"] for s in one.split(" ")}
    assert "repository:public/z:pull" in scopes
    r = get(gw, "/v2/up1/public/x/blobs/" + d)
    assert r.status_code == 404 and data not in r.content


def reload_with(gw, cfg):
    n = gw.log_text().count("server reload done")
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: gw.log_text().count("server reload done") > n,
             what="the reload")


def test_tag_records_of_an_upstream_pointed_elsewhere_are_not_links(
        start_registry, start_gateway, tmp_path):
    """An upstream name reloaded to point at another registry: what the
    old registry's tags said is no word of the new one's.  Neither its tag
    records (which count as links) nor the links they would record serve
    the old registry's manifest through the new one."""
    reg1 = start_registry("up1")
    reg2 = start_registry("up2")
    d, man, _ = image_in(reg1, ["app/x"], os.urandom(4096))
    acc = {"Accept": OCI_MANIFEST}
    gw = start_gateway(gateway_config(
        upstream(reg1, name="up1", prefix="up1"),
        cache=cache_cfg(tmp_path / "cache")))
    r = get(gw, "/v2/up1/app/x/manifests/v1", headers=acc)
    assert r.status_code == 200 and r.content == man
    reload_with(gw, dict(gw.config, upstreams=[
        upstream(reg2, name="up1", prefix="up1")]))
    m = reg2.mark()
    r = get(gw, "/v2/up1/app/x/manifests/v1", headers=acc)
    assert r.status_code == 404, r.status_code
    assert man not in r.content
    r = get(gw, "/v2/up1/app/x/manifests/" + d, headers=acc)
    assert r.status_code == 404, r.status_code
    assert man not in r.content
    assert len(upstream_log(reg2, m, "HEAD",
                            "/v2/app/x/manifests/v1")) == 1
    # While the new one is down, nothing stale of the old one either.
    reg2.stop()
    r = get(gw, "/v2/up1/app/x/manifests/v1", headers=acc)
    assert r.status_code in (404, 502, 503, 504), r.status_code
    assert man not in r.content



def test_delete_through_the_gateway_drops_the_link(world, start_gateway):
    """A manifest and a blob deleted from public/z through the gateway
    (202): the gateway knows public/z no longer holds them, so the cache
    does not go on serving them through public/z, not after a restart
    either (the drop is in the links file)."""
    w = world
    reg, gw, d, b = w["reg"], w["gw"], w["m"], w["b"]
    acc = {"Accept": OCI_MANIFEST}
    mpath = "/v2/up1/public/z/manifests/" + d
    bpath = "/v2/up1/public/z/blobs/" + b
    r = get(gw, mpath, headers=acc)
    assert r.status_code == 200 and r.content == w["man"]
    r = get(gw, bpath)
    assert r.status_code == 200 and r.content == w["priv"]
    assert get(gw, mpath, method="DELETE").status_code == 202
    assert get(gw, bpath, method="DELETE").status_code == 202
    for method in ("GET", "HEAD"):
        r = get(gw, mpath, method=method, headers=acc)
        assert r.status_code == 404, (method, r.status_code)
        assert w["man"] not in r.content
        r = get(gw, bpath, method=method)
        assert r.status_code == 404, (method, r.status_code)
        assert w["priv"] not in r.content
    # private/y still holds both: still served from the cache.
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == w["priv"]
    gw.stop()
    lines = open(os.path.join(str(w["cdir"]), "links")).read().splitlines()
    assert "-b\t%s\tpublic/z\tup1\t%s" % (b, reg.url) in lines
    gw = start_gateway(w["cfg"])
    m = reg.mark()
    r = get(gw, bpath)
    assert r.status_code == 404 and w["priv"] not in r.content
    assert [e["method"] for e in reg.access_log(since=m)
            if e["path"] == "/v2/public/z/blobs/" + b] == ["HEAD"]
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == w["priv"]


def test_another_upstreams_word_does_not_serve_bytes_it_never_sent(
        liar, start_registry, start_gateway, tmp_path):
    """The store is shared by all upstreams.  A hostile upstream (the
    liar, which never had the bytes) answers the confirming HEADs, and
    the HEAD of a tag, with 200 and the digest of private/y's blob and
    manifest, cached from another upstream: the gateway must have it
    send the bytes (a GET, verified) before serving them through it."""
    reg = start_registry("up1")
    layer = os.urandom(256 * 1024)
    d, man, _ = image_in(reg, ["private/y"], layer)
    b = sha256(layer)
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), liar_upstream(liar),
        cache=cache_cfg(tmp_path / "cache")))
    acc = {"Accept": OCI_MANIFEST}
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == layer
    r = get(gw, "/v2/up1/private/y/manifests/" + d, headers=acc)
    assert r.status_code == 200 and r.content == man
    liar.canned("HEAD", "/v2/pub/blobs/" + b, 200, [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(len(layer))),
        ("Docker-Content-Digest", b)])
    for ref in (d, "latest"):
        liar.canned("HEAD", "/v2/pub/manifests/" + ref, 200, [
            ("Content-Type", OCI_MANIFEST),
            ("Content-Length", str(len(man))),
            ("Docker-Content-Digest", d)])
    r = get(gw, "/v2/liar/pub/blobs/" + b)
    assert r.status_code == 404, r.status_code
    assert layer not in r.content
    assert liar.requests("GET", "/v2/pub/blobs/" + b) == 1
    for ref in (d, "latest"):
        for _ in range(2):
            r = get(gw, "/v2/liar/pub/manifests/" + ref, headers=acc)
            assert r.status_code == 404, (ref, r.status_code)
            assert man not in r.content
    assert liar.requests("GET", "/v2/pub/manifests/" + d) >= 1
    # Through the upstream that holds them, still hits.
    m = reg.mark()
    r = get(gw, "/v2/up1/private/y/blobs/" + b)
    assert r.status_code == 200 and r.content == layer
    assert [e for e in reg.access_log(since=m) if b in e["path"]] == []


def test_links_file_that_is_a_fifo_does_not_hang_the_gateway(
        start_registry, start_gateway, tmp_path):
    """dir/links that is not a regular file (a FIFO here) is not ours:
    the gateway keeps its links in memory only.  Appending to it would
    block the loop once the pipe is full (about 64 KiB of lines)."""
    reg = start_registry("up1")
    repo = "r/" + "n" * 200
    blobs = [push_blob(reg, repo, b"%d" % i) for i in range(300)]
    push_blob(reg, "public/x", os.urandom(1024))
    cdir = tmp_path / "cache"
    os.makedirs(str(cdir))
    lf = os.path.join(str(cdir), "links")
    os.mkfifo(lf)
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    with session() as s:
        for i, d in enumerate(blobs):
            r = s.get("%s/v2/up1/%s/blobs/%s" % (gw.url, repo, d),
                      timeout=10)
            assert r.status_code == 200 and r.content == b"%d" % i
    assert "foreign_file path=%s: not a regular file" % lf in gw.log_text()
    m = reg.mark()
    r = get(gw, "/v2/up1/%s/blobs/%s" % (repo, blobs[0]))
    assert r.status_code == 200
    assert [e for e in reg.access_log(since=m) if blobs[0] in e["path"]] \
        == []
    r = get(gw, "/v2/up1/public/x/blobs/" + blobs[0])
    assert r.status_code == 404
    assert stat.S_ISFIFO(os.stat(lf).st_mode)
