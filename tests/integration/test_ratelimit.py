"""Rate limits across gateway instances (README "Rate limits"): three
gateways share one redis-server on loopback and a client spreads manifest
GETs over all three round-robin.

- The number allowed is the configured count (within 5%) across the three
  together; each refusal is a 429 with an OCI TOOMANYREQUESTS body naming
  the rule, Retry-After and RateLimit-Limit/-Remaining in Docker Hub's
  form; allowed answers carry the remaining count; Redis saw exactly one
  EVALSHA per counted request (INFO commandstats); the instances learned
  N=3 from their heartbeats.
- Redis killed: a `local` rule allows count/N per instance, `open` allows
  everything, `closed` refuses everything with a message that says the
  limit cannot be checked; Redis slower than the budget (SIGSTOP) falls
  back the same way; Redis back: the shared buckets (kept in its AOF)
  are in force again.
- Every refusal lands in the audit stream with the limit's rule.
- The Lua script and the C arithmetic agree on a table of cases
  (tests/unit/test_rlbucket --table, the script run in Redis with the
  table's times).
- skopeo, podman, ctr and docker each print the gateway's 429 message.
"""
import ast
import hashlib
import json
import os
import re
import signal
import subprocess

import pytest
import requests

from lib.gateway import gateway_config, upstream
from lib.redis import entries_to_dicts
from lib.registry import MANIFEST_TYPES
from lib.util import wait_for

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                         ".."))
ACCEPT = ", ".join(MANIFEST_TYPES)


@pytest.fixture
def redis(start_redis):
    return start_redis


@pytest.fixture
def seeded(start_registry, skopeo, single_image):
    """A registry holding proj/img:v1."""
    reg = start_registry("up1")
    skopeo("copy", "--dest-tls-verify=false", single_image.ref,
           "docker://%s/proj/img:v1" % reg.host)
    return reg


def rl_config(reg, rs, rules, names=("up1",), **rl_extra):
    ups = [upstream(reg, name=n, prefix=n, default=(i == 0),
                    hosts=[reg.host] if i == 0 else [])
           for i, n in enumerate(names)]
    # A budget no loaded machine misses by accident: a fallback would
    # change the counts (the budget itself is tested with SIGSTOP).
    rl = {"rules": rules, "redis_budget": 1}
    rl.update(rl_extra)
    return gateway_config(*ups, redis={"address": rs.host,
                                       "reconnect_min": 0.05,
                                       "reconnect_max": 0.2,
                                       "command_timeout": 5},
                          ratelimit=rl)


def rl_up(gw):
    """Until its link to Redis is up, an instance decides by
    on_redis_down (README): wait for it."""
    wait_for(lambda: "ratelimit redis_up" in gw.log_text(), timeout=30,
             what="the rate-limit link up")
    return gw


def three(start_gateway, cfg):
    return [rl_up(start_gateway(cfg)) for _ in range(3)]


def get_manifest(gw, path, session):
    return session.get(gw.url + path, headers={"Accept": ACCEPT},
                       timeout=30)


def spread(gws, path, n, session):
    """n manifest GETs round-robin over the gateways; the responses."""
    return [get_manifest(gws[i % len(gws)], path, session)
            for i in range(n)]


def evalsha_calls(rs):
    info = rs.cli("INFO", "commandstats")
    m = re.search(r"cmdstat_evalsha:calls=(\d+)", info)
    return int(m.group(1)) if m else 0


