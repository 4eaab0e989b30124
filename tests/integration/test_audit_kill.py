"""kill -9 of the gateway at each step of the audit ring's early wrap, of
the conversion of an older spool into a ring, and of a ring step
(ring_grow()), then a restart: every record that was answered or is in
the ring arrives in Redis exactly once (issue 12, acceptance 4).

gdb runs the real binary and stops it at a line of src/audit_spool.c
(found by the code it holds, so that edits do not move the test), then
SIGKILLs it: what the page cache holds is what a kill -9 leaves."""

import os
import re
import shutil
import signal
import struct
import threading
import zlib

import pytest

from lib import audit_spool
from lib.gateway import gateway_bin, gateway_config, upstream
from lib.redis import RedisServer, entries_to_dicts
from lib.util import pid_alive, wait_for

STREAM = "portcullis:audit"
GDB = shutil.which("gdb")
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "src", "audit_spool.c")

pytestmark = pytest.mark.skipif(GDB is None, reason="needs gdb")


@pytest.fixture
def redis(tmp_path_factory):
    servers = []

    def start(port=None):
        s = RedisServer(tmp_path_factory.mktemp("redis-"), port=port)
        servers.append(s)
        return s
    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def audit_cfg(redis_port, spool, **kw):
    a = {"redis": "127.0.0.1:%d" % redis_port, "spool_file": str(spool),
         "admin_addresses": ["127.0.0.1"], "timeout": 2}
    a.update(kw)
    return a


def line(func, code):
    """audit_spool.c:N of the first line holding `code` in func()."""
    with open(SRC) as f:
        lines = f.read().split("\n")
    start = None
    for i, ln in enumerate(lines):
        if start is None and re.match(r"^%s\(" % re.escape(func), ln):
            start = i
        elif start is not None and code in ln:
            return "audit_spool.c:%d" % (i + 1)
        elif start is not None and ln == "}":
            break
    raise AssertionError("%s: %r not found" % (func, code))


# Run by gdb around the gateway.  KILL_PLAN: locations separated by ";",
# each optionally "!finish" (run to the caller's return once there).
# Once the file KILL_ARM exists, the first hit of the first location
# arms the next, and so on; at the last one the gateway is SIGKILLed
# ("kill dropped=N" to KILL_OUT first: the records the writer had
# dropped for want of room, on_failure drop, or -1 when not known).
KILL_GDB = r"""
import gdb, os
ARM, OUT = os.environ["KILL_ARM"], os.environ["KILL_OUT"]
PLAN = [s.split("!") for s in os.environ["KILL_PLAN"].split(";")]
for c in ("set pagination off", "set confirm off",
          "set startup-with-shell off", "set breakpoint pending on"):
    gdb.execute(c)
for sig in ("SIGPIPE", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGCHLD",
            "SIGINT", "SIGALRM"):
    gdb.execute("handle %s nostop noprint pass" % sig)
step = 0
bp = gdb.Breakpoint(PLAN[0][0])
gdb.execute("run", to_string=True)
while True:
    try:
        if bp.hit_count > 0 and (step > 0 or os.path.exists(ARM)):
            if len(PLAN[step]) > 1 and PLAN[step][1] == "finish":
                gdb.execute("finish", to_string=True)
            step += 1
            if step == len(PLAN):
                try:
                    d = int(gdb.parse_and_eval("w->n_dropped"))
                except gdb.error:
                    d = -1
                with open(OUT, "a") as f:
                    f.write("kill dropped=%d\n" % d)
                gdb.execute("kill")
                break
            bp.delete()
            bp = gdb.Breakpoint(PLAN[step][0])
        elif bp.hit_count > 0:
            bp.hit_count = 0
        gdb.execute("continue", to_string=True)
    except gdb.error:
        break
"""


