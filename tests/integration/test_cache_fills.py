"""Cache fills under hostile upstreams and clients (issue 7, points 4-6):
fills keyed per upstream, a failed fill that does not fail readers of
another repository, Ranges answered only from verified bytes, and the
bounds on fills (count, per client, digest threads, admission by bytes,
the largest blob cached, cancellation of abandoned fills).

docker-registry is the upstream wherever a well-behaved one plays the
part (its access log witnesses each upstream fetch); the LyingUpstream
TEST DOUBLE is used where a stall, a lie or a stalled 404 is needed.
Every bound is asserted by sampling the gateway (/proc), the upstream
side of its connections (/proc/net/tcp) and cache.dir while the traffic
runs, and by waiting for conditions, never for time."""

import concurrent.futures
import hashlib
import json
import os
import socket
import struct
import threading

import pytest

from lib.cache import (blob_path, cache_cfg, fetch, push_blob, session,
                       tmp_files)
from lib.gateway import gateway_config, upstream
from lib.images import sha256
from lib.lying_upstream import liar_upstream
from lib.util import wait_for

MIB = 1024 * 1024


def tmp_bytes(cdir):
    n = 0
    for f in tmp_files(cdir):
        try:
            n += os.path.getsize(os.path.join(str(cdir), "tmp", f))
        except FileNotFoundError:
            pass
    return n


def manifest_path(cdir, digest):
    alg, hexd = digest.split(":")
    return os.path.join(str(cdir), "manifests", alg, hexd[:2], hexd)


def push_manifest(reg, repo, ref, data, ctype):
    with session() as s:
        r = s.put("%s/v2/%s/manifests/%s" % (reg.url, repo, ref), data=data,
                  headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code == 201, r.text
        return r.headers["Docker-Content-Digest"]


def blob_gets(reg, path, since):
    return [e for e in reg.access_log(since=since)
            if e["method"] == "GET" and e["path"] == path]


def get_head(gw, path, src="127.0.0.1"):
    """A client from address `src` that sends GET and reads the response
    head; returns (socket, status, head bytes).  The caller reads on or
    closes (a client leaving after the head)."""
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30,
                                 source_address=(src, 0))
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" %
               (path, gw.host)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        assert len(buf) < 1 << 20
    head = buf.split(b"\r\n\r\n", 1)[0]
    status = int(head.split(b" ", 2)[1]) if head else 0
    return s, status, buf


def read_rest(s, buf):
    """Read a Content-Length body after get_head(); returns its digest."""
    head, body = buf.split(b"\r\n\r\n", 1)
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            length = int(v)
    assert length is not None
    h = hashlib.sha256(body)
    n = len(body)
    while n < length:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    s.close()
    return "sha256:" + h.hexdigest(), n