def test_shared_limit_across_three_instances(seeded, redis, start_gateway,
                                             http):
    rs = redis()
    rule = {"id": "pulls", "key": "upstream", "count": 60, "window": 3600,
            "endpoints": ["manifest"], "methods": ["GET"]}
    gws = three(start_gateway, rl_config(seeded, rs, [rule],
                                         heartbeat_interval=0.2))
    # Heartbeats: every instance learns there are three.
    wait_for(lambda: all("ratelimit instances learned=3" in g.log_text()
                         for g in gws), timeout=30,
             what="three instances learned")
    before = evalsha_calls(rs)
    rs_ = spread(gws, "/v2/up1/proj/img/manifests/v1", 120, http)
    allowed = [r for r in rs_ if r.status_code == 200]
    refused = [r for r in rs_ if r.status_code == 429]
    assert len(allowed) + len(refused) == 120
    assert abs(len(allowed) - 60) <= 3, len(allowed)
    # All three served some, and refused some: one limit, not three.
    for i in range(3):
        mine = [r.status_code for r in rs_[i::3]]
        assert 200 in mine and 429 in mine, (i, mine)
    # Allowed answers carry the remaining count, Docker Hub's form.
    assert allowed[0].headers["RateLimit-Limit"] == "60;w=3600"
    rem = [int(r.headers["RateLimit-Remaining"].split(";")[0])
           for r in allowed]
    assert rem[0] == 59 and rem == sorted(rem, reverse=True)
    assert all(r.headers["RateLimit-Remaining"].endswith(";w=3600")
               for r in allowed)
    # The refusal: OCI body naming the rule, Retry-After, headers.
    r = refused[0]
    body = r.json()
    assert body["errors"][0]["code"] == "TOOMANYREQUESTS"
    msg = body["errors"][0]["message"]
    assert '"pulls"' in msg and "60 requests per 3600 s" in msg
    assert "retry after" in msg
    ra = int(r.headers["Retry-After"])
    assert 1 <= ra <= 60
    assert r.headers["RateLimit-Limit"] == "60;w=3600"
    assert r.headers["RateLimit-Remaining"] == "0;w=3600"
    # Exactly one Redis round trip per counted request.
    assert evalsha_calls(rs) - before == 120
    # Requests no rule counts (tags list, HEAD) cost Redis nothing.
    before = evalsha_calls(rs)
    assert http.get(gws[0].url + "/v2/up1/proj/img/tags/list",
                    timeout=30).status_code == 200
    h = http.head(gws[1].url + "/v2/up1/proj/img/manifests/v1",
                  headers={"Accept": ACCEPT}, timeout=30)
    assert h.status_code == 200 and "RateLimit-Limit" not in h.headers
    assert evalsha_calls(rs) == before
    assert all("ratelimit refuse rule=pulls mode=shared" in g.log_text()
               for g in gws)
    # Redis forgets the script (SCRIPT FLUSH): NOSCRIPT, loaded again,
    # the request sent again, still one answer from the shared bucket.
    def loads():
        m = re.search(r"cmdstat_script\|load:calls=(\d+)",
                      rs.cli("INFO", "commandstats"))
        return int(m.group(1)) if m else 0
    n = loads()
    rs.call("SCRIPT", "FLUSH")
    r = get_manifest(gws[0], "/v2/up1/proj/img/manifests/v1", http)
    assert r.status_code == 429
    assert '"pulls" exceeded' in r.json()["errors"][0]["message"]
    assert loads() == n + 1
    assert "mode=fallback" not in gws[0].log_text()


def test_redis_down_modes_and_back(seeded, redis, start_gateway, http):
    rs = redis()
    rules = [{"id": "r-" + n, "key": "upstream", "upstreams": [n],
              "count": 30, "window": 3600, "on_redis_down": n}
             for n in ("local", "open", "closed")]
    gws = three(start_gateway, rl_config(seeded, rs, rules,
                                         names=("local", "open", "closed"),
                                         instances=3))
    path = "/v2/%s/proj/img/manifests/v1"
    # Shared: 10 of each limit spent, all allowed.
    for n in ("local", "open", "closed"):
        got = spread(gws, path % n, 10, http)
        assert [r.status_code for r in got] == [200] * 10
    rs.kill()
    wait_for(lambda: all("ratelimit redis_down" in g.log_text()
                         for g in gws), timeout=30, what="links down")
    # local: each instance holds 30/3 = 10 of its own.
    got = spread(gws, path % "local", 60, http)
    for i in range(3):
        mine = [r.status_code for r in got[i::3]]
        assert mine.count(200) == 10 and mine.count(429) == 10, (i, mine)
    refused = [r for r in got if r.status_code == 429][0].json()
    assert '"r-local" exceeded' in refused["errors"][0]["message"]
    # open: nothing limited.
    got = spread(gws, path % "open", 60, http)
    assert all(r.status_code == 200 for r in got)
    # closed: everything refused, saying why.
    got = spread(gws, path % "closed", 9, http)
    assert all(r.status_code == 429 for r in got)
    msg = got[0].json()["errors"][0]["message"]
    assert '"r-closed" cannot be checked' in msg
    assert got[0].headers["Retry-After"] == "1"

    # Redis back (its AOF kept the buckets): shared limits again.
    rs.start()
    wait_for(lambda: all(g.log_text().count("ratelimit redis_up") >= 2
                         for g in gws), timeout=30, what="links back")
    got = spread(gws, path % "closed", 60, http)
    assert [r.status_code for r in got].count(200) == 20
    got = spread(gws, path % "local", 60, http)
    assert [r.status_code for r in got].count(200) == 20
    assert all(r.status_code == 429 for r in got[20:])
    assert got[0].headers["RateLimit-Remaining"] == "19;w=3600"

    # Slower than the budget (stopped, not gone): the same fallback.
    os.kill(rs.pid, signal.SIGSTOP)
    try:
        r = get_manifest(gws[0], path % "open", http)
        assert r.status_code == 200
        r = get_manifest(gws[1], path % "closed", http)
        assert r.status_code == 429
        assert "cannot be checked" in r.json()["errors"][0]["message"]
    finally:
        os.kill(rs.pid, signal.SIGCONT)
    assert "ratelimit redis_slow" in gws[1].log_text()