def gdb_wrapper(tmp_path, plan):
    arm, out = tmp_path / "arm", tmp_path / "gdb.out"
    script = tmp_path / "kill.py"
    script.write_text(KILL_GDB)
    wrap = tmp_path / "portcullis-gdb"
    wrap.write_text("#!/bin/sh\nKILL_ARM=%s KILL_OUT=%s KILL_PLAN='%s' "
                    "exec %s -q -nx -batch -x %s --args %s \"$@\"\n" % (
                        arm, out, plan, GDB, script,
                        os.path.abspath(gateway_bin())))
    wrap.chmod(0o700)
    return str(wrap), arm, out


def killed(out):
    return out.exists() and "kill" in out.read_text()


def stream(rs):
    with rs.client() as c:
        return entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))


def check_exactly_once(rs, must, may=(), dropped=0):
    """Every id of `must` in the stream once (but for at most `dropped`
    records the writer counted as dropped for want of room), nothing
    twice, nothing but `must` and `may`."""
    def got():
        return [d["request_id"] for _, d in stream(rs)]

    def missing():
        g = set(got())
        return [i for i, x in enumerate(must) if x not in g]
    try:
        wait_for(lambda: not missing(), timeout=60 if not dropped else 10,
                 what="every answered record in the stream")
    except Exception:
        miss = missing()
        if len(miss) > dropped:
            raise AssertionError(
                "%d of %d answered records missing: #%s; %d in the ring "
                "at the kill, %d dropped" % (len(miss), len(must),
                                             miss[:5] + miss[-3:], len(may),
                                             dropped))
    g = got()
    dup = sorted({x for x in g if g.count(x) > 1})
    assert not dup, "recorded twice: %r" % dup[:10]
    extra = set(g) - set(must) - set(may)
    assert not extra, "records of no request: %r" % sorted(extra)[:5]


class Client:
    """GET /v2/ requests one after the other until the gateway dies;
    the X-Request-Id of every answer, in order."""

    def __init__(self, port):
        self.port, self.ids, self.err = port, [], None

    def run(self, n, stop, path="/v2/", settle=None):
        import http.client
        conn = None
        for _ in range(n):
            if stop():
                return
            if settle is not None:
                settle(self)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1",
                                                      self.port, timeout=20)
                conn.request("GET", path,
                             headers={"User-Agent": "kill-test"})
                r = conn.getresponse()
                r.read()
                self.ids.append(r.getheader("X-Request-Id"))
            except (http.client.HTTPException, OSError) as e:
                self.err = e
                return


def kill_run(rs, reg, start_gateway, tmp_path, monkeypatch, plan, cfg_kw,
             n=3000, idle=True):
    """Start the gateway under gdb with `plan`, answer a few requests,
    arm, send up to n more until the kill; then restart and check."""
    spool = tmp_path / "k.spool"
    wrap, arm, out = gdb_wrapper(tmp_path, plan)
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-k",
                         audit=audit_cfg(rs.port, spool, **cfg_kw))
    monkeypatch.setenv("PORTCULLIS_BIN", wrap)
    gw = start_gateway(cfg, start_timeout=90)
    monkeypatch.delenv("PORTCULLIS_BIN")
    c = Client(gw.port)
    c.run(5, lambda: False)
    assert len(c.ids) == 5
    arm.write_text("")

    def settle(cl):
        # Everything acknowledged before the next record: the writer
        # wraps early only then (with a linger, a steady client never
        # leaves it idle).
        wait_for(lambda: rs.call("XLEN", STREAM) >= len(cl.ids) or
                 killed(out), timeout=30, what="the records acknowledged")
    if idle:
        # Long paths: records of 1.5 KiB, a wrap every ten or so.
        c.run(n, lambda: killed(out), path="/v2/" + "a" * 1400,
              settle=settle)
    else:
        # As fast as it answers: the appends catch up with the head.
        c.run(n, lambda: killed(out))
    wait_for(lambda: killed(out), timeout=30, what="the kill at %s" % plan)
    gw.stop()
    left = audit_spool.request_ids(str(spool))
    shutil.copy(str(spool), str(spool) + ".killed")
    with open(str(tmp_path / "answered"), "w") as f:
        f.write("\n".join(c.ids))
    gw2 = start_gateway(cfg)
    # The record of the request the kill cut off may be in the ring.
    # A ring this small can fill while Redis is slow (a loaded machine):
    # on_failure drop then drops records, counted; only those may miss.
    m = re.search(r"dropped=(\d+)", out.read_text())
    dropped = int(m.group(1)) if m else 0
    check_exactly_once(rs, c.ids, may=left, dropped=dropped)
    assert set(left) <= set(d["request_id"] for _, d in stream(rs))
    log = gw2.log_text()
    assert "spool_corrupt" not in log and "GAP" not in log, log[-2000:]
    gw2.stop()
    return c, log


