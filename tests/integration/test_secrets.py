"""Gateway secrets and revocation against a real redis-server with an ACL
user limited to the commands, keys and channel the README lists (its
`ACL SETUSER` line itself, read from README.md), the default user off.

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
from lib.redis import readme_acl
from lib.util import run, wait_for

ADMIN_PW = "admin-Pw-93kd"
USER_PW = "gw-user-Lq82Zx"
SECRET_RE = re.compile(r"^pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")

@pytest.fixture
def redis(start_redis):
    return start_redis


def acl_redis(redis):
    """The default user off, and user portcullis with exactly the
    README's ACL line for secrets and revocation (acceptance 5)."""
    return redis(admin_password=ADMIN_PW,
                 users=[readme_acl(USER_PW, "secrets")])


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
    # Ready-to-paste login lines for the external_url's host; a Basic
    # user name holds no ':' (RFC 7617: docker splits at the first one),
    # so the subject's ':' is '_' there, as on the landing page.
    for tool in ("docker", "podman", "skopeo"):
        assert "%s login --username 'robot_ci' registry.example.test" % \
            tool in out
    assert "--username 'robot:ci'" not in out
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
    # Now: alice's secret is refused, bob's is not.  "now" is the end
    # of the current second: iat and created are whole seconds, and one
    # issued in the same second as the revocation is refused.
    t0 = int(time.time())
    out = cli("token", "revoke", "-c", conf, "--subject", "alice").stdout
    t1 = int(time.time())
    nb = int(rs.call("HGET", "portcullis:revoked", "s:alice"))
    assert t0 + 1 <= nb <= t1 + 1
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


class Verifier:
    """`portcullis secret verify` kept running: one secret per line in,
    one answer per line out, its log (stderr) in a file."""

    def __init__(self, conf, log_path):
        import subprocess
        from lib.util import safe_env
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [gateway_bin(), "secret", "verify", "-c", conf],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True, env=safe_env())

    def ask(self, secret, timeout=15):
        self.send(secret)
        return self.answer(timeout)

    def ask_up(self, secret, timeout=30):
        """The first ask of a run: until its Redis link is up (a loaded
        machine: over a second) the verifier answers redis_unavailable."""
        wait_for(lambda: self.ask(secret).startswith("ok "),
                 timeout=timeout, what="the verifier's Redis link up")

    def send(self, secret):
        self.proc.stdin.write(secret + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout=15):
        import select
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert r, "no answer from secret verify within %ss" % timeout
        return self.proc.stdout.readline().strip()

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=15)
        except Exception:  # noqa: BLE001 - stop it by its PID
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


