"""The WAL's ordering promise, checked syscall by syscall: a response
never leaves the process before its audit record is in the spool file.

The gateway runs under strace (a wrapper given as PORTCULLIS_BIN), which
logs every write to a socket and every write to the spool in the order
the process made them.  For each answered request (its X-Request-Id),
the first spool write that holds the id must come before the first
socket write that holds it: then a kill -9 at any instant cannot leave a
response read by a client without its record in the page cache.  The
shapes tried are the ones that leave by other paths: pipelined
requests, HEAD, a 304, a cached blob by sendfile, an early answer before
the body is read and a framing error, on a plain listener.  TLS is not
here (the bytes on the wire are sealed): audit_wal_now() writes every
record of a TLS connection at once.  That the check can fail was shown
by not activating ev_wal (records then wait for the next append).
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

STRACE = shutil.which("strace")
UNSHARE = shutil.which("unshare")

WRITES = re.compile(r"^(\d+\s+)?(write|writev|sendmsg|sendfile|sendfile64|"
                    r"pwrite64|pwritev|pwritev2)\((\d+)<([^>]*)>")


def _wrapper(tmp_path, log):
    w = tmp_path / "portcullis-strace"
    real = os.path.join(os.path.dirname(__file__), "..", "..", "portcullis")
    w.write_text("#!/bin/sh\nexec %s -f -qq -yy -s 65536 -o %s -e trace="
                 "write,writev,sendmsg,sendfile,pwrite64,pwritev,pwritev2 "
                 "%s \"$@\"\n" % (STRACE, log, os.path.abspath(real)))
    w.chmod(w.stat().st_mode | stat.S_IXUSR)
    return str(w)


def _stop_traced(gw):
    """SIGTERM to the gateway itself (its pid in its start line), not to
    strace, which would detach and leave it running; then the usual
    stop, which finds strace gone with it."""
    m = re.search(r"server start .* pid=(\d+)", gw.log_text())
    if m is not None:
        pid = int(m.group(1))
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                 open("/proc/%d/stat" % pid).read().split()[2] == "Z",
                 timeout=30, what="the traced gateway to exit")
    gw.stop()


def _order(log, rids):
    """For each id: (index of its first spool write, of its first
    write to a TCP socket) in the strace log (strace -yy names the fd;
    the log file's writes, which name the id too, are not counted)."""
    first = {r: [None, None] for r in rids}
    with open(log, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            m = WRITES.match(line)
            if m is None:
                continue
            if m.group(4).endswith("/spool"):
                k = 0
            elif m.group(4).startswith("TCP"):
                k = 1
            else:
                continue
            for r in rids:
                if r in line and first[r][k] is None:
                    first[r][k] = i
    return first


def _check(log, rids):
    got = _order(log, rids)
    bad = {r: v for r, v in got.items()
           if v[1] is None or v[0] is None or v[0] > v[1]}
    assert not bad, "response before its record (spool, socket): %r" % bad


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


@pytest.mark.skipif(STRACE is None, reason="needs strace")
def test_no_response_leaves_before_its_record(start_registry, start_gateway,
                                               tmp_path, monkeypatch):
    rs = RedisServer(tmp_path / "redis")
    gw = None
    try:
        reg = start_registry("up1")
        man, blob = push_image(reg)
        log = str(tmp_path / "strace.log")
        monkeypatch.setenv("PORTCULLIS_BIN", _wrapper(tmp_path, log))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-order",
            cache=cache_cfg(tmp_path / "cache", sendfile="on"),
            audit=audit_cfg(rs.port, tmp_path / "spool")),
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
        _check(log, rids)
    finally:
        if gw is not None:
            _stop_traced(gw)
        rs.stop()


def _full_disk_wrapper(tmp_path, mnt):
    """The gateway in its own user and mount namespaces (no privilege
    needed) with mnt a tmpfs of 8 KiB: room for the spool's header and a
    few records, then every write of the spool fails (ENOSPC)."""
    w = tmp_path / "portcullis-fulldisk"
    real = os.path.abspath(os.path.join(os.path.dirname(__file__), "..",
                                        "..", "portcullis"))
    w.write_text("#!/bin/sh\nexec %s --user --map-root-user --mount sh -c "
                 "'mount -t tmpfs -o size=8k tmpfs %s && exec \"$0\" "
                 "\"$@\"' %s \"$@\"\n" % (UNSHARE, mnt, real))
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
        assert "spool_write error" in gw.log_text(), "the disk never filled"
        gw.stop()
        assert "dropped=0" in gw.log_text()
    finally:
        rs.stop()


@pytest.mark.skipif(UNSHARE is None, reason="needs unshare (util-linux)")
def test_a_record_the_full_disk_refused_is_not_lost_at_a_link_loss(
        start_registry, start_gateway, tmp_path, monkeypatch):
    """Record A's WAL write fails (disk full), room comes back, record C
    (the next number) is written; Redis dies before acknowledging either
    (paused, then SIGKILL: neither command ran).  Review: at the link
    loss A was spooled behind C, so the replay sent C first: refused as
    a GAP (a false "lost by Redis" alarm, portcullis_audit_redis_gaps)
    and forced past it, A written after C.  Now the records after one
    kept out of the WAL stay out too, and are spooled in order."""
    rs = RedisServer(tmp_path / "redis")
    try:
        reg = start_registry("up1")
        mnt = tmp_path / "wal"
        mnt.mkdir()
        monkeypatch.setenv("PORTCULLIS_BIN",
                           _full_disk_wrapper(tmp_path, mnt))
        gw = start_gateway(gateway_config(
            upstream(reg, default=True), instance_id="gw-order2",
            audit=audit_cfg(rs.port, mnt / "spool", timeout=2)))
        s = requests.Session()
        s.trust_env = False
        # Ten records of about 360 bytes: the spool's page nearly full.
        rids = [s.get(gw.url + "/v2/", timeout=15).headers["X-Request-Id"]
                for _ in range(10)]
        rs.wait_xlen("portcullis:audit", 10)
        # The gateway's view of the tmpfs, from outside its namespace.
        inside = "/proc/%d/root%s" % (gw.pid, mnt)
        filler = os.path.join(inside, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(64):         # 8 KiB of room at most
                os.write(fd, b"x" * 512)
        except OSError:
            pass                        # full
        finally:
            os.close(fd)
        rs.call("CLIENT", "PAUSE", "60000", "ALL")
        # A long User-Agent: A's record needs a new page of the tmpfs;
        # C's, short, fits in what is left of the last one.
        a = s.get(gw.url + "/v2/", timeout=15,
                  headers={"User-Agent": "a" * 3000}).headers["X-Request-Id"]
        wait_for(lambda: "spool_write error" in gw.log_text(), timeout=30,
                 what="the WAL write of A failed")
        os.unlink(filler)
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
