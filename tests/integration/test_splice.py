"""The pass-through body relayed socket to socket (buffers.splice,
src/proxy_splice.c): a Content-Length blob of at least high_watermark
bytes goes from the upstream socket to the client socket through a pipe.
The edges of that path keep the evbuffer path's behaviour: the bytes and
their count (log line and audit record), an upstream that sends fewer
bytes than its Content-Length and closes, an upstream that stalls, a
client that leaves mid-body (499, the upstream connection dropped), a
slow client (backpressure: bounded memory), and the upstream connection
back in the pool after a complete body.  The review (session 7) added
the hostile edges: bytes past the Content-Length (not pooled), a body in
small segments with a client that does not read (no busy loop), an
upstream reset, aborted transfers (no descriptor kept), the descriptor
budget, half-close, SIGTERM and SIGHUP mid-splice, the metrics count.

Real parts: redis-server for the records.  The upstream is the named test
double lib/lying_upstream.py (a misbehaving registry: a body cut short, a
stall; it also counts the connections made to it, which a real
docker-registry does not tell)."""

import hashlib
import os
import re
import signal
import socket
import threading
import time

import pytest

from lib import rawhttp
from lib.gateway import gateway_config
from lib.lying_upstream import liar_upstream
from lib.redis import entries_to_dicts
from lib.util import pid_alive, wait_for

MIB = 1 << 20
WATERMARK = 262144
STREAM = "portcullis:audit"


@pytest.fixture
def redis(start_redis):
    return start_redis()


def gw_cfg(liar, splice=True, timeouts=None, audit=None):
    cfg = gateway_config(liar_upstream(liar), buffers={
        "high_watermark": WATERMARK, "splice": splice})
    cfg["timeouts"].update(timeouts or {})
    cfg["log"] = {"level": "debug"}     # the splice's start and end
    if audit is not None:
        cfg["audit"] = audit
    return cfg


def audit_cfg(redis, tmp_path):
    """An audit section writing to `redis`, spooling under tmp_path."""
    return {"redis": "127.0.0.1:%d" % redis.port,
            "spool_file": str(tmp_path / "a.spool"), "timeout": 2}


def request(d):
    return "/v2/liar/app/blobs/" + d


def blob(liar, size, **kw):
    """`size` random bytes the liar serves as a blob (add_blob's modes in
    kw): (data, digest)."""
    data = os.urandom(size)
    return data, liar.add_blob(data, **kw)


def open_get(gw, d, rcvbuf=None, timeout=30):
    """A raw client socket that has sent a GET of blob d (HTTP/1.1, kept
    alive).  `rcvbuf` sets SO_RCVBUF before connect: a slow reader."""
    s = socket.socket()
    try:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n"
                   % (request(d), gw.host)).encode())
    except BaseException:
        s.close()
        raise
    return s


def get_whole(c, d, data, timeout=30):
    """GET blob d on RawConn c and check it is a 200 carrying all of
    `data`; the response."""
    c.send_request("GET", request(d))
    r = c.read_response(timeout=timeout)
    assert r.status == 200, r
    assert r.body == data
    return r


def pull(gw, d, data, timeout=30):
    """get_whole() on a connection of its own."""
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=timeout) as c:
        return get_whole(c, d, data, timeout=timeout)


def still_serves(gw, liar):
    """The gateway goes on serving: a new 1 MiB blob comes whole."""
    good, dg = blob(liar, MIB)
    pull(gw, dg, good)


def spliced(gw):
    """Whether the gateway has logged a splice start."""
    return "proxy splice start" in gw.log_text()


def wait_spliced(gw):
    wait_for(lambda: spliced(gw), timeout=30, what="the splice")