def test_redis_unavailable_cached_or_fail_closed(redis, tmp_path):
    rs = acl_redis(redis)
    base = config(tmp_path, rs, connect_timeout=1, command_timeout=1,
                  reconnect_min=0.1, reconnect_max=0.2)
    closed = write_config(tmp_path, base, "closed.json")
    cached_cfg = json.loads(json.dumps(base))
    cached_cfg["secrets"] = {"redis_unavailable": "cached", "cache_ttl": 300,
                             "cache_entries": 3}
    cached = write_config(tmp_path, cached_cfg, "cached.json")
    s1, _, _ = create(closed, "robot:c")
    s2, id2, _ = create(closed, "robot:c")
    s3, _, _ = create(closed, "robot:d")
    s4, _, _ = create(closed, "robot:e")
    s5, _, _ = create(closed, "robot:e")
    vc = Verifier(cached, str(tmp_path / "cached.log"))
    vf = Verifier(closed, str(tmp_path / "closed.log"))
    try:
        vc.ask_up(s1)
        for s in (s1, s2, s3):
            assert vc.ask(s).startswith("ok ")
        assert vf.ask(s1).startswith("ok ")
        # A revoked secret and a revoked subject leave the cache at once.
        cli("secret", "revoke", "-c", closed, id2)
        cli("token", "revoke", "-c", closed, "--subject", "robot:d")
        wait_for(lambda: "revoke received secret=" + id2 in vc.log_text()
                 and 'revoke received subject="robot:d"' in vc.log_text(),
                 timeout=1.0, what="the revocations reached verify")
        rs.kill()
        # cached: what was verified still works (3 entries, none
        # evicted); the revoked ones were purged, not merely outvoted.
        assert vc.ask(s1).startswith("ok id=")
        assert vc.ask(s2) == "refused reason=redis_unavailable"
        assert vc.ask(s3) in ("refused reason=redis_unavailable",
                              "refused reason=revoked")
        # Never verified here: nothing to fall back on.
        assert vc.ask(s4) == "refused reason=redis_unavailable"
        # fail_closed (the default): refused, though verified before.
        assert vf.ask(s1) == "refused reason=redis_unavailable"

        # cache_entries (3): a fourth verified secret evicts the least
        # recently used.  (Back, the re-sync empties the cache first.)
        synced = vc.log_text().count("revoke synced")
        rs.start()
        wait_for(lambda: vc.log_text().count("revoke synced") > synced,
                 timeout=20, what="verify back on Redis, re-synced")
        wait_for(lambda: vc.ask(s1).startswith("ok "), timeout=20,
                 what="the check's own link back")
        for s in (s4, s5, s1, s4):
            assert vc.ask(s).startswith("ok ")
        s6, _, _ = create(closed, "robot:e")
        assert vc.ask(s6).startswith("ok ")      # evicts s5
        rs.kill()
        assert vc.ask(s5) == "refused reason=redis_unavailable"
        for s in (s1, s4, s6):
            assert vc.ask(s).startswith("ok ")
    finally:
        vc.close()
        vf.close()
    for v in (vc, vf):
        assert all(s not in v.log_text() for s in (s1, s2, s3, s4, s5))


def test_bounds(redis, start_gateway, tmp_path):
    rs = acl_redis(redis)
    cfg = config(tmp_path, rs)
    cfg["secrets"] = {"max_groups": 1}
    cfg["revocation"] = {"max_subjects": 2, "resync_interval": 1}
    conf = write_config(tmp_path, cfg)
    # secrets.max_groups
    bad = cli("secret", "create", "-c", conf, "--subject", "r", "--group",
              "a", "--group", "b", check=False)
    assert bad.returncode == 2 and "max_groups" in bad.stderr
    s, sid, _ = create(conf, "r", "--group", "a")
    key = "portcullis:secret:" + sid
    # secrets.last_used_interval (60 s): a recent last_used is not
    # rewritten, an old one is.
    recent = int(time.time()) - 5
    rs.call("HSET", key, "last_used", str(recent))
    assert verify(conf, s)[0] == 0
    assert int(rs.call("HGET", key, "last_used")) == recent
    rs.call("HSET", key, "last_used", "1000")
    assert verify(conf, s)[0] == 0
    assert int(rs.call("HGET", key, "last_used")) >= recent + 5
    # A record with more groups than max_groups is damaged, not trusted.
    rs.call("HSET", key, "groups", '["a","b"]')
    assert verify(conf, s) == (1, "refused reason=bad_record")

    gw = start_gateway(cfg)
    wait_for(lambda: log_has(gw, "revoke synced"), timeout=20,
             what="first sync")
    # revocation.resync_interval (1 s): written without a PUBLISH, it is
    # learned at the next periodic re-sync.
    rs.call("HSET", "portcullis:revoked", "s:zed", "2000000000")
    wait_for(lambda: log_has(gw, 'revoke sync subject="zed"'), timeout=10,
             what="the periodic re-sync")
    # revocation.max_subjects (2): the third subject overflows.
    cli("token", "revoke", "-c", conf, "--subject", "yan")
    wait_for(lambda: log_has(gw, 'revoke received subject="yan"'),
             timeout=1.0, what="second subject")
    assert "table_full" not in gw.log_text()
    cli("token", "revoke", "-c", conf, "--subject", "xia")
    wait_for(lambda: log_has(gw, "revoke table_full"), timeout=1.0,
             what="the table full")
    # The CLI's verify has the same bound: every secret is refused.
    s2, _, _ = create(conf, "someone-else")
    assert verify(conf, s2) == (1, "refused reason=revoked")


