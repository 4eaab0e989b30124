"""The WAL's ordering promise, checked at each response write: a
response never leaves the process before its audit record is in the
spool file.

The check stops the gateway at each system call that writes to a
socket (gdb, `catch syscall`, entry stop: nothing of it has left yet),
takes the X-Request-Id of every response head in the bytes it is about
to send, and reads the spool file from gdb's own process, another
process than the gateway: the record of each id must be there already
(the page cache, which a kill -9 leaves), whatever way it got there (a
pwrite into the ring per loop turn today; a store into a mapped file was
tried).  The ring never removes a record (its head moves), so the
record of a response that waited for its socket after Redis
acknowledged it is still there; the stops before ftruncate and rename,
which released the acknowledged prefix before the ring, are kept: they
must not happen any more, and would only widen what counts as there.
Then a kill -9 at any instant cannot leave a
response read by a client without its record in the page cache.  The
shapes tried are the ones that leave by other paths: pipelined
requests, HEAD, a 304, a cached blob by sendfile, an early answer before
the body is read and a framing error, on a plain listener.  TLS is not
here (the bytes on the wire are sealed): audit_wal_now() writes every
record of a TLS connection at once.  That the check can fail was shown
by skipping the append (the records then went to Redis only): every id
was reported missing.
"""

import os
import re
import shutil
import signal
import socket
import stat

import pytest
import requests

from lib.cache import cache_cfg
from lib.gateway import gateway_config, upstream
from lib.redis import RedisServer
from lib.util import wait_for
from test_audit_crash import MT, audit_cfg, push_image, stream_request_ids
from test_policy import pki  # noqa: F401 (fixture: a CA, a server cert)

GDB = shutil.which("gdb")
UNSHARE = shutil.which("unshare")

# Run by gdb around the gateway: at the entry of each socket write, the
# ids of the response heads it sends, each with whether its record was
# in the spool file at that moment ("ok <id>" / "missing <id>").
GDB_SCRIPT = r"""
import gdb, os, re, struct
SPOOL, OUT = os.environ["WAL_SPOOL"], os.environ["WAL_OUT"]
RID = re.compile(rb"\r\nX-Request-Id: ([0-9a-f]+)\r\n")
out = open(OUT, "a")
for c in ("set pagination off", "set confirm off",
          "set startup-with-shell off"):
    gdb.execute(c)
for sig in ("SIGPIPE", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGCHLD",
            "SIGINT"):
    gdb.execute("handle %s nostop noprint pass" % sig)
# write, writev, sendto, sendmsg (x86_64 numbers, by name in the catch);
# and what takes records out of the file (a release of the acknowledged
# prefix): ftruncate, rename.
gdb.execute("catch syscall write writev sendto sendmsg ftruncate rename "
            "renameat renameat2")
# Every id that was in the file at some moment up to now: a record
# acknowledged and released before its response leaves (a response
# that waits for the socket) was there before it.
seen = set()

def reg(n):
    return int(gdb.parse_and_eval("$" + n)) & (2 ** 64 - 1)

def mem(a, n):
    return bytes(gdb.selected_inferior().read_memory(a, min(n, 1 << 20)))

def iov(a, cnt):
    b = b""
    for i in range(min(cnt, 1024)):
        base, ln = struct.unpack("<QQ", mem(a + 16 * i, 16))
        if ln:
            b += mem(base, ln)
    return b

CRC32C = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    CRC32C.append(c)

def crc32c(p):
    c = 0xFFFFFFFF
    for b in p:
        c = CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

def spool_ids():
    # Every record in the ring from its first position on (the ring
    # releases by moving its head, never removes a record, and the
    # test's records do not wrap it): frames of "PCR3", length, CRC-32C
    # and their own position (lib/audit_spool.py).
    ids = set()
    try:
        f = open(SPOOL, "rb")
    except OSError:
        return ids
    with f:
        pos = 4096
        while True:
            f.seek(pos)
            h = f.read(20)
            if len(h) < 20:
                break
            magic, n, crc, at = struct.unpack("<IIIQ", h)
            if magic != 0x33524350 or at != pos or not 0 < n <= 4096:
                break
            p = f.read(n)
            if len(p) != n or crc32c(p) != crc:
                break
            parts = p.split(b"\0")
            ids.add(dict(zip(parts[0::2], parts[1::2])).get(
                b"request_id"))
            pos += 20 + n
    return ids

def check():
    global seen
    if reg("rax") != 2 ** 64 - 38:      # -ENOSYS: the entry stop
        return
    nr, a, b = reg("orig_rax"), reg("rsi"), reg("rdx")
    if nr in (77, 82, 264, 316):        # before a release
        seen |= spool_ids()
        return
    if nr in (1, 44):                   # write, sendto
        data = mem(a, b)
    elif nr == 20:                      # writev
        data = iov(a, b)
    elif nr == 46:                      # sendmsg: msg_iov, msg_iovlen
        v, n = struct.unpack("<QQ", mem(a + 16, 16))
        data = iov(v, n)
    else:
        return
    rids = RID.findall(data)
    if not rids:
        return
    seen |= spool_ids()
    have = seen
    for r in rids:
        out.write("%s %s\n" % ("ok" if r in have else "missing",
                               r.decode()))
    out.flush()

gdb.execute("run", to_string=True)
while True:
    try:
        check()
        gdb.execute("continue", to_string=True)
    except gdb.error:
        break
out.close()
"""