def test_refusals_audited_with_rule(seeded, redis, start_gateway, http):
    rs = redis()
    cfg = rl_config(seeded, rs, [
        {"id": "two-per-ip", "key": "ip", "count": 2, "window": 600,
         "actions": ["pull"]},
        {"id": "exempt-all", "key": "ip", "count": 1, "window": 600,
         "exempt_cidrs": ["127.0.0.0/8"]}])
    cfg["audit"] = {"stream": "rl-audit"}
    cfg["metrics"] = {"allow": ["127.0.0.1/32"]}
    gw = rl_up(start_gateway(cfg))
    got = [get_manifest(gw, "/v2/up1/proj/img/manifests/v1", http)
           for _ in range(4)]
    assert [r.status_code for r in got] == [200, 200, 429, 429]
    ids = [r.headers["X-Request-Id"] for r in got]
    rs.wait_xlen("rl-audit", 4)
    recs = {d["request_id"]: d
            for _, d in entries_to_dicts(rs.call("XRANGE", "rl-audit",
                                                 "-", "+"))}
    for rid in ids[2:]:
        assert recs[rid]["status"] == "429"
        assert recs[rid]["rule"] == "two-per-ip"
        assert recs[rid]["decision"] == "deny"
    # Allowed: the policy's decision and rule stay.
    assert recs[ids[0]]["decision"] == "allow"
    assert recs[ids[0]]["rule"] != "two-per-ip"
    # Counted as the limit's refusals, not as policy denials.
    text = http.get(gw.url + "/metrics", timeout=10).text
    assert ('portcullis_ratelimit_refusals_total{limit="two-per-ip"} 2'
            in text.splitlines()), text
    assert "portcullis_policy_denials_total{" not in text


ACL_PW = "rl-user-Pw-7c1"