def test_review_cached_mode_follows_what_redis_says(redis, tmp_path):
    """Review (issue 9): with redis_unavailable cached, the cache is a
    fallback for when Redis cannot answer, never a way around what it
    answers.  A record Redis says is gone (deleted by hand), revoked
    without a message reaching this instance, or replaced by a key of
    another type (WRONGTYPE) must be refused at once, and must not come
    back from the cache when Redis goes away afterwards."""
    rs = acl_redis(redis)
    base = config(tmp_path, rs, connect_timeout=1, command_timeout=1,
                  reconnect_min=0.1, reconnect_max=0.2)
    closed = write_config(tmp_path, base, "closed.json")
    cfg = json.loads(json.dumps(base))
    cfg["secrets"] = {"redis_unavailable": "cached", "cache_ttl": 300}
    cached = write_config(tmp_path, cfg, "cached.json")
    s1, id1, _ = create(closed, "robot:gone")
    s2, id2, _ = create(closed, "robot:other-type")
    s3, id3, _ = create(closed, "robot:marked")
    vc = Verifier(cached, str(tmp_path / "cached.log"))
    try:
        vc.ask_up(s1)
        for s in (s1, s2, s3):
            assert vc.ask(s).startswith("ok ")
        rs.call("DEL", "portcullis:secret:" + id1)
        rs.call("DEL", "portcullis:secret:" + id2)
        rs.call("SET", "portcullis:secret:" + id2, "not a hash")
        # Marked revoked with no message (as if it was missed).
        rs.call("HSET", "portcullis:secret:" + id3, "revoked", "1")
        assert vc.ask(s1) == "refused reason=unknown"
        assert vc.ask(s2) == "refused reason=bad_record"
        assert vc.ask(s3) == "refused reason=revoked"
        rs.kill()
        for s in (s1, s2, s3):
            assert vc.ask(s) == "refused reason=redis_unavailable"
    finally:
        vc.close()


def test_review_secret_made_after_a_revocation_works(redis, tmp_path):
    """Review (issue 9): `token revoke` with the default --before now
    revokes up to the end of the current second (README "Revocation"),
    and a secret's created time is fixed, so a secret made right after
    the revocation (the usual rotation: revoke the robot, give it a new
    secret) was revoked for good when both fell in the same second.  A
    secret created after `token revoke` returned must be accepted; one
    for a subject revoked into the future (--before later) is refused at
    creation rather than printed dead."""
    rs = acl_redis(redis)
    conf = write_config(tmp_path, config(tmp_path, rs))
    # Three rotations: each the same second as its revocation, nearly
    # always (the commands take milliseconds).
    for i in range(3):
        subject = "robot:rotated-%d" % i
        cli("token", "revoke", "-c", conf, "--subject", subject)
        secret, _, _ = create(conf, subject)
        assert verify(conf, secret)[0] == 0, subject
    cli("token", "revoke", "-c", conf, "--all")
    secret, _, _ = create(conf, "robot:after-all")
    assert verify(conf, secret)[0] == 0
    # Revoked until far later: no secret that could never work.
    cli("token", "revoke", "-c", conf, "--subject", "robot:later",
        "--before", "2100-01-01T00:00:00Z")
    bad = cli("secret", "create", "-c", conf, "--subject", "robot:later",
              check=False)
    assert bad.returncode == 1 and "revoked" in bad.stderr
    assert "pcs_" not in bad.stdout + bad.stderr


