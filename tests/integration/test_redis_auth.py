"""The shared `redis` section against a real redis-server with
`requirepass` and with ACL users: audit records land through an ACL user
with the smallest command set the README gives, and through requirepass;
a wrong password or an unknown user stops `serve` with a clear message
that never holds the password; an unreachable Redis at start does not;
`audit.redis` alone still works; `portcullis audit query` authenticates
the same way; a database other than 0 is used; a user refused XADD gets a
logged NOPERM and the audit spools, nothing lost once it may write.

Requests go to /nowhere (a local 404, audited like any other), so no
upstream is needed."""

import json
import os
import socket

import pytest

from lib import audit_spool
from lib.gateway import gateway_bin, gateway_config
from lib.redis import (Client, audit_record_args, entries_to_dicts,
                       readme_acl, readme_acl_lines)
from lib.util import ManagedProcess, free_port, run, safe_env, wait_for

STREAM = "portcullis:audit"
ADMIN_PW = "admin-Pw-7c1e"
USER_PW = "gw-secret-Xq93LmZ"
WRONG_PW = "not-the-right-one-5d2a"

# What the README's ACL SETUSER line for the audit grants (read from
# README.md): the writer's script, the commands it calls, the queries'
# reads and SELECT.
AUDIT_COMMANDS = [r for r in readme_acl_lines()["audit"] if r[0] == "+"]


def acl_user(name, password, commands=AUDIT_COMMANDS, channels=()):
    return [name, "on", ">" + password, "resetkeys", "~portcullis:*",
            "resetchannels"] + ["&" + c for c in channels] + ["-@all"] + \
        list(commands)


@pytest.fixture
def redis(start_redis):
    return start_redis


def pwfile(tmp_path, pw, name="redis.pw"):
    p = tmp_path / name
    p.write_text(pw + "\n")
    os.chmod(p, 0o600)
    return p


def config(tmp_path, redis=None, audit=None):
    cfg = gateway_config({"name": "up1", "url": "http://127.0.0.1:9",
                          "default": True})
    a = {"spool_file": str(tmp_path / "audit.spool"), "timeout": 2}
    a.update(audit or {})
    cfg["audit"] = a
    if redis is not None:
        cfg["redis"] = redis
    return cfg


def hit(gw, n):
    """n requests, each a local 404; returns their request ids."""
    ids = []
    for _ in range(n):
        r = gw.http.get(gw.url + "/nowhere", timeout=10)
        assert r.status_code == 404
        ids.append(r.headers["X-Request-Id"])
    return ids


def stream_ids(rs, db=0):
    with rs.client() as c:
        if db:
            c.call("SELECT", db)
        return [d["request_id"] for _, d in
                entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))]


def xlen(rs, db=0):
    with rs.client() as c:
        if db:
            c.call("SELECT", db)
        return c.call("XLEN", STREAM)


def no_password_in(text, *pws):
    for pw in pws:
        assert pw not in text, "a password leaked"