def _wrapper(tmp_path, spool, out):
    script = tmp_path / "walcheck.py"
    script.write_text(GDB_SCRIPT)
    w = tmp_path / "portcullis-gdb"
    real = os.path.join(os.path.dirname(__file__), "..", "..", "portcullis")
    w.write_text("#!/bin/sh\nWAL_SPOOL=%s WAL_OUT=%s exec %s -q -nx -batch "
                 "-x %s --args %s \"$@\"\n" % (
                     spool, out, GDB, script, os.path.abspath(real)))
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return str(w)


def _stop_traced(gw):
    """SIGTERM to the gateway itself (its pid in its start line), not to
    gdb; then the usual stop, which finds gdb gone with it."""
    m = re.search(r"server start .* pid=(\d+)", gw.log_text())
    if m is not None:
        pid = int(m.group(1))
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                 open("/proc/%d/stat" % pid).read().split()[2] == "Z",
                 timeout=60, what="the traced gateway to exit")
    gw.stop()


def _check(out, rids):
    """Every id was seen at a socket write, each time with its record."""
    seen, missing = set(), set()
    with open(out, encoding="utf-8") as f:
        for line in f:
            k, r = line.split()
            seen.add(r)
            if k == "missing":
                missing.add(r)
    assert set(rids) <= seen, "writes not seen: %r" % (set(rids) - seen)
    assert not missing & set(rids), \
        "response before its record: %r" % (missing & set(rids))


def _raw(host, port, data, want):
    """Send data, read until `want` responses' heads are in; the ids."""
    s = socket.create_connection((host, port), timeout=15)
    try:
        s.sendall(data)
        buf = b""
        while buf.count(b"X-Request-Id: ") < want:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    finally:
        s.close()
    return re.findall(rb"X-Request-Id: ([0-9a-f]+)", buf)


