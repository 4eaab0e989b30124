"""Gateway secrets and revocation against a real redis-server with an ACL
user limited to the commands, keys and channel the README lists.

Secrets: `portcullis secret create` prints the secret once; Redis holds
its SHA-256 and never the secret (every key and value is scanned); `list`
shows neither; `secret verify` runs the gateway's own asynchronous check
(secrets.c, with the revocation table of revoke.c) and says ok/whose or
why not: wrong, unknown, revoked, expired, redis_unavailable.  The
identity stage that calls the same check on requests is another
branch's (i9-token): this file tests the check through `secret verify`.

Revocation: two running gateways share one Redis; a subject's tokens and
a secret revoked with the CLI reach both within one second (waited on
with a bound, observed in their logs, where revoke.c reports what it
applied); a revocation PUBLISHed while a gateway is away from Redis (no
listener told) is learned at its re-sync when it is back."""

import hashlib
import json
import os
import re
import time

import pytest

from lib.gateway import gateway_bin, gateway_config
from lib.redis import RedisServer
from lib.util import run, wait_for

ADMIN_PW = "admin-Pw-93kd"
USER_PW = "gw-user-Lq82Zx"
SECRET_RE = re.compile(r"^pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")

# The README's ACL line for secrets and revocation.
SECRET_COMMANDS = ["+hgetall", "+hget", "+hset", "+hsetnx", "+hexists",
                   "+sadd", "+smembers", "+publish", "+subscribe",
                   "+select", "+ping"]


@pytest.fixture
def redis(tmp_path_factory):
    servers = []

    def start(**kw):
        s = RedisServer(tmp_path_factory.mktemp("redis-"), **kw)
        servers.append(s)
        return s
    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def acl_redis(redis):
    return redis(requirepass=ADMIN_PW, users=[[
        "portcullis", "on", ">" + USER_PW, "resetkeys", "~portcullis:*",
        "resetchannels", "&portcullis:revoke", "-@all"] + SECRET_COMMANDS])


def config(tmp_path, rs, **redis_extra):
    pw = tmp_path / "redis.pw"
    pw.write_text(USER_PW + "\n")
    os.chmod(pw, 0o600)
    r = {"address": rs.host, "username": "portcullis",
         "password_file": str(pw)}
    r.update(redis_extra)
    return gateway_config({"name": "up1", "url": "http://127.0.0.1:9",
                           "default": True}, redis=r,
                          external_url="https://registry.example.test")


