"""Tag records of the pull-through cache and their bounds, against a real
docker-registry (its access log is the witness of every upstream HEAD and
GET) with skopeo pushing the images.

What is bounded: unknown tags (upstream 404) live only in an in-memory
table of cache.negative_entries, nothing on disk; each tag keeps at most
cache.tag_variants Accept sets; and tags/ holds at most
cache.max_tag_records files, least recently used removed first, with the
directories they leave empty.  The tests count files and directories
under the cache's tags/ and read the upstream's log; no test waits on
the clock except through wait_for."""

import concurrent.futures
import os
import uuid

import pytest

from lib.cache import cache_cfg, session
from lib.gateway import gateway_config, upstream
from lib.images import HOST_ARCH

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def tags_tree(cdir):
    """(files, directories) under <cache dir>/tags, as relative paths."""
    top = os.path.join(str(cdir), "tags")
    files, dirs = [], []
    for root, ds, fs in os.walk(top):
        rel = os.path.relpath(root, top)
        dirs += [os.path.normpath(os.path.join(rel, d)) for d in ds]
        files += [os.path.normpath(os.path.join(rel, f)) for f in fs]
    return files, dirs


def manifest_requests(reg, since, repo=None):
    """Upstream manifest requests (HEAD and GET) since a mark."""
    return [e for e in reg.access_log(since=since)
            if "/manifests/" in e["path"] and
            (repo is None or e["path"].startswith("/v2/%s/" % repo))]


def push_tags(reg, repo, src_tag, tags):
    """Point more tags at the manifest of src_tag, straight on the
    registry (no gateway involved)."""
    with session() as s:
        r = s.get("%s/v2/%s/manifests/%s" % (reg.url, repo, src_tag),
                  headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200, r.text
        body, ctype = r.content, r.headers["Content-Type"]
        for t in tags:
            r = s.put("%s/v2/%s/manifests/%s" % (reg.url, repo, t),
                      data=body, headers={"Content-Type": ctype},
                      timeout=30)
            assert r.status_code == 201, r.text


@pytest.fixture
def app_image(image_factory):
    return image_factory("tags-app", platforms=[("linux", HOST_ARCH)],
                         seed="tags-app")


def _get(s, url, accept=OCI_MANIFEST):
    return s.get(url, headers={"Accept": accept}, timeout=30)


# --- unknown tags: memory only, bounded ---------------------------------

def test_500_unknown_names_write_nothing_and_the_negative_table_is_bounded(
        start_registry, start_gateway, tmp_path):
    reg = start_registry("up1")
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(cdir, negative_entries=8, negative_ttl=3600)))

    def miss(name):
        with session() as s:
            r = _get(s, "%s/v2/up1/%s/manifests/latest" % (gw.url, name))
        return r.status_code, r.json()["errors"][0]["code"]

    names = ["rnd-%s" % uuid.uuid4().hex for _ in range(500)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(miss, names))
    assert set(got) == {(404, "MANIFEST_UNKNOWN")}
    # Before: one file and one directory per name, never removed.
    assert tags_tree(cdir) == ([], [])

    # The table holds 8: of ten names asked in order, the last eight are
    # answered without the upstream, the first is asked again.
    s = session()
    ten = ["ten-%d-%s" % (i, uuid.uuid4().hex[:8]) for i in range(10)]
    for n in ten:
        assert _get(s, "%s/v2/up1/%s/manifests/v1" % (
            gw.url, n)).status_code == 404
    m = reg.mark()
    for n in ten[2:]:
        r = _get(s, "%s/v2/up1/%s/manifests/v1" % (gw.url, n))
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert manifest_requests(reg, m) == []
    r = _get(s, "%s/v2/up1/%s/manifests/v1" % (gw.url, ten[0]))
    assert r.status_code == 404
    asked = manifest_requests(reg, m)
    assert [e["path"] for e in asked] == ["/v2/%s/manifests/v1" % ten[0]]
    assert tags_tree(cdir) == ([], [])