def upstream_conns(port):
    """ESTABLISHED IPv4 connections whose remote end is 127.0.0.1:port:
    the gateway's connections to that upstream (the only client)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            rem, state = parts[2], parts[3]
            rhost, rport = rem.split(":")
            if int(rport, 16) == port and rhost == "0100007F" and \
                    state == "01":
                n += 1
    return n


def threads_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


# --- 4. fills keyed by (upstream, digest) ------------------------------

def test_stalling_upstream_does_not_hold_a_healthy_one(liar, start_registry,
                                                       start_gateway,
                                                       tmp_path):
    """The same blob through a stalling lying upstream and a real registry:
    the registry's request is answered while the other fill stalls, by a
    fill of its own."""
    data = os.urandom(2 * MIB)
    reg = start_registry("up1")
    d = push_blob(reg, "app", data)
    assert liar.add_blob(data, mode="stall", stall_at=MIB) == d
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        stalled = ex.submit(fetch, "%s/v2/liar/app/blobs/%s" % (gw.url, d))
        wait_for(lambda: tmp_bytes(cdir) >= MIB,
                 what="the liar's fill stalled half way")
        m = reg.mark()
        st, got, n, h = fetch("%s/v2/up1/app/blobs/%s" % (gw.url, d))
        assert (st, got, n) == (200, d, len(data))
        assert len(blob_gets(reg, "/v2/app/blobs/" + d, m)) == 1
        assert not stalled.done()
        liar.release(d)
        assert stalled.result(timeout=60)[:3] == (200, d, len(data))
    assert gw.log_text().count("cache fill_start") == 2
    assert os.path.getsize(blob_path(cdir, d)) == len(data)


def test_failed_fill_of_one_repo_does_not_fail_another(liar, start_gateway,
                                                       tmp_path):
    """A fill for repository a (which the upstream answers 404, late) is
    joined by a reader of repository b; the 404 is a's: b fetches on its
    own and gets the blob."""
    data = os.urandom(MIB + 3)
    d = liar.add_blob(data, repos=["b"], stall_404=True)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        a = ex.submit(fetch, "%s/v2/liar/a/blobs/%s" % (gw.url, d))
        wait_for(lambda: liar.requests("GET", "/v2/a/blobs/" + d) == 1,
                 what="a's fill at the upstream")
        b = ex.submit(fetch, "%s/v2/liar/b/blobs/%s" % (gw.url, d))
        wait_for(lambda: "cache coalesced" in gw.log_text(),
                 what="b joined a's fill")
        liar.release(d)
        assert a.result(timeout=60)[0] == 404
        assert b.result(timeout=60)[:3] == (200, d, len(data))
    assert liar.requests("GET", "/v2/b/blobs/" + d) == 1
    assert "cache refetch" in gw.log_text()
    assert os.path.getsize(blob_path(cdir, d)) == len(data)


# --- 5. no unverified bytes as a complete 206 ---------------------------

def _assert_not_vouched(r):
    """A response that must not present its bytes as the digest's."""
    assert r.status_code != 206, r.headers
    assert "Docker-Content-Digest" not in r.headers
    assert "ETag" not in r.headers
    assert "max-age" not in r.headers.get("Cache-Control", "")


@pytest.mark.parametrize("mode", ["wrong", "truncate"])
def test_range_from_lying_upstream_is_never_a_complete_206(liar, http,
                                                           start_gateway,
                                                           tmp_path, mode):
    data = os.urandom(2 * MIB + 5)
    d = liar.add_blob(data, mode=mode)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    url = "%s/v2/liar/app/blobs/%s" % (gw.url, d)
    r = http.get(url, headers={"Range": "bytes=0-99"}, timeout=60)
    _assert_not_vouched(r)
    assert r.status_code == 502
    assert not os.path.exists(blob_path(cdir, d))
    wait_for(lambda: tmp_files(cdir) == [], what="temp file removed")
    # Once the upstream tells the truth, the Range is served, verified.
    liar.set_mode(d, "ok")
    r = http.get(url, headers={"Range": "bytes=0-99"}, timeout=60)
    assert (r.status_code, r.content) == (206, data[:100])
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["ETag"] == '"%s"' % d


def test_range_inside_a_stalled_lying_fill_waits_for_verification(
        liar, start_gateway, tmp_path):
    """The bytes a Range asks for are on disk, but the fill is not
    verified; when the rest turns out wrong, the Range never got a 206,
    and the full reader's head carried no ETag or long-lived caching."""
    data = os.urandom(4 * MIB)
    d = liar.add_blob(data, mode="stall_wrong", stall_at=2 * MIB)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    path = "/v2/liar/app/blobs/" + d
    full, st, buf = get_head(gw, path)
    try:
        assert st == 200
        head = buf.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\netag:" not in head
        assert b"max-age" not in head
        wait_for(lambda: tmp_bytes(cdir) >= 2 * MIB,
                 what="half of the blob in the temp file")
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            rng = ex.submit(lambda: session().get(
                gw.url + path, headers={"Range": "bytes=100-199999"},
                timeout=60))
            wait_for(lambda: gw.log_text().count("cache coalesced") >= 1,
                     what="the Range joined the fill")
            assert not rng.done()
            liar.release(d)
            _assert_not_vouched(rng.result(timeout=60))
    finally:
        full.close()
    assert not os.path.exists(blob_path(cdir, d))


