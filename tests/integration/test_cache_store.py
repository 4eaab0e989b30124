"""The cache's files against a hostile neighbourhood: a client that runs
the gateway out of descriptors, a symbolic link planted where tmp/ should
be, and a push that fails upstream.  Real docker-registry upstream, skopeo
pushing the images; the witnesses are the files under the cache directory,
the gateway's log and the registry's access log."""

import os
import resource
import socket

import pytest

from lib import rawhttp
from lib.cache import cache_cfg, session
from lib.gateway import gateway_config, upstream
from lib.images import HOST_ARCH

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def store_image(image_factory):
    return image_factory("store-app", platforms=[("linux", HOST_ARCH)],
                         seed="store-app")


def _push(skopeo, reg, image, ref):
    skopeo("copy", "--dest-tls-verify=false", image.ref,
           "docker://%s/%s" % (reg.host, ref))


def _first_blob(s, gw, name, tag):
    r = s.get("%s/v2/%s/manifests/%s" % (gw.url, name, tag),
              headers={"Accept": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["layers"][0]["digest"]


def test_a_client_exhausting_descriptors_does_not_drop_cached_blobs(
        start_registry, start_gateway, skopeo, store_image, tmp_path):
    """A cached blob that cannot be opened for want of a descriptor is a
    miss this time, not a damaged entry whose file is deleted.  Fails
    before the change: "entry_damaged ... dropped" and the file gone."""
    reg = start_registry("up1")
    _push(skopeo, reg, store_image, "fd/app:v1")
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)))
    with session() as s:
        d = _first_blob(s, gw, "up1/fd/app", "v1")
        r = s.get("%s/v2/up1/fd/app/blobs/%s" % (gw.url, d), timeout=30)
        assert r.status_code == 200
    path = cdir / "blobs" / "sha256" / d[7:9] / d[7:]
    assert path.exists()
    a = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    try:
        a.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert a.recv(65536).startswith(b"HTTP/1.1 ")
        used = {int(x) for x in os.listdir("/proc/%d/fd" % gw.pid)}
        lowest = min(set(range(len(used) + 1)) - used)
        soft, hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            a.sendall(("GET /v2/up1/fd/app/blobs/%s HTTP/1.1\r\n"
                       "Host: x\r\n\r\n" % d).encode())
            assert a.recv(65536).startswith(b"HTTP/1.1 ")
        finally:
            resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        a.close()
    assert path.exists()
    assert "entry_damaged" not in gw.log_text()
    with session() as s:
        r = s.get("%s/v2/up1/fd/app/blobs/%s" % (gw.url, d), timeout=30)
        assert r.status_code == 200


def test_a_symlinked_tmp_is_refused_not_emptied(start_registry,
                                                start_gateway, tmp_path):
    """tmp/ is emptied at start; when it is a link the gateway refuses to
    start instead of deleting what the link points at.  Fails before the
    change: the victim's file is deleted and the gateway starts."""
    reg = start_registry("up1")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    cdir = tmp_path / "c"
    cdir.mkdir()
    os.symlink(str(victim), str(cdir / "tmp"))
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir)),
                       expect_fail=True)
    assert gw.returncode not in (None, 0)
    assert (victim / "precious").read_text() == "keep me\n"
    assert "tmp" in gw.log_text()