WRAP_POINTS = [
    ("before_pad", lambda: line("ring_wrap", "audit_ring_pad(pad, pos);")),
    ("after_pad", lambda: line("ring_wrap",
                               "w->spool_size = lap + w->ring_size;")),
    ("first_frame_of_next_lap", lambda: "%s;ring_io!finish" % line(
        "ring_wrap", "w->pad_at = pos;")),
    ("second_frame_of_next_lap", lambda: "%s;ring_io!finish;"
     "ring_io!finish" % line("ring_wrap", "w->pad_at = pos;")),
    ("before_head_moved", lambda: line("ring_room",
                                       "if (audit_write_header(w) == -1)")),
    ("head_moved_before_sync", lambda: line(
        "ring_room", "if (w->ac->fsync != CONFIG_FSYNC_NEVER && fdatasync")),
    ("head_moved_and_synced", lambda: line(
        "ring_room", "w->head_synced = w->mark_off;")),
    ("after_wrap_before_head", lambda: "%s;audit_write_header" % line(
        "ring_wrap", "w->pad_at = pos;")),
    ("after_wrap_head_written", lambda: "%s;audit_write_header!finish" %
     line("ring_wrap", "w->pad_at = pos;")),
]


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
@pytest.mark.parametrize("point", [p[0] for p in WRAP_POINTS])
def test_kill9_at_each_step_of_an_early_wrap(redis, start_registry,
                                             start_gateway, tmp_path,
                                             monkeypatch, point, fsync):
    """A 60 KiB ring wraps early every 15 KiB or so while Redis keeps
    up (each record acknowledged before the next request); the gateway is killed at a step of the wrap (or of the head's
    move that the next lap needs), then restarted."""
    rs = redis()
    reg = start_registry("up1")
    plan = dict(WRAP_POINTS)[point]()
    idle = "head_moved" not in point
    kill_run(rs, reg, start_gateway, tmp_path, monkeypatch, plan,
             dict(spool_max_bytes=65536, fsync=fsync),
             n=400 if idle else 3000, idle=idle)


GROW_POINTS = [
    ("before_fallocate", lambda: line("ring_grow",
                                      "if ((e = posix_fallocate(")),
    ("after_fallocate", lambda: line("ring_grow", "if (w->alloc_failed)")),
]


@pytest.mark.parametrize("point", [p[0] for p in GROW_POINTS])
def test_kill9_around_a_ring_step(redis, start_registry, start_gateway,
                                  tmp_path, monkeypatch, point):
    """A 16 MiB ring, Redis paused: records reach past the first 4 MiB
    step; the gateway is killed before or after the next step's
    fallocate, then restarted with Redis back."""
    rs = redis()
    reg = start_registry("up1")
    plan = dict(GROW_POINTS)[point]()
    spool = tmp_path / "k.spool"
    wrap, arm, out = gdb_wrapper(tmp_path, plan)
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-g",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=16 << 20))
    monkeypatch.setenv("PORTCULLIS_BIN", wrap)
    gw = start_gateway(cfg, start_timeout=90)
    monkeypatch.delenv("PORTCULLIS_BIN")
    c = Client(gw.port)
    c.run(5, lambda: False)
    rs.wait_xlen(STREAM, 5)
    # Records long enough that 4 MiB takes a few thousand requests.
    rs.call("CLIENT", "PAUSE", "600000", "WRITE")
    arm.write_text("")
    t = threading.Thread(target=c.run, args=(40000, lambda: killed(out)))
    t.start()
    t.join(timeout=400)
    assert killed(out), "no step taken after %d records" % len(c.ids)
    gw.stop()
    left = audit_spool.request_ids(str(spool))
    assert set(c.ids[5:]) <= set(left), "an answered record not in the ring"
    rs.call("CLIENT", "UNPAUSE")
    gw2 = start_gateway(cfg)
    check_exactly_once(rs, c.ids, may=left)
    log = gw2.log_text()
    assert "spool_corrupt" not in log, log[-2000:]
    gw2.stop()