# --- 6. bounded fills ---------------------------------------------------

def test_distinct_misses_leaving_after_the_head_stay_bounded(
        liar, start_gateway, tmp_path):
    """Distinct-digest misses, each client leaving after the head: the
    gateway's threads, its connections to the upstream, tmp/ bytes and the
    published blob all stay within what the configuration allows."""
    max_fills, workers, n = 4, 4, 40
    size, stall = 3 * MIB, 2 * MIB
    cdir = tmp_path / "c"
    kept_data = os.urandom(MIB)
    kept = liar.add_blob(kept_data)
    digests = [liar.add_blob(os.urandom(size), mode="stall", stall_at=stall)
               for _ in range(n)]
    gw = start_gateway(gateway_config(
        liar_upstream(liar),
        cache=cache_cfg(cdir, max_bytes=16 * MIB, max_fills=max_fills,
                        max_fills_per_client=64, digest_threads=2)))
    assert fetch("%s/v2/liar/app/blobs/%s" % (gw.url, kept))[:3] == \
        (200, kept, MIB)
    wait_for(lambda: os.path.exists(blob_path(cdir, kept)),
             what="a published blob")
    threads0 = threads_of(gw.pid)
    peak = {"threads": 0, "conns": 0, "tmp": 0, "kept_gone": 0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak["threads"] = max(peak["threads"], threads_of(gw.pid))
            peak["conns"] = max(peak["conns"], upstream_conns(liar.port))
            peak["tmp"] = max(peak["tmp"], tmp_bytes(cdir))
            if not os.path.exists(blob_path(cdir, kept)):
                peak["kept_gone"] += 1

    def leave_after_head(d):
        s, st, _ = get_head(gw, "/v2/liar/app/blobs/" + d)
        s.close()
        return st

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            assert set(ex.map(leave_after_head, digests)) == {200}
        wait_for(lambda: liar.answering() == 0,
                 what="no request left at the upstream")
        wait_for(lambda: tmp_files(cdir) == [], what="tmp/ emptied")
    finally:
        stop.set()
        sampler.join(10)
    assert peak["threads"] <= threads0, peak
    # Fills, pass-throughs of clients still there, one idle pooled.
    assert peak["conns"] <= max_fills + workers + 1, peak
    assert peak["tmp"] <= max_fills * size, peak
    assert peak["kept_gone"] == 0, peak
    assert os.path.getsize(blob_path(cdir, kept)) == MIB
    assert "cache fill_cancelled" in gw.log_text()
    for d in digests:
        assert not os.path.exists(blob_path(cdir, d))
    assert gw.alive()


def test_blob_over_fill_max_fraction_passes_through(start_registry,
                                                    start_gateway, tmp_path):
    reg = start_registry("up1")
    big = os.urandom(5 * MIB)
    small = os.urandom(MIB)
    db = push_blob(reg, "app", big)
    ds = push_blob(reg, "app", small)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(cdir, max_bytes=16 * MIB, fill_max_fraction=0.25)))
    for _ in range(2):
        assert fetch("%s/v2/up1/app/blobs/%s" % (gw.url, db))[:3] == \
            (200, db, len(big))
    assert not os.path.exists(blob_path(cdir, db))
    assert "fill_max_fraction" in gw.log_text()
    # Each request went to the upstream: nothing of it was cached.
    m = reg.mark()
    assert fetch("%s/v2/up1/app/blobs/%s" % (gw.url, db))[:3] == \
        (200, db, len(big))
    assert blob_gets(reg, "/v2/app/blobs/" + db, m)
    # A blob under the fraction is cached as ever.
    assert fetch("%s/v2/up1/app/blobs/%s" % (gw.url, ds))[:3] == \
        (200, ds, len(small))
    assert os.path.getsize(blob_path(cdir, ds)) == len(small)
    wait_for(lambda: tmp_files(cdir) == [], what="tmp/ empty")