@pytest.mark.skipif(GDB is None, reason="needs gdb")
def test_no_response_leaves_before_its_record(start_registry, start_gateway,
                                               tmp_path, monkeypatch):
    rs = RedisServer(tmp_path / "redis")
    gw = None
    try:
        reg = start_registry("up1")
        man, blob = push_image(reg)
        out = str(tmp_path / "walcheck.out")
        spool = tmp_path / "spool"
        monkeypatch.setenv("PORTCULLIS_BIN", _wrapper(tmp_path, spool, out))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-order",
            cache=cache_cfg(tmp_path / "cache", sendfile="on"),
            audit=audit_cfg(rs.port, spool)),
            start_timeout=60)
        s = requests.Session()
        s.trust_env = False
        mu = "%s/v2/crash/app/manifests/%s" % (gw.url, man)
        bu = "%s/v2/crash/app/blobs/%s" % (gw.url, blob)
        rids = []
        r = s.get(mu, headers={"Accept": MT}, timeout=30)
        assert r.status_code == 200
        etag = r.headers.get("ETag", '"%s"' % man)
        # The misses stream: their heads leave before they end (and
        # before their records), which is no answer yet.  Not counted.
        assert s.get(bu, timeout=30).status_code == 200
        for _ in range(3):
            for meth, u, h in (("GET", mu, {"Accept": MT}),
                               ("HEAD", mu, {"Accept": MT}),
                               ("GET", mu, {"Accept": MT,
                                            "If-None-Match": etag}),
                               ("GET", bu, {}), ("GET", gw.url + "/v2/",
                                                 {})):
                r = s.request(meth, u, headers=h, timeout=30)
                assert r.status_code in (200, 304), (meth, u, r.status_code)
                rids.append(r.headers["X-Request-Id"])
        host, port = gw.host.rsplit(":", 1)
        port = int(port)
        path = "/v2/crash/app/manifests/%s" % man
        pipe = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n\r\n"
                        % (p.encode(), MT.encode())
                        for p in [path, "/v2/", path, "/v2/"] * 5)
        ids = _raw(host, port, pipe, 20)
        assert len(ids) == 20
        rids += [i.decode() for i in ids]
        # Answered before its body is read: a bad method (405) at once.
        early = (b"POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000"
                 b"\r\n\r\nabc")
        ids = _raw(host, port, early, 1)
        assert len(ids) == 1
        rids.append(ids[0].decode())
        frame = (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
        ids = _raw(host, port, frame, 1)
        assert len(ids) == 1
        rids.append(ids[0].decode())
        wait_for(lambda: set(rids) <= set(stream_request_ids(rs)),
                 timeout=60, what="every record in Redis")
        _stop_traced(gw)
        gw = None
        _check(out, rids)
    finally:
        if gw is not None:
            _stop_traced(gw)
        rs.stop()


def _full_disk_wrapper(tmp_path, mnt, size="8k", fill_kb=0):
    """The gateway in its own user and mount namespaces (no privilege
    needed) with mnt a tmpfs of `size` (8 KiB: room for the spool's
    header page, not for its ring), fill_kb of it taken by mnt/filler
    before the gateway starts."""
    w = tmp_path / "portcullis-fulldisk"
    real = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                        "..", "portcullis"))
    fill = " && head -c %d /dev/zero > %s/filler" % (fill_kb * 1024, mnt) \
        if fill_kb else ""
    w.write_text("#!/bin/sh\nexec %s --user --map-root-user --mount sh -c "
                 "'mount -t tmpfs -o size=%s tmpfs %s%s && exec \"$0\" "
                 "\"$@\"' %s \"$@\"\n" % (UNSHARE, size, mnt, fill, real))
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return str(w)


@pytest.mark.skipif(UNSHARE is None, reason="needs unshare (util-linux)")
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_full_disk_still_sends_every_record_once(start_registry,
                                                 start_gateway, tmp_path,
                                                 monkeypatch, pki, tls):
    """The WAL's disk is full, Redis is up: each answered request still
    has exactly one record (sent as with wal false), on a plain listener
    (records gathered per loop turn) and on TLS (written at once).
    Review: a TLS connection's record was dropped when its write failed
    (289 of 300 requests had none)."""
    from test_policy import tls_listen
    rs = RedisServer(tmp_path / "redis")
    try:
        reg = start_registry("up1")
        mnt = tmp_path / "wal"
        mnt.mkdir()
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _full_disk_wrapper(tmp_path, mnt))
        kw = {"tls_client": {"ca": pki.ca}} if tls else {}
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-full",
            listen=tls_listen(pki) if tls else {},
            audit=audit_cfg(rs.port, mnt / "spool")), **kw)
        s = requests.Session()
        s.trust_env = False
        if tls:
            s.verify = pki.ca
        rids = []
        for _ in range(100):
            r = s.get(gw.url + "/v2/", timeout=15)
            assert r.status_code == 200
            rids.append(r.headers["X-Request-Id"])
        wait_for(lambda: set(rids) <= set(stream_request_ids(rs)),
                 timeout=60, what="every answered request in Redis")
        got = stream_request_ids(rs)
        assert len(got) == len(set(got)), "a record twice"
        # The ring's first step (4 MiB) cannot be allocated on 8 KiB:
        # every append fails as a write would.
        assert "spool_allocate" in gw.log_text(), "the disk never filled"
        gw.stop()
        assert "dropped=0" in gw.log_text()
    finally:
        rs.stop()


