"""Protocol fidelity (issue 13): the gateway makes Debian's
docker-registry 2.8, which lacks each of these, answer like a current
OCI distribution-spec registry -- DELETE of a manifest by tag, tag list
pagination.  Each test first shows what the registry itself answers (the
witness), then what the gateway answers in front of it.  Real
docker-registry; no test double."""

import hashlib
import json
import urllib.parse

import pytest

from lib.cache import session
from lib.gateway import gateway_config, upstream

MT = "application/vnd.oci.image.manifest.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(reg, repo, data):
    with session() as s:
        d = sha256(data)
        r = s.post("%s/v2/%s/blobs/uploads/" % (reg.url, repo), timeout=30)
        assert r.status_code == 202, r.text
        loc = urllib.parse.urljoin(reg.url + "/", r.headers["Location"])
        r = s.put(loc + ("&" if "?" in loc else "?") + "digest=" + d,
                  data=data, headers={"Content-Type":
                                      "application/octet-stream"},
                  timeout=60)
        assert r.status_code == 201, r.text
        return d


def push_image(reg, repo, tags):
    """A tiny OCI image under each of `tags`; returns its digest."""
    cfg = b'{"architecture":"amd64","os":"linux"}'
    cd = push_blob(reg, repo, cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": MT,
                    "config": {"mediaType":
                               "application/vnd.oci.image.config.v1+json",
                               "digest": cd, "size": len(cfg)},
                    "layers": []}).encode()
    with session() as s:
        for t in tags:
            r = s.put("%s/v2/%s/manifests/%s" % (reg.url, repo, t), data=m,
                      headers={"Content-Type": MT}, timeout=30)
            assert r.status_code == 201, r.text
    return sha256(m)


@pytest.fixture
def reg(start_registry):
    return start_registry("up1")


@pytest.fixture
def gw(reg, start_gateway):
    return start_gateway(gateway_config(upstream(reg, default=True)))


# --- DELETE of a manifest by tag ---------------------------------------

def test_delete_by_tag_is_405_unsupported(reg, gw, http):
    d = push_image(reg, "del/app", ["v1"])
    # The witness: registry 2.8 parses the tag as a digest.
    r = http.delete("%s/v2/del/app/manifests/v1" % reg.url, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    # Through the gateway: the spec's answer for "no deletion by tag".
    r = http.delete("%s/v2/del/app/manifests/v1" % gw.url, timeout=30)
    assert r.status_code == 405, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "UNSUPPORTED", err
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    # Nothing was deleted; deleting by digest still works.
    r = http.get("%s/v2/del/app/manifests/v1" % gw.url,
                 headers={"Accept": MT}, timeout=30)
    assert r.status_code == 200
    r = http.delete("%s/v2/del/app/manifests/%s" % (gw.url, d), timeout=30)
    assert r.status_code == 202, r.text
