"""Chunked uploads known to every instance (issue 13): two gateways in
front of one Debian docker-registry 2.8 share a redis-server (with the
README's ACL user for all of portcullis, the default user off), so an
upload started through one is known to the other -- its offset for a
PATCH out of order (416, never upstream) and the latest Location for a
GET of an old location -- and forgotten by both when it ends; Redis
away, each instance answers from its own memory.  Real parts, no test
double."""

import hashlib
import os
import urllib.parse

import pytest

from lib.cache import session
from lib.gateway import gateway_config, upstream
from lib.redis import RedisServer, readme_acl

ADMIN_PW = "admin-Up-71xq"
USER_PW = "gw-uploads-Pz38"
HDR = {"Content-Type": "application/octet-stream"}


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def rs(tmp_path_factory):
    s = RedisServer(tmp_path_factory.mktemp("redis-"),
                    admin_password=ADMIN_PW,
                    users=[readme_acl(USER_PW, "all")])
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def reg(start_registry):
    return start_registry("up1")


def two_gateways(start_gateway, reg, rs, tmp_path, **limits):
    pw = tmp_path / "redis.pw"
    pw.write_text(USER_PW + "\n")
    os.chmod(pw, 0o600)
    cfg = gateway_config(
        upstream(reg, default=True),
        redis={"address": rs.host, "username": "portcullis",
               "password_file": str(pw)},
        limits=limits)
    return [start_gateway(cfg) for _ in range(2)]


def path_of(loc):
    """A Location's path and query, whichever gateway's base it has."""
    sp = urllib.parse.urlsplit(loc)
    return sp.path + ("?" + sp.query if sp.query else "")


def wait_key(rs, pattern, present=True):
    from lib.util import wait_for
    wait_for(lambda: bool(rs.call("KEYS", pattern)) == present, timeout=10,
             what="redis keys %s %s" % (pattern,
                                        "present" if present else "gone"))


def test_an_upload_is_known_to_every_instance(reg, rs, start_gateway,
                                              tmp_path):
    g1, g2 = two_gateways(start_gateway, reg, rs, tmp_path,
                          upload_ttl=600)
    data = b"one upload, two gateways"
    c1, c2 = data[:6], data[6:]
    with session() as s:
        r = s.post("%s/v2/sh/app/blobs/uploads/" % g1.url, timeout=30)
        assert r.status_code == 202, r.text
        loc0 = path_of(r.headers["Location"])
        r = s.patch(g1.url + loc0, data=c1, timeout=30,
                    headers=dict(HDR, **{"Content-Range": "0-5"}))
        assert r.status_code == 202 and r.headers["Range"] == "0-5"
        loc1 = path_of(r.headers["Location"])
        # The state is in Redis, with an expiry (limits.upload_ttl).
        wait_key(rs, "portcullis:upload:*")
        key = rs.call("KEYS", "portcullis:upload:*")[0]
        assert b"sh/app" in key
        assert 0 < rs.call("PTTL", key) <= 600000
        assert rs.call("HGET", key, "offset") == b"6"
        # The other instance knows it: an old location's status is the
        # current one, a chunk out of order or retried is 416 there,
        # and neither reaches the upstream.
        mark = reg.mark()
        r = s.get(g2.url + loc0, timeout=30)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == "0-5"
        assert path_of(r.headers["Location"]) == loc1
        for cr, body in (("10-14", b"xxxxx"), ("0-5", c1)):
            r = s.patch(g2.url + loc1, data=body, timeout=30,
                        headers=dict(HDR, **{"Content-Range": cr}))
            assert r.status_code == 416, (cr, r.status_code, r.text)
            assert r.headers["Range"] == "0-5"
            assert path_of(r.headers["Location"]) == loc1
        seen = [(e["method"], e["path"]) for e in reg.access_log(since=mark)]
        assert not [x for x in seen if x[0] in ("GET", "PATCH")], seen
        # The right chunk through the second, the status through the
        # first: it knows what the second did.
        r = s.patch(g2.url + loc1, data=c2, timeout=30,
                    headers=dict(HDR, **{"Content-Range": "6-%d" %
                                         (len(data) - 1)}))
        assert r.status_code == 202, r.text
        loc2 = path_of(r.headers["Location"])
        wait_key_offset(rs, key, len(data))
        r = s.get(g1.url + loc0, timeout=30)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == "0-%d" % (len(data) - 1)
        assert path_of(r.headers["Location"]) == loc2
        # Finished through the first: gone from Redis, and the second
        # relays the upstream's 404 for it.
        d = sha256(data)
        r = s.put(g1.url + loc2 + ("&" if "?" in loc2 else "?") +
                  "digest=" + d, timeout=30, headers={"Content-Length": "0"})
        assert r.status_code == 201, r.text
        wait_key(rs, "portcullis:upload:*", present=False)
        assert reg.get_blob("sh/app", d).content == data
        r = s.get(g2.url + loc1, timeout=30)
        assert r.status_code == 404, (r.status_code, r.text)


def wait_key_offset(rs, key, n):
    from lib.util import wait_for
    wait_for(lambda: rs.call("HGET", key, "offset") == str(n).encode(),
             timeout=10, what="offset %d in redis" % n)


def test_redis_away_each_instance_answers_from_memory(reg, rs, start_gateway,
                                                      tmp_path):
    g1, g2 = two_gateways(start_gateway, reg, rs, tmp_path)
    with session() as s:
        r = s.post("%s/v2/away/app/blobs/uploads/" % g1.url, timeout=30)
        loc0 = path_of(r.headers["Location"])
        r = s.patch(g1.url + loc0, data=b"abc", timeout=30,
                    headers=dict(HDR, **{"Content-Range": "0-2"}))
        assert r.status_code == 202
        wait_key(rs, "portcullis:upload:*")
        rs.kill()
        # The instance that saw it still refuses a chunk at the wrong
        # offset; the other knows nothing and relays (the upstream
        # answers for itself).
        r = s.patch(g1.url + loc0, data=b"zz", timeout=30,
                    headers=dict(HDR, **{"Content-Range": "7-8"}))
        assert r.status_code == 416, r.text
        assert r.headers["Range"] == "0-2"
        r = s.get(g1.url + loc0, timeout=30)
        assert r.status_code == 204 and r.headers["Range"] == "0-2"
    assert g1.alive() and g2.alive()
