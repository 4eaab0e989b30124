"""The pull-through cache against real parts: docker-registry as the
upstream (its access log is the witness of every upstream fetch), skopeo,
podman, containerd's ctr and dockerd as clients; and, for the faults a real
registry will not produce, the LyingUpstream test double (wrong bytes,
truncation, stalls, 429).  Every test asserts on responses, on the
upstream's log and on what is (or is not) on disk under cache.dir."""

import concurrent.futures
import os
import signal
import socket

import pytest
import requests

from lib.cache import (blob_path, cache_cfg, fetch, push_blob, session,
                       tmp_files)
from lib.clients import hosts_dir
from lib.gateway import gateway_config, upstream
from lib.images import HOST_ARCH, read_layout, sha256
from lib.lying_upstream import RATELIMIT_LIMIT, liar_upstream
from lib.util import wait_for

MIB = 1024 * 1024
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def blob_gets(reg, path_prefix, since):
    return [e for e in reg.access_log(since=since)
            if e["method"] == "GET" and e["path"].startswith(path_prefix)
            and "/blobs/" in e["path"]]


# --- 1. docker-registry as upstream ------------------------------------

def test_second_pull_makes_no_upstream_blob_get(start_registry,
                                                start_gateway, skopeo,
                                                single_image, tmp_path):
    reg = start_registry("up1")
    img = single_image
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/cache/app:v1" % reg.host)
    cdir = tmp_path / "cache"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    m0 = reg.mark()
    skopeo("copy", "--src-tls-verify=false",
           "docker://%s/up1/cache/app:v1" % gw.host,
           "oci:%s:v1" % (tmp_path / "first"))
    first = blob_gets(reg, "/v2/cache/app/", m0)
    im = img.images[0]
    want = {im["config_digest"]} | {l["digest"] for l in im["layers"]}
    assert {e["path"].rsplit("/", 1)[1] for e in first} >= want
    for d in want:
        assert os.path.getsize(blob_path(cdir, d)) == img.blobs[d]

    m1 = reg.mark()
    skopeo("copy", "--src-tls-verify=false",
           "docker://%s/up1/cache/app:v1" % gw.host,
           "oci:%s:v1" % (tmp_path / "second"))
    assert blob_gets(reg, "/v2/", m1) == []
    assert not [e for e in reg.access_log(since=m1)
                if e["method"] == "GET" and "/manifests/" in e["path"]]
    top, blobs = read_layout(str(tmp_path / "second"), "v1")
    assert top == img.digest and all(blobs.values())
    assert set(blobs) >= want
    assert "cache=hit" in gw.log_text()


def test_20_concurrent_cold_pulls_make_one_upstream_get(start_registry,
                                                        start_gateway,
                                                        tmp_path):
    reg = start_registry("up1")
    data = os.urandom(64 * MIB)
    d = push_blob(reg, "big/blob", data)
    del data
    cdir = tmp_path / "cache"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    m = reg.mark()
    url = "%s/v2/up1/big/blob/blobs/%s" % (gw.url, d)
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        got = list(ex.map(lambda _: fetch(url), range(20)))
    for st, digest, n, h in got:
        assert (st, digest, n) == (200, d, 64 * MIB)
        assert h["Docker-Content-Digest"] == d
    gets = blob_gets(reg, "/v2/big/blob/blobs/" + d, m)
    assert len(gets) == 1, gets
    log = gw.log_text()
    assert log.count("cache fill_start") == 1
    assert os.path.getsize(blob_path(cdir, d)) == 64 * MIB
    assert tmp_files(cdir) == []


@pytest.mark.parametrize("sendfile", ["auto", "off"])
def test_range_on_cold_blob_and_hit(start_registry, start_gateway,
                                    tmp_path, http, sendfile):
    reg = start_registry("up1")
    data = os.urandom(3 * MIB + 17)
    d = push_blob(reg, "rng/app", data)
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(tmp_path / "c",
                                                      sendfile=sendfile,
                                                      send_window=65536)))
    url = "%s/v2/up1/rng/app/blobs/%s" % (gw.url, d)
    r = http.get(url, headers={"Range": "bytes=1000-1999"}, timeout=60)
    assert r.status_code == 206
    assert r.content == data[1000:2000]
    assert r.headers["Content-Range"] == "bytes 1000-1999/%d" % len(data)
    wait_for(lambda: os.path.exists(blob_path(tmp_path / "c", d)),
             what="fill published")
    m = reg.mark()
    for rng, want in (("bytes=-5", data[-5:]),
                      ("bytes=%d-" % (len(data) - 3), data[-3:]),
                      ("bytes=0-0", data[:1])):
        r = http.get(url, headers={"Range": rng}, timeout=60)
        assert (r.status_code, r.content) == (206, want), rng
        assert r.headers["Accept-Ranges"] == "bytes"
    r = http.get(url, headers={"Range": "bytes=%d-" % len(data)},
                 timeout=60)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */%d" % len(data)
    r = http.head(url, timeout=60)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["ETag"] == '"%s"' % d
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = http.get(url, timeout=60)
    assert r.status_code == 200 and r.content == data
    assert blob_gets(reg, "/v2/", m) == []


