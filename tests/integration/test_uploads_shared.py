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


def test_a_location_from_redis_cannot_inject_fields(reg, rs, start_gateway,
                                                    tmp_path):
    """review: a hostile Redis peer (or anything else that can write the
    shared keys) set an upload's location to a value with CR LF in it:
    the gateway wrote it into the 204's Location field as it was, so
    the peer could add any field (or a whole response) to the answer.
    A location from Redis with a control character, or naming another
    upload, is not taken: the request goes to the upstream (which
    answers for the current location)."""
    g1, g2 = two_gateways(start_gateway, reg, rs, tmp_path)
    with session() as s:
        r = s.post("%s/v2/inj/app/blobs/uploads/" % g1.url, timeout=30)
        assert r.status_code == 202, r.text
        loc0 = path_of(r.headers["Location"])
        r = s.patch(g1.url + loc0, data=b"abc", timeout=30,
                    headers=dict(HDR, **{"Content-Range": "0-2"}))
        assert r.status_code == 202, r.text
        loc1 = path_of(r.headers["Location"])
        wait_key(rs, "portcullis:upload:*")
        key = rs.call("KEYS", "portcullis:upload:*")[0]
        good = rs.call("HGET", key, "location").decode()
        rs.call("HSET", key, "offset", "3", "location",
                good + "\r\nX-Injected: yes")
        r = s.get(g2.url + loc1, timeout=30)
        assert "X-Injected" not in r.headers, r.headers
        assert "\r" not in r.headers.get("Location", "")
        assert r.status_code == 204, r.text
        # Another upload's location is not this one's either.
        other = good.replace(loc0.split("/blobs/uploads/")[1].split("?")[0],
                             "0123456789abcdef-other")
        rs.call("HSET", key, "offset", "3", "location", other)
        r = s.get(g2.url + loc1, timeout=30)
        assert r.status_code == 204, r.text
        assert "other" not in r.headers.get("Location", ""), r.headers
    assert g1.alive() and g2.alive()


def test_a_location_from_redis_cannot_send_the_client_elsewhere(
        reg, rs, start_gateway, tmp_path):
    """review: a location from Redis with no control character and this
    upload's id was sent as it was, whatever its host or repository: a
    Redis peer could send the client's next chunk (and its credentials)
    to a host of its choosing, or to another repository's path.  Only
    the path of a location of this upload in this repository is taken
    from Redis; the base is this instance's own."""
    g1, g2 = two_gateways(start_gateway, reg, rs, tmp_path)
    with session() as s:
        r = s.post("%s/v2/els/app/blobs/uploads/" % g1.url, timeout=30)
        assert r.status_code == 202, r.text
        loc0 = path_of(r.headers["Location"])
        r = s.patch(g1.url + loc0, data=b"abc", timeout=30,
                    headers=dict(HDR, **{"Content-Range": "0-2"}))
        assert r.status_code == 202, r.text
        loc1 = path_of(r.headers["Location"])
        wait_key(rs, "portcullis:upload:*")
        key = rs.call("KEYS", "portcullis:upload:*")[0]
        for bad in ("http://evil.invalid:9" + loc1,
                    loc1.replace("/v2/els/app/", "/v2/els/other/")):
            rs.call("HSET", key, "offset", "3", "location", bad)
            r = s.get(g2.url + loc1, timeout=30)
            assert r.status_code == 204, r.text
            got = r.headers.get("Location", "")
            assert got.startswith(g2.url + "/v2/els/app/blobs/uploads/"), \
                (bad, got)
        # The path of a good one is answered from Redis, on g2's base.
        rs.call("HSET", key, "offset", "3", "location", g1.url + loc1)
        mark = reg.mark()
        r = s.get(g2.url + loc0, timeout=30)
        assert r.status_code == 204, r.text
        assert r.headers["Location"] == g2.url + loc1
        assert not [e for e in reg.access_log(since=mark)
                    if e["method"] == "GET"]
    assert g1.alive() and g2.alive()