def test_acl_user_writes_the_audit_and_audit_query_reads_it(
        redis, start_gateway, tmp_path):
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("portcullis", USER_PW)])
    cfg = config(tmp_path, redis={
        "address": rs.host, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW))})
    gw = start_gateway(cfg)
    ids = hit(gw, 20)
    wait_for(lambda: xlen(rs) == 20, timeout=30, what="20 records")
    assert stream_ids(rs) == ids
    # The gateway's link is the ACL user's, not the default user's.
    assert b"user=portcullis" in rs.call("CLIENT", "LIST")
    # The CLI connects the same way (AUTH user password).
    out = run([gateway_bin(), "audit", "query", "-c", gw.config_path,
               "--format", "json", "--limit", "50"], timeout=60)
    page = json.loads(out.stdout)
    assert sorted(r["request_id"] for r in page["records"]) == sorted(ids)
    no_password_in(out.stdout + out.stderr, USER_PW, ADMIN_PW)
    # The README's ACL line has what a first-segment plan (HMGET) and
    # an --until walk (ZREVRANGEBYSCORE on <stream>:late) need.
    out = run([gateway_bin(), "audit", "query", "-c", gw.config_path,
               "--format", "json", "--repo", "nomatch/*", "--until",
               "0s"], timeout=60)
    assert json.loads(out.stdout)["records"] == []
    # So does audit tail (XREAD BLOCK): it prints what comes after it.
    log = tmp_path / "tail.log"
    tail = ManagedProcess([gateway_bin(), "audit", "tail", "-c",
                           gw.config_path, "--format", "json"], log,
                          env=safe_env(), name="portcullis-tail")
    try:
        # Started once its XREVRANGE is answered: the next records count.
        wait_for(lambda: b"cmd=xrevrange" in rs.call("CLIENT", "LIST") or
                 b"cmd=xread" in rs.call("CLIENT", "LIST"), timeout=20,
                 what="tail connected")
        more = hit(gw, 3)
        wait_for(lambda: all(i in log.read_text() for i in more),
                 timeout=20, what="tail printed the new records")
    finally:
        tail.stop()
    no_password_in(log.read_text(), USER_PW, ADMIN_PW)
    gw.stop()
    no_password_in(gw.log_text(), USER_PW, ADMIN_PW)
    assert "audit redis_up" in gw.log_text()


def test_readme_acl_line_is_what_the_tests_grant():
    """acl_user() with the audit's commands is the README's line."""
    assert acl_user("portcullis", USER_PW) == readme_acl(USER_PW, "audit")


def test_requirepass_only(redis, start_gateway, tmp_path):
    rs = redis(requirepass=ADMIN_PW)
    cfg = config(tmp_path, redis={
        "address": rs.host, "password_file": str(pwfile(tmp_path, ADMIN_PW))})
    gw = start_gateway(cfg)
    ids = hit(gw, 5)
    wait_for(lambda: xlen(rs) == 5, timeout=30, what="5 records")
    assert stream_ids(rs) == ids
    no_password_in(gw.log_text(), ADMIN_PW)


@pytest.mark.parametrize("user,pw,expect", [
    ("portcullis", WRONG_PW,
     "authentication failed for user 'portcullis' (WRONGPASS)"),
    ("nobody", USER_PW, "authentication failed for user 'nobody' "
     "(WRONGPASS)"),
    (None, WRONG_PW, "authentication failed for the default user "
     "(WRONGPASS)"),
])
def test_wrong_credentials_stop_serve(redis, start_gateway, tmp_path, user,
                                      pw, expect):
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("portcullis", USER_PW)])
    r = {"address": rs.host, "password_file": str(pwfile(tmp_path, pw))}
    if user is not None:
        r["username"] = user
    gw = start_gateway(config(tmp_path, redis=r), expect_fail=True,
                       start_timeout=20)
    assert gw.returncode not in (0, None)
    log = gw.log_text()
    assert ("redis %s: %s" % (rs.host, expect)) in log, log
    no_password_in(log, pw, USER_PW, ADMIN_PW)
    # check-config does not connect: the same file is valid.
    out = run([gateway_bin(), "check-config", "-c", gw.config_path],
              timeout=30)
    assert "ok" in out.stdout


def test_unreachable_redis_at_start_is_not_fatal(redis, start_gateway,
                                                 tmp_path):
    port = free_port()
    cfg = config(tmp_path, redis={
        "address": "127.0.0.1:%d" % port, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)),
        "reconnect_max": 0.5})
    gw = start_gateway(cfg)
    assert "startup_check" in gw.log_text()
    ids = hit(gw, 10)
    spool = tmp_path / "audit.spool"
    wait_for(lambda: audit_spool.pending_bytes(spool) > 0, timeout=20,
             what="records spooled")
    rs = redis(port=port, requirepass=ADMIN_PW,
               users=[acl_user("portcullis", USER_PW)])
    wait_for(lambda: xlen(rs) == 10, timeout=30, what="spool replayed")
    assert stream_ids(rs) == ids