def _payload(rid, n, run=7):
    f = [(b"time", b"1700000000000"), (b"id", b"gw-c/%d-%d" % (run, n)),
         (b"request_id", rid.encode()), (b"instance", b"gw-c"),
         (b"client_ip", b"127.0.0.1"), (b"user_agent", b"convert"),
         (b"action", b"pull"), (b"method", b"GET"),
         (b"path", b"/v2/" + b"p" * 100)]
    return b"".join(k + b"\0" + v + b"\0" for k, v in f)


CONVERT_POINTS = [
    ("before_tmp", lambda: line("audit_spool_convert",
                                "fd = open(w->tmp_path")),
    ("mid_copy", lambda: "spool_copy_flush;spool_copy_flush!finish"),
    ("before_rename", lambda: line("audit_spool_convert",
                                   "if (rename(w->tmp_path, path)")),
    ("after_rename", lambda: line("audit_spool_convert", "close(w->fd);")),
    ("after_convert", lambda: "audit_new_run"),
]


@pytest.mark.parametrize("old", ["log", "ring"])
@pytest.mark.parametrize("point", [p[0] for p in CONVERT_POINTS])
def test_kill9_at_each_step_of_a_conversion(redis, start_registry,
                                            start_gateway, tmp_path,
                                            monkeypatch, point, old):
    """An append log (PCR2 frames) or a ring of another size holding
    600 records (over 64 KiB: the copy flushes more than once) is
    converted at start; the gateway is killed at a step of it, then
    started again: each record arrives once, and nothing else."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "k.spool"
    ids = ["conv-%04d" % i for i in range(600)]
    pl = [_payload(r, i + 1) for i, r in enumerate(ids)]
    if old == "log":
        audit_spool.old_log(str(spool), pl, run=7)
    else:
        audit_spool.ring(str(spool), pl, 1 << 20, run=7)
    plan = dict(CONVERT_POINTS)[point]()
    wrap, arm, out = gdb_wrapper(tmp_path, plan)
    arm.write_text("")
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-c",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=512 << 10))
    monkeypatch.setenv("PORTCULLIS_BIN", wrap)
    gw = start_gateway(cfg, expect_fail=True, start_timeout=90)
    monkeypatch.delenv("PORTCULLIS_BIN")
    assert killed(out), gw.log_text()[-2000:]
    gw2 = start_gateway(cfg)
    check_exactly_once(rs, ids)
    log = gw2.log_text()
    assert "dropped=0" in log or "converted" not in log, log[-2000:]
    assert "spool_corrupt" not in log, log[-2000:]
    gw2.stop()
    got = [d["request_id"] for _, d in stream(rs)]
    assert got == ids, "order differs"


# ---------------------------------------------------------------------------
# Positions at the edges, and replays of rings written by hand (the
# format of src/audit.h, as tests/integration/lib/audit_spool.py reads
# it).

def _put(buf, size, pos, data):
    """Write data at ring position pos of the ring image buf."""
    for i, b in enumerate(data):
        buf[audit_spool.DATA + (pos + i - audit_spool.DATA) % size] = b


def _frame(p, pos):
    return struct.pack("<IIIQ", audit_spool.RING_MAGIC, len(p),
                       audit_spool.crc32c(p), pos) + p


def _pad(pos):
    return struct.pack("<IIIQ", audit_spool.PAD_MAGIC, 0,
                       audit_spool.crc32c(struct.pack("<Q", pos)), pos)


def _ring_file(path, size, head, run=7):
    buf = bytearray(audit_spool.DATA + size)
    h = b"PCAUDRG1" + struct.pack("<QQQ", run, size, head)
    h += struct.pack("<I", zlib.crc32(h))
    buf[:len(h)] = h
    return buf


def _replay(rs, reg, start_gateway, spool, size, want, run=7):
    """Start a gateway on the ring at spool (a ring of `size` bytes
    unless told), check the stream holds exactly `want`, in order."""
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-c",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=DATA + size))
    gw = start_gateway(cfg)
    if want:
        rs.wait_xlen(STREAM, len(want), timeout=60)
    wait_for(lambda: audit_spool.pending_bytes(str(spool)) == 0,
             timeout=30, what="the ring released")
    gw.stop()
    log = gw.log_text()
    assert "spool_corrupt" not in log, log[-2000:]
    got = [d["request_id"] for _, d in stream(rs)]
    assert got == want, (got[:5], want[:5])
    return log


DATA = audit_spool.DATA
SIZE = 64 << 10


def _records(prefix, k, n0=1):
    ids = ["%s-%03d" % (prefix, i) for i in range(k)]
    return ids, [_payload(r, n0 + i) for i, r in enumerate(ids)]


@pytest.mark.parametrize("edge", [0, 1, 10, 19, 20, 21])
@pytest.mark.parametrize("laps", [0, 1, 1 << 40])
def test_a_frame_at_the_rings_end(redis, start_registry, start_gateway,
                                  tmp_path, edge, laps):
    """Records from a head where the third one ends `edge` bytes past
    the ring's end (0: exactly at it; 10, 19: its frame head split;
    20, 21: its payload split), after `laps` laps (positions near
    2^56): every record is replayed, once, in order."""
    rs = redis()
    reg = start_registry("up1")
    ids, pl = _records("edge", 6)
    lens = [audit_spool.FRAME + len(p) for p in pl]
    end = DATA + (laps + 1) * SIZE + edge
    head = end - sum(lens[:3])
    buf = _ring_file(None, SIZE, head)
    pos = head
    for p in pl:
        _put(buf, SIZE, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    spool = tmp_path / "e.spool"
    spool.write_bytes(bytes(buf))
    _replay(rs, reg, start_gateway, spool, SIZE, ids)


@pytest.mark.parametrize("room", [20, 21, 39, 40, 4000])
def test_a_pad_near_the_rings_end(redis, start_registry, start_gateway,
                                  tmp_path, room):
    """A pad `room` bytes before the ring's end (20: the smallest room
    a pad takes, exactly), records before it and at the next lap's
    start: all replayed once, in order, the pad skipped."""
    rs = redis()
    reg = start_registry("up1")
    ids, pl = _records("pad", 8)
    pad_at = DATA + 3 * SIZE - room
    lens = [audit_spool.FRAME + len(p) for p in pl]
    head = pad_at - sum(lens[:4])
    buf = _ring_file(None, SIZE, head)
    pos = head
    for i, p in enumerate(pl):
        if i == 4:
            _put(buf, SIZE, pos, _pad(pos))
            pos += room
            assert (pos - DATA) % SIZE == 0
        _put(buf, SIZE, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    spool = tmp_path / "p.spool"
    spool.write_bytes(bytes(buf))
    _replay(rs, reg, start_gateway, spool, SIZE, ids)


@pytest.mark.parametrize("torn", [4, 12, 19])
def test_a_torn_pad_ends_the_replay_and_stale_frames_after_it_stay_out(
        redis, start_registry, start_gateway, tmp_path, torn):
    """A pad whose first `torn` bytes were written over a frame of the
    previous lap (the rest of that frame's bytes still there), and
    after it frames of the previous lap whose CRCs are valid: the
    replay sends the records before the pad and none of the stale ones
    (they are at the positions of the lap before)."""
    rs = redis()
    reg = start_registry("up1")
    ids, pl = _records("cur", 4, n0=101)
    sids, spl = _records("stale", 40, n0=1)
    lap = DATA + 5 * SIZE
    # The previous lap's frames fill the ring from its lap start on.
    buf = _ring_file(None, SIZE, lap + 100)
    pos = lap - SIZE
    for p in spl:
        _put(buf, SIZE, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    # This lap: records from the head at lap + 100 ... then the pad,
    # torn, over a stale frame's head.
    pos = lap + 100
    for p in pl:
        _put(buf, SIZE, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    _put(buf, SIZE, pos, _pad(pos)[:torn])
    spool = tmp_path / "t.spool"
    spool.write_bytes(bytes(buf))
    log = _replay(rs, reg, start_gateway, spool, SIZE, ids)
    assert "records=4 " in log


def test_a_torn_frame_followed_by_a_stale_frame_with_a_valid_crc(
        redis, start_registry, start_gateway, tmp_path):
    """The last record's frame torn (its head written, its payload only
    partly: the rest is a frame of the previous lap, whose own head and
    CRC are whole right after the torn one's end): the replay stops at
    the torn frame and sends nothing of the previous lap."""
    rs = redis()
    reg = start_registry("up1")
    ids, pl = _records("cur", 5, n0=101)
    sids, spl = _records("stale", 60, n0=1)
    lap = DATA + 3 * SIZE
    buf = _ring_file(None, SIZE, lap)
    pos = lap - SIZE
    starts = []
    for p in spl:
        starts.append(pos)
        _put(buf, SIZE, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    pos = lap
    for p in pl[:4]:
        _put(buf, SIZE, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    # The fifth's frame ends where a stale frame starts; 30 of its
    # payload bytes written.
    nxt = min(s for s in starts if s + SIZE > pos + audit_spool.FRAME + 40)
    fr = _frame(b"x" * (nxt + SIZE - pos - audit_spool.FRAME), pos)
    _put(buf, SIZE, pos, fr[:audit_spool.FRAME + 30])
    spool = tmp_path / "t.spool"
    spool.write_bytes(bytes(buf))
    log = _replay(rs, reg, start_gateway, spool, SIZE, ids[:4])
    assert "torn_tail offset=%d" % pos in log, log[-2000:]


@pytest.mark.parametrize("size", [SIZE + 1, SIZE + 19, 100003])
def test_a_ring_of_an_odd_size_is_converted_whole(
        redis, start_registry, start_gateway, tmp_path, size):
    """A ring whose size is not a multiple of anything (an earlier
    writer, a hand-made file), records across its wrap: converted into
    a ring of this size, each record once, in order."""
    rs = redis()
    reg = start_registry("up1")
    ids, pl = _records("odd", 30)
    lens = [audit_spool.FRAME + len(p) for p in pl]
    head = DATA + 7 * size - sum(lens[:15]) + 3
    buf = _ring_file(None, size, head)
    pos = head
    for p in pl:
        _put(buf, size, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    spool = tmp_path / "o.spool"
    spool.write_bytes(bytes(buf))
    log = _replay(rs, reg, start_gateway, spool, SIZE, ids)
    assert "spool converted from=ring records=30 dropped=0" in log


# ---------------------------------------------------------------------------
# Workers: one ring each.

def _worker_pids(gw):
    pids = {}
    for m in re.finditer(r"master worker_start worker=(\d+) pid=(\d+)",
                         gw.log_text()):
        pids[int(m.group(1))] = int(m.group(2))
    return {w: p for w, p in pids.items() if pid_alive(p)}


def test_a_worker_killed_with_unacknowledged_records_in_its_ring(
        redis, start_registry, start_gateway, tmp_path):
    """Two workers; Redis stops answering (CLIENT PAUSE), so each
    worker's ring holds its records unacknowledged (the writer gives
    the link up after audit.timeout and goes on spooling); a worker is
    killed -9 and the master starts it again; Redis answers again:
    every answered request's record is in the stream once, those of the
    killed worker's ring under its instance (gw-k/<worker>), nothing
    twice."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "w.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-k",
                         workers=2, audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    wait_for(lambda: len(_worker_pids(gw)) == 2, what="two workers")
    clients = [Client(gw.port) for _ in range(8)]
    for c in clients:
        c.run(3, lambda: False)
    wait_for(lambda: rs.call("XLEN", STREAM) == 24, what="24 records")
    rs.call("CLIENT", "PAUSE", "600000", "WRITE")
    for c in clients:
        c.run(40, lambda: False)
        assert c.err is None, c.err
    # The accept balance decides which worker took the connections (a
    # worker that is slow to reach its loop can get none): the victim
    # is a worker whose ring holds records.
    def loaded():
        for w in (0, 1):
            ids = audit_spool.request_ids(str(spool) + ".%d" % w)
            if len(ids) >= 40:
                return w, ids
        return None
    w, held = wait_for(loaded, what="a worker's ring holding records")
    assert rs.call("XLEN", STREAM) == 24, "Redis wrote while paused"
    victim = _worker_pids(gw)[w]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: _worker_pids(gw).get(w) not in (None, victim),
             what="worker %d started again" % w)
    rs.call("CLIENT", "UNPAUSE")
    answered = [i for c in clients for i in c.ids]
    check_exactly_once(rs, answered)
    recs = stream(rs)
    mine = {d["request_id"] for _, d in recs
            if d["instance"] == "gw-k/%d" % w}
    assert set(held) <= mine
    for w in (0, 1):
        wait_for(lambda: audit_spool.pending_bytes(
            str(spool) + ".%d" % w) == 0, timeout=30,
            what="ring %d released" % w)
    gw.stop()


