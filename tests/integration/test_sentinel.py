"""Redis failover through Sentinel (issue 12, acceptance 6): one master,
one replica and three redis-sentinel processes on loopback; the gateway
finds the master through `redis.sentinel`, follows a failover, and every
audit record arrives exactly once (each response's X-Request-Id matched
to the records in the stream of the new master).

- a forced failover (`SENTINEL failover`) in the middle of a run of
  requests, with audit.wait_replicas 1;
- a replica that lags (its link to the master cut) while the master acknowledges records,
  then the master killed and the replica promoted: with
  audit.wait_replicas 1 nothing acknowledged was only on the dead master,
  so every record arrives once; with 0 the new master's high-water mark
  is older than what the gateway dropped as acknowledged, and the writer
  goes on past the hole (logged as redis_gap) instead of being refused
  forever while the spool fills; both counted on /metrics
  (portcullis_audit_unreplicated_batches_total,
  portcullis_audit_redis_gaps_total);
- the secrets link follows the failover too.

Real parts: redis-server, redis-sentinel (Debian's redis-sentinel),
docker-registry, the gateway.  Every wait is on a condition."""

import os
import re
import threading

import pytest
import requests

from lib import audit_spool
from lib.gateway import gateway_config, upstream
from lib.redis import Client, RedisServer, entries_to_dicts
from lib.util import ManagedProcess, free_port, safe_env, wait_for

SENTINEL_BIN = os.environ.get("REDIS_SENTINEL_BIN", "/usr/bin/redis-sentinel")
STREAM = "portcullis:audit"
NAME = "pcmaster"


class Sentinel:
    """One redis-sentinel monitoring NAME, on its own port and dir."""

    def __init__(self, workdir, master_port, password=None):
        self.port = free_port()
        self.password = password
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\n"
                    "logfile \"\"\n"
                    "sentinel monitor %s 127.0.0.1 %d 2\n"
                    "sentinel down-after-milliseconds %s 1000\n"
                    "sentinel failover-timeout %s 10000\n"
                    "sentinel parallel-syncs %s 1\n" % (
                        self.port, self.dir, NAME, master_port, NAME, NAME,
                        NAME))
            if password is not None:
                f.write("requirepass %s\n" % password)
        self.proc = ManagedProcess([SENTINEL_BIN, conf],
                                   os.path.join(self.dir, "sentinel.log"),
                                   env=safe_env(), name="redis-sentinel")
        self.proc.wait_ready(lambda: self.call("PING") == b"PONG",
                             timeout=20, what="redis-sentinel PING")

    def call(self, *args):
        with Client(self.port, timeout=10, password=self.password) as c:
            return c.call(*args)

    def master_port(self):
        r = self.call("SENTINEL", "get-master-addr-by-name", NAME)
        return int(r[1])

    def stop(self):
        self.proc.stop(timeout=10)


@pytest.fixture
def cluster(tmp_path_factory):
    """master, replica, three sentinels that see the replica and each
    other."""
    procs = []
    try:
        master = RedisServer(tmp_path_factory.mktemp("master-"))
        procs.append(master)
        replica = RedisServer(tmp_path_factory.mktemp("replica-"))
        procs.append(replica)
        replica.call("REPLICAOF", "127.0.0.1", str(master.port))
        wait_for(lambda: b"master_link_status:up" in
                 replica.call("INFO", "replication"), timeout=30,
                 what="replica in sync")
        sentinels = []
        for i in range(3):
            s = Sentinel(tmp_path_factory.mktemp("sentinel-"), master.port)
            procs.append(s)
            sentinels.append(s)
        for s in sentinels:
            wait_for(lambda: len(s.call("SENTINEL", "replicas", NAME)) == 1
                     and len(s.call("SENTINEL", "sentinels", NAME)) == 2,
                     timeout=60, what="sentinel sees replica and peers")
        yield master, replica, sentinels
    finally:
        for p in reversed(procs):
            p.stop()


def sentinel_cfg(sentinels):
    return {"sentinel": {
        "addresses": ["127.0.0.1:%d" % s.port for s in sentinels],
        "master_name": NAME}}


def stream_ids(rs):
    with rs.client() as c:
        recs = entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))
    return [d["request_id"] for _, d in recs]