def test_fills_per_client_address_are_capped(liar, start_gateway, tmp_path):
    """Two fills for 127.0.0.1, the third of its misses goes through
    uncached; another address still gets a fill of its own."""
    data = [os.urandom(2 * MIB) for _ in range(4)]
    ds = [liar.add_blob(b, mode="stall", stall_at=MIB) for b in data]
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        liar_upstream(liar),
        cache=cache_cfg(cdir, max_fills=64, max_fills_per_client=2)))
    socks = []
    try:
        for d in ds[:3]:
            s, st, buf = get_head(gw, "/v2/liar/app/blobs/" + d)
            socks.append((s, buf))
            assert st == 200
        s, st, buf = get_head(gw, "/v2/liar/app/blobs/" + ds[3],
                              src="127.0.0.2")
        socks.append((s, buf))
        assert st == 200
        log = gw.log_text()
        assert log.count("cache fill_start") == 3
        assert log.count("reason=cache.max_fills_per_client") == 1
        for d in ds:
            liar.release(d)
        for (s, buf), d, b in zip(socks, ds, data):
            assert read_rest(s, buf) == (d, len(b))
    finally:
        for s, _ in socks:
            s.close()
    for i in (0, 1, 3):
        wait_for(lambda: os.path.exists(blob_path(cdir, ds[i])),
                 what="fill %d published" % i)
    assert not os.path.exists(blob_path(cdir, ds[2]))


def test_abandoned_fill_is_cancelled_unless_nearly_done(liar, start_gateway,
                                                        tmp_path):
    size = 4 * MIB
    early = liar.add_blob(os.urandom(size), mode="stall", stall_at=MIB)
    late = liar.add_blob(os.urandom(size), mode="stall",
                         stall_at=int(size * 0.95))
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        liar_upstream(liar),
        cache=cache_cfg(cdir, fill_finish_fraction=0.9)))
    for d, at in ((early, MIB), (late, int(size * 0.95))):
        s, st, _ = get_head(gw, "/v2/liar/app/blobs/" + d)
        assert st == 200
        wait_for(lambda: tmp_bytes(cdir) >= at, what="fill at the stall")
        s.close()
        if d == early:
            # A quarter done: cancelled, its connection closed.
            wait_for(lambda: "fill_cancelled" in gw.log_text(),
                     what="abandoned fill cancelled")
            wait_for(lambda: tmp_files(cdir) == [], what="temp removed")
            wait_for(lambda: liar.answering() == 0,
                     what="upstream transfer closed")
            liar.release(d)
    # Nearly done: it completes and publishes with no reader left.
    liar.release(late)
    wait_for(lambda: os.path.exists(blob_path(cdir, late)),
             what="nearly done fill published")
    assert os.path.getsize(blob_path(cdir, late)) == size
    assert not os.path.exists(blob_path(cdir, early))
    assert gw.log_text().count("fill_cancelled") == 1


def test_fill_without_room_next_to_entries_in_use_passes_through(
        start_registry, start_gateway, tmp_path):
    """Admission by bytes: a fill that would fit only by evicting an entry
    a client is reading is passed through, uncached; once that client is
    gone the same blob is cached (the idle entry makes room)."""
    reg = start_registry("up1")
    held = os.urandom(10 * MIB)
    new = os.urandom(8 * MIB)
    dh = push_blob(reg, "app", held)
    dn = push_blob(reg, "app", new)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(cdir, max_bytes=16 * MIB, fill_max_fraction=1)))
    assert fetch("%s/v2/up1/app/blobs/%s" % (gw.url, dh))[:3] == \
        (200, dh, len(held))
    wait_for(lambda: os.path.exists(blob_path(cdir, dh)),
             what="the first blob published")
    # A client reads the head of the stored blob and stops: it is pinned.
    s, st, _ = get_head(gw, "/v2/up1/app/blobs/" + dh)
    try:
        assert st == 200
        assert fetch("%s/v2/up1/app/blobs/%s" % (gw.url, dn))[:3] == \
            (200, dn, len(new))
        # Not filled at all (not published, then evicted), the held
        # entry kept.
        assert not [ln for ln in gw.log_text().splitlines()
                    if "fill_done" in ln and dn in ln]
        assert not os.path.exists(blob_path(cdir, dn))
        assert os.path.exists(blob_path(cdir, dh))
        assert "no room without evicting" in gw.log_text()
    finally:
        s.close()
    # The reader is gone: the idle entry is evicted to make room.
    wait_for(lambda: fetch("%s/v2/up1/app/blobs/%s" % (gw.url, dn))[:3] ==
             (200, dn, len(new)) and
             os.path.exists(blob_path(cdir, dn)),
             what="the second blob cached once the first is unpinned")
    wait_for(lambda: not os.path.exists(blob_path(cdir, dh)),
             what="the idle entry evicted")


