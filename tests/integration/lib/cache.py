"""Helpers the cache tests share: the cache section of a gateway config,
where a cached blob lives on disk, what tmp/ holds, and an HTTP session
that ignores the proxy environment (everything here is on loopback)."""

import os

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