class Load:
    """`total` GETs over `conns` threads; the X-Request-Id of each
    answer.  The gateway serves them whatever Redis does (audit drop
    mode spools), so every request must be answered."""

    def __init__(self, url, paths, total, conns=4):
        self.url, self.paths, self.total = url, paths, total
        self.lock = threading.Lock()
        self.next = 0
        self.ids, self.errors = [], []
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(conns)]
        for t in self.threads:
            t.start()

    def answered(self):
        with self.lock:
            return len(self.ids)

    def _run(self):
        s = requests.Session()
        s.trust_env = False
        while True:
            with self.lock:
                if self.next >= self.total:
                    return
                i = self.next
                self.next += 1
            try:
                r = s.get(self.url + self.paths[i % len(self.paths)],
                          timeout=30)
            except requests.RequestException as e:
                self.errors.append(repr(e))
                continue
            if r.status_code not in (200, 404) or \
                    "X-Request-Id" not in r.headers:
                self.errors.append((r.status_code, r.text[:200]))
            with self.lock:
                self.ids.append(r.headers.get("X-Request-Id"))

    def join(self):
        for t in self.threads:
            t.join(300)
            assert not t.is_alive(), "load thread stuck"
        assert not self.errors, self.errors[:3]


def exactly_once(answered, got):
    dup = sorted({x for x in got if got.count(x) > 1})
    assert not dup, "recorded twice: %r" % dup[:10]
    missing = set(answered) - set(got)
    assert not missing, "%d never recorded: %r" % (len(missing),
                                                   sorted(missing)[:10])


def gateway_for(start_gateway, start_registry, tmp_path, sentinels, **audit):
    reg = start_registry("up1")
    a = {"spool_file": str(tmp_path / "audit.spool"), "timeout": 2}
    a.update(audit)
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-sent",
                         redis=sentinel_cfg(sentinels), audit=a,
                         metrics={"allow": ["127.0.0.1"]})
    return start_gateway(cfg)


def counter(gw, name):
    """One unlabelled counter of the gateway's /metrics."""
    s = requests.Session()
    s.trust_env = False
    r = s.get(gw.url + "/metrics", timeout=15)
    assert r.status_code == 200, r.status_code
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.text, re.M)
    assert m, name
    return int(m.group(1))


UNREPLICATED = "portcullis_audit_unreplicated_batches_total"
GAPS = "portcullis_audit_redis_gaps_total"


def test_forced_failover_mid_load_exactly_once(cluster, start_registry,
                                               start_gateway, tmp_path):
    """Acceptance 6: SENTINEL failover after a third of 3,000 requests;
    the gateway moves to the promoted replica (logged), and each answered
    request has exactly one record in the new master's stream."""
    master, replica, sentinels = cluster
    gw = gateway_for(start_gateway, start_registry, tmp_path, sentinels,
                     wait_replicas=1)
    wait_for(lambda: "rds master link=audit" in gw.log_text(), timeout=30,
             what="audit link found the master")
    paths = ["/v2/", "/v2/sent/app/manifests/no-such-tag"]
    load = Load(gw.url, paths, 3000)
    wait_for(lambda: load.answered() >= 1000, timeout=120,
             what="1,000 answered requests")
    assert sentinels[0].call("SENTINEL", "failover", NAME) == b"OK"
    wait_for(lambda: all(s.master_port() == replica.port
                         for s in sentinels), timeout=60,
             what="sentinels name the promoted replica")
    load.join()
    assert load.answered() == 3000
    wait_for(lambda: set(load.ids) <= set(stream_ids(replica)),
             timeout=60, what="every answered request in the new master")
    exactly_once(load.ids, stream_ids(replica))
    log = gw.log_text()
    assert "rds master_switch link=audit" in log
    assert "to=127.0.0.1:%d" % replica.port in log
    # The old master, now a replica of the new one, agrees.
    wait_for(lambda: b"role:slave" in master.call("INFO", "replication"),
             timeout=60, what="old master demoted")


