"""A real redis-server for the audit tests, on a free loopback port in a
temp dir, stopped by its own PID (even when a test fails), plus a small
RESP client so the tests need no Python Redis package.

The server runs with appendonly + appendfsync always, so that what it
acknowledged survives `kill()` (SIGKILL) and `start()` on the same port
and directory: that is what lets an outage test say "none lost".

Authentication: `requirepass` gives the default user a password, and
`users` adds ACL users, each a list of ACL rules as `ACL SETUSER` takes
them (["portcullis", "on", ">pw", "~portcullis:*", "+xadd"]), passed as
`--user` directives.  The harness's own client (call(), client(), cli(),
the readiness PING) authenticates as the default user with requirepass,
so a test can inspect what a restricted user wrote.

`admin_password` disables the default user instead (`user default off`,
as a hardened Redis is run) and adds an `admin` user allowed everything;
the harness's own client then logs in as that one.  `readme_acl()` gives
the rules of the README's `ACL SETUSER` lines, so that a test runs with
exactly the ACL the README documents."""

import os
import re
import signal
import socket

from .util import HarnessError, ManagedProcess, free_port, safe_env, \
    wait_for

REDIS_BIN = os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI_BIN", "/usr/bin/redis-cli")
README = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..",
                                      "..", "README.md"))
ACL_USER = "portcullis"


def readme_acl_lines():
    """{label: [rules]} of the README's `ACL SETUSER portcullis ...`
    lines; the label is the word in the README's sentence before it
    ("audit", "secrets", "all")."""
    with open(README) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"<!-- acl:(\w+) -->\s*\n\s*\n    ACL SETUSER %s "
                         r"(.*)\n" % ACL_USER, text):
        out[m.group(1)] = m.group(2).split()
    return out


def readme_acl(password, which="all"):
    """The README's ACL line `which` for user portcullis as --user rules,
    with >PASSWORD replaced by the password."""
    rules = readme_acl_lines()[which]
    if rules.count(">PASSWORD") != 1:
        raise HarnessError("README ACL line %s has no >PASSWORD" % which)
    return [ACL_USER] + [">" + password if r == ">PASSWORD" else r
                         for r in rules]


class RespError(Exception):
    """An error reply from Redis."""