# --- 4. the Content-Type of a cached manifest ----------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _oci_manifest(reg, repo, media_type):
    """An OCI image manifest whose blobs are in `reg`, with a mediaType
    field only when `media_type`."""
    config = b'{"architecture":"amd64","os":"linux",' \
        b'"rootfs":{"type":"layers","diff_ids":[]}}'
    layer = os.urandom(1000)
    m = {"schemaVersion": 2,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": push_blob(reg, repo, config),
                    "size": len(config)},
         "layers": [{"mediaType":
                     "application/vnd.oci.image.layer.v1.tar+gzip",
                     "digest": push_blob(reg, repo, layer),
                     "size": len(layer)}]}
    if media_type:
        m["mediaType"] = OCI_MANIFEST
    return json.dumps(m).encode()


def _manifest_get(gw, prefix, d):
    with session() as s:
        r = s.get("%s/v2/%s/app/manifests/%s" % (gw.url, prefix, d),
                  headers={"Accept": "%s, %s, %s" % (OCI_MANIFEST, OCI_INDEX,
                                                     DOCKER_MANIFEST)},
                  timeout=30)
    assert r.status_code == 200, r.text
    assert sha256(r.content) == d
    return r.headers["Content-Type"]


def test_cached_manifest_type_is_its_own_media_type(liar, start_registry,
                                                     start_gateway,
                                                     tmp_path):
    """A manifest with a mediaType, filled first through an upstream that
    labels it with another type: a hit through any upstream is served as
    its mediaType says, not as the first upstream said."""
    reg = start_registry("up1")
    data = _oci_manifest(reg, "app", media_type=True)
    d = push_manifest(reg, "app", "v1", data, OCI_MANIFEST)
    assert liar.set_tag("app", "v1", data, DOCKER_MANIFEST) == d
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    _manifest_get(gw, "liar", d)
    wait_for(lambda: os.path.exists(manifest_path(cdir, d)),
             what="the manifest published")
    m = reg.mark()
    assert _manifest_get(gw, "up1", d) == OCI_MANIFEST
    assert _manifest_get(gw, "liar", d) == OCI_MANIFEST
    # The registry sent it once itself: another upstream's copy is not
    # served on its HEAD's word (test_cache_links.py); then both are hits.
    assert [e["method"] for e in reg.access_log(since=m)
            if e["path"] == "/v2/app/manifests/" + d] == ["GET"]
    assert liar.requests("GET", "/v2/app/manifests/" + d) == 1