@pytest.mark.parametrize("wait", [1, 0])
def test_lagging_replica_promoted(cluster, start_registry, start_gateway,
                                  tmp_path, wait):
    """The replica's link is cut while requests are audited, the master
    is killed, the replica resumes and is promoted.  wait_replicas 1:
    the records the dead master held were never acknowledged (WAIT timed
    out), so they are sent again to the new master: exactly once.
    wait_replicas 0: they were acknowledged and are lost with the master;
    the writer's first batch meets a GAP, says so, and goes on: the
    records after the failover arrive, once each."""
    master, replica, sentinels = cluster
    gw = gateway_for(start_gateway, start_registry, tmp_path, sentinels,
                     wait_replicas=wait)
    s = requests.Session()
    s.trust_env = False

    def get():
        r = s.get(gw.url + "/v2/", timeout=30)
        assert r.status_code == 200
        return r.headers["X-Request-Id"]
    assert (counter(gw, UNREPLICATED), counter(gw, GAPS)) == (0, 0)
    before = [get() for _ in range(20)]
    wait_for(lambda: set(before) <= set(stream_ids(replica)), timeout=30,
             what="first records replicated")
    # The replica loses its link and cannot make it again (a master
    # password the master refuses): it lags from here.
    replica.call("CONFIG", "SET", "masterauth", "wrong")
    replica.call("CLIENT", "KILL", "TYPE", "master")
    wait_for(lambda: b"master_link_status:down" in
             replica.call("INFO", "replication"), timeout=30,
             what="replica link down")
    during = [get() for _ in range(50)]
    if wait == 0:
        # Acknowledged by the master alone.
        wait_for(lambda: set(during) <= set(stream_ids(master)),
                 timeout=30, what="records on the master")
    else:
        wait_for(lambda: "redis_unreplicated" in gw.log_text(),
                 timeout=30, what="a WAIT short of replicas")
        # Each short WAIT counts (the log line is rate-limited).
        assert counter(gw, UNREPLICATED) >= 1
    master.kill()
    replica.call("CONFIG", "SET", "masterauth", "")
    wait_for(lambda: all(x.master_port() == replica.port
                         for x in sentinels), timeout=90,
             what="sentinels promote the replica")
    after = [get() for _ in range(20)]
    if wait == 1:
        answered = before + during + after
        wait_for(lambda: set(answered) <= set(stream_ids(replica)),
                 timeout=60, what="every record in the new master")
        exactly_once(answered, stream_ids(replica))
        assert "redis_gap" not in gw.log_text()
        assert counter(gw, GAPS) == 0
    else:
        wait_for(lambda: set(after) <= set(stream_ids(replica)),
                 timeout=60, what="records after the failover written")
        got = stream_ids(replica)
        exactly_once(before + after, got)
        assert not set(during) & set(got), "lost records reappeared?"
        assert "redis_gap" in gw.log_text()
        assert counter(gw, GAPS) == gw.log_text().count("redis_gap") >= 1
        assert counter(gw, UNREPLICATED) == 0


def test_secrets_and_revocation_follow_the_failover(cluster, tmp_path):
    """A secret created through the sentinels (the CLI's blocking link)
    is checked by a running `secret verify` (the gateway's own
    asynchronous links: secrets and revocation) before and after a
    forced failover; one revoked after it is refused."""
    from test_secrets import Verifier, cli, create, write_config
    master, replica, sentinels = cluster
    cfg = gateway_config({"name": "up1", "url": "http://127.0.0.1:9",
                          "default": True}, redis=sentinel_cfg(sentinels),
                         external_url="https://registry.example.test")
    conf = write_config(tmp_path, cfg)
    secret, sid, _ = create(conf, "robot-a")
    secret2, sid2, _ = create(conf, "robot-b")
    v = Verifier(conf, str(tmp_path / "verify.log"))
    try:
        assert v.ask(secret).startswith("ok")
        assert sentinels[1].call("SENTINEL", "failover", NAME) == b"OK"
        wait_for(lambda: all(s.master_port() == replica.port
                             for s in sentinels), timeout=60,
                 what="sentinels name the promoted replica")
        wait_for(lambda: "rds master_switch link=secrets" in v.log_text(),
                 timeout=60, what="the secrets link on the new master")
        assert v.ask(secret).startswith("ok")
        # The CLI finds the new master; the revocation reaches the
        # running checker over its (moved) subscriber link.
        cli("secret", "revoke", "-c", conf, sid2)
        wait_for(lambda: v.ask(secret2).startswith("refused"), timeout=30,
                 what="revoked secret refused after the failover")
        assert v.ask(secret).startswith("ok")
    finally:
        v.close()