@pytest.mark.skipif(UNSHARE is None, reason="needs unshare (util-linux)")
def test_a_record_the_full_disk_refused_is_not_lost_at_a_link_loss(
        start_registry, start_gateway, tmp_path, monkeypatch):
    """Record A's WAL write fails (the disk was full when the ring was to
    be allocated), room comes back (the writer's tick allocates the
    ring), record C (the next number) follows; Redis dies before
    acknowledging either (paused, then SIGKILL: neither command ran).
    Review: at the link loss A was spooled behind C, so the replay sent C
    first: refused as a GAP (a false "lost by Redis" alarm,
    portcullis_audit_redis_gaps) and forced past it, A written after C.
    Now the records after one kept out of the WAL stay out too, and are
    spooled in order."""
    rs = RedisServer(tmp_path / "redis")
    try:
        reg = start_registry("up1")
        mnt = tmp_path / "wal"
        mnt.mkdir()
        # 64 KiB, 56 of them taken: the header page fits, the ring of
        # 16 KiB (spool_max_bytes) does not.
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _full_disk_wrapper(tmp_path, mnt, "64k", 56))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-order2",
            audit=audit_cfg(rs.port, mnt / "spool", timeout=2,
                            spool_max_bytes=16384)))
        assert "spool_allocate" in gw.log_text(), "the disk was not full"
        s = requests.Session()
        s.trust_env = False
        rids = [s.get(gw.url + "/v2/", timeout=15).headers["X-Request-Id"]
                for _ in range(10)]
        rs.wait_xlen("portcullis:audit", 10)
        rs.call("CLIENT", "PAUSE", "60000", "ALL")
        a = s.get(gw.url + "/v2/", timeout=15,
                  headers={"User-Agent": "a" * 3000}).headers["X-Request-Id"]
        # Room comes back (the gateway's view of the tmpfs, from outside
        # its namespace): the tick allocates the ring.
        os.unlink("/proc/%d/root%s/filler" % (gw.pid, mnt))
        wait_for(lambda: "audit spool allocated" in gw.log_text(),
                 timeout=30, what="the ring allocated")
        c = s.get(gw.url + "/v2/", timeout=15).headers["X-Request-Id"]
        rids += [a, c]
        rs.kill()
        wait_for(lambda: "audit spool records=" in gw.log_text(),
                 timeout=30, what="the link loss spooled A and C")
        rs.start()
        wait_for(lambda: c in stream_request_ids(rs), timeout=60,
                 what="C in Redis after the replay")
        # And the requests after them.
        for _ in range(3):
            rids.append(s.get(gw.url + "/v2/", timeout=15).headers[
                "X-Request-Id"])
        try:
            wait_for(lambda: set(rids) <= set(stream_request_ids(rs)),
                     timeout=30, what="every answered request in Redis")
        finally:
            log = [ln for ln in gw.log_text().splitlines() if "audit" in ln]
            got = stream_request_ids(rs)
            print("missing: %s\nlog:\n%s" % (
                [rids.index(x) for x in set(rids) - set(got)],
                "\n".join(log[-8:])))
        assert len(got) == len(set(got))
        assert not [ln for ln in log if "redis_gap" in ln]
        assert got.index(a) < got.index(c), "A after C in the stream"
        gw.stop()
    finally:
        rs.stop()


