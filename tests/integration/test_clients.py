"""Real clients through the gateway: skopeo (multi-platform push and pull,
byte-for-byte), podman push/pull, containerd's ctr with a hosts.toml mirror
(ns= routing between two upstreams), dockerd with registry-mirrors, and raw
upload flows (cross-repository mount, chunked PATCH uploads)."""

import hashlib
import os
import urllib.parse

import pytest

from lib.clients import hosts_dir
from lib.gateway import gateway_config, upstream
from lib.images import HOST_ARCH, read_layout
from lib.util import free_port


@pytest.fixture(scope="module")
def stack(start_registry_module, start_gateway_module):
    r1 = start_registry_module("up1")
    r2 = start_registry_module("up2")
    # up2 also answers for a host name nobody listens on, so a containerd
    # mirror test cannot succeed by falling back to the registry itself.
    alias = "127.0.0.1:%d" % free_port()
    gw = start_gateway_module(gateway_config(
        upstream(r1, prefix="up1", default=True),
        upstream(r2, prefix="up2", hosts=[r2.host, alias])))

    class S:
        pass
    s = S()
    s.r1, s.r2, s.gw, s.alias = r1, r2, gw, alias
    return s


def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def test_skopeo_multiarch_push_and_pull_byte_for_byte(stack, skopeo,
                                                      multiarch_image,
                                                      tmp_path):
    img = multiarch_image
    m1, m2 = stack.r1.mark(), stack.r2.mark()
    skopeo("copy", "--all", "--dest-tls-verify=false", img.ref,
           "docker://%s/up2/proj/multi:v1" % stack.gw.host)

    # What landed upstream, and where.
    log2 = stack.r2.access_log(since=m2)
    assert ("PUT", "/v2/proj/multi/manifests/v1", 201) in [
        (e["method"], e["path"], e["status"]) for e in log2]
    puts = [e for e in log2 if e["method"] == "PUT"]
    assert puts and all(e["path"].startswith("/v2/proj/multi/") for e in puts)
    assert not [e for e in stack.r1.access_log(since=m1)
                if e["path"].startswith("/v2/proj/") or
                e["path"].startswith("/v2/up2/")]
    direct = stack.r2.get_manifest("proj/multi", "v1")
    assert direct.status_code == 200
    assert direct.headers["Docker-Content-Digest"] == img.digest
    for d in img.all_digests():
        if d in [im["digest"] for im in img.images] or d == img.digest:
            continue
        assert stack.r2.has_blob("proj/multi", d), d

    # Pull back through the gateway and straight from the registry.
    via = tmp_path / "via-gw"
    ref = tmp_path / "direct"
    skopeo("copy", "--all", "--src-tls-verify=false",
           "docker://%s/up2/proj/multi:v1" % stack.gw.host, "oci:%s:v1" % via)
    skopeo("copy", "--all", "--src-tls-verify=false",
           "docker://%s/proj/multi:v1" % stack.r2.host, "oci:%s:v1" % ref)
    top_via, blobs_via = read_layout(str(via), "v1")
    top_ref, blobs_ref = read_layout(str(ref), "v1")
    assert top_via == top_ref == img.digest
    assert all(blobs_via.values()), "a pulled blob does not match its digest"
    assert set(blobs_via) == set(blobs_ref) == img.all_digests()
    for d in blobs_via:
        hexd = d.split(":")[1]
        assert (via / "blobs" / "sha256" / hexd).read_bytes() == \
            (ref / "blobs" / "sha256" / hexd).read_bytes()


def test_podman_push_and_pull_through_gateway(stack, skopeo, podman,
                                              single_image):
    img = single_image
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/seed/single:v1" % stack.r1.host)
    podman("pull", "--tls-verify=false",
           "%s/seed/single:v1" % stack.r1.host)
    target = "%s/up1/podman/app:v2" % stack.gw.host
    podman("tag", "%s/seed/single:v1" % stack.r1.host, target)
    m1 = stack.r1.mark()
    podman("push", "--tls-verify=false", target)
    assert "v2" in stack.r1.tags("podman/app")
    pushed = [e for e in stack.r1.access_log(since=m1)
              if e["method"] in ("PUT", "POST", "PATCH")]
    assert pushed and all(e["path"].startswith("/v2/podman/app/")
                          for e in pushed), pushed
    man = stack.r1.get_manifest("podman/app", "v2").json()
    assert man["config"]["digest"] == img.images[0]["config_digest"]

    podman("rmi", "-a", "-f")
    podman("pull", "--tls-verify=false", target)
    out = podman("image", "inspect", "--format", "{{.Id}}", target).stdout
    assert out.strip() == img.images[0]["config_digest"].split(":")[1]


def test_ctr_pull_via_mirror_routes_by_ns(stack, skopeo, single_image,
                                          image_factory, start_containerd):
    img = single_image
    decoy = image_factory("ctr-decoy", platforms=[("linux", HOST_ARCH)],
                          seed="ctr-decoy")
    # Same name on both upstreams, different content: only ns= routing to
    # up2 yields img.
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/ctr/app:v1" % stack.r2.host)
    skopeo("copy", "--dest-tls-verify=false", decoy.ref,
           "docker://%s/ctr/app:v1" % stack.r1.host)
    ctd = start_containerd()
    hosts = hosts_dir(ctd.dir, stack.alias, stack.gw.host)
    m1, m2 = stack.r1.mark(), stack.r2.mark()
    ctd.ctr("images", "pull", "--plain-http", "--hosts-dir", hosts,
            "%s/ctr/app:v1" % stack.alias)
    ls = ctd.ctr("images", "ls").stdout
    assert img.digest in ls, ls
    log2 = stack.r2.access_log(since=m2)
    got_blobs = {e["path"].rsplit("/", 1)[1] for e in log2
                 if e["method"] == "GET" and e["status"] == 200 and
                 e["path"].startswith("/v2/ctr/app/blobs/")}
    im = img.images[0]
    want = {im["config_digest"]} | {l["digest"] for l in im["layers"]}
    assert want <= got_blobs, (want, log2)
    assert all("ns=" not in e["uri"] for e in log2), log2
    assert not [e for e in stack.r1.access_log(since=m1)
                if e["path"].startswith("/v2/ctr/")]
    # containerd percent-encodes the colon: ?ns=127.0.0.1%3A<port>.
    log = stack.gw.log_text()
    assert stack.alias in log or \
        urllib.parse.quote(stack.alias, safe="") in log, log[-2000:]