def test_review_resubscribed_during_a_sync_syncs_again(redis, tmp_path):
    """Review (issue 9): the re-sync wanted when the subscriber link comes
    back must read the hash after that; a sync already in flight (sent
    while the subscriber was still down) may predate a revocation
    published meanwhile.  Before the fix the wish was dropped: the stale
    reply cleared `syncing`, nothing asked again, and the revocation was
    missed until resync_interval (here an hour).  A test double
    (lib/holding_proxy.py) holds the in-flight HGETALL's reply back."""
    from lib.holding_proxy import HoldingProxy
    rs = acl_redis(redis)
    direct = write_config(tmp_path, config(tmp_path, rs), "direct.json")
    proxy = HoldingProxy(rs.host)
    vc = None
    try:
        cfg = config(tmp_path, rs, command_timeout=60, reconnect_min=0.1,
                     reconnect_max=0.2)
        cfg["redis"]["address"] = proxy.host
        cfg["revocation"] = {"resync_interval": 3600}
        via = write_config(tmp_path, cfg, "via-proxy.json")
        secret, _, _ = create(direct, "robot:race")
        vc = Verifier(via, str(tmp_path / "verify.log"))
        vc.ask_up(secret)
        # The subscriber is lost and cannot come back ...
        proxy.refuse(b"SUBSCRIBE")
        wait_for(lambda: "revoke link_down" in vc.log_text(), timeout=10,
                 what="the subscriber link lost")
        # ... while a re-sync is sent and its reply is late.
        proxy.hold(b"portcullis:revoked")
        proxy.kill(b"portcullis:revoked")
        wait_for(lambda: proxy.held(b"portcullis:revoked") > 0,
                 timeout=10, what="a re-sync in flight, its reply held")
        # Published meanwhile: no instance hears it.
        out = cli("token", "revoke", "-c", direct, "--subject",
                  "robot:race").stdout
        assert "0 listening instance(s) told" in out
        # The subscriber is back (a message proves it is up) ...
        proxy.refuse(None)
        marker = "secret 0123456789abcdef"
        wait_for(lambda: rs.call("PUBLISH", "portcullis:revoke",
                                 marker) == 1 and
                 "revoke received secret=0123456789abcdef" in
                 vc.log_text(), timeout=10, what="the subscriber back")
        # ... and then the late reply comes: it predates the revocation.
        synced = vc.log_text().count("revoke synced")
        proxy.release()
        wait_for(lambda: vc.log_text().count("revoke synced") > synced,
                 timeout=10, what="the late re-sync applied")
        wait_for(lambda: vc.ask(secret) == "refused reason=revoked",
                 timeout=10, what="the revocation learned")
    finally:
        if vc is not None:
            vc.close()
        proxy.stop()


