"""Scaling out (issue 12, acceptance 8): two gateway instances sharing
one Redis behind Debian's haproxy, run by the test on loopback with a
config generated from contrib/haproxy.cfg (its settings as shipped; the
bind and server lines and the process settings of the global section
replaced by the test's).

- 10 concurrent cold pulls of one blob through haproxy make one upstream
  fetch (counted in the docker-registry's access log): `balance uri`
  sends them all to one instance, whose fill is shared;
- one instance stopped in the middle of a run of pulls: haproxy's health
  check on /readyz marks it down, the pulls of paths on the other
  instance all succeed, and the paths of the stopped one are served by
  the other once it is marked down.

Real parts: haproxy, docker-registry, redis-server, the gateways.  Every
wait is on a condition."""

import hashlib
import os
import re
import threading
import urllib.parse

import pytest
import requests

from lib.cache import cache_cfg
from lib.gateway import gateway_config, upstream
from lib.redis import RedisServer
from lib.util import ManagedProcess, free_port, safe_env, wait_for

HAPROXY_BIN = os.environ.get("HAPROXY_BIN", "/usr/sbin/haproxy")
CONTRIB = os.path.join(os.path.dirname(__file__), "..", "..", "contrib",
                       "haproxy.cfg")
REPO = "scale/app"


def haproxy_config(port, servers):
    """contrib/haproxy.cfg with the test's bind and servers, no chroot,
    user, group, daemon, stats socket, a maxconn an unprivileged process
    may have, and logs on stdout."""
    with open(CONTRIB) as f:
        text = f.read()
    out, done = [], False
    for line in text.splitlines():
        s = line.strip()
        if re.match(r"(chroot|user|group|daemon|stats socket)\b", s):
            continue
        if s.startswith("maxconn "):
            # Unprivileged: the FD limit haproxy cannot raise.
            line = "\tmaxconn 1000"
        elif s.startswith("log /dev/log"):
            line = "\tlog stdout format raw local0 info"
        elif s.startswith("bind "):
            line = "\tbind 127.0.0.1:%d" % port
        elif s.startswith("server "):
            if done:
                continue
            done = True
            line = "\n".join("\tserver %s %s check" % (name, addr)
                             for name, addr in servers)
        out.append(line)
    assert done, "no server line in contrib/haproxy.cfg"
    return "\n".join(out) + "\n"


class HAProxy:
    def __init__(self, workdir, servers):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.cfg = os.path.join(str(workdir), "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(haproxy_config(self.port, servers))
        self.log_path = os.path.join(str(workdir), "haproxy.log")
        self.proc = ManagedProcess([HAPROXY_BIN, "-db", "-f", self.cfg],
                                   self.log_path, env=safe_env(),
                                   name="haproxy")
        self.proc.wait_ready(lambda: requests.get(
            self.url + "/v2/", timeout=2).status_code == 200, timeout=30,
            what="haproxy answering")

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        self.proc.stop(timeout=10)


@pytest.fixture
def haproxy(tmp_path_factory):
    started = []

    def start(servers):
        h = HAProxy(tmp_path_factory.mktemp("haproxy-"), servers)
        started.append(h)
        return h
    try:
        yield start
    finally:
        for h in started:
            h.stop()


@pytest.fixture
def redis(tmp_path_factory):
    rs = RedisServer(tmp_path_factory.mktemp("redis-"))
    try:
        yield rs
    finally:
        rs.stop()


def put_blob(reg, data):
    s = requests.Session()
    s.trust_env = False
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.post("%s/v2/%s/blobs/uploads/" % (reg.url, REPO), timeout=30)
    assert r.status_code == 202, r.text
    loc = urllib.parse.urljoin(reg.url + "/", r.headers["Location"])
    sep = "&" if "?" in loc else "?"
    r = s.put(loc + sep + "digest=" + d, data=data, timeout=60,
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


def upstream_gets(reg, digest):
    with open(reg.access_log_path, errors="replace") as f:
        return sum(1 for line in f
                   if '"GET /v2/%s/blobs/%s ' % (REPO, digest) in line)


def pull(url, digest):
    """GET a blob; its sha256 must be the digest.  The status, or the
    exception's name."""
    try:
        r = requests.get("%s/v2/%s/blobs/%s" % (url, REPO, digest),
                         timeout=120)
    except requests.RequestException as e:
        return type(e).__name__
    if r.status_code == 200:
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest
    return r.status_code


def served_by(gws, digest):
    """Which gateways logged a GET of the blob."""
    return [i for i, g in enumerate(gws)
            if "path=/v2/%s/blobs/%s " % (REPO, digest) in g.log_text()]


def two_gateways(start_gateway, reg, redis, tmp_path):
    gws = []
    for i in range(2):
        cfg = gateway_config(
            upstream(reg, default=True), instance_id="gw%d" % (i + 1),
            cache=cache_cfg(tmp_path / ("cache%d" % i)),
            redis={"address": redis.host},
            audit={"spool_file": str(tmp_path / ("audit%d.spool" % i))})
        gws.append(start_gateway(cfg))
    return gws


def test_cold_pulls_one_upstream_fetch(start_registry, start_gateway,
                                       haproxy, redis, tmp_path):
    """10 concurrent cold pulls of one 8 MiB blob through haproxy: all
    get its bytes, one instance serves them, the upstream is asked once."""
    reg = start_registry("up1")
    digest = put_blob(reg, os.urandom(8 << 20))
    gws = two_gateways(start_gateway, reg, redis, tmp_path)
    hp = haproxy([("gw%d" % (i + 1), g.host) for i, g in enumerate(gws)])
    results = [None] * 10
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, pull(hp.url, digest))) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
        assert not t.is_alive()
    assert results == [200] * 10
    assert upstream_gets(reg, digest) == 1
    assert len(served_by(gws, digest)) == 1