def test_dockerd_pull_via_registry_mirror(start_registry, start_gateway,
                                          start_dockerd, skopeo,
                                          image_factory):
    hub = start_registry("hub")
    img = image_factory("demo-alpine", platforms=[("linux", HOST_ARCH)],
                        seed="demo-alpine", media="docker")
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/library/demo-alpine:latest" % hub.host)
    gw = start_gateway(gateway_config(
        upstream(hub, prefix="hub", default=True, docker_hub=True)))
    dk = start_dockerd({"registry-mirrors": [gw.url],
                        "max-concurrent-downloads": 3})
    m = hub.mark()
    dk.docker("pull", "demo-alpine:latest")
    image_id = dk.docker("image", "inspect", "--format", "{{.Id}}",
                         "demo-alpine:latest").stdout.strip()
    assert image_id == img.images[0]["config_digest"]
    got = [(e["method"], e["path"]) for e in hub.access_log(since=m)]
    assert any(p.startswith("/v2/library/demo-alpine/manifests/")
               for _, p in got), got
    for l in img.images[0]["layers"]:
        assert ("GET", "/v2/library/demo-alpine/blobs/" + l["digest"]) in got


@pytest.mark.parametrize("prefix", ["up2", None])
def test_cross_repository_mount(stack, skopeo, single_image, http, prefix):
    reg = stack.r2 if prefix else stack.r1
    img = single_image
    skopeo("copy", "--dest-tls-verify=false", img.ref,
           "docker://%s/mnt/src:v1" % reg.host)
    layer = img.images[0]["layers"][0]["digest"]
    pre = prefix + "/" if prefix else ""
    dst = "mnt/dst-%s" % (prefix or "default")
    assert not reg.has_blob(dst, layer)
    # The client names the source repository in its own view of the
    # namespace (with the prefix), as containers/image does.
    r = http.post("%s/v2/%s%s/blobs/uploads/" % (stack.gw.url, pre, dst),
                  params={"mount": layer, "from": pre + "mnt/src"},
                  timeout=30)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers.get("Docker-Content-Digest") == layer
    loc = urllib.parse.urlsplit(urllib.parse.urljoin(stack.gw.url + "/",
                                                     r.headers["Location"]))
    assert loc.netloc == stack.gw.host
    assert loc.path == "/v2/%s%s/blobs/%s" % (pre, dst, layer)
    assert reg.has_blob(dst, layer)


def _start_upload(http, gw, repo):
    r = http.post("%s/v2/%s/blobs/uploads/" % (gw.url, repo), timeout=30)
    assert r.status_code == 202, r.text
    return urllib.parse.urljoin(gw.url + "/", r.headers["Location"])


def _finish_upload(http, gw, url, digest):
    sep = "&" if "?" in url else "?"
    r = http.put(url + sep + "digest=" + urllib.parse.quote(digest),
                 timeout=30)
    assert r.status_code == 201, r.text
    assert r.headers.get("Docker-Content-Digest") == digest
    return r


def test_chunked_upload_with_content_range(stack, http):
    data = os.urandom(3 * 256 * 1024 + 12345)
    digest = "sha256:" + sha256_hex(data)
    url = _start_upload(http, stack.gw, "up2/chunk/app")
    size = 256 * 1024
    off = 0
    while off < len(data):
        part = data[off:off + size]
        r = http.patch(url, data=part, timeout=30, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": "%d-%d" % (off, off + len(part) - 1)})
        assert r.status_code == 202, r.text
        assert r.headers.get("Range") == "0-%d" % (off + len(part) - 1)
        url = urllib.parse.urljoin(stack.gw.url + "/", r.headers["Location"])
        assert urllib.parse.urlsplit(url).netloc == stack.gw.host
        off += len(part)
    _finish_upload(http, stack.gw, url, digest)
    got = http.get("%s/v2/up2/chunk/app/blobs/%s" % (stack.gw.url, digest),
                   timeout=60)
    assert got.status_code == 200
    assert got.content == data
    assert stack.r2.get_blob("chunk/app", digest).content == data


def test_patch_with_transfer_encoding_chunked(stack, http):
    pieces = [os.urandom(n) for n in (1, 70000, 5, 300000, 4096)]
    data = b"".join(pieces)
    digest = "sha256:" + sha256_hex(data)
    url = _start_upload(http, stack.gw, "up2/te/app")

    def gen():
        yield from pieces
    r = http.patch(url, data=gen(), timeout=60,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.headers.get("Range") == "0-%d" % (len(data) - 1)
    url = urllib.parse.urljoin(stack.gw.url + "/", r.headers["Location"])
    _finish_upload(http, stack.gw, url, digest)
    got = http.get("%s/v2/up2/te/app/blobs/%s" % (stack.gw.url, digest),
                   timeout=60)
    assert got.status_code == 200 and got.content == data
    assert stack.r2.get_blob("te/app", digest).content == data