def test_acl_user_and_reload(seeded, redis, start_gateway, http, tmp_path):
    """The README's ACL line is enough; rules change on SIGHUP."""
    rs = redis(requirepass="admin-Pw-x1", users=[[
        "portcullis", "on", ">" + ACL_PW, "resetkeys", "~portcullis:rl:*",
        "resetchannels", "-@all", "+evalsha", "+eval", "+script|load",
        "+mget", "+set", "+time", "+zadd", "+zremrangebyscore", "+pexpire",
        "+zcard", "+select", "+ping"]])
    pw = tmp_path / "redis.pw"
    pw.write_text(ACL_PW + "\n")
    os.chmod(pw, 0o600)
    cfg = rl_config(seeded, rs, [{"id": "five", "key": "ip", "count": 5,
                                  "window": 3600}], heartbeat_interval=0.2)
    cfg["redis"].update({"username": "portcullis",
                         "password_file": str(pw)})
    gw = start_gateway(cfg)
    wait_for(lambda: "ratelimit instances learned=1" in gw.log_text(),
             timeout=30, what="heartbeat under the ACL user")
    path = "/v2/up1/proj/img/manifests/v1"
    got = [get_manifest(gw, path, http).status_code for _ in range(7)]
    assert got == [200] * 5 + [429] * 2
    # (revocation's link is refused its commands: not this user's job)
    assert not [l for l in gw.log_text().splitlines()
                if "ratelimit" in l and "NOPERM" in l]
    keys = sorted(k.decode() for k in rs.call("KEYS", "*"))
    assert keys == ["portcullis:rl:4:five:ip:127.0.0.1",
                    "portcullis:rl:instances"]
    # A reload: another rule, and the old one gone.
    cfg = gw.config
    cfg["ratelimit"]["rules"] = [{"id": "two", "key": "ip", "count": 2,
                                  "window": 3600}]
    with open(gw.config_path, "w") as f:
        json.dump(cfg, f)
    os.kill(gw.pid, signal.SIGHUP)
    wait_for(lambda: "server reload done" in gw.log_text(), timeout=30,
             what="reload")
    got = [get_manifest(gw, path, http) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert '"two"' in got[2].json()["errors"][0]["message"]


def rlb_lua():
    """The script as compiled into the gateway, from src/rlbucket.c."""
    src = open(os.path.join(REPO_ROOT, "src", "rlbucket.c")).read()
    body = src[src.index("const char rlb_lua[] ="):]
    body = body[:body.index(";\n")]
    return "".join(ast.literal_eval(s)
                   for s in re.findall(r'"(?:[^"\\]|\\.)*"', body))


def test_lua_agrees_with_c(redis):
    rs = redis()
    table = subprocess.run(
        [os.path.join(REPO_ROOT, "tests", "unit", "test_rlbucket"),
         "--table"], capture_output=True, text=True, check=True,
        timeout=60).stdout.splitlines()
    assert len(table) >= 7
    script = rlb_lua()
    for n, line in enumerate(table):
        case = json.loads(line)
        key = "agree:%d" % n
        for now, allowed, remaining, retry in case["steps"]:
            got = rs.call("EVAL", script, "1", key, str(now),
                          str(case["interval_us"]), str(case["burst"]))
            assert got == [now, allowed, remaining, retry], (case, now, got)
    # Several keys: all or nothing.  (Intervals of 10 s: a key expires
    # in real time when its bucket is full again.)
    iv = "10000000"
    got = rs.call("EVAL", script, "2", "k1", "k2", "1000000000",
                  iv, "2", iv, "1")
    assert got == [1000000000, 1, 1, 0, 1, 0, 0]
    got = rs.call("EVAL", script, "2", "k1", "k2", "1000000000",
                  iv, "2", iv, "1")
    assert got == [1000000000, 1, 0, 0, 0, 0, 10000000]
    # k1 was not charged by the refused request.
    got = rs.call("EVAL", script, "1", "k1", "1000000000", iv, "2")
    assert got == [1000000000, 1, 0, 0]
    # Stored with every digit; the expiry after the TAT (20 s ahead), at
    # the end of the minute after the TAT's (1020 s: minute 17, 1140 s).
    assert rs.call("GET", "k1") == b"1020000000"
    assert rs.call("PTTL", "k1") in range(139000, 140001)
    # A TAT that stays in its minute keeps the expiry it has; one that
    # moves on gets a new one.  Epoch-sized times keep all 16 digits.
    t = 1796150000000000 - 1796150000000000 % 60000000 + 1000000
    for k, at in (("k3", t), ("k3", t + 1), ("k3", t + 2)):
        got = rs.call("EVAL", script, "1", k, str(at), "1000000", "1000")
        assert got[:2] == [at, 1], got
    assert rs.call("GET", "k3") == str(t + 3000000).encode()
    first = rs.call("PTTL", "k3")
    assert (120000 - 1000 - 1000) < first <= 120000 - 1000
    rs.call("PEXPIRE", "k3", 500000)
    rs.call("EVAL", script, "1", "k3", str(t + 3), "1000000", "1000")
    assert 490000 < rs.call("PTTL", "k3") <= 500000
    rs.call("EVAL", script, "1", "k3", str(t + 60000000), "1000000",
            "1000")
    assert (120000 - 1000 - 1000) < rs.call("PTTL", "k3") <= 120000 - 1000


# --- the 429 as real clients print it ---
#
# containerd and dockerd resolve a tag with HEAD and fetch the manifest
# by digest with GET: the rule counts GETs, so the refusal comes where
# they read the body.  skopeo and podman (containers/image) retry a 429
# five times, waiting Retry-After each time (at most 60 s, doubling): a
# refusal with an hour's Retry-After would keep them four minutes, so
# they meet a `closed` rule with Redis away, whose Retry-After is 1.

CLIENT_RULE = {"id": "client-pulls", "key": "upstream", "count": 1,
               "window": 3600, "endpoints": ["manifest"],
               "methods": ["GET"]}
MESSAGE = 'rate limit "client-pulls" exceeded: 1 request per 3600 s'
CLOSED_RULE = {"id": "client-closed", "key": "upstream", "count": 1000,
               "window": 3600, "on_redis_down": "closed"}
CLOSED_MESSAGE = 'rate limit "client-closed" cannot be checked now'


def spent_gateway(seeded, redis, start_gateway, http):
    rs = redis()
    gw = rl_up(start_gateway(rl_config(seeded, rs, [CLIENT_RULE])))
    assert get_manifest(gw, "/v2/up1/proj/img/manifests/v1",
                        http).status_code == 200
    assert get_manifest(gw, "/v2/up1/proj/img/manifests/v1",
                        http).status_code == 429
    return gw


def closed_gateway(seeded, redis, start_gateway, http):
    rs = redis()
    gw = rl_up(start_gateway(rl_config(seeded, rs, [CLOSED_RULE])))
    assert get_manifest(gw, "/v2/up1/proj/img/manifests/v1",
                        http).status_code == 200
    rs.kill()
    wait_for(lambda: "ratelimit redis_down" in gw.log_text(), timeout=30,
             what="link down")
    r = get_manifest(gw, "/v2/up1/proj/img/manifests/v1", http)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    return gw


def test_skopeo_prints_the_429(seeded, redis, start_gateway, http, skopeo):
    gw = closed_gateway(seeded, redis, start_gateway, http)
    r = skopeo("inspect", "--tls-verify=false", "--retry-times", "0",
               "docker://%s/up1/proj/img:v1" % gw.host, check=False)
    assert r.returncode != 0
    print(r.stderr)
    # skopeo logs through logrus, which escapes the quotes.
    assert "toomanyrequests: " + CLOSED_MESSAGE in \
        r.stderr.replace('\\"', '"')


def test_podman_prints_the_429(seeded, redis, start_gateway, http, podman):
    gw = closed_gateway(seeded, redis, start_gateway, http)
    r = podman("pull", "--tls-verify=false",
               "%s/up1/proj/img:v1" % gw.host, check=False)
    assert r.returncode != 0
    print(r.stderr)
    assert "toomanyrequests: " + CLOSED_MESSAGE in r.stderr


def test_ctr_prints_the_429(seeded, redis, start_gateway, http,
                            start_containerd):
    gw = spent_gateway(seeded, redis, start_gateway, http)
    ctd = start_containerd()
    r = ctd.ctr("images", "pull", "--plain-http",
                "%s/up1/proj/img:v1" % gw.host, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    print(out)
    assert "429 Too Many Requests" in out and MESSAGE in out


def test_docker_prints_the_429(seeded, redis, start_gateway, http,
                               start_dockerd):
    gw = spent_gateway(seeded, redis, start_gateway, http)
    dk = start_dockerd({"insecure-registries": [gw.host]})
    r = dk.docker("pull", "%s/up1/proj/img:v1" % gw.host, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    print(out)
    assert "toomanyrequests: " + MESSAGE in out


# --- the upstream's own quota ---

def test_upstream_quota_floor_refuses_misses_serves_hits(
        start_registry, skopeo, single_image, image_factory, start_gateway,
        http, tmp_path):
    """Docker Hub's ratelimit-remaining at or below quota_floor: manifest
    GETs the cache cannot answer (what Docker Hub counts) are refused with
    429 naming the upstream's quota, before the upstream hears of them;
    what the cache holds is served, and manifest HEADs and blob misses,
    which cost no quota, go through (a pull whose manifest was paid for
    finishes)."""
    from lib.quota_upstream import QuotaUpstream
    reg = start_registry("hub")
    from lib.images import HOST_ARCH
    other = image_factory("quota-other", platforms=[("linux", HOST_ARCH)],
                          seed="quota-other")
    for repo, image in (("proj/img", single_image), ("proj/other", other),
                        ("proj/third", single_image)):
        skopeo("copy", "--dest-tls-verify=false", image.ref,
               "docker://%s/%s:v1" % (reg.host, repo))
    q = QuotaUpstream(reg.host, limit=100, remaining=4)
    try:
        u = upstream(reg, name="hub", prefix="hub", default=True,
                     url=q.url)
        u["quota_floor"] = 2
        u["quota_hold"] = 3600
        gw = start_gateway(gateway_config(u, cache={
            "dir": str(tmp_path / "cache"), "max_bytes": 1 << 30},
            metrics={"allow": ["127.0.0.1/32"]}))
        img = single_image.image()
        cfg_path = "/v2/hub/proj/img/blobs/" + img["config_digest"]
        # Filled through the cache: the manifest, then the config blob.
        r = get_manifest(gw, "/v2/hub/proj/img/manifests/v1", http)
        assert r.status_code == 200
        assert http.get(gw.url + cfg_path, timeout=30).status_code == 200
        # Another repository's manifest: Docker Hub says 2 left.
        assert get_manifest(gw, "/v2/hub/proj/other/manifests/v1",
                            http).status_code == 200
        assert q.remaining == 2
        wait_for(lambda: 'remaining="2;w=21600"' in gw.log_text(),
                 timeout=30, what="the report noted")
        seen = len(q.requests)
        # Hits go on: the manifest by tag (fresh tag record) and by
        # digest, the config blob.
        r = get_manifest(gw, "/v2/hub/proj/img/manifests/v1", http)
        assert r.status_code == 200
        assert get_manifest(gw, "/v2/hub/proj/img/manifests/" +
                            r.headers["Docker-Content-Digest"],
                            http).status_code == 200
        assert http.get(gw.url + cfg_path, timeout=30).status_code == 200
        # A miss: refused here, the upstream never asked.
        r = get_manifest(gw, "/v2/hub/proj/third/manifests/v1", http)
        assert r.status_code == 429
        err = r.json()["errors"][0]
        assert err["code"] == "TOOMANYREQUESTS"
        assert err["message"].startswith(
            'upstream "hub" reports 2 pulls left of its quota (the gateway '
            'keeps 2): pulls it has not cached are refused; retry after ')
        assert 3500 <= int(r.headers["Retry-After"]) <= 3600
        assert q.requests[seen:] == []
        assert "ratelimit quota_floor upstream=hub remaining=2 floor=2" \
            in gw.log_text()
        # Not counted by Docker Hub, so not refused: a manifest HEAD and
        # a blob the cache does not hold for this repository reach the
        # upstream, and the quota stays as it was.
        r = http.head(gw.url + "/v2/hub/proj/third/manifests/v1",
                      headers={"Accept": ACCEPT}, timeout=30)
        assert r.status_code == 200, r.headers
        assert ("HEAD", "/v2/proj/third/manifests/v1") in q.requests[seen:]
        blob = "/v2/hub/proj/third/blobs/" + img["layers"][0]["digest"]
        r = http.get(gw.url + blob, timeout=30)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == \
            img["layers"][0]["digest"].split(":", 1)[1]
        assert any(p.startswith("/v2/proj/third/blobs/")
                   for _, p in q.requests[seen:]), q.requests[seen:]
        assert q.remaining == 2
        text = http.get(gw.url + "/metrics", timeout=10).text
        assert ('portcullis_ratelimit_refusals_total'
                '{limit="upstream_quota"} 1' in text.splitlines()), text
    finally:
        q.stop()


def test_cache_hits_not_counted(start_registry, skopeo, single_image,
                                image_factory, redis, start_gateway, http,
                                tmp_path):
    """count_cache_hits false: only what the cache cannot answer counts,
    by tag (a fresh tag record) and by digest (stored and linked)."""
    from lib.images import HOST_ARCH
    reg = start_registry("up1")
    other = image_factory("quota-other", platforms=[("linux", HOST_ARCH)],
                          seed="quota-other")
    for repo, image in (("proj/img", single_image), ("proj/b", other),
                        ("proj/c", single_image)):
        skopeo("copy", "--dest-tls-verify=false", image.ref,
               "docker://%s/%s:v1" % (reg.host, repo))
    rs = redis()
    cfg = rl_config(reg, rs, [{"id": "misses", "key": "upstream",
                               "count": 2, "window": 3600,
                               "endpoints": ["manifest"],
                               "count_cache_hits": False}])
    cfg["cache"] = {"dir": str(tmp_path / "cache"), "max_bytes": 1 << 30}
    gw = rl_up(start_gateway(cfg))
    p = "/v2/up1/%s/manifests/%s"
    r = get_manifest(gw, p % ("proj/img", "v1"), http)
    assert r.status_code == 200 and \
        r.headers["RateLimit-Remaining"] == "1;w=3600"
    dig = r.headers["Docker-Content-Digest"]
    wait_for(lambda: "fill_done" in gw.log_text(), timeout=30,
             what="the fill")
    for ref in ("v1", dig) * 5:
        r = get_manifest(gw, p % ("proj/img", ref), http)
        assert r.status_code == 200, ref
        assert "RateLimit-Remaining" not in r.headers      # not counted
    assert get_manifest(gw, p % ("proj/b", "v1"),
                        http).status_code == 200           # the second
    r = get_manifest(gw, p % ("proj/c", "v1"), http)       # the third miss
    assert r.status_code == 429
    assert get_manifest(gw, p % ("proj/img", "v1"), http).status_code == 200


# --- the cap on concurrent upstream requests ---

def held_conns(hp):
    with hp.lock:
        return sum(1 for c in hp.conns if not c.closed and c.held)


def test_upstream_concurrency_cap_queue_then_503(seeded, start_gateway,
                                                 http):
    """max_concurrent requests reach the upstream at once; the next wait
    in a bounded queue (a client that leaves gives its place up); past
    the queue, or after queue_timeout, 503 with Retry-After."""
    import concurrent.futures
    import socket
    from lib.holding_proxy import HoldingProxy
    hp = HoldingProxy(seeded.host)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
    try:
        u = upstream(seeded, url="http://" + hp.host)
        u.update({"max_concurrent": 2, "queue": 1, "queue_timeout": 60})
        cfg = gateway_config(u)
        cfg["timeouts"]["upstream_response"] = 120
        gw = start_gateway(cfg)
        path = "/v2/up1/proj/img/manifests/v1"

        def get():
            s = requests.Session()
            s.trust_env = False
            try:
                return get_manifest(gw, path, s)
            finally:
                s.close()
        hp.hold(b"/manifests/v1")
        a, b = pool.submit(get), pool.submit(get)
        wait_for(lambda: held_conns(hp) == 2, timeout=30,
                 what="two requests held at the upstream")
        c = pool.submit(get)                    # queued
        wait_for(lambda: "upcap queued" in gw.log_text(), timeout=30,
                 what="the third queued")
        # The queue (1) is full: the fourth is refused at once.
        r = get()
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "its queue is full" in r.json()["errors"][0]["detail"]
        assert held_conns(hp) == 2 and not c.done()
        hp.release()
        for f in (a, b, c):
            assert f.result(timeout=60).status_code == 200

        # A waiter that leaves gives up its place.
        hp.hold(b"/manifests/v1")
        a, b = pool.submit(get), pool.submit(get)
        wait_for(lambda: held_conns(hp) == 2, timeout=30,
                 what="two requests held again")
        n = gw.log_text().count("upcap queued")
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        raw.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n\r\n" %
                     (path, ACCEPT)).encode())
        wait_for(lambda: gw.log_text().count("upcap queued") > n,
                 timeout=30, what="the raw client queued")
        raw.close()
        wait_for(lambda: "status=499" in gw.log_text(), timeout=30,
                 what="the raw client gone")
        d = pool.submit(get)                    # its place is free
        wait_for(lambda: gw.log_text().count("upcap queued") > n + 1,
                 timeout=30, what="the next one queued")
        hp.release()
        for f in (a, b, d):
            assert f.result(timeout=60).status_code == 200
    finally:
        hp.release()
        pool.shutdown(wait=True)
        hp.stop()


def test_upstream_queue_timeout(seeded, start_gateway):
    import concurrent.futures
    from lib.holding_proxy import HoldingProxy
    hp = HoldingProxy(seeded.host)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    try:
        u = upstream(seeded, url="http://" + hp.host)
        u.update({"max_concurrent": 1, "queue": 4, "queue_timeout": 0.2})
        gw = start_gateway(gateway_config(u))
        path = "/v2/up1/proj/img/manifests/v1"

        def get():
            s = requests.Session()
            s.trust_env = False
            try:
                return get_manifest(gw, path, s)
            finally:
                s.close()
        hp.hold(b"/manifests/v1")
        a = pool.submit(get)
        wait_for(lambda: held_conns(hp) == 1, timeout=30,
                 what="one request held at the upstream")
        r = get()
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "waited queue_timeout" in r.json()["errors"][0]["detail"]
        hp.release()
        assert a.result(timeout=60).status_code == 200
        # The slot came back: the next goes through at once.
        assert get().status_code == 200
    finally:
        hp.release()
        pool.shutdown(wait=True)
        hp.stop()


def test_upstream_slot_not_held_by_a_slow_reader(seeded, start_gateway,
                                                 http, tmp_path):
    """A slot is for the upstream's work: a client that reads a cached
    fill slowly must not keep it once the fill is done (the upstream
    idle), or max_concurrent slow readers shut everyone else out."""
    import hashlib
    import socket
    from lib.soak import push_blob
    big = os.urandom(16 << 20)
    dig = push_blob(http, seeded.url, "proj/big", big)
    assert dig == "sha256:" + hashlib.sha256(big).hexdigest()
    u = upstream(seeded, name="up1", prefix="up1", default=True)
    u.update({"max_concurrent": 1, "queue": 1, "queue_timeout": 2})
    cfg = gateway_config(u)
    cfg["cache"] = {"dir": str(tmp_path / "cache"), "max_bytes": 1 << 30}
    cfg["timeouts"]["body"] = 120
    gw = start_gateway(cfg)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(30)
    try:
        slow.connect(("127.0.0.1", gw.port))
        slow.sendall(b"GET /v2/up1/proj/big/blobs/%s HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n" % dig.encode())
        assert slow.recv(64).startswith(b"HTTP/1.1 200")
        # The fill is done: the upstream has sent all it will.
        wait_for(lambda: "fill_done" in gw.log_text(), timeout=60,
                 what="the fill")
        # The slow client still reads (its request still runs), but the
        # upstream is free: another miss goes through, not a 503.
        r = get_manifest(gw, "/v2/up1/proj/img/manifests/v1", http)
        assert r.status_code == 200, r.text
    finally:
        slow.close()


def test_redis_stall_not_counted_twice(seeded, redis, start_gateway, http):
    """Redis stalls (stopped, the link still up): the requests meanwhile
    are decided by on_redis_down.  They must not also be queued to Redis
    one by one, each waiting out the budget, to be counted again in the
    shared bucket when it resumes: that drains the bucket (here of an
    `open` rule) with requests it never decided, and refuses everyone
    after the stall."""
    rs = redis()
    rule = {"id": "r-open", "key": "upstream", "count": 30,
            "window": 3600, "on_redis_down": "open"}
    cfg = rl_config(seeded, rs, [rule], redis_budget=0.2)
    cfg["redis"]["command_timeout"] = 120
    gw = rl_up(start_gateway(cfg))
    path = "/v2/up1/proj/img/manifests/v1"
    assert get_manifest(gw, path, http).headers[
        "RateLimit-Remaining"] == "29;w=3600"
    before = evalsha_calls(rs)
    os.kill(rs.pid, signal.SIGSTOP)
    try:
        got = [get_manifest(gw, path, http) for _ in range(20)]
        assert all(r.status_code == 200 for r in got)
    finally:
        os.kill(rs.pid, signal.SIGCONT)
    # Only the request that found Redis stalled was sent to it.
    wait_for(lambda: evalsha_calls(rs) - before >= 1, timeout=30,
             what="the stalled EVALSHA run")
    r = get_manifest(gw, path, http)
    assert evalsha_calls(rs) - before == 2
    assert r.headers["RateLimit-Remaining"] == "27;w=3600", r.headers