def test_range_on_blob_still_filling_and_late_joiner(liar, start_gateway,
                                                     tmp_path, http):
    data = os.urandom(8 * MIB)
    half = 4 * MIB
    d = liar.add_blob(data, mode="stall", stall_at=half)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    url = "%s/v2/liar/app/blobs/%s" % (gw.url, d)
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        first = ex.submit(fetch, url)
        # The fill has the first half on disk and waits for the rest.
        wait_for(lambda: any(os.path.getsize(os.path.join(cdir, "tmp", f))
                             >= half for f in tmp_files(cdir)),
                 what="half of the blob in the temp file")
        assert not first.done()
        # A Range inside what is on disk is answered only once the fill
        # is verified: a 206 completes before the end of the body.
        rng = ex.submit(fetch, url, {"Range": "bytes=100-199999"})
        # A late full reader starts from the file and follows it.
        late = ex.submit(fetch, url)
        # Joins are logged: the Range reader's and the late reader's (in
        # another worker: a wait for this worker's fill).
        wait_for(lambda: gw.log_text().count("cache coalesced") +
                 gw.log_text().count("cache peer_wait") >= 2,
                 what="late reader joined the fill")
        assert not late.done()
        assert not rng.done()
        liar.release(d)
        st, got, n, h = rng.result(timeout=60)
        assert (st, got, n) == (206, sha256(data[100:200000]), 199900)
        assert h["Docker-Content-Digest"] == d
        assert h["ETag"] == '"%s"' % d
        assert first.result(timeout=60)[:3] == (200, d, len(data))
        assert late.result(timeout=60)[:3] == (200, d, len(data))
    assert liar.requests("GET", "/v2/app/blobs/" + d) == 1
    assert os.path.getsize(blob_path(cdir, d)) == len(data)


# --- 2. a lying upstream -------------------------------------------------

def _broken_fetch(url):
    """GET that must fail before a complete body; returns bytes read."""
    with session() as s:
        r = s.get(url, timeout=60, stream=True)
        assert r.status_code == 200
        want = int(r.headers["Content-Length"])
        n = 0
        # urllib3 may raise on the short body or just end it: either way
        # the client never holds the whole (wrong) body.
        try:
            for chunk in r.iter_content(65536):
                n += len(chunk)
        except requests.exceptions.RequestException:
            pass
        assert n < want
        return n


@pytest.mark.parametrize("mode", ["wrong", "truncate"])
def test_lying_upstream_fails_transfer_and_caches_nothing(liar,
                                                          start_gateway,
                                                          tmp_path, mode):
    data = os.urandom(2 * MIB + 5)
    d = liar.add_blob(data, mode=mode)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    url = "%s/v2/liar/app/blobs/%s" % (gw.url, d)
    _broken_fetch(url)
    wait_for(lambda: "cache fill_failed" in gw.log_text(),
             what="fill failure logged")
    assert not os.path.exists(blob_path(cdir, d))
    wait_for(lambda: tmp_files(cdir) == [], what="temp file removed")
    # Not cached: the next request fetches again (and fails again).
    _broken_fetch(url)
    assert liar.requests("GET", "/v2/app/blobs/" + d) == 2
    # Once the upstream tells the truth, the blob is served and cached.
    liar.set_mode(d, "ok")
    assert fetch(url)[:3] == (200, d, len(data))
    assert os.path.getsize(blob_path(cdir, d)) == len(data)