def test_cached_manifest_without_media_type_keeps_each_upstreams_type(
        liar, start_registry, start_gateway, tmp_path):
    """A manifest without a mediaType has no type of its own: a request
    through another upstream than the one that filled it gets that
    upstream's Content-Type, never the first upstream's."""
    reg = start_registry("up1")
    data = _oci_manifest(reg, "app", media_type=False)
    d = push_manifest(reg, "app", "v1", data, OCI_MANIFEST)
    with session() as s:
        r = s.get("%s/v2/app/manifests/%s" % (reg.url, d), headers={
            "Accept": OCI_MANIFEST}, timeout=30)
    real = r.headers["Content-Type"]
    assert real == OCI_MANIFEST
    assert liar.set_tag("app", "v1", data, OCI_INDEX) == d
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    assert _manifest_get(gw, "liar", d) == OCI_INDEX
    wait_for(lambda: os.path.exists(manifest_path(cdir, d)),
             what="the manifest published")
    assert _manifest_get(gw, "up1", d) == real
    assert _manifest_get(gw, "up1", d) == real
    assert _manifest_get(gw, "liar", d) == OCI_INDEX
    assert gw.alive()


def test_fills_abandoned_after_the_head_evict_nothing(liar, start_gateway,
                                                      tmp_path):
    """One client asks for blobs that each pass admission, holds their
    heads at once and leaves: the fills are cancelled with a few bytes on
    disk, and the published entries, which were never short of room for
    what was actually written, are all still there."""
    size = 4 * MIB
    cdir = tmp_path / "c"
    kept = [liar.add_blob(os.urandom(3 * MIB)) for _ in range(3)]
    ds = [liar.add_blob(os.urandom(size), mode="stall", stall_at=65536)
          for _ in range(3)]
    gw = start_gateway(gateway_config(
        liar_upstream(liar),
        cache=cache_cfg(cdir, max_bytes=16 * MIB, fill_max_fraction=0.25)))
    for d in kept:
        assert fetch("%s/v2/liar/app/blobs/%s" % (gw.url, d))[:3] == \
            (200, d, 3 * MIB)
        wait_for(lambda: os.path.exists(blob_path(cdir, d)),
                 what="a kept blob published")
    socks = []
    try:
        for d in ds:
            s, st, _ = get_head(gw, "/v2/liar/app/blobs/" + d)
            socks.append(s)
            assert st == 200
        wait_for(lambda: tmp_bytes(cdir) >= 3 * 65536,
                 what="the fills at their stall")
    finally:
        for s in socks:
            # Abruptly (RST), as a client that gives up does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            s.close()
    wait_for(lambda: gw.log_text().count("fill_cancelled") == 3,
             what="the abandoned fills cancelled")
    wait_for(lambda: tmp_files(cdir) == [], what="tmp/ emptied")
    assert [d for d in kept if not os.path.exists(blob_path(cdir, d))] == []
    assert "cache evicted" not in gw.log_text()


@pytest.mark.parametrize("rng", [None, "bytes=0-0"])
def test_client_that_sends_and_closes_does_not_keep_a_fill(liar,
                                                           start_gateway,
                                                           tmp_path, rng):
    """A client that sends its request and closes cleanly (FIN) is gone
    for its fill too: with a Range it waits for verification and writes
    nothing, so only the FIN tells.  Fails before the change with a
    Range: the fill ran on until the upstream timeout."""
    cdir = tmp_path / "c"
    d = liar.add_blob(os.urandom(4 * MIB), mode="stall", stall_at=MIB)
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    req = "GET /v2/liar/app/blobs/%s HTTP/1.1\r\nHost: x\r\n" % d
    if rng:
        req += "Range: %s\r\n" % rng
    s.sendall((req + "\r\n").encode())
    wait_for(lambda: "fill_start" in gw.log_text(), what="fill started")
    wait_for(lambda: liar.answering() == 1, what="at the upstream")
    s.close()
    wait_for(lambda: "fill_cancelled" in gw.log_text() or
             "fill_done" in gw.log_text() or
             "fill_failed" in gw.log_text(), timeout=30, what="fill ends")
    assert "fill_cancelled" in gw.log_text()
    assert not os.path.exists(blob_path(cdir, d))


# --- followers see the bytes on disk in bounded time ------------------

