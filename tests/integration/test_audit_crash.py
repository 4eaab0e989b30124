"""The audit spool as a write-ahead log (issue 12, acceptance 4): a
gateway killed with SIGKILL in the middle of 5,000 requests, with Redis
up, loses no record: after a restart on the same spool every request
that got a response has exactly one record in the stream.  And a
graceful stop (SIGTERM) with records waiting for a paused Redis leaves
each of them in Redis or in the spool, replayed exactly once by the next
start.

Real parts: redis-server (appendfsync always, so a record Redis
acknowledged survives anything here), docker-registry, the gateway with
its cache.  Every wait is on a condition."""

import hashlib
import http.client
import json
import os
import signal
import struct
import threading
import urllib.parse
import zlib

import pytest
import requests

from lib import audit_spool
from lib.cache import cache_cfg
from lib.gateway import gateway_bin, gateway_config, upstream
from lib.redis import entries_to_dicts
from lib.util import free_port, run, wait_for

STREAM = "portcullis:audit"
MT = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def redis(start_redis):
    return start_redis


def audit_cfg(redis_port, spool, **kw):
    a = {"redis": "127.0.0.1:%d" % redis_port, "spool_file": str(spool),
         "timeout": 2}
    a.update(kw)
    return a


# What spool_size() says of a ring with nothing after its head (the
# header's size before the ring; test_workers.py compares with it).
HDR = 0


def spool_size(path):
    """Bytes of records from the ring's head on (its file size never
    changes); -1 without a spool."""
    return audit_spool.pending_bytes(str(path))


def spool_records(path):
    """The request ids of the records from the spool's head on, in
    order (lib/audit_spool.py reads the ring's format)."""
    return audit_spool.request_ids(str(path))


def stream_request_ids(rs):
    with rs.client() as c:
        recs = entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))
    return [d["request_id"] for _, d in recs]