def test_audit_redis_alone_works_as_before(redis, start_gateway, tmp_path):
    rs = redis()
    gw = start_gateway(config(tmp_path, audit={"redis": rs.host}))
    ids = hit(gw, 5)
    wait_for(lambda: xlen(rs) == 5, timeout=30, what="5 records")
    assert stream_ids(rs) == ids


def test_audit_redis_wins_over_redis_address_with_its_credentials(
        redis, start_gateway, tmp_path):
    """audit.redis names the audit's server; user, password and database
    still come from the redis section (README "Redis")."""
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("portcullis", USER_PW)])
    dead = free_port()
    cfg = config(tmp_path, audit={"redis": rs.host}, redis={
        "address": "127.0.0.1:%d" % dead, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)), "database": 2})
    gw = start_gateway(cfg)
    ids = hit(gw, 5)
    wait_for(lambda: xlen(rs, db=2) == 5, timeout=30, what="5 records")
    assert stream_ids(rs, db=2) == ids
    assert xlen(rs) == 0


def test_database_other_than_zero(redis, start_gateway, tmp_path):
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("portcullis", USER_PW)])
    cfg = config(tmp_path, redis={
        "address": rs.host, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)), "database": 5})
    gw = start_gateway(cfg)
    ids = hit(gw, 7)
    wait_for(lambda: xlen(rs, db=5) == 7, timeout=30, what="7 records")
    assert stream_ids(rs, db=5) == ids
    assert xlen(rs) == 0
    out = run([gateway_bin(), "audit", "query", "-c", gw.config_path,
               "--format", "json"], timeout=60)
    assert len(json.loads(out.stdout)["records"]) == 7


def test_database_out_of_range_stops_serve(redis, start_gateway, tmp_path):
    rs = redis(requirepass=ADMIN_PW)
    cfg = config(tmp_path, redis={
        "address": rs.host, "password_file": str(pwfile(tmp_path, ADMIN_PW)),
        "database": 999})
    gw = start_gateway(cfg, expect_fail=True, start_timeout=20)
    assert gw.returncode not in (0, None)
    assert "SELECT 999 refused" in gw.log_text()


def test_user_without_xadd_gets_noperm_and_spools(redis, start_gateway,
                                                  tmp_path):
    cmds = [c for c in AUDIT_COMMANDS if c != "+xadd"]
    rs = redis(requirepass=ADMIN_PW,
               users=[acl_user("portcullis", USER_PW, cmds)])
    cfg = config(tmp_path, redis={
        "address": rs.host, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)),
        "reconnect_max": 0.5})
    gw = start_gateway(cfg)
    ids = hit(gw, 10)
    wait_for(lambda: "redis_error kind=NOPERM" in gw.log_text(), timeout=20,
             what="NOPERM logged")
    spool = tmp_path / "audit.spool"
    wait_for(lambda: audit_spool.pending_bytes(spool) > 0, timeout=20,
             what="records spooled")
    assert xlen(rs) == 0
    # Allowed now: the spool is replayed, in order, nothing lost.
    rs.call("ACL", "SETUSER", "portcullis", "+xadd")
    ids += hit(gw, 5)
    wait_for(lambda: xlen(rs) == 15, timeout=30, what="15 records")
    assert stream_ids(rs) == ids
    no_password_in(gw.log_text(), USER_PW, ADMIN_PW)


def test_reload_refuses_a_changed_password(redis, start_gateway, tmp_path):
    rs = redis(requirepass=ADMIN_PW)
    pw = pwfile(tmp_path, ADMIN_PW)
    gw = start_gateway(config(tmp_path, redis={
        "address": rs.host, "password_file": str(pw)}))
    pw.write_text("rotated-" + ADMIN_PW + "\n")
    os.kill(gw.pid, 1)
    wait_for(lambda: "/redis/password_file" in gw.log_text(), timeout=20,
             what="reload refused")
    assert "restart to apply" in gw.log_text()
    no_password_in(gw.log_text(), ADMIN_PW)
    ids = hit(gw, 3)
    wait_for(lambda: xlen(rs) == 3, timeout=30, what="still writing")
    assert stream_ids(rs) == ids