def test_negative_entry_expires_and_a_push_clears_it(start_registry,
                                                     start_gateway, skopeo,
                                                     app_image, tmp_path):
    from lib.util import wait_for
    reg = start_registry("up1")
    # Long TTL: the 404 is remembered, until the tag is pushed through
    # the gateway.
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(tmp_path / "c", negative_ttl=3600)))
    s = session()
    url = "%s/v2/up1/neg/app/manifests/v1" % gw.url
    assert _get(s, url).status_code == 404
    m = reg.mark()
    assert _get(s, url).status_code == 404
    assert manifest_requests(reg, m) == []
    skopeo("copy", "--dest-tls-verify=false", app_image.ref,
           "docker://%s/up1/neg/app:v1" % gw.host)
    r = _get(s, url)
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == app_image.digest

    # Short TTL: the 404 is asked again once it has expired.
    gw2 = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(tmp_path / "c2", negative_ttl=0.5)))
    url2 = "%s/v2/up1/neg/other/manifests/v1" % gw2.url
    m = reg.mark()
    assert _get(s, url2).status_code == 404
    wait_for(lambda: _get(s, url2).status_code == 404 and
             len(manifest_requests(reg, m, "neg/other")) >= 2,
             timeout=20, interval=0.2, what="the 404 asked again")
    assert not os.path.exists(tmp_path / "c2" / "tags" / "up1")


# --- Accept variants per tag ---------------------------------------------

def test_random_accept_sets_leave_at_most_tag_variants_records(
        start_registry, start_gateway, skopeo, app_image, tmp_path):
    reg = start_registry("up1")
    skopeo("copy", "--dest-tls-verify=false", app_image.ref,
           "docker://%s/vary/app:v1" % reg.host)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir, tag_variants=3)))
    s = session()
    url = "%s/v2/up1/vary/app/manifests/v1" % gw.url
    accepts = ["%s, application/x-rand-%s" % (OCI_MANIFEST, uuid.uuid4().hex)
               for _ in range(50)]
    for a in accepts:
        r = _get(s, url, a)
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == app_image.digest
    files, dirs = tags_tree(cdir)
    assert len(files) == 3, files          # before: 50
    assert len(dirs) == 2, dirs            # tags/up1, tags/up1/<tag>
    # The newest variants are the ones kept: hits, no upstream contact.
    m = reg.mark()
    for a in accepts[-3:]:
        r = _get(s, url, a)
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == app_image.digest
    assert manifest_requests(reg, m) == []
    # The oldest was dropped: asked again.
    assert _get(s, url, accepts[0]).status_code == 200
    assert [e["method"] for e in manifest_requests(reg, m)] == ["HEAD"]
    assert len(tags_tree(cdir)[0]) == 3


def test_accept_with_q0_does_not_share_the_record_of_a_full_set(
        start_registry, start_gateway, skopeo, multiarch_image, tmp_path):
    reg = start_registry("up1")
    skopeo("copy", "--all", "--dest-tls-verify=false", multiarch_image.ref,
           "docker://%s/q0/multi:v1" % reg.host)
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(tmp_path / "c")))
    s = session()
    url = "%s/v2/up1/q0/multi/manifests/v1" % gw.url
    r = _get(s, url, "%s, %s" % (OCI_INDEX, OCI_MANIFEST))
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    m = reg.mark()
    # The index refused (RFC 9110 12.4.2): not the set that made the
    # record, so the cache asks the upstream.  Before: a hit on the
    # index record, since q=0 was part of the key.
    _get(s, url, "%s;q=0, %s" % (OCI_INDEX, OCI_MANIFEST))
    assert [e["method"] for e in manifest_requests(reg, m)][:1] == ["HEAD"]


# --- the record cap, LRU, restart ----------------------------------------