def push_image(reg):
    """A small image in crash/app: its manifest digest and a blob's."""
    s = requests.Session()
    s.trust_env = False
    base = "http://%s" % reg.host

    def put_blob(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r = s.post(base + "/v2/crash/app/blobs/uploads/", timeout=30)
        assert r.status_code == 202, r.text
        loc = urllib.parse.urljoin(base + "/", r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        r = s.put(loc + sep + "digest=" + d, data=data, timeout=30,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return d
    layer = os.urandom(2048)
    ld = put_blob(layer)
    cd = put_blob(b"{}")
    man = json.dumps({
        "schemaVersion": 2, "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ld, "size": len(layer)}]}).encode()
    r = s.put(base + "/v2/crash/app/manifests/v1", data=man, timeout=30,
              headers={"Content-Type": MT})
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(man).hexdigest(), ld


class Load:
    """`total` requests over `conns` keep-alive connections, one thread
    each, to whatever port `self.port` names.  Remembers the X-Request-Id
    of every response.  A request that gets no response (the gateway was
    killed) waits for `self.up` and is made again, so that `total`
    requests are answered in all."""

    def __init__(self, port, paths, total, conns):
        self.port = port
        self.paths = paths
        self.total = total
        self.conns = conns
        self.lock = threading.Lock()
        self.next = 0
        self.ids = []
        self.failures = 0
        self.errors = []
        self.up = threading.Event()
        self.up.set()
        self.threads = [threading.Thread(target=self._run, args=(i,),
                                         daemon=True) for i in range(conns)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def answered(self):
        with self.lock:
            return len(self.ids)

    def join(self, timeout):
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "load thread stuck"
        assert not self.errors, self.errors[:3]

    def _run(self, k):
        conn = None
        while True:
            with self.lock:
                if self.next >= self.total:
                    break
                i = self.next
                self.next += 1
            path, accept = self.paths[i % len(self.paths)]
            for attempt in range(50):
                if not self.up.wait(60):
                    self.errors.append("gateway not back")
                    return
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(
                            "127.0.0.1", self.port, timeout=30)
                    h = {"User-Agent": "crash-test"}
                    if accept:
                        h["Accept"] = accept
                    conn.request("GET", path, headers=h)
                    r = conn.getresponse()
                    r.read()
                except (http.client.HTTPException, OSError):
                    # No response: the gateway is gone.  Not answered,
                    # so not counted; try again once it is back.
                    if conn is not None:
                        conn.close()
                    conn = None
                    with self.lock:
                        self.failures += 1
                    self.up.wait(60)
                    continue
                rid = r.getheader("X-Request-Id")
                if rid is None or r.status not in (200, 404):
                    self.errors.append((path, r.status, rid))
                with self.lock:
                    self.ids.append(rid)
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                break
            else:
                self.errors.append("no answer after 50 attempts")
                return
        if conn is not None:
            conn.close()


def test_kill9_mid_load_loses_no_record(redis, start_registry,
                                        start_gateway, tmp_path):
    """Acceptance 4: SIGKILL after 2,500 of 5,000 answered requests (8
    connections; mostly cached manifest GETs by digest, and GET /v2/, a
    cached blob GET, a 404), Redis up; a restart on the same spool; then
    every answered request has exactly one record."""
    rs = redis()
    reg = start_registry("up1")
    man, blob = push_image(reg)
    spool = tmp_path / "crash.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-crash",
                         cache=cache_cfg(tmp_path / "cache"),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    # Fill the cache: the manifest GETs below are hits.
    s = requests.Session()
    s.trust_env = False
    r = s.get("%s/v2/crash/app/manifests/%s" % (gw.url, man),
              headers={"Accept": MT}, timeout=30)
    assert r.status_code == 200
    warm = [r.headers["X-Request-Id"]]
    paths = [("/v2/crash/app/manifests/%s" % man, MT)] * 5 + [
        ("/v2/", None), ("/v2/crash/app/blobs/%s" % blob, None),
        ("/v2/crash/app/manifests/%s" % man, MT),
        ("/v2/crash/app/manifests/no-such-tag", MT)]
    load = Load(gw.port, paths, 5000, 8).start()
    wait_for(lambda: load.answered() >= 2500, timeout=120,
             what="2,500 answered requests")
    load.up.clear()
    gw.proc.stop(sig=signal.SIGKILL)
    answered_before = load.answered()
    # What the killed gateway left: the records Redis had not
    # acknowledged are in the spool (the page cache kept them).
    left = spool_records(spool)
    in_redis = set(stream_request_ids(rs))

    gw2 = start_gateway(cfg)
    load.port = gw2.port
    load.up.set()
    load.join(timeout=300)
    assert load.answered() == 5000
    answered = warm + load.ids
    assert len(set(answered)) == len(answered), "a request id repeats"
    # The stream holds every answered request (and the spool was
    # replayed and released), then stops growing.
    wait_for(lambda: set(answered) <= set(stream_request_ids(rs)),
             timeout=60, what="every answered request in the stream")
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="spool released")
    got = stream_request_ids(rs)
    dup = sorted({x for x in got if got.count(x) > 1})
    assert not dup, "recorded twice: %r" % dup[:10]
    missing = set(answered) - set(got)
    assert not missing, "%d answered requests have no record" % len(missing)
    # None but answered requests, and those the kill cut off (processed
    # and recorded, the response not read): at most one per connection.
    extra = set(got) - set(answered)
    assert len(extra) <= 8, "%d records of unanswered requests" % len(extra)
    gw2.stop()
    log = gw2.log_text()
    assert "dropped=0" in log
    print("answered before the kill: %d; spool left: %d records, %d of "
          "them not in Redis then; failed attempts: %d" % (
              answered_before, len(left), len(set(left) - in_redis),
              load.failures))


def test_sigterm_with_redis_paused_briefly_flushes_to_redis(
        redis, start_registry, start_gateway, tmp_path):
    """A graceful stop waits (up to audit.timeout) for Redis to
    acknowledge what is queued: with Redis paused for less than that,
    every record is in Redis when the gateway has exited, and the spool
    holds nothing to replay."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "term.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-term",
                         audit=audit_cfg(rs.port, spool, timeout=20))
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = []
    for _ in range(20):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    rs.wait_xlen(STREAM, 20)
    # Redis holds every command for 1.5 s: the next records wait.
    rs.call("CLIENT", "PAUSE", "1500", "ALL")
    for _ in range(30):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    s.close()
    assert gw.stop(timeout=30) == 0
    log = gw.log_text()
    assert "audit settle queued=0 inflight=0" in log, log[-2000:]
    got = stream_request_ids(rs)
    assert got == ids
    assert spool_records(spool) == []
    # The next start has nothing to replay.
    gw2 = start_gateway(cfg)
    gw2.stop()
    assert "records=0 " in gw2.log_text()
    assert stream_request_ids(rs) == ids


def test_sigterm_with_redis_paused_long_spools_then_replays_once(
        redis, start_registry, start_gateway, tmp_path):
    """Redis paused for longer than audit.timeout: the stop gives up
    waiting after audit.timeout, the records are in the spool (whether
    Redis, once it resumes, still runs what it was sent on the dropped
    link does not matter), and the next start replays the spool without
    writing any twice."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "term2.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-term2",
                         audit=audit_cfg(rs.port, spool, timeout=1))
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = []
    for _ in range(20):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    rs.wait_xlen(STREAM, 20)
    rs.call("CLIENT", "PAUSE", "4000", "ALL")
    for _ in range(30):
        ids.append(s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"])
    s.close()
    assert gw.stop(timeout=30) == 0
    # Every record is in Redis or in the spool: the 30 were not
    # acknowledged, so the spool has them all, in order.
    left = spool_records(spool)
    assert left[-30:] == ids[20:], "the unacknowledged records are spooled"
    assert set(left) <= set(ids)
    # Redis resumes and runs what it was sent; the replay adds nothing
    # twice, whatever of the 30 that was.
    gw2 = start_gateway(cfg)
    wait_for(lambda: spool_size(spool) == 0, timeout=30,
             what="spool replayed")
    got = stream_request_ids(rs)
    assert got == ids, "each record exactly once, in order"
    gw2.stop()
    assert "records=30 " in gw2.log_text()


def test_wal_keeps_records_when_the_spool_is_small(redis, start_registry,
                                                   start_gateway, tmp_path):
    """With Redis acknowledging promptly, a WAL much smaller than what
    goes through it keeps releasing its acknowledged prefix (the ring
    wraps): reject mode refuses nothing and drops nothing, the file stays
    at spool_max_bytes; a leftover <spool>.tmp is removed.  (Reject mode
    reserves a largest record, 4 KiB, per request being served, so the
    file is sized well above that.)"""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "small.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-small",
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=4 << 20,
                                         on_failure="reject"))
    # What a release a crash interrupted would leave: removed at start.
    tmp = tmp_path / "small.spool.tmp"
    tmp.write_bytes(b"half a release")
    gw = start_gateway(cfg)
    assert not tmp.exists()
    # 20,000 records of about 450 bytes: twice the file.  Reject mode
    # would refuse once 3 MiB were unacknowledged: Redis stalled for
    # seconds, when audit.timeout (2 s) takes the link down first.
    # The premise is a Redis that acknowledges promptly: wait until the
    # writer's link is up and acknowledging (one record arrived) before
    # the load, so that a slow start on a loaded machine is not taken
    # for a stall.
    first = Load(gw.port, [("/v2/", None)], 1, 1).start()
    first.join(timeout=60)
    rs.wait_xlen(STREAM, 1, timeout=60)
    # Then 20,000 in rounds of 2,000 (about 1 MiB of records), each
    # round waited on until Redis holds it: a Redis starved of CPU by a
    # loaded machine must not be taken for the stall reject mode is for.
    ids = list(first.ids)
    for i in range(10):
        load = Load(gw.port, [("/v2/", None)], 2000, 4).start()
        load.join(timeout=600)
        ids += load.ids
        rs.wait_xlen(STREAM, 1 + 2000 * (i + 1), timeout=60)
    # The ring was allocated once and wrapped: its head went past its
    # size, the file kept its size.
    assert os.path.getsize(spool) == 4 << 20
    assert audit_spool.header(str(spool))[2] > 4 << 20, "the ring wrapped"
    got = stream_request_ids(rs)
    assert sorted(got) == sorted(ids)
    gw.stop()
    log = gw.log_text()
    assert "rejected=0" in log and "dropped=0" in log
    released = int(log.split(" released=")[1].split()[0])
    assert released >= 6, "the acknowledged prefix was released"



def _payload(fields):
    """A record payload, "name\\0value\\0" in the order given."""
    return b"".join(k.encode() + b"\0" + v + b"\0" for k, v in fields)


def _frame(magic, payload):
    """An append-log frame (the spool before the ring)."""
    crc = audit_spool.crc32c(payload) if magic == b"PCR2" else \
        zlib.crc32(payload)
    return magic + struct.pack("<II", len(payload), crc) + payload


def test_spool_of_both_frame_kinds_replays_each_once(redis, start_registry,
                                                     start_gateway, tmp_path):
    """A spool an earlier version left ("PCR1" frames, CRC-32) that a
    later one went on writing ("PCR2", CRC-32C), with a torn tail whose
    length points past the end of the file: it is converted into a ring
    at start (the torn tail logged), every whole record reaches the
    stream once, in order, the torn one is dropped, and the readers
    (XRANGE, `audit export`) see each record's fields as written, for
    records just under, at and over the writer's reuse size (640 bytes)
    and of the largest size (AUDIT_REC_MAX, 4096), a tab in a value
    coming out as '?' (a payload from a file is not sanitised)."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "mixed.spool"
    inst = b"gw-mix"
    recs, want = [], []

    def rec(magic, run, n, size, ua=b"mixed"):
        rid = b"%s-%d-%d" % (magic.lower(), run, n)
        base = [("time", b"1700000000000"),
                ("id", inst + b"/%d-%d" % (run, n)),
                ("request_id", rid), ("instance", inst),
                ("client_ip", b"127.0.0.1"), ("user_agent", ua),
                ("action", b"pull"), ("method", b"GET")]
        # Long values, up to AUDIT_VALUE_MAX each, fill the record to
        # exactly `size` bytes.
        rest = size - len(_payload(base + [("path", b""), ("error", b""),
                                           ("rule", b""),
                                           ("reference", b"")]))
        vals = []
        for _ in range(4):
            k = min(rest, 1024)
            vals.append(b"/" + b"p" * (k - 1) if k else b"")
            rest -= k
        assert rest == 0
        fields = base + [("path", vals[0]), ("error", vals[1]),
                         ("rule", vals[2]), ("reference", vals[3])]
        p = _payload(fields)
        assert len(p) == size
        recs.append(_frame(magic, p))
        want.append((rid.decode(), {k: v.decode() for k, v in fields}))

    rec(b"PCR1", 1000, 1, 200)
    rec(b"PCR1", 1000, 2, 640)
    rec(b"PCR1", 1000, 3, 641, ua=b"tab\there")
    want[-1][1]["user_agent"] = "tab?here"
    rec(b"PCR2", 1001, 1, 639)
    rec(b"PCR2", 1001, 2, 640)
    rec(b"PCR2", 1001, 3, 4096)
    rec(b"PCR2", 1001, 4, 641)
    hdr = b"PCAUDSP1" + struct.pack("<II", 1001, 0)
    hdr += struct.pack("<I", zlib.crc32(hdr)) + b"\0" * 12
    torn = b"PCR2" + struct.pack("<II", 300, 0) + b"x" * 50
    spool.write_bytes(hdr + b"".join(recs) + torn)

    cfg = gateway_config(upstream(reg, default=True),
                         instance_id=inst.decode(),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    rs.wait_xlen(STREAM, len(want), timeout=60)
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool replayed and released")
    with rs.client() as c:
        got = entries_to_dicts(c.call("XRANGE", STREAM, "-", "+"))
    assert [d["request_id"] for _, d in got] == [r for r, _ in want]
    for (_, d), (rid, fields) in zip(got, want):
        for k, v in fields.items():
            assert d[k] == v, (rid, k)
    log = gw.log_text()
    assert "torn_tail offset=%d" % (len(hdr) + len(b"".join(recs))) in log
    assert "converted from=log records=%d dropped=0" % len(want) in log
    assert audit_spool.header(str(spool)) is not None, "now a ring"
    out = run([gateway_bin(), "audit", "export", "-c", gw.config_path],
              timeout=60).stdout
    exp = {j["request_id"]: j for j in map(json.loads, out.splitlines())}
    assert sorted(exp) == sorted(r for r, _ in want)
    for rid, fields in want:
        for k in ("path", "error", "rule", "reference", "user_agent"):
            assert exp[rid][k] == fields[k], (rid, k)
    gw.stop()
    assert "dropped=0" in gw.log_text()


def earlier_version_opens(path):
    """Whether a gateway before the ring (and before CRC-32C frames)
    would take the file as its spool: it checks the 32-byte header
    ("PCAUDSP1" and its CRC-32), refuses any other ("not a portcullis
    audit spool"), and then drops every frame that is not "PCR1", from
    the first one on, as a torn tail."""
    with open(path, "rb") as f:
        h = f.read(32)
    return len(h) == 32 and h[:8] == b"PCAUDSP1" and \
        struct.unpack("<I", h[16:20])[0] == zlib.crc32(h[:16])


def test_earlier_version_refuses_a_spool_it_would_empty(
        redis, start_registry, start_gateway, tmp_path):
    """Going back to an earlier version (a rollback after an incident,
    with Redis down) must not drop what the spool holds: a version before
    CRC-32C frames took every frame it does not know for a torn tail and
    truncated the file (shown with the main branch's binary on an append
    log: 20 records spooled while Redis was down, "torn_tail bytes=6751",
    none ever reached the stream).  The ring's header ("PCAUDRG1") is
    none such a version knows: it refuses to start on the file ("not a
    portcullis audit spool"), with records in it and once it is empty
    again (the README: stop cleanly with Redis up, then remove it)."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "back.spool"
    cfg = gateway_config(upstream(reg, default=True), instance_id="gw-back",
                         audit=audit_cfg(rs.port, spool))
    rs.kill()
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = [s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"]
           for _ in range(20)]
    s.close()
    assert gw.stop() == 0
    assert spool_records(spool) == ids
    assert audit_spool.header(str(spool)) is not None, "a ring"
    assert not earlier_version_opens(spool), \
        "an earlier version would drop the spooled records"
    rs.start()
    gw2 = start_gateway(cfg)
    rs.wait_xlen(STREAM, 20, timeout=60)
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool replayed and released")
    assert gw2.stop() == 0
    assert stream_request_ids(rs) == ids
    assert spool_records(spool) == []
    # Still a ring: an earlier version refuses it until it is removed.
    assert audit_spool.header(str(spool)) is not None
    assert not earlier_version_opens(spool)


def test_a_record_that_cannot_be_sent_does_not_stop_the_rest(
        redis, start_registry, start_gateway, tmp_path):
    """A record in the ring whose frame is sound but whose payload has no
    usable id (a file written by something else: the writer's own records
    always have one) can never be sent.  Before, the writer dropped the
    link for it on every connection ("send failed", again and again):
    neither the records after it nor any new one reached the stream, and
    the spool only grew.  It is dropped (logged with its position,
    counted as dropped) and everything else goes on, exactly once."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "bad.spool"
    inst = b"gw-bad"

    def good(n):
        return _payload([("time", b"1700000000000"),
                         ("id", inst + b"/1001-%d" % n),
                         ("request_id", b"good-%d" % n)])
    bad = [_payload([("time", b"1"), ("request_id", b"no-id")]),
           _payload([("time", b"1"), ("id", b"x/y-z"),
                     ("request_id", b"bad-id")]),
           b"not\0a payload"]
    # The ring of spool_max_bytes 65536 (a page of header, 61440 bytes
    # of records), so that it is replayed as it is, not converted.
    audit_spool.ring(str(spool), [good(1), bad[0], good(2), bad[1],
                                  bad[2], good(3)], 61440, run=1001)
    assert len(audit_spool.frames(str(spool))) == 6
    cfg = gateway_config(upstream(reg, default=True),
                         instance_id=inst.decode(),
                         audit=audit_cfg(rs.port, spool,
                                         spool_max_bytes=65536))
    gw = start_gateway(cfg)
    s = requests.Session()
    s.trust_env = False
    ids = [s.get(gw.url + "/v2/", timeout=10).headers["X-Request-Id"]
           for _ in range(5)]
    s.close()
    want = ["good-1", "good-2", "good-3"] + ids
    wait_for(lambda: stream_request_ids(rs) == want, timeout=60,
             what="the records around the unsendable ones in the stream")
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool released")
    assert gw.stop() == 0
    log = gw.log_text()
    assert "converted" not in log, "the ring was replayed as it was"
    # Logged at most once a second; the three are counted.
    assert "audit unsendable_record offset=%d " % (
        audit_spool.DATA + audit_spool.FRAME + len(good(1))) in log, \
        log[-3000:]
    assert "dropped=3" in log
    assert stream_request_ids(rs) == want


def test_a_ring_allocated_short_of_its_end_replays_every_record(
        redis, start_registry, start_gateway, tmp_path):
    """A ring of 1 GiB (the default) is allocated on disk 4 MiB at a
    time, as far as records reach: after an outage its records can end
    just short of the file's end.  Every one of them is replayed, in
    order.  Before, the walk at start read 1 MiB at a time and took a
    read that the file's end cut short for the end of the records: the
    last of them (17 of 9,269 ending 500 bytes before 4 MiB; 923 of
    151,146 after converting a 64 MiB append log) were logged as a torn
    tail and dropped, and the next appends overwrote them."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "short.spool"
    inst = b"gw-short"
    size = (1 << 30) - 4096             # spool_max_bytes' default, less
    payloads, want, pos, n = [], [], audit_spool.DATA, 0  # a page
    while True:
        n += 1
        rid = b"short-%d" % n
        p = _payload([("time", b"1700000000000"),
                      ("id", inst + b"/1001-%d" % n), ("request_id", rid),
                      ("user_agent", b"u" * (300 + n % 200))])
        if pos + audit_spool.FRAME + len(p) > (4 << 20) - 600:
            break
        payloads.append(p)
        want.append(rid.decode())
        pos += audit_spool.FRAME + len(p)
    audit_spool.ring(str(spool), payloads, size, run=1001,
                     file_len=4 << 20)
    assert os.path.getsize(spool) == 4 << 20
    assert audit_spool.request_ids(str(spool)) == want
    cfg = gateway_config(upstream(reg, default=True),
                         instance_id=inst.decode(),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    rs.wait_xlen(STREAM, len(want), timeout=120)
    wait_for(lambda: spool_size(spool) == HDR, timeout=30,
             what="spool replayed and released")
    assert gw.stop() == 0
    log = gw.log_text()
    assert "torn_tail" not in log, log[-2000:]
    assert "records=%d " % len(want) in log
    assert stream_request_ids(rs) == want


def test_a_replay_from_before_a_pad_near_the_files_end_keeps_every_record(
        redis, start_registry, start_gateway, tmp_path):
    """A lap that Redis fell behind on reaches near the end of the file
    allocated so far (ring_grow(): 4 MiB steps of a 1 GiB ring); once
    Redis caught up the writer wraps early (a pad 1,000 bytes before the
    file's end) and a kill -9 leaves the header's head a little before
    the pad (it is written by the tick).  The replay reads from the head,
    across the pad, into the next lap: every record, in order.  Review:
    the replay read (audit_spool_read()) asked for a whole record's room
    past the head with ring_io(), which fails a read the file's end cuts
    short: the records from the head on were logged as spool_corrupt and
    dropped, the next lap's with them."""
    rs = redis()
    reg = start_registry("up1")
    spool = tmp_path / "padend.spool"
    inst = b"gw-padend"
    size = (1 << 30) - 4096             # spool_max_bytes' default, less
    flen = 4 << 20                      # a page
    D, F = audit_spool.DATA, audit_spool.FRAME
    n = 0

    def rec(n):
        return _payload([("time", b"1700000000000"),
                         ("id", inst + b"/1001-%d" % n),
                         ("request_id", b"padend-%d" % n),
                         ("user_agent", b"u" * 400)])
    # Records from the head to 1,000 bytes before the file's end.
    payloads, want = [], []
    for _ in range(60):
        n += 1
        payloads.append(rec(n))
        want.append("padend-%d" % n)
    head = flen - 1000 - sum(F + len(p) for p in payloads)
    audit_spool.ring(str(spool), payloads, size, run=1001, head=head,
                     file_len=flen)
    pad_at = head + sum(F + len(p) for p in payloads)
    assert pad_at == flen - 1000
    with open(spool, "r+b") as f:
        f.seek(pad_at)
        f.write(struct.pack("<IIIQ", audit_spool.PAD_MAGIC, 0,
                            audit_spool.crc32c(struct.pack("<Q", pad_at)),
                            pad_at))
        # The next lap: records from its start (file offset DATA).
        pos = D + size
        for _ in range(20):
            n += 1
            p = rec(n)
            f.seek(D + (pos - D) % size)
            f.write(struct.pack("<IIIQ", audit_spool.RING_MAGIC, len(p),
                                audit_spool.crc32c(p), pos) + p)
            want.append("padend-%d" % n)
            pos += F + len(p)
    assert os.path.getsize(spool) == flen
    pads = []
    assert audit_spool.request_ids(str(spool)) == want
    audit_spool.frames(str(spool), pads)
    assert pads == [pad_at]
    cfg = gateway_config(upstream(reg, default=True),
                         instance_id=inst.decode(),
                         audit=audit_cfg(rs.port, spool))
    gw = start_gateway(cfg)
    wait_for(lambda: spool_size(spool) == HDR or
             "spool_corrupt" in gw.log_text(), timeout=60,
             what="spool replayed and released")
    assert "spool_corrupt" not in gw.log_text(), gw.log_text()[-2000:]
    rs.wait_xlen(STREAM, len(want), timeout=30)
    assert gw.stop() == 0
    assert stream_request_ids(rs) == want