def test_a_refused_manifest_delete_keeps_the_tag_record(
        start_registry, start_gateway, skopeo, store_image, tmp_path):
    """Only a push or delete the upstream accepted moves a tag: a DELETE
    the registry refuses (400: deleting by tag) leaves the record, and the
    next pull within tag_ttl asks the upstream nothing.  Fails before the
    change: the record is dropped when the DELETE is sent."""
    reg = start_registry("up1")
    _push(skopeo, reg, store_image, "del/app:v1")
    cdir = tmp_path / "c"
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir, tag_ttl=3600)))
    url = "%s/v2/up1/del/app/manifests/v1" % gw.url
    with session() as s:
        assert s.get(url, headers={"Accept": OCI_MANIFEST},
                     timeout=30).status_code == 200
        r = s.delete(url, timeout=30)
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        mark = reg.mark()
        r = s.get(url, headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200
    after = [e for e in reg.access_log(since=mark)
             if "/manifests/" in e["path"]]
    assert after == [], after


@pytest.mark.parametrize("memory_bytes", [None, 0])
def test_small_manifests_are_served_from_memory_until_the_store_changes(
        start_registry, start_gateway, skopeo, store_image, tmp_path,
        memory_bytes):
    """cache.memory_bytes: a small cached manifest is kept in memory, so a
    hit reads no file -- a copy of the cache file overwritten on disk
    (same size, garbage) is still served right and the upstream is not
    asked.  Once any file is published into the store (here a blob's
    fill) the copy is not used any more: the file is read again, found
    damaged, dropped and fetched again.  With memory_bytes 0 every hit
    reads the file (the damage is found at once).  Fails without the
    copy (the upstream is asked at once with the default) and without the
    store's generation check (the damaged file is never looked at)."""
    reg = start_registry("up1")
    _push(skopeo, reg, store_image, "mem/app:v1")
    cdir = tmp_path / "c"
    extra = {} if memory_bytes is None else {"memory_bytes": memory_bytes}
    gw = start_gateway(gateway_config(upstream(reg, prefix="up1"),
                                      cache=cache_cfg(cdir, **extra)))
    base = "%s/v2/up1/mem/app" % gw.url
    hdr = {"Accept": OCI_MANIFEST}
    with session() as s:
        r = s.get(base + "/manifests/v1", headers=hdr, timeout=30)
        assert r.status_code == 200, r.text
        body, digest = r.content, r.headers["Docker-Content-Digest"]
        layer = r.json()["layers"][0]["digest"]
        for _ in range(2):
            r = s.get(base + "/manifests/" + digest, headers=hdr, timeout=30)
            assert r.status_code == 200 and r.content == body
        path = cdir / "manifests" / "sha256" / digest[7:9] / digest[7:]
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(b"x" * size)

        def manifest_gets(mark):
            return [e for e in reg.access_log(since=mark)
                    if e["method"] == "GET" and
                    e["path"].endswith("/manifests/" + digest)]

        mark = reg.mark()
        r = s.get(base + "/manifests/" + digest, headers=hdr, timeout=30)
        assert r.status_code == 200 and r.content == body
        if memory_bytes is None:
            assert manifest_gets(mark) == []
            assert "entry_damaged" not in gw.log_text()
            # A file published into the store: the copy is not used now.
            r = s.get(base + "/blobs/" + layer, timeout=30)
            assert r.status_code == 200
            mark = reg.mark()
            r = s.get(base + "/manifests/" + digest, headers=hdr,
                      timeout=30)
            assert r.status_code == 200 and r.content == body
        assert len(manifest_gets(mark)) == 1
        assert "entry_damaged" in gw.log_text()


def test_pipelined_hits_and_a_framing_error_come_out_in_order(
        start_registry, start_gateway, skopeo, store_image, tmp_path):
    """What one read of a plain connection answers is staged and written
    at its end (conn.c): pipelined cache hits, a local answer and a
    framing error (answered without a request object, then the
    connection closed after it) must reach the client whole and in
    order, a copied blob among them.  Fails if the error overtakes the
    staged answers or the close comes before them."""
    reg = start_registry("up1")
    _push(skopeo, reg, store_image, "pipe/app:v1")
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(tmp_path / "c", sendfile="off")))
    base = "/v2/up1/pipe/app"
    with session() as s:
        r = s.get(gw.url + base + "/manifests/v1",
                  headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200, r.text
        body, digest = r.content, r.headers["Docker-Content-Digest"]
        layer = r.json()["layers"][0]["digest"]
        blob = s.get(gw.url + base + "/blobs/" + layer, timeout=30).content
        assert len(blob) > 0
    hdr = [("Accept", OCI_MANIFEST)]
    reqs = (rawhttp.build("GET", base + "/manifests/" + digest, hdr,
                          host=gw.host) +
            rawhttp.build("GET", base + "/blobs/" + layer, host=gw.host) +
            rawhttp.build("GET", "/v2/", host=gw.host) +
            rawhttp.build("GET", base + "/manifests/" + digest, hdr,
                          host=gw.host) +
            b"GET /v2/ HTTP/1.1\r\nHost: x\nX: y\r\n\r\n")
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=30) as c:
        c.send(reqs)
        r = c.read_response()
        assert r.status == 200 and r.body == body, r
        r = c.read_response()
        assert r.status == 200 and r.body == blob, r
        r = c.read_response()
        assert r.status == 200, r
        r = c.read_response()
        assert r.status == 200 and r.body == body, r
        r = c.read_response()
        assert r.status == 400, r
        assert c.wait_closed(timeout=30)