def test_upstream_429_reaches_client_as_429(liar, start_gateway, tmp_path,
                                            http):
    d = liar.add_blob(os.urandom(1000))
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(tmp_path / "c")))
    liar.fail_all(429, retry_after="17")
    for path in ("blobs/" + d, "manifests/v1"):
        r = http.get("%s/v2/liar/app/%s" % (gw.url, path), timeout=30)
        assert r.status_code == 429, (path, r.text)
        assert r.headers.get("Retry-After") == "17"
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    log = gw.log_text()
    assert "ratelimit upstream=liar" in log
    assert RATELIMIT_LIMIT in log


def test_upstream_429_without_cache_is_an_oci_error(liar, start_gateway,
                                                    http):
    """The pass-through path too: whatever body the upstream sends with its
    429, the client gets TOOMANYREQUESTS and the Retry-After (the test
    double answers GET and HEAD only)."""
    gw = start_gateway(gateway_config(liar_upstream(liar)))
    liar.fail_all(429, retry_after="17")
    for method, path in (("GET", "manifests/v1"), ("HEAD", "manifests/v1"),
                         ("GET", "tags/list")):
        r = http.request(method, "%s/v2/liar/app/%s" % (gw.url, path),
                         timeout=30)
        assert r.status_code == 429, (method, path, r.text)
        assert r.headers.get("Retry-After") == "17"
        if method != "HEAD":
            assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert gw.alive()


# --- 5. kill -9 in the middle of a fill --------------------------------

def test_kill_9_mid_fill_then_restart(liar, start_gateway, tmp_path):
    data = os.urandom(6 * MIB)
    d = liar.add_blob(data, mode="stall", stall_at=2 * MIB)
    cdir = tmp_path / "c"
    # One process: a kill -9 of a master instead makes its workers
    # drain (PR_SET_PDEATHSIG), which is not the crash tested here.
    cfg = gateway_config(liar_upstream(liar), cache=cache_cfg(cdir),
                         workers=1)
    gw = start_gateway(cfg)
    url = "%s/v2/liar/app/blobs/%s" % (gw.url, d)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lambda: fetch(url))
        wait_for(lambda: any(os.path.getsize(os.path.join(cdir, "tmp", f))
                             >= 2 * MIB for f in tmp_files(cdir)),
                 what="partial fill on disk")
        os.kill(gw.pid, signal.SIGKILL)
        wait_for(lambda: not gw.alive(), what="gateway dead")
        try:
            st, got, n, _ = fut.result(timeout=60)
            assert got != d or n != len(data)
        except requests.exceptions.RequestException:
            pass
    liar.release(d)
    assert tmp_files(cdir) != []    # the kill left the temp file
    assert not os.path.exists(blob_path(cdir, d))
    gw2 = start_gateway(cfg)
    assert tmp_files(cdir) == []    # cleaned at start
    assert not os.path.exists(blob_path(cdir, d))
    url2 = "%s/v2/liar/app/blobs/%s" % (gw2.url, d)
    assert fetch(url2)[:3] == (200, d, len(data))
    with open(blob_path(cdir, d), "rb") as f:
        assert sha256(f.read()) == d
    assert tmp_files(cdir) == []


# --- manifests and tags --------------------------------------------------

def test_tag_cache_keys_on_accept_and_negative_ttl(start_registry,
                                                   start_gateway, skopeo,
                                                   multiarch_image,
                                                   tmp_path, http):
    reg = start_registry("up1")
    img = multiarch_image
    skopeo("copy", "--all", "--dest-tls-verify=false", img.ref,
           "docker://%s/acc/multi:v1" % reg.host)
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(tmp_path / "c")))
    url = "%s/v2/up1/acc/multi/manifests/v1" % gw.url
    full = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST])
    for _ in range(2):
        r = http.get(url, headers={"Accept": full}, timeout=30)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == OCI_INDEX
        assert r.headers["Docker-Content-Digest"] == img.digest
        assert sha256(r.content) == img.digest
    assert "cache=hit" in gw.log_text()
    # A client that only takes Docker schema2 never gets the cached index.
    r = http.get(url, headers={"Accept": DOCKER_MANIFEST}, timeout=30)
    assert r.headers.get("Content-Type") != OCI_INDEX, r.headers
    # By digest: served from the cache, verified.
    m = reg.mark()
    r = http.get("%s/v2/up1/acc/multi/manifests/%s" % (gw.url, img.digest),
                 headers={"Accept": full}, timeout=30)
    assert r.status_code == 200 and sha256(r.content) == img.digest
    assert reg.access_log(since=m) == []
    # Unknown tag: 404 MANIFEST_UNKNOWN, then answered without upstream.
    bad = "%s/v2/up1/acc/multi/manifests/nope" % gw.url
    r = http.get(bad, timeout=30)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    m = reg.mark()
    r = http.get(bad, timeout=30)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert reg.access_log(since=m) == []