def test_instance_stopped_mid_run(start_registry, start_gateway, haproxy,
                                  redis, tmp_path):
    """Blobs spread over both instances by their paths; a run of pulls of
    all of them; one instance stopped half way.  Every pull of a blob on
    the other instance succeeds; haproxy marks the stopped one DOWN, and
    from then on its blobs are served by the other."""
    reg = start_registry("up1")
    digests = [put_blob(reg, os.urandom(256 << 10)) for _ in range(12)]
    gws = two_gateways(start_gateway, reg, redis, tmp_path)
    hp = haproxy([("gw%d" % (i + 1), g.host) for i, g in enumerate(gws)])
    home = {}
    for d in digests:
        assert pull(hp.url, d) == 200
        (home[d],) = served_by(gws, d)
    assert set(home.values()) == {0, 1}, "every path on one instance"
    victim = 0
    lock = threading.Lock()
    results = []            # (digest, result, victim already stopped)
    stopped = threading.Event()
    stop_run = threading.Event()

    def run(ds):
        for _ in range(200):
            if stop_run.is_set():
                return
            for d in ds:
                was = stopped.is_set()
                r = pull(hp.url, d)
                with lock:
                    results.append((d, r, was))
    threads = [threading.Thread(target=run, args=(digests[k::4],))
               for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results) >= 60, timeout=120,
                 what="60 pulls before the stop")
        gws[victim].stop()
        stopped.set()
        wait_for(lambda: re.search(r"Server portcullis/gw%d is DOWN" %
                                   (victim + 1), hp.log_text()),
                 timeout=60, what="haproxy marks the instance DOWN")
        n = len(results)
        wait_for(lambda: len(results) >= n + 60, timeout=120,
                 what="60 pulls after it is marked down")
        moved = [d for d in digests if home[d] == victim]
        after = n
    finally:
        stop_run.set()
        for t in threads:
            t.join(180)
    other = [(d, r) for d, r, _ in results if home[d] != victim]
    assert other and all(r == 200 for _, r in other), \
        [x for x in other if x[1] != 200][:5]
    # Once marked down, the stopped instance's blobs come from the other.
    late = [(d, r) for d, r, _ in results[after:] if d in moved]
    assert late and all(r == 200 for _, r in late), \
        [x for x in late if x[1] != 200][:5]
    for d in moved:
        assert 1 in served_by(gws, d) or victim == 1
