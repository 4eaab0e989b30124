"""Helpers the cache tests share: the cache section of a gateway config,
where a cached blob lives on disk, what tmp/ holds, an HTTP session
that ignores the proxy environment (everything here is on loopback), a
blob pushed straight to a registry and a whole body fetched."""

import hashlib
import os
import urllib.parse

import requests


def cache_cfg(d, **kw):
    """A gateway "cache" section in directory d, 1 GiB, plus kw."""
    c = {"dir": str(d), "max_bytes": 1 << 30}
    c.update(kw)
    return c


def blob_path(cdir, digest):
    alg, hexd = digest.split(":")
    return os.path.join(str(cdir), "blobs", alg, hexd[:2], hexd)


def tmp_files(cdir):
    return os.listdir(os.path.join(str(cdir), "tmp"))


def session():
    s = requests.Session()
    s.trust_env = False
    return s


def push_blob(reg, repo, data, timeout=120):
    """Monolithic upload of `data` straight to the registry at reg.url (no
    gateway); returns the digest."""
    with session() as s:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r = s.post("%s/v2/%s/blobs/uploads/" % (reg.url, repo), timeout=30)
        assert r.status_code == 202, r.text
        loc = urllib.parse.urljoin(reg.url + "/", r.headers["Location"])
        r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + d,
                  data=data, headers={"Content-Type":
                                      "application/octet-stream"},
                  timeout=timeout)
        assert r.status_code == 201, r.text
        return d


def fetch(url, headers=None, timeout=120):
    """GET the whole body: (status, digest of the body, length, headers)."""
    with session() as s:
        r = s.get(url, headers=headers or {}, timeout=timeout, stream=True)
        h = hashlib.sha256()
        n = 0
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return r.status_code, "sha256:" + h.hexdigest(), n, r.headers
