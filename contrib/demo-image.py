#!/usr/bin/python3
"""demo-image.py DIR: write a tiny runnable OCI image layout to DIR (tag
"latest") without any network: one layer holding Debian's static busybox
as /bin/busybox (and /bin/sh), a config whose command prints a greeting.
The quick start pushes it into its local demo upstream with skopeo."""

import gzip
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

BUSYBOX = "/bin/busybox"


def blob(root, data):
    d = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", d)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def layer_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ("bin", "tmp"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            t.addfile(ti)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
        t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("bin/sh")
        ti.type, ti.linkname, ti.mode, ti.mtime = (tarfile.SYMTYPE,
                                                   "busybox", 0o777, 0)
        t.addfile(ti)
    return buf.getvalue()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: demo-image.py DIR")
    if not os.path.exists(BUSYBOX):
        sys.exit("demo-image.py: %s missing (apt-get install "
                 "busybox-static)" % BUSYBOX)
    root = sys.argv[1]
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    tar = layer_tar()
    gz = gzip.compress(tar, mtime=0)
    layer = blob(root, gz)
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                       platform.machine())
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "echo",
                           "hello through portcullis"]},
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(tar).hexdigest()]},
    }, sort_keys=True).encode()
    cfg = blob(root, config)
    cfg["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg, "layers": [layer]}, sort_keys=True).encode()
    man = blob(root, manifest)
    man["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    man["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    man["platform"] = {"architecture": arch, "os": "linux"}
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [man]}, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