def test_check_config_does_not_connect(tmp_path):
    """No Redis at all on the port, a username and a password file:
    check-config is about the file only."""
    port = free_port()
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(1)     # would accept, and nothing would answer
    try:
        cfg = config(tmp_path, redis={
            "address": "127.0.0.1:%d" % port, "username": "portcullis",
            "password_file": str(pwfile(tmp_path, USER_PW))})
        path = tmp_path / "gw.json"
        path.write_text(json.dumps(cfg))
        out = run([gateway_bin(), "check-config", "-c", str(path)],
                  timeout=10)
        assert "ok" in out.stdout
        s.settimeout(0)
        with pytest.raises(BlockingIOError):
            s.accept()
    finally:
        s.close()


def test_password_refused_while_running_spools_then_recovers(
        redis, start_gateway, tmp_path):
    """The ACL changes under a running gateway: its next connection is
    refused (logged once, with the user, never the password), records
    spool; the password is given back and they are all written."""
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("portcullis", USER_PW)])
    cfg = config(tmp_path, redis={
        "address": rs.host, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)),
        "reconnect_max": 0.5})
    gw = start_gateway(cfg)
    ids = hit(gw, 3)
    wait_for(lambda: xlen(rs) == 3, timeout=30, what="3 records")
    rs.call("ACL", "SETUSER", "portcullis", "resetpass", ">" + WRONG_PW)
    rs.call("CLIENT", "KILL", "USER", "portcullis")
    want = ("rds auth_failed link=audit address=%s error=\"redis %s: "
            "authentication failed for user 'portcullis' (WRONGPASS)\"" %
            (rs.host, rs.host))
    wait_for(lambda: want in gw.log_text(), timeout=20,
             what="auth_failed logged")
    ids += hit(gw, 4)
    spool = tmp_path / "audit.spool"
    wait_for(lambda: audit_spool.pending_bytes(spool) > 0, timeout=20,
             what="records spooled")
    assert gw.log_text().count(want) == 1, "logged once until it changes"
    rs.call("ACL", "SETUSER", "portcullis", "resetpass", ">" + USER_PW)
    wait_for(lambda: xlen(rs) == 7, timeout=30, what="7 records")
    assert stream_ids(rs) == ids
    no_password_in(gw.log_text(), USER_PW, WRONG_PW, ADMIN_PW)


def test_redis_check_cli(redis, tmp_path):
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("portcullis", USER_PW)])
    cfg = config(tmp_path, redis={
        "address": rs.host, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)), "database": 1})
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(cfg))
    out = run([gateway_bin(), "redis", "check", "-c", str(path)], timeout=30)
    assert "redis %s: ok, user portcullis, database 1" % rs.host in \
        out.stdout
    cfg["redis"]["password_file"] = str(pwfile(tmp_path, WRONG_PW, "bad"))
    path.write_text(json.dumps(cfg))
    out = run([gateway_bin(), "redis", "check", "-c", str(path)], timeout=30,
              check=False)
    assert out.returncode == 1
    assert "authentication failed for user 'portcullis' (WRONGPASS)" in \
        out.stderr
    no_password_in(out.stdout + out.stderr, WRONG_PW, USER_PW, ADMIN_PW)