class Client:
    """A blocking RESP2 client: call(*args) -> reply (bytes, int, list,
    None); error replies raise RespError."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0, password=None,
                 username=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            try:
                if username is not None:
                    self.call("AUTH", username, password)
                else:
                    self.call("AUTH", password)
            except Exception:
                self.sock.close()
                raise

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise HarnessError("bad RESP line %r" % line)

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def call(self, *args):
        self.sock.sendall(self._encode(args))
        r = self._read()
        if isinstance(r, RespError):
            raise r
        return r

    def pipeline(self, commands):
        """Send many commands at once; returns their replies (errors as
        RespError objects, not raised)."""
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]


# The audit record's fields in schema order (src/audit.h AUDIT_FIELDS):
# a record is stored packed, these values each followed by a tab.
AUDIT_FIELDS = ("time", "id", "request_id", "instance", "client_ip",
                "user_agent", "subject", "auth_method", "action",
                "repository", "reference", "upstream", "method", "path",
                "status", "error", "decision", "rule", "bytes_in",
                "bytes_out", "duration_ms", "cache", "auth_failure")


def unpack_record(v):
    """A packed record (the "record" field) -> {field: value}."""
    vals = v.split("\t")
    assert vals[-1] == "", "a packed record ends with a tab"
    return dict(zip(AUDIT_FIELDS, vals[:-1] +
                    [""] * (len(AUDIT_FIELDS) - len(vals) + 1)))


def audit_record_args(fields):
    """The writer's script's arguments for one record (audit_redis.c):
    its time, what its index entries keep (" <action> <status>
    <decision>;") and the record packed; fields missing are ""."""
    f = {k: str(v) for k, v in fields.items()}
    return [f.get("time", ""), " %s %s %s;" % (
        f.get("action", ""), f.get("status", ""), f.get("decision", "")),
        "".join(f.get(k, "") + "\t" for k in AUDIT_FIELDS)]


def entries_to_dicts(reply):
    """XRANGE-style reply -> [(id, {field: value})] with str values.  An
    audit record stored packed (one "record" field) comes out as its
    fields, as the layout before stored it."""
    out = []
    for eid, kv in reply or []:
        d = {}
        for i in range(0, len(kv), 2):
            d[kv[i].decode()] = kv[i + 1].decode()
        if list(d) == ["record"]:
            d = unpack_record(d["record"])
        out.append((eid.decode(), d))
    return out


def index_refs(reply):
    """An audit index stream's entries (XRANGE-style) -> [(record id,
    {action, status, decision})], oldest first, either layout: an entry
    of "refs" holds several, one of the layout before is one."""
    out = []
    for eid, kv in reply or []:
        d = {kv[i].decode(): kv[i + 1].decode()
             for i in range(0, len(kv), 2)}
        if list(d) != ["refs"]:
            out.append((eid.decode(), d))
            continue
        for ref in d["refs"].split(";"):
            if ref:
                rid, action, status, decision = ref.split(" ")
                out.append((rid, {"action": action, "status": status,
                                  "decision": decision}))
        assert out[-1][0] == eid.decode(), "an index entry has its " \
            "newest ref's id"
    return out


class RedisServer:
    """A redis-server this test started.  Attributes: port, host, dir,
    log_path, pid.  kill() ends it with SIGKILL; start() brings it back on
    the same port and data dir (AOF replayed)."""

    def __init__(self, workdir, port=None, requirepass=None, users=None,
                 admin_password=None):
        self.requirepass = requirepass
        self.admin_password = admin_password
        self.users = [list(u) for u in users or []]
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.start()

    def start(self):
        if self.proc is not None and self.proc.alive():
            raise HarnessError("redis-server already running")
        argv = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", ""]
        if self.requirepass is not None:
            argv += ["--requirepass", self.requirepass]
        if self.admin_password is not None:
            argv += ["--user", "default", "off", "--user", "admin", "on",
                     ">" + self.admin_password, "~*", "&*", "+@all"]
        for rules in self.users:
            argv += ["--user"] + [str(r) for r in rules]
        self.proc = ManagedProcess(argv, self.log_path, env=safe_env(),
                                   name="redis-server")
        self.pid = self.proc.pid
        try:
            self.proc.wait_ready(self._ping, timeout=20,
                                 what="redis-server PING")
        except Exception:
            self.stop()
            raise

    def _ping(self):
        with self.client(timeout=2) as c:
            return c.call("PING") == b"PONG"

    def client(self, timeout=30.0):
        if self.admin_password is not None:
            return Client(self.port, timeout=timeout, username="admin",
                          password=self.admin_password)
        return Client(self.port, timeout=timeout, password=self.requirepass)

    def call(self, *args):
        with self.client() as c:
            return c.call(*args)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill(self):
        """SIGKILL: no shutdown save; what was acknowledged is in the
        AOF (appendfsync always)."""
        if self.proc is not None:
            self.proc.stop(timeout=10, sig=signal.SIGKILL)

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=10)

    def cli(self, *args, timeout=30):
        """Run redis-cli against this server; returns stdout."""
        from .util import run
        env = safe_env()
        user = []
        if self.admin_password is not None:
            env["REDISCLI_AUTH"] = self.admin_password
            user = ["--user", "admin"]
        elif self.requirepass is not None:
            env["REDISCLI_AUTH"] = self.requirepass
        return run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)] +
                   user + [str(a) for a in args], timeout=timeout,
                   env=env).stdout

    def wait_xlen(self, key, n, timeout=30):
        """Wait until XLEN key == n; returns it."""
        return wait_for(lambda: self.call("XLEN", key) == n,
                        timeout=timeout,
                        what="XLEN %s == %d (now %s)" % (
                            key, n, self._safe_xlen(key)))

    def _safe_xlen(self, key):
        try:
            return self.call("XLEN", key)
        except Exception:  # noqa: BLE001
            return "?"