@pytest.mark.skipif(UNSHARE is None, reason="needs unshare (util-linux)")
def test_reject_mode_serves_nothing_the_full_disk_cannot_keep(
        start_registry, start_gateway, tmp_path, monkeypatch):
    """on_failure reject, Redis down from the start, and a disk too full
    for the ring's first step (8 KiB: the header page only): every
    record would be dropped, so every request is refused with 503
    before it is served.  Redis comes back: requests are served again
    (from memory) and each answered one has its record.  Review: the
    admission counted only the ring's free bytes, so requests were
    served (200) and their records dropped."""
    from lib.util import free_port
    port = free_port()
    rs = None
    try:
        reg = start_registry("up1")
        mnt = tmp_path / "wal"
        mnt.mkdir()
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _full_disk_wrapper(tmp_path, mnt))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-rejfull",
            audit=audit_cfg(port, mnt / "spool", on_failure="reject")))
        assert "spool_allocate" in gw.log_text(), "the disk was not full"
        s = requests.Session()
        s.trust_env = False
        served = []
        codes = []
        for _ in range(20):
            r = s.get(gw.url + "/v2/", timeout=15)
            codes.append(r.status_code)
            if r.status_code == 200:
                served.append(r.headers["X-Request-Id"])
        assert codes == [503] * 20, "served with nowhere to keep the " \
            "record: %r" % codes
        rs = RedisServer(tmp_path / "redis", port=port)

        def one():
            r = s.get(gw.url + "/v2/", timeout=15)
            codes.append(r.status_code)
            if r.status_code == 200:
                served.append(r.headers["X-Request-Id"])
            return r.status_code == 200
        wait_for(one, timeout=60, what="served again with Redis up")
        for _ in range(5):
            assert one()
        wait_for(lambda: set(served) <= set(stream_request_ids(rs)),
                 timeout=60, what="every answered request in Redis")
        got = stream_request_ids(rs)
        assert len(got) == len(set(got)), "a record twice"
        gw.stop()
        # Dropped: only the records of the 503s (nowhere to keep them):
        # the 20 above and any while the link to Redis came back.
        assert set(codes) == {200, 503}
        m = re.search(r"audit stop .* dropped=(\d+) rejected=(\d+)",
                      gw.log_text())
        assert m and int(m.group(1)) == int(m.group(2)) == \
            codes.count(503), (m and m.group(0), codes.count(503))
    finally:
        if rs is not None:
            rs.stop()


@pytest.mark.skipif(UNSHARE is None, reason="needs unshare (util-linux)")
def test_reject_mode_refuses_before_a_step_the_disk_refuses(
        start_registry, start_gateway, tmp_path, monkeypatch):
    """on_failure reject, Redis away, the disk full past the ring's first
    4 MiB step (a tmpfs of 4 MiB + 64 KiB, the rest taken once the
    gateway started): requests are served while their records fit in
    the step, then refused (503), and every request served has its
    record once Redis is back.  Review: the admission knew of a refused
    step only once an append had tried it; the request whose record
    needed the next step was admitted and served, and its record
    dropped."""
    rs = RedisServer(tmp_path / "redis")
    try:
        reg = start_registry("up1")
        mnt = tmp_path / "wal"
        mnt.mkdir()
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _full_disk_wrapper(tmp_path, mnt, "4160k"))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-rjstep",
            audit=audit_cfg(rs.port, mnt / "spool", timeout=2,
                            on_failure="reject",
                            spool_max_bytes=(16 << 20) + 4096)))
        assert "spool_allocate" not in gw.log_text()
        # The rest of the tmpfs taken (from outside its namespace).
        filler = "/proc/%d/root%s/filler" % (gw.pid, mnt)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(1024):
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        s = requests.Session()
        s.trust_env = False
        ua = {"User-Agent": "a" * 3000}
        r = s.get(gw.url + "/v2/", timeout=15, headers=ua)
        rs.wait_xlen("portcullis:audit", 1)
        served = [r.headers["X-Request-Id"]]
        rs.kill()
        statuses = []
        # About 3,000 records (the user agent is cut to 1 KiB) fill the
        # first step.
        for _ in range(8000):
            r = s.get(gw.url + "/v2/", timeout=15, headers=ua)
            statuses.append(r.status_code)
            if r.status_code == 200:
                served.append(r.headers["X-Request-Id"])
            elif len(statuses) > 100 and r.status_code == 503 and \
                    statuses[-5:] == [503] * 5:
                break
        assert statuses[-1] == 503 and len(served) > 1000, \
            (len(served), statuses[-10:])
        rs.start()
        try:
            wait_for(lambda: set(served) <= set(stream_request_ids(rs)),
                     timeout=60, what="every served request in Redis")
        finally:
            got = set(stream_request_ids(rs))
            print("served without a record: %d; log:\n%s" % (
                len(set(served) - got), "\n".join(
                    ln for ln in gw.log_text().splitlines()
                    if "audit" in ln and "req done" not in ln)[-3000:]))
        gw.stop()
    finally:
        rs.stop()