def test_subscriber_link_resubscribes_after_a_restart(redis, tmp_path):
    """A subscriber link (what revocation will use): AUTH as an ACL user
    allowed the channels, subscribed ("up"), a message arrives; Redis is
    killed and started again: the link says it is down, subscribes again
    and says so (where an owner re-syncs), and the next message arrives.
    A user not allowed the channel gets NOPERM, logged, and retries."""
    users = [acl_user("portcullis", USER_PW,
                      ["+subscribe", "+select", "+ping"],
                      channels=["portcullis:*"]),
             acl_user("nochan", USER_PW, ["+subscribe"])]
    rs = redis(requirepass=ADMIN_PW, users=users)
    cfg = config(tmp_path, redis={
        "address": rs.host, "username": "portcullis",
        "password_file": str(pwfile(tmp_path, USER_PW)), "database": 1,
        "reconnect_max": 0.5})
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(cfg))
    log = tmp_path / "sub.log"
    p = ManagedProcess([gateway_bin(), "redis", "subscribe", "-c", str(path),
                        "portcullis:revoke", "portcullis:other"], log,
                       env=safe_env(), name="portcullis-subscribe")

    def lines():
        return log.read_text().splitlines()
    try:
        wait_for(lambda: lines().count("subscribed") == 1, timeout=20,
                 what="subscribed")
        assert rs.call("PUBLISH", "portcullis:revoke", "alice 1") == 1
        wait_for(lambda: "message portcullis:revoke alice 1" in lines(),
                 timeout=20, what="first message")
        rs.kill()
        wait_for(lambda: any(x.startswith("down ") for x in lines()),
                 timeout=20, what="down")
        rs.start()
        wait_for(lambda: lines().count("subscribed") == 2, timeout=30,
                 what="subscribed again")
        assert rs.call("PUBLISH", "portcullis:other", "bob 2") == 1
        wait_for(lambda: "message portcullis:other bob 2" in lines(),
                 timeout=20, what="message after the restart")
    finally:
        p.stop()
    no_password_in(log.read_text(), USER_PW, ADMIN_PW)

    cfg["redis"]["username"] = "nochan"
    cfg["redis"]["database"] = 0
    path.write_text(json.dumps(cfg))
    log2 = tmp_path / "sub2.log"
    p = ManagedProcess([gateway_bin(), "redis", "subscribe", "-c", str(path),
                        "portcullis:revoke"], log2, env=safe_env(),
                       name="portcullis-subscribe")
    try:
        wait_for(lambda: "rds subscribe_failed link=subscribe" in
                 log2.read_text() and "NOPERM" in log2.read_text(),
                 timeout=20, what="NOPERM on SUBSCRIBE")
        assert "subscribed" not in log2.read_text().splitlines()
    finally:
        p.stop()


def test_script_under_an_older_acl_still_writes_exactly_once(redis):
    """The README's audit ACL before the first-segment index and the
    late set (no HSETNX, ZREMRANGEBYSCORE): a batch of routed records,
    some of them late, is written, the writer's mark advances, a resend
    writes nothing; only the first-segment mark is missing (and the late
    set is not trimmed)."""
    old = [c for c in AUDIT_COMMANDS if c not in (
        "+hsetnx", "+hmget", "+zremrangebyscore", "+zrevrangebyscore")]
    assert len(old) == len(AUDIT_COMMANDS) - 4
    rs = redis(requirepass=ADMIN_PW, users=[acl_user("old", USER_PW, old)])
    with open(gateway_bin(), "rb") as f:
        data = f.read()
    i = data.find(b"#!lua\n")
    script = data[i:data.index(b"\0", i)]
    s = "portcullis:audit"
    with Client(rs.port, password=USER_PW, username="old") as c:
        sha = c.call("SCRIPT", "LOAD", script).decode()

        def send():
            keys = [s, s + ":writers", s + ":indexes"]
            keys += [s + ":subject:u", s + ":repository:team/app"]
            # An hour late: its batch would go into the late set.
            argv = ["gw", 1, 1, 0, 0, 100] + audit_record_args({
                "time": 1000, "id": "gw/1-1", "repository": "team/app",
                "action": "pull", "status": 200, "decision": "allow"})
            return c.call("EVALSHA", sha, len(keys), *(keys + argv))
        assert send() == 1
        assert send() == 0
    assert rs.call("XLEN", s) == 1
    assert rs.call("HGET", s + ":writers", "gw") == b"1-1"
    assert rs.call("XLEN", s + ":repository:team/") == 1
    assert rs.call("HGET", s + ":writers", "prefix indexes") is None
    # ZADD was allowed before: the late set is kept, only not trimmed.
    assert rs.call("ZCARD", s + ":late") == 1