def test_review_concurrent_token_revoke_never_lowers(redis, tmp_path):
    """Review (issue 9): `token revoke` read the not-before time (HGET)
    and wrote its own (HSET) in two steps, so a revocation made between
    the two by another operator or script, with a later time, was
    overwritten with the earlier one: instances that re-read the hash
    (after a restart) learned the lower time and accepted what the later
    revocation refused.  The read is held back by a test double
    (lib/holding_proxy.py) while the other revocation runs."""
    import subprocess
    from lib.holding_proxy import HoldingProxy
    from lib.util import safe_env
    rs = acl_redis(redis)
    direct = write_config(tmp_path, config(tmp_path, rs), "direct.json")
    proxy = HoldingProxy(rs.host)
    slow = None
    try:
        cfg = config(tmp_path, rs, command_timeout=60)
        cfg["redis"]["address"] = proxy.host
        via = write_config(tmp_path, cfg, "via-proxy.json")
        proxy.hold(b"HGET")
        slow = subprocess.Popen(
            [gateway_bin(), "token", "revoke", "-c", via, "--subject",
             "robot:x", "--before", "@2000000000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=safe_env())
        wait_for(lambda: proxy.held(b"HGET") > 0, timeout=10,
                 what="the first revoke's read held")
        proxy.hold(None)
        cli("token", "revoke", "-c", direct, "--subject", "robot:x",
            "--before", "@3000000000")
        proxy.release()
        out, err = slow.communicate(timeout=30)
        assert slow.returncode == 0, err
        assert rs.call("HGET", "portcullis:revoked",
                       "s:robot:x") == b"3000000000"
    finally:
        if slow is not None and slow.poll() is None:
            slow.kill()
            slow.wait(timeout=5)
        proxy.stop()


def test_review_revoked_while_in_flight_is_not_cached(redis, tmp_path):
    """Review (issue 9): with redis_unavailable cached, a secret revoked
    while its lookup was in flight (the message arrives first, purging
    nothing; then the record read before the revocation says ok) was put
    in the cache after the revocation and accepted from it once Redis
    was away.  That one answer may be ok (the two were concurrent); the
    cache must not keep it.  A test double (lib/holding_proxy.py) holds
    the lookup's reply back."""
    from lib.holding_proxy import HoldingProxy
    rs = acl_redis(redis)
    direct = write_config(tmp_path, config(tmp_path, rs), "direct.json")
    proxy = HoldingProxy(rs.host)
    vc = None
    try:
        cfg = config(tmp_path, rs, command_timeout=60, connect_timeout=1,
                     reconnect_min=0.1, reconnect_max=0.2)
        cfg["redis"]["address"] = proxy.host
        cfg["secrets"] = {"redis_unavailable": "cached", "cache_ttl": 300}
        cfg["revocation"] = {"resync_interval": 3600}
        via = write_config(tmp_path, cfg, "via-proxy.json")
        secret, sid, _ = create(direct, "robot:inflight")
        vc = Verifier(via, str(tmp_path / "verify.log"))
        other, _, _ = create(direct, "robot:warmup")
        vc.ask_up(other)
        proxy.hold(("portcullis:secret:" + sid).encode())
        vc.send(secret)
        wait_for(lambda: proxy.held(("portcullis:secret:" +
                                     sid).encode()) > 0,
                 timeout=10, what="the lookup's reply held")
        proxy.hold(None)
        cli("secret", "revoke", "-c", direct, sid)
        wait_for(lambda: "revoke received secret=" + sid in vc.log_text(),
                 timeout=10, what="the revocation heard")
        proxy.release()
        assert vc.answer().startswith("ok ")     # concurrent: either
        rs.kill()
        assert vc.ask(secret) == "refused reason=redis_unavailable"
    finally:
        if vc is not None:
            vc.close()
        proxy.stop()


def test_review_no_password_at_debug(redis, tmp_path):
    """Review (issue 9): the Redis password is in no output of the
    secrets and revocation commands, at log level debug too: a wrong
    password (AUTH refused: async links of `secret verify`, blocking ones
    of create, list, revoke and token revoke), and links killed by the
    server after a good AUTH."""
    rs = acl_redis(redis)
    wrong = "Wr0ng-" + USER_PW
    cfg = config(tmp_path, rs, connect_timeout=1, reconnect_min=0.05,
                 reconnect_max=0.1)
    cfg["log"] = {"level": "debug"}
    good = write_config(tmp_path, cfg, "good.json")
    secret, sid, _ = create(good, "robot:dbg")
    (tmp_path / "wrong.pw").write_text(wrong + "\n")
    os.chmod(tmp_path / "wrong.pw", 0o600)
    cfg["redis"]["password_file"] = str(tmp_path / "wrong.pw")
    bad = write_config(tmp_path, cfg, "bad.json")
    outs = []
    for args in (["secret", "create", "-c", bad, "--subject", "x"],
                 ["secret", "list", "-c", bad],
                 ["secret", "revoke", "-c", bad, sid],
                 ["token", "revoke", "-c", bad, "--subject", "x"]):
        r = cli(*args, check=False)
        assert r.returncode != 0
        outs.append(r.stdout + r.stderr)
    r = cli("secret", "verify", "-c", bad, check=False, input=secret + "\n")
    assert r.stdout.strip() == "refused reason=redis_unavailable"
    outs.append(r.stdout + r.stderr)
    assert "authentication failed for user 'portcullis'" in r.stderr
    # Good password; every link killed by the server while in use.
    vc = Verifier(good, str(tmp_path / "verify.log"))
    try:
        vc.ask_up(secret)
        rs.call("CLIENT", "KILL", "USER", "portcullis")
        wait_for(lambda: vc.ask(secret).startswith("ok "), timeout=20,
                 what="verify back after the kill")
    finally:
        vc.close()
    outs.append(vc.log_text())
    assert "rds up link=" in vc.log_text()      # debug lines were on
    for text in outs:
        assert wrong not in text and USER_PW not in text
        assert ADMIN_PW not in text