def test_more_tags_than_max_tag_records_leaves_at_most_the_cap(
        start_registry, start_gateway, skopeo, app_image, tmp_path):
    reg = start_registry("up1")
    skopeo("copy", "--dest-tls-verify=false", app_image.ref,
           "docker://%s/lru/app:t0" % reg.host)
    tags = ["t%d" % i for i in range(20)]
    push_tags(reg, "lru/app", "t0", tags[1:])
    cdir = tmp_path / "c"
    cfg = gateway_config(upstream(reg, prefix="up1"),
                         cache=cache_cfg(cdir, max_tag_records=5))
    gw = start_gateway(cfg)
    s = session()

    def url(t, g=gw):
        return "%s/v2/up1/lru/app/manifests/%s" % (g.url, t)

    for t in tags:
        r = _get(s, url(t))
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == app_image.digest
        # t0 is used all along: the most recently used, never evicted.
        assert _get(s, url("t0")).status_code == 200
        files, dirs = tags_tree(cdir)
        assert len(files) <= 5, files
        # One directory per tag with a record, and tags/up1.
        assert len(dirs) <= 5 + 1, dirs
    assert len(tags_tree(cdir)[0]) == 5    # before: 20
    m = reg.mark()
    for t in ["t0", "t19", "t18"]:
        assert _get(s, url(t)).status_code == 200
    assert manifest_requests(reg, m) == []
    assert _get(s, url("t1")).status_code == 200   # evicted: asked again
    assert [e["path"] for e in manifest_requests(reg, m)] == [
        "/v2/lru/app/manifests/t1"]

    # Restart with a lower cap and a negative record left by an older
    # version: the start-up scan counts what is on disk, removes the
    # oldest above the cap and the old negative record with its
    # directory.
    gw.stop()
    old = os.path.join(str(cdir), "tags", "up1", "ab" * 32)
    os.makedirs(old)
    with open(os.path.join(old, "cd" * 32), "w") as f:
        f.write("- 1700000000000\n")
    cfg["cache"]["max_tag_records"] = 3
    gw2 = start_gateway(cfg)
    files, dirs = tags_tree(cdir)
    assert len(files) == 3, files
    assert len(dirs) == 3 + 1, dirs
    assert not os.path.exists(old)
    m = reg.mark()
    assert _get(s, url("t1", gw2)).status_code == 200   # written last
    assert manifest_requests(reg, m) == []


# --- a positive record still works ---------------------------------------

def test_tag_record_hits_then_revalidates_and_follows_the_tag(
        start_registry, start_gateway, skopeo, app_image, image_factory,
        tmp_path):
    reg = start_registry("up1")
    other = image_factory("tags-other", platforms=[("linux", HOST_ARCH)],
                          seed="tags-other")
    skopeo("copy", "--dest-tls-verify=false", app_image.ref,
           "docker://%s/pos/app:v1" % reg.host)
    # Two routes to one registry: a long tag TTL and none at all.
    fresh = upstream(reg, name="up1", prefix="up1")
    reval = upstream(reg, name="up1r", prefix="up1r", hosts=[])
    reval["tag_ttl"] = 0
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(fresh, reval, cache=cache_cfg(cdir)))
    s = session()
    u_fresh = "%s/v2/up1/pos/app/manifests/v1" % gw.url
    u_reval = "%s/v2/up1r/pos/app/manifests/v1" % gw.url
    for u in (u_fresh, u_reval):
        r = _get(s, u)
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == app_image.digest
    m = reg.mark()
    r = _get(s, u_fresh)
    assert r.headers["Docker-Content-Digest"] == app_image.digest
    assert manifest_requests(reg, m) == []          # a hit
    r = _get(s, u_reval)
    assert r.headers["Docker-Content-Digest"] == app_image.digest
    assert [e["method"] for e in manifest_requests(reg, m)] == ["HEAD"]
    # The tag moves upstream: the revalidating route follows at once,
    # the other keeps its record until tag_ttl.
    skopeo("copy", "--dest-tls-verify=false", other.ref,
           "docker://%s/pos/app:v1" % reg.host)
    r = _get(s, u_reval)
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == other.digest
    r = _get(s, u_fresh)
    assert r.headers["Docker-Content-Digest"] == app_image.digest
    files, _ = tags_tree(cdir)
    assert sorted(f.split(os.sep)[0] for f in files) == ["up1", "up1r"]
    # Gone upstream: the revalidating route's record becomes a negative
    # entry (its file and directory removed), the other record stays.
    r = s.delete("%s/v2/pos/app/manifests/%s" % (reg.url, other.digest),
                 timeout=30)
    assert r.status_code == 202, r.text
    r = _get(s, u_reval)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    files, dirs = tags_tree(cdir)
    assert [f.split(os.sep)[0] for f in files] == ["up1"]
    assert sorted(dirs) == sorted(["up1", "up1r", os.path.dirname(files[0])])