def test_push_is_not_cached_and_moves_the_tag(start_registry, start_gateway,
                                              skopeo, image_factory,
                                              tmp_path, http):
    reg = start_registry("up1")
    a = image_factory("push-a", platforms=[("linux", HOST_ARCH)],
                      seed="push-a")
    b = image_factory("push-b", platforms=[("linux", HOST_ARCH)],
                      seed="push-b")
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    url = "%s/v2/up1/push/app/manifests/v1" % gw.url
    acc = {"Accept": OCI_MANIFEST}
    skopeo("copy", "--dest-tls-verify=false", a.ref,
           "docker://%s/up1/push/app:v1" % gw.host)
    assert http.get(url, headers=acc, timeout=30).headers[
        "Docker-Content-Digest"] == a.digest
    skopeo("copy", "--dest-tls-verify=false", b.ref,
           "docker://%s/up1/push/app:v1" % gw.host)
    r = http.get(url, headers=acc, timeout=30)
    assert r.headers["Docker-Content-Digest"] == b.digest
    # The pushed layers went upstream, not into the cache.
    for l in b.images[0]["layers"]:
        assert reg.has_blob("push/app", l["digest"])


def test_cache_off_per_upstream(start_registry, start_gateway, tmp_path,
                                http):
    reg = start_registry("up1")
    data = os.urandom(100000)
    d = push_blob(reg, "off/app", data)
    u = upstream(reg, prefix="up1")
    u["cache"] = False
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(u, cache=cache_cfg(cdir)))
    m = reg.mark()
    for _ in range(2):
        r = http.get("%s/v2/up1/off/app/blobs/%s" % (gw.url, d), timeout=30)
        assert r.status_code == 200 and r.content == data
    assert len(blob_gets(reg, "/v2/off/app/blobs/", m)) == 2
    assert not os.path.exists(blob_path(cdir, d))
    assert "cache=" not in gw.log_text()


# --- 3. upstream stopped -------------------------------------------------