@pytest.mark.parametrize("kind", ["hit", "local", "error"])
def test_a_pipelining_client_that_never_reads_does_not_grow_memory(
        start_registry, start_gateway, skopeo, store_image, tmp_path, kind):
    """A client that pipelines requests answered at once (a cache hit,
    the gateway's own /v2/, a local 400) and never reads its answers: the
    gateway must stop starting requests once its output holds
    buffers.high_watermark, not queue answers without bound, and go on
    once the client reads.  Fails before the fix for local answers and
    errors: 64 MiB of requests grew the gateway by 210-290 MiB (main too,
    not only with conn.c's staging)."""
    reg = start_registry("up1")
    _push(skopeo, reg, store_image, "slow/app:v1")
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"), cache=cache_cfg(tmp_path / "c"),
        buffers={"high_watermark": 65536}))
    base = "/v2/up1/slow/app"
    with session() as s:
        r = s.get(gw.url + base + "/manifests/v1",
                  headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200, r.text
        digest = r.headers["Docker-Content-Digest"]
    one = {"hit": rawhttp.build("GET", base + "/manifests/" + digest,
                                [("Accept", OCI_MANIFEST)], host=gw.host),
           "local": rawhttp.build("GET", "/v2/", host=gw.host),
           "error": rawhttp.build("GET", "/v2/UPPER/manifests/t",
                                  host=gw.host)}[kind]
    chunk = one * ((1 << 20) // len(one))
    rss0 = gw.rss_kib()
    sent = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # A fixed receive buffer: not grown by the kernel as it reads.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.connect(("127.0.0.1", gw.port))
        sock.settimeout(5)
        # Bounded: 64 MiB of requests (each answer larger than it).
        while sent < (64 << 20):
            try:
                sock.sendall(chunk)
            except socket.timeout:
                break           # the gateway stopped reading: bounded
            sent += len(chunk)
        grown = gw.rss_kib() - rss0
        assert grown < 32 << 10, (sent, grown)
        # It goes on once the client reads: more answers than the
        # buffers on the way (sockets, output) could have held.
        sock.settimeout(30)
        got = 0
        while got < (8 << 20):
            n = len(sock.recv(1 << 16))
            assert n > 0, got
            got += n
    finally:
        sock.close()


def test_a_cached_blob_hit_goes_out_with_sendfile(
        start_registry, start_gateway, skopeo, store_image, tmp_path):
    """cache.sendfile on: a cached blob is sent with sendfile(2), also
    when the hit is answered within the read that brought the request
    (conn.c stages those answers in a buffer of its own, from which
    libevent would map the file and writev it instead).  Checked on
    strace's record of the gateway's system calls.  Fails before the fix:
    only the first (miss) used sendfile; the hits were mmap + writev."""
    import subprocess
    from lib.util import wait_for
    reg = start_registry("up1")
    _push(skopeo, reg, store_image, "sf/app:v1")
    gw = start_gateway(gateway_config(
        upstream(reg, prefix="up1"),
        cache=cache_cfg(tmp_path / "c", sendfile="on")))
    base = gw.url + "/v2/up1/sf/app"
    with session() as s:
        r = s.get(base + "/manifests/v1", headers={"Accept": OCI_MANIFEST},
                  timeout=30)
        big = max(r.json()["layers"], key=lambda x: x["size"])
        assert len(s.get(base + "/blobs/" + big["digest"],
                         timeout=30).content) == big["size"]
    out = tmp_path / "strace.out"
    st = subprocess.Popen(["strace", "-f", "-qq", "-e",
                           "trace=sendfile,writev,write", "-o", str(out),
                           "-p", str(gw.pid)], stderr=subprocess.PIPE)
    try:
        def attached():
            with session() as s2:
                s2.get(gw.url + "/v2/", timeout=10)
            return out.exists() and "write" in out.read_text()
        wait_for(attached, timeout=30, what="strace attached")
        mark = len(out.read_text())
        with session() as s:
            for _ in range(3):
                b = s.get(base + "/blobs/" + big["digest"], timeout=30)
                assert b.status_code == 200
                assert len(b.content) == big["size"]
        wait_for(lambda: out.read_text()[mark:].count("sendfile(") >= 3,
                 timeout=10, what="three sendfile calls")
    finally:
        st.terminate()
        st.wait(timeout=30)