class BodyReader(threading.Thread):
    """Reads a response body after get_head() until the gateway closes or
    `length` bytes came; `n` is what came so far."""

    def __init__(self, s, buf):
        super().__init__(daemon=True)
        self.s = s
        head, body = buf.split(b"\r\n\r\n", 1)
        self.length = None
        for line in head.split(b"\r\n")[1:]:
            k, v = line.split(b":", 1)
            if k.strip().lower() == b"content-length":
                self.length = int(v)
        self.h = hashlib.sha256(body)
        self.n = len(body)
        self.start()

    def run(self):
        self.s.settimeout(STALL_READ_MAX)
        try:
            while self.n < self.length:
                chunk = self.s.recv(1 << 20)
                if not chunk:
                    break
                self.h.update(chunk)
                self.n += len(chunk)
        except OSError:
            pass
        self.s.close()


STALL_READ_MAX = 90     # seconds a BodyReader waits for a byte at most


@pytest.mark.parametrize("mode", ["stall", "stall_wrong"])
def test_followers_get_bytes_on_disk_while_the_upstream_stalls(
        liar, start_gateway, tmp_path, mode):
    """Clients of a fill get its bytes on disk even while the upstream
    stalls short of a send step (CR_MIN_STEP, 1 MiB): the client that
    started the fill and one that joined after the stall, never the last
    byte before the digest matched, and after a lie an incomplete body.
    A client left with a head and nothing more for as long as the
    upstream dawdles is cut by its own (or a proxy's) read timeout.
    Fails before the fix: no body byte comes until the release."""
    size = 4 * MIB
    stall = 512 * 1024
    data = os.urandom(size)
    d = liar.add_blob(data, mode=mode, stall_at=stall)
    cdir = tmp_path / "c"
    # The stall outlasts nothing but the steps below, however loaded.
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir),
                                      timeouts={"upstream_connect": 2,
                                                "upstream_response": 60}))
    path = "/v2/liar/app/blobs/" + d
    s1, st1, buf1 = get_head(gw, path)
    assert st1 == 200
    first = BodyReader(s1, buf1)
    wait_for(lambda: tmp_bytes(cdir) >= stall, what="the fill stalled")
    s2, st2, buf2 = get_head(gw, path)
    assert st2 == 200
    joined = BodyReader(s2, buf2)
    for r in (first, joined):
        assert r.length == size
        wait_for(lambda: r.n >= stall, timeout=30,
                 what="the bytes on disk at the client")
    assert liar.answering() == 1
    assert liar.requests("GET", "/v2/app/blobs/" + d) == 1
    assert first.n == stall and joined.n == stall
    liar.release(d)
    for r in (first, joined):
        r.join(STALL_READ_MAX + 10)
        assert not r.is_alive()
    if mode == "stall":
        for r in (first, joined):
            assert (r.n, "sha256:" + r.h.hexdigest()) == (size, d)
        assert os.path.getsize(blob_path(cdir, d)) == size
    else:
        for r in (first, joined):
            assert r.n < size
        assert not os.path.exists(blob_path(cdir, d))


EDGE_SIZES = [1, 16383, 16385, 32769, 65537, 262143, MIB - 1, MIB, MIB + 1,
              3 * MIB + 7]