def test_upstream_down_serves_cached_tags_and_digests(start_registry,
                                                      start_gateway, skopeo,
                                                      podman, single_image,
                                                      tmp_path, http):
    reg = start_registry("up1")
    img = single_image
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/down/app:v1" % reg.host)
    # tag_ttl 0: every tag pull asks the upstream first.
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(tmp_path / "c",
                                                      tag_ttl=0)))
    ref = "docker://%s/up1/down/app" % gw.host
    skopeo("copy", "--src-tls-verify=false", ref + ":v1",
           "oci:%s:v1" % (tmp_path / "warm"))
    reg.stop()

    skopeo("copy", "--src-tls-verify=false", ref + ":v1",
           "oci:%s:v1" % (tmp_path / "tag"))
    skopeo("copy", "--src-tls-verify=false", ref + "@" + img.digest,
           "oci:%s:v1" % (tmp_path / "digest"))
    for d in ("tag", "digest"):
        top, blobs = read_layout(str(tmp_path / d), "v1")
        assert top == img.digest and all(blobs.values())
    # podman sends its own Accept set: served from what skopeo left.
    podman("pull", "--tls-verify=false", "%s/up1/down/app:v1" % gw.host)
    out = podman("image", "inspect", "--format", "{{.Id}}",
                 "%s/up1/down/app:v1" % gw.host).stdout
    assert out.strip() == img.images[0]["config_digest"].split(":")[1]

    r = http.get("%s/v2/up1/down/app/manifests/v1" % gw.url,
                 headers={"Accept": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 200 and r.headers["Warning"].startswith("110")
    assert "cache=stale" in gw.log_text()

    # Not cached: a clear error, not a hang.
    cp = skopeo("inspect", "--tls-verify=false",
                "docker://%s/up1/down/other:v1" % gw.host, check=False)
    assert cp.returncode != 0
    assert "502 bad gateway" in cp.stderr.lower(), cp.stderr
    r = http.get("%s/v2/up1/down/other/manifests/v1" % gw.url, timeout=30)
    assert r.status_code == 502
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "cannot connect" in r.json()["errors"][0]["detail"]


# --- 4. eviction and restart ---------------------------------------------

def _store_bytes(cdir):
    total = 0
    for root, _, files in os.walk(os.path.join(str(cdir), "blobs")):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def test_eviction_keeps_recent_blobs_under_cap_and_restart_keeps_them(
        start_registry, start_gateway, tmp_path, http):
    reg = start_registry("up1")
    cap = 1 * MIB
    blobs = [os.urandom(300 * 1024 + i) for i in range(6)]
    ds = [push_blob(reg, "ev/app", b) for b in blobs]
    cdir = tmp_path / "c"
    # 300 KiB blobs under a 1 MiB cap: more than the default
    # fill_max_fraction (0.25) would let in.
    cfg = gateway_config(upstream(reg, prefix="up1"),
                         cache=cache_cfg(cdir, max_bytes=cap,
                                         fill_max_fraction=0.5))
    gw = start_gateway(cfg)
    for d, b in zip(ds, blobs):
        r = http.get("%s/v2/up1/ev/app/blobs/%s" % (gw.url, d), timeout=30)
        assert r.status_code == 200 and r.content == b
        wait_for(lambda: _store_bytes(cdir) <= cap, what="store under cap")
    # The most recently used survive, the oldest went.
    assert os.path.exists(blob_path(cdir, ds[-1]))
    assert os.path.exists(blob_path(cdir, ds[-2]))
    assert not os.path.exists(blob_path(cdir, ds[0]))
    assert "cache evicted" in gw.log_text()
    gw.stop()

    gw2 = start_gateway(cfg)
    assert "entries=3" in gw2.log_text() or "entries=2" in gw2.log_text()
    m = reg.mark()
    for d, b in zip(ds[-2:], blobs[-2:]):
        r = http.get("%s/v2/up1/ev/app/blobs/%s" % (gw2.url, d), timeout=30)
        assert r.status_code == 200 and r.content == b
    assert blob_gets(reg, "/v2/", m) == []


# --- 6. dockerd and containerd as mirrors --------------------------------

def test_dockerd_and_containerd_second_pull_from_cache(start_registry,
                                                       start_gateway,
                                                       start_dockerd,
                                                       start_containerd,
                                                       skopeo, image_factory,
                                                       tmp_path):
    hub = start_registry("hub")
    img = image_factory("cache-mirror", platforms=[("linux", HOST_ARCH)],
                        seed="cache-mirror", media="docker")
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/library/cached-demo:latest" % hub.host)
    gw = start_gateway(gateway_config(
        upstream(hub, prefix="hub", default=True, docker_hub=True),
        cache=cache_cfg(tmp_path / "c")))
    layers = {l["digest"] for l in img.images[0]["layers"]}

    dk = start_dockerd({"registry-mirrors": [gw.url]})
    m = hub.mark()
    dk.docker("pull", "cached-demo:latest")
    assert {e["path"].rsplit("/", 1)[1] for e in
            blob_gets(hub, "/v2/library/cached-demo/", m)} >= layers
    dk.docker("rmi", "cached-demo:latest")
    m = hub.mark()
    dk.docker("pull", "cached-demo:latest")
    assert blob_gets(hub, "/v2/", m) == []
    image_id = dk.docker("image", "inspect", "--format", "{{.Id}}",
                         "cached-demo:latest").stdout.strip()
    assert image_id == img.images[0]["config_digest"]

    # containerd: two fresh content stores, same mirror.
    for n in range(2):
        ctd = start_containerd()
        hosts = hosts_dir(ctd.dir, hub.host, gw.host)
        m = hub.mark()
        ctd.ctr("images", "pull", "--plain-http", "--hosts-dir", hosts,
                "%s/library/cached-demo:latest" % hub.host)
        assert img.digest in ctd.ctr("images", "ls").stdout
        if n == 1:
            assert blob_gets(hub, "/v2/", m) == []
    log = gw.log_text()
    assert "cache=hit" in log



def test_half_closed_client_gets_the_whole_cached_blob(start_registry,
                                                       start_gateway,
                                                       tmp_path):
    """A client that sends its request and half-closes (FIN) still gets a
    cache hit whole.  The hit is one send window: the request ends as soon
    as its file segment is queued, while the bytes are still on their way
    (more than the socket buffers hold while the client does not read).
    Fails before this change: the FIN that came meanwhile closed the
    connection at once, and the client got the head and a part of the
    body."""
    reg = start_registry("up1")
    data = os.urandom(8 * MIB)
    d = push_blob(reg, "app", data)
    gw = start_gateway(gateway_config(upstream(reg, default=True),
                                      cache=cache_cfg(tmp_path / "c",
                                                      send_window=16 * MIB)))
    path = "/v2/up1/app/blobs/" + d
    r = session().get(gw.url + path, timeout=30)
    assert r.status_code == 200 and r.content == data
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        s.shutdown(socket.SHUT_WR)
        # The request has ended (all of it queued).  A request sent
        # after the FIN and answered means the gateway has read the FIN.
        wait_for(lambda: "cache=hit" in gw.log_text(), what="the hit done")
        assert session().get(gw.url + "/v2/", timeout=30).status_code == 200
        buf = b""
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            buf += b
    finally:
        s.close()
    assert buf.startswith(b"HTTP/1.1 200 "), buf[:200]
    assert buf.endswith(b"\r\n\r\n" + data), \
        "%d bytes of %d" % (len(buf), len(data))


@pytest.mark.parametrize("sendfile,sendfile_min,small,large", [
    ("auto", 8192, "copy", "sendfile"),
    ("auto", 0, "sendfile", "sendfile"),
    ("auto", 1 << 20, "copy", "copy"),
    ("on", 1 << 20, "sendfile", "sendfile"),
    ("off", 0, "copy", "copy"),
])
def test_sendfile_auto_copies_small_files(start_registry, start_gateway,
                                          tmp_path, http, sendfile,
                                          sendfile_min, small, large):
    """cache.sendfile auto copies a file under cache.sendfile_min bytes
    into the output buffer and sends a larger one with sendfile; on and
    off ignore the size.  Both ways send the same bytes, on a cold pull
    (following the fill) and on a hit."""
    reg = start_registry("up1")
    small_data = os.urandom(8191)
    large_data = os.urandom(8192 + 100000)
    ds = push_blob(reg, "sf/app", small_data)
    dl = push_blob(reg, "sf/app", large_data)
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), log={"level": "debug"},
        cache=cache_cfg(tmp_path / "c", sendfile=sendfile,
                        sendfile_min=sendfile_min)))
    for rnd in ("cold", "hit"):
        for d, data, want in ((ds, small_data, small),
                              (dl, large_data, large)):
            r = http.get("%s/v2/up1/sf/app/blobs/%s" % (gw.url, d),
                         timeout=60)
            assert r.status_code == 200 and r.content == data, rnd
            wait_for(lambda: os.path.exists(blob_path(tmp_path / "c", d)),
                     what="fill published")
    log = gw.log_text()
    for d, want in ((ds, small), (dl, large)):
        lines = [ln for ln in log.splitlines()
                 if "cache send digest=%s " % d in ln]
        assert len(lines) == 2, lines
        assert all(ln.endswith("by=" + want) for ln in lines), lines


