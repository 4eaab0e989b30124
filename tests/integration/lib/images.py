"""Build OCI image layouts on disk with no network: real gzip'd tar
layers, config JSON, image manifests and (for several platforms) an image
index.  Content is deterministic for a given seed, so two builds with the
same arguments give the same digests.

skopeo pushes a layout with
    skopeo copy --all --dest-tls-verify=false oci:<dir>:<tag> docker://H/R:T
"""

import gzip
import hashlib
import io
import json
import os
import random
import tarfile

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

_TYPES = {
    "oci": (OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
    "docker": (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
}

HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine,
                                                       os.uname().machine)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """What make_oci_layout built.  dir, tag, ref ("oci:<dir>:<tag>"),
    digest (the top manifest or index digest the tag points to),
    media_type of that top document, is_index, images (list of dicts:
    os, arch, digest, manifest (bytes), config_digest, config (bytes),
    layers [{digest, size, diff_id}]), blobs {digest: bytes-length}."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def ref(self):
        """The skopeo source reference: oci:<dir>:<tag>, or for
        media="docker" the dir: transport copy (the oci transport only
        accepts OCI media types in index.json)."""
        if self.media == "docker":
            return "dir:%s" % os.path.join(self.dir, "dir-" + self.tag)
        return "oci:%s:%s" % (self.dir, self.tag)

    def image(self, os_="linux", arch=HOST_ARCH):
        for im in self.images:
            if im["os"] == os_ and im["arch"] == arch:
                return im
        raise KeyError((os_, arch))

    def all_digests(self):
        """Every blob and manifest digest of the image (what a full copy
        must transfer)."""
        return set(self.blobs)

    def read_blob(self, digest):
        with open(os.path.join(self.dir, "blobs", *digest.split(":")),
                  "rb") as f:
            return f.read()


def _layer_bytes(seed, size, label):
    """A gzip'd tar holding a small text file and `size` pseudo-random
    (incompressible) bytes; returns (gz_bytes, tar_bytes)."""
    rnd = random.Random(seed)
    files = [("etc/portcullis-test.txt",
              ("layer %s seed %s\n" % (label, seed)).encode())]
    if size > 0:
        files.append(("data/blob-%s.bin" % label, rnd.randbytes(size)))
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in sorted({os.path.dirname(n) for n, _ in files}):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = 0
            t.addfile(ti)
        for n, data in files:
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
    tar = tbuf.getvalue()
    gbuf = io.BytesIO()
    with gzip.GzipFile(fileobj=gbuf, mode="wb", mtime=0,
                       compresslevel=1) as g:
        g.write(tar)
    return gbuf.getvalue(), tar


def make_oci_layout(dir, platforms=(("linux", "amd64"), ("linux", "arm64")),
                    layer_sizes=(1024, 4096), tag="v1", seed="portcullis",
                    media="oci", force_index=None):
    """Write an OCI image layout at `dir` and return a Layout.

    One image per platform, each with len(layer_sizes) layers (the n-th
    holding layer_sizes[n] random bytes plus a small text file).  With
    more than one platform (or force_index=True) the tag points to an image
    index; with one platform to the image manifest itself.  media="docker"
    writes Docker schema2 media types instead of OCI ones (same layout).
    Different `seed`s give different digests."""
    idx_t, man_t, cfg_t, lay_t = _TYPES[media]
    blobdir = os.path.join(dir, "blobs", "sha256")
    os.makedirs(blobdir, exist_ok=True)
    blobs = {}

    def put(data):
        d = sha256(data)
        p = os.path.join(blobdir, d.split(":")[1])
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        blobs[d] = len(data)
        return d

    images = []
    for os_, arch in platforms:
        layers = []
        for i, size in enumerate(layer_sizes):
            gz, tar = _layer_bytes("%s/%s/%s/%d" % (seed, os_, arch, i), size,
                                   "%s-%s-%d" % (os_, arch, i))
            layers.append({"digest": put(gz), "size": len(gz),
                           "diff_id": sha256(tar)})
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch, "os": os_,
            "config": {"Env": ["PATH=/usr/bin:/bin"],
                       "Cmd": ["/bin/true"],
                       "Labels": {"org.portcullis.test.seed": seed}},
            "rootfs": {"type": "layers",
                       "diff_ids": [l["diff_id"] for l in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z",
                         "created_by": "portcullis test layer %d" % i}
                        for i in range(len(layers))],
        }
        cfg = json.dumps(config, sort_keys=True).encode()
        cfg_d = put(cfg)
        manifest = {"schemaVersion": 2, "mediaType": man_t,
                    "config": {"mediaType": cfg_t, "digest": cfg_d,
                               "size": len(cfg)},
                    "layers": [{"mediaType": lay_t, "digest": l["digest"],
                                "size": l["size"]} for l in layers]}
        mb = json.dumps(manifest, sort_keys=True, indent=2).encode()
        md = put(mb)
        images.append({"os": os_, "arch": arch, "digest": md, "manifest": mb,
                       "size": len(mb), "config_digest": cfg_d, "config": cfg,
                       "layers": layers})

    use_index = force_index if force_index is not None else len(images) > 1
    if use_index:
        index = {"schemaVersion": 2, "mediaType": idx_t,
                 "manifests": [{"mediaType": man_t, "digest": im["digest"],
                                "size": im["size"],
                                "platform": {"architecture": im["arch"],
                                             "os": im["os"]}}
                               for im in images]}
        top = json.dumps(index, sort_keys=True, indent=2).encode()
        top_d, top_t = put(top), idx_t
    else:
        top, top_d, top_t = images[0]["manifest"], images[0]["digest"], man_t

    # index.json names the tagged document; keep earlier tags in the same
    # layout so several tags can share one directory.
    ipath = os.path.join(dir, "index.json")
    entries = []
    if os.path.exists(ipath):
        with open(ipath) as f:
            entries = [m for m in json.load(f).get("manifests", [])
                       if m.get("annotations", {}).get(
                           "org.opencontainers.image.ref.name") != tag]
    entries.append({"mediaType": top_t, "digest": top_d, "size": len(top),
                    "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(ipath, "w") as f:
        json.dump({"schemaVersion": 2, "manifests": entries}, f, indent=2)
    with open(os.path.join(dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    if media == "docker":
        # containers/image "dir:" transport, version 1.1: manifest.json is
        # the top document, instance manifests are <hex>.manifest.json,
        # blobs are <hex>.  Hard links share the bytes with blobs/.
        tdir = os.path.join(dir, "dir-" + tag)
        os.makedirs(tdir, exist_ok=True)
        with open(os.path.join(tdir, "version"), "w") as f:
            f.write("Directory Transport Version: 1.1\n")
        with open(os.path.join(tdir, "manifest.json"), "wb") as f:
            f.write(top)
        for d in blobs:
            hexd = d.split(":")[1]
            src = os.path.join(blobdir, hexd)
            dst = os.path.join(tdir, hexd)
            if use_index and any(im["digest"] == d for im in images):
                dst += ".manifest.json"
            if not os.path.exists(dst):
                os.link(src, dst)
    return Layout(dir=dir, tag=tag, digest=top_d, media_type=top_t,
                  document=top, is_index=use_index, images=images,
                  blobs=blobs, media=media)


def read_layout(dir, tag=None):
    """Digests found in an OCI layout written by a client (e.g. skopeo copy
    to oci:DIR:TAG): returns (top_digest, {digest: sha256-of-content-ok})
    where the dict maps every blob file present to whether its content
    hashes to its name."""
    with open(os.path.join(dir, "index.json")) as f:
        idx = json.load(f)
    top = None
    for m in idx.get("manifests", []):
        name = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if tag is None or name == tag:
            top = m["digest"]
    found = {}
    bdir = os.path.join(dir, "blobs", "sha256")
    for n in os.listdir(bdir):
        with open(os.path.join(bdir, n), "rb") as f:
            found["sha256:" + n] = hashlib.sha256(f.read()).hexdigest() == n
    return top, found