def read_head(s):
    """The response head off socket s; (status, fields, body so far)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "closed before the head: %r" % buf[:200]
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        fields[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), fields, rest


def head_ok(s):
    """read_head() of a 200; (fields, body so far)."""
    status, fields, rest = read_head(s)
    assert status == 200, status
    return fields, rest


def read_at_least(s, got, n):
    """Read on until `got` (the bytes so far) holds n bytes; the bytes.
    The peer must not close first."""
    while len(got) < n:
        b = s.recv(1 << 20)
        assert b
        got += b
    return got


def read_to_eof(s, have, limit, timeout=60):
    """Read until the peer closes (or `limit` bytes); the bytes."""
    got = [have]
    n = len(have)
    end = time.monotonic() + timeout
    while n < limit and time.monotonic() < end:
        try:
            b = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not b:
            break
        got.append(b)
        n += len(b)
    return b"".join(got)


def log_done_line(gw, rid):
    lines = []

    def there():
        lines[:] = [ln for ln in gw.log_text().splitlines()
                    if re.search(r"\bid=%s\b" % rid, ln) and
                    " req done " in ln]
        return lines
    wait_for(there, timeout=30, what="log line of %s" % rid)
    assert len(lines) == 1, lines
    return dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", lines[0]))


def record_of(rs, rid):
    found = []

    def there():
        with rs.client() as c:
            found[:] = [d for _, d in entries_to_dicts(
                c.call("XRANGE", STREAM, "-", "+"))
                if d["request_id"] == rid]
        return found
    wait_for(there, timeout=30, what="record of %s" % rid)
    assert len(found) == 1, found
    return found[0]


def test_spliced_blob_is_whole_counted_and_its_connection_pooled(
        liar, redis, start_gateway, tmp_path):
    data, d = blob(liar, 8 * MIB + 12345)
    gw = start_gateway(gw_cfg(liar, audit=audit_cfg(redis, tmp_path)))
    rids = []
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=60) as c:
        for _ in range(3):
            r = get_whole(c, d, data, timeout=60)
            assert not r.wants_close()
            rids.append(r.header("X-Request-Id"))
    log = gw.log_text()
    assert log.count("proxy splice start") == 3, log[-3000:]
    assert log.count("proxy splice done bytes=%d" % len(data)) == 3
    # One upstream connection served all three: pooled after each body.
    assert liar.accepted == 1, liar.accepted
    assert liar.requests("GET", "/v2/app/blobs/" + d) == 3
    for rid in rids:
        line = log_done_line(gw, rid)
        rec = record_of(redis, rid)
        assert line["status"] == rec["status"] == "200", (line, rec)
        assert line["out"] == rec["bytes_out"] == str(len(data)), (line,
                                                                     rec)
        assert line["ms"] == rec["duration_ms"], (line, rec)


def test_small_blob_and_splice_off_take_the_copy_path(liar, start_gateway):
    small, ds = blob(liar, WATERMARK // 2)
    big, db = blob(liar, 2 * MIB)
    gw = start_gateway(gw_cfg(liar))
    pull(gw, ds, small)
    assert not spliced(gw)
    gw2 = start_gateway(gw_cfg(liar, splice=False))
    pull(gw2, db, big)
    assert not spliced(gw2)


def test_short_upstream_body_ends_the_client_connection(liar,
                                                         start_gateway):
    # The upstream announces 8 MiB, sends half and closes: the client's
    # head is out, so the only honest end is to cut its connection.
    size = 8 * MIB
    data, d = blob(liar, size, mode="truncate")
    gw = start_gateway(gw_cfg(liar))
    with open_get(gw, d) as s:
        fields, rest = head_ok(s)
        assert fields["content-length"] == str(size)
        got = read_to_eof(s, rest, size)
    assert len(got) <= size // 2, len(got)
    assert got == data[:len(got)]
    wait_for(lambda: "mid-response" in gw.log_text(), timeout=30,
             what="the abort logged")
    assert spliced(gw)
    assert pid_alive(gw.pid)
    # The gateway goes on serving (the connection was not pooled).
    still_serves(gw, liar)


def test_upstream_stalling_mid_body_times_out(liar, start_gateway):
    size = 8 * MIB
    _, d = blob(liar, size, mode="stall", stall_at=2 * MIB)
    gw = start_gateway(gw_cfg(liar, timeouts={"upstream_response": 1}))
    s = open_get(gw, d)
    try:
        _, rest = head_ok(s)
        got = read_to_eof(s, rest, size, timeout=30)
    finally:
        s.close()
        liar.release(d)
    assert len(got) <= 2 * MIB, len(got)
    log = gw.log_text()
    assert "proxy splice start" in log
    assert "no answer within 1000 ms" in log, log[-3000:]


def test_client_leaving_mid_body_is_499_and_upstream_not_pooled(
        liar, redis, start_gateway, tmp_path):
    size = 64 * MIB
    _, d = blob(liar, size)
    gw = start_gateway(gw_cfg(liar, audit=audit_cfg(redis, tmp_path)))
    with open_get(gw, d) as s:
        fields, got = head_ok(s)
        rid = fields["x-request-id"]
        got = read_at_least(s, got, 2 * MIB)
        wait_spliced(gw)
    line = log_done_line(gw, rid)
    rec = record_of(redis, rid)
    assert line["status"] == rec["status"] == "499", (line, rec)
    assert line["out"] == rec["bytes_out"], (line, rec)
    assert len(got) <= int(rec["bytes_out"]) < size, rec
    # The upstream connection went with the client: the next request
    # dials a new one.
    assert liar.accepted == 1
    wait_for(lambda: liar.open_connections() == 0, timeout=30,
             what="the upstream connection closed")
    still_serves(gw, liar)
    assert liar.accepted == 2, liar.accepted


def _kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise KeyError(field)


def test_slow_client_large_blob_keeps_memory_bounded(liar, start_gateway):
    # 96 MiB to a client that reads slowly through a small receive
    # buffer: the pipe (one watermark) is all the gateway holds, so the
    # upstream is read only as fast as the client reads.
    size = 96 * MIB
    _, d = blob(liar, size)
    gw = start_gateway(gw_cfg(liar))
    base = _kib(gw.pid, "VmRSS")
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _kib(gw.pid, "VmRSS"))
            except (OSError, KeyError, ValueError):
                return
            stop.wait(0.02)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    h = hashlib.sha256()
    n = 0
    try:
        with open_get(gw, d, rcvbuf=16384, timeout=60) as s:
            _, rest = head_ok(s)
            h.update(rest)
            n = len(rest)
            # Slow at first (the upstream must wait for us), then fast.
            end = time.monotonic() + 300
            reads = 0
            while n < size and time.monotonic() < end:
                b = s.recv(65536)
                if not b:
                    break
                h.update(b)
                n += len(b)
                reads += 1
                if reads < 400:
                    stop.wait(0.005)
                if reads == 400:
                    # The upstream has been held back: it has not sent
                    # the whole blob while we read a small part of it.
                    assert liar.answering() == 1
    finally:
        stop.set()
        t.join(timeout=5)
    assert n == size, n
    assert "sha256:" + h.hexdigest() == d
    assert spliced(gw)
    # The blob is 96 MiB; the gateway grew by well under a tenth of it.
    assert peak[0] - base < 8 * 1024, (base, peak[0])


def test_tls_listener_keeps_the_copy_path(liar, start_gateway, tmp_path):
    # splice(2) moves bytes between sockets; a TLS connection's bytes are
    # records the gateway must encrypt, so they are copied as before.
    import ssl
    from lib.pki import PKI
    pki = PKI(tmp_path / "pki")
    crt, key = pki.issue("gw", "127.0.0.1", san="IP:127.0.0.1")
    data, d = blob(liar, 4 * MIB)
    cfg = gw_cfg(liar)
    cfg["listen"] = {"tls": {"cert_file": crt, "key_file": key}}
    gw = start_gateway(cfg, tls_client={"ca": pki.ca})
    ctx = ssl.create_default_context(cafile=pki.ca)
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close"
                   "\r\n\r\n" % (request(d), gw.host)).encode())
        _, rest = head_ok(s)
        got = read_to_eof(s, rest, len(data) + 1)
    assert got == data
    assert not spliced(gw)


def test_bytes_past_the_body_are_not_pooled_for_the_next_request(
        liar, start_gateway):
    # A hostile upstream sends a whole second answer right after the
    # blob's Content-Length.  The splice reads no byte past the body, so
    # those bytes wait in the upstream socket: a connection pooled with
    # them would hand them to the next request (here the same client's
    # pipelined manifest GET) as its answer.
    data, d = blob(liar, 2 * MIB, mode="extra")
    manifest = b'{"schemaVersion":2,"layers":[]}'
    liar.set_tag("app", "v1", manifest,
                 "application/vnd.oci.image.manifest.v1+json")
    gw = start_gateway(gw_cfg(liar))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=30) as c:
        c.send(rawhttp.build("GET", request(d), host=gw.host) +
               rawhttp.build("GET", "/v2/liar/app/manifests/v1",
                             host=gw.host))
        r = c.read_response(timeout=30)
        assert r.status == 200 and r.body == data
        r2 = c.read_response(timeout=30)
        assert b"poisoned" not in r2.body, r2.body
        assert r2.status == 200 and r2.body == manifest, r2
    assert spliced(gw)
    assert "proxy stray_bytes upstream=liar" in gw.log_text()
    assert liar.requests("GET", "/v2/app/manifests/v1") == 1


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_aborted_transfers_leak_no_descriptors(liar, start_gateway):
    # Clients that leave mid-body (a FIN, or a reset) many times over:
    # every pipe and upstream socket goes with them.
    _, d = blob(liar, 16 * MIB)
    gw = start_gateway(gw_cfg(liar))
    with rawhttp.RawConn("127.0.0.1", gw.port, timeout=30) as c:
        c.send_request("GET", "/v2/")       # warm: log, listeners, pool
        c.read_response(timeout=30)
    base = _fds(gw.pid)
    rounds = 24
    for i in range(rounds):
        with open_get(gw, d) as s:
            _, _, got = read_head(s)
            read_at_least(s, got, 2 * WATERMARK)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wait_for(lambda: gw.log_text().count("status=499") == rounds,
             timeout=60, what="%d aborts logged" % rounds)
    assert gw.log_text().count("proxy splice start") == rounds
    wait_for(lambda: liar.open_connections() == 0, timeout=30,
             what="the upstream connections closed")
    wait_for(lambda: _fds(gw.pid) <= base, timeout=30,
             what="descriptors back to %d (now %d)" % (base, _fds(gw.pid)))


def test_client_that_never_reads_times_out(liar, start_gateway):
    # The client sends its GET and never reads: the pipe fills, the
    # upstream is read no further, and timeouts.body ends it.
    size = 64 * MIB
    _, d = blob(liar, size)
    gw = start_gateway(gw_cfg(liar, timeouts={"body": 1}))
    base = _fds(gw.pid)
    with open_get(gw, d, rcvbuf=16384) as s:
        wait_for(lambda: "conn timeout during=response write" in
                 gw.log_text(), timeout=60, what="the write timeout")
        got = read_to_eof(s, b"", size, timeout=30)
    assert len(got) < size // 4, len(got)
    assert spliced(gw)
    wait_for(lambda: liar.open_connections() == 0, timeout=30,
             what="the upstream connection closed")
    wait_for(lambda: _fds(gw.pid) <= base, timeout=30,
             what="descriptors back to %d" % base)


def test_half_closed_client_gets_the_whole_spliced_blob(liar,
                                                        start_gateway):
    data, d = blob(liar, 8 * MIB)
    gw = start_gateway(gw_cfg(liar))
    with open_get(gw, d) as s:
        s.shutdown(socket.SHUT_WR)
        _, rest = head_ok(s)
        got = read_to_eof(s, rest, len(data) + 1)
    assert got == data
    assert spliced(gw)


def stalled_splice(liar, start_gateway, timeouts=None):
    """An 8 MiB blob whose upstream stalls at 2 MiB, its GET answered 200
    and spliced: (data, digest, gateway, client socket, bytes so far)."""
    data, d = blob(liar, 8 * MIB, mode="stall", stall_at=2 * MIB)
    gw = start_gateway(gw_cfg(liar, timeouts=timeouts))
    s = open_get(gw, d)
    try:
        _, got = head_ok(s)
        wait_spliced(gw)
    except BaseException:
        s.close()
        raise
    return data, d, gw, s, got


def test_sigterm_mid_splice_lets_the_body_finish(liar, start_gateway):
    data, d, gw, s, got = stalled_splice(liar, start_gateway,
                                         timeouts={"drain": 60})
    with s:
        os.kill(gw.pid, signal.SIGTERM)
        wait_for(lambda: "server drain start" in gw.log_text(), timeout=30,
                 what="the drain")
        liar.release(d)
        got = read_to_eof(s, got, len(data) + 1)
    assert got == data
    wait_for(lambda: not gw.alive(), timeout=30, what="the exit")


def test_sigterm_drain_ends_a_stalled_splice(liar, start_gateway):
    data, d, gw, s, got = stalled_splice(liar, start_gateway,
                                         timeouts={"drain": 1})
    try:
        os.kill(gw.pid, signal.SIGTERM)
        got = read_to_eof(s, got, len(data) + 1, timeout=30)
        wait_for(lambda: not gw.alive(), timeout=30,
                 what="the exit")
    finally:
        s.close()
        liar.release(d)
    assert len(got) <= 2 * MIB


def test_sighup_mid_splice_keeps_the_body(liar, start_gateway):
    data, d, gw, s, got = stalled_splice(liar, start_gateway)
    with s:
        os.kill(gw.pid, signal.SIGHUP)
        wait_for(lambda: gw.reloads_ended() >= 1, timeout=30,
                 what="the reload")
        liar.release(d)
        got = read_to_eof(s, got, len(data))
    assert got == data
    assert pid_alive(gw.pid)


def _cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        f = f.read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])      # utime + stime


def test_client_not_reading_a_body_in_small_segments_costs_no_cpu(
        liar, start_gateway):
    # Each TCP segment spliced takes a slot of the pipe: 100-byte
    # segments fill its slots long before its bytes reach the pipe's
    # size.  While the client does not read, the gateway must wait for
    # it, not spin on an upstream that is readable but cannot be moved.
    size = 16 * MIB
    data, d = blob(liar, size, mode="small")
    gw = start_gateway(gw_cfg(liar, timeouts={"body": 60}))
    with open_get(gw, d, rcvbuf=4096) as s:
        wait_spliced(gw)
        hz = os.sysconf("SC_CLK_TCK")
        # Settled: the gateway's CPU time no longer grows while the
        # client does not read (bounded: 40 windows of 0.5 s).
        idle = []
        prev = _cpu_ticks(gw.pid)
        for _ in range(40):
            time.sleep(0.5)
            now = _cpu_ticks(gw.pid)
            idle.append(now - prev)
            prev = now
            if len(idle) >= 4 and sum(idle[-4:]) <= hz // 10:
                break
        # 2 s of a stalled client cost at most 0.1 s of CPU.
        assert sum(idle[-4:]) <= hz // 10, (idle, hz)
        # And the body still arrives whole once the client reads.
        _, rest = head_ok(s)
        got = read_to_eof(s, rest, size, timeout=120)
    assert got == data


def test_upstream_reset_mid_body_ends_the_client_connection(
        liar, start_gateway):
    size = 8 * MIB
    data, d = blob(liar, size, mode="reset")
    gw = start_gateway(gw_cfg(liar))
    base = _fds(gw.pid)
    with open_get(gw, d) as s:
        _, rest = head_ok(s)
        got = read_to_eof(s, rest, size)
    assert len(got) <= size // 2 and got == data[:len(got)]
    assert spliced(gw)
    wait_for(lambda: "proxy abort upstream=liar" in gw.log_text(),
             timeout=30, what="the abort logged")
    wait_for(lambda: _fds(gw.pid) <= base, timeout=30,
             what="descriptors back to %d" % base)
    still_serves(gw, liar)
    assert liar.accepted == 2, liar.accepted


def test_spliced_connections_fit_the_descriptor_budget(liar, start_gateway):
    # A spliced transfer holds four descriptors (client, upstream, the
    # pipe's two ends), not two.  With the open-files limit at what the
    # gateway asks for limits.max_connections (a hard limit it cannot
    # raise, as LimitNOFILE= set to it), every connection under that
    # limit is still served while the others splice.
    import resource
    nconn = 40
    _, d = blob(liar, 16 * MIB)
    cfg = gw_cfg(liar, timeouts={"body": 300, "upstream_response": 300,
                                 "upstream_connect": 30})
    cfg["limits"] = {"max_connections": nconn,
                     "max_connections_per_ip": nconn}
    cfg["log"] = {"level": "info"}
    # Started with a small soft limit, the gateway raises it to what it
    # wants (server_fd_limit); that becomes its hard limit too.
    mine = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (100, mine[1]))
    try:
        gw = start_gateway(cfg)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, mine)
    want, _ = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)
    assert want > 100, want
    resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (want, want))
    slow = []
    try:
        # The harness keeps one connection (its /healthz session).
        for _ in range(nconn - 2):
            # One at a time (the test double's listen backlog is 5).
            slow.append(open_get(gw, d, rcvbuf=4096))
            status, _, _ = read_head(slow[-1])
            assert status == 200, (len(slow), want)
        wait_for(lambda: liar.answering() == nconn - 2, timeout=60,
                 what="all transfers under way")
        # The last connection limits.max_connections allows.
        with rawhttp.RawConn("127.0.0.1", gw.port, timeout=30) as c:
            c.send_request("GET", "/v2/")
            r = c.read_response(timeout=20)
            assert r.status == 200, r
        log = gw.log_text()
        assert "accept_error" not in log and "splice_off" not in log
    finally:
        for s in slow:
            s.close()


def _sent_bytes(gw, kind):
    import requests
    r = requests.get(gw.url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    t = 0
    for ln in r.text.splitlines():
        if ln.startswith("portcullis_sent_bytes_total{") and \
                ('kind="%s"' % kind) in ln:
            t += int(float(ln.rsplit(" ", 1)[1]))
    return t


def test_spliced_bytes_count_in_the_metrics(liar, start_gateway):
    # portcullis_sent_bytes_total counts what left the pipe (the same
    # count as the log line's out=): the whole blob.
    data, d = blob(liar, 4 * MIB + 7)
    cfg = gw_cfg(liar)
    cfg["metrics"] = {"allow": ["127.0.0.1"]}
    gw = start_gateway(cfg)
    before = _sent_bytes(gw, "blob")
    rid = pull(gw, d, data).header("X-Request-Id")
    assert spliced(gw)
    line = log_done_line(gw, rid)
    assert line["out"] == str(len(data))
    assert _sent_bytes(gw, "blob") - before == len(data)