@pytest.mark.parametrize("watermark", [16384, 262144])
def test_fill_sizes_at_the_batch_pause_and_step_edges(start_registry,
                                                      start_gateway,
                                                      tmp_path, watermark):
    """Blobs around a watermark, the digest batch (2 watermarks), the
    pause (4) and the send step (1 MiB), under the smallest and the
    default buffers.high_watermark with one digest thread for all fills:
    every fill completes (no pause left without a resume, no batch left
    unhashed), each client gets exactly the blob, one upstream GET each,
    though three clients ask at once."""
    reg = start_registry("up1")
    blobs = {}
    for n in EDGE_SIZES:
        data = os.urandom(n)
        blobs[push_blob(reg, "app", data)] = n
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        buffers={"high_watermark": watermark},
        # One client address asks for all ten at once: past
        # max_fills_per_client (8) a miss is passed through uncached.
        cache=cache_cfg(cdir, digest_threads=1,
                        max_fills_per_client=64)))
    m = reg.mark()
    jobs = [d for d in blobs for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        got = list(ex.map(lambda d: fetch("%s/v2/up1/app/blobs/%s" %
                                          (gw.url, d))[:3], jobs))
    for d, r in zip(jobs, got):
        assert r == (200, d, blobs[d])
    for d, n in blobs.items():
        assert len(blob_gets(reg, "/v2/app/blobs/" + d, m)) == 1, n
        assert os.path.getsize(blob_path(cdir, d)) == n


def fetch_or_cut(url):
    """(status, digest of what came, bytes that came); a cut transfer is
    what came before the cut."""
    h = hashlib.sha256()
    n, st = 0, 0
    try:
        with session() as s:
            r = s.get(url, timeout=60, stream=True)
            st = r.status_code
            for chunk in r.iter_content(1 << 16):
                h.update(chunk)
                n += len(chunk)
    except Exception:  # noqa: BLE001 - a cut body is what we look for
        pass
    return st, "sha256:" + h.hexdigest(), n


@pytest.mark.parametrize("size", [1000, 300 * 1024, MIB + 1])
@pytest.mark.parametrize("mode", ["wrong", "truncate", "reset", "extra"])
def test_lying_upstream_below_and_above_the_batch(liar, start_gateway,
                                                  tmp_path, mode, size):
    """A lie in a blob smaller than a digest batch (the end alone wakes
    the digest thread), one between the batch and the pause, and one past
    the send step: no client gets a complete body of wrong, short or
    reset bytes, nothing is cached; bytes past Content-Length ("extra")
    are not part of the blob.  Two clients at once."""
    data = os.urandom(size)
    d = liar.add_blob(data, mode=mode)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(liar_upstream(liar),
                                      cache=cache_cfg(cdir)))
    url = "%s/v2/liar/app/blobs/%s" % (gw.url, d)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        got = list(ex.map(fetch_or_cut, [url, url]))
    # A lie fails the fill: a client that came after it fetches anew.
    gets = liar.requests("GET", "/v2/app/blobs/" + d)
    assert gets == 1 or (mode != "extra" and gets == 2)
    if mode == "extra":
        assert got == [(200, d, size)] * 2
        assert os.path.getsize(blob_path(cdir, d)) == size
        return
    for st, got_d, n in got:
        assert st != 200 or n < size, (st, n)
        assert got_d != d
    wait_for(lambda: "cache fill_failed" in gw.log_text(),
             what="fill failure logged")
    assert not os.path.exists(blob_path(cdir, d))


def test_clients_leaving_fills_paused_on_the_hash_queue(start_registry,
                                                        start_gateway,
                                                        tmp_path):
    """With the smallest watermark and one digest thread a fill pauses
    its upstream read on the hash queue at every few reads; clients that
    leave at any point cancel fills while paused, between batch and pause
    or at the end.  The gateway (built with sanitizers in tests) lives on,
    leaves no temp file, and serves the blob whole afterwards."""
    reg = start_registry("up1")
    data = os.urandom(6 * MIB)
    d = push_blob(reg, "app", data)
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        buffers={"high_watermark": 16384}, log={"level": "debug"},
        cache=cache_cfg(cdir, digest_threads=1,
                        fill_finish_fraction=1.0)))
    path = "/v2/up1/app/blobs/" + d
    for i in range(24):
        s, st, buf = get_head(gw, path)
        assert st == 200
        want = (i * 263 * 1024) % (4 * MIB)
        n = len(buf)
        while n < want:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            n += len(chunk)
        s.close()
        assert gw.alive()
    wait_for(lambda: tmp_files(cdir) == [] or os.path.exists(
        blob_path(cdir, d)), what="cancelled fills cleaned up")
    assert fetch("%s%s" % (gw.url, path))[:3] == (200, d, len(data))
    assert gw.alive()
    log = gw.log_text()
    assert "AddressSanitizer" not in log and "runtime error" not in log
    assert "fill_cancelled" in log
    assert "cache fill_resume" in log      # it did pause