# --- a hostile tags/ at start-up -----------------------------------------

def test_startup_scan_never_follows_a_link_out_of_the_cache(
        start_registry, start_gateway, tmp_path):
    """The scan removes junk under tags/<upstream>/<k1>/; a <k1> or an
    <upstream> that is a symbolic link must not take that removal to the
    directory it points at."""
    reg = start_registry("up1")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me\n")
    (victim / ("ab" * 32)).write_text("not a record\n")
    (victim / ("ef" * 32)).mkdir()
    (victim / ("ef" * 32) / "also-important").write_text("keep me\n")
    cdir = tmp_path / "c"
    os.makedirs(cdir / "tags" / "up1")
    os.symlink(str(victim), str(cdir / "tags" / "up1" / ("cd" * 32)))
    os.symlink(str(victim), str(cdir / "tags" / "up2"))
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    assert gw.alive()
    # Before: both files removed (and the link's target emptied).
    assert sorted(os.listdir(victim)) == ["ab" * 32, "ef" * 32,
                                          "important.txt"]
    assert os.listdir(victim / ("ef" * 32)) == ["also-important"]
    assert "foreign_file" in gw.log_text()


def _hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_startup_scan_memory_is_bounded_by_max_tag_records(
        start_registry, start_gateway, tmp_path):
    """60,000 valid records on disk (an older version kept one per Accept
    set, unbounded) and max_tag_records 10: the scan holds a bounded
    number of them at a time, and leaves the cap on disk."""
    reg = start_registry("up1")
    n = 60000
    cdir = tmp_path / "c"
    rec = ("sha256:" + "0" * 64 + " 1700000000000\n").encode()
    for j in range(n // 5000):
        d = cdir / "tags" / "up1" / ("%064x" % (j + 1))
        os.makedirs(d)
        for i in range(5000):
            fd = os.open(str(d / ("%064x" % i)),
                         os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, rec)
            os.close(fd)
    empty = tmp_path / "empty"
    cfg = {"max_tag_records": 10, "tag_variants": 64}
    gw0 = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                       cache=cache_cfg(empty, **cfg)))
    base = _hwm_kib(gw0.pid)
    gw0.stop()
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir, **cfg)))
    grown = _hwm_kib(gw.pid) - base
    files, dirs = tags_tree(cdir)
    assert len(files) == 10
    assert len(dirs) <= 10 + 1, dirs
    # Before: the scan held all 60,000 (about 7 MiB, more while the
    # array grew) before applying the cap.
    assert grown < 3072, "peak RSS grew by %d KiB" % grown