def test_an_outage_after_a_replay_across_a_pad_has_the_whole_ring(
        redis, start_registry, start_gateway, tmp_path):
    """A kill -9 right after an early wrap leaves the head on disk before
    the pad (the tick had not written it past): the restart replays the
    records before the pad (Redis skips them) and Redis acknowledges up
    to the pad.  Redis then goes down: the ring's free room is the whole
    ring (nothing after the pad is unacknowledged), so an outage of
    500 KiB of records in a ring of 1 MiB keeps every one.  Review: the
    writer counted the rest of the pad's lap (the pad sits 300 KB into
    a 1 MiB ring) as unacknowledged, had room for 300 KB, and dropped
    the outage's records after that (spool_full dropped=)."""
    rs = redis()
    reg = start_registry("up1")
    size = (1 << 20) - DATA
    ids, pl = _records("old", 5)
    lens = [audit_spool.FRAME + len(p) for p in pl]
    pad_at = DATA + 2 * size + 300000
    head = pad_at - sum(lens)
    buf = _ring_file(None, size, head)
    pos = head
    for p in pl:
        _put(buf, size, pos, _frame(p, pos))
        pos += audit_spool.FRAME + len(p)
    _put(buf, size, pos, _pad(pos))
    spool = tmp_path / "r.spool"
    spool.write_bytes(bytes(buf))
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-c",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=1 << 20))
    gw = start_gateway(cfg)
    rs.wait_xlen(STREAM, 5)
    # Acknowledged up to the pad: the tick writes a head there (or,
    # since the fix, at the next lap's start).
    wait_for(lambda: audit_spool.header(str(spool))[2] >= pad_at,
             timeout=10, what="the head at the pad")
    rs.kill()
    c = Client(gw.port)
    # 1.5 KiB records, about 500 KiB of them.
    c.run(340, lambda: False, path="/v2/" + "a" * 1400)
    assert c.err is None and len(c.ids) == 340, c.err
    rs.start()
    check_exactly_once(rs, ids + c.ids)
    log = gw.log_text()
    gw.stop()
    assert "spool_full" not in log, \
        [ln for ln in log.splitlines() if "spool_full" in ln]
