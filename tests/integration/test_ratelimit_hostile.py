"""Rate limits against a hostile Redis.

TEST DOUBLE: HostileRedis below is a misbehaving Redis peer (a few lines
of RESP over loopback), not a real redis-server: it loads any script and
answers every EVALSHA with verdicts no script of the gateway's would
give (the refusal's wait and the remaining count out of any range).  A
real redis-server cannot be made to say that.

The gateway must keep what it tells the client within the rule: a
Retry-After no longer than the rule's window, a RateLimit-Remaining
between 0 and the count, and no signed overflow on the way (the
sanitizer build reports it in the gateway's log as "runtime error").
"""
import socket
import threading

from lib.gateway import gateway_config, upstream
from lib.registry import MANIFEST_TYPES
from lib.util import wait_for

ACCEPT = ", ".join(MANIFEST_TYPES)
INT64_MAX = 2 ** 63 - 1


class HostileRedis:
    """TEST DOUBLE (a misbehaving Redis): RESP2 on 127.0.0.1, +OK to
    anything, a SHA to SCRIPT LOAD, 1 to EVAL (the heartbeat) and
    `verdict` (a list of ints after Redis's time) to EVALSHA."""

    def __init__(self, verdict):
        self.verdict = verdict
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []
        self.evalsha = 0
        self.done = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    @staticmethod
    def _read_command(f):
        line = f.readline()
        if not line:
            return None
        assert line[:1] == b"*", line
        args = []
        for _ in range(int(line[1:])):
            n = int(f.readline()[1:])
            args.append(f.read(n + 2)[:-2])
        return args

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                args = self._read_command(f)
                if args is None:
                    return
                cmd = args[0].upper()
                if cmd == b"SCRIPT":
                    out = b"$40\r\n" + b"a" * 40 + b"\r\n"
                elif cmd == b"EVAL":
                    out = b":1\r\n"
                elif cmd == b"EVALSHA":
                    self.evalsha += 1
                    nkeys = int(args[2])
                    vals = [1700000000000000] + self.verdict * nkeys
                    out = b"*%d\r\n" % len(vals) + b"".join(
                        b":%d\r\n" % v for v in vals)
                elif cmd == b"PING":
                    out = b"+PONG\r\n"
                else:
                    out = b"+OK\r\n"
                c.sendall(out)
        except (OSError, ValueError, AssertionError):
            return

    def stop(self):
        self.done = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def hostile_gateway(start_gateway, reg, verdict):
    hr = HostileRedis(verdict)
    rule = {"id": "pulls", "key": "upstream", "count": 60, "window": 60,
            "endpoints": ["manifest"], "methods": ["GET"]}
    cfg = gateway_config(upstream(reg, name="up1", prefix="up1",
                                  default=True, hosts=[reg.host]),
                         redis={"address": hr.host, "command_timeout": 5},
                         ratelimit={"rules": [rule], "redis_budget": 5})
    gw = start_gateway(cfg)
    wait_for(lambda: "ratelimit redis_up" in gw.log_text(), timeout=30,
             what="the rate-limit link up")
    return hr, gw


def test_hostile_redis_wait_kept_within_the_rule(start_registry,
                                                 start_gateway, http):
    reg = start_registry("up1")
    hr, gw = hostile_gateway(start_gateway, reg, [0, 0, INT64_MAX])
    try:
        r = http.get(gw.url + "/v2/up1/proj/img/manifests/v1",
                     headers={"Accept": ACCEPT}, timeout=30)
        assert hr.evalsha == 1
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "60", r.headers
        assert "retry after 60 s" in r.json()["errors"][0]["message"]
        assert "runtime error" not in gw.log_text()
    finally:
        hr.stop()


def test_hostile_redis_remaining_kept_within_the_rule(start_registry,
                                                      start_gateway, http):
    reg = start_registry("up1")
    hr, gw = hostile_gateway(start_gateway, reg, [1, INT64_MAX, 0])
    try:
        r = http.get(gw.url + "/v2/up1/proj/img/manifests/v1",
                     headers={"Accept": ACCEPT}, timeout=30)
        assert hr.evalsha == 1
        assert r.headers["RateLimit-Limit"] == "60;w=60"
        assert r.headers["RateLimit-Remaining"] == "59;w=60", r.headers
    finally:
        hr.stop()