def test_a_record_dated_in_the_future_is_not_fresh_forever(
        start_registry, start_gateway, skopeo, app_image, tmp_path):
    """A record's time comes from the wall clock, and from the file: one
    written while the clock was ahead (or planted) must not skip
    revalidation until the clock catches up."""
    from lib.util import wait_for
    import time
    reg = start_registry("up1")
    skopeo("copy", "--dest-tls-verify=false", app_image.ref,
           "docker://%s/fut/app:v1" % reg.host)
    cdir = tmp_path / "c"
    cfg = gateway_config(upstream(reg, prefix="up1"),
                         cache=cache_cfg(cdir, tag_ttl=1))
    gw = start_gateway(cfg)
    s = session()
    assert _get(s, "%s/v2/up1/fut/app/manifests/v1" % gw.url
                ).status_code == 200
    gw.stop()
    files, _ = tags_tree(cdir)
    assert len(files) == 1
    path = os.path.join(str(cdir), "tags", files[0])
    ten_years = int(time.time() * 1000) + 10 * 365 * 86400 * 1000
    with open(path, "w") as f:
        f.write("%s %d\n" % (app_image.digest, ten_years))
    gw = start_gateway(cfg)
    url = "%s/v2/up1/fut/app/manifests/v1" % gw.url
    m = reg.mark()

    def revalidated():
        r = _get(s, url)
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == app_image.digest
        return [e["method"] for e in manifest_requests(reg, m)][:1] == [
            "HEAD"]
    # Before: a hit for ten years.
    wait_for(revalidated, timeout=15, interval=0.3,
             what="the future-dated record revalidated")


def test_a_client_exhausting_file_descriptors_does_not_remove_records(
        start_registry, start_gateway, skopeo, app_image, tmp_path):
    """A record that cannot be opened for want of a descriptor (which a
    client causes by holding connections open) is a miss this time, not
    a damaged record to remove."""
    import resource
    import socket
    reg = start_registry("up1")
    skopeo("copy", "--dest-tls-verify=false", app_image.ref,
           "docker://%s/fd/app:v1" % reg.host)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    s = session()
    assert _get(s, "%s/v2/up1/fd/app/manifests/v1" % gw.url
                ).status_code == 200
    s.close()
    files, _ = tags_tree(cdir)
    assert len(files) == 1
    a = socket.create_connection((gw.host.rsplit(":", 1)[0], gw.port),
                                 timeout=30)
    try:
        # The connection is accepted before the limit comes down.
        a.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert a.recv(65536).startswith(b"HTTP/1.1 ")
        used = {int(x) for x in os.listdir("/proc/%d/fd" % gw.pid)}
        lowest = min(set(range(len(used) + 1)) - used)
        soft, hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            a.sendall(("GET /v2/up1/fd/app/manifests/v1 HTTP/1.1\r\n"
                       "Host: x\r\nAccept: %s\r\n\r\n" %
                       OCI_MANIFEST).encode())
            assert a.recv(65536).startswith(b"HTTP/1.1 ")
        finally:
            resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        a.close()
    # Before: "tag_record_damaged ... removed", and the file gone.
    assert tags_tree(cdir)[0] == files
    assert "tag_record_damaged" not in gw.log_text()


def test_foreign_names_under_tags_cannot_forge_or_flood_the_log(
        start_registry, start_gateway, tmp_path):
    """Names under tags/ that are not ours are logged and left alone; the
    name is anything the file system holds, newlines included."""
    reg = start_registry("up1")
    cdir = tmp_path / "c"
    os.makedirs(cdir / "tags" / "up1")
    forged = "2026-01-01T00:00:00.000Z err FORGED"
    os.makedirs(cdir / "tags" / ("x\n" + forged))
    os.makedirs(cdir / "tags" / "up1" / ("y\n" + forged))
    for i in range(100):
        os.makedirs(cdir / "tags" / "up1" / ("junk-%d" % i))
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    lines = gw.log_text().splitlines()
    # Before: a line of its own, as if the gateway had written it.
    assert not [ln for ln in lines if ln.startswith(forged)]
    foreign = [ln for ln in lines if "foreign_file" in ln]
    assert 2 <= len(foreign) <= 16, len(foreign)   # before: 102
    assert [ln for ln in lines if "foreign=102" in ln]
    # Left alone, all of them.
    assert len(os.listdir(cdir / "tags" / "up1")) == 101