class LyingSentinel:
    """A TEST DOUBLE for a misbehaving peer: a "sentinel" that names a
    link-local master (169.254.0.1:6379), which the gateway must never
    dial.  Answers every command it reads; a real sentinel cannot be
    made to do this without sending traffic off loopback."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.asked = 0
        self.done = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.done:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(5)
            try:
                data = b""
                while b"get-master-addr-by-name" not in data.lower():
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.asked += 1
                    c.sendall(b"*2\r\n$11\r\n169.254.0.1\r\n$4\r\n6379\r\n")
            except OSError:
                pass
            finally:
                c.close()

    def stop(self):
        self.done = True
        self.thread.join(5)
        self.sock.close()


def test_sentinel_answer_outside_the_allowed_classes_is_refused(
        start_gateway, tmp_path):
    """A sentinel that names a link-local master: the CLI says why and
    exits 2 (unreachable), the gateway's links log it and never connect
    (audit spools)."""
    import json
    from lib.gateway import gateway_bin
    from lib.util import run
    liar = LyingSentinel()
    try:
        cfg = gateway_config({"name": "up1", "url": "http://127.0.0.1:9",
                              "default": True},
                             redis={"sentinel": {
                                 "addresses": ["127.0.0.1:%d" % liar.port],
                                 "master_name": NAME}},
                             audit={"spool_file":
                                    str(tmp_path / "audit.spool")})
        conf = tmp_path / "c.json"
        conf.write_text(json.dumps(cfg))
        out = run([gateway_bin(), "redis", "check", "-c", str(conf)],
                  check=False, timeout=60)
        assert out.returncode == 2, out
        assert "sentinel 127.0.0.1:%d: master %s: of a class never " \
            "dialled" % (liar.port, NAME) in out.stderr
        gw = start_gateway(cfg)
        wait_for(lambda: "rds sentinel_failed link=audit" in gw.log_text()
                 and "of a class never dialled" in gw.log_text(),
                 timeout=30, what="refused answer logged")
        assert "169.254.0.1" not in gw.log_text()
        assert liar.asked >= 2
        r = requests.get(gw.url + "/v2/", timeout=10)
        assert r.status_code == 200
        wait_for(lambda: audit_spool.pending_bytes(
            tmp_path / "audit.spool") > 0, timeout=30, what="record spooled")
    finally:
        liar.stop()


def test_sentinel_password(cluster, start_gateway, tmp_path):
    """Sentinels with their own password (requirepass): the right one in
    sentinel.password_file finds the master (CLI and gateway); a wrong
    one is logged without the password, and the CLI exits 2."""
    import json
    from lib.gateway import gateway_bin
    from lib.util import run
    master, replica, sentinels = cluster
    pw = "sentinel-Pw-4kq"
    s = Sentinel(tmp_path / "s-auth", master.port, password=pw)
    try:
        for name, secret in (("good", pw), ("bad", "wrong-Pw-xx9")):
            f = tmp_path / (name + ".pw")
            f.write_text(secret + "\n")
            os.chmod(f, 0o600)
            cfg = gateway_config(
                {"name": "up1", "url": "http://127.0.0.1:9",
                 "default": True},
                redis={"sentinel": {
                    "addresses": ["127.0.0.1:%d" % s.port],
                    "master_name": NAME, "password_file": str(f)}},
                audit={"spool_file": str(tmp_path / (name + ".spool"))})
            conf = tmp_path / (name + ".json")
            conf.write_text(json.dumps(cfg))
            out = run([gateway_bin(), "redis", "check", "-c", str(conf)],
                      check=False, timeout=60)
            gw = start_gateway(cfg)
            if name == "good":
                assert out.returncode == 0, out
                assert "redis 127.0.0.1:%d: ok, database 0, master of %s" % (
                    master.port, NAME) in out.stdout
                wait_for(lambda: "rds master link=audit" in gw.log_text()
                         and "address=127.0.0.1:%d" % master.port in
                         gw.log_text(), timeout=30, what="master found")
            else:
                assert out.returncode == 2, out
                wait_for(lambda: "authentication failed" in gw.log_text(),
                         timeout=30, what="refused AUTH logged")
                assert secret not in gw.log_text()
                assert secret not in out.stdout + out.stderr
            assert pw not in gw.log_text()
            gw.stop()
    finally:
        s.stop()