def test_fills_behind_their_digest_thread_pause_and_resume(start_registry,
                                                          start_gateway,
                                                          tmp_path):
    """With the smallest buffers.high_watermark, nearly every upstream
    read puts a fill's hash queue over its bound: the upstream read
    pauses and the digest thread resumes it.  Four concurrent fills on
    one digest thread all complete, verified, with one upstream GET each,
    and the pause/resume path ran."""
    reg = start_registry("up1")
    blobs = {}
    for i in range(4):
        data = os.urandom(16 * MIB + i)
        blobs[push_blob(reg, "bp/app", data)] = len(data)
    cdir = tmp_path / "cache"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), log={"level": "debug"},
        buffers={"high_watermark": 16384},
        cache=cache_cfg(cdir, digest_threads=1)))
    m = reg.mark()
    urls = ["%s/v2/up1/bp/app/blobs/%s" % (gw.url, d) for d in blobs]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(fetch, urls + urls))
    for (st, digest, n, _h), d in zip(got, list(blobs) * 2):
        assert (st, digest, n) == (200, d, blobs[d])
    for d, n in blobs.items():
        assert len(blob_gets(reg, "/v2/bp/app/blobs/" + d, m)) == 1
        assert os.path.getsize(blob_path(cdir, d)) == n
    assert tmp_files(cdir) == []
    assert "cache fill_resume" in gw.log_text()