def write_config(tmp_path, cfg, name="cli.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return str(p)


def cli(*args, check=True, input=None):
    return run([gateway_bin()] + list(args), timeout=60, check=check,
               input=input)


def create(conf, subject, *extra):
    out = cli("secret", "create", "-c", conf, "--subject", subject, *extra)
    secret = out.stdout.splitlines()[0]
    assert SECRET_RE.match(secret), out.stdout
    # Printed once, and nowhere else.
    assert (out.stdout + out.stderr).count(secret) == 1
    assert secret[21:] not in out.stdout.replace(secret, "")
    sid = secret[4:20]
    assert "id:      %s" % sid in out.stdout
    return secret, sid, out.stdout


def verify(conf, secret):
    out = cli("secret", "verify", "-c", conf, check=False,
              input=secret + "\n")
    assert secret not in out.stdout + out.stderr
    return out.returncode, out.stdout.strip()


def everything_in(rs):
    """Every key and every value in the database, as bytes."""
    seen = []
    with rs.client() as c:
        cursor = b"0"
        for _ in range(10000):
            cursor, keys = c.call("SCAN", cursor, "COUNT", "100")
            for k in keys:
                seen.append(k)
                t = c.call("TYPE", k)
                if t == b"hash":
                    seen.extend(c.call("HGETALL", k))
                elif t == b"set":
                    seen.extend(c.call("SMEMBERS", k))
                elif t == b"string":
                    seen.append(c.call("GET", k))
                else:
                    raise AssertionError("unexpected key type %r" % t)
            if cursor == b"0":
                break
    return seen


def test_create_list_verify_revoke(redis, tmp_path):
    rs = acl_redis(redis)
    conf = write_config(tmp_path, config(tmp_path, rs))
    secret, sid, out = create(conf, "robot:ci", "--group", "builders",
                              "--group", "cn=x,ou=y", "--name", "CI job")
    # Ready-to-paste login lines for the external_url's host.
    for tool in ("docker", "podman", "skopeo"):
        assert "%s login --username 'robot:ci' registry.example.test" % \
            tool in out
    # Redis holds the SHA-256 and the fields, never the secret.
    rec = rs.call("HGETALL", "portcullis:secret:" + sid)
    rec = dict(zip(rec[::2], rec[1::2]))
    assert rec[b"hash"] == hashlib.sha256(secret.encode()).hexdigest() \
        .encode()
    assert rec[b"subject"] == b"robot:ci"
    assert json.loads(rec[b"groups"]) == ["builders", "cn=x,ou=y"]
    assert rec[b"name"] == b"CI job" and rec[b"expires"] == b"0"
    assert abs(int(rec[b"created"]) - time.time()) < 120
    assert b"last_used" not in rec
    for v in everything_in(rs):
        assert secret.encode() not in v and secret[21:].encode() not in v
    assert rs.call("SMEMBERS", "portcullis:secret:ids") == [sid.encode()]

    # list: the record, never the secret or its hash.
    lst = cli("secret", "list", "-c", conf).stdout
    assert sid in lst and "robot:ci" in lst and "active" in lst
    assert "builders,cn=x,ou=y" in lst and "CI job" in lst
    assert secret not in lst and secret[21:] not in lst
    assert rec[b"hash"].decode() not in lst

    # verify: the gateway's check.
    rc, line = verify(conf, secret)
    assert rc == 0, line
    assert line.startswith("ok id=%s subject=robot:ci method=secret "
                           "groups=builders,cn=x,ou=y name=CI job" % sid)
    # last_used written (the first use always is).
    assert int(rs.call("HGET", "portcullis:secret:" + sid, "last_used")) > 0
    # The same id with other random bits: wrong, not ok.
    other = secret[:21] + ("A" if secret[21] != "A" else "B") + secret[22:]
    assert verify(conf, other) == (1, "refused reason=wrong")
    # An id nobody created, and a password that is not a secret.
    assert verify(conf, "pcs_0123456789abcdef_" + secret[21:]) == \
        (1, "refused reason=unknown")
    assert verify(conf, "eyJhbGciOi.not.a-secret") == \
        (1, "refused reason=unknown")

    # revoke: by id; then refused, listed as revoked.
    out = cli("secret", "revoke", "-c", conf, sid).stdout
    assert "revoked secret %s" % sid in out
    assert verify(conf, secret) == (1, "refused reason=revoked")
    assert re.search(sid + r".*revoked", cli("secret", "list", "-c",
                                             conf).stdout)
    # A wrong secret for a revoked id still says only "wrong".
    assert verify(conf, other) == (1, "refused reason=wrong")
    bad = cli("secret", "revoke", "-c", conf, "0123456789abcdef",
              check=False)
    assert bad.returncode == 1 and "no secret" in bad.stderr


def test_expiry_and_subject_revocation(redis, tmp_path):
    rs = acl_redis(redis)
    conf = write_config(tmp_path, config(tmp_path, rs))
    short, _, out = create(conf, "robot:short", "--expires", "1s")
    assert "expires: 20" in out
    wait_for(lambda: verify(conf, short) == (1, "refused reason=expired"),
             timeout=10, what="the 1 s secret expired")
    bad = cli("secret", "create", "-c", conf, "--subject", "x",
              "--expires", "soon", check=False)
    assert bad.returncode == 2 and "--expires" in bad.stderr

    a, _, _ = create(conf, "alice")
    b, _, _ = create(conf, "bob")
    # A revocation before the secrets were made leaves them working.
    cli("token", "revoke", "-c", conf, "--subject", "alice", "--before",
        "@1000")
    assert verify(conf, a)[0] == 0
    # Now: alice's secret is refused, bob's is not.
    out = cli("token", "revoke", "-c", conf, "--subject", "alice").stdout
    assert "revoked subject alice issued before" in out
    assert verify(conf, a) == (1, "refused reason=revoked")
    assert verify(conf, b)[0] == 0
    # An earlier --before never lowers the time held.
    cli("token", "revoke", "-c", conf, "--subject", "alice", "--before",
        "2001-01-01T00:00:00Z")
    assert verify(conf, a) == (1, "refused reason=revoked")
    # --all: everyone's.
    cli("token", "revoke", "-c", conf, "--all")
    assert verify(conf, b) == (1, "refused reason=revoked")
    assert int(rs.call("HGET", "portcullis:revoked", "all")) > 1000
    bad = cli("token", "revoke", "-c", conf, "--subject", "a", "--all",
              check=False)
    assert bad.returncode == 2


def test_redis_down_fails_closed(redis, tmp_path):
    rs = acl_redis(redis)
    conf_d = config(tmp_path, rs, connect_timeout=1)
    conf = write_config(tmp_path, conf_d)
    s, _, _ = create(conf, "robot:x")
    assert verify(conf, s)[0] == 0
    rs.kill()
    assert verify(conf, s) == (1, "refused reason=redis_unavailable")
    bad = cli("secret", "create", "-c", conf, "--subject", "y",
              check=False)
    assert bad.returncode == 1 and "pcs_" not in bad.stdout + bad.stderr


def log_has(gw, text):
    return text in gw.log_text()


def test_revocation_reaches_every_instance_within_a_second(
        redis, start_gateway, tmp_path):
    rs = acl_redis(redis)
    cfg = config(tmp_path, rs)
    a = start_gateway(cfg)
    b = start_gateway(cfg)
    for gw in (a, b):
        wait_for(lambda: log_has(gw, "revoke synced"), timeout=20,
                 what="first sync")
    out = cli("token", "revoke", "-c", a.config_path, "--subject",
              "carol").stdout
    assert "2 listening instance(s) told" in out
    for gw in (b, a):
        wait_for(lambda: log_has(gw, 'revoke received subject="carol"'),
                 timeout=1.0, what="the revocation on %s" % gw.host)
    secret, sid, _ = create(a.config_path, "robot:dave")
    out = cli("secret", "revoke", "-c", a.config_path, sid).stdout
    for gw in (b, a):
        wait_for(lambda: log_has(gw, "revoke received secret=" + sid),
                 timeout=1.0, what="the secret's revocation")
    cli("token", "revoke", "-c", b.config_path, "--all")
    wait_for(lambda: log_has(a, "revoke received all"), timeout=1.0,
             what="--all")
    for gw in (a, b):
        assert secret not in gw.log_text()
        assert USER_PW not in gw.log_text()


def test_missed_message_is_learned_at_the_resync(redis, start_gateway,
                                                 tmp_path):
    rs = acl_redis(redis)
    # A long back-off keeps the gateway away while the revocation is made.
    cfg = config(tmp_path, rs, reconnect_min=8, reconnect_max=8)
    gw = start_gateway(cfg)
    wait_for(lambda: log_has(gw, "revoke synced"), timeout=20,
             what="first sync")
    rs.kill()
    wait_for(lambda: log_has(gw, "revoke link_down"), timeout=10,
             what="the subscriber link lost")
    rs.start()
    out = cli("token", "revoke", "-c", gw.config_path, "--subject",
              "erin").stdout
    # Nobody heard the PUBLISH: only the re-sync can tell the gateway.
    assert "0 listening instance(s) told" in out
    assert 'subject="erin"' not in gw.log_text()
    wait_for(lambda: log_has(gw, 'revoke sync subject="erin"'), timeout=30,
             what="the revocation learned at the re-sync")
    assert 'revoke received subject="erin"' not in gw.log_text()
